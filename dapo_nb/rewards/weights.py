"""Live objective weights: validated, thread-safe, changeable between steps, with exact history.

A widget callback, a notebook cell, or a background training thread may touch the weights at
the same time; one lock guards them. The reward takes one snapshot per batch (`begin_batch`),
which applies any due schedule entry, and records `(step, weights)` in `history`, so every
scored batch is tied to exactly the weights it used.

A schedule `{step: {name: weight}}` serves headless runs: an entry takes effect from its step
on (merged into the current weights), each entry once, in step order, also when a resumed run
starts past it. A manual `set` stays in force until the next due entry. A batch scored without a
step gets the previous batch's step + 1 (0 for the first).

Rules for weights: finite numbers, non-negative, at least one positive, and names among the
reward's objectives (an unknown name is rejected with the list of known ones). While a reward
plugin has not yet reported its breakdown keys, names cannot be checked; they are checked once
the keys are known (`set_known`).
"""

from __future__ import annotations

import math
import threading
from typing import Iterable, Mapping


class WeightsError(ValueError):
    """Weights or a weight schedule are invalid; the message says which name or step and why."""


# ----------------------------------------------------------------------------
# Validation


def validate_weights(
    weights: Mapping[str, float], known: Iterable[str] | None, where: str = "weights"
) -> dict[str, float]:
    """Check names, finiteness and signs; return a plain float dict."""
    if not isinstance(weights, Mapping):
        raise WeightsError(f"{where} must be a mapping {{objective: weight}}, got {type(weights).__name__}")
    known_names = sorted(known) if known is not None else None
    checked: dict[str, float] = {}
    for name, value in weights.items():
        if known_names is not None and name not in known_names:
            raise WeightsError(f"{where}: unknown objective {name!r}; known objectives: {', '.join(known_names)}")
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise WeightsError(f"{where}: weight of {name!r} must be a number, got {value!r}")
        if not math.isfinite(value):
            raise WeightsError(f"{where}: weight of {name!r} must be finite, got {value!r}")
        if value < 0:
            raise WeightsError(
                f"{where}: weight of {name!r} is {value}; weights must be >= 0 (orient the objective instead)"
            )
        checked[name] = float(value)
    return checked


def _require_positive(weights: Mapping[str, float], where: str) -> None:
    if not any(value > 0 for value in weights.values()):
        raise WeightsError(f"{where}: at least one weight must be > 0, got {dict(weights)}")


def validate_schedule(
    schedule: Mapping[int, Mapping[str, float]] | None, known: Iterable[str] | None
) -> dict[int, dict[str, float]]:
    """Check a `{step: {name: weight}}` schedule; keys may be ints or digit strings (YAML)."""
    if schedule is None:
        return {}
    if not isinstance(schedule, Mapping):
        raise WeightsError(f"schedule must be a mapping {{step: {{objective: weight}}}}, got {type(schedule).__name__}")
    checked: dict[int, dict[str, float]] = {}
    for raw_step, entry in schedule.items():
        step = int(raw_step) if isinstance(raw_step, str) and raw_step.strip().isdigit() else raw_step
        if isinstance(step, bool) or not isinstance(step, int) or step < 0:
            raise WeightsError(f"schedule step {raw_step!r} must be a non-negative integer")
        checked[step] = validate_weights(entry, known, where=f"schedule[{step}]")
    return dict(sorted(checked.items()))


# ----------------------------------------------------------------------------
# The live object


class LiveWeights:
    """Thread-safe objective weights with a schedule and a per-batch history."""

    def __init__(
        self,
        initial: Mapping[str, float],
        known: Iterable[str] | None,
        schedule: Mapping[int, Mapping[str, float]] | None = None,
    ) -> None:
        self._lock = threading.Lock()
        self._known = set(known) if known is not None else None
        self._weights = validate_weights(initial, self._known)
        _require_positive(self._weights, "weights")
        self._schedule = validate_schedule(schedule, self._known)
        simulated = dict(self._weights)
        for step, entry in self._schedule.items():  # catch an all-zero entry now, not mid-run
            simulated.update(entry)
            _require_positive(simulated, f"schedule[{step}]")
        self._applied: set[int] = set()
        self._history: list[tuple[int, dict[str, float]]] = []

    # -- reading -----------------------------------------------------------

    def get(self) -> dict[str, float]:
        """A copy of the current weights."""
        with self._lock:
            return dict(self._weights)

    @property
    def history(self) -> list[tuple[int, dict[str, float]]]:
        """(step, weights) of every scored batch, oldest first (copies)."""
        with self._lock:
            return [(step, dict(weights)) for step, weights in self._history]

    @property
    def schedule(self) -> dict[int, dict[str, float]]:
        """The schedule, step -> weights merged in from that step on."""
        with self._lock:
            return {step: dict(entry) for step, entry in self._schedule.items()}

    @property
    def known(self) -> set[str] | None:
        """Names weights may use (None while a plugin's breakdown keys are unknown)."""
        with self._lock:
            return set(self._known) if self._known is not None else None

    # -- writing -----------------------------------------------------------

    def set(self, updates: Mapping[str, float], *, replace: bool = False) -> dict[str, float]:
        """Merge `updates` into the weights (or replace them all); validated; returns the new weights."""
        with self._lock:
            checked = validate_weights(updates, self._known)
            merged = checked if replace else {**self._weights, **checked}
            _require_positive(merged, "weights")
            self._weights = merged
            return dict(merged)

    def set_known(self, names: Iterable[str]) -> None:
        """Fix the allowed names (once a plugin's breakdown is known) and re-check weights and schedule."""
        with self._lock:
            known = set(names)
            validate_weights(self._weights, known, where="weights (checked against the plugin's breakdown)")
            validate_schedule(self._schedule, known)
            self._known = known
            for name in known:
                self._weights.setdefault(name, 0.0)

    def begin_batch(self, step: int | None) -> tuple[int, dict[str, float]]:
        """Apply due schedule entries, snapshot the weights and record them; returns (step, weights)."""
        with self._lock:
            if step is None:
                step = self._history[-1][0] + 1 if self._history else 0
            for entry_step, entry in self._schedule.items():
                if entry_step <= step and entry_step not in self._applied:
                    merged = {**self._weights, **entry}
                    _require_positive(merged, f"schedule[{entry_step}]")
                    self._weights = merged
                    self._applied.add(entry_step)
            snapshot = dict(self._weights)
            self._history.append((step, dict(snapshot)))
            return step, snapshot

    # -- checkpoints -------------------------------------------------------

    def state_dict(self) -> dict:
        """JSON-safe state (weights, applied schedule steps, history) for checkpoints."""
        with self._lock:
            return {"weights": dict(self._weights), "applied": sorted(self._applied),
                    "history": [[step, dict(w)] for step, w in self._history]}

    def load_state_dict(self, state: Mapping) -> None:
        """Restore what `state_dict` saved, so a resumed run neither re-applies schedule entries nor loses history."""
        weights = validate_weights(state["weights"], self._known)
        with self._lock:
            self._weights = weights
            self._applied = {int(s) for s in state.get("applied", [])}
            self._history = [(int(step), dict(w)) for step, w in state.get("history", [])]
