"""The combined multi-objective reward: objectives + reward plugins -> one scalar per completion.

    reward = MultiObjectiveReward(objectives=["correctness", "format"], weights={"correctness": 1.0, "format": 0.2})
    batch = reward.score(completions, ground_truths, group_ids=[0, 0, 1, 1])
    batch.scores          # (N,) floats for DAPO's group advantages
    batch.metrics()       # reward, reward_std, rewards/<name>/mean|std, weights/<name>, reward_errors/<kind>
    reward.weights.set({"format": 0.5})   # from a slider, between steps; thread-safe

Objectives come from the registry (`objectives.py`). Each plugin (`plugins.py`; any number, from
`plugins=[...]` / `reward.plugins`) adds the objective `<name>` (its own scalar score) and one
objective `<name>.<key>` per breakdown key, e.g. `my_multiobj_reward_fixed.correctness`, so a
plugin's `correctness` never collides with the built-in `correctness`: both are computed, logged
and weighted on their own. All are scored together. Default weights: 1.0 for every listed
objective and every plugin's own score when `weights` is not given; with `weights`, listed
objectives it leaves out get 0.0 (computed and logged, not rewarded), a plugin's own score still
1.0, breakdown keys 0.0 (already inside the plugin's score; raise them, and lower `<name>`, to
re-weight the breakdown live). So the seed's plugin alone gives exactly the seed's reward, and
`weights={"<name>": 0, "<name>.correctness": 1}` re-scalarizes its breakdown. Objectives not
given are the names in `weights` that no plugin owns (none: correctness and format, or only the
plugins when there are some). `marked_answer_only` (default True, `reward.marked_answer_only`)
reaches every objective as a context key: the built-in `correctness` then counts only a marked final
answer (`\\boxed{}`, `Answer:`, `####`), never the last number of a rambling text.

A TRL function's `None` ("not applicable", TRL's convention) adds nothing to a weighted sum for
that sample (TRL: NaN, then nansum) and leaves the sample out of `rewards/<name>/mean|std` (TRL:
nanmean); the objective's value in `RewardBatch.objectives` is 0.0. A sample for which every
objective with a positive weight is not applicable cannot be scored: it is marked invalid
(`valid[i] = False`, counted in `reward_errors/dropped`), as TRL gives such rows no advantage.
The Tchebycheff scalarizers and `group_zscore` see such a value as 0.0.

Errors of a plugin or of a registered objective on one sample follow `on_error`:
`raise` (default) raises `PluginError` naming the plugin or objective, the sample and the problem;
`zero` sets that source's values for the sample to 0.0; `drop` marks the sample invalid
(`valid[i] = False`, score 0.0; the trainer must leave it out). Both count in
`reward_errors/<kind>`, keep the messages in `RewardBatch.error_messages` and log the first of
each kind, so nothing fails silently.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping, Sequence

from .objectives import OBJECTIVES, Objective, ObjectiveError, check_overlong_settings, get_objective
from .plugins import (
    DEFAULT_FUNCTION,
    ERROR_KINDS,
    ON_ERROR,
    TRL_ARGUMENTS,
    PluginBatch,
    PluginError,
    RewardPlugin,
    SampleFailure,
    SampleProblem,
    call_plugins,
    check_number,
    config_plugin_entries,
    load_plugin,
    parse_plugin_entries,
    trainer_state_for,
)
from .scalarize import check_choice, scalarize
from .weights import LiveWeights, WeightsError

logger = logging.getLogger(__name__)
DEFAULT_OBJECTIVES = ("correctness", "format")
_RANGE_SLACK = 1e-9


# ----------------------------------------------------------------------------
# Result of one batch


def _mean_std(values: Sequence[float]) -> tuple[float, float]:
    if not values:
        return math.nan, math.nan
    mean = math.fsum(values) / len(values)
    return mean, math.sqrt(math.fsum((v - mean) ** 2 for v in values) / len(values))


@dataclass
class RewardBatch:
    """Scores of one batch, the raw objective values behind them and the weights used."""

    scores: list[float]  # (N,) the scalar reward; 0.0 where not valid
    objectives: dict[str, list[float]]  # name -> (N,) raw (un-normalized) values
    weights: dict[str, float]  # the exact weights this batch was scored with
    valid: list[bool]  # (N,) False where on_error="drop" dropped the sample
    error_counts: dict[str, int]  # kind -> count, every kind in ERROR_KINDS
    step: int = 0
    split: str = "train"
    error_messages: list[str] = field(default_factory=list)
    applicable: dict[str, list[bool]] = field(default_factory=dict)  # name -> (N,), only names with a None (TRL)

    @staticmethod
    def concat(batches: Sequence[RewardBatch]) -> RewardBatch:
        """One batch of all rows of `batches` (weights of the last, error counts summed), e.g. a step's generation batches."""
        if not batches:
            raise ValueError("RewardBatch.concat needs at least one batch")
        names = list(batches[0].objectives)
        return RewardBatch(
            scores=[s for b in batches for s in b.scores],
            objectives={n: [v for b in batches for v in b.objectives.get(n, [math.nan] * len(b.scores))] for n in names},
            weights=dict(batches[-1].weights), valid=[ok for b in batches for ok in b.valid],
            error_counts={k: sum(b.error_counts.get(k, 0) for b in batches) for k in batches[-1].error_counts},
            step=batches[-1].step, split=batches[-1].split,
            error_messages=[m for b in batches for m in b.error_messages],
            applicable={n: [ok for b in batches for ok in b.applicable.get(n, [True] * len(b.scores))]
                        for n in dict.fromkeys(n for b in batches for n in b.applicable)})

    def metrics(self) -> dict[str, float]:
        """TRL-style metric names over the valid samples (population std); both training backends log these."""
        keep = [i for i, ok in enumerate(self.valid) if ok]
        mean, std = _mean_std([self.scores[i] for i in keep])
        out = {"reward": mean, "reward_std": std}
        for name, column in self.objectives.items():
            applies = self.applicable.get(name)  # TRL's nanmean: samples a function returned None for stay out
            rows = keep if applies is None else [i for i in keep if applies[i]]
            out[f"rewards/{name}/mean"], out[f"rewards/{name}/std"] = _mean_std([column[i] for i in rows])
        out.update({f"weights/{name}": weight for name, weight in self.weights.items()})
        out.update({f"reward_errors/{kind}": float(count) for kind, count in self.error_counts.items()})
        out["reward_errors/dropped"] = float(len(self.valid) - len(keep))
        return out


# ----------------------------------------------------------------------------
# The reward


def _check_list(value: Any, name: str, count: int | None, item_types: tuple[type, ...] | None) -> list:
    if isinstance(value, (str, bytes)) or not isinstance(value, Sequence):
        raise ValueError(f"score(): {name} must be a list, got {type(value).__name__}")
    if count is not None and len(value) != count:
        raise ValueError(f"score(): {name} has {len(value)} items but completions has {count}; give one per completion")
    if item_types is not None:
        for i, item in enumerate(value):
            if isinstance(item, bool) or not isinstance(item, item_types):
                wanted = " or ".join(t.__name__ for t in item_types)
                raise ValueError(f"score(): {name}[{i}] is {type(item).__name__} {item!r:.40}; expected {wanted}")
    return list(value)


class MultiObjectiveReward:
    """Named objectives and any number of reward plugins combined into one scalar, with live weights."""

    def __init__(
        self,
        objectives: Sequence[str] | None = None,
        weights: Mapping[str, float] | None = None,
        scalarizer: str = "weighted_sum",
        normalization: str = "none",
        plugin: Any = None,
        on_error: str = "raise",
        schedule: Mapping[int, Mapping[str, float]] | None = None,
        overlong_max_len: int | None = None,
        overlong_buffer_len: int | None = None,
        ideal: Mapping[str, float] | None = None,
        mu: float = 0.1,
        plugin_contract: str = "auto",
        plugin_function: str = DEFAULT_FUNCTION,
        plugins: Sequence[Any] | None = None,
        marked_answer_only: bool = True,
        data_keys: Mapping[str, Any] | None = None,
    ) -> None:
        """`plugins`: entries as in reward.plugins (`file.py`, `file.py:fn`, a mapping, a callable); `plugin` is one
        more entry placed first, with `plugin_contract` / `plugin_function` applying to it alone. `marked_answer_only`:
        `correctness` needs a marked final answer (False: the last number counts too). `data_keys`: the data.* keys
        (prompt_key, answer_key, answer_format) the examples were read with, named by errors about missing columns."""
        self.data_keys = dict(data_keys or {})
        if on_error not in ON_ERROR:
            raise ValueError(f"on_error={on_error!r} is not one of {', '.join(ON_ERROR)}")
        if not isinstance(marked_answer_only, bool):
            raise ValueError(f"marked_answer_only must be True or False, got {marked_answer_only!r}")
        self.marked_answer_only = marked_answer_only
        check_choice(scalarizer, normalization, mu)
        self.scalarizer, self.normalization, self.on_error, self.mu = scalarizer, normalization, on_error, float(mu)
        self.overlong_max_len, self.overlong_buffer_len = overlong_max_len, overlong_buffer_len
        if isinstance(plugins, (str, Path)) or callable(plugins):
            plugins = [plugins]
        self.plugins: list[RewardPlugin] = (
            [load_plugin(plugin, plugin_contract, plugin_function)] if plugin is not None else []
        ) + [load_plugin(entry) for entry in plugins or []]
        self._check_plugin_names()
        plugin_names = [p.name for p in self.plugins]

        if objectives is None:
            registered = [n for n in (weights or {}) if not self._plugin_owned(n)]
            objectives = registered or ([] if self.plugins else list(DEFAULT_OBJECTIVES))
        if isinstance(objectives, str):
            raise ValueError(
                f"objectives must be a list of names, got the string {objectives!r}; write [{objectives!r}]"
            )
        duplicates = sorted({n for n in objectives if list(objectives).count(n) > 1})
        if duplicates:
            raise ValueError(f"objectives lists {duplicates} more than once")
        self.objectives: dict[str, Objective] = {name: self._registered(name) for name in objectives}
        if not self.objectives and not self.plugins:
            raise ValueError("the reward has no objectives: list some (e.g. ['correctness']) or give a plugin")
        self._check_overlong()

        fixed_names = list(self.objectives) + plugin_names
        if weights is None:
            weights = {name: 1.0 for name in fixed_names}
        else:  # listed objectives left out: logged, not rewarded; a plugin's own score counts unless weighted
            weights = {**{name: 0.0 for name in self.objectives}, **{name: 1.0 for name in plugin_names}, **weights}
        pending = any(p.keys is None for p in self.plugins)  # breakdown keys known after a plugin's first call
        if pending:
            self._check_pending_names(weights, schedule, fixed_names)
        self.weights = LiveWeights(weights, None if pending else self.names, schedule)
        self._fixed_names = fixed_names
        self.ideal = {name: check_number_or_raise(value, f"ideal[{name!r}]") for name, value in (ideal or {}).items()}
        self._logged_kinds: set[tuple[str, str]] = set()

    # -- construction checks -------------------------------------------------

    def _check_plugin_names(self) -> None:
        seen: dict[str, RewardPlugin] = {}
        for plugin in self.plugins:
            if plugin.name in seen:
                raise PluginError(
                    f"{seen[plugin.name].label} and {plugin.label} are both named {plugin.name!r}; give one another "
                    "name: {path: ..., name: other_name} in reward.plugins"
                )
            if plugin.name in OBJECTIVES:
                raise PluginError(
                    f"{plugin.label} is named {plugin.name!r}, like the registered objective {plugin.name!r}; "
                    "give it another name: {path: ..., name: other_name} in reward.plugins"
                )
            seen[plugin.name] = plugin

    def _plugin_owned(self, name: str) -> bool:
        """Whether `name` is a plugin's score (`<plugin>`) or a breakdown key of one (`<plugin>.<key>`)."""
        return any(name == p.name or name.startswith(p.name + ".") for p in self.plugins)

    def _registered(self, name: str) -> Objective:
        try:
            return get_objective(name)
        except ObjectiveError as error:
            if not self.plugins:
                raise
            owned = ", ".join(f"{p.name}, {p.name}.<breakdown key>" for p in self.plugins)
            raise ObjectiveError(f"{error}; plugin objectives are named after the plugin: {owned}") from None

    def _check_pending_names(self, weights, schedule, fixed_names) -> None:
        """Before breakdown keys are known: names must be listed, a plugin's, or `<plugin>.<key>` of a plugin whose
        keys are still unknown (those are checked after its first call)."""
        pending = [p.name for p in self.plugins if p.keys is None]
        entries = [("weights", weights), *((f"schedule[{step}]", entry) for step, entry in (schedule or {}).items())]
        for where, entry in entries:
            if not isinstance(entry, Mapping):
                continue  # LiveWeights says what is wrong
            for name in entry:
                if name in fixed_names or any(str(name).startswith(p + ".") for p in pending):
                    continue
                known = ", ".join([*sorted(fixed_names), *(f"{p}.<breakdown key>" for p in pending)])
                raise WeightsError(f"{where}: unknown objective {name!r}; known objectives: {known}")

    def _check_overlong(self) -> None:
        needs = {key for objective in self.objectives.values() for key in objective.needs}
        if "overlong_buffer_len" in needs:
            check_overlong_settings(self.overlong_max_len, self.overlong_buffer_len)
        elif "overlong_max_len" in needs:
            check_overlong_settings(self.overlong_max_len, self.overlong_max_len)

    @property
    def plugin(self) -> RewardPlugin | None:
        """The first plugin, or None (for code written when a reward had at most one)."""
        return self.plugins[0] if self.plugins else None

    @property
    def names(self) -> list[str]:
        """Every objective this reward reports: listed ones, each plugin's score, then the plugins' breakdown keys."""
        keys = [p.objective(key) for p in self.plugins for key in p.keys or ()]
        return [*self.objectives, *(p.name for p in self.plugins), *keys]

    # -- scoring -----------------------------------------------------------

    def score_examples(
        self,
        completions: Sequence[str],
        examples: Sequence[Any],
        *,
        step: int | None = None,
        split: str = "train",
        group_ids: Sequence[int] | None = None,
        num_tokens: Sequence[int] | None = None,
        completion_ids: Sequence[Sequence[int]] | None = None,
        trainer_state: Any = None,
    ) -> RewardBatch:
        """Score completions, each with the example (a `data.PromptExample`) it answers: dapo-nb's one scoring call.

        Training, evaluation (`dapo-nb eval`, eval during training, studies), the TRL backend and the notebooks all
        come here (`scored.score_rollout` from a Rollout), so a plugin gets the same keywords everywhere: the prompt,
        the ground truth, every column of the record (qid, data_source and the record's other fields), the
        completion ids where the caller has them, the step and the split."""
        if len(examples) != len(completions):
            raise ValueError(f"score_examples(): {len(examples)} examples for {len(completions)} completions; "
                             "give the example each completion answers")
        return self.score(
            completions, [ex.ground_truth for ex in examples], prompts=[ex.prompt for ex in examples],
            group_ids=group_ids, num_tokens=num_tokens, step=step, split=split,
            infos=[{"qid": ex.qid, "data_source": ex.data_source, **ex.extra} for ex in examples],
            completion_ids=completion_ids, trainer_state=trainer_state)

    def check_columns(self, examples: Sequence[Any], completion_ids: bool = True) -> None:
        """Before the first batch: PluginError if a TRL function requires a column these examples do not have."""
        columns = dict.fromkeys(["qid", "data_source", *(key for ex in examples for key in ex.extra)])
        for plugin in self.plugins:
            plugin.check_columns(list(columns), self.data_keys, completion_ids)

    def score(
        self,
        completions: Sequence[str],
        ground_truths: Sequence[str],
        prompts: Sequence[Any] | None = None,
        group_ids: Sequence[int] | None = None,
        num_tokens: Sequence[int] | None = None,
        step: int | None = None,
        split: str = "train",
        infos: Sequence[Mapping[str, Any]] | None = None,
        completion_ids: Sequence[Sequence[int]] | None = None,
        trainer_state: Any = None,
    ) -> RewardBatch:
        """Score a batch of completions; `infos` (e.g. qid, data_source, the record's other columns) reach objectives
        and plugins. `completion_ids` and `trainer_state` are passed on to TRL reward functions (default state: an
        object with `global_step` = `step`).

        With split="train" the batch applies due schedule entries and is recorded in the weights' history; any other
        split (evaluation) only reads the current weights."""
        completions = _check_list(completions, "completions", None, (str,))
        count = len(completions)
        ground_truths = _check_list(ground_truths, "ground_truths", count, (str,))
        prompts = _check_list(prompts, "prompts", count, None) if prompts is not None else [""] * count
        group_ids = _check_list(group_ids, "group_ids", count, None) if group_ids is not None else None
        lengths = _check_list(num_tokens, "num_tokens", count, (int,)) if num_tokens is not None else [None] * count
        extra = _check_list(infos, "infos", count, (Mapping,)) if infos is not None else [{}] * count
        if completion_ids is not None:
            completion_ids = _check_list(completion_ids, "completion_ids", count, None)
        for name, objective in self.objectives.items():
            if "num_tokens" in objective.needs and num_tokens is None:
                raise ValueError(
                    f"objective {name!r} needs num_tokens (completion lengths in tokens); pass score(..., num_tokens=[...])"
                )
        infos_full = [
            {
                "index": i,
                "split": split,
                "step": step,
                "prompt": prompts[i],
                "num_tokens": lengths[i],
                "group_id": group_ids[i] if group_ids is not None else None,
                **extra[i],
            }
            for i in range(count)
        ]

        columns: dict[str, list[float]] = {}
        failures: list[tuple[list[str], SampleFailure, str]] = []  # (names to zero, failure, message)
        for name, objective in self.objectives.items():
            columns[name] = self._objective_column(
                objective, completions, ground_truths, prompts, lengths, split, step, infos_full, failures
            )
        not_applicable: dict[str, set[int]] = {}
        if self.plugins:
            data_columns = {"ground_truth": ground_truths}  # what TRL passes as the dataset's columns
            for key in dict.fromkeys(k for e in extra for k in e):
                if key not in TRL_ARGUMENTS:
                    data_columns[key] = [e.get(key) for e in extra]
            state = trainer_state if trainer_state is not None else trainer_state_for(step)
            batch = PluginBatch(completions, ground_truths, prompts, infos_full, split, data_columns, completion_ids,
                                state, self.data_keys)
            for plugin, out in zip(self.plugins, call_plugins(self.plugins, batch)):  # async ones concurrently
                self._plugin_columns(plugin, out, completions, infos_full, columns, failures, not_applicable)
            if self.weights.known is None and all(p.keys is not None for p in self.plugins):
                current = self.weights.get()  # breakdown keys get 0.0, in the order of `names` (the sliders' order)
                self.weights.set({name: 0.0 for name in self.names if name not in current})
                self.weights.set_known(self.names)  # every breakdown key known: check weights and schedule now
            columns = {**{name: columns[name] for name in self.names if name in columns}, **columns}  # names' order

        valid = [True] * count
        error_counts = {kind: 0 for kind in ERROR_KINDS}
        for names, failure, message in failures:
            error_counts[failure.kind] += 1
            if self.on_error == "raise":
                others = f" ({len(failures) - 1} other failures in this batch)" if len(failures) > 1 else ""
                raise PluginError(message + others) from failure.error
            for name in names:
                if name in columns:
                    columns[name][failure.index] = 0.0
            if self.on_error == "drop":
                valid[failure.index] = False
            if (names[0], failure.kind) not in self._logged_kinds:
                self._logged_kinds.add((names[0], failure.kind))
                logger.warning("%s [on_error=%s; later ones of this kind are only counted]", message, self.on_error)

        if split == "train":  # a training batch: apply due schedule entries, record the weights it used
            step, weights = self.weights.begin_batch(step)
        else:  # evaluation reads the weights and changes nothing (training may be running in another thread)
            step, weights = step or 0, self.weights.get()
        for name in weights:  # weights for breakdown keys of a plugin that has not succeeded yet
            columns.setdefault(name, [0.0] * count)
        self._drop_unscorable(weights, not_applicable, valid)
        declared_high = {name: objective.high for name, objective in self.objectives.items()}
        scores = scalarize(
            columns,
            weights,
            scalarizer=self.scalarizer,
            normalization=self.normalization,
            group_ids=group_ids,
            valid=valid,
            ideal=self.ideal,
            mu=self.mu,
            declared_high=declared_high,
        )
        applicable = {name: [i not in rows for i in range(count)] for name, rows in not_applicable.items()}
        return RewardBatch(scores, columns, weights, valid, error_counts, step, split, [m for _, _, m in failures],
                           applicable)

    def _drop_unscorable(self, weights, not_applicable, valid) -> None:
        """TRL: a row every (weighted) reward function returned None for gets no advantage; here it is invalid."""
        active = [name for name, weight in weights.items() if weight > 0]
        if not not_applicable or not active:
            return
        for i in range(len(valid)):
            if valid[i] and all(i in not_applicable.get(name, ()) for name in active):
                valid[i] = False
                if ("unscorable", "none") not in self._logged_kinds:
                    self._logged_kinds.add(("unscorable", "none"))
                    logger.warning(
                        "sample %d: every weighted objective (%s) returned None (not applicable); it is left out "
                        "like TRL's unscorable rows (counted in reward_errors/dropped; later ones are only counted)",
                        i, ", ".join(active))

    def _objective_column(
        self, objective, completions, ground_truths, prompts, lengths, split, step, infos, failures
    ) -> list[float]:
        column = []
        for i, completion in enumerate(completions):
            try:
                value = objective.fn(
                    completion,
                    ground_truths[i],
                    prompt=prompts[i],
                    num_tokens=lengths[i],
                    split=split,
                    step=step,
                    overlong_max_len=self.overlong_max_len,
                    overlong_buffer_len=self.overlong_buffer_len,
                    marked_answer_only=self.marked_answer_only,
                    info=infos[i],
                )
                value = check_number(value, "the returned value")
                low = -math.inf if objective.low is None else objective.low
                high = math.inf if objective.high is None else objective.high
                if not low - _RANGE_SLACK <= value <= high + _RANGE_SLACK:
                    raise SampleProblem(
                        "out_of_range", f"returned {value}, outside its documented range [{low}, {high}]"
                    )
            except Exception as error:
                kind, problem = (
                    (error.kind, error.problem)
                    if isinstance(error, SampleProblem)
                    else ("exception", f"raised {type(error).__name__}: {error}")
                )
                message = (
                    f"objective {objective.name!r}: sample {i} (completion {completion[:60]!r}): {problem}. "
                    "Fix it, or set reward.on_error='zero' or 'drop'."
                )
                cause = None if isinstance(error, SampleProblem) else error
                failures.append(([objective.name], SampleFailure(i, kind, problem, cause), message))
                value = 0.0
            column.append(value)
        return column

    def _plugin_columns(self, plugin, out, completions, infos, columns, failures, not_applicable) -> None:
        keys = list(plugin.keys or ())
        columns[plugin.name] = [score if score is not None else 0.0 for score in out.scores]
        for key in keys:
            columns[plugin.objective(key)] = [b.get(key, 0.0) if b is not None else 0.0 for b in out.breakdowns]
        if out.not_applicable:
            not_applicable[plugin.name] = set(out.not_applicable)
        names = [plugin.name, *(plugin.objective(key) for key in keys)]
        for failure in out.failures:
            message = plugin.describe_failure(failure, completions[failure.index], infos[failure.index])
            failures.append((names, failure, message))


def check_number_or_raise(value: Any, what: str) -> float:
    """A finite float, or a ValueError naming `what`."""
    try:
        return check_number(value, what)
    except SampleProblem as problem:
        raise ValueError(problem.problem) from None


def objective_names(reward_cfg, plugin_names: Sequence[str] | None = None) -> list[str]:
    """The registered objectives a config's `reward` group describes: those listed in `reward.objectives`, then any
    that only a weight or a schedule entry names, leaving out the plugins' own (`<plugin>`, `<plugin>.<key>`; the
    plugins come from `reward.plugin` and `reward.plugins`, or `plugin_names` once loaded). A factory entry without
    `name:` is named by what it returns: before it is loaded, only registered objectives are counted."""
    if plugin_names is None:
        plugin_names = [spec.resolved_name for spec in parse_plugin_entries(config_plugin_entries(reward_cfg))]
    unnamed = None in plugin_names
    plugins = [p for p in plugin_names if p is not None]
    named = [*reward_cfg.weights, *(name for entry in reward_cfg.schedule.values() for name in entry)]
    extra = [n for n in named if not any(n == p or str(n).startswith(p + ".") for p in plugins)
             and (not unnamed or n in OBJECTIVES)]
    return list(dict.fromkeys([*reward_cfg.objectives, *extra]))


def reward_from_config(cfg) -> MultiObjectiveReward:
    """The multi-objective reward described by a dapo_nb `Config`'s `reward` group (objectives: `objective_names`;
    plugins: `reward.plugin`, then `reward.plugins`); the overlong objective's L_max is `sampling.max_new_tokens`;
    `correctness` follows `reward.marked_answer_only`; errors about missing columns name the `data.*` keys."""
    r = cfg.reward
    plugins = [load_plugin(entry) for entry in config_plugin_entries(r)]  # a factory is named by what it returns
    return MultiObjectiveReward(
        objectives=objective_names(r, [p.name for p in plugins]) or None, weights=dict(r.weights),
        scalarizer=r.scalarizer, normalization=r.normalization, plugins=plugins, on_error=r.on_error,
        schedule=dict(r.schedule) or None, ideal=dict(r.ideal) or None, mu=r.mu,
        overlong_max_len=cfg.sampling.max_new_tokens, overlong_buffer_len=r.overlong_buffer_len,
        marked_answer_only=r.marked_answer_only,
        data_keys={"prompt_key": cfg.data.prompt_key, "answer_key": cfg.data.answer_key,
                   "answer_format": cfg.data.answer_format},
    )
