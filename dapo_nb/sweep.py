"""Studies: many training runs (variations x seeds), each judged on the same held-out prompts, run on Ray.

    dapo-nb sweep studies/scalarizers.yaml out_dir=studies/scalarizers        # the terminal
    table = run_sweep("studies/scalarizers.yaml", "studies/scalarizers")      # a notebook (05_studies) calls the same

A study file (YAML; every key documented once, in the dataclasses below):

    base: {train.total_steps: 15}                # overrides of every trial, as on the train command line
    grid: {reward.scalarizer: [weighted_sum, tchebycheff]}   # every combination is a variation
    variants: [{reward.weights.clarity: 0.5}, {}]            # explicit variations, crossed with the grid
    seeds: [0, 1, 2]                             # train.seed of each copy of a variation
    eval: {prompts: 150}                         # held-out prompts every trial is judged on
    front: [correctness, clarity]                # the two objectives of the Pareto front (analysis)
    soups: {objectives: [correctness, clarity], lambdas: [0, 0.5, 1]}   # rewarded soups (below)
    sweep: {cpus_per_trial: 1}                   # Ray resources per trial (sweep.address: a cluster)

A trial trains (`dapo-nb train`, our trainer or `backend=trl` as its overrides say, or `trial: notebook`: papermill
runs notebooks/03_training.ipynb with the overrides as parameters, its executed copy kept in the trial folder),
then `dapo-nb eval` judges its final checkpoint on the study's held-out prompts: greedy pass@1 with its 95% Wilson
interval, format@1 and the mean of every objective of the study's reward (the union of the trials' objectives,
scored through the one scoring path as in training). The base model is judged once too (the row `base`).
Results: `out_dir/results.csv` and `.parquet`, one row per trial (columns: `RESULT_COLUMNS`); each trial's folder
`out_dir/trials/<trial>/` keeps its metrics.jsonl, rollouts.jsonl, logs and what `keep` says of its weights.

Rewarded soups (Rame et al., NeurIPS 2023, arXiv 2306.04488): with `soups.objectives: [a, b]`, one policy is trained
per objective and seed (weight 1 on it, 0 on every other; those trials are the grid's corner points when the grid has
them, so they cost nothing extra), their weights are interpolated at each lambda (lambda * theta_a + (1 - lambda) *
theta_b, every parameter), and each interpolate is judged like a trial (rows of kind `soup`).

Why Ray core and not Ray Tune: a trial here is a subprocess run with its own files, checkpoint and resume rules, and
the variations are a fixed grid, not a search. Tune would add a search space, schedulers, its own experiment state
and trial checkpointing on top of ours; Ray core's tasks give exactly what a study needs (placement by CPUs / GPUs,
a local cluster by default, any cluster by address, cancellation, worker-failure reporting) and the resume rule
stays ours: a trial whose result is in the table never reruns.

Departures and limits: trials are compared at a fixed step budget (set train.total_steps; a minute budget would tie
the comparison to how busy the machine was). On a multi-node cluster, out_dir and the data must be at the same path
on every node (a shared file system): trials write their folders where they run; the rows come back through Ray.
"""

from __future__ import annotations

import dataclasses
import hashlib
import itertools
import json
import math
import os
import re
import shutil
import signal
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import yaml

from .config import Config, ConfigError, coerce_value, leaf_fields, load_config

KINDS = ("cli", "notebook")
KEEP_WEIGHTS = ("none", "final")

RESULT_COLUMNS = {  # every column of results.csv, documented once; the README lists them (a test keeps the two in step)
    "trial": "folder name under trials/: `<variation>-s<seed>-<key>`, `base`, or `soup-s<seed>-<lambda>-<key>`",
    "kind": "train (a trained trial), base (the starting model, judged once), soup (a weight interpolate)",
    "variation": "the variation's overrides as one label (`base` for the study's base alone)",
    "seed": "train.seed of the trial",
    "status": "done, or failed",
    "error": "why a failed trial failed (the last line of its stderr, or the signal that killed it)",
    "steps": "training steps the trial ran (metrics.jsonl's last step)",
    "minutes": "wall-clock minutes of training (not evaluation)",
    "eval_minutes": "wall-clock minutes of the held-out evaluation",
    "eval/pass@1": "greedy pass@1 on the study's held-out prompts",
    "eval/pass@1_ci95_low": "95% Wilson interval of eval/pass@1, low end",
    "eval/pass@1_ci95_high": "... high end",
    "eval/format@1": "share of greedy completions with a final-answer line",
    "eval/num_prompts": "held-out prompts judged",
    "eval/reward": "the trial's own scalar reward on its greedy completions (weights differ between variations)",
    "eval/rewards/<name>/mean": "held-out mean of each objective of the study's reward (training's names)",
    "eval/avg@k": "sampled avg@k when eval.num_samples = k > 0",
    "lambda": "soups: the interpolation weight of the first soup objective's policy (at 0 and 1 the row repeats the ingredient's own evaluation)",
    "ingredients": "soups: the two trials whose weights were mixed (space-separated)",
    "<dotted.key>": "one column per key a variation sets (its value in this trial)",
    "run_dir": "the trial's metrics.jsonl and rollouts.jsonl folder",
    "checkpoint": "the trained weights (empty once deleted by keep.weights=none)",
    "disk_mb": "what the trial folder holds on disk after retention",
    "key": "hash of what defines the trial (overrides, seed, kind, evaluation): how a rerun recognises it",
}


class StudyError(ValueError):
    """A study file or its overrides are wrong; the message names the key and the fix."""


# ----------------------------------------------------------------------------
# The study file


@dataclass
class EvalSettings:
    test_path: str | None = None  # held-out prompts; None = the trials' data.test_path
    prompts: int = 0  # judge N prompts spread evenly over test_path (data.evenly_spread); 0 = all
    num_samples: int = 0  # k of sampled avg@k besides greedy pass@1 (0 = greedy only)
    objectives: list[str] = field(default_factory=list)  # objectives every trial is judged on; [] = the union of the trials' reward objectives


@dataclass
class SweepSettings:
    address: str | None = None  # Ray cluster to join ("auto", "ray://head:10001"); None = RAY_ADDRESS, else a local cluster started here
    cpus_per_trial: float = 1.0  # CPUs Ray reserves per trial; its torch threads (train.threads) follow unless base sets them
    gpus_per_trial: float = 0.0  # GPUs per trial (1: one trial per GPU); 0 on a CPU machine
    max_concurrent: int = 0  # at most this many trials at once; 0 = as many as the resources allow
    retry_failed: bool = True  # a rerun retries the trials that failed; finished ones never rerun


@dataclass
class KeepSettings:
    weights: str = "none"  # none | final: a trial's trained weights after its evaluation (soup ingredients keep theirs until their soups are judged)
    optimizer: bool = False  # save the optimizer state with the weights (train.save_optimizer; twice the weights' size, only to resume training)
    rollouts: bool = True  # keep each trial's rollouts.jsonl (its metrics.jsonl is always kept)


@dataclass
class SoupSettings:
    objectives: list[str] = field(default_factory=list)  # two objectives [a, b]: one policy trained on each; [] = no soups
    lambdas: list[float] = field(default_factory=lambda: [0.0, 0.25, 0.5, 0.75, 1.0])  # weight of a's policy in each interpolate


@dataclass
class Study:
    base: dict[str, Any] = field(default_factory=dict)  # overrides of every trial (dotted keys, values as on the train command line)
    grid: dict[str, list[Any]] = field(default_factory=dict)  # key -> values; every combination is a variation
    variants: list[dict[str, Any]] = field(default_factory=list)  # explicit variations (dicts of overrides), crossed with the grid
    seeds: list[int] = field(default_factory=lambda: [0])  # train.seed of each copy of every variation
    trial: str = "cli"  # cli: dapo-nb train (our trainer, or backend=trl); notebook: papermill runs `notebook` with the overrides
    notebook: str = "notebooks/03_training.ipynb"  # the notebook of trial=notebook (relative to the working directory)
    front: list[str] = field(default_factory=list)  # two objectives whose held-out means form the Pareto front (05_studies)
    eval: EvalSettings = field(default_factory=EvalSettings)
    sweep: SweepSettings = field(default_factory=SweepSettings)
    keep: KeepSettings = field(default_factory=KeepSettings)
    soups: SoupSettings = field(default_factory=SoupSettings)


def study_keys() -> list[str]:
    """Every settable key of a study file, dotted (sweep.address, eval.prompts, ...)."""
    return [key for key, _, _ in leaf_fields(Study())]


def _set(study: Study, key: str, value, where: str) -> None:
    import difflib
    import typing

    node, parts = study, key.split(".")
    if parts[0] in ("base", "grid") and len(parts) > 1:  # base.<config key>=value, grid.<config key>=[values]
        entries = getattr(study, parts[0])
        entries[".".join(parts[1:])] = value
        return _set(study, parts[0], entries, where)
    for i, part in enumerate(parts):
        names = {f.name for f in dataclasses.fields(node)}
        if part not in names:
            candidates = [*study_keys(), *(f.name for f in dataclasses.fields(Study))]
            close = difflib.get_close_matches(key, candidates, n=2, cutoff=0.5)
            hint = f"; did you mean {' or '.join(close)}?" if close else f"; a study file has {', '.join(f.name for f in dataclasses.fields(Study))}"
            raise StudyError(f"{where}: unknown key {key!r}{hint}")
        if i == len(parts) - 1:
            hint = typing.get_type_hints(type(node))[part]
            try:
                setattr(node, part, coerce_value(key, value, hint))
            except ConfigError as error:
                raise StudyError(f"{where}: {error}") from None
            return
        node = getattr(node, part)
        if not dataclasses.is_dataclass(node):
            raise StudyError(f"{where}: {'.'.join(parts[: i + 1])} is not a group; unknown key {key!r}")


def load_study(path: str | Path | Study, overrides: list[str] | tuple = ()) -> Study:
    """A checked Study from a YAML file (or a Study), with `key=value` overrides of its keys (sweep.address=auto)."""
    from .config import parse_override

    if isinstance(path, Study):
        study = dataclasses.replace(path)
        where = "study"
    else:
        path = Path(path)
        if not path.is_file():
            raise StudyError(f"study file {path} does not exist (dapo-nb sweep STUDY.yaml out_dir=DIR)")
        try:
            data = yaml.safe_load(path.read_text()) or {}
        except yaml.YAMLError as error:
            raise StudyError(f"{path}: not valid YAML ({str(error).splitlines()[0]})") from None
        if not isinstance(data, dict):
            raise StudyError(f"{path}: the top level must be a mapping with base, grid, variants, seeds, ...")
        study, where = Study(), str(path)
        _apply(study, data, "", where)
    for text in overrides:
        try:
            key, value = parse_override(text)
        except ConfigError as error:
            raise StudyError(str(error)) from None
        _set(study, key, value, f"override {text!r}")
    return check_study(study, where)


def _apply(study: Study, data: dict, prefix: str, where: str) -> None:
    groups = {f.name for f in dataclasses.fields(Study) if dataclasses.is_dataclass(getattr(study, f.name))}
    for key, value in data.items():
        dotted = f"{prefix}{key}"
        if not prefix and key in groups and isinstance(value, dict):
            _apply(study, value, f"{key}.", where)
        else:
            _set(study, dotted, value, where)


def check_study(study: Study, where: str = "study") -> Study:
    """Relations the types cannot say; each error names the key and the fix."""
    if study.trial not in KINDS:
        raise StudyError(f"{where}: trial={study.trial!r} is not valid; choose one of: {', '.join(KINDS)}")
    if not study.seeds or len(set(study.seeds)) != len(study.seeds):
        raise StudyError(f"{where}: seeds={study.seeds} must be a non-empty list of distinct integers, e.g. seeds: [0, 1, 2]")
    for key, values in study.grid.items():
        if not isinstance(values, list) or not values:
            raise StudyError(f"{where}: grid.{key} must be a non-empty list of values, e.g. grid: {{{key}: [a, b]}}")
    for i, variant in enumerate(study.variants):
        if not isinstance(variant, dict):
            raise StudyError(f"{where}: variants[{i}] must be a mapping of overrides, e.g. {{reward.weights.clarity: 0.5}}")
    if study.keep.weights not in KEEP_WEIGHTS:
        raise StudyError(f"{where}: keep.weights={study.keep.weights!r} is not valid; choose one of: {', '.join(KEEP_WEIGHTS)}")
    if study.front and len(study.front) != 2:
        raise StudyError(f"{where}: front={study.front} must name two objectives, e.g. front: [correctness, clarity]")
    if study.soups.objectives and len(study.soups.objectives) != 2:
        raise StudyError(f"{where}: soups.objectives={study.soups.objectives} must name two objectives (one policy each)")
    if study.soups.objectives and (not study.soups.lambdas or any(not 0 <= x <= 1 for x in study.soups.lambdas)):
        raise StudyError(f"{where}: soups.lambdas={study.soups.lambdas} must be values in [0, 1]")
    if study.sweep.cpus_per_trial <= 0 or study.sweep.gpus_per_trial < 0 or study.sweep.max_concurrent < 0:
        raise StudyError(f"{where}: sweep.cpus_per_trial must be > 0, sweep.gpus_per_trial and sweep.max_concurrent >= 0")
    if study.eval.prompts < 0 or study.eval.num_samples < 0:
        raise StudyError(f"{where}: eval.prompts and eval.num_samples must be >= 0")
    return study


# ----------------------------------------------------------------------------
# The trials of a study


@dataclass
class Trial:
    """One training run of a study (or the base model's evaluation, or a soup), fully specified."""

    name: str  # folder under trials/
    kind: str  # train | base | soup
    variation: str  # label of the variation's overrides
    settings: dict[str, Any]  # the variation's own overrides (one results column each)
    seed: int
    overrides: list[str]  # the complete `dapo-nb train` overrides, base + variation + seed + this trial's folders
    eval_overrides: list[str]  # what `dapo-nb eval` adds (held-out file, prompts, the study's objectives)
    key: str  # hash of everything that defines the result
    soup: dict | None = None  # soups: {"lambda": x, "a": ingredient name, "b": ingredient name}

    def folder(self, out_dir: Path) -> Path:
        return Path(out_dir) / "trials" / self.name


def _override(key: str, value) -> str:
    return f"{key}={json.dumps(value)}"


def _label(settings: dict) -> str:
    return ", ".join(f"{k}={json.dumps(v) if not isinstance(v, str) else v}" for k, v in settings.items()) or "base"


def _slug(settings: dict) -> str:
    """A folder-name form of a variation, e.g. scalarizer=tchebycheff or weights-correctness1.0-clarity0.5."""
    def short(value) -> str:  # a path by its file name: reward.plugins=[/long/path/rewards.py:fn] -> rewards.py:fn
        return Path(value).name if isinstance(value, str) and "/" in value else str(value)

    parts = []
    for key, value in settings.items():
        key = key.split(".")[-1]
        if isinstance(value, dict):
            value = "-".join(f"{k}{short(v)}" for k, v in value.items())
        elif isinstance(value, list):
            value = "-".join(map(short, value))
        parts.append(f"{key}-{short(value)}")
    slug = re.sub(r"[^A-Za-z0-9._-]+", "", "_".join(parts))
    return slug[:48] or "base"


def _key(*parts) -> str:
    return hashlib.sha256(json.dumps(parts, sort_keys=True, default=str).encode()).hexdigest()[:12]


def variations(study: Study) -> list[dict]:
    """The study's variations: each explicit variant (or none) crossed with every combination of the grid."""
    combos = [dict(zip(study.grid, values)) for values in itertools.product(*study.grid.values())] or [{}]
    return [{**variant, **combo} for variant in (study.variants or [{}]) for combo in combos]


def soup_settings(study: Study, objective: str) -> dict:
    """The variation that trains on `objective` alone: weight 1 on it, 0 on every other objective of the reward."""
    return {"reward.weights": {name: float(name == objective) for name in _study_objectives_for_soups(study)}}


def _study_objectives_for_soups(study: Study) -> list[str]:
    cfg = load_config(overrides=[_override(k, v) for k, v in study.base.items()])
    return list(dict.fromkeys([*cfg.reward.weights, *study.soups.objectives]))


def plan(study: Study, out_dir: str | Path) -> list[Trial]:
    """Every trial of the study, each config checked now (a bad key or value fails before anything runs)."""
    out_dir = Path(out_dir).resolve()
    settings = variations(study)
    if study.soups.objectives:  # one policy per soup objective; a grid corner with the same weights is that trial
        for objective in study.soups.objectives:
            wanted = soup_settings(study, objective)
            if not any(_effective_weights(study, s) == {objective: 1.0} for s in settings):
                settings.append(wanted)
    objectives = _judged_objectives(study, settings)
    eval_overrides = [_override("reward.objectives", objectives), _override("eval.max_prompts", study.eval.prompts),
                      _override("eval.num_samples", study.eval.num_samples)]
    if study.eval.test_path:
        eval_overrides.append(_override("data.test_path", study.eval.test_path))
    labels = [_label(v) for v in settings]
    twice = sorted({label for label in labels if labels.count(label) > 1})
    if twice:
        raise StudyError(f"the variation {twice[0]!r} comes more than once (grid x variants); list each once")
    trials = []
    for variation in settings:
        for seed in study.seeds:
            key = _key(study.base, variation, seed, study.trial, study.notebook if study.trial == "notebook" else "",
                       eval_overrides)
            name = f"{_slug(variation)}-s{seed}-{key[:6]}"
            trial = Trial(name, "train", _label(variation), variation, seed, [], eval_overrides, key)
            trial.overrides = _trial_overrides(study, variation, seed, trial.folder(out_dir))
            _check_config(trial, "train")
            trials.append(trial)
    base_key = _key(study.base, "base-model", eval_overrides)
    base = Trial("base", "base", "base model", {}, study.seeds[0], [], eval_overrides, base_key)
    base.overrides = _trial_overrides(study, {}, study.seeds[0], base.folder(out_dir))
    trials.append(base)
    trials += _soup_trials(study, trials, out_dir, eval_overrides)
    return trials


def _trial_overrides(study: Study, variation: dict, seed: int, folder: Path) -> list[str]:
    merged = {**study.base, **variation}
    out = [_override(k, v) for k, v in merged.items()]
    out += [_override("train.seed", seed), _override("train.run_name", "trial"),
            _override("train.output_dir", str(folder / "run")), _override("train.checkpoint_dir", str(folder / "checkpoints"))]
    if "train.threads" not in merged:
        out.append(_override("train.threads", max(1, math.floor(study.sweep.cpus_per_trial))))
    if "train.save_every" not in merged:  # a study judges the final policy: one checkpoint, at the end
        out.append(_override("train.save_every", 0))
    if "train.save_optimizer" not in merged:  # weights only (a third of the size) unless keep.optimizer
        out.append(_override("train.save_optimizer", study.keep.optimizer))
    return out


def _check_config(trial: Trial, what: str) -> Config:
    try:
        return load_config(overrides=trial.overrides + (trial.eval_overrides if what == "eval" else []))
    except ConfigError as error:
        raise StudyError(f"variation {trial.variation!r}: {error}") from None


def _effective_weights(study: Study, variation: dict) -> dict:
    """The variation's reward weights, zeros left out (a weight of 0 and no weight train the same)."""
    cfg = load_config(overrides=[_override(k, v) for k, v in {**study.base, **variation}.items()])
    return {name: float(w) for name, w in cfg.reward.weights.items() if w}


def _judged_objectives(study: Study, settings: list[dict]) -> list[str]:
    """The study's reward: eval.objectives, else every objective any trial's reward has (plugins' included)."""
    if study.eval.objectives:
        return list(study.eval.objectives)
    from .rewards.reward import objective_names

    names: list[str] = []
    for variation in settings:
        try:
            cfg = load_config(overrides=[_override(k, v) for k, v in {**study.base, **variation}.items()])
        except ConfigError as error:
            raise StudyError(f"variation {_label(variation)!r}: {error}") from None
        names += objective_names(cfg.reward)
    from .rewards import OBJECTIVES

    return list(dict.fromkeys([*names, *(name for name in study.front if name in OBJECTIVES)]))


def _soup_trials(study: Study, trials: list[Trial], out_dir: Path, eval_overrides: list[str]) -> list[Trial]:
    if not study.soups.objectives:
        return []
    a, b = study.soups.objectives
    ingredients = {obj: {t.seed: t for t in trials if t.kind == "train"
                         and _effective_weights(study, t.settings) == {obj: 1.0}}
                   for obj in (a, b)}
    soups = []
    for seed in study.seeds:
        first, second = ingredients[a][seed], ingredients[b][seed]
        for lam in study.soups.lambdas:
            key = _key("soup", first.key, second.key, lam, eval_overrides)
            trial = Trial(f"soup-s{seed}-{lam:g}-{key[:6]}", "soup", f"soup {a}:{b} lambda={lam:g}", {}, seed,
                          first.overrides, eval_overrides, key, {"lambda": lam, "a": first.name, "b": second.name})
            soups.append(trial)
    return soups


# ----------------------------------------------------------------------------
# Running one trial (inside a Ray task)


@dataclass
class Command:
    """A subprocess of a trial: its argv, and where its output goes."""

    argv: list[str]
    log: Path
    cwd: Path


class TrialFailed(Exception):
    """A trial's subprocess failed; the message is its last error line."""


def _set_parent_death_signal() -> None:  # pragma: no cover - runs in the child, before exec
    """Linux: the trial's subprocess gets SIGTERM when the Ray worker that started it dies."""
    try:
        import ctypes

        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG
    except Exception:
        pass


def run_command(command: Command) -> str:
    """Run to completion in its own process group (killed with it if this task is cancelled); returns stdout."""
    command.log.parent.mkdir(parents=True, exist_ok=True)
    with command.log.open("a", encoding="utf-8") as log:
        log.write(f"$ {' '.join(command.argv)}\n")
        log.flush()
        process = subprocess.Popen(command.argv, cwd=command.cwd, stdout=subprocess.PIPE, stderr=log, text=True,
                                   start_new_session=True, preexec_fn=_set_parent_death_signal,
                                   env={**os.environ, "PYTHONUNBUFFERED": "1"})
        try:
            stdout, _ = process.communicate()
        except BaseException:  # Ctrl-C, ray.cancel: the whole process group goes, nothing is left running
            _kill_group(process)
            raise
        log.write(stdout)
    if process.returncode:
        raise TrialFailed(_failure_line(process.returncode, command.log))
    return stdout


def _kill_group(process: subprocess.Popen) -> None:
    for sig, wait in ((signal.SIGTERM, 10), (signal.SIGKILL, 5)):
        try:
            os.killpg(process.pid, sig)
            process.wait(timeout=wait)
            return
        except (ProcessLookupError, PermissionError):
            return
        except subprocess.TimeoutExpired:
            continue


def _failure_line(returncode: int, log: Path) -> str:
    if returncode < 0:
        return f"killed by signal {-returncode} ({signal.Signals(-returncode).name})"
    lines = [line.strip() for line in log.read_text(encoding="utf-8", errors="replace").splitlines() if line.strip()]
    errors = [line for line in lines if line.startswith("dapo-nb ") or "Error" in line]
    return (errors or lines or [f"exit code {returncode}"])[-1][:500]


def _last_json(stdout: str) -> dict:
    for line in reversed(stdout.strip().splitlines()):
        if line.startswith("{"):
            return json.loads(line)
    raise TrialFailed("the command printed no JSON summary")


def _train(trial: Trial, study: dict, folder: Path, workdir: Path) -> tuple[str, float]:
    """Train the trial; returns (checkpoint path, minutes)."""
    start = time.perf_counter()
    if study["trial"] == "notebook":
        params = folder / "parameters.yaml"
        params.write_text(yaml.safe_dump({"run_name": "trial", "overrides": trial.overrides, "plot_every": 0,
                                          "eval_every": 0, "eval_at_start": False}))
        run_command(Command([sys.executable, "-m", "papermill", str(Path(workdir) / study["notebook"]),
                             str(folder / "03_training.ipynb"), "-f", str(params), "--cwd", str(workdir),
                             "--no-progress-bar"], folder / "train.log", workdir))
        from .checkpoint import latest_checkpoint, latest_trl_checkpoint

        root = folder / "checkpoints" / "trial"
        checkpoint = latest_checkpoint(root) or latest_trl_checkpoint(root)
        if checkpoint is None:
            raise TrialFailed(f"the notebook left no checkpoint under {root}")
        checkpoint = str(checkpoint)
    else:
        stdout = run_command(Command([sys.executable, "-m", "dapo_nb.cli", "train", *trial.overrides],
                                     folder / "train.log", workdir))
        checkpoint = _last_json(stdout)["checkpoint"]
        checkpoint = str(checkpoint if Path(checkpoint).is_absolute() else Path(workdir) / checkpoint)
    return checkpoint, (time.perf_counter() - start) / 60


def _evaluate(trial: Trial, model: str, folder: Path, workdir: Path) -> tuple[dict, float]:
    start = time.perf_counter()
    stdout = run_command(Command([sys.executable, "-m", "dapo_nb.cli", "eval", *trial.overrides, *trial.eval_overrides,
                                  _override("model.pretrained_model_name_or_path", model)], folder / "eval.log", workdir))
    summary = _last_json(stdout)
    out = {"eval/num_prompts": summary["num_prompts"], "eval/pass@1": summary["pass@1"],
           "eval/format@1": summary["format@1"]}
    out["eval/pass@1_ci95_low"], out["eval/pass@1_ci95_high"] = summary["pass@1_ci95"]
    for key, value in summary.items():
        if key == "reward" or key.startswith("rewards/") or re.fullmatch(r"avg@\d+", key):
            out[f"eval/{key}"] = value
    return out, (time.perf_counter() - start) / 60


def _interpolate(a: Path, b: Path, lam: float, out: Path) -> None:
    """lam * a + (1 - lam) * b for every tensor of two checkpoints of the same architecture; config files from a."""
    from safetensors.torch import load_file, save_file

    if not (a / "model.safetensors").is_file() or not (b / "model.safetensors").is_file():
        raise TrialFailed(f"soups mix full weights (model.safetensors); {a} or {b} has none (LoRA adapters: set "
                          "model.lora.merge_on_save=true, or train without LoRA)")
    first, second = load_file(a / "model.safetensors"), load_file(b / "model.safetensors")
    if first.keys() != second.keys():
        raise TrialFailed(f"soup ingredients {a} and {b} have different parameters")
    out.mkdir(parents=True, exist_ok=True)
    save_file({k: (lam * first[k].double() + (1 - lam) * second[k].double()).to(first[k].dtype) for k in first},
              out / "model.safetensors", metadata={"format": "pt"})
    for extra in a.iterdir():
        if extra.is_file() and extra.suffix in (".json", ".jinja", ".txt", ".model") and extra.name != "model.safetensors":
            shutil.copy2(extra, out / extra.name)


def _setting_columns(trial: Trial) -> dict:
    """The variation's keys as results columns; a dict or list value as JSON text (one type per column)."""
    return {k: json.dumps(v) if isinstance(v, (dict, list)) else v for k, v in trial.settings.items()}


def _disk_mb(path: Path) -> float:
    return sum(f.stat().st_size for f in path.rglob("*") if f.is_file()) / 2**20 if path.exists() else 0.0


def _steps(folder: Path) -> int:
    path = folder / "run" / "metrics.jsonl"
    steps = 0
    if path.is_file():
        for line in path.read_text(encoding="utf-8").splitlines():
            try:
                steps = max(steps, int(json.loads(line).get("step", 0)))
            except (ValueError, AttributeError):
                continue
    return steps


def _apply_retention(trial: Trial, study: dict, folder: Path, checkpoint: str | None, keep_for_soups: bool) -> str:
    """What stays of a judged trial: its logs and metrics always; weights per keep.weights; the rest goes."""
    keep = study["keep"]
    if not keep["rollouts"]:
        (folder / "run" / "rollouts.jsonl").unlink(missing_ok=True)
    if not checkpoint:
        return ""
    if keep["weights"] == "none" and not keep_for_soups:
        shutil.rmtree(folder / "checkpoints", ignore_errors=True)
        return ""
    return checkpoint


def run_trial(trial: Trial, study: dict, out_dir: str, workdir: str, keep_for_soups: bool = False) -> dict:
    """Train and judge one trial (or judge the base model, or mix and judge a soup); returns its results row.
    Raises nothing: a failure becomes a row with status `failed` and the error."""
    out_dir, workdir = Path(out_dir), Path(workdir)
    folder = trial.folder(out_dir)
    if folder.exists():  # a trial that did not finish (Ctrl-C, a crash): start it again from nothing
        shutil.rmtree(folder)
    folder.mkdir(parents=True)
    (folder / "trial.json").write_text(json.dumps(dataclasses.asdict(trial), indent=1))
    row = {"trial": trial.name, "kind": trial.kind, "variation": trial.variation, "seed": trial.seed, "status": "done",
           "error": "", "steps": 0, "minutes": 0.0, **_setting_columns(trial), "run_dir": str(folder / "run"),
           "checkpoint": "", "key": trial.key}
    checkpoint = None
    try:
        if trial.kind == "train":
            checkpoint, row["minutes"] = _train(trial, study, folder, workdir)
            row["steps"] = _steps(folder)
            judged = checkpoint
        elif trial.kind == "base":
            judged = load_config(overrides=trial.overrides).model.pretrained_model_name_or_path
        else:
            lam = trial.soup["lambda"]
            row["lambda"], row["ingredients"] = lam, f"{trial.soup['a']} {trial.soup['b']}"
            a, b = (json.loads((out_dir / "trials" / trial.soup[x] / "result.json").read_text()) for x in ("a", "b"))
            if lam in (0.0, 1.0):  # the ingredient itself: greedy evaluation of the same weights, already judged
                row.update({k: v for k, v in (a if lam == 1.0 else b).items() if k.startswith("eval/")},
                           eval_minutes=0.0)
            else:
                if not a["checkpoint"] or not b["checkpoint"]:
                    raise TrialFailed("a soup ingredient kept no weights (it failed, or keep.weights removed them)")
                judged = folder / "weights"
                _interpolate(Path(a["checkpoint"]), Path(b["checkpoint"]), lam, judged)
                metrics, row["eval_minutes"] = _evaluate(trial, str(judged), folder, workdir)
                row.update(metrics)
                shutil.rmtree(judged, ignore_errors=True)
        if trial.kind != "soup":
            metrics, row["eval_minutes"] = _evaluate(trial, judged, folder, workdir)
            row.update(metrics)
    except TrialFailed as failure:
        row.update(status="failed", error=str(failure))
    except Exception as error:  # a bug of ours, or of a file the trial read: reported, the study goes on
        row.update(status="failed", error=f"{type(error).__name__}: {error}"[:500])
    row["checkpoint"] = _apply_retention(trial, study, folder, checkpoint, keep_for_soups and row["status"] == "done")
    row["disk_mb"] = round(_disk_mb(folder), 3)
    (folder / "result.json").write_text(json.dumps(row, indent=1))
    return row


# ----------------------------------------------------------------------------
# The table


def read_results(out_dir: str | Path) -> list[dict]:
    """Every result.json under out_dir/trials (finished or failed trials), in folder order."""
    rows = []
    for path in sorted((Path(out_dir) / "trials").glob("*/result.json")):
        try:
            rows.append(json.loads(path.read_text()))
        except (OSError, json.JSONDecodeError):
            continue  # a result being written when the study was killed: that trial reruns
    return rows


def results_frame(rows: list[dict]):
    """The results table: identity columns first, then the variation's keys, the held-out metrics, the files."""
    import pandas as pd

    table = pd.DataFrame(rows)
    if table.empty:
        return table
    first = ["trial", "kind", "variation", "seed", "status", "error", "steps", "minutes", "eval_minutes"]
    evals = sorted(c for c in table.columns if c.startswith("eval/"))
    last = ["lambda", "ingredients", "run_dir", "checkpoint", "disk_mb", "key"]
    middle = [c for c in table.columns if c not in first + evals + last]
    ordered = [c for c in first + middle + evals + last if c in table.columns]
    return table[ordered].sort_values(["kind", "variation", "seed"], kind="stable").reset_index(drop=True)


def write_results(out_dir: str | Path):
    """results.csv and results.parquet from every trial's result.json; returns the table."""
    table = results_frame(read_results(out_dir))
    out_dir = Path(out_dir)
    if table.empty:
        return table
    tmp = out_dir / "results.csv.tmp"
    table.to_csv(tmp, index=False)
    tmp.replace(out_dir / "results.csv")
    flat = table.copy()
    for column in flat.columns:  # parquet needs one type per column; a variation's value may be a dict or a list
        if flat[column].map(lambda v: isinstance(v, (dict, list))).any():
            flat[column] = flat[column].map(lambda v: json.dumps(v) if isinstance(v, (dict, list)) else v)
    try:
        flat.to_parquet(out_dir / "results.parquet", index=False)
    except (ValueError, TypeError, ImportError):  # mixed value types in one column: the CSV stays the reference
        pass
    return table


# ----------------------------------------------------------------------------
# Running a study on Ray


@dataclass
class Progress:
    """Where a study stands: what the terminal line and the notebook bar show."""

    total: int
    done: int = 0
    failed: int = 0
    running: int = 0
    skipped: int = 0  # finished in an earlier run of the same study
    seconds_per_trial: float = math.nan
    seconds_left: float = math.nan
    last: str = ""  # the last event, e.g. "done v1-s0 (6.2 min)"

    def line(self) -> str:
        left = f"; ~{self.seconds_left / 60:.0f} min left" if math.isfinite(self.seconds_left) else ""
        pending = self.total - self.done - self.failed - self.running
        return (f"study: {self.done} done, {self.running} running, {self.failed} failed, {pending} pending of "
                f"{self.total}{left}" + (f" | {self.last}" if self.last else ""))


def _ray():
    try:
        import ray
    except ImportError:
        raise StudyError("studies run on Ray: pip install 'ray==2.60.0' (make install does)") from None
    return ray


def _start_ray(settings: SweepSettings) -> bool:
    """Join sweep.address / RAY_ADDRESS, or start a local cluster; True if this call started it (and stops it)."""
    ray = _ray()
    if ray.is_initialized():
        return False
    address = settings.address or os.environ.get("RAY_ADDRESS") or None
    kwargs = dict(include_dashboard=False, log_to_driver=False, configure_logging=False)
    if address is None:  # a local cluster of this machine's cores; its workers see the package as this process does
        ray.init(num_cpus=os.cpu_count(), num_gpus=_local_gpus(), **kwargs)
    else:
        ray.init(address=address, **kwargs)
    return True


def _local_gpus() -> int:
    try:
        import torch

        return torch.cuda.device_count()
    except Exception:
        return 0


def run_sweep(study: str | Path | Study, out_dir: str | Path, overrides: list[str] | tuple = (),
              progress: Callable[[Progress], None] | None = None, workdir: str | Path | None = None):
    """Run (or continue) a study: trials not finished before run on Ray, results land in out_dir/results.csv.

    Finished trials never rerun (recognised by their `key`); failed ones rerun when sweep.retry_failed. Ctrl-C stops
    the running trials (their processes too) and keeps the finished ones: the same call continues. `progress` gets a
    Progress after every event (default: a line on the terminal and a progress bar, a widget in a notebook).
    Returns the results table (pandas)."""
    study = load_study(study, overrides)
    out_dir = Path(out_dir).resolve()
    workdir = Path(workdir or os.getcwd()).resolve()
    trials = plan(study, out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / "study.yaml").write_text(yaml.safe_dump(dataclasses.asdict(study), sort_keys=False))
    finished = {row["key"]: row for row in read_results(out_dir)}
    redo = lambda t: t.key not in finished or (study.sweep.retry_failed and finished[t.key]["status"] != "done")  # noqa: E731
    order = {seed: i for i, seed in enumerate(study.seeds)}  # the base model first, then seed by seed: every
    todo = sorted((t for t in trials if redo(t)),             # variation gets its first seed early
                  key=lambda t: (t.kind != "base", t.kind == "soup", order.get(t.seed, 0)))
    state = Progress(total=len(trials), skipped=len(trials) - len(todo),
                     done=sum(1 for t in trials if not redo(t) and finished[t.key]["status"] == "done"),
                     failed=sum(1 for t in trials if not redo(t) and finished[t.key]["status"] != "done"))
    report = progress or _TerminalProgress(state.total)
    if state.skipped:
        state.last = f"{state.skipped} trials finished in an earlier run (not rerun)"
    report(state)
    if todo:
        _run_on_ray(study, trials, todo, out_dir, workdir, state, report)
    _release_ingredients(study, trials, out_dir)
    table = write_results(out_dir)
    used = _disk_mb(out_dir)
    print(f"study {out_dir}: {state.done} done, {state.failed} failed; results {out_dir / 'results.csv'}; "
          f"{used / 1024:.2f} GB on disk", flush=True)
    if hasattr(report, "close"):
        report.close()
    return table


def _run_on_ray(study: Study, trials: list[Trial], todo: list[Trial], out_dir: Path, workdir: Path, state: Progress,
                report) -> None:
    ray = _ray()
    started = _start_ray(study.sweep)
    restore_sigterm = _sigterm_as_ctrl_c()
    task = ray.remote(run_trial).options(num_cpus=study.sweep.cpus_per_trial, num_gpus=study.sweep.gpus_per_trial,
                                         max_retries=0)
    plain = json.loads(json.dumps(dataclasses.asdict(study), default=str))
    soup_ingredients = {t.soup[x] for t in trials if t.kind == "soup" for x in ("a", "b")}
    waiting = list(todo)  # soups wait for their ingredients
    in_flight: dict = {}
    durations: list[float] = []
    try:
        while waiting or in_flight:
            # submit no more than can run now, so that "running" and the time left mean what they say
            limit = min(study.sweep.max_concurrent or math.inf, _capacity(ray, study.sweep))
            ready = [t for t in waiting if t.kind != "soup" or _ingredients_done(t, out_dir)]
            for trial in ready:
                if len(in_flight) >= limit:
                    break
                waiting.remove(trial)
                ref = task.remote(trial, plain, str(out_dir), str(workdir), trial.name in soup_ingredients)
                in_flight[ref] = (trial, time.monotonic())
            state.running = len(in_flight)
            if not in_flight:  # soups whose ingredients failed: they fail too
                for trial in [t for t in waiting if t.kind == "soup"]:
                    waiting.remove(trial)
                    _record_failure(trial, out_dir, "a soup ingredient failed")
                    state.failed += 1
                continue
            done, _ = ray.wait(list(in_flight), num_returns=1, timeout=5)  # short: Ctrl-C is seen between waits
            for ref in done:
                trial, since = in_flight.pop(ref)
                try:
                    row = ray.get(ref)
                except Exception as error:  # the worker died (OOM kill, node lost): the row says so
                    row = _record_failure(trial, out_dir, f"{type(error).__name__}: {str(error).splitlines()[0][:300]}")
                minutes = (time.monotonic() - since) / 60
                durations.append(minutes * 60)
                if row["status"] == "done":
                    state.done += 1
                else:
                    state.failed += 1
                state.last = f"{row['status']} {trial.name} ({minutes:.1f} min)" + (f": {row['error']}" if row["error"] else "")
                write_results(out_dir)
            state.running = len(in_flight)
            if durations:
                state.seconds_per_trial = sum(durations) / len(durations)
                parallel = max(1, min(limit, len(waiting) + len(in_flight)))  # what runs at once from here on
                state.seconds_left = state.seconds_per_trial * (len(waiting) + len(in_flight)) / parallel
            report(state)
    except KeyboardInterrupt:
        for ref in in_flight:
            ray.cancel(ref)  # KeyboardInterrupt inside the task: it kills its subprocess group
        deadline = time.monotonic() + 20
        for ref in list(in_flight):
            try:
                ray.get(ref, timeout=max(0.1, deadline - time.monotonic()))
            except Exception:
                pass
        write_results(out_dir)
        print(f"\nstudy interrupted: {state.done} trials finished and kept; run the same command again to continue",
              flush=True)
        raise
    finally:
        restore_sigterm()
        if started:
            ray.shutdown()


def _sigterm_as_ctrl_c() -> Callable[[], None]:
    """SIGTERM (`kill`, a cluster scheduler's preemption, a study started with nohup, whose Ctrl-C is ignored) stops
    the study as Ctrl-C does: running trials cancelled, finished ones kept, exit 130; the same command continues.
    Installed after ray.init, whose own SIGTERM handler aborts the driver. Returns what restores the previous one."""
    if threading.current_thread() is not threading.main_thread():
        return lambda: None

    def interrupt(signum, frame):
        raise KeyboardInterrupt

    previous = signal.signal(signal.SIGTERM, interrupt)
    return lambda: signal.signal(signal.SIGTERM, previous)


def _release_ingredients(study: Study, trials: list[Trial], out_dir: Path) -> None:
    """Soup ingredients kept their weights for the soups; once every soup is judged, keep.weights decides again."""
    soups = [t for t in trials if t.kind == "soup"]
    if study.keep.weights != "none" or not soups or not all((t.folder(out_dir) / "result.json").is_file() for t in soups):
        return
    for name in {t.soup[x] for t in soups for x in ("a", "b")}:
        result = out_dir / "trials" / name / "result.json"
        if result.is_file():
            row = json.loads(result.read_text())
            if row.get("checkpoint"):
                shutil.rmtree(out_dir / "trials" / name / "checkpoints", ignore_errors=True)
                row["checkpoint"], row["disk_mb"] = "", round(_disk_mb(result.parent), 1)
                result.write_text(json.dumps(row, indent=1))


def _capacity(ray, settings: SweepSettings) -> int:
    """How many trials the cluster's resources hold at once (re-read: a cluster may grow)."""
    resources = ray.cluster_resources()
    slots = math.floor(resources.get("CPU", 0) / settings.cpus_per_trial + 1e-9)
    if settings.gpus_per_trial:
        slots = min(slots, math.floor(resources.get("GPU", 0) / settings.gpus_per_trial + 1e-9))
    if slots < 1:
        raise StudyError(f"the Ray cluster has {resources.get('CPU', 0):g} CPUs and {resources.get('GPU', 0):g} GPUs; a "
                         f"trial asks for sweep.cpus_per_trial={settings.cpus_per_trial:g} and sweep.gpus_per_trial="
                         f"{settings.gpus_per_trial:g}: lower them or join a larger cluster (sweep.address)")
    return slots


def _ingredients_done(trial: Trial, out_dir: Path) -> bool:
    return all((out_dir / "trials" / trial.soup[x] / "result.json").is_file() for x in ("a", "b"))


def _record_failure(trial: Trial, out_dir: Path, error: str) -> dict:
    folder = trial.folder(out_dir)
    folder.mkdir(parents=True, exist_ok=True)
    row = {"trial": trial.name, "kind": trial.kind, "variation": trial.variation, "seed": trial.seed,
           "status": "failed", "error": error, "steps": 0, "minutes": 0.0, **_setting_columns(trial),
           "run_dir": str(folder / "run"), "checkpoint": "", "key": trial.key, "disk_mb": round(_disk_mb(folder), 1)}
    (folder / "result.json").write_text(json.dumps(row, indent=1))
    return row


class _TerminalProgress:
    """A progress bar (a widget in a notebook, text in a terminal) and one line per finished trial."""

    def __init__(self, total: int):
        from tqdm.auto import tqdm

        self.bar = tqdm(total=total, desc="study", unit="trial", dynamic_ncols=True, mininterval=30)
        self.last, self.shown = "", None

    def __call__(self, state: Progress) -> None:
        shown = (state.done + state.failed, state.running, state.failed)
        if shown == self.shown:  # nothing new: tqdm redraws the elapsed time on its own schedule (a log stays short)
            return
        self.shown = shown
        self.bar.n = state.done + state.failed
        self.bar.set_postfix(running=state.running, failed=state.failed, refresh=False)
        self.bar.refresh()
        if state.last and state.last != self.last:
            self.bar.write(state.line())
            self.last = state.last

    def close(self) -> None:
        self.bar.close()
