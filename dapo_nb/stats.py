"""Honest statistics for evaluation scores and for studies of many runs.

    wilson_interval(13, 150)              -> (0.0515..., 0.1425...)   95% interval of a proportion
    bootstrap_mean_interval(per_prompt)   -> (lo, hi)                  95% percentile bootstrap over prompts
    mcnemar_exact(b=10, c=2)              -> 0.0386...                 paired test on the discordant pairs
    mean_interval([0.21, 0.25, 0.19])     -> (0.2167, 0.139, 0.294)    mean and 95% t interval over seeds
    welch_test(a_seeds, b_seeds)          -> {diff, t, df, p_value}    two variations, unequal variances
    summarize_study(table, metrics)       -> per variation: n, mean, 95% interval of each metric
    front_statistics(table, x, y)         -> Pareto front of the variations' means, hypervolume with a
                                             bootstrap interval over seeds, dominance with confidence

- pass@1 and format@1 are proportions of independent prompts (one greedy completion each): the Wilson score
  interval, which stays inside [0, 1] and behaves at 0/n and n/n where the normal approximation collapses.
- avg@k averages k samples per prompt. The k samples of one prompt are not independent (they share its difficulty),
  so a Wilson interval on n*k "trials" would be too narrow; the unit is the prompt. We take a percentile bootstrap
  over prompts: resample n prompts with replacement, average their per-prompt means, repeat `resamples` times with a
  fixed seed (so the same scores give the same interval), and read the 2.5% and 97.5% quantiles.
- Two models on the same prompts are compared by McNemar's exact test on per-prompt greedy correctness: with b the
  prompts only the first gets right and c those only the second gets right, under "no difference" each discordant
  prompt is a fair coin, and the two-sided p-value is min(1, 2 * P[Binomial(b + c, 1/2) <= min(b, c)]).
- In a study the unit is the training run: seeds of one variation are independent draws of "train this recipe",
  so a variation's score is the mean over its seeds with a Student t interval (n - 1 degrees of freedom; with 3
  seeds the interval is wide, t = 4.30, and says so), and two variations are compared by Welch's t test. The
  prompt-level noise of each run's held-out score is inside the seed-to-seed spread, not added to it.
- A study's Pareto front joins the variations whose mean point no other variation's beats in both objectives (all
  maximized). Its hypervolume (the area those points dominate above a reference) gets a percentile bootstrap
  interval over seeds: each variation's seeds are resampled with replacement, the means and the front recomputed.
  The same resamples give, for each variation, how often some other variation dominated it: "dominated with
  confidence" when that happens in at least 95% of them.

Pareto helpers treat every objective as maximized (the rewards' convention): `pareto_mask` marks the non-dominated
points and `hypervolume` measures the region they dominate above a reference point (exact, by slicing one
objective at a time: fine for tens of points, exponential in the number of objectives). Student t and its
quantiles come from scipy.
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


# ----------------------------------------------------------------------------
# Studies: runs (seeds) as the unit


def mean_interval(values, confidence: float = 0.95) -> tuple[float, float, float]:
    """(mean, low, high): the mean of independent runs with its Student t interval; NaN bounds for a single run."""
    from scipy import stats as scipy_stats

    data = [float(v) for v in values if v is not None and math.isfinite(float(v))]
    if not data:
        return math.nan, math.nan, math.nan
    _z(confidence)  # validates
    mean = math.fsum(data) / len(data)
    if len(data) < 2:
        return mean, math.nan, math.nan
    sd = math.sqrt(math.fsum((v - mean) ** 2 for v in data) / (len(data) - 1))
    half = scipy_stats.t.ppf(0.5 + confidence / 2, len(data) - 1) * sd / math.sqrt(len(data))
    return mean, mean - half, mean + half


def welch_test(a, b, alpha: float = 0.05) -> dict:
    """Welch's two-sided t test of mean(a) - mean(b) (unequal variances): diff, t, df, p_value, significant."""
    from scipy import stats as scipy_stats

    a = [float(v) for v in a if math.isfinite(float(v))]
    b = [float(v) for v in b if math.isfinite(float(v))]
    if len(a) < 2 or len(b) < 2:
        raise ValueError(f"Welch's test needs at least 2 runs on each side (got {len(a)} and {len(b)})")
    ma, mb = math.fsum(a) / len(a), math.fsum(b) / len(b)
    if len(set(a)) == 1 and len(set(b)) == 1:  # both samples constant: no spread to test against
        t, p = (0.0, 1.0) if ma == mb else (math.copysign(math.inf, ma - mb), 0.0)
        df = float(len(a) + len(b) - 2)
    else:
        result = scipy_stats.ttest_ind(a, b, equal_var=False)
        t, p, df = float(result.statistic), float(result.pvalue), float(getattr(result, "df", math.nan))
    return {"test": "Welch t (two-sided)", "diff": ma - mb, "t": t, "df": df, "p_value": p, "alpha": alpha,
            "significant": p < alpha, "n": (len(a), len(b))}


def summarize_study(table, metrics, by: str = "variation", confidence: float = 0.95):
    """Per value of `by` (a variation): the number of runs and, per metric, the mean over them with its interval
    (columns `<metric>`, `<metric>_ci95_low`, `<metric>_ci95_high`); rows in the table's order."""
    import pandas as pd

    rows = []
    for name, group in table.groupby(by, sort=False):
        row = {by: name, "n": len(group)}
        for metric in metrics:
            mean, low, high = mean_interval(group[metric].tolist(), confidence)
            row.update({metric: mean, f"{metric}_ci95_low": low, f"{metric}_ci95_high": high})
        rows.append(row)
    return pd.DataFrame(rows)


def front_statistics(table, x: str, y: str, by: str = "variation", reference=(0.0, 0.0), resamples: int = 2000,
                     seed: int = 0, confidence: float = 0.95) -> dict:
    """The Pareto front of the variations' mean (x, y) points with seed-bootstrap statistics.

    Returns {"points": DataFrame (by, n, x, y, on_front, p_dominated, dominated_with_confidence),
    "hypervolume": of the means, "hypervolume_ci95": (lo, hi), "reference": reference, "resamples": resamples}.
    p_dominated: the share of bootstrap resamples (each variation's runs resampled with replacement) in which
    another variation's mean point dominated this one's; dominated with confidence when >= `confidence`."""
    import numpy as np
    import pandas as pd

    groups = [(name, group[[x, y]].to_numpy(dtype=float)) for name, group in table.groupby(by, sort=False)]
    groups = [(name, values[np.isfinite(values).all(1)]) for name, values in groups]
    groups = [(name, values) for name, values in groups if len(values)]
    if not groups:
        raise ValueError(f"no finite ({x}, {y}) values to draw a front from")
    means = np.array([values.mean(0) for _, values in groups])  # (v, 2)
    ref = np.asarray(reference, dtype=float)
    rng = np.random.default_rng(seed)
    dominated = np.zeros(len(groups))
    volumes = np.empty(resamples)
    for r in range(resamples):
        sample = np.array([values[rng.integers(0, len(values), len(values))].mean(0) for _, values in groups])
        volumes[r] = hypervolume(sample, ref)
        dominated += ~pareto_mask(sample)
    tail = (1 - confidence) / 2
    p_dominated = dominated / resamples
    points = pd.DataFrame({by: [name for name, _ in groups], "n": [len(v) for _, v in groups], x: means[:, 0],
                           y: means[:, 1], "on_front": pareto_mask(means), "p_dominated": p_dominated,
                           "dominated_with_confidence": p_dominated >= confidence})
    return {"points": points, "hypervolume": hypervolume(means, ref),
            "hypervolume_ci95": (float(np.quantile(volumes, tail)), float(np.quantile(volumes, 1 - tail))),
            "reference": [float(v) for v in ref], "resamples": resamples}


# ----------------------------------------------------------------------------
# Pareto fronts (every objective maximized)


def _as_points(points):
    import numpy as np

    array = np.asarray(points, dtype=float)
    if array.ndim != 2 or array.shape[0] == 0:
        raise ValueError(f"points must be a non-empty (n, m) array of objective values, got shape {array.shape}")
    if not np.isfinite(array).all():
        raise ValueError("points contain NaN or inf; drop those runs first")
    return array


def pareto_mask(points):
    """(n,) True where no other point is >= in every objective and > in one (all objectives maximized)."""
    p = _as_points(points)  # (n, m)
    ge = (p[:, None, :] >= p[None, :, :]).all(-1)  # (n, n): row j >= row i everywhere, as [j, i]
    gt = (p[:, None, :] > p[None, :, :]).any(-1)
    dominated = (ge & gt).any(0)
    return ~dominated


def hypervolume(points, reference) -> float:
    """Volume dominated by `points` and bounded below by `reference` (maximization); points not above it add 0."""
    import numpy as np

    p = _as_points(points)
    ref = np.asarray(reference, dtype=float)
    if ref.shape != (p.shape[1],):
        raise ValueError(f"reference has {ref.size} values but points have {p.shape[1]} objectives")
    p = p[(p > ref).all(1)]
    return float(_hv(p, ref)) if len(p) else 0.0


def _hv(p, ref) -> float:
    """Slice along the last objective: each slab's height times the (m-1)-d volume of the points above it."""
    import numpy as np

    if p.shape[1] == 1:
        return float(p[:, 0].max() - ref[0])
    levels = np.unique(p[:, -1])[::-1]  # descending
    volume = 0.0
    for i, level in enumerate(levels):
        below = levels[i + 1] if i + 1 < len(levels) else ref[-1]
        above = p[p[:, -1] >= level][:, :-1]
        volume += (level - below) * _hv(above, ref[:-1])
    return volume
