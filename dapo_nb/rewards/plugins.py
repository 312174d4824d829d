"""Reward plugins in three contracts, checked so that a bad one never fails silently.

Contracts (picked from the function's parameter names, or forced with `contract=`):

- `seed` (the prototype's, unchanged): a `.py` file defining
  `compute_score(split, solution_str, ground_truth, info) -> {"score": float, "breakdown": {name: float}}`,
  called once per sample with positional arguments; a bare number is also accepted.
- `verl`: `compute_score(data_source, solution_str, ground_truth, extra_info=None)`, called once
  per sample with keywords; returns a number or a dict with `score` whose other numeric (or bool)
  keys become the breakdown. String values are skipped, as verl's own rule functions return e.g.
  `"pred": "540"` for logging.
- `trl`: a reward function `(completions, **kwargs) -> list[float | None]`, called once per batch
  with `prompts`, `completions` (plain strings), `ground_truth` and `num_tokens` as keywords.
  `None` means "not applicable to this sample" and counts as 0.0 (TRL sums rewards with nansum).

A file plugin is loaded by path (`reward.plugin=path/to/file.py`); a callable is taken as is.

Checks. At load time, always raised as `PluginError`: file missing or failing to import, no such
function (the error lists what the file defines), a signature that cannot take the contract's
arguments. Per sample, reported as a `SampleFailure` of one kind, which the reward then raises or
absorbs according to `on_error`:

    exception      the plugin raised
    non_numeric    score or a breakdown value is not a number (or the result is neither number nor dict)
    non_finite     NaN or infinity
    missing_score  a dict without "score"
    keys_changed   breakdown keys differ from the first good sample's
    wrong_length   a TRL function returned a list of the wrong length (or not a list)
    out_of_range   (registered objectives only) a value outside the documented range
"""

from __future__ import annotations

import hashlib
import importlib.util
import inspect
import math
import numbers
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Sequence

CONTRACTS = ("seed", "verl", "trl")
ON_ERROR = ("raise", "zero", "drop")
ERROR_KINDS = (
    "exception",
    "non_numeric",
    "non_finite",
    "missing_score",
    "keys_changed",
    "wrong_length",
    "out_of_range",
)
PLUGIN_OBJECTIVE = "plugin"  # the objective name of a plugin's own scalar score


class PluginError(ValueError):
    """A reward plugin could not be loaded, or returned something unusable for a sample."""


@dataclass
class SampleFailure:
    """One sample the plugin (or an objective) failed on."""

    index: int
    kind: str  # one of ERROR_KINDS
    problem: str  # human-readable, without the plugin name
    error: BaseException | None = None  # the plugin's own exception, chained when raised


class SampleProblem(Exception):
    """Raised while checking one sample's value; carries the error kind."""

    def __init__(self, kind: str, problem: str) -> None:
        super().__init__(problem)
        self.kind, self.problem = kind, problem


# ----------------------------------------------------------------------------
# Checking values


def check_number(value: Any, what: str) -> float:
    """`value` as a finite float, or raise SampleProblem of kind non_numeric / non_finite."""
    if isinstance(value, numbers.Real):  # bool, int, float, numpy scalars
        number = float(value)
        if not math.isfinite(number):
            raise SampleProblem("non_finite", f"{what} is {number}, not a finite number")
        return number
    hint = " (a tensor? return .item())" if hasattr(value, "item") else ""
    raise SampleProblem("non_numeric", f"{what} is {type(value).__name__} {value!r:.60}, not a number{hint}")


def check_result(result: Any, contract: str) -> tuple[float, dict[str, float]]:
    """(score, breakdown) from one seed/verl result, or raise SampleProblem."""
    if not isinstance(result, dict):
        if not isinstance(result, numbers.Real) and not hasattr(result, "item"):
            raise SampleProblem(
                "non_numeric",
                f"returned {type(result).__name__} {result!r:.60}; expected a number or a dict with 'score'",
            )
        return check_number(result, "the returned score"), {}
    if "score" not in result:
        raise SampleProblem("missing_score", f"returned a dict without 'score' (keys: {sorted(map(str, result))})")
    score = check_number(result["score"], "'score'")
    if contract == "seed":
        breakdown = result.get("breakdown", {})
        if not isinstance(breakdown, dict):
            raise SampleProblem(
                "non_numeric", f"'breakdown' is {type(breakdown).__name__}, expected a dict {{name: number}}"
            )
    else:  # verl: every other key; strings are logging extras
        breakdown = {k: v for k, v in result.items() if k != "score" and not isinstance(v, str)}
    checked = {}
    for key, value in breakdown.items():
        if not isinstance(key, str) or key == PLUGIN_OBJECTIVE:
            raise SampleProblem(
                "non_numeric", f"breakdown key {key!r} must be a string other than {PLUGIN_OBJECTIVE!r}"
            )
        checked[key] = check_number(value, f"breakdown[{key!r}]")
    return score, checked


# ----------------------------------------------------------------------------
# Loading


def _signature(fn: Callable, label: str) -> inspect.Signature:
    try:
        return inspect.signature(fn)
    except (TypeError, ValueError) as error:
        raise PluginError(
            f"{label}: cannot read its signature ({error}); wrap it in a plain Python function"
        ) from error


def _detect_contract(fn: Callable, label: str) -> str:
    names = set(_signature(fn, label).parameters)
    if names & {"data_source", "extra_info"}:
        return "verl"
    if names & {"split", "info", "solution_str"}:
        return "seed"
    if "completions" in names:
        return "trl"
    raise PluginError(
        f"{label}: cannot tell its contract from parameters {sorted(names)}. Use one of "
        "compute_score(split, solution_str, ground_truth, info) [seed], "
        "compute_score(data_source, solution_str, ground_truth, extra_info=None) [verl], "
        "fn(completions, **kwargs) [trl], or pass contract='seed' | 'verl' | 'trl'."
    )


def _check_signature(fn: Callable, contract: str, label: str) -> None:
    signature = _signature(fn, label)
    try:
        if contract == "seed":
            signature.bind("train", "solution", "ground truth", {})
        elif contract == "verl":
            signature.bind(data_source="d", solution_str="s", ground_truth="g", extra_info={})
        else:
            signature.bind(prompts=[], completions=[], ground_truth=[], num_tokens=[])
    except TypeError as error:
        expected = {
            "seed": "compute_score(split, solution_str, ground_truth, info)",
            "verl": "compute_score(data_source, solution_str, ground_truth, extra_info=None)",
            "trl": "fn(completions, **kwargs) (we pass prompts, completions, ground_truth, num_tokens)",
        }[contract]
        raise PluginError(
            f"{label} has the wrong signature {signature} for the {contract} contract ({error}); expected {expected}"
        ) from error


def _load_module(path: Path) -> Any:
    if not path.is_file():
        raise PluginError(
            f"reward plugin file {str(path)!r} not found (resolved to {path.resolve()}); set reward.plugin to a .py file"
        )
    digest = hashlib.sha1(str(path.resolve()).encode()).hexdigest()[:8]
    spec = importlib.util.spec_from_file_location(f"dapo_nb_plugin_{path.stem}_{digest}", path)
    if spec is None or spec.loader is None:
        raise PluginError(f"reward plugin {str(path)!r} is not a Python file python can import")
    module = importlib.util.module_from_spec(spec)
    sys.path.insert(0, str(path.resolve().parent))  # let it import its neighbours
    try:
        spec.loader.exec_module(module)
    except Exception as error:
        raise PluginError(f"reward plugin {str(path)!r} failed to import: {type(error).__name__}: {error}") from error
    finally:
        sys.path.remove(str(path.resolve().parent))
    return module


def load_plugin(spec: str | Path | Callable, contract: str = "auto", function: str = "compute_score") -> RewardPlugin:
    """A checked RewardPlugin from a .py path (seed/verl contract) or a callable (any contract)."""
    if contract != "auto" and contract not in CONTRACTS:
        raise PluginError(f"unknown plugin contract {contract!r}; choose auto, {', '.join(CONTRACTS)}")
    if callable(spec):
        fn, label = spec, f"reward plugin function {getattr(spec, '__name__', repr(spec))!r}"
    else:
        path = Path(spec).expanduser()
        module = _load_module(path)
        fn = getattr(module, function, None)
        label = f"reward plugin {str(path)!r} ({function})"
        if fn is None or not callable(fn):
            defined = sorted(
                n for n, v in vars(module).items() if callable(v) and getattr(v, "__module__", "") == module.__name__
            )
            problem = "is not callable" if fn is not None else "is missing"
            raise PluginError(
                f"reward plugin {str(path)!r}: function {function!r} {problem}; the file defines {defined or 'no functions'}. "
                "Define compute_score(split, solution_str, ground_truth, info), or name your function with reward.plugin_function."
            )
    chosen = _detect_contract(fn, label) if contract == "auto" else contract
    _check_signature(fn, chosen, label)
    return RewardPlugin(fn=fn, contract=chosen, label=label)


# ----------------------------------------------------------------------------
# Calling


@dataclass
class PluginOutput:
    """Scores and breakdowns per sample (None where it failed) and the failures."""

    scores: list[float | None]
    breakdowns: list[dict[str, float] | None]
    failures: list[SampleFailure] = field(default_factory=list)


@dataclass
class RewardPlugin:
    """A loaded plugin; `keys` (breakdown names) are fixed by the first good sample."""

    fn: Callable
    contract: str
    label: str
    keys: tuple[str, ...] | None = None

    def describe_failure(self, failure: SampleFailure, completion: str, info: dict) -> str:
        """The full error message: plugin, sample, problem, and how to proceed."""
        qid = f" qid={info['qid']!r}" if "qid" in info else ""
        return (
            f"{self.label}: sample {failure.index}{qid} (completion {completion[:60]!r}): {failure.problem}. "
            "Fix the plugin, or set reward.on_error='zero' or 'drop' (counted in reward_errors/<kind>)."
        )

    def __call__(
        self,
        completions: Sequence[str],
        ground_truths: Sequence[str],
        prompts: Sequence[Any],
        infos: Sequence[dict],
        split: str,
        num_tokens: Sequence[int | None],
    ) -> PluginOutput:
        """Run the plugin on a batch; never raises for a per-sample problem."""
        if self.contract == "trl":
            return self._call_batch(completions, ground_truths, prompts, num_tokens)
        count = len(completions)
        out = PluginOutput([None] * count, [None] * count)
        for i in range(count):
            try:
                if self.contract == "seed":
                    raw = self.fn(split, completions[i], ground_truths[i], infos[i])
                else:
                    data_source = infos[i].get("data_source") or "dapo_nb"
                    raw = self.fn(
                        data_source=data_source,
                        solution_str=completions[i],
                        ground_truth=ground_truths[i],
                        extra_info=infos[i],
                    )
                score, breakdown = check_result(raw, self.contract)
                self._check_keys(breakdown)
            except SampleProblem as bad:
                out.failures.append(SampleFailure(i, bad.kind, bad.problem))
                continue
            except Exception as error:  # the plugin's own bug
                out.failures.append(SampleFailure(i, "exception", f"raised {type(error).__name__}: {error}", error))
                continue
            out.scores[i], out.breakdowns[i] = score, breakdown
        return out

    def _check_keys(self, breakdown: dict[str, float]) -> None:
        keys = tuple(sorted(breakdown))
        if self.keys is None:
            self.keys = keys
        elif keys != self.keys:
            missing, new = sorted(set(self.keys) - set(keys)), sorted(set(keys) - set(self.keys))
            raise SampleProblem(
                "keys_changed",
                f"breakdown keys changed from {list(self.keys)} (missing: {missing}, new: {new}); keep them fixed",
            )

    def _call_batch(self, completions, ground_truths, prompts, num_tokens) -> PluginOutput:
        count = len(completions)
        out = PluginOutput([None] * count, [None] * count)
        self.keys = ()
        try:
            raw = self.fn(
                prompts=list(prompts),
                completions=list(completions),
                ground_truth=list(ground_truths),
                num_tokens=list(num_tokens),
            )
        except Exception as error:
            out.failures = [
                SampleFailure(i, "exception", f"raised {type(error).__name__}: {error} (on the whole batch)", error)
                for i in range(count)
            ]
            return out
        if isinstance(raw, (str, bytes, dict)) or not hasattr(raw, "__len__") or len(raw) != count:
            got = (
                f"{len(raw)} values"
                if hasattr(raw, "__len__") and not isinstance(raw, (str, bytes, dict))
                else type(raw).__name__
            )
            out.failures = [
                SampleFailure(
                    i,
                    "wrong_length",
                    f"returned {got} for a batch of {count}; return one float (or None) per completion",
                )
                for i in range(count)
            ]
            return out
        for i, value in enumerate(raw):
            try:
                out.scores[i] = 0.0 if value is None else check_number(value, "the returned reward")
                out.breakdowns[i] = {}
            except SampleProblem as bad:
                out.failures.append(SampleFailure(i, bad.kind, bad.problem))
        return out
