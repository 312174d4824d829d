"""Held-out evaluation values: pass@1, format@1, avg@k and per-objective means of a scripted policy.

The policy is a real Llama (transformers' LlamaForCausalLM, through our own decoding loop) whose weights are set so
that it is a bigram machine: every layer adds zero to the residual stream, so the logits at a position depend on
that position's token only, through `embed_tokens` (one hidden slot per scripted token) and `lm_head` (that slot's
next-token logits). After the chat template's last token it spells a fixed answer and then EOS, with all probability
mass on each scripted token, so sampling gives the same text as greedy decoding and the scores are known exactly.
"""

from __future__ import annotations

import math

import pytest
import torch
from transformers import LlamaConfig, LlamaForCausalLM

from dapo_nb.data import PromptExample, render_prompts
from dapo_nb.evaluate import evaluate
from dapo_nb.models import load_tokenizer
from dapo_nb.rewards import MultiObjectiveReward

SURE = 1000.0  # a logit margin after which every other token has probability exactly 0 in float32
# 3 of these 5 ground truths are "4"; batch_prompts=2 splits them [7, 4] [4, 4] [9], so matching a chunk's prompts
# with the ground truths of the first chunk (or of any other prompts) changes the count
GROUND_TRUTHS = ["7", "4", "4", "4", "9"]


@pytest.fixture(scope="module")
def tokenizer(tiny_model_dir):
    return load_tokenizer(str(tiny_model_dir))


@pytest.fixture(scope="module")
def examples():
    return [PromptExample(f"q{i}", f"What is {i} + {i}?", truth) for i, truth in enumerate(GROUND_TRUTHS)]


def scripted_policy(tokenizer, table: dict[int, dict[int, float]]) -> LlamaForCausalLM:
    """A Llama whose next-token logits at a position holding token `t` are `table[t]` (0 elsewhere)."""
    hidden = max(8, len(table))
    config = LlamaConfig(vocab_size=len(tokenizer), hidden_size=hidden, intermediate_size=hidden, num_hidden_layers=1,
                         num_attention_heads=1, num_key_value_heads=1, tie_word_embeddings=False,
                         bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id,
                         pad_token_id=tokenizer.pad_token_id)
    model = LlamaForCausalLM(config)
    with torch.no_grad():
        for param in model.parameters():
            param.zero_()  # attention and MLP add nothing; unscripted tokens embed to 0 and get uniform logits
        model.model.norm.weight.fill_(1.0)  # RMSNorm maps the one-hot slot vector e_s to sqrt(hidden) * e_s
        for slot, (token, following) in enumerate(table.items()):
            model.model.embed_tokens.weight[token, slot] = 1.0
            for successor, logit in following.items():
                model.lm_head.weight[successor, slot] = logit / math.sqrt(hidden)
    return model.eval()


def spell(tokenizer, text: str, examples) -> dict[int, dict[int, float]]:
    """The table of a policy that answers every prompt with exactly `text` and then EOS."""
    ends = {tokenizer(p, add_special_tokens=False)["input_ids"][-1] for p in render_prompts(tokenizer, examples)}
    assert len(ends) == 1, "the chat template ends every prompt with the same token"
    chain = [*ends, *tokenizer(text, add_special_tokens=False)["input_ids"], tokenizer.eos_token_id]
    assert len(set(chain)) == len(chain), f"{text!r}: a bigram machine needs distinct tokens"
    return {token: {successor: SURE} for token, successor in zip(chain, chain[1:])}


@pytest.mark.parametrize("answer, pass_at_1, format_at_1, rewarded", [
    ("Answer: 4", 3 / 5, 1.0, 3 / 5),  # right on the three prompts whose ground truth is 4, marked
    ("Answer: 5", 0.0, 1.0, 0.0),      # marked, never right
    # right by the last-number fallback, but no final-answer marker: pass@1 (the lenient judge) counts it, the
    # reward's correctness (reward.marked_answer_only, on by default) does not
    (" 4", 3 / 5, 0.0, 0.0),
])
def test_scripted_policy_scores_exactly(tokenizer, examples, answer, pass_at_1, format_at_1, rewarded):
    model = scripted_policy(tokenizer, spell(tokenizer, answer, examples))
    reward = MultiObjectiveReward(objectives=["correctness", "format"])
    summary = evaluate(model, tokenizer, examples, reward, max_new_tokens=8, num_samples=2, batch_prompts=2)
    assert summary == {
        "num_prompts": 5,
        "pass@1": pass_at_1, "format@1": format_at_1,
        # the reward's objectives under training's names (weights 1 and 1: reward = correctness + format)
        "reward": pytest.approx(rewarded + format_at_1), "rewards/correctness/mean": rewarded, "rewards/format/mean": format_at_1,
        # all mass on the scripted tokens: each of the 2 samples per prompt is the greedy answer
        "avg@2": pass_at_1, "format_avg@2": format_at_1,
        "sampled/reward": pytest.approx(rewarded + format_at_1),
        "sampled/rewards/correctness/mean": rewarded, "sampled/rewards/format/mean": format_at_1,
    }


def test_the_policy_really_spells_the_script(tokenizer, examples):
    from dapo_nb.generate import generate_rollouts

    model = scripted_policy(tokenizer, spell(tokenizer, "Answer: 4", examples))
    rollout = generate_rollouts(model, tokenizer, render_prompts(tokenizer, examples[:2]), group_size=3,
                                max_new_tokens=8, generator=torch.Generator().manual_seed(0))
    assert rollout.completion_texts == ["Answer: 4"] * 6
    assert not rollout.truncated.any()
    assert torch.equal(rollout.old_logprobs, torch.zeros_like(rollout.old_logprobs))  # probability 1 at every step


def test_without_samples_only_greedy_metrics_are_reported(tokenizer, examples):
    model = scripted_policy(tokenizer, spell(tokenizer, "Answer: 4", examples))
    summary = evaluate(model, tokenizer, examples, num_samples=0, max_new_tokens=8)
    assert summary == {"num_prompts": 5, "pass@1": 3 / 5, "format@1": 1.0}


def test_avg_at_k_comes_from_samples_not_from_the_greedy_answer(tokenizer, examples):
    # after "Answer: " the policy hesitates between "4" and "5" (e^0.1 : 1 for "5"): greedy always says 5 (wrong on
    # every prompt), sampling says 4 about 48% of the time
    table = spell(tokenizer, "Answer: 4", examples)
    space, four, five = (tokenizer(" 4", add_special_tokens=False)["input_ids"][0],
                         *(tokenizer.convert_tokens_to_ids(d) for d in ("4", "5")))
    assert table[space] == {four: SURE}
    table[space] = {four: SURE, five: SURE + 0.1}
    table[five] = {tokenizer.eos_token_id: SURE}
    model = scripted_policy(tokenizer, table)
    reward = MultiObjectiveReward(objectives=["correctness"])
    summary = evaluate(model, tokenizer, examples, reward, max_new_tokens=8, num_samples=8, batch_prompts=2, seed=3)
    assert summary["pass@1"] == 0.0 and summary["format@1"] == 1.0
    assert summary["format_avg@8"] == 1.0  # both branches are marked answers
    # 24 of the 40 samples answer a prompt whose truth is 4; each is right with probability 1 / (1 + e^0.1) = 0.475
    correct = summary["avg@8"] * 40
    assert abs(correct - round(correct)) < 1e-9 and 3 <= correct <= 20, summary  # ~ 11.4 +- 2.4; seeded, so never flaky
    assert summary["sampled/rewards/correctness/mean"] == summary["avg@8"]


def test_evaluation_reads_the_live_weights_without_changing_them(tokenizer, examples):
    model = scripted_policy(tokenizer, spell(tokenizer, "Answer: 4", examples))
    reward = MultiObjectiveReward(objectives=["correctness", "format"], weights={"correctness": 1.0, "format": 0.1},
                                  schedule={0: {"format": 0.9}})
    before = reward.weights.state_dict()
    evaluate(model, tokenizer, examples, reward, num_samples=0, max_new_tokens=8)
    assert reward.weights.state_dict() == before  # no step-0 schedule entry applied, no history entry added


# ----------------------------------------------------------------------------
# Honest statistics: intervals, per-problem correctness, a paired comparison (dapo_nb.stats)


def test_stats_add_intervals_and_per_problem_correctness(tokenizer, examples):
    from dapo_nb.stats import bootstrap_mean_interval, wilson_interval

    model = scripted_policy(tokenizer, spell(tokenizer, "Answer: 4", examples))
    summary = evaluate(model, tokenizer, examples, max_new_tokens=8, num_samples=2, batch_prompts=2, stats=True)
    assert summary["pass@1"] == 3 / 5 and summary["avg@2"] == 3 / 5  # the plain numbers are unchanged
    assert summary["pass@1_ci95"] == list(wilson_interval(3, 5))
    assert summary["format@1_ci95"] == list(wilson_interval(5, 5))
    assert summary["per_problem"] == {"q0": False, "q1": True, "q2": True, "q3": True, "q4": False}
    # the bootstrap resamples prompts (5 per-prompt means), not the 10 samples
    assert summary["avg@2_ci95"] == list(bootstrap_mean_interval([0.0, 1.0, 1.0, 1.0, 0.0], seed=0))
    assert summary["format_avg@2_ci95"] == [1.0, 1.0]


def test_paired_comparison_of_two_scripted_policies(tokenizer, examples):
    from dapo_nb.stats import paired_comparison

    right = evaluate(scripted_policy(tokenizer, spell(tokenizer, "Answer: 4", examples)), tokenizer, examples,
                     num_samples=0, max_new_tokens=8, stats=True)
    wrong = evaluate(scripted_policy(tokenizer, spell(tokenizer, "Answer: 5", examples)), tokenizer, examples,
                     num_samples=0, max_new_tokens=8, stats=True)
    result = paired_comparison(right["per_problem"], wrong["per_problem"])
    # three problems only the first gets right, none only the second: p = 2 / 2^3
    assert (result["b"], result["c"], result["p_value"], result["significant"]) == (3, 0, 0.25, False)


def test_cli_eval_compare_to_itself_is_no_difference(tiny_model_dir, capsys):
    import json

    from dapo_nb import cli

    code = cli.main(["eval", f"model.pretrained_model_name_or_path={tiny_model_dir}", f"eval.compare_to={tiny_model_dir}",
                     "eval.max_prompts=4", "eval.num_samples=0", "sampling.max_new_tokens=4"])
    out = capsys.readouterr().out
    assert code == 0, out
    lines = out.strip().splitlines()
    report = json.loads(lines[-1])
    assert "McNemar exact: b=0 c=0 p=1, not significant at 0.05" in lines[-2]
    assert report["mcnemar"]["b"] == report["mcnemar"]["c"] == 0
    assert report["mcnemar"]["p_value"] == 1.0 and report["mcnemar"]["significant"] is False
    first, second = report["model"], report["compare_to"]
    assert first["num_prompts"] == second["num_prompts"] == report["mcnemar"]["n"] == 4
    assert first["pass@1"] == second["pass@1"] and first["pass@1_ci95"] == second["pass@1_ci95"]
    assert 0.0 <= first["pass@1_ci95"][0] <= first["pass@1"] <= first["pass@1_ci95"][1] <= 1.0
    assert report["pass@1_diff"] == 0.0 and "per_problem" not in first
