"""Honest statistics for evaluation scores, standard library only.

    wilson_interval(13, 150)              -> (0.0515..., 0.1425...)   95% interval of a proportion
    bootstrap_mean_interval(per_prompt)   -> (lo, hi)                  95% percentile bootstrap over prompts
    mcnemar_exact(b=10, c=2)              -> 0.0386...                 paired test on the discordant pairs

- pass@1 and format@1 are proportions of independent prompts (one greedy completion each): the Wilson score
  interval, which stays inside [0, 1] and behaves at 0/n and n/n where the normal approximation collapses.
- avg@k averages k samples per prompt. The k samples of one prompt are not independent (they share its difficulty),
  so a Wilson interval on n*k "trials" would be too narrow; the unit is the prompt. We take a percentile bootstrap
  over prompts: resample n prompts with replacement, average their per-prompt means, repeat `resamples` times with a
  fixed seed (so the same scores give the same interval), and read the 2.5% and 97.5% quantiles.
- Two models on the same prompts are compared by McNemar's exact test on per-prompt greedy correctness: with b the
  prompts only the first gets right and c those only the second gets right, under "no difference" each discordant
  prompt is a fair coin, and the two-sided p-value is min(1, 2 * P[Binomial(b + c, 1/2) <= min(b, c)]).
"""

from __future__ import annotations

import math
import random
from statistics import NormalDist

Z95 = NormalDist().inv_cdf(0.975)  # 1.959963984540054


def _z(confidence: float) -> float:
    if not 0 < confidence < 1:
        raise ValueError(f"confidence={confidence} must be in (0, 1)")
    return NormalDist().inv_cdf(0.5 + confidence / 2)


def wilson_interval(successes: int, n: int, confidence: float = 0.95) -> tuple[float, float]:
    """Wilson score interval of a proportion successes / n."""
    if n <= 0 or not 0 <= successes <= n:
        raise ValueError(f"need 0 <= successes <= n and n >= 1 (got {successes} / {n})")
    z = _z(confidence)
    p, z2 = successes / n, z * z
    denom = 1 + z2 / n
    center = (p + z2 / (2 * n)) / denom
    half = z / denom * math.sqrt(p * (1 - p) / n + z2 / (4 * n * n))
    return max(0.0, center - half), min(1.0, center + half)


def bootstrap_mean_interval(values: list[float], confidence: float = 0.95, resamples: int = 2000,
                            seed: int = 0) -> tuple[float, float]:
    """Percentile bootstrap interval of the mean of `values` (one value per independent unit, e.g. prompt)."""
    if not values:
        raise ValueError("bootstrap_mean_interval() needs at least one value")
    if resamples < 1:
        raise ValueError(f"resamples={resamples} must be >= 1")
    _z(confidence)  # validates
    rng, n = random.Random(seed), len(values)
    means = sorted(math.fsum(rng.choices(values, k=n)) / n for _ in range(resamples))
    tail = (1 - confidence) / 2
    lo = means[min(resamples - 1, math.floor(tail * resamples))]
    hi = means[max(0, math.ceil((1 - tail) * resamples) - 1)]
    return lo, hi


def mcnemar_exact(b: int, c: int) -> float:
    """Two-sided exact McNemar p-value from the discordant counts b and c (exact binomial tail, p = 1/2)."""
    if b < 0 or c < 0:
        raise ValueError(f"discordant counts must be >= 0 (got b={b}, c={c})")
    n = b + c
    if n == 0:
        return 1.0
    tail = sum(math.comb(n, i) for i in range(min(b, c) + 1))
    return min(1.0, 2 * tail / 2**n)  # exact integers until this one correctly rounded division


def paired_comparison(first: dict[str, bool], second: dict[str, bool], alpha: float = 0.05) -> dict:
    """McNemar's exact test on per-problem correctness of two models on the same problems (qid -> correct)."""
    if set(first) != set(second):
        raise ValueError(f"the two evaluations cover different problems ({len(set(first) ^ set(second))} differ)")
    if not first:
        raise ValueError("paired_comparison() needs at least one problem")
    b = sum(first[q] and not second[q] for q in first)
    c = sum(second[q] and not first[q] for q in first)
    p_value = mcnemar_exact(b, c)
    return {"test": "McNemar exact (two-sided binomial on discordant pairs)", "n": len(first),
            "b": b, "c": c, "p_value": p_value, "alpha": alpha, "significant": p_value < alpha}
