"""Tests for dapo_nb.dapo: hand-computed advantages, clip sides by autograd, aggregation vs hand loops, accumulation."""

from __future__ import annotations

import math

import pytest
import torch
from torch.utils._python_dispatch import TorchDispatchMode

from dapo_nb.dapo import (
    DapoInputError,
    batch_baseline_advantages,
    dapo_loss,
    group_advantages,
    groups_with_signal,
    linear_token_logprobs,
    masked_mean,
    overlong_filter_mask,
    token_entropy,
    token_logprobs,
)

T = torch.tensor


def _one_token_grad(ratio: float, advantage: float, **kwargs) -> tuple[float, float]:
    """Loss and d loss / d logprob for a single token whose ratio pi/pi_old is `ratio`."""
    logprobs = T([[math.log(ratio) - 1.0]], requires_grad=True)
    loss, _ = dapo_loss(logprobs, T([[-1.0]]), T([advantage]), T([[1.0]]), **kwargs)
    loss.backward()
    return loss.item(), logprobs.grad.item()


def _random_batch(batch=6, length=7, seed=0):
    gen = torch.Generator().manual_seed(seed)
    old = -torch.rand(batch, length, generator=gen) * 3  # (B, T)
    logprobs = old + 0.4 * torch.randn(batch, length, generator=gen)  # ratios spread over both clip sides
    lengths = T([7, 1, 4, 0, 6, 3])[:batch]
    mask = (torch.arange(length).unsqueeze(0) < lengths.unsqueeze(1)).float()  # (B, T), one empty row
    advantages = torch.randn(batch, generator=gen)
    ref = old + 0.3 * torch.randn(batch, length, generator=gen)
    return logprobs, old, advantages, mask, ref


# ---- advantages -------------------------------------------------------------------------------------------------


def test_group_advantages_hand_values_and_zero_std_group():
    rewards = T([1.0, 0.0, 1.0, 0.0, 0.5, 0.5, 0.5, 0.5, 1.0, 0.0, 0.0, 0.0])
    groups = T([0, 0, 0, 0, 1, 1, 1, 1, 2, 2, 2, 2])
    adv = group_advantages(rewards, groups)
    # group 0: mean 0.5, unbiased std sqrt(1/3); group 1: std 0 -> 0; group 2: mean 0.25, unbiased std 0.5
    a = 0.5 / math.sqrt(1 / 3)
    expected = T([a, -a, a, -a, 0, 0, 0, 0, 1.5, -0.5, -0.5, -0.5])
    torch.testing.assert_close(adv, expected, atol=1e-5, rtol=0)
    assert torch.isfinite(adv).all()
    assert (adv[4:8] == 0).all()  # exactly zero, not 0/eps noise


def test_group_advantages_rounding_prone_constant_group_is_exactly_zero_and_ids_may_interleave():
    rewards = T([0.9125, 0.7, 0.9125, 0.3, 0.9125])  # float32 mean of three 0.9125 is off by ~6e-8
    groups = T([7, 3, 7, 3, 7])
    adv = group_advantages(rewards, groups)
    assert (adv[[0, 2, 4]] == 0).all()  # not 6e-8 / 1e-6 = 0.06 of spurious signal
    torch.testing.assert_close(adv[[1, 3]], T([0.2, -0.2]) / (math.sqrt(0.08) + 1e-6))


def test_std_scale_batch_and_none_and_singleton_group():
    rewards, groups = T([1.0, 0.0, 1.0, 1.0]), T([0, 0, 1, 1])
    # group means 0.5, 1 -> centered [.5, -.5, 0, 0]; batch unbiased std of rewards = 0.5
    torch.testing.assert_close(group_advantages(rewards, groups, "batch"), T([1.0, -1.0, 0, 0]), atol=1e-5, rtol=0)
    torch.testing.assert_close(group_advantages(rewards, groups, "none"), T([0.5, -0.5, 0, 0]))
    assert group_advantages(T([3.0, 1.0]), T([0, 1])).tolist() == [0.0, 0.0]  # one-member groups: no signal


def test_batch_baseline_advantages():
    torch.testing.assert_close(batch_baseline_advantages(T([1.0, 0.0, 0.0, 0.0])), T([1.5, -0.5, -0.5, -0.5]),
                               atol=1e-5, rtol=0)
    torch.testing.assert_close(batch_baseline_advantages(T([1.0, 0.0]), "none"), T([0.5, -0.5]))
    assert batch_baseline_advantages(T([0.3, 0.3, 0.3])).tolist() == [0.0, 0.0, 0.0]
    with pytest.raises(ValueError, match="batch, none"):
        batch_baseline_advantages(T([1.0, 0.0]), "group")


def test_advantage_input_errors_name_the_problem():
    with pytest.raises(ValueError, match="std_scale='grp'.*group, batch, none"):
        group_advantages(T([1.0]), T([0]), "grp")
    with pytest.raises(DapoInputError, match="group_ids has shape"):
        group_advantages(T([1.0, 0.0]), T([0, 0, 0]))
    with pytest.raises(DapoInputError, match="1-D"):
        group_advantages(T([[1.0, 0.0]]), T([[0, 0]]))
    with pytest.raises(DapoInputError, match="non-finite"):
        group_advantages(T([1.0, float("nan")]), T([0, 0]))
    with pytest.raises(DapoInputError, match="integer"):
        group_advantages(T([1.0, 0.0]), T([0.0, 0.0]))


# ---- dynamic sampling filter ------------------------------------------------------------------------------------


def test_groups_with_signal_all_zero_all_one_mixed():
    correctness = T([0.0, 0.0, 0.0, 1.0, 1.0, 1.0, 0.0, 1.0, 0.0])
    groups = T([0, 0, 0, 1, 1, 1, 2, 2, 2])
    keep = groups_with_signal(correctness, groups)
    assert keep.dtype == torch.bool and keep.shape == (9,)
    assert keep.tolist() == [False] * 6 + [True] * 3
    assert groups[keep].unique().tolist() == [2]


def test_filter_on_correctness_drops_all_wrong_group_whose_shaped_score_varies():
    correctness, score = T([0.0, 0.0, 0.0]), T([0.30, 0.42, 0.35])  # all wrong, shaped score still varies
    groups = T([5, 5, 5])
    assert not groups_with_signal(correctness, groups).any()
    assert groups_with_signal(score, groups).all()  # the pitfall: a shaped-score filter keeps it
    assert not groups_with_signal(score, groups, threshold=0.1).any()  # std ~0.06 <= 0.1
    assert not groups_with_signal(T([1.0]), T([0])).any()  # one member: no std
    constant = torch.full((3,), 0.1, dtype=torch.float64)  # float64 mean of three 0.1 is off by ~1e-17
    assert not groups_with_signal(constant, T([0, 0, 0])).any()


# ---- log-probs and entropy --------------------------------------------------------------------------------------


def test_token_logprobs_matches_log_softmax_gather_values_and_gradients():
    gen = torch.Generator().manual_seed(1)
    logits = (3 * torch.randn(3, 5, 11, generator=gen)).requires_grad_()
    targets = torch.randint(0, 11, (3, 5), generator=gen)
    ours = token_logprobs(logits, targets)
    ref = torch.log_softmax(logits, -1).gather(-1, targets.unsqueeze(-1)).squeeze(-1)
    torch.testing.assert_close(ours, ref)
    (grad_ours,) = torch.autograd.grad(ours.sum(), logits)
    (grad_ref,) = torch.autograd.grad(ref.sum(), logits)
    torch.testing.assert_close(grad_ours, grad_ref)
    weights = torch.randn(3, 5, generator=gen)  # a non-uniform upstream gradient
    warm = token_logprobs(logits, targets, temperature=0.7)
    ref_warm = torch.log_softmax(logits / 0.7, -1).gather(-1, targets.unsqueeze(-1)).squeeze(-1)
    torch.testing.assert_close(warm, ref_warm)
    (grad_ours,) = torch.autograd.grad((warm * weights).sum(), logits)
    (grad_ref,) = torch.autograd.grad((ref_warm * weights).sum(), logits)
    torch.testing.assert_close(grad_ours, grad_ref)


def test_token_logprobs_bf16_logits_give_float32_and_bad_targets_fail():
    logits = torch.randn(2, 4, 9).to(torch.bfloat16)
    targets = torch.randint(0, 9, (2, 4))
    out = token_logprobs(logits, targets)
    assert out.dtype == torch.float32 and out.shape == (2, 4)
    ref = torch.log_softmax(logits.float(), -1).gather(-1, targets.unsqueeze(-1)).squeeze(-1)
    torch.testing.assert_close(out, ref)
    leaf = logits.clone().requires_grad_()
    token_logprobs(leaf, targets).sum().backward()
    assert leaf.grad.dtype == torch.bfloat16 and torch.isfinite(leaf.grad.float()).all()
    with pytest.raises(DapoInputError, match="-100 padding"):
        token_logprobs(logits, torch.full((2, 4), -100))
    with pytest.raises(DapoInputError, match="targets has shape"):
        token_logprobs(logits, targets[:, :3])


class LargestTensor(TorchDispatchMode):
    """Records the element count of the largest tensor any op produces."""

    largest = 0

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        for t in out if isinstance(out, (tuple, list)) else [out]:
            if isinstance(t, torch.Tensor):
                self.largest = max(self.largest, t.numel())
        return out


@pytest.mark.parametrize("chunk_bytes", [1 << 28, 4 * 50 * 4], ids=["logits-kept", "chunks-of-4-positions"])
def test_fused_head_logprobs_match_the_plain_head_and_never_hold_all_logits(chunk_bytes):
    gen = torch.Generator().manual_seed(3)
    hidden = torch.randn(3, 5, 8, generator=gen, requires_grad=True)  # (B, T, H)
    weight = torch.randn(50, 8, generator=gen, requires_grad=True)  # (V, H)
    targets = torch.randint(0, 50, (3, 5), generator=gen)
    upstream = torch.randn(3, 5, generator=gen)
    for temperature in (1.0, 0.7):
        with LargestTensor() as seen:
            ours = linear_token_logprobs(hidden, weight, targets, temperature, max_chunk_bytes=chunk_bytes)
            grads = torch.autograd.grad((ours * upstream).sum(), (hidden, weight))
        ref = torch.log_softmax(hidden @ weight.T / temperature, -1).gather(-1, targets.unsqueeze(-1)).squeeze(-1)
        ref_grads = torch.autograd.grad((ref * upstream).sum(), (hidden, weight))
        torch.testing.assert_close(ours, ref)
        for got, want in zip(grads, ref_grads):
            torch.testing.assert_close(got, want, atol=1e-5, rtol=1e-4)
        if chunk_bytes < 1 << 28:  # the largest tensors are the (50, 8) weight and its gradient, never 15 x 50 logits
            assert seen.largest == 50 * 8 < 15 * 50
    with torch.no_grad():  # reference log-probs: no gradient, nothing kept
        assert linear_token_logprobs(hidden, weight, targets).shape == (3, 5)
    bf16 = linear_token_logprobs(hidden.detach().bfloat16().requires_grad_(), weight.detach().bfloat16(), targets)
    assert bf16.dtype == torch.float32
    with pytest.raises(DapoInputError, match="outside"):
        linear_token_logprobs(hidden, weight, torch.full((3, 5), 50))


def test_token_entropy_against_reference_uniform_and_masked_vocab():
    logits = torch.randn(2, 3, 6, requires_grad=True)
    probs = torch.softmax(logits, -1)
    torch.testing.assert_close(token_entropy(logits), -(probs * probs.log()).sum(-1).detach())
    assert not token_entropy(logits).requires_grad
    torch.testing.assert_close(token_entropy(torch.zeros(1, 2, 8)), torch.full((1, 2), math.log(8)))
    masked_vocab = T([[[0.0, 0.0, float("-inf"), float("-inf")]]])
    torch.testing.assert_close(token_entropy(masked_vocab), T([[math.log(2)]]))


# ---- clipping -----------------------------------------------------------------------------------------------------


def test_ratio_above_high_bound_with_positive_advantage_gets_no_gradient():
    loss, grad = _one_token_grad(1.5, 2.0)
    assert grad == 0.0
    assert loss == pytest.approx(-(1 + 0.28) * 2.0)


def test_ratio_below_low_bound_with_negative_advantage_gets_no_gradient():
    loss, grad = _one_token_grad(0.5, -2.0)
    assert grad == 0.0
    assert loss == pytest.approx((1 - 0.2) * 2.0)


@pytest.mark.parametrize("ratio,advantage", [(1.1, 2.0), (0.9, -2.0), (1.5, -2.0), (0.5, 2.0)])
def test_gradient_flows_inside_the_range_and_on_the_unclipped_sides(ratio, advantage):
    # d(-r A)/d logp = -r A: inside [0.8, 1.28], and where the min picks the unclipped term (r > high with A < 0,
    # r < low with A > 0: PPO's pessimistic bound)
    loss, grad = _one_token_grad(ratio, advantage)
    assert grad == pytest.approx(-ratio * advantage, rel=1e-5)
    assert loss == pytest.approx(-ratio * advantage, rel=1e-5)


def test_clip_higher_asymmetry_changes_the_result():
    # ratio 1.25 with A > 0: inside DAPO's [0.8, 1.28] but outside symmetric PPO's [0.8, 1.2]
    loss_dapo, grad_dapo = _one_token_grad(1.25, 1.0, eps_low=0.2, eps_high=0.28)
    loss_sym, grad_sym = _one_token_grad(1.25, 1.0, eps_low=0.2, eps_high=0.2)
    assert grad_dapo == pytest.approx(-1.25, rel=1e-5) and grad_sym == 0.0
    assert loss_dapo == pytest.approx(-1.25, rel=1e-5) and loss_sym == pytest.approx(-1.2, rel=1e-5)
    # and the low side: ratio 0.85 with A < 0 is clipped only when eps_low shrinks to 0.1
    assert _one_token_grad(0.85, -1.0, eps_low=0.2)[1] != 0.0
    assert _one_token_grad(0.85, -1.0, eps_low=0.1)[1] == 0.0


def test_clip_ratio_stats_count_each_side():
    ratios = T([[0.5, 1.5, 1.0, 1.5], [0.5, 1.5, 1.0, 9.0]])  # last token of row 1 is padding
    advantages = T([-1.0, 1.0])
    mask = T([[1.0, 1, 1, 1], [1, 1, 1, 0]])
    _, stats = dapo_loss(ratios.log(), torch.zeros(2, 4), advantages, mask)
    # row 0 (A<0): 0.5 is low-clipped; row 1 (A>0): 1.5 is high-clipped; 7 real tokens
    assert stats["clip_ratio/low_mean"] == pytest.approx(1 / 7)
    assert stats["clip_ratio/high_mean"] == pytest.approx(1 / 7)
    assert stats["clip_ratio/region_mean"] == pytest.approx(2 / 7)
    assert stats["num_tokens"] == 7 and "kl" not in stats


# ---- aggregation ---------------------------------------------------------------------------------------------------


def _hand_loss(logprobs, old, advantages, mask, loss_agg, eps_low=0.2, eps_high=0.28):
    seq_values, token_total, token_count = [], 0.0, 0
    for i in range(logprobs.shape[0]):
        terms = []
        for t in range(logprobs.shape[1]):
            if mask[i, t]:
                r = math.exp(logprobs[i, t] - old[i, t])
                a = float(advantages[i])
                terms.append(-min(r * a, min(max(r, 1 - eps_low), 1 + eps_high) * a))
        token_total += sum(terms)
        token_count += len(terms)
        if terms:
            seq_values.append(sum(terms) / len(terms) if loss_agg == "seq-mean-token-mean" else sum(terms))
    if loss_agg == "token-mean":
        return token_total / token_count
    return sum(seq_values) / len(seq_values)


@pytest.mark.parametrize("loss_agg", ["token-mean", "seq-mean-token-mean", "seq-mean-token-sum"])
def test_each_aggregation_matches_a_hand_loop(loss_agg):
    logprobs, old, advantages, mask, _ = _random_batch()
    loss, stats = dapo_loss(logprobs, old, advantages, mask, loss_agg=loss_agg)
    assert loss.item() == pytest.approx(_hand_loss(logprobs, old, advantages, mask, loss_agg), rel=1e-5)
    assert stats["policy_loss"] == pytest.approx(loss.item())


def test_token_mean_differs_from_seq_mean_on_unequal_lengths():
    logprobs, old, advantages, mask, _ = _random_batch()
    token = dapo_loss(logprobs, old, advantages, mask, loss_agg="token-mean")[0]
    seq = dapo_loss(logprobs, old, advantages, mask, loss_agg="seq-mean-token-mean")[0]
    assert abs(token.item() - seq.item()) > 1e-3


@pytest.mark.parametrize("loss_agg", ["token-mean", "seq-mean-token-mean", "seq-mean-token-sum"])
def test_micro_batch_losses_and_gradients_sum_to_the_full_batch(loss_agg):
    logprobs, old, advantages, mask, ref = _random_batch()
    splits = (slice(0, 2), slice(2, 5), slice(5, 6))
    full_lp = logprobs.clone().requires_grad_()
    full, _ = dapo_loss(full_lp, old, advantages, mask, loss_agg=loss_agg, ref_logprobs=ref, beta=0.05)
    full.backward()
    totals = dict(num_tokens_in_batch=int(mask.sum()), num_seqs_in_batch=int((mask.sum(-1) > 0).sum()))
    micro_lp = logprobs.clone().requires_grad_()
    summed = 0.0
    for r in splits:
        part, _ = dapo_loss(micro_lp[r], old[r], advantages[r], mask[r], loss_agg=loss_agg, ref_logprobs=ref[r],
                            beta=0.05, **totals)
        part.backward()
        summed += part.item()
    assert summed == pytest.approx(full.item(), rel=1e-5)
    torch.testing.assert_close(micro_lp.grad, full_lp.grad)
    # without the totals, per-micro-batch normalization does not add up (the bug this guards against)
    naive = sum(dapo_loss(logprobs[r], old[r], advantages[r], mask[r], loss_agg=loss_agg, ref_logprobs=ref[r],
                          beta=0.05)[0].item() for r in splits)
    assert abs(naive - full.item()) > 1e-3


def test_batch_counts_smaller_than_the_micro_batch_are_rejected():
    logprobs, old, advantages, mask, _ = _random_batch()
    with pytest.raises(DapoInputError, match="whole optimizer batch"):
        dapo_loss(logprobs, old, advantages, mask, num_tokens_in_batch=3)
    with pytest.raises(DapoInputError, match="num_seqs_in_batch=2 .* 5 non-empty"):
        dapo_loss(logprobs, old, advantages, mask, loss_agg="seq-mean-token-mean", num_seqs_in_batch=2)
    with pytest.raises(DapoInputError, match="ref_logprobs has shape"):
        dapo_loss(logprobs, old, advantages, mask, ref_logprobs=old[:3])


# ---- KL ------------------------------------------------------------------------------------------------------------


def test_k3_kl_is_nonnegative_zero_when_equal_and_added_with_beta():
    logprobs, old, advantages, mask, ref = _random_batch()
    base, _ = dapo_loss(logprobs, old, advantages, mask)
    _, stats_equal = dapo_loss(logprobs, old, advantages, mask, ref_logprobs=logprobs.clone())
    assert stats_equal["kl"] == 0.0
    with_kl, stats = dapo_loss(logprobs, old, advantages, mask, ref_logprobs=ref, beta=0.1)
    d = ref - logprobs
    k3 = d.exp() - d - 1
    assert (k3 >= 0).all() and stats["kl"] > 0
    expected_kl = (k3 * mask).sum() / mask.sum()
    assert stats["kl"] == pytest.approx(expected_kl.item(), rel=1e-5)
    assert with_kl.item() == pytest.approx(base.item() + 0.1 * expected_kl.item(), rel=1e-5)
    monitored, _ = dapo_loss(logprobs, old, advantages, mask, ref_logprobs=ref, beta=0.0)
    assert monitored.item() == pytest.approx(base.item())  # beta 0: KL reported, not added
    with pytest.raises(DapoInputError, match="needs ref_logprobs"):
        dapo_loss(logprobs, old, advantages, mask, beta=0.1)


# ---- masks, padding, bad input -------------------------------------------------------------------------------------


def test_fully_masked_rows_and_inf_padding_stay_nan_free():
    logprobs, old, advantages, mask, ref = _random_batch()
    old = old.masked_fill(mask == 0, float("nan"))  # padding may hold anything: NaN, -inf
    ref = ref.masked_fill(mask == 0, float("nan"))
    old[1, 1:], ref[1, 1:] = float("-inf"), float("-inf")  # row 1 has one real token
    for loss_agg in ("token-mean", "seq-mean-token-mean", "seq-mean-token-sum"):
        lp = logprobs.clone().requires_grad_()
        loss, stats = dapo_loss(lp, old, advantages, mask, loss_agg=loss_agg, ref_logprobs=ref, beta=0.1)
        loss.backward()
        assert torch.isfinite(loss) and torch.isfinite(lp.grad).all()
        assert (lp.grad[mask == 0] == 0).all() and all(math.isfinite(v) for v in stats.values())
    lp = logprobs.clone().requires_grad_()
    loss, stats = dapo_loss(lp, old, advantages, torch.zeros_like(mask))
    loss.backward()
    assert loss.item() == 0.0 and (lp.grad == 0).all() and stats["clip_ratio/region_mean"] == 0.0


def test_overlong_filter_mask_drops_truncated_rows_from_the_loss():
    logprobs, old, advantages, mask, _ = _random_batch()
    truncated = T([False, False, True, False, True, False])
    filtered = overlong_filter_mask(mask, truncated)
    assert filtered.dtype == mask.dtype
    assert torch.equal(overlong_filter_mask(mask.bool(), truncated), filtered.bool())  # bool masks work too
    assert (filtered[truncated] == 0).all() and torch.equal(filtered[~truncated], mask[~truncated])
    loss, _ = dapo_loss(logprobs, old, advantages, filtered)
    assert loss.item() == dapo_loss(logprobs, old, advantages, filtered.bool())[0].item()
    kept = ~truncated
    loss_kept, _ = dapo_loss(logprobs[kept], old[kept], advantages[kept], mask[kept])
    assert loss.item() == pytest.approx(loss_kept.item(), rel=1e-6)
    with pytest.raises(DapoInputError, match="one flag per completion"):
        overlong_filter_mask(mask, T([True]))


def test_loss_input_errors_list_options_and_shapes():
    logprobs, old, advantages, mask, _ = _random_batch()
    with pytest.raises(ValueError, match="token-mean, seq-mean-token-mean, seq-mean-token-sum"):
        dapo_loss(logprobs, old, advantages, mask, loss_agg="sum")
    with pytest.raises(DapoInputError, match=r"advantages has shape \(6, 1\)"):
        dapo_loss(logprobs, old, advantages.unsqueeze(1), mask)
    with pytest.raises(DapoInputError, match="old_logprobs"):
        dapo_loss(logprobs, old[:, :3], advantages, mask)
    with pytest.raises(DapoInputError, match="eps_low"):
        dapo_loss(logprobs, old, advantages, mask, eps_low=1.0)


def test_masked_mean_handles_empty_mask():
    assert masked_mean(T([1.0, 3.0, 5.0]), T([1, 1, 0])).item() == 2.0
    assert masked_mean(T([1.0, 3.0]), T([0, 0])).item() == 0.0
