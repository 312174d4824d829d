"""Held-out evaluation: greedy pass@1 and sampled avg@k on a prompt file, with per-objective means.

    summary = evaluate(model, tokenizer, load_prompts("data/test.jsonl"), reward, num_samples=4)

pass@1 is the fraction of prompts whose greedy completion is correct (`rewards.answer.is_correct`:
the final answer equals the ground truth); avg@k is the mean correctness over k sampled completions
per prompt, as in the DAPO paper's avg@32. `format@1` is the fraction of greedy completions with a
parseable final-answer line. Every objective of the given reward (its plugins and their breakdown keys
included) is averaged too, under the names training logs: `rewards/<name>/mean` and `reward` (the scalar
under the current weights) for the greedy completions, `sampled/rewards/<name>/mean` and `sampled/reward`
for the sampled ones, so a held-out table and a run's metrics line up. The completions are scored with
`scored.score_rollout`, the call training makes (prompts, every column of the record, completion ids, the
`step` given, split "test"), with TRL's nanmean for a plugin's None and `reward.on_error` as in training.

With `stats=True` the summary also holds 95% intervals and the per-problem greedy correctness (see `dapo_nb.stats`):
`pass@1_ci95` and `format@1_ci95` (Wilson score intervals over the prompts), `avg@k_ci95` and `format_avg@k_ci95`
(percentile bootstrap over prompts with a fixed seed: the k samples of one prompt are not independent), and
`per_problem` ({qid: greedy completion correct}) for a paired comparison of two models
(`dapo_nb.stats.paired_comparison`). Without it the summary is unchanged (only plain numbers).
"""

from __future__ import annotations

import torch
from tqdm.auto import tqdm

from .data import PromptExample, render_prompts
from .generate import generate_rollouts
from .rewards import MultiObjectiveReward, RewardBatch, has_final_answer, is_correct
from .scored import score_rollout
from .stats import bootstrap_mean_interval, wilson_interval


@torch.no_grad()
def evaluate(
    model,
    tokenizer,
    examples: list[PromptExample],
    reward: MultiObjectiveReward | None = None,
    *,
    system_prompt: str | None = None,
    max_new_tokens: int = 64,
    context_max_len: int = 256,
    num_samples: int = 4,
    temperature: float = 1.0,
    batch_prompts: int = 16,
    seed: int = 0,
    stats: bool = False,
    step: int = 0,
) -> dict:
    """Greedy pass@1 / format@1 and (num_samples > 0) sampled avg@k, plus per-objective means, over `examples`;
    stats=True adds 95% intervals and `per_problem` (qid -> greedy correctness). `step` is what reward plugins see as
    the step (trainer_state.global_step): the training step of the policy evaluated, 0 for a model as loaded."""
    if not examples:
        raise ValueError("evaluate() needs at least one prompt")
    prompts = render_prompts(tokenizer, examples, system_prompt)
    generator = torch.Generator(device=model.device).manual_seed(seed)
    summary: dict = {"num_prompts": len(examples)}
    modes = [("greedy", 1, False)] + ([("sampled", num_samples, True)] if num_samples > 0 else [])
    for mode, k, do_sample in modes:
        correct, formatted, count, scored_batches = 0.0, 0.0, 0, []
        right_per_prompt, formatted_per_prompt = [0] * len(examples), [0] * len(examples)
        bar = tqdm(total=len(examples), desc=f"eval {mode}" + (f" x{k}" if do_sample else ""), unit="prompt",
                   leave=False, dynamic_ncols=True)
        for start in range(0, len(examples), batch_prompts):
            chunk = examples[start : start + batch_prompts]
            rollout = generate_rollouts(
                model, tokenizer, prompts[start : start + batch_prompts], group_size=k, max_new_tokens=max_new_tokens,
                context_max_len=context_max_len, do_sample=do_sample, temperature=temperature, generator=generator)
            groups = rollout.group_ids.tolist()
            truths = [chunk[g].ground_truth for g in groups]
            rights = [is_correct(t, gt) for t, gt in zip(rollout.completion_texts, truths)]
            marks = [has_final_answer(t) for t in rollout.completion_texts]
            correct += sum(rights)
            formatted += sum(marks)
            for g, right, mark in zip(groups, rights, marks):
                right_per_prompt[start + g] += right
                formatted_per_prompt[start + g] += mark
            count += len(rollout)
            if reward is not None:
                scored_batches.append(score_rollout(reward, rollout, chunk, step=step, split="test"))
            bar.update(len(chunk))
        bar.close()
        if mode == "greedy":
            summary["pass@1"] = correct / count
            summary["format@1"] = formatted / count
            if stats:
                n = len(examples)
                summary["pass@1_ci95"] = list(wilson_interval(sum(right_per_prompt), n))
                summary["format@1_ci95"] = list(wilson_interval(sum(formatted_per_prompt), n))
                summary["per_problem"] = {ex.qid: bool(r) for ex, r in zip(examples, right_per_prompt)}
        else:
            summary[f"avg@{k}"] = correct / count
            summary[f"format_avg@{k}"] = formatted / count
            if stats:  # the prompt is the independent unit: bootstrap its mean over k samples
                summary[f"avg@{k}_ci95"] = list(bootstrap_mean_interval([r / k for r in right_per_prompt], seed=seed))
                summary[f"format_avg@{k}_ci95"] = list(
                    bootstrap_mean_interval([f / k for f in formatted_per_prompt], seed=seed))
        if scored_batches:  # the names training logs: reward, rewards/<name>/mean (sampled/... for the samples)
            prefix = "" if mode == "greedy" else "sampled/"
            metrics = RewardBatch.concat(scored_batches).metrics()
            summary[f"{prefix}reward"] = metrics["reward"]
            summary.update({f"{prefix}{key}": value for key, value in metrics.items()
                            if key.startswith("rewards/") and key.endswith("/mean")})
    return summary
