"""The batched rollout generator: shapes, masks, greedy parity with HF, seeded sampling, non-finite logits."""

from __future__ import annotations

import math

import pytest
import torch

from dapo_nb.generate import (Rollout, completion_logprobs, fused_output_head, generate_rollouts, sample_next_token,
                              sanitize_logits)

PROMPTS = ["What is 2 + 3?", "Name a colour.", "Count to three, please, slowly and carefully."]


def render(tokenizer, questions):
    return [tokenizer.apply_chat_template([{"role": "user", "content": q}], tokenize=False, add_generation_prompt=True)
            for q in questions]


def teacher_forced_logprobs(model, rollout: Rollout, temperature: float = 1.0) -> torch.Tensor:
    """Log-probs of the completion tokens under softmax(logits / temperature), from one full forward pass, (N, C)."""
    mask = rollout.attention_mask
    positions = (mask.cumsum(-1) - 1).clamp_min(0)
    with torch.no_grad():
        logits = model(input_ids=rollout.input_ids, attention_mask=mask, position_ids=positions).logits.float()
    p = rollout.prompt_ids.shape[1]
    logp = torch.log_softmax(logits[:, p - 1 : -1] / temperature, dim=-1)
    return logp.gather(-1, rollout.completion_ids[..., None]).squeeze(-1) * rollout.completion_mask


def test_shapes_masks_and_groups(tiny_policy):
    model, tok = tiny_policy
    g = torch.Generator(model.device).manual_seed(0)
    r = generate_rollouts(model, tok, render(tok, PROMPTS), group_size=4, max_new_tokens=12, generator=g)
    n = len(PROMPTS) * 4
    assert r.completion_ids.shape[0] == n == len(r.completion_texts) == len(r.prompt_texts)
    assert r.completion_ids.shape[1] <= 12
    assert r.group_ids.tolist() == [0] * 4 + [1] * 4 + [2] * 4
    assert r.old_logprobs.dtype == torch.float32
    assert torch.equal(r.lengths, r.completion_mask.sum(1))
    # mask is a prefix of ones; truncated rows use the whole budget and hold no EOS
    for row, length in zip(r.completion_mask, r.lengths):
        assert row[:length].all() and not row[length:].any()
    eos = tok.eos_token_id
    for i in range(n):
        ids = r.completion_ids[i, : r.lengths[i]].tolist()
        assert (eos not in ids) == bool(r.truncated[i])
        if not r.truncated[i]:
            assert ids[-1] == eos and ids.count(eos) == 1
    assert (r.old_logprobs <= 0).all() and (r.old_logprobs[r.completion_mask == 0] == 0).all()


def test_behaviour_logprobs_match_a_teacher_forced_pass(tiny_policy):
    model, tok = tiny_policy
    r = generate_rollouts(model, tok, render(tok, PROMPTS), group_size=2, max_new_tokens=10,
                          generator=torch.Generator(model.device).manual_seed(1))
    torch.testing.assert_close(r.old_logprobs, teacher_forced_logprobs(model, r), atol=1e-4, rtol=1e-4)


def test_temperature_scales_behaviour_logprobs(tiny_policy):
    model, tok = tiny_policy
    for temperature in (2.0, 0.5):
        r = generate_rollouts(model, tok, render(tok, PROMPTS[:2]), group_size=2, max_new_tokens=6,
                              temperature=temperature, generator=torch.Generator(model.device).manual_seed(2))
        mask = r.completion_mask.bool()
        # the behaviour log-prob of each sampled token is log_softmax(logits / T) at its position
        torch.testing.assert_close(r.old_logprobs, teacher_forced_logprobs(model, r, temperature), atol=1e-5, rtol=1e-5)
        # ... and not that of the raw logits (or of the other temperature): the gap is far above the tolerance
        for other in (1.0, 1 / temperature):
            gap = (teacher_forced_logprobs(model, r, other) - r.old_logprobs)[mask].abs().max().item()
            assert gap > 1e-2, (temperature, other, gap)


def test_greedy_matches_hf_generate(tiny_policy):
    model, tok = tiny_policy
    prompts = render(tok, PROMPTS)
    r = generate_rollouts(model, tok, prompts, group_size=1, max_new_tokens=10, do_sample=False)
    enc = tok(prompts, return_tensors="pt", padding=True, add_special_tokens=False)
    out = model.generate(**enc, max_new_tokens=10, do_sample=False, pad_token_id=tok.pad_token_id)
    expected = tok.batch_decode(out[:, enc.input_ids.shape[1]:], skip_special_tokens=True)
    assert r.completion_texts == expected
    # temperature 0 is greedy too, and greedy groups are identical
    r0 = generate_rollouts(model, tok, prompts, group_size=3, max_new_tokens=10, temperature=0.0)
    assert r0.completion_texts == [t for t in expected for _ in range(3)]


def test_seeded_sampling_is_reproducible_and_varies(tiny_policy):
    model, tok = tiny_policy
    prompts = render(tok, PROMPTS[:2])
    a = generate_rollouts(model, tok, prompts, group_size=4, max_new_tokens=8, generator=torch.Generator(model.device).manual_seed(5))
    b = generate_rollouts(model, tok, prompts, group_size=4, max_new_tokens=8, generator=torch.Generator(model.device).manual_seed(5))
    assert torch.equal(a.completion_ids, b.completion_ids)
    assert len(set(a.completion_texts[:4])) > 1  # a random tiny model samples different completions in a group


def test_context_max_len_truncates_from_the_left_and_warns(tiny_policy):
    model, tok = tiny_policy
    prompts = render(tok, PROMPTS)
    full = tok(prompts[2], add_special_tokens=False)["input_ids"]
    with pytest.warns(UserWarning, match="truncated from the left"):
        r = generate_rollouts(model, tok, prompts, max_new_tokens=3, context_max_len=10, do_sample=False)
    assert r.num_prompts_truncated == 3 and r.prompt_ids.shape[1] == 10
    assert r.prompt_ids[2].tolist() == full[-10:]


def test_top_k_one_is_greedy(tiny_policy):
    model, tok = tiny_policy
    prompts = render(tok, PROMPTS[:1])
    greedy = generate_rollouts(model, tok, prompts, max_new_tokens=8, do_sample=False)
    topk = generate_rollouts(model, tok, prompts, max_new_tokens=8, top_k=1, generator=torch.Generator(model.device).manual_seed(0))
    assert torch.equal(greedy.completion_ids, topk.completion_ids)


def test_select_and_concat_keep_rows_aligned(tiny_policy):
    model, tok = tiny_policy
    prompts = render(tok, PROMPTS)
    a = generate_rollouts(model, tok, prompts[:1], group_size=2, max_new_tokens=5, generator=torch.Generator(model.device).manual_seed(0))
    b = generate_rollouts(model, tok, prompts[1:], group_size=2, max_new_tokens=9, generator=torch.Generator(model.device).manual_seed(1))
    both = Rollout.concat([a, b.select([2, 3])], pad_token_id=tok.pad_token_id)
    assert both.group_ids.tolist() == [0, 0, 1, 1]
    assert both.completion_texts == a.completion_texts + b.completion_texts[2:]
    torch.testing.assert_close(both.old_logprobs, teacher_forced_logprobs(model, both), atol=1e-4, rtol=1e-4)


def test_shared_prefix_logprobs_equal_full_passes_with_gradients(tiny_policy):
    model, tok = tiny_policy
    r = generate_rollouts(model, tok, render(tok, PROMPTS), group_size=3, max_new_tokens=7,
                          generator=torch.Generator(model.device).manual_seed(3))
    rows = torch.tensor([0, 1, 4, 6, 7, 8])  # whole and partial groups, out of the middle of the batch
    weights = torch.randn(len(rows), r.completion_ids.shape[1])

    def grads(fn):
        model.zero_grad()
        values = fn()
        (values * weights * r.completion_mask[rows]).sum().backward()
        return values.detach(), [p.grad.clone() for p in model.parameters()]

    def full():
        sub = r.select(rows)
        return teacher_forced_logprobs_with_grad(model, sub)

    assert fused_output_head(model) is model.lm_head  # the fused, chunked head path is the one under test
    shared, g_shared = grads(lambda: completion_logprobs(model, r, rows) * r.completion_mask[rows])
    reference, g_ref = grads(full)
    torch.testing.assert_close(shared, reference, atol=1e-5, rtol=1e-4)
    for a, b in zip(g_shared, g_ref):
        torch.testing.assert_close(a, b, atol=1e-5, rtol=1e-4)


def test_a_model_that_soft_caps_its_logits_keeps_the_unfused_head():
    from transformers import Gemma2Config, Gemma2ForCausalLM

    torch.manual_seed(0)
    config = Gemma2Config(vocab_size=64, hidden_size=16, intermediate_size=32, num_hidden_layers=1, num_attention_heads=2,
                          num_key_value_heads=1, head_dim=8, final_logit_softcapping=2.0)
    assert fused_output_head(Gemma2ForCausalLM(config)) is None
    config.final_logit_softcapping = None
    assert fused_output_head(Gemma2ForCausalLM(config)) is not None

    class ScaledLogits(Gemma2ForCausalLM):  # a transform no config key names: caught by the numeric check
        def forward(self, *args, **kwargs):
            out = super().forward(*args, **kwargs)
            out.logits = out.logits * 2
            return out

    assert fused_output_head(ScaledLogits(config)) is None


def teacher_forced_logprobs_with_grad(model, rollout: Rollout) -> torch.Tensor:
    mask = rollout.attention_mask
    logits = model(input_ids=rollout.input_ids, attention_mask=mask, position_ids=(mask.cumsum(-1) - 1).clamp_min(0)).logits
    p = rollout.prompt_ids.shape[1]
    logp = torch.log_softmax(logits[:, p - 1 : -1].float(), dim=-1)
    return logp.gather(-1, rollout.completion_ids[..., None]).squeeze(-1) * rollout.completion_mask


# ----------------------------------------------------------------------------
# Non-finite logits never crash the sampler


def test_sampler_survives_nan_and_inf_logits():
    logits = torch.tensor([
        [float("nan"), 1.0, 2.0, float("-inf")],  # NaN entry: treated as impossible
        [float("nan")] * 4,  # nothing finite: emits EOS (id 0 here)
        [0.0, float("inf"), 1.0, 2.0],  # +inf: becomes the most likely token
        [float("-inf")] * 4,
    ])
    clean, dead = sanitize_logits(logits, eos_token_id=0)
    assert dead == 2 and torch.isfinite(clean).any(-1).all()
    for do_sample in (True, False):
        tok, logp, ent = sample_next_token(clean, do_sample=do_sample, temperature=0.7, top_p=0.9, top_k=3,
                                           generator=torch.Generator().manual_seed(0))
        assert tok.tolist()[1:] == [0, 1, 0] and tok[0] in (1, 2)
        assert torch.isfinite(logp).all() and torch.isfinite(ent).all()


def test_generation_with_nan_weights_ends_cleanly(tiny_model_dir):
    from dapo_nb.models import load_policy

    model, tok = load_policy(str(tiny_model_dir))
    with torch.no_grad():
        model.lm_head.weight[5:50] = float("nan")  # some logits NaN at every step
        model.lm_head.weight[60] = float("inf")
    r = generate_rollouts(model, tok, render(tok, PROMPTS[:2]), group_size=2, max_new_tokens=6,
                          generator=torch.Generator(model.device).manual_seed(0))
    assert torch.isfinite(r.old_logprobs).all()
    assert all(0 < n <= 6 for n in r.lengths.tolist())
    with torch.no_grad():
        model.lm_head.weight[:] = float("nan")  # nothing finite at all: every row stops at EOS at once
    r = generate_rollouts(model, tok, render(tok, PROMPTS[:2]), max_new_tokens=6, generator=torch.Generator(model.device).manual_seed(0))
    assert r.lengths.tolist() == [1, 1] and r.nonfinite_steps == 2 and not r.truncated.any()


@pytest.mark.slow
def test_embedded_model_answers_a_prompt(embedded_policy):
    model, tok = embedded_policy
    r = generate_rollouts(model, tok, render(tok, ["What is 2 + 3? Reply with just the number."]), group_size=2,
                          max_new_tokens=16, do_sample=False)
    assert "5" in r.completion_texts[0]
    assert math.isfinite(float(r.old_logprobs.sum()))


def test_activation_checkpointing_path_gives_the_same_logprobs(tiny_model_dir):
    from dapo_nb.models import load_policy

    plain, tok = load_policy(str(tiny_model_dir))
    checkpointed, _ = load_policy(str(tiny_model_dir), gradient_checkpointing=True)
    r = generate_rollouts(plain, tok, render(tok, PROMPTS[:2]), group_size=2, max_new_tokens=5,
                          generator=torch.Generator(plain.device).manual_seed(0))
    rows = torch.arange(len(r), device=plain.device)
    checkpointed.train()
    a = completion_logprobs(plain, r, rows) * r.completion_mask
    b = completion_logprobs(checkpointed, r, rows) * r.completion_mask
    torch.testing.assert_close(a, b, atol=1e-5, rtol=1e-4)


def test_sampler_draws_the_categorical_distribution_and_never_a_zero_probability_token():
    logits = torch.log(torch.tensor([[0.1, 0.2, 0.0, 0.7]])).repeat(100_000, 1)
    tokens, _, _ = sample_next_token(logits, do_sample=True, generator=torch.Generator().manual_seed(0))
    freq = torch.bincount(tokens, minlength=4).float() / len(tokens)
    torch.testing.assert_close(freq, torch.tensor([0.1, 0.2, 0.0, 0.7]), atol=5e-3, rtol=0)
    assert freq[2] == 0
