"""Reward plugins in three contracts, checked so that a bad one never fails silently.

Where they come from: `reward.plugins` lists any number of entries, each `file.py` (its
`compute_score`), `file.py:function`, or a mapping `{path, function, name, contract, format, kwargs}`;
`reward.plugin` is a one-entry shorthand (both may be set: `plugin` comes first). In Python, an
entry may also be a callable. `kwargs` makes `function` a factory, as open-r1's
`get_cosine_scaled_reward(max_len=...)` or TRL's `get_soft_overlong_punishment(...)`: it is called
once, at load time, with those keyword arguments (`kwargs: {}` calls it with none), and what it
returns is the reward function.

Names. Every plugin has a name: the `name` given, else the function's name (for a factory: the name of
the function it returned, e.g. `cosine_scaled_reward`), else (for a file's `compute_score`) the file's
stem, e.g. `my_multiobj_reward_fixed`; an unnamed lambda is `plugin`.
Its own scalar is the objective `<name>`, and each breakdown key `k` is the objective `<name>.k`,
so plugins never clash with built-in objectives or with each other.

Contracts (picked from the function's parameter names, or forced with `contract`):

- `seed` (the prototype's, unchanged): `compute_score(split, solution_str, ground_truth, info) ->
  {"score": float, "breakdown": {name: float}}`, called once per sample with positional
  arguments; a bare number is also accepted.
- `verl`: `compute_score(data_source, solution_str, ground_truth, extra_info=None)`, called once
  per sample with keywords; returns a number or a dict with `score` whose other numeric (or bool)
  keys become the breakdown. String values are skipped, as verl's own rule functions return e.g.
  `"pred": "540"` for logging.
- `trl`: a TRL reward function `(completions, **kwargs) -> list[float | None]`, called once per
  batch with TRL's keywords: `prompts`, `completions`, `completion_ids` (when the caller has them),
  `trainer_state` (TRL's under backend=trl; under ours an object with `global_step`), and every
  column of the examples: `ground_truth`, `qid`, `data_source` and the record's other keys (e.g.
  `level`). A function without `**kwargs` gets only the keywords it names. Not passed: TRL's
  `log_extra`, `log_metric`, `environments`.
  Format, as TRL decides it (`format: auto`): conversational when the prompts are lists of chat
  messages, then `completions[i] == [{"role": "assistant", "content": text}]`; standard (plain
  strings) otherwise. `format: conversational` or `standard` forces one; forced conversational
  turns plain-text prompts into `[{"role": "user", "content": prompt}]`.
  `None` means "not applicable to this sample", as in TRL: the objective adds nothing to a
  weighted sum for that sample and is left out of its `rewards/<name>/mean|std`; see reward.py.

Async functions (`async def`, in any contract; TRL accepts them for its reward functions) are awaited,
the async functions of one batch concurrently (and a seed / verl one's samples concurrently), on one
event loop in a background thread, so they work the same in a script and in a notebook, whose own loop
is already running.

Checks. At load time, always raised as `PluginError`: a malformed entry, file missing or failing
to import, no such function (the error lists what the file defines), a signature that cannot
take the contract's arguments. Per sample, reported as a `SampleFailure` of one kind, which the
reward then raises or absorbs according to `on_error`:

    exception      the plugin raised
    non_numeric    score or a breakdown value is not a number (or the result is neither number nor dict)
    non_finite     NaN or infinity
    missing_score  a dict without "score"
    keys_changed   breakdown keys differ from the first good sample's
    wrong_length   a TRL function returned a list of the wrong length (or not a list)
    out_of_range   (registered objectives only) a value outside the documented range

A TRL function that requires a keyword the batch does not have (a parameter without a default that is
not one of the columns) raises `PluginError` at once, **kwargs or not: it names the column, the columns
the data has and the `data.*` key that maps them (`column_problem`); `RewardPlugin.check_columns` does
the same before training or evaluation starts. A function that raises on the format it got (TRL's
standard or conversational) is tried once on the other format; only when that works does the error
say to set `format:`.
"""

from __future__ import annotations

import asyncio
import difflib
import hashlib
import importlib.util
import inspect
import math
import numbers
import re
import sys
import threading
import types
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence

CONTRACTS = ("seed", "verl", "trl")
FORMATS = ("auto", "standard", "conversational")  # how a TRL function sees prompts and completions
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
DEFAULT_FUNCTION = "compute_score"
PLUGIN_OBJECTIVE = "plugin"  # the name of a plugin that has no better one (a lambda)
ENTRY_KEYS = ("path", "function", "name", "contract", "format", "kwargs")  # keys of a mapping entry in reward.plugins
RESERVED_NAMES = ("score",)  # `score` is the scalar reward itself (dapo.filter_metric, the TRL backend's logs)
TRL_ARGUMENTS = ("prompts", "completions", "completion_ids", "trainer_state")  # what TRL passes besides columns
_NAME = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_\-]*\Z")
_FUNCTION = re.compile(r"[A-Za-z_][A-Za-z0-9_]*\Z")


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
        if not isinstance(key, str) or not key:
            raise SampleProblem("non_numeric", f"breakdown key {key!r} must be a non-empty string")
        checked[key] = check_number(value, f"breakdown[{key!r}]")
    return score, checked


def is_conversational(prompt: Any) -> bool:
    """TRL's test: a list of chat messages (dicts with `role` and `content`)."""
    return (
        isinstance(prompt, (list, tuple))
        and len(prompt) > 0
        and isinstance(prompt[0], Mapping)
        and "role" in prompt[0]
        and "content" in prompt[0]
    )


# ----------------------------------------------------------------------------
# Entries of reward.plugins


@dataclass(frozen=True)
class PluginSpec:
    """One entry of reward.plugins, parsed (nothing imported yet)."""

    source: str | Path | Callable  # a .py path or a callable
    function: str = DEFAULT_FUNCTION
    name: str | None = None  # None: derived, see `plugin_name`
    contract: str = "auto"
    format: str = "auto"
    kwargs: Mapping[str, Any] | None = None  # not None: `function` is a factory, called once with these

    @property
    def resolved_name(self) -> str | None:
        """The plugin's objective name (checked); None for a factory without `name`, named once it has run."""
        return plugin_name(self)


def plugin_name(spec: PluginSpec, made: Callable | None = None) -> str | None:
    """`name`, else the function's name (a factory's: that of the function it made, None before it has run), else
    (a file's compute_score) the file's stem; checked."""
    if spec.name is not None:
        name, given = spec.name, True
    elif spec.kwargs is not None:
        if made is None:
            return None
        raw = getattr(made, "__name__", "")
        name, given = (raw if _NAME.match(raw or "") else PLUGIN_OBJECTIVE), False
    elif callable(spec.source):
        raw = getattr(spec.source, "__name__", "")
        name, given = (raw if _NAME.match(raw or "") else PLUGIN_OBJECTIVE), False
    elif spec.function != DEFAULT_FUNCTION:
        name, given = spec.function, False
    else:
        name, given = Path(spec.source).stem, False
    if not isinstance(name, str) or not _NAME.match(name) or name in RESERVED_NAMES:
        origin = "" if given else f" (from its {'function' if callable(spec.source) or spec.function != DEFAULT_FUNCTION else 'file'})"
        problem = (
            "is the scalar reward itself" if name in RESERVED_NAMES
            else "must use letters, digits, _ or - only (a '.' separates a plugin from its breakdown keys)"
        )
        raise PluginError(
            f"reward plugin {_describe_source(spec.source)}: its name {name!r}{origin} {problem}; "
            "give it another: {path: ..., name: short_name} in reward.plugins"
        )
    return name


def _describe_source(source: Any) -> str:
    return repr(getattr(source, "__name__", source)) if callable(source) else repr(str(source))


def _split_function(entry: str | Path) -> tuple[str | Path, str | None]:
    """`file.py:fn` -> ("file.py", "fn"); `file.py` -> ("file.py", None); a Windows drive letter C:\\... stays."""
    if isinstance(entry, Path):
        return entry, None
    text = entry.strip()
    if not text:
        raise PluginError("reward.plugins has an empty entry; give a .py file, e.g. my_reward.py or my_reward.py:fn")
    path, _, function = text.rpartition(":")
    return (path, function) if path and _FUNCTION.match(function) else (text, None)


def parse_plugin_entry(entry: Any) -> PluginSpec:
    """A PluginSpec from `file.py`, `file.py:function`, a mapping {path, function, name, contract, format},
    a callable or a PluginSpec; raises PluginError naming what is wrong."""
    if isinstance(entry, PluginSpec):
        spec = entry
    elif callable(entry):
        spec = PluginSpec(entry)
    elif isinstance(entry, (str, Path)):
        source, function = _split_function(entry)
        spec = PluginSpec(source, function or DEFAULT_FUNCTION)
    elif isinstance(entry, Mapping):
        unknown = sorted(map(str, set(entry) - set(ENTRY_KEYS)))
        if unknown or "path" not in entry:
            problem = f"unknown keys {unknown}" if unknown else "no 'path'"
            raise PluginError(
                f"reward.plugins entry {dict(entry)!r} has {problem}; an entry is file.py, file.py:function "
                f"or a mapping with keys {', '.join(ENTRY_KEYS)} (path required)"
            )
        values = {key: entry[key] for key in ENTRY_KEYS if entry.get(key) is not None}
        for key, value in values.items():
            if key == "kwargs":
                if not isinstance(value, Mapping) or not all(isinstance(k, str) and k.isidentifier() for k in value):
                    raise PluginError(f"reward.plugins entry {dict(entry)!r}: 'kwargs' must be a mapping of keyword "
                                      "arguments for the factory, e.g. kwargs: {max_len: 64}")
            elif not isinstance(value, str) and not (key == "path" and (isinstance(value, Path) or callable(value))):
                raise PluginError(f"reward.plugins entry {dict(entry)!r}: '{key}' must be a string, got {type(value).__name__}")
        kwargs = dict(values["kwargs"]) if "kwargs" in values else None
        spec = PluginSpec(values["path"], values.get("function", DEFAULT_FUNCTION), values.get("name"),
                          values.get("contract", "auto"), values.get("format", "auto"), kwargs)
        if isinstance(spec.source, str) and "function" not in values and ":" in spec.source:
            inner = parse_plugin_entry(spec.source)  # {path: file.py:fn, name: x}
            spec = PluginSpec(inner.source, inner.function, spec.name, spec.contract, spec.format, kwargs)
    else:
        raise PluginError(
            f"reward.plugins entry {entry!r} is a {type(entry).__name__}; give file.py, file.py:function or a mapping "
            f"with keys {', '.join(ENTRY_KEYS)}"
        )
    if spec.contract != "auto" and spec.contract not in CONTRACTS:
        raise PluginError(f"unknown plugin contract {spec.contract!r}; choose auto, {', '.join(CONTRACTS)}")
    if spec.format not in FORMATS:
        raise PluginError(f"unknown plugin format {spec.format!r}; choose {', '.join(FORMATS)}")
    if not _FUNCTION.match(spec.function):
        raise PluginError(f"reward plugin function {spec.function!r} is not a Python function name")
    plugin_name(spec)  # checked now, before anything is imported
    return spec


def parse_plugin_entries(entries: Sequence[Any]) -> list[PluginSpec]:
    """Every entry parsed, and their names checked to be distinct."""
    specs = [parse_plugin_entry(entry) for entry in entries]
    seen: dict[str, PluginSpec] = {}
    for spec in specs:
        name = plugin_name(spec)
        if name is None:  # a factory named after what it returns: checked when the reward loads it
            continue
        if name in seen:
            raise PluginError(
                f"two reward plugins are both named {name!r} ({_describe_source(seen[name].source)} and "
                f"{_describe_source(spec.source)}); give one another name: {{path: ..., name: other_name}} in reward.plugins"
            )
        seen[name] = spec
    return specs


def config_plugin_entries(reward_cfg) -> list[Any]:
    """The entries of a config's `reward` group: `reward.plugin` (if set) first, then `reward.plugins`."""
    return [*([reward_cfg.plugin] if reward_cfg.plugin else []), *(reward_cfg.plugins or [])]


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
    parameters = _signature(fn, label).parameters
    names = set(parameters)
    if names & {"data_source", "extra_info"}:
        return "verl"
    if names & {"split", "info", "solution_str"}:
        return "seed"
    # TRL passes everything as keywords: completions, or only completion_ids (TRL's own repetition penalty), etc.
    if names & set(TRL_ARGUMENTS) or any(p.kind is p.VAR_KEYWORD for p in parameters.values()):
        return "trl"
    factory = (" If it is a factory that returns the reward function, give its arguments: "
               "{path: ..., function: ..., kwargs: {...}} (kwargs: {} for none).")
    raise PluginError(
        f"{label}: cannot tell its contract from parameters {sorted(names)}.{factory} Use one of "
        "compute_score(split, solution_str, ground_truth, info) [seed], "
        "compute_score(data_source, solution_str, ground_truth, extra_info=None) [verl], "
        "fn(completions, **kwargs) [trl], or set the entry's contract: {path: ..., contract: seed | verl | trl}."
    )


def _check_signature(fn: Callable, contract: str, label: str) -> None:
    signature = _signature(fn, label)
    try:
        if contract == "seed":
            signature.bind("train", "solution", "ground truth", {})
        elif contract == "verl":
            signature.bind(data_source="d", solution_str="s", ground_truth="g", extra_info={})
        else:
            params = signature.parameters.values()
            if not any(p.kind is p.VAR_KEYWORD for p in params) and "completions" not in signature.parameters:
                raise TypeError("it takes no 'completions' keyword")
            positional_only = [p.name for p in params if p.kind is p.POSITIONAL_ONLY and p.default is p.empty]
            if positional_only:
                raise TypeError(f"positional-only parameters {positional_only}; TRL passes keywords")
    except TypeError as error:
        expected = {
            "seed": "compute_score(split, solution_str, ground_truth, info)",
            "verl": "compute_score(data_source, solution_str, ground_truth, extra_info=None)",
            "trl": "fn(completions, **kwargs) (called with prompts, completions, completion_ids, trainer_state and "
            "the dataset's columns as keywords)",
        }[contract]
        raise PluginError(
            f"{label} has the wrong signature {signature} for the {contract} contract ({error}); expected {expected}"
        ) from error


def _load_module(path: Path) -> Any:
    if not path.is_file():
        raise PluginError(
            f"reward plugin file {str(path)!r} not found (resolved to {path.resolve()}); "
            "reward.plugins / reward.plugin entries are .py files, relative to the working directory"
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


def load_plugin(
    spec: Any,
    contract: str = "auto",
    function: str = DEFAULT_FUNCTION,
    *,
    name: str | None = None,
    format: str = "auto",
) -> RewardPlugin:
    """A checked RewardPlugin from a reward.plugins entry (`file.py`, `file.py:fn`, a mapping, a PluginSpec) or a
    callable; `contract`, `function`, `name` and `format` apply where the entry does not say. A loaded RewardPlugin
    is returned as it is."""
    if isinstance(spec, RewardPlugin):
        return spec
    if isinstance(spec, (PluginSpec, Mapping)):
        parsed = parse_plugin_entry(spec)
    else:  # a plain path or a callable: the keyword arguments fill in what it does not say
        source, from_text = _split_function(spec) if isinstance(spec, (str, Path)) else (spec, None)
        parsed = parse_plugin_entry(PluginSpec(source, from_text or function, name, contract, format))
    source = parsed.source
    if callable(source):
        fn, label = source, f"reward plugin function {getattr(source, '__name__', repr(source))!r}"
    else:
        path = Path(source).expanduser()
        module = _load_module(path)
        fn = getattr(module, parsed.function, None)
        label = f"reward plugin {str(path)!r} ({parsed.function})"
        if fn is None or not callable(fn):
            defined = sorted(
                n for n, v in vars(module).items() if callable(v) and getattr(v, "__module__", "") == module.__name__
            )
            problem = "is not callable" if fn is not None else "is missing"
            example = defined[0] if defined else "my_function"
            raise PluginError(
                f"reward plugin {str(path)!r}: function {parsed.function!r} {problem}; the file defines "
                f"{defined or 'no functions'}. Define compute_score(split, solution_str, ground_truth, info), or name "
                f"the function in the entry: reward.plugins=[{path}:{example}]"
            )
    if parsed.kwargs is not None:
        fn, label = _call_factory(fn, parsed.kwargs, label)
    chosen = _detect_contract(fn, label) if parsed.contract == "auto" else parsed.contract
    _check_signature(fn, chosen, label)
    return RewardPlugin(fn=fn, contract=chosen, label=label, name=plugin_name(parsed, made=fn), format=parsed.format,
                        keys=() if chosen == "trl" else None)  # a TRL function has no breakdown


def _call_factory(factory: Callable, kwargs: Mapping[str, Any], label: str) -> tuple[Callable, str]:
    """The reward function a factory returns for `kwargs` (called once), and its label."""
    shown = ", ".join(f"{k}={v!r}" for k, v in kwargs.items())
    call = f"{getattr(factory, '__name__', 'factory')}({shown})"
    try:
        _signature(factory, label).bind(**kwargs)
    except TypeError as error:
        raise PluginError(f"{label}: kwargs do not fit the factory {call}: {error}; its signature is "
                          f"{inspect.signature(factory)}") from error
    try:
        made = factory(**kwargs)
    except Exception as error:
        raise PluginError(f"{label}: the factory call {call} raised {type(error).__name__}: {error}") from error
    if not callable(made):
        raise PluginError(f"{label}: the factory call {call} returned {type(made).__name__} {made!r:.40}, not a reward "
                          "function; drop 'kwargs' if the function itself scores completions")
    return made, f"{label} -> {call}"


# ----------------------------------------------------------------------------
# Calling


@dataclass
class PluginOutput:
    """Scores and breakdowns per sample (None where it failed or, for TRL, returned None) and the failures."""

    scores: list[float | None]
    breakdowns: list[dict[str, float] | None]
    failures: list[SampleFailure] = field(default_factory=list)
    not_applicable: list[int] = field(default_factory=list)  # samples a TRL function returned None for


@dataclass
class PluginBatch:
    """What one scoring call hands every plugin: the completions and, per completion, its example's data."""

    completions: Sequence[str]
    ground_truths: Sequence[str]
    prompts: Sequence[Any]
    infos: Sequence[dict]  # index, split, step, prompt, num_tokens, group_id and the record's columns
    split: str
    columns: Mapping[str, Sequence[Any]]  # the dataset's columns, as TRL passes them (ground_truth, qid, ...)
    completion_ids: Sequence[Sequence[int]] | None = None
    trainer_state: Any = None
    data_keys: Mapping[str, Any] | None = None  # the data.* keys behind the columns, for error messages


@dataclass
class _Call:
    """One call of a plugin's function (a TRL function: once per batch; seed / verl: once per sample)."""

    args: tuple
    kwargs: dict
    result: Any = None
    error: BaseException | None = None


def call_plugins(plugins: Sequence[RewardPlugin], batch: PluginBatch) -> list[PluginOutput]:
    """Run every plugin on `batch`: synchronous functions in this thread, one after another; the async ones' calls
    together on the background event loop. Never raises for a per-sample problem (see PluginOutput.failures)."""
    calls = [(plugin, plugin.calls(batch)) for plugin in plugins]
    _run([(plugin.fn, call) for plugin, plugin_calls in calls for call in plugin_calls])
    return [plugin.output(plugin_calls, batch) for plugin, plugin_calls in calls]


def _run(calls: Sequence[tuple[Callable, _Call]]) -> None:
    """Fill in each call's result or error; coroutines are gathered on the background loop."""
    pending: list[tuple[_Call, Any]] = []
    for fn, call in calls:
        try:
            result = fn(*call.args, **call.kwargs)
        except Exception as error:  # the plugin's own bug
            call.error = error
            continue
        if inspect.isawaitable(result):
            pending.append((call, result))
        else:
            call.result = result
    if pending:
        for (call, _), outcome in zip(pending, _gather([awaitable for _, awaitable in pending])):
            if isinstance(outcome, Exception):
                call.error = outcome
            else:
                call.result = outcome


_LOOP: asyncio.AbstractEventLoop | None = None
_LOOP_LOCK = threading.Lock()


def _gather(awaitables: list) -> list:
    """Await all at once on one event loop in a daemon thread (a notebook's own loop is already running, so
    asyncio.run cannot be used there); exceptions come back as values."""
    global _LOOP
    with _LOOP_LOCK:
        if _LOOP is None:
            _LOOP = asyncio.new_event_loop()
            threading.Thread(target=_LOOP.run_forever, name="dapo-nb-async-rewards", daemon=True).start()

    async def together():
        return await asyncio.gather(*awaitables, return_exceptions=True)

    return asyncio.run_coroutine_threadsafe(together(), _LOOP).result()


@dataclass
class RewardPlugin:
    """A loaded plugin; `keys` (breakdown names) are fixed by the first good sample."""

    fn: Callable
    contract: str
    label: str
    name: str = PLUGIN_OBJECTIVE
    format: str = "auto"
    keys: tuple[str, ...] | None = None

    def objective(self, key: str) -> str:
        """The objective name of breakdown key `key`: `<plugin name>.<key>`."""
        return f"{self.name}.{key}"

    @property
    def objective_names(self) -> list[str]:
        """`<name>` and `<name>.<key>` for every known breakdown key."""
        return [self.name, *(self.objective(key) for key in self.keys or ())]

    @property
    def is_async(self) -> bool:
        return inspect.iscoroutinefunction(self.fn) or inspect.iscoroutinefunction(getattr(self.fn, "__call__", None))

    def describe_failure(self, failure: SampleFailure, completion: str, info: dict) -> str:
        """The full error message: plugin, sample, problem, and how to proceed."""
        qid = f" qid={info['qid']!r}" if "qid" in info else ""
        return (
            f"{self.label}: sample {failure.index}{qid} (completion {completion[:60]!r}): {failure.problem}. "
            "Fix the plugin, or set reward.on_error='zero' or 'drop' (counted in reward_errors/<kind>)."
        )

    def __call__(self, completions, ground_truths, prompts, infos, split, num_tokens=None, *, columns=None,
                 completion_ids=None, trainer_state=None, data_keys=None) -> PluginOutput:
        """Run the plugin alone on a batch (MultiObjectiveReward runs its plugins together with `call_plugins`)."""
        batch = PluginBatch(completions, ground_truths, prompts, infos, split,
                            columns if columns is not None else {"ground_truth": ground_truths}, completion_ids,
                            trainer_state, data_keys)
        return call_plugins([self], batch)[0]

    # -- the calls of one batch, and what they returned -----------------------

    def calls(self, batch: PluginBatch) -> list[_Call]:
        """The calls this plugin makes for `batch`; a TRL function needing a column the batch lacks raises PluginError."""
        if self.contract == "trl":
            return [_Call((), self.trl_arguments(batch, self.conversational(batch.prompts)))]
        if self.contract == "seed":
            return [_Call((batch.split, text, truth, info), {})
                    for text, truth, info in zip(batch.completions, batch.ground_truths, batch.infos)]
        return [_Call((), dict(data_source=info.get("data_source") or "dapo_nb", solution_str=text, ground_truth=truth,
                               extra_info=info))
                for text, truth, info in zip(batch.completions, batch.ground_truths, batch.infos)]

    def output(self, calls: list[_Call], batch: PluginBatch) -> PluginOutput:
        """Check what the calls returned: scores, breakdowns, failures (seed / verl per sample, TRL per batch)."""
        if self.contract == "trl":
            return self._batch_output(calls[0], batch)
        count = len(batch.completions)
        out = PluginOutput([None] * count, [None] * count)
        for i, call in enumerate(calls):
            if call.error is not None:
                error = call.error
                out.failures.append(SampleFailure(i, "exception", f"raised {type(error).__name__}: {error}", error))
                continue
            try:
                score, breakdown = check_result(call.result, self.contract)
                self._check_keys(breakdown)
            except SampleProblem as bad:
                out.failures.append(SampleFailure(i, bad.kind, bad.problem))
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

    # -- TRL functions ---------------------------------------------------------

    def conversational(self, prompts: Sequence[Any]) -> bool:
        """Whether this batch goes to the function in TRL's conversational format."""
        if self.format != "auto":
            return self.format == "conversational"
        return bool(prompts) and is_conversational(prompts[0])

    def trl_arguments(self, batch: PluginBatch, conversational: bool) -> dict[str, Any]:
        """The keyword arguments TRL would pass, filtered to the parameters the function names (unless **kwargs);
        PluginError when it requires one the batch does not have."""
        prompts, completions = batch.prompts, batch.completions
        if conversational:
            prompts = [p if is_conversational(p) else [{"role": "user", "content": p}] for p in prompts]
            completions = [[{"role": "assistant", "content": c}] for c in completions]
        arguments: dict[str, Any] = {key: list(values) for key, values in batch.columns.items() if key not in TRL_ARGUMENTS}
        arguments.update(prompts=list(prompts), completions=list(completions), trainer_state=batch.trainer_state)
        if batch.completion_ids is not None:
            arguments["completion_ids"] = [list(ids) for ids in batch.completion_ids]
        missing = self.missing_arguments(arguments)
        if missing:
            raise PluginError(column_problem(self.label, missing, batch.columns, batch.data_keys,
                                             no_ids=batch.completion_ids is None))
        parameters = inspect.signature(self.fn).parameters
        if any(p.kind is p.VAR_KEYWORD for p in parameters.values()):
            return arguments
        return {name: value for name, value in arguments.items() if name in parameters}

    def missing_arguments(self, available) -> list[str]:
        """The parameters without a default that a TRL call with keywords `available` would leave unfilled."""
        parameters = inspect.signature(self.fn).parameters
        return [name for name, p in parameters.items()
                if p.default is p.empty and p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY) and name not in available]

    def check_columns(self, columns: Sequence[str], data_keys: Mapping[str, Any] | None = None,
                      completion_ids: bool = True) -> None:
        """Before any sample is scored: PluginError if this TRL function needs a keyword that neither the data's
        `columns` nor TRL's own arguments provide."""
        if self.contract != "trl":
            return
        available = {*columns, "ground_truth", *TRL_ARGUMENTS} - (set() if completion_ids else {"completion_ids"})
        missing = self.missing_arguments(available)
        if missing:
            raise PluginError(column_problem(self.label, missing, {c: () for c in columns}, data_keys,
                                             no_ids=not completion_ids))

    def _batch_output(self, call: _Call, batch: PluginBatch) -> PluginOutput:
        count = len(batch.completions)
        out = PluginOutput([None] * count, [None] * count)
        self.keys = ()
        if call.error is not None:
            error, hint = call.error, ""
            if isinstance(error, (TypeError, KeyError, IndexError, AttributeError)) and self.format == "auto":
                hint = self._format_hint(batch)
            out.failures = [
                SampleFailure(i, "exception", f"raised {type(error).__name__}: {error} (on the whole batch){hint}", error)
                for i in range(count)
            ]
            return out
        raw = call.result
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
                if value is None:  # TRL: not applicable to this sample
                    out.not_applicable.append(i)
                    out.breakdowns[i] = {}
                    continue
                out.scores[i] = check_number(value, "the returned reward")
                out.breakdowns[i] = {}
            except SampleProblem as bad:
                out.failures.append(SampleFailure(i, bad.kind, bad.problem))
        return out

    def _format_hint(self, batch: PluginBatch) -> str:
        """When the function fails on the format it got: try the other one once; only if that works is the format
        the cause, and the hint says which to set."""
        shown = "conversational" if self.conversational(batch.prompts) else "standard"
        other = "standard" if shown == "conversational" else "conversational"
        retry = _Call((), self.trl_arguments(batch, other == "conversational"))
        _run([(self.fn, retry)])
        if retry.error is not None:
            return ""
        return (f" [it got completions in TRL's {shown} format and works on the {other} one: "
                f"set format: {other} in its reward.plugins entry]")


def column_problem(label: str, missing: Sequence[str], columns: Mapping[str, Any], data_keys: Mapping[str, Any] | None,
                   no_ids: bool = False) -> str:
    """Why a TRL function's keyword is missing: the column it wanted, the columns there are, the data.* keys."""
    have = sorted(c for c in columns if c not in TRL_ARGUMENTS)
    keys = dict(data_keys or {})
    notes = []
    for name in missing:
        if name == "completion_ids" and no_ids:
            notes.append("completion_ids: this caller has only texts (give the parameter a default)")
            continue
        if name == keys.get("prompt_key"):
            notes.append(f"'{name}' is the prompt column (data.prompt_key={name}): it arrives as `prompts`")
        elif name == keys.get("answer_key"):
            notes.append(f"'{name}' is the answer column (data.answer_key={name}); it arrives as `ground_truth`")
        close = difflib.get_close_matches(name, have, n=1, cutoff=0.75)
        if close:
            notes.append(f"did you mean the column '{close[0]}'?")
    mapping = ""
    if keys:
        mapping = (f" The columns come from the data: data.prompt_key={keys.get('prompt_key')} -> prompts, "
                   f"data.answer_key={keys.get('answer_key')} (data.answer_format={keys.get('answer_format')}) -> "
                   "ground_truth, every other field of a record -> a column of its own name.")
    wanted = ", ".join(repr(n) for n in missing)
    return (f"{label} needs the column {wanted}, which the data does not have; its columns are "
            f"{', '.join(have) or 'none'}, besides prompts, completions, completion_ids and trainer_state."
            f"{mapping} {' '.join(notes) + ' ' if notes else ''}Add the column to the data, point data.answer_key / "
            "data.prompt_key at it, or give the parameter a default.")


def trainer_state_for(step: int | None) -> Any:
    """What a TRL function gets as `trainer_state` outside TRL: an object with `global_step` (our training step)."""
    return types.SimpleNamespace(global_step=step if step is not None else 0)
