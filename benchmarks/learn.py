"""Does training improve held-out accuracy? Issue 11's experiment in one command.

    .venv/bin/python benchmarks/learn.py                                # seeds 0 1 2, 10 minutes each, the defaults
    .venv/bin/python benchmarks/learn.py --seeds 0 --minutes 2          # a quicker look
    .venv/bin/python benchmarks/learn.py --set ppo.learning_rate=3e-5   # explore: a key for training and evaluation
    .venv/bin/python benchmarks/learn.py --dry-run                      # print the commands, run nothing
    .venv/bin/python benchmarks/learn.py --resume                       # after an interruption: keep finished seeds

Run from the repository root (it changes to it anyway). What it does, every step a `dapo-nb` command in a subprocess:

1. Evaluates the base model (`model.pretrained_model_name_or_path`) greedily (`eval.num_samples=0`) on the shipped
   test split `builtin:arithmetic/test` (the training sentence families) and on the held-out wording splits
   (data/README.md): `builtin:arithmetic/test_heldout` (sentence families training never uses),
   `builtin:arithmetic/test_rephrased` (the earlier one-style split, also held out) and
   `builtin:arithmetic/test_handwritten` (60 problems written by hand). Results are cached in
   OUT/base-<split>-<key>.json, the key a hash of every setting the evaluation depends on and of the data file, so
   reruns skip them (`--fresh-base` recomputes).
2. For each seed S: `dapo-nb train train.max_minutes=M train.seed=S train.run_name=learn-sS train.output_dir=OUT/sS
   train.checkpoint_dir=OUT/checkpoints` and no other key: the defaults are the recipe (plus any `--set key=value`).
   That seed's earlier results in OUT/sS and its checkpoints (OUT/checkpoints/learn-sS, inside OUT so that two
   folders, e.g. the ablation's arms, never share them) are replaced.
3. Evaluates the run's last checkpoint on every split and pairs it with the base model's evaluation of step 1 (same
   prompts, greedy, so the base is evaluated once, not per seed): McNemar's exact test on per-problem correctness
   (`dapo_nb.stats.paired_comparison`; `dapo-nb eval` prints `per_problem` in its JSON) gives a p-value.
4. Prints a markdown table (seed, steps, pass@1 before -> after with its 95% Wilson interval, the difference, the
   p-value, format@1 after, the same for the rephrased split, the mean policy entropy over the last 3 steps, and
   training minutes), then the mean +- sd over seeds of the differences, then a line per further split (heldout,
   handwritten) with each seed's pass@1 before -> after, its 95% Wilson interval, the difference and McNemar's p.
   Writes it to OUT/table.md and everything measured to OUT/summary.json; each command's output goes to a log in
   OUT (or OUT/sS), which an error names.

OUT is benchmarks/results/learn (git-ignored) unless --out says otherwise.
"""

from __future__ import annotations

import argparse
import dataclasses
import hashlib
import json
import math
import os
import shlex
import shutil
import statistics
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # dapo_nb from this checkout, also without an installed package

from dapo_nb.config import ConfigError, load_config, to_dict  # noqa: E402
from dapo_nb.data_files import resolve as resolve_builtin  # noqa: E402
from dapo_nb import runs  # noqa: E402
from dapo_nb.runs import checkpoint_root  # noqa: E402
from dapo_nb.stats import paired_comparison  # noqa: E402

SPLITS = {"test": "builtin:arithmetic/test", "rephrased": "builtin:arithmetic/test_rephrased",
          "heldout": "builtin:arithmetic/test_heldout", "handwritten": "builtin:arithmetic/test_handwritten"}
TABLE_SPLITS = ("test", "rephrased")  # the table's own columns; every other split gets a line under it
EVAL_KEYS = ["eval.num_samples=0"]  # greedy pass@1 / format@1 only
ENTROPY_STEPS = 3  # "entropy at the end": the mean over this many last steps
START = time.monotonic()


class LearnError(Exception):
    """A step of the experiment failed; the message is one line that names what to look at."""


# ----------------------------------------------------------------------------
# Results


@dataclass
class Score:
    """One model's greedy evaluation on one split."""

    model: str
    data: str
    num_prompts: int
    pass1: float
    pass1_ci95: tuple[float, float]
    format1: float
    seconds: float
    per_problem: dict[str, bool]  # qid -> greedy completion correct, for the paired test

    @classmethod
    def from_summary(cls, summary: dict) -> Score:
        """From the JSON summary `dapo-nb eval` prints for one model."""
        return cls(model=str(summary["model"]), data=str(summary["data"]), num_prompts=int(summary["num_prompts"]),
                   pass1=float(summary["pass@1"]), pass1_ci95=tuple(summary["pass@1_ci95"]),
                   format1=float(summary["format@1"]), seconds=float(summary.get("seconds", math.nan)),
                   per_problem=dict(summary["per_problem"]))


@dataclass
class Paired:
    """A checkpoint against the base model on the same prompts, paired by problem (McNemar's exact test)."""

    before: Score
    after: Score
    diff: float  # after - before, pass@1
    p_value: float  # McNemar's exact test
    only_after: int  # problems only the checkpoint gets right (McNemar's b)
    only_before: int  # problems only the base model gets right (c)

    @classmethod
    def of(cls, before: Score, after: Score) -> Paired:
        test = paired_comparison(after.per_problem, before.per_problem)
        return cls(before=before, after=after, diff=after.pass1 - before.pass1, p_value=float(test["p_value"]),
                   only_after=int(test["b"]), only_before=int(test["c"]))


@dataclass
class Training:
    """What one training run did, read from its metrics.jsonl and the command's own summary."""

    steps: int
    updated_steps: int  # steps that updated the policy (dynamic sampling can leave a step nothing to learn from)
    checkpoint: str
    entropy_end: float | None  # mean `entropy` of the last ENTROPY_STEPS steps that updated; None: none did
    step_minutes: float  # sum of step_time: the minutes the steps took
    wall_minutes: float  # the whole `dapo-nb train` command: model loading, steps, held-out evals, final checkpoint


@dataclass
class SeedResult:
    seed: int
    training: Training
    splits: dict[str, Paired]


# ----------------------------------------------------------------------------
# Running dapo-nb


def log(message: str) -> None:
    """A progress line stamped with the minutes since the start."""
    minutes, seconds = divmod(int(time.monotonic() - START), 60)
    print(f"[{minutes:3d}:{seconds:02d}] {message}", flush=True)


def command_line(args: list[str]) -> list[str]:
    return [sys.executable, "-m", "dapo_nb.cli", *args]


def run_dapo_nb(args: list[str], log_path: Path, what: str) -> dict:
    """Run `dapo-nb ARGS` with all its output in `log_path`; returns the JSON summary it prints last."""
    log_path.parent.mkdir(parents=True, exist_ok=True)
    with open(log_path, "w") as handle:
        handle.write("$ " + " ".join(command_line(args)) + "\n")
        handle.flush()
        code = subprocess.run(command_line(args), stdout=handle, stderr=subprocess.STDOUT).returncode
    lines = [line.strip() for line in log_path.read_text(errors="replace").replace("\r", "\n").splitlines()]
    lines = [line for line in lines if line]
    if code != 0:
        last = lines[-1] if lines else "no output"
        raise LearnError(f"{what} failed (exit {code}): {last} (log: {log_path})")
    for line in reversed(lines):
        if line.startswith("{"):
            try:
                return json.loads(line)
            except json.JSONDecodeError:
                continue
    raise LearnError(f"{what} printed no JSON summary (log: {log_path})")


# ----------------------------------------------------------------------------
# The steps


def eval_settings(overrides: list[str], split: str) -> dict:
    """Everything a greedy evaluation of the base model on `split` depends on, for the cache key."""
    cfg = load_config(None, [*EVAL_KEYS, *overrides, f"data.test_path={SPLITS[split]}"])
    settings = {k: v for k, v in to_dict(cfg).items() if k in ("model", "data", "sampling", "reward", "eval")}
    settings["eval"].pop("compare_to", None)
    for training_only in ("train_path", "train_where"):
        settings["data"].pop(training_only, None)
    path = Path(resolve_builtin(cfg.data.test_path))
    if path.is_file():
        settings["data_sha256"] = hashlib.sha256(path.read_bytes()).hexdigest()
    return settings


def base_score(split: str, overrides: list[str], out: Path, fresh: bool) -> Score:
    """The base model on one split, from the cache in `out` when the settings match."""
    settings = eval_settings(overrides, split)
    key = hashlib.sha256(json.dumps(settings, sort_keys=True, default=str).encode()).hexdigest()[:12]
    cache = out / f"base-{split}-{key}.json"
    if cache.is_file() and not fresh and "per_problem" in json.loads(cache.read_text())["summary"]:
        log(f"base model on {SPLITS[split]}: cached in {cache}")
        return Score.from_summary(json.loads(cache.read_text())["summary"])
    log(f"base model on {SPLITS[split]}: evaluating (log {out / f'base-{split}.log'})")
    summary = run_dapo_nb(["eval", *EVAL_KEYS, *overrides, f"data.test_path={SPLITS[split]}"],
                          out / f"base-{split}.log", f"evaluating the base model on {SPLITS[split]}")
    cache.write_text(json.dumps({"settings": settings, "summary": summary}, indent=1, default=str) + "\n")
    return Score.from_summary(summary)


def train_args(seed: int, minutes: float, out: Path, overrides: list[str]) -> list[str]:
    # checkpoints inside OUT: two learn.py folders (the ablation's arms) never replace each other's checkpoints
    return ["train", f"train.max_minutes={minutes:g}", f"train.seed={seed}", f"train.run_name=learn-s{seed}",
            f"train.output_dir={out / f's{seed}'}", f"train.checkpoint_dir={out / 'checkpoints'}", *overrides]


def read_metrics(path: Path) -> list[dict]:
    """The training steps' lines of a metrics.jsonl (not the eval-only step-0 line; a torn last line skipped)."""
    if not path.is_file():
        raise LearnError(f"training wrote no {path}")
    try:
        return [row for row in runs.read_metrics(path) if "step_time" in row]
    except ValueError as error:
        raise LearnError(str(error)) from None


def finished_training(seed: int, out: Path, overrides: list[str], minutes: float) -> Training | None:
    """With --resume: the seed's finished run (OUT/sS/training.json, written after training, with the same command),
    if its checkpoint is still there; else None."""
    done = out / f"s{seed}" / "training.json"
    if not done.is_file():
        return None
    saved = json.loads(done.read_text())
    if saved.get("command") != train_args(seed, minutes, out, overrides):
        log(f"seed {seed}: {done} was trained with another command; training again")
        return None
    training = Training(**saved["training"])
    return training if Path(training.checkpoint).is_dir() else None


def train(seed: int, minutes: float, out: Path, overrides: list[str]) -> Training:
    """One training run, replacing that seed's earlier results and checkpoints; OUT/sS/training.json marks it done."""
    args = train_args(seed, minutes, out, overrides)
    run_dir = out / f"s{seed}"
    checkpoints = checkpoint_root(load_config(None, args[1:]))
    for old in (run_dir, checkpoints):
        if old.exists():
            shutil.rmtree(old)
    log(f"seed {seed}: training for up to {minutes:g} min (log {run_dir / 'train.log'})")
    t0 = time.monotonic()
    summary = run_dapo_nb(args, run_dir / "train.log", f"training seed {seed}")
    wall = (time.monotonic() - t0) / 60
    rows = read_metrics(run_dir / "metrics.jsonl")
    entropies = [r["entropy"] for r in rows if isinstance(r.get("entropy"), (int, float)) and math.isfinite(r["entropy"])]
    checkpoint = summary.get("checkpoint")
    if not checkpoint or not Path(checkpoint).is_dir():
        raise LearnError(f"training seed {seed} left no checkpoint ({checkpoint!r}; log: {run_dir / 'train.log'})")
    tail = entropies[-ENTROPY_STEPS:]
    training = Training(steps=max((int(r["step"]) for r in rows), default=0),
                        updated_steps=sum(int(r.get("optimizer_updates") or 0) > 0 for r in rows),
                        checkpoint=str(checkpoint), entropy_end=statistics.fmean(tail) if tail else None,
                        step_minutes=sum(float(r["step_time"]) for r in rows) / 60, wall_minutes=wall)
    (run_dir / "training.json").write_text(json.dumps({"command": args, "training": dataclasses.asdict(training)}) + "\n")
    return training


def evaluate_checkpoint(seed: int, training: Training, base: dict[str, Score], out: Path,
                        overrides: list[str], resume: bool) -> dict[str, Paired]:
    """The checkpoint on each split, paired with the base model's evaluation on the same problems (with `resume`, an
    evaluation of this checkpoint already in OUT/sS/eval-<split>.json is read instead of rerun)."""
    results = {}
    for split, data in SPLITS.items():
        saved = out / f"s{seed}" / f"eval-{split}.json"
        if resume and saved.is_file():
            summary = json.loads(saved.read_text())
            if summary.get("model") == training.checkpoint and "per_problem" in summary:
                log(f"seed {seed}: {data} evaluation read from {saved}")
                results[split] = Paired.of(base[split], Score.from_summary(summary))
                continue
        log_path = out / f"s{seed}" / f"eval-{split}.log"
        log(f"seed {seed}: evaluating {training.checkpoint} on {data} (log {log_path})")
        summary = run_dapo_nb(["eval", *EVAL_KEYS, *overrides, f"data.test_path={data}",
                               f"model.pretrained_model_name_or_path={training.checkpoint}"],
                              log_path, f"evaluating seed {seed}'s checkpoint on {data}")
        (out / f"s{seed}" / f"eval-{split}.json").write_text(json.dumps(summary, indent=1) + "\n")
        results[split] = Paired.of(base[split], Score.from_summary(summary))
    return results


# ----------------------------------------------------------------------------
# The table


def pct(x: float) -> str:
    return f"{100 * x:.1f}%"


def points(x: float) -> str:
    return f"{100 * x:+.1f}"


def mean_sd(values: list[float]) -> str:
    """'mean +- sd' in points (sample sd; 'n/a' with one value)."""
    if not values:
        return "n/a"
    sd = f"{100 * statistics.stdev(values):.1f}" if len(values) > 1 else "n/a"
    return f"{points(statistics.fmean(values))} +- {sd} points"


def table(results: list[SeedResult], base: dict[str, Score], target: float) -> str:
    """The markdown table and the summary lines under it."""
    lines = [
        f"Base model: test pass@1 {pct(base['test'].pass1)}, format@1 {pct(base['test'].format1)}; "
        f"rephrased pass@1 {pct(base['rephrased'].pass1)} (greedy, n={base['test'].num_prompts} / "
        f"{base['rephrased'].num_prompts}).",
        "",
        "| seed | steps (updated) | test pass@1 before -> after [95% CI] | diff | McNemar p | format@1 after | rephrased pass@1 "
        "before -> after (diff, p) | entropy, last 3 steps | train min (steps / wall) |",
        "|---:|---:|---|---:|---:|---:|---|---:|---:|",
    ]
    for r in results:
        t, p = r.splits["test"], r.splits["rephrased"]
        entropy = "n/a" if r.training.entropy_end is None else f"{r.training.entropy_end:.3f}"
        lo, hi = t.after.pass1_ci95
        lines.append(
            f"| {r.seed} | {r.training.steps} ({r.training.updated_steps}) | {pct(t.before.pass1)} -> {pct(t.after.pass1)} [{pct(lo)}, {pct(hi)}] | "
            f"{points(t.diff)} | {t.p_value:.3g} | {pct(t.after.format1)} | {pct(p.before.pass1)} -> {pct(p.after.pass1)} "
            f"({points(p.diff)}, p={p.p_value:.3g}) | {entropy} | "
            f"{r.training.step_minutes:.1f} / {r.training.wall_minutes:.1f} |")
    test_diffs = [r.splits["test"].diff for r in results]
    lines += [
        "",
        f"test pass@1 diff over {len(results)} seed(s): {mean_sd(test_diffs)}; "
        f"rephrased: {mean_sd([r.splits['rephrased'].diff for r in results])}.",
        f"Seeds whose test pass@1 rose by >= {target:g} points: {sum(100 * d >= target - 1e-9 for d in test_diffs)}"
        f"/{len(results)}; seeds whose rephrased pass@1 fell significantly (p < 0.05): "
        f"{sum(r.splits['rephrased'].diff < 0 and r.splits['rephrased'].p_value < 0.05 for r in results)}/{len(results)}.",
    ]
    for split in SPLITS:
        if split in TABLE_SPLITS or split not in base:
            continue
        seeds = [f"seed {r.seed} {pct(r.splits[split].before.pass1)} -> {pct(r.splits[split].after.pass1)} "
                 f"[{pct(r.splits[split].after.pass1_ci95[0])}, {pct(r.splits[split].after.pass1_ci95[1])}] "
                 f"({points(r.splits[split].diff)}, p={r.splits[split].p_value:.3g})" for r in results if split in r.splits]
        lines.append(f"{split} ({SPLITS[split]}, n={base[split].num_prompts}): " + "; ".join(seeds)
                     + f"; diff {mean_sd([r.splits[split].diff for r in results if split in r.splits])}.")
    return "\n".join(lines)


# ----------------------------------------------------------------------------
# Command line


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="benchmarks/learn.py", description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter,
                                     epilog="\n\n".join(__doc__.split("\n\n")[1:]))
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2], help="training seeds (default 0 1 2)")
    parser.add_argument("--minutes", type=float, default=10.0, help="train.max_minutes of each run (default 10)")
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                        help="a dapo-nb key for training and evaluation alike (repeatable), e.g. --set ppo.learning_rate=3e-5")
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results/learn"), help="results folder (relative to the repository root)")
    parser.add_argument("--target", type=float, default=10.0, help="the gain in test pass@1 points to count seeds against (default 10)")
    parser.add_argument("--fresh-base", action="store_true", help="re-evaluate the base model even when cached")
    parser.add_argument("--resume", action="store_true",
                        help="keep the seeds already trained (and evaluated) in OUT by the same command; run the rest")
    parser.add_argument("--dry-run", action="store_true", help="print the dapo-nb commands and exit")
    args = parser.parse_args(argv)
    if args.minutes <= 0:
        parser.error(f"--minutes must be > 0, got {args.minutes:g}")
    if len(set(args.seeds)) != len(args.seeds):
        parser.error(f"--seeds must not repeat, got {args.seeds}")
    bad = [o for o in args.overrides if "=" not in o]
    if bad:
        parser.error(f"--set needs key=value, got {bad[0]!r}")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    os.chdir(ROOT)  # relative paths (--out, the runs' folders and checkpoints, --set values) mean the repository's
    out = args.out
    try:
        # every key is checked before minutes are spent; the base model is what the checkpoints are compared to
        base_model = load_config(None, [*EVAL_KEYS, *args.overrides]).model.pretrained_model_name_or_path
        for seed in args.seeds:
            load_config(None, train_args(seed, args.minutes, out, args.overrides)[1:])
    except ConfigError as error:
        print(f"learn.py: {error}", file=sys.stderr)
        return 2
    if args.dry_run:  # what runs, as `dapo-nb` commands (learn.py runs them as `python -m dapo_nb.cli`)
        show = lambda words: print("dapo-nb " + shlex.join(words))  # noqa: E731
        for data in SPLITS.values():
            show(["eval", *EVAL_KEYS, *args.overrides, f"data.test_path={data}"])
        for seed in args.seeds:
            show(train_args(seed, args.minutes, out, args.overrides))
            for data in SPLITS.values():
                show(["eval", *EVAL_KEYS, *args.overrides, f"data.test_path={data}",
                      "model.pretrained_model_name_or_path=CHECKPOINT"])
        return 0
    out.mkdir(parents=True, exist_ok=True)
    for stale in ("table.md", "summary.json"):  # an earlier run's, which a failure below would leave looking current
        (out / stale).unlink(missing_ok=True)
    try:
        base = {split: base_score(split, args.overrides, out, args.fresh_base) for split in SPLITS}
        for split, score in base.items():
            log(f"base model on {SPLITS[split]}: pass@1 {pct(score.pass1)}, format@1 {pct(score.format1)}")
        results = []
        for seed in args.seeds:
            training = args.resume and finished_training(seed, out, args.overrides, args.minutes)
            if training:
                log(f"seed {seed}: already trained, {training.steps} steps, checkpoint {training.checkpoint}")
            else:
                training = train(seed, args.minutes, out, args.overrides)
                log(f"seed {seed}: {training.steps} steps in {training.wall_minutes:.1f} min, checkpoint {training.checkpoint}")
            splits = evaluate_checkpoint(seed, training, base, out, args.overrides, args.resume)
            for split, paired in splits.items():
                log(f"seed {seed}: {SPLITS[split]} pass@1 {pct(paired.before.pass1)} -> {pct(paired.after.pass1)} "
                    f"(McNemar p={paired.p_value:.3g})")
            results.append(SeedResult(seed, training, splits))
    except LearnError as error:
        print(f"learn.py: {error}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("learn.py: interrupted", file=sys.stderr)
        return 130
    text = table(results, base, args.target)
    print("\n" + text)
    (out / "table.md").write_text(text + "\n")
    summary = {"command": sys.argv, "seeds": args.seeds, "minutes": args.minutes, "overrides": args.overrides,
               "base_model": base_model, "base": {k: dataclasses.asdict(v) for k, v in base.items()},
               "results": [dataclasses.asdict(r) for r in results],
               "test_diff_mean": statistics.fmean(r.splits["test"].diff for r in results),
               "test_diff_sd": statistics.stdev([r.splits["test"].diff for r in results]) if len(results) > 1 else None}
    (out / "summary.json").write_text(json.dumps(summary, indent=1) + "\n")
    print(f"\nwrote {out / 'table.md'} and {out / 'summary.json'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
