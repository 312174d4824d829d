"""Combine per-objective values into the one scalar reward that DAPO needs.

Notation: f_i is objective i's value for one completion (higher is better), w_i >= 0 its weight,
z*_i the ideal point. Objectives with weight 0 are left out of every formula below, so switching
one off never shifts the score of the others.

Scalarizers:

- `weighted_sum`: `sum_i w_i f_i`. Linear scalarization, the seed's choice (Miettinen 1999,
  "Nonlinear Multiobjective Optimization", Kluwer). Reaches only the convex part of a Pareto front.
- `tchebycheff`: `-max_i w_i (z*_i - f_i)`. Weighted Tchebycheff distance to the ideal point
  (Miettinen 1999; used by MOEA/D, Zhang & Li 2007, IEEE TEVC 11(6)). Every Pareto-optimal
  trade-off is reachable with some weights, but only the worst weighted gap counts, so two
  completions differing in another objective can tie (it is only weakly Pareto-monotone).
- `smooth_tchebycheff`: `-mu * log sum_i exp(w_i (z*_i - f_i) / mu)`. Lin et al. 2024, "Smooth
  Tchebycheff Scalarization for Multi-Objective Optimization" (ICML, arXiv 2402.19078). A smooth
  upper bound of the Tchebycheff gap, within `mu * log m` of it for m objectives; `mu -> 0` gives
  `tchebycheff`; a large `mu` spreads credit over every gap (their mean, offset by `mu log m`).

Departures: the papers minimize losses; we maximize rewards, so gaps are `z* - f` and the result is
negated (higher is better). We do not take `|z* - f|`: if a value passes its ideal, the score keeps
rising instead of being penalized for it.

Ideal point z*: `ideal={name: value}` fixes it. By default each objective's documented upper bound
(`Objective.high`, e.g. 1 for correctness, 0 for overlong) when values are not normalized; for an
objective without a documented bound, and for every objective under `group_zscore`, the best value
among the valid samples of the same prompt group (of the batch, without group ids). MOEA/D's z* is
the best value found so far; we use the current group's, so scores do not drift across steps.

Normalization before combining:

- `none`: raw values.
- `group_zscore`: within each prompt group, each objective becomes `(f - mean) / std` (population
  std; 0 where std < 1e-6, i.e. the objective carries no signal in that group). This is GDPO's
  "normalize each reward, then sum" (Liu et al. 2026, "GDPO: Group reward-Decoupled Normalization
  Policy Optimization", arXiv 2601.05242): without it a 0/1 correctness and a 0.2..1 clarity that
  happen to sum alike collapse into the same advantage. GDPO then normalizes the sum over the
  batch; here the trainer's group advantage does the final normalization.
"""

from __future__ import annotations

import math
from typing import Mapping, Sequence

SCALARIZERS = ("weighted_sum", "tchebycheff", "smooth_tchebycheff")
NORMALIZATIONS = ("none", "group_zscore")
ZSCORE_MIN_STD = 1e-6


class ScalarizeError(ValueError):
    """An unknown scalarizer or normalization, or missing inputs for one."""


# ----------------------------------------------------------------------------
# One sample (standard library only: verl_export copies these three functions)


def weighted_sum(values: Mapping[str, float], weights: Mapping[str, float]) -> float:
    """sum_i w_i f_i (exactly rounded with math.fsum)."""
    return math.fsum(weight * values[name] for name, weight in weights.items() if weight > 0)


def tchebycheff(values: Mapping[str, float], weights: Mapping[str, float], ideal: Mapping[str, float]) -> float:
    """-max_i w_i (z*_i - f_i): minus the largest weighted gap to the ideal point."""
    return -max(weight * (ideal[name] - values[name]) for name, weight in weights.items() if weight > 0)


def smooth_tchebycheff(
    values: Mapping[str, float], weights: Mapping[str, float], ideal: Mapping[str, float], mu: float
) -> float:
    """-mu log sum_i exp(w_i (z*_i - f_i) / mu), computed stably (Lin et al. 2024)."""
    terms = [weight * (ideal[name] - values[name]) / mu for name, weight in weights.items() if weight > 0]
    top = max(terms)
    return -mu * (top + math.log(math.fsum(math.exp(term - top) for term in terms)))


# ----------------------------------------------------------------------------
# A batch


def check_choice(scalarizer: str, normalization: str, mu: float) -> None:
    """Validate the scalarizer, normalization and mu, with the allowed values in the error."""
    if scalarizer not in SCALARIZERS:
        raise ScalarizeError(f"unknown scalarizer {scalarizer!r}; choose one of {', '.join(SCALARIZERS)}")
    if normalization not in NORMALIZATIONS:
        raise ScalarizeError(f"unknown normalization {normalization!r}; choose one of {', '.join(NORMALIZATIONS)}")
    if isinstance(mu, bool) or not isinstance(mu, (int, float)) or not math.isfinite(mu) or mu <= 0:
        raise ScalarizeError(f"smooth Tchebycheff temperature mu must be a positive finite number, got {mu!r}")


def _groups(group_ids: Sequence[object], valid: Sequence[bool]) -> dict[object, list[int]]:
    members: dict[object, list[int]] = {}
    for index, (group, ok) in enumerate(zip(group_ids, valid, strict=True)):
        if ok:
            members.setdefault(group, []).append(index)
    return members


def group_zscore(
    columns: Mapping[str, Sequence[float]], group_ids: Sequence[object], valid: Sequence[bool]
) -> dict[str, list[float]]:
    """Each objective z-scored within its prompt group; invalid samples and flat groups give 0."""
    members = _groups(group_ids, valid)
    normalized = {}
    for name, column in columns.items():
        out = [0.0] * len(column)  # (N,)
        for indices in members.values():
            values = [column[i] for i in indices]
            mean = math.fsum(values) / len(values)
            std = math.sqrt(math.fsum((v - mean) ** 2 for v in values) / len(values))
            if std >= ZSCORE_MIN_STD:
                for i in indices:
                    out[i] = (column[i] - mean) / std
        normalized[name] = out
    return normalized


def resolve_ideal(
    columns: Mapping[str, Sequence[float]],
    names: Sequence[str],
    declared_high: Mapping[str, float | None],
    group_ids: Sequence[object],
    valid: Sequence[bool],
    normalized: bool,
    ideal: Mapping[str, float] | None,
) -> list[dict[str, float]]:
    """The ideal point for every sample (see the module docstring for the defaults)."""
    count = len(valid)
    per_sample: list[dict[str, float]] = [{} for _ in range(count)]
    members = _groups(group_ids, valid)
    for name in names:
        if ideal is not None and name in ideal:
            fixed = float(ideal[name])
        elif not normalized and declared_high.get(name) is not None:
            fixed = float(declared_high[name])  # type: ignore[arg-type]
        else:
            fixed = None
        if fixed is not None:
            for point in per_sample:
                point[name] = fixed
            continue
        for indices in members.values():
            best = max(columns[name][i] for i in indices)
            for i in indices:
                per_sample[i][name] = best
        for i in range(count):
            per_sample[i].setdefault(name, 0.0)  # invalid samples: never scored
    return per_sample


def scalarize(
    columns: Mapping[str, Sequence[float]],
    weights: Mapping[str, float],
    *,
    scalarizer: str = "weighted_sum",
    normalization: str = "none",
    group_ids: Sequence[object] | None = None,
    valid: Sequence[bool] | None = None,
    ideal: Mapping[str, float] | None = None,
    mu: float = 0.1,
    declared_high: Mapping[str, float | None] | None = None,
) -> list[float]:
    """One scalar per sample from per-objective columns `{name: (N,)}`; invalid samples get 0.0."""
    check_choice(scalarizer, normalization, mu)
    count = len(next(iter(columns.values()))) if columns else 0
    valid = list(valid) if valid is not None else [True] * count
    active = {name: weight for name, weight in weights.items() if weight > 0}
    missing = [name for name in active if name not in columns]
    if missing:
        raise ScalarizeError(f"weights name objectives with no values: {missing}; have {sorted(columns)}")
    if normalization == "group_zscore":
        if group_ids is None:
            raise ScalarizeError("normalization='group_zscore' needs group_ids (which prompt each completion answers)")
        columns = group_zscore({name: columns[name] for name in active}, group_ids, valid)
    groups = list(group_ids) if group_ids is not None else [0] * count
    ideals: list[dict[str, float]] = [{}] * count
    if scalarizer != "weighted_sum":
        ideals = resolve_ideal(
            columns, list(active), declared_high or {}, groups, valid, normalization != "none", ideal
        )
    scores = []
    for i in range(count):
        if not valid[i]:
            scores.append(0.0)
            continue
        values = {name: columns[name][i] for name in active}
        if scalarizer == "weighted_sum":
            scores.append(weighted_sum(values, active))
        elif scalarizer == "tchebycheff":
            scores.append(tchebycheff(values, active, ideals[i]))
        else:
            scores.append(smooth_tchebycheff(values, active, ideals[i], mu))
    return scores
