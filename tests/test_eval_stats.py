"""dapo_nb.stats against hand-computed values: Wilson intervals, McNemar's exact p-values, the seeded bootstrap."""

from __future__ import annotations

import math

import pytest

from dapo_nb.stats import Z95, bootstrap_mean_interval, mcnemar_exact, paired_comparison, wilson_interval


def test_wilson_13_of_150_by_hand():
    # p = 13/150 = 0.08667, z^2 = 3.8415: center = (p + z^2/300) / (1 + z^2/150) = 0.09699,
    # half = z / (1 + z^2/150) * sqrt(p (1 - p) / 150 + z^2 / 90000) = 0.04564
    lo, hi = wilson_interval(13, 150)
    assert lo == pytest.approx(0.05135, abs=1e-4) and hi == pytest.approx(0.14263, abs=1e-4)
    assert lo < 13 / 150 < hi


def test_wilson_edges_stay_in_the_unit_interval():
    for n in (1, 5, 150):
        z2 = Z95**2
        lo, hi = wilson_interval(0, n)
        assert lo == pytest.approx(0.0, abs=1e-12) and lo >= 0.0 and hi == pytest.approx(z2 / (n + z2))
        lo, hi = wilson_interval(n, n)
        assert hi == pytest.approx(1.0, abs=1e-12) and hi <= 1.0 and lo == pytest.approx(n / (n + z2))
    lo, hi = wilson_interval(1, 2)
    assert lo == pytest.approx(1 - hi)  # symmetric around 1/2
    with pytest.raises(ValueError):
        wilson_interval(3, 2)
    with pytest.raises(ValueError):
        wilson_interval(0, 0)


def test_wilson_narrows_with_more_data_and_widens_with_confidence():
    def width(k, n):
        lo, hi = wilson_interval(k, n)
        return hi - lo

    assert width(50, 100) < width(5, 10)
    lo95, hi95 = wilson_interval(30, 100)
    lo99, hi99 = wilson_interval(30, 100, confidence=0.99)
    assert lo99 < lo95 and hi99 > hi95


@pytest.mark.parametrize("b, c, p", [
    (10, 2, 2 * (1 + 12 + 66) / 2**12),    # 0.0386
    (2, 10, 2 * (1 + 12 + 66) / 2**12),    # symmetric
    (0, 5, 2 / 2**5),                      # 0.0625: five wins out of five is not enough at 0.05
    (0, 6, 2 / 2**6),                      # 0.03125: six is
    (3, 3, 1.0),                           # 2 * 42/64 > 1, capped
    (0, 0, 1.0),                           # no discordant pairs, no evidence
    (1, 0, 1.0),
])
def test_mcnemar_exact_against_binomial_sums(b, c, p):
    assert mcnemar_exact(b, c) == pytest.approx(p, rel=1e-12)


def test_mcnemar_b10_c2_is_0_0386_and_large_counts_work():
    assert round(mcnemar_exact(10, 2), 4) == 0.0386
    p = mcnemar_exact(600, 400)  # 2^1000 stays exact in integers
    assert 0 < p < 1e-9 and math.isfinite(p)
    with pytest.raises(ValueError):
        mcnemar_exact(-1, 2)


def test_paired_comparison_counts_discordant_problems():
    first = {"a": True, "b": True, "c": False, "d": False, "e": True}
    second = {"a": True, "b": False, "c": True, "d": False, "e": False}
    result = paired_comparison(first, second)
    assert (result["n"], result["b"], result["c"]) == (5, 2, 1)
    assert result["p_value"] == 1.0 and result["significant"] is False and result["alpha"] == 0.05
    with pytest.raises(ValueError, match="different problems"):
        paired_comparison(first, {"a": True})


def test_bootstrap_is_deterministic_with_its_seed():
    values = [i % 3 / 2 for i in range(40)]  # per-prompt means of k = 2 samples
    a = bootstrap_mean_interval(values, seed=7)
    assert a == bootstrap_mean_interval(values, seed=7)
    spread = [i * 37 % 101 / 100 for i in range(40)]  # many distinct values: another seed moves the quantiles
    assert bootstrap_mean_interval(spread, seed=7) != bootstrap_mean_interval(spread, seed=8)
    mean = sum(values) / len(values)
    assert 0.0 <= a[0] < mean < a[1] <= 1.0
    assert bootstrap_mean_interval([0.25] * 10) == (0.25, 0.25)  # no spread between prompts, no interval
    lo, hi = bootstrap_mean_interval(values, resamples=4000, seed=1)
    se = math.sqrt(sum((v - mean) ** 2 for v in values) / len(values) / len(values))
    assert hi - lo == pytest.approx(2 * Z95 * se, rel=0.2)  # close to the normal interval for a mean of 40
