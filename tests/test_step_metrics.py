"""The trainer's per-step generation metrics on hand-made batches with known rewards and lengths.

`Trainer._generation_stats(seen, rewards)` turns every generation batch of a step (a `ScoredRollout` and its
`RewardBatch` each) into TRL-named metrics: reward mean / population std and per-objective means over the valid rows,
the fraction of rows whose group has zero reward std, completion length statistics. It uses host tensors only and no
trainer state, so it is called unbound here on batches built by hand (no model, no sampling).
"""

from __future__ import annotations

import math
import statistics

import pytest
import torch

from dapo_nb.data import PromptExample
from dapo_nb.generate import Rollout
from dapo_nb.rewards import ERROR_KINDS, RewardBatch
from dapo_nb.scored import ScoredRollout
from dapo_nb.trainer import Trainer


def generation_stats(seen, rewards) -> dict:
    return Trainer._generation_stats(None, seen, rewards)  # uses no trainer state


def make_rollout(lengths: list[int], truncated: list[bool], group_size: int, prompts_truncated: int = 0) -> Rollout:
    """A rollout whose completions have the given lengths (tokens are placeholders); rows of a group adjacent."""
    n, width = len(lengths), max(lengths)
    mask = torch.tensor([[1] * length + [0] * (width - length) for length in lengths])
    return Rollout(
        prompt_ids=torch.zeros(n, 2, dtype=torch.long), prompt_mask=torch.ones(n, 2, dtype=torch.long),
        completion_ids=torch.zeros(n, width, dtype=torch.long), completion_mask=mask,
        old_logprobs=torch.zeros(n, width), entropies=torch.zeros(n, width),
        truncated=torch.tensor(truncated), lengths=torch.tensor(lengths),
        group_ids=torch.arange(n // group_size).repeat_interleave(group_size),
        prompt_texts=[""] * n, completion_texts=[""] * n, group_size=group_size, num_prompts_truncated=prompts_truncated)


def make_batch(scores, objectives, lengths, truncated, *, group_size=2, valid=None, weights=None, errors=None,
               prompts_truncated=0) -> tuple[ScoredRollout, RewardBatch]:
    n = len(scores)
    reward = RewardBatch(
        scores=list(scores), objectives={k: list(v) for k, v in objectives.items()},
        weights=weights or {name: 1.0 for name in objectives}, valid=list(valid or [True] * n),
        error_counts={kind: (errors or {}).get(kind, 0) for kind in ERROR_KINDS})
    examples = [PromptExample(f"q{i // group_size}", "p", "0") for i in range(n)]
    return ScoredRollout.of(make_rollout(lengths, truncated, group_size, prompts_truncated), reward, examples), reward


def two_generation_batches():
    """Two generation batches of one step (dynamic sampling drew twice), G = 2, 8 rows, every reward known.

    Groups (scores): [1, 1] zero std, [0, 0.5] signal, [0.25, 0.25] zero std | [0.75, 0.75] zero std."""
    first = make_batch(
        scores=[1.0, 1.0, 0.0, 0.5, 0.25, 0.25],
        objectives={"correctness": [1, 1, 0, 0, 0, 1], "format": [1, 1, 1, 0, 0, 1]},
        lengths=[4, 4, 2, 6, 3, 5], truncated=[False, False, False, True, False, False],
        weights={"correctness": 1.0, "format": 0.25}, errors={"exception": 1}, prompts_truncated=1)
    second = make_batch(
        scores=[0.75, 0.75], objectives={"correctness": [0, 0], "format": [1, 0.5]},
        lengths=[1, 6], truncated=[False, True],
        weights={"correctness": 0.5, "format": 0.75}, errors={"exception": 2, "non_finite": 1}, prompts_truncated=2)
    return [first[0], second[0]], [first[1], second[1]]


def test_reward_mean_std_and_objective_means_span_every_generation_batch():
    seen, rewards = two_generation_batches()
    m = generation_stats(seen, rewards)
    scores = [1.0, 1.0, 0.0, 0.5, 0.25, 0.25, 0.75, 0.75]
    assert m["reward"] == 4.5 / 8  # exact in float32
    assert m["reward_std"] == pytest.approx(statistics.pstdev(scores), rel=1e-6)  # population std, as TRL logs it
    assert m["reward_std"] != pytest.approx(statistics.stdev(scores), rel=1e-3)  # not the unbiased one
    assert m["rewards/correctness/mean"] == 3 / 8
    assert m["rewards/format/mean"] == 5.5 / 8
    assert m["rewards/correctness/std"] == pytest.approx(statistics.pstdev([1, 1, 0, 0, 0, 1, 0, 0]), rel=1e-12)


def test_frac_reward_zero_std_counts_rows_of_constant_groups_in_every_batch():
    seen, rewards = two_generation_batches()
    # three of the four groups (6 of 8 rows) have equal rewards; the first batch alone would give 4/6, the last 2/2
    assert generation_stats(seen, rewards)["frac_reward_zero_std"] == 6 / 8
    # G = 4: one group of four varies in its last row only; the other three are constant (one at a non-zero value)
    scores = [0.0] * 4 + [0.0, 0.0, 0.0, 1.0] + [1.0] * 4 + [0.0] * 4
    bigger = make_batch(scores, {"correctness": scores}, [1] * 16, [False] * 16, group_size=4)
    assert generation_stats([bigger[0]], [bigger[1]])["frac_reward_zero_std"] == 12 / 16


def test_completion_lengths_and_clipped_ratio():
    seen, rewards = two_generation_batches()
    m = generation_stats(seen, rewards)
    lengths = [4, 4, 2, 6, 3, 5, 1, 6]
    assert m["completions/mean_length"] == sum(lengths) / 8
    assert m["completions/min_length"] == 1 and m["completions/max_length"] == 6  # min from the 2nd batch
    assert m["completions/clipped_ratio"] == 2 / 8  # one truncated row in each batch
    assert m["num_generated_tokens"] == sum(lengths) and isinstance(m["num_generated_tokens"], int)
    assert m["prompts_truncated"] == 3


def test_weights_come_from_the_last_batch_and_error_counts_add_up():
    seen, rewards = two_generation_batches()
    m = generation_stats(seen, rewards)
    assert m["weights/correctness"] == 0.5 and m["weights/format"] == 0.75  # live weights of the latest batch
    assert m["reward_errors/exception"] == 3 and m["reward_errors/non_finite"] == 1
    assert all(m[f"reward_errors/{kind}"] == 0 for kind in ERROR_KINDS if kind not in ("exception", "non_finite"))


def test_dropped_rows_leave_the_reward_means_but_not_the_length_statistics():
    # on_error="drop" marks rows invalid with score 0.0 and objectives 0.0; they never train and must not count
    scored, reward = make_batch(
        scores=[1.0, 0.0, 0.5, 0.0], objectives={"correctness": [1, 0, 1, 0]}, lengths=[2, 8, 4, 6],
        truncated=[False, True, False, False], valid=[True, False, True, False])
    m = generation_stats([scored], [reward])
    assert m["reward"] == 0.75 and m["reward_std"] == 0.25  # over [1.0, 0.5] only
    assert m["rewards/correctness/mean"] == 1.0 and m["reward_errors/dropped"] == 2
    assert m["completions/mean_length"] == 5.0 and m["completions/clipped_ratio"] == 0.25  # all generated rows
    everything_dropped = make_batch([0.0, 0.0], {"correctness": [0, 0]}, [3, 3], [False, False], valid=[False, False])
    m = generation_stats([everything_dropped[0]], [everything_dropped[1]])
    assert math.isnan(m["reward"]) and math.isnan(m["reward_std"]) and math.isnan(m["rewards/correctness/mean"])
    assert m["num_generated_tokens"] == 6


def test_a_dropped_row_leaves_its_group_flat_for_frac_reward_zero_std():
    # group 0: [1.0, dropped] trains on one row, so it has no signal; group 1: [0, 1] has signal
    seen, reward = make_batch(scores=[1.0, 0.0, 0.0, 1.0], objectives={"correctness": [1, 0, 0, 1]},
                              lengths=[1, 1, 1, 1], truncated=[False] * 4, valid=[True, False, True, True])
    assert generation_stats([seen], [reward])["frac_reward_zero_std"] == 0.5
