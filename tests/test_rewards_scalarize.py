"""Scalarizers and normalization (dapo_nb/rewards/scalarize.py) on hand-computed values."""

from __future__ import annotations

import math

import pytest

from dapo_nb.rewards import MultiObjectiveReward, ScalarizeError
from dapo_nb.rewards.scalarize import group_zscore, scalarize, smooth_tchebycheff, tchebycheff, weighted_sum

VALUES = {"correctness": 1.0, "clarity": 0.5, "detail": 0.25}
WEIGHTS = {"correctness": 0.5, "clarity": 0.25, "detail": 0.25}
IDEAL = {"correctness": 1.0, "clarity": 1.0, "detail": 1.0}


def test_weighted_sum():
    assert weighted_sum(VALUES, WEIGHTS) == 0.5 + 0.125 + 0.0625


def test_tchebycheff_is_minus_the_worst_weighted_gap():
    # gaps: correctness 0.5*0 = 0, clarity 0.25*0.5 = 0.125, detail 0.25*0.75 = 0.1875
    assert tchebycheff(VALUES, WEIGHTS, IDEAL) == pytest.approx(-0.1875)


def test_tchebycheff_improving_only_a_non_worst_objective_does_not_help():
    better_clarity = {**VALUES, "clarity": 0.9}
    assert tchebycheff(better_clarity, WEIGHTS, IDEAL) == tchebycheff(VALUES, WEIGHTS, IDEAL)
    assert weighted_sum(better_clarity, WEIGHTS) > weighted_sum(VALUES, WEIGHTS)


def test_smooth_tchebycheff_bounds_and_limit():
    """Lin et al. 2024: TCH - mu log m <= STCH <= TCH (for our negated form), and STCH -> TCH as mu -> 0."""
    hard = tchebycheff(VALUES, WEIGHTS, IDEAL)
    for mu in (1.0, 0.1, 0.01):
        smooth = smooth_tchebycheff(VALUES, WEIGHTS, IDEAL, mu)
        assert hard - mu * math.log(3) - 1e-12 <= smooth <= hard + 1e-12
    assert smooth_tchebycheff(VALUES, WEIGHTS, IDEAL, 1e-4) == pytest.approx(hard, abs=1e-3)


def test_smooth_tchebycheff_hand_computed_and_stable():
    mu = 0.5
    gaps = [0.0, 0.125, 0.1875]
    expected = -mu * math.log(sum(math.exp(g / mu) for g in gaps))
    assert smooth_tchebycheff(VALUES, WEIGHTS, IDEAL, mu) == pytest.approx(expected, rel=1e-12)
    # huge gaps over a tiny mu would overflow a naive exp
    assert math.isfinite(smooth_tchebycheff({"a": -1e6}, {"a": 1.0}, {"a": 1.0}, 1e-6))


def test_zero_weights_are_left_out():
    with_zero = {**WEIGHTS, "format": 0.0}
    values = {**VALUES, "format": -100.0}
    assert weighted_sum(values, with_zero) == weighted_sum(VALUES, WEIGHTS)
    assert tchebycheff(values, with_zero, {**IDEAL, "format": 1.0}) == tchebycheff(VALUES, WEIGHTS, IDEAL)
    assert smooth_tchebycheff(values, with_zero, {**IDEAL, "format": 1.0}, 0.1) == smooth_tchebycheff(
        VALUES, WEIGHTS, IDEAL, 0.1
    )


# ----------------------------------------------------------------------------
# Group z-score (GDPO)


def test_group_zscore_normalizes_each_objective_within_each_group():
    columns = {"a": [0.0, 1.0, 5.0, 5.0], "b": [1.0, 3.0, 2.0, 4.0]}
    out = group_zscore(columns, group_ids=[0, 0, 1, 1], valid=[True] * 4)
    assert out["a"] == [-1.0, 1.0, 0.0, 0.0]  # group 1 is flat: no signal
    assert out["b"] == [-1.0, 1.0, -1.0, 1.0]


def test_group_zscore_ignores_invalid_samples():
    out = group_zscore({"a": [0.0, 1.0, 1000.0]}, group_ids=[0, 0, 0], valid=[True, True, False])
    assert out["a"] == [-1.0, 1.0, 0.0]


def test_normalize_then_sum_keeps_combinations_apart():
    """GDPO's example: normalizing the summed reward maps group A (0,0) vs (1,0) and group B (0,0) vs (1,1)
    to the same advantages; normalizing each reward first keeps "both improved" above "one improved"."""
    columns = {"correctness": [0.0, 1.0, 0.0, 1.0], "format": [0.0, 0.0, 0.0, 1.0]}
    weights = {"correctness": 1.0, "format": 1.0}
    groups = [0, 0, 1, 1]
    summed = scalarize(columns, weights)
    summed_then_normalized = group_zscore({"sum": summed}, groups, [True] * 4)["sum"]
    assert summed_then_normalized == [-1.0, 1.0, -1.0, 1.0]  # GRPO: the two groups look alike
    normalized_then_summed = scalarize(columns, weights, normalization="group_zscore", group_ids=groups)
    assert normalized_then_summed == [-1.0, 1.0, -2.0, 2.0]


def test_scalarize_batch_tchebycheff_uses_declared_bounds_or_group_best():
    columns = {"correctness": [1.0, 0.0], "free": [3.0, 5.0]}  # 'free' has no declared range
    scores = scalarize(
        columns,
        {"correctness": 1.0, "free": 1.0},
        scalarizer="tchebycheff",
        group_ids=[0, 0],
        declared_high={"correctness": 1.0, "free": None},
    )
    assert scores == [pytest.approx(-2.0), pytest.approx(-1.0)]  # ideal: correctness 1 (declared), free 5 (group best)
    fixed = scalarize(
        columns,
        {"correctness": 1.0, "free": 1.0},
        scalarizer="tchebycheff",
        ideal={"free": 10.0},
        declared_high={"correctness": 1.0},
    )
    assert fixed == [pytest.approx(-7.0), pytest.approx(-5.0)]


def test_scalarize_marks_invalid_samples_zero():
    assert scalarize({"a": [2.0, 3.0]}, {"a": 1.0}, valid=[True, False]) == [2.0, 0.0]


def test_scalarize_errors():
    with pytest.raises(ScalarizeError, match="choose one of weighted_sum"):
        scalarize({"a": [1.0]}, {"a": 1.0}, scalarizer="chebyshev")
    with pytest.raises(ScalarizeError, match="choose one of none, group_zscore"):
        scalarize({"a": [1.0]}, {"a": 1.0}, normalization="zscore")
    with pytest.raises(ScalarizeError, match="needs group_ids"):
        scalarize({"a": [1.0]}, {"a": 1.0}, normalization="group_zscore")
    with pytest.raises(ScalarizeError, match="mu must be a positive"):
        scalarize({"a": [1.0]}, {"a": 1.0}, scalarizer="smooth_tchebycheff", mu=0.0)
    with pytest.raises(ScalarizeError, match="no values"):
        scalarize({"a": [1.0]}, {"b": 1.0})


# ----------------------------------------------------------------------------
# Through the reward


@pytest.mark.parametrize("scalarizer", ["weighted_sum", "smooth_tchebycheff"])
def test_scalarizers_prefer_the_dominating_completion(scalarizer):
    reward = MultiObjectiveReward(objectives=["correctness", "format"], scalarizer=scalarizer, mu=0.05)
    batch = reward.score(["Answer: 540", "Answer: 541", "it is 541"], ["540"] * 3)
    assert batch.scores[0] > batch.scores[1] > batch.scores[2]


def test_tchebycheff_is_only_weakly_pareto_monotone():
    """(0 correct, 1 format) and (0, 0) share the worst gap, so plain Tchebycheff ties them; smooth breaks the tie."""
    reward = MultiObjectiveReward(objectives=["correctness", "format"], scalarizer="tchebycheff")
    batch = reward.score(["Answer: 540", "Answer: 541", "it is 541"], ["540"] * 3)
    assert batch.scores == [0.0, -1.0, -1.0]


def test_reward_group_zscore_needs_group_ids():
    reward = MultiObjectiveReward(objectives=["correctness"], normalization="group_zscore")
    with pytest.raises(ScalarizeError, match="group_ids"):
        reward.score(["Answer: 1"], ["1"])
    batch = reward.score(["Answer: 1", "Answer: 2", "Answer: 1", "Answer: 1"], ["1"] * 4, group_ids=[7, 7, 8, 8])
    assert batch.scores == [1.0, -1.0, 0.0, 0.0]
    assert batch.objectives["correctness"] == [1.0, 0.0, 1.0, 1.0]  # raw values are kept
