"""Named reward objectives: a registry of plain functions, and the built-in ones.

An objective is a plain function `fn(completion, ground_truth, **context) -> float` with a
one-line docstring, registered under a name with its documented range. `context` holds
`prompt`, `num_tokens`, `overlong_max_len`, `overlong_buffer_len`, `marked_answer_only`, `split`,
`step` and `info`; take what you need and swallow the rest with `**_`. Higher is always better
(weights are non-negative), so penalties live in [-1, 0].

Built-ins and their ranges:

| name          | range         | what it measures                                                    |
|---------------|---------------|---------------------------------------------------------------------|
| `correctness` | {0, 1}        | marked final answer equivalent to the ground truth (see `answer.py`) |
| `format`      | {0, 1}        | a marked final answer (`\\boxed`, `Answer:`, `####`) that parses     |
| `clarity`     | [0.2, 1]      | seed: `min(1, newlines / 8 + 0.2)`                                  |
| `detail`      | [0, 1]        | seed: `min(1, characters / 1200)`                                   |
| `creativity`  | {0.2, 0.5}    | seed: 0.5 if "alternative" or "another approach" appears, else 0.2  |
| `overlong`    | [-1, 0]       | DAPO Eq. 13 soft overlong punishment, in tokens                     |
| `length`      | [-1, 0]       | plain linear length penalty `-min(1, num_tokens / overlong_max_len)` |

`correctness` counts only a *marked* final answer (`\\boxed{}`, an `Answer:` line or `the answer
is`, `####`) while the context's `marked_answer_only` is true: the reward passes
`reward.marked_answer_only` (default true; a direct call defaults to true too). False lets the last
number of the text count as well, as evaluation's pass@1 does. Why on by default: a policy that
rambles to the token budget must not be rewarded for a number it happened to end on; the answer
must be stated.

Departure from the seed: its `correctness` was `ground_truth in solution_str` (a substring test,
so "5400" matched "540"); ours extracts and compares the final answer. `clarity`, `detail` and
`creativity` are the seed's heuristics unchanged. Departure from open-r1 (which this follows in
style): objectives score one sample, not a batch; batch-level steps (normalization, combining)
live in `scalarize.py`.

Add your own:

    @register_objective(low=0.0, high=1.0)
    def politeness(completion, ground_truth, **_):
        "1 if the answer says please."
        return float("please" in completion.lower())

The built-in functions use only the standard library and `answer.py`, so `verl_export` can copy
their source into a standalone module; keep them that way.
"""

from __future__ import annotations

import inspect
import re
from dataclasses import dataclass
from typing import Any, Callable, Iterable

from .answer import has_final_answer, is_correct

ObjectiveFn = Callable[..., float]
CONTEXT_KEYS = ("prompt", "num_tokens", "overlong_max_len", "overlong_buffer_len", "marked_answer_only", "split", "step",
                "info")
_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")


class ObjectiveError(ValueError):
    """An objective is badly defined, unknown, or misconfigured."""


@dataclass(frozen=True)
class Objective:
    """A registered objective: its function, documented range and the context it needs."""

    name: str
    fn: ObjectiveFn
    low: float | None = None  # documented bounds; values outside are reported as errors
    high: float | None = None
    needs: tuple[str, ...] = ()  # context keys that must not be None, e.g. ("num_tokens",)
    doc: str = ""

    def describe(self) -> str:
        """One line: name, range and docstring."""
        low = "-inf" if self.low is None else f"{self.low:g}"
        high = "inf" if self.high is None else f"{self.high:g}"
        return f"{self.name:<12} [{low}, {high}]  {self.doc}"


OBJECTIVES: dict[str, Objective] = {}


# ----------------------------------------------------------------------------
# Registry


def _check_signature(fn: Callable, name: str) -> None:
    try:
        signature = inspect.signature(fn)
    except (TypeError, ValueError) as error:
        raise ObjectiveError(f"objective {name!r}: cannot read its signature ({error})") from error
    context = {key: None for key in CONTEXT_KEYS}
    try:
        signature.bind("completion text", "ground truth", **context)
    except TypeError as error:
        raise ObjectiveError(
            f"objective {name!r} has signature {name}{signature}, which cannot be called as "
            f"fn(completion, ground_truth, **context) ({error}). Define it as "
            f"`def {name}(completion, ground_truth, **_): ...` (context keys: {', '.join(CONTEXT_KEYS)})."
        ) from error


def register_objective(
    fn: ObjectiveFn | None = None,
    *,
    name: str | None = None,
    low: float | None = None,
    high: float | None = None,
    needs: Iterable[str] = (),
    replace: bool = False,
) -> Any:
    """Register `fn` as an objective: `@register_objective`, `@register_objective(name=, low=, high=)` or a call."""

    def register(function: ObjectiveFn) -> ObjectiveFn:
        if not callable(function):
            raise ObjectiveError(f"register_objective needs a function, got {type(function).__name__}")
        key = name or getattr(function, "__name__", "")
        if not _NAME.fullmatch(key or ""):
            raise ObjectiveError(f"objective name {key!r} must be a Python identifier (it appears in metric names)")
        if key in OBJECTIVES and not replace:
            raise ObjectiveError(f"objective {key!r} is already registered; pass replace=True to override it")
        if low is not None and high is not None and not low <= high:
            raise ObjectiveError(f"objective {key!r}: low={low} must not exceed high={high}")
        unknown = [k for k in needs if k not in CONTEXT_KEYS]
        if unknown:
            raise ObjectiveError(
                f"objective {key!r}: needs {unknown} are not context keys; known: {', '.join(CONTEXT_KEYS)}"
            )
        _check_signature(function, key)
        doc = (inspect.getdoc(function) or "").strip().split("\n")[0]
        OBJECTIVES[key] = Objective(key, function, low, high, tuple(needs), doc)
        return function

    return register(fn) if fn is not None else register


def get_objective(name: str) -> Objective:
    """The registered objective `name`, or an error listing the known ones."""
    if name not in OBJECTIVES:
        raise ObjectiveError(f"unknown objective {name!r}; known objectives: {', '.join(sorted(OBJECTIVES))}")
    return OBJECTIVES[name]


def describe_objectives() -> str:
    """A table of every registered objective with its range and docstring."""
    return "\n".join(OBJECTIVES[name].describe() for name in sorted(OBJECTIVES))


def check_overlong_settings(max_len: Any, buffer_len: Any) -> None:
    """Validate DAPO's L_max and L_cache (tokens): 0 < buffer_len <= max_len."""
    for label, value in (("overlong_max_len", max_len), ("overlong_buffer_len", buffer_len)):
        if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
            raise ObjectiveError(f"{label} must be a positive integer number of tokens, got {value!r}")
    if buffer_len > max_len:
        raise ObjectiveError(
            f"overlong_buffer_len={buffer_len} exceeds overlong_max_len={max_len}; DAPO uses e.g. max 20480 with a 4096 buffer"
        )


# ----------------------------------------------------------------------------
# Built-in objectives (standard library + answer.py only: verl_export copies their source)


def correctness(completion: str, ground_truth: str, *, marked_answer_only: bool = True, **_: Any) -> float:
    """1.0 when the final answer (a marked one unless marked_answer_only=False) equals the ground truth, else 0.0."""
    return 1.0 if is_correct(completion, ground_truth, marked_only=bool(marked_answer_only)) else 0.0


def answer_format(completion: str, ground_truth: str, **_: Any) -> float:
    """1.0 when a marked final answer (boxed, 'Answer:', '####') is present and parses, else 0.0."""
    return 1.0 if has_final_answer(completion) else 0.0


def clarity(completion: str, ground_truth: str, **_: Any) -> float:
    """The seed's structure proxy: min(1, newlines / 8 + 0.2)."""
    return min(1.0, completion.count("\n") / 8.0 + 0.2)


def detail(completion: str, ground_truth: str, **_: Any) -> float:
    """The seed's detail proxy: min(1, characters / 1200)."""
    return min(1.0, len(completion) / 1200.0)


def creativity(completion: str, ground_truth: str, **_: Any) -> float:
    """The seed's creativity proxy: 0.5 if 'alternative' or 'another approach' appears, else 0.2."""
    lowered = completion.lower()
    return 0.5 if ("alternative" in lowered or "another approach" in lowered) else 0.2


def overlong(
    completion: str, ground_truth: str, *, num_tokens: int, overlong_max_len: int, overlong_buffer_len: int, **_: Any
) -> float:
    """DAPO Eq. 13: 0 up to L_max - L_cache tokens, linear down to -1 at L_max, -1 beyond."""
    threshold = overlong_max_len - overlong_buffer_len
    if num_tokens <= threshold:
        return 0.0
    if num_tokens <= overlong_max_len:
        return (threshold - num_tokens) / overlong_buffer_len
    return -1.0


def length(completion: str, ground_truth: str, *, num_tokens: int, overlong_max_len: int, **_: Any) -> float:
    """Linear length penalty: -min(1, num_tokens / overlong_max_len)."""
    return -min(1.0, num_tokens / overlong_max_len)


register_objective(correctness, low=0.0, high=1.0)
register_objective(answer_format, name="format", low=0.0, high=1.0)
register_objective(clarity, low=0.2, high=1.0)
register_objective(detail, low=0.0, high=1.0)
register_objective(creativity, low=0.2, high=0.5)
register_objective(overlong, low=-1.0, high=0.0, needs=("num_tokens", "overlong_max_len", "overlong_buffer_len"))
register_objective(length, low=-1.0, high=0.0, needs=("num_tokens", "overlong_max_len"))

BUILTIN_OBJECTIVES = ("correctness", "format", "clarity", "detail", "creativity", "overlong", "length")
SEED_WEIGHTS = {"correctness": 0.5, "clarity": 0.25, "detail": 0.15, "creativity": 0.10}  # the seed's plugin
