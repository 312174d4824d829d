"""The DAPO step as pure tensor math: advantages, the dynamic-sampling filter, log-probs, the clipped token-level loss.

Tensors in, tensors out: nothing here knows about models, tokenizers or text; ``dapo_nb.trainer`` drives it.
It follows DAPO (Yu et al. 2025, arXiv 2503.14476):

* Eq. 9  advantage A_i = (R_i - mean_group R) / std_group R over the G completions of one prompt, shared by all of
  completion i's tokens -> ``group_advantages(std_scale="group")``.
* Eq. 10 Clip-Higher: ratio r = pi / pi_old clipped to [1 - eps_low, 1 + eps_high] (0.2 / 0.28), so a token with
  A > 0 can gain more probability before its gradient is cut -> ``dapo_loss``.
* Eq. 11 dynamic sampling: keep a prompt only if 0 < #correct < G, i.e. the group's metric varies
  -> ``groups_with_signal`` (std of the metric > threshold; the trainer keeps sampling until the batch is full).
* Eq. 8 / 12 token-level loss: the sum over every completion token of the batch divided by sum_i |o_i|
  -> ``loss_agg="token-mean"``. Contrast open-thought/tiny-grpo (loss.py) and the original GRPO, which average each
  completion over its own tokens and then average completions ("seq-mean-token-mean"): a token of a 10-token answer
  then weighs ten times a token of a 100-token answer, so long bad answers are under-punished and long good ones
  under-rewarded. That length bias is what DAPO removes.
* Sec. 3.4 overlong filtering: truncated completions leave the loss -> ``overlong_filter_mask``. The soft overlong
  punishment (Eq. 13) is a reward and lives with the rewards, not here.

Where it departs from the paper (or fills in what it leaves open):

* std is the unbiased (Bessel) sample std, as in TRL and verl, so our advantages equal theirs for the same rewards;
  the paper does not say. A group whose values are all equal (or that has one member) has std 0 and advantage exactly
  0, not 0 / eps rounding noise.
* std_scale="batch" divides by the std of all rewards in the batch (TRL ``scale_rewards="batch"``), "none" does not
  divide (Dr. GRPO, arXiv 2503.20783). ``batch_baseline_advantages`` is a batch-mean baseline for greedy decoding,
  where a group's G completions are identical and carry no group signal: REINFORCE with a baseline, not DAPO.
* An optional KL penalty to a frozen reference (the k3 estimator exp(d) - d - 1, d = ref - logp; Schulman 2020, as in
  GRPO/TRL), off by default: DAPO drops it. Log-ratios are clamped to +-20 (as verl does) so one wild token cannot
  produce inf.
* Ablations: "seq-mean-token-mean" (GRPO) and "seq-mean-token-sum" (Dr. GRPO up to its constant 1 / L_max, which
  folds into the learning rate). Completions with no tokens left (e.g. overlong-filtered) do not count as sequences.
* Gradient accumulation: pass the whole optimizer batch's ``num_tokens_in_batch`` (and ``num_seqs_in_batch``) so the
  micro-batch losses sum to the full-batch loss.
"""

from __future__ import annotations

import contextlib

import torch
from torch import Tensor

from .config import LOSS_AGGS, STD_SCALES

MAX_LOG_RATIO = 20.0  # |log pi - log pi_old| beyond this is clamped (exp(20) ~ 5e8): keeps the loss finite


class DapoInputError(ValueError):
    """A tensor or option handed to the DAPO math is malformed; the message says which and how to fix it."""


# ----------------------------------------------------------------------------------------------------------------
# Input checks


def _check_choice(name: str, value: str, valid: tuple[str, ...]) -> None:
    if value not in valid:
        raise DapoInputError(f"{name}={value!r} is not valid; use one of: {', '.join(valid)}")


def _check_shape(name: str, tensor: Tensor, shape: tuple[int, ...], meaning: str) -> None:
    if tuple(tensor.shape) != tuple(shape):
        raise DapoInputError(f"{name} has shape {tuple(tensor.shape)}, expected {tuple(shape)} ({meaning})")


def _check_finite(name: str, tensor: Tensor) -> None:
    bad = (~torch.isfinite(tensor)).sum().item()
    if bad:
        raise DapoInputError(f"{name} has {bad} non-finite value(s) (NaN/inf); fix or drop them before this step")


def _check_per_sample(values: Tensor, group_ids: Tensor, name: str) -> None:
    if values.dim() != 1:
        raise DapoInputError(f"{name} must be 1-D (N,), one value per completion; got shape {tuple(values.shape)}")
    _check_shape("group_ids", group_ids, tuple(values.shape), f"one prompt id per entry of {name}")
    if group_ids.dtype.is_floating_point:
        raise DapoInputError("group_ids must be an integer tensor (one prompt id per completion)")
    _check_finite(name, values)


# ----------------------------------------------------------------------------------------------------------------
# Advantages and the dynamic-sampling filter


def _as_float(values: Tensor) -> Tensor:
    return values if values.dtype == torch.float64 else values.float()  # float64 kept, all else float32


def _group_stats(values: Tensor, group_ids: Tensor) -> tuple[Tensor, Tensor]:
    """Per-sample (value - group mean) and unbiased group std, both exactly 0 where a group's values are all equal."""
    _, inverse, counts = torch.unique(group_ids, return_inverse=True, return_counts=True)  # (K,) (N,) (K,)
    num_groups = counts.numel()
    mean = values.new_zeros(num_groups).index_add_(0, inverse, values) / counts  # (K,)
    centered = values - mean[inverse]  # (N,)
    sq_sum = values.new_zeros(num_groups).index_add_(0, inverse, centered**2)  # (K,)
    std = (sq_sum / (counts - 1).clamp(min=1)).sqrt()  # (K,) unbiased
    group_max = values.new_full((num_groups,), float("-inf")).scatter_reduce_(0, inverse, values, "amax")
    group_min = values.new_full((num_groups,), float("inf")).scatter_reduce_(0, inverse, values, "amin")
    has_spread = (group_max > group_min)[inverse]  # (N,) False for constant and one-member groups
    return torch.where(has_spread, centered, 0.0), torch.where(has_spread, std[inverse], 0.0)


def group_advantages(rewards: Tensor, group_ids: Tensor, std_scale: str = "group", eps: float = 1e-6) -> Tensor:
    """A_i = (R_i - mean_group) / (std + eps) per completion (DAPO Eq. 9); (N,), (N,) -> (N,) float."""
    _check_choice("std_scale", std_scale, STD_SCALES)
    _check_per_sample(rewards, group_ids, "rewards")
    rewards = _as_float(rewards)
    centered, group_std = _group_stats(rewards, group_ids)  # (N,), (N,)
    if std_scale == "group":
        return centered / (group_std + eps)
    if std_scale == "batch":
        batch_std = rewards.std() if rewards.numel() > 1 else rewards.new_zeros(())
        return centered / (batch_std + eps)
    return centered


def batch_baseline_advantages(rewards: Tensor, std_scale: str = "batch", eps: float = 1e-6) -> Tensor:
    """A_i = (R_i - mean_batch) / (std_batch + eps), for greedy decoding where groups carry no signal; (N,) -> (N,)."""
    _check_choice("std_scale", std_scale, ("batch", "none"))
    one_group = torch.zeros(rewards.shape, dtype=torch.long, device=rewards.device)
    return group_advantages(rewards, one_group, "group" if std_scale == "batch" else "none", eps)


def groups_with_signal(metric: Tensor, group_ids: Tensor, threshold: float = 0.0) -> Tensor:
    """Per completion (N,) bool: True where its group's std of `metric` > threshold (DAPO Eq. 11 dynamic sampling).

    With 0/1 correctness and threshold 0 this keeps exactly the groups with 0 < #correct < G. A one-member group has
    std 0. Select kept rollouts with `keep = groups_with_signal(...)`, count kept groups with
    `group_ids[keep].unique().numel()`.
    """
    _check_per_sample(metric, group_ids, "metric")
    _, group_std = _group_stats(_as_float(metric), group_ids)  # (N,)
    return group_std > threshold


# ----------------------------------------------------------------------------------------------------------------
# Log-probs and entropy from logits, one batch row at a time: no (B, T, V) temporaries besides the gradient


def _check_logits(logits: Tensor) -> None:
    if logits.dim() != 3 or not logits.dtype.is_floating_point:
        raise DapoInputError(f"logits must be a float (B, T, V) tensor; got {logits.dtype} {tuple(logits.shape)}")


def token_logprobs(logits: Tensor, targets: Tensor, temperature: float = 1.0) -> Tensor:
    """log softmax(logits / temperature)[target] per position; (B, T, V), (B, T) -> (B, T) float32."""
    _check_logits(logits)
    _check_shape("targets", targets, tuple(logits.shape[:2]), "one token id per logits position (B, T)")
    if targets.dtype.is_floating_point:
        raise DapoInputError("targets must be integer token ids")
    if temperature <= 0:
        raise DapoInputError(f"temperature={temperature} must be > 0 (use the sampling temperature of the rollout)")
    vocab = logits.shape[-1]
    if targets.numel() and (targets.min() < 0 or targets.max() >= vocab):
        raise DapoInputError(
            f"targets hold ids outside [0, {vocab}) (e.g. -100 padding); put any valid id (the pad token) at padding "
            "positions and drop them with completion_mask instead"
        )
    if logits.shape[0] == 0:
        return logits.new_zeros(logits.shape[:2], dtype=torch.float32)
    return _TokenLogprobs.apply(logits, targets.long(), float(temperature))


def _scaled_row(row: Tensor, temperature: float) -> Tensor:
    return row.float() if temperature == 1.0 else row.float() / temperature  # (T, V) float32


class _TokenLogprobs(torch.autograd.Function):
    """log softmax(logits / tau)[target], keeping no (B, T, V) tensor but the logits; gradient built row by row.

    Plain log_softmax + gather keeps its (B, T, V) float output for backward and builds two more (B, T, V) tensors
    there; this keeps a reference to the logits instead and writes d/dlogits = (onehot - softmax) * g / tau row by row
    into the one gradient tensor. Measured on the 2-core CPU (B=8, T=48, V=49152): as fast single-threaded
    (88 vs 123 ms forward+backward), peak memory above the logits ~130 MiB vs ~220 MiB.
    """

    @staticmethod
    def forward(ctx, logits: Tensor, targets: Tensor, temperature: float) -> Tensor:
        lse = torch.stack([torch.logsumexp(_scaled_row(row, temperature), -1) for row in logits])  # (B, T)
        picked = logits.gather(-1, targets.unsqueeze(-1)).squeeze(-1).float() / temperature  # (B, T)
        ctx.save_for_backward(logits, targets, lse)
        ctx.temperature = temperature
        return picked - lse  # (B, T)

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, grad_out: Tensor):
        logits, targets, lse = ctx.saved_tensors
        grad = torch.empty_like(logits)  # (B, T, V)
        for b, row in enumerate(logits):
            g = (grad_out[b] / ctx.temperature).unsqueeze(-1)  # (T, 1)
            probs = (_scaled_row(row, ctx.temperature) - lse[b].unsqueeze(-1)).exp_()  # (T, V) softmax
            grad[b] = probs.mul_(-g).scatter_add_(-1, targets[b].unsqueeze(-1), g)
        return grad, None, None


def full_precision(device: torch.device):
    """A context without autocast on `device`: the head's matmul and log-softmax run in float32 under bf16 autocast."""
    if torch.amp.is_autocast_available(device.type):
        return torch.autocast(device.type, enabled=False)
    return contextlib.nullcontext()


def linear_token_logprobs(hidden: Tensor, weight: Tensor, targets: Tensor, temperature: float = 1.0,
                          max_chunk_bytes: int = 1 << 28) -> Tensor:
    """log softmax(hidden @ weight.T / temperature)[target] per position, fused with the output layer (lm_head).

    Shapes: hidden (B, T, H), weight (V, H), targets (B, T) -> (B, T) float32. The (B, T, V) logits never exist at
    once: they are computed in float32 for chunks of positions of at most `max_chunk_bytes` each, and recomputed
    chunk by chunk in the backward pass (the gradient of `hidden` and `weight` is accumulated per chunk). When all
    the logits fit in one chunk they are kept from the forward pass instead of being recomputed, so small CPU batches
    pay nothing extra. Peak memory above the inputs: about 3 chunks, whatever B x T is.
    """
    if hidden.dim() != 3 or weight.dim() != 2 or hidden.shape[-1] != weight.shape[-1]:
        raise DapoInputError(f"hidden must be (B, T, H) and weight (V, H); got {tuple(hidden.shape)} and {tuple(weight.shape)}")
    _check_shape("targets", targets, tuple(hidden.shape[:2]), "one token id per hidden position (B, T)")
    if temperature <= 0:
        raise DapoInputError(f"temperature={temperature} must be > 0 (use the sampling temperature of the rollout)")
    vocab = weight.shape[0]
    if targets.numel() and (targets.min() < 0 or targets.max() >= vocab):
        raise DapoInputError(f"targets hold ids outside [0, {vocab}); put the pad token at padding positions")
    rows_per_chunk = max(1, max_chunk_bytes // (4 * vocab))
    hidden_flat = hidden.reshape(-1, hidden.shape[-1])  # (M, H), M = B * T
    backward_follows = torch.is_grad_enabled() and (hidden.requires_grad or weight.requires_grad)
    keep_logits = backward_follows and hidden_flat.shape[0] <= rows_per_chunk
    flat = _LinearTokenLogprobs.apply(hidden_flat, weight, targets.reshape(-1).long(), float(temperature),
                                      rows_per_chunk, keep_logits)  # (M,)
    return flat.view(hidden.shape[:2])


class _LinearTokenLogprobs(torch.autograd.Function):
    """Chunked, fused lm_head + log-softmax + gather; see `linear_token_logprobs`. Inputs flattened: (M, H), (V, H), (M,)."""

    @staticmethod
    def forward(ctx, hidden: Tensor, weight: Tensor, targets: Tensor, temperature: float, rows_per_chunk: int,
                keep_logits: bool) -> Tensor:
        with full_precision(hidden.device):
            return _LinearTokenLogprobs._forward(ctx, hidden, weight, targets, temperature, rows_per_chunk, keep_logits)

    @staticmethod
    def _forward(ctx, hidden, weight, targets, temperature, rows_per_chunk, keep_logits) -> Tensor:
        weight32 = weight.float()  # (V, H)
        out = hidden.new_empty(hidden.shape[0], dtype=torch.float32)  # (M,)
        lse = hidden.new_empty(hidden.shape[0], dtype=torch.float32)  # (M,)
        kept = []
        for start in range(0, hidden.shape[0], rows_per_chunk):
            rows = slice(start, start + rows_per_chunk)
            logits = hidden[rows].float() @ weight32.T  # (m, V)
            if temperature != 1.0:
                logits /= temperature
            lse[rows] = torch.logsumexp(logits, dim=-1)
            out[rows] = logits.gather(-1, targets[rows].unsqueeze(-1)).squeeze(-1) - lse[rows]
            if keep_logits:
                kept.append(logits)
        ctx.save_for_backward(hidden, weight, targets, lse)
        ctx.kept = kept
        ctx.temperature, ctx.rows_per_chunk = temperature, rows_per_chunk
        return out

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, grad_out: Tensor):
        with full_precision(grad_out.device):
            return _LinearTokenLogprobs._backward(ctx, grad_out)

    @staticmethod
    def _backward(ctx, grad_out: Tensor):
        hidden, weight, targets, lse = ctx.saved_tensors
        want_hidden, want_weight = ctx.needs_input_grad[:2]
        weight32 = weight.float()
        grad_hidden = torch.zeros_like(hidden) if want_hidden else None  # (M, H)
        grad_weight = torch.zeros_like(weight32) if want_weight else None  # (V, H) float32 accumulator
        for i, start in enumerate(range(0, hidden.shape[0], ctx.rows_per_chunk)):
            rows = slice(start, start + ctx.rows_per_chunk)
            h = hidden[rows].float()  # (m, H)
            if ctx.kept:
                logits = ctx.kept[i]
            else:
                logits = h @ weight32.T  # (m, V) recomputed
                if ctx.temperature != 1.0:
                    logits /= ctx.temperature
            g = (grad_out[rows].float() / ctx.temperature).unsqueeze(-1)  # (m, 1)
            # d out / d logits = onehot(target) - softmax, times g / temperature
            grad_logits = (logits - lse[rows].unsqueeze(-1)).exp_().mul_(-g).scatter_add_(-1, targets[rows].unsqueeze(-1), g)
            if want_hidden:
                grad_hidden[rows] = (grad_logits @ weight32).to(hidden.dtype)
            if want_weight:
                grad_weight.addmm_(grad_logits.T, h)
        ctx.kept = []
        return grad_hidden, None if grad_weight is None else grad_weight.to(weight.dtype), None, None, None, None


@torch.no_grad()
def token_entropy(logits: Tensor) -> Tensor:
    """Entropy in nats of the next-token distribution per position, a metric without gradient; (B, T, V) -> (B, T)."""
    _check_logits(logits)
    rows = [torch.special.entr(torch.softmax(row.float(), dim=-1)).sum(-1) for row in logits]  # each (T,)
    return torch.stack(rows) if rows else logits.new_zeros(logits.shape[:2], dtype=torch.float32)


# ----------------------------------------------------------------------------------------------------------------
# Masks and aggregation


def masked_mean(values: Tensor, mask: Tensor) -> Tensor:
    """Mean of `values` where `mask` is 1 (0 when nothing is masked in); same-shape tensors -> scalar."""
    mask = mask.to(values.dtype)
    return (values * mask).sum() / mask.sum().clamp(min=1.0)


def overlong_filter_mask(completion_mask: Tensor, truncated: Tensor) -> Tensor:
    """Zero the mask rows of truncated completions (DAPO overlong filtering); (B, T), (B,) bool -> (B, T)."""
    if completion_mask.dim() != 2:
        raise DapoInputError(f"completion_mask must be (B, T); got shape {tuple(completion_mask.shape)}")
    _check_shape("truncated", truncated, tuple(completion_mask.shape[:1]), "one flag per completion (B,)")
    keep = ~truncated.bool()  # (B,)
    return completion_mask * keep.unsqueeze(1).to(completion_mask.dtype)


def _aggregate(per_token: Tensor, mask: Tensor, loss_agg: str, num_tokens: float | None, num_seqs: float | None):
    """Reduce a (B, T) per-token loss to a scalar as `loss_agg` says (see module docstring)."""
    if loss_agg == "token-mean":
        denom = mask.sum() if num_tokens is None else per_token.new_tensor(float(num_tokens))
        return (per_token * mask).sum() / denom.clamp(min=1.0)
    seq_tokens = mask.sum(-1)  # (B,)
    per_seq = (per_token * mask).sum(-1)  # (B,) token-sum
    if loss_agg == "seq-mean-token-mean":
        per_seq = per_seq / seq_tokens.clamp(min=1.0)
    denom = (seq_tokens > 0).sum().to(per_token.dtype) if num_seqs is None else per_token.new_tensor(float(num_seqs))
    return per_seq.sum() / denom.clamp(min=1.0)


# ----------------------------------------------------------------------------------------------------------------
# The loss


def dapo_loss(
    logprobs: Tensor, old_logprobs: Tensor, advantages: Tensor, completion_mask: Tensor, *,
    eps_low: float = 0.2, eps_high: float = 0.28, loss_agg: str = "token-mean",
    ref_logprobs: Tensor | None = None, beta: float = 0.0,
    num_tokens_in_batch: float | None = None, num_seqs_in_batch: float | None = None,
) -> tuple[Tensor, dict[str, float]]:
    """Clipped surrogate with decoupled clip (Eq. 10), aggregated per `loss_agg`, plus beta * k3 KL; -> (loss, stats).

    Shapes: logprobs / old_logprobs / ref_logprobs (B, T) (old = behaviour policy from the generator), advantages (B,),
    completion_mask (B, T) in {0, 1}. Padding may hold anything (even -inf): it never reaches loss or gradient.
    When a rollout batch is split into micro-batches, pass the whole optimizer batch's completion-token count as
    `num_tokens_in_batch` (token-mean) and its count of non-empty completions as `num_seqs_in_batch` (seq-mean modes);
    each mode uses the one it needs. Stats use TRL's names and are over this call's tokens.
    """
    _check_choice("loss_agg", loss_agg, LOSS_AGGS)
    if logprobs.dim() != 2:
        raise DapoInputError(f"logprobs must be (B, T); got shape {tuple(logprobs.shape)}")
    batch, length = logprobs.shape
    _check_shape("old_logprobs", old_logprobs, (batch, length), "same (B, T) as logprobs")
    _check_shape("completion_mask", completion_mask, (batch, length), "same (B, T) as logprobs")
    _check_shape("advantages", advantages, (batch,), "one advantage per completion (B,)")
    _check_finite("advantages", advantages)
    if not (0.0 <= eps_low < 1.0 and eps_high >= 0.0):
        raise DapoInputError(f"need 0 <= eps_low < 1 and eps_high >= 0; got eps_low={eps_low}, eps_high={eps_high}")
    if beta < 0 or (beta > 0 and ref_logprobs is None):
        raise DapoInputError(f"beta={beta}: beta must be >= 0, and beta > 0 needs ref_logprobs (or set beta=0)")
    if ref_logprobs is not None:
        _check_shape("ref_logprobs", ref_logprobs, (batch, length), "same (B, T) as logprobs")
    mask = completion_mask.float()  # (B, T)
    here = {"num_tokens_in_batch": (num_tokens_in_batch, mask.sum().item(), "completion tokens"),
            "num_seqs_in_batch": (num_seqs_in_batch, (mask.sum(-1) > 0).sum().item(), "non-empty completions")}
    for name, (given, local, what) in here.items():
        if given is not None and not float(given) >= local:
            raise DapoInputError(f"{name}={given} is less than this micro-batch's {int(local)} {what}; "
                                 "pass the count over the whole optimizer batch")
    valid = mask > 0  # (B, T)
    logprobs = logprobs.float()

    log_ratio = torch.where(valid, logprobs - old_logprobs.float(), 0.0)  # (B, T), 0 on padding
    ratio = log_ratio.clamp(-MAX_LOG_RATIO, MAX_LOG_RATIO).exp()  # (B, T)
    adv = advantages.float().unsqueeze(1)  # (B, 1)
    clipped_ratio = ratio.clamp(1.0 - eps_low, 1.0 + eps_high)  # (B, T)
    per_token = -torch.minimum(ratio * adv, clipped_ratio * adv)  # (B, T)
    policy_loss = _aggregate(per_token, mask, loss_agg, num_tokens_in_batch, num_seqs_in_batch)
    loss = policy_loss

    stats: dict[str, float] = {"policy_loss": policy_loss.item(), "num_tokens": mask.sum().item()}
    if ref_logprobs is not None:
        ref_diff = torch.where(valid, ref_logprobs.float() - logprobs, 0.0).clamp(-MAX_LOG_RATIO, MAX_LOG_RATIO)
        per_token_kl = ref_diff.exp() - ref_diff - 1.0  # (B, T) k3 estimate of KL(pi || pi_ref), >= 0
        if beta > 0:
            loss = loss + beta * _aggregate(per_token_kl, mask, loss_agg, num_tokens_in_batch, num_seqs_in_batch)
        stats["kl"] = masked_mean(per_token_kl.detach(), mask).item()
    with torch.no_grad():
        low = (ratio < 1.0 - eps_low) & (adv < 0)  # (B, T) pushed down past the low bound: no gradient
        high = (ratio > 1.0 + eps_high) & (adv > 0)  # (B, T) pushed up past the high bound: no gradient
        stats["clip_ratio/low_mean"] = masked_mean(low.float(), mask).item()
        stats["clip_ratio/high_mean"] = masked_mean(high.float(), mask).item()
        stats["clip_ratio/region_mean"] = masked_mean((low | high).float(), mask).item()
    return loss, stats
