"""The DAPO ablation, small scale (issue 11, item 4): arms of benchmarks/learn.py side by side, a table and a figure.

    # the arms, each a learn.py run (seeds 0 1 2, train.max_minutes=10, the same held-out evaluation):
    .venv/bin/python benchmarks/learn.py --out benchmarks/results/learn     # the recipe: dynamic sampling on, eps_high 0.28
    .venv/bin/python benchmarks/learn.py --out benchmarks/results/ablation-no-ds --set dapo.dynamic_sampling=false
    .venv/bin/python benchmarks/learn.py --out benchmarks/results/ablation-eps02 --set dapo.eps_high=0.2
    # the comparison (reads those folders, trains nothing; the first --arm is the reference):
    .venv/bin/python benchmarks/ablation.py --arm recipe=benchmarks/results/learn \\
        --arm no-dynamic-sampling=benchmarks/results/ablation-no-ds --arm eps-high-0.2=benchmarks/results/ablation-eps02 \\
        --png docs/ablation.png --md benchmarks/results/ablation.md
    .venv/bin/python benchmarks/ablation.py ... --x minutes     # curves against training minutes instead of steps

Each `--arm NAME=FOLDER` is a finished learn.py `--out` folder: FOLDER/summary.json (per seed: steps, entropy at the
end, per split "test" / "rephrased" the base model's and the checkpoint's greedy pass@1, their difference and
McNemar's p) and FOLDER/s<seed>/metrics.jsonl (one line per training step). Relative paths mean the repository's.

What it prints (and writes to `--md`): a line per arm (folder, --set keys, minutes, generation batches per step,
the base model's test pass@1), then a markdown table, one row per arm: seeds (an arm with fewer seeds than the
others says so); training steps done (mean; those that updated the policy); held-out test pass@1 after training,
mean +- sd over seeds; its difference from the base model in points, mean +- sd; seeds whose own gain is significant
(McNemar p < 0.05, paired by problem); the same difference on each other split the summaries have (rephrased;
heldout and handwritten, the wording training never sees, in learn.py runs since they exist); policy entropy at the end (mean
of the last 3 steps, learn.py's figure), mean +- sd; training-rollout correctness (`rewards/correctness/mean`, over
every completion sampled in a step, dynamic sampling's dropped groups included) over the last 3 steps, mean over
seeds. Under it, per arm other than the reference: the difference of mean test pass@1 (and of entropy) from the
reference, with Welch's t (no p-value: it is compared with the two-sided 5% critical value of t at the Welch
degrees of freedom rounded down, a conservative reading) and the smallest difference these seeds could have
detected. With 3 seeds per arm only large effects can show; a non-significant difference is not evidence of none.

The figure (`--png`, default docs/ablation.png; `--no-png` for none), 2 x 2 panels against training step (or
minutes, `--x minutes`: cumulative `step_time`, the axis on which the arms had equal budgets): policy entropy,
training correctness, mean completion length (thin lines per seed, a thick line the arm's mean where every seed of
the arm has data), and held-out test pass@1 before -> after per arm (a point per seed, the mean as a bar).

Exit status 0; 1 when an arm's files are missing or malformed (one line naming the file); 2 for bad arguments.
"""

from __future__ import annotations

import argparse
import json
import math
import statistics
import sys
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # dapo_nb from this checkout

from dapo_nb.runs import read_metrics as read_metrics_lines  # noqa: E402
TAIL_STEPS = 3  # "at the end": the mean over this many last steps
# learn.py's splits besides test, each a column of differences when a summary has it (summaries from before the
# held-out wording splits have only rephrased); heldout and handwritten are the independent checks of transfer
OTHER_SPLITS = ("rephrased", "heldout", "handwritten")
CURVES = [("entropy", "policy entropy"), ("rewards/correctness/mean", "training correctness (rollouts)"),
          ("completions/mean_length", "mean completion length (tokens)")]
# two-sided 5% critical values of Student's t by degrees of freedom; a df between two keys takes the smaller key's
# (larger) value, which errs towards "not significant"
T_CRIT_05 = {1: 12.706, 2: 4.303, 3: 3.182, 4: 2.776, 5: 2.571, 6: 2.447, 7: 2.365, 8: 2.306, 9: 2.262,
             10: 2.228, 12: 2.179, 15: 2.131, 20: 2.086, 30: 2.042, 60: 2.000, 120: 1.980}


class AblationError(Exception):
    """An arm's files are missing or not what learn.py writes; the message is one line naming the file."""


@dataclass
class SeedRun:
    seed: int
    steps: int
    updated_steps: int | None
    step_minutes: float | None
    entropy_end: float | None
    test_before: float
    test_after: float
    test_diff: float
    test_p: float
    split_diffs: dict[str, float]  # the other splits' pass@1 after - before, in points/100 (rephrased, heldout, ...)
    rows: list[dict] = field(repr=False)  # metrics.jsonl's training-step lines

    def tail(self, column: str) -> float | None:
        """The mean of `column` over the last TAIL_STEPS steps that have a finite value; None when none has."""
        values = [v for _, v in series(self.rows, column)][-TAIL_STEPS:]
        return statistics.fmean(values) if values else None


@dataclass
class Arm:
    name: str
    folder: Path
    summary: dict = field(repr=False)
    runs: list[SeedRun] = field(repr=False)

    def values(self, attribute: str) -> list[float]:
        return [float(v) for v in (getattr(r, attribute) for r in self.runs) if finite(v)]

    def split_diffs(self, split: str) -> list[float]:
        return [r.split_diffs[split] for r in self.runs if finite(r.split_diffs.get(split))]


# ----------------------------------------------------------------------------
# Reading


def finite(value) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def series(rows: list[dict], column: str) -> list[tuple[int, float]]:
    """(row index, value) of the rows with a finite `column`."""
    return [(i, float(r[column])) for i, r in enumerate(rows) if finite(r.get(column))]


def read_metrics(path: Path, name: str) -> list[dict]:
    """The training steps' lines of a metrics.jsonl (not the eval-only step-0 line; a torn line skipped)."""
    if not path.is_file():
        raise AblationError(f"arm {name!r}: no {path} (learn.py writes it for every seed in summary.json)")
    try:
        rows = [row for row in read_metrics_lines(path) if "step_time" in row and finite(row.get("step"))]
    except ValueError as error:
        raise AblationError(f"arm {name!r}: {error}") from None
    return sorted(rows, key=lambda r: r["step"])


def load_arm(name: str, folder: Path) -> Arm:
    if not folder.is_dir():
        raise AblationError(f"arm {name!r}: no folder {folder}")
    path = folder / "summary.json"
    if not path.is_file():
        raise AblationError(f"arm {name!r}: no {path} (run `benchmarks/learn.py --out {folder}` to the end first)")
    try:
        summary = json.loads(path.read_text())
    except json.JSONDecodeError as error:
        raise AblationError(f"arm {name!r}: {path} is not JSON ({error})") from None
    results = summary.get("results") if isinstance(summary, dict) else None
    if not isinstance(results, list) or not results:
        raise AblationError(f"arm {name!r}: {path} has no seed results (not learn.py's summary.json?)")
    runs = []
    for result in results:
        try:
            seed, training = int(result["seed"]), result["training"]
            test = result["splits"]["test"]
            others = {split: float(result["splits"][split]["diff"]) for split in OTHER_SPLITS
                      if split in result["splits"]}
            if "rephrased" not in others:
                raise KeyError("splits.rephrased")
            entropy = training.get("entropy_end")
            run = SeedRun(seed=seed, steps=int(training["steps"]), updated_steps=training.get("updated_steps"),
                          step_minutes=training.get("step_minutes"), entropy_end=entropy if finite(entropy) else None,
                          test_before=float(test["before"]["pass1"]), test_after=float(test["after"]["pass1"]),
                          test_diff=float(test["diff"]), test_p=float(test["p_value"]),
                          split_diffs=others, rows=[])
        except KeyError as error:
            raise AblationError(f"arm {name!r}: {path}: a seed result without {error} (not learn.py's summary.json?)") from None
        except (TypeError, ValueError, AttributeError) as error:
            raise AblationError(f"arm {name!r}: {path}: a malformed seed result ({error})") from None
        run.rows = read_metrics(folder / f"s{seed}" / "metrics.jsonl", name)
        runs.append(run)
    seeds = [r.seed for r in runs]
    if len(set(seeds)) != len(seeds):
        raise AblationError(f"arm {name!r}: {path} lists a seed twice: {seeds}")
    return Arm(name, folder, summary, runs)


# ----------------------------------------------------------------------------
# Statistics


def mean(values: list[float]) -> float:
    return statistics.fmean(values) if values else math.nan


def sd(values: list[float]) -> float:
    return statistics.stdev(values) if len(values) > 1 else math.nan


def t_critical(df: float) -> float:
    """Two-sided 5% critical value of t at `df` degrees of freedom, rounded down to a tabulated df."""
    keys = [k for k in T_CRIT_05 if k <= df]
    return T_CRIT_05[max(keys)] if keys else math.inf


def welch(a: list[float], b: list[float]) -> dict | None:
    """Welch's t of mean(a) - mean(b): t, df, the critical value, the smallest detectable difference; None when
    either side has under 2 values or both have no spread."""
    if len(a) < 2 or len(b) < 2:
        return None
    va, vb = sd(a) ** 2 / len(a), sd(b) ** 2 / len(b)
    se = math.sqrt(va + vb)
    if se == 0:
        return None
    df = (va + vb) ** 2 / (va ** 2 / (len(a) - 1) + vb ** 2 / (len(b) - 1))
    crit = t_critical(df)
    return {"diff": mean(a) - mean(b), "se": se, "t": (mean(a) - mean(b)) / se, "df": df, "critical": crit,
            "detectable": crit * se}


# ----------------------------------------------------------------------------
# The table


def num(x: float, scale: float = 100, digits: int = 1, sign: bool = False) -> str:
    if not math.isfinite(x):
        return "n/a"
    return f"{scale * x:{'+' if sign else ''}.{digits}f}"


def pm(values: list[float], scale: float = 100, digits: int = 1, sign: bool = False) -> str:
    """'mean +- sd' (sample sd; the mean alone with one value; 'n/a' with none)."""
    if not values:
        return "n/a"
    if len(values) == 1:
        return f"{num(values[0], scale, digits, sign)} (1 seed)"
    return f"{num(mean(values), scale, digits, sign)} +- {num(sd(values), scale, digits)}"


def arm_line(arm: Arm) -> str:
    s = arm.summary
    overrides = " ".join(f"--set {o}" for o in s.get("overrides") or []) or "no --set (the recipe)"
    minutes = s.get("minutes")
    batches = [v for r in arm.runs for _, v in series(r.rows, "dynamic/num_gen_batches")]
    base = (s.get("base") or {}).get("test") or {}
    parts = [f"{arm.folder}", overrides,
             f"train.max_minutes={minutes:g}" if finite(minutes) else "minutes not recorded"]
    step_minutes = arm.values("step_minutes")
    if step_minutes:
        parts.append(f"{mean(step_minutes):.1f} min of steps per seed")
    if batches:
        parts.append(f"{mean(batches):.2f} generation batches per step")
    if finite(base.get("pass1")):
        parts.append(f"base model test pass@1 {num(base['pass1'])}% (n={base.get('num_prompts', '?')})")
    return f"- **{arm.name}**: " + "; ".join(parts)


def seeds_cell(arm: Arm, most: int) -> str:
    cell = f"{len(arm.runs)} ({', '.join(str(r.seed) for r in arm.runs)})"
    return cell + (f": fewer than {most}" if len(arm.runs) < most else "")


def table(arms: list[Arm]) -> str:
    most = max(len(a.runs) for a in arms)
    splits = [split for split in OTHER_SPLITS if any(arm.split_diffs(split) for arm in arms)]
    lines = [
        "| arm | seeds | steps done, mean (updated) | test pass@1 after, % (mean +- sd) | diff vs base, points "
        "(mean +- sd) | seeds with a significant gain (McNemar p < 0.05) | "
        + "".join(f"{split} diff, points (mean +- sd) | " for split in splits)
        + f"entropy at the end (mean +- sd) | training correctness, last {TAIL_STEPS} steps (mean) |",
        "|---|---|---:|---:|---:|---:|" + "---:|" * len(splits) + "---:|---:|",
    ]
    for arm in arms:
        updated = arm.values("updated_steps")
        steps = f"{mean(arm.values('steps')):.1f}" + (f" ({mean(updated):.1f})" if updated else "")
        gains = sum(r.test_diff > 0 and r.test_p < 0.05 for r in arm.runs)
        correctness = [c for c in (r.tail("rewards/correctness/mean") for r in arm.runs) if c is not None]
        lines.append(
            f"| {arm.name} | {seeds_cell(arm, most)} | {steps} | {pm(arm.values('test_after'))} | "
            f"{pm(arm.values('test_diff'), sign=True)} | {gains}/{len(arm.runs)} | "
            + "".join(f"{pm(arm.split_diffs(split), sign=True)} | " for split in splits)
            + f"{pm(arm.values('entropy_end'), scale=1, digits=3)} | {num(mean(correctness), scale=1, digits=3)} |")
    return "\n".join(lines)


def verdict(test: dict) -> str:
    """A Welch test's reading at 5%: |t| against the two-sided critical value."""
    return "significant at 5%" if abs(test["t"]) > test["critical"] else "not significant at 5%"


def welch_note(a: list[float], b: list[float], before: str, after: str) -> str:
    """Welch's t of a against b with its verdict at 5%, between `before` and `after`; "" without a t."""
    test = welch(a, b)
    if test is None:
        return ""
    return f"{before}Welch t = {test['t']:.2f} on {test['df']:.1f} df, {verdict(test)}{after}"


def comparison(arm: Arm, ref: Arm) -> str:
    a, b = arm.values("test_after"), ref.values("test_after")
    text = (f"- **{arm.name}** vs **{ref.name}**: mean test pass@1 after {num(mean(a))}% vs {num(mean(b))}% "
            f"({len(a)} vs {len(b)} seeds): {num(mean(a) - mean(b), sign=True)} points")
    test = welch(a, b)
    if test is None:
        text += " (no t: an arm has fewer than 2 seeds or no spread)"
    else:
        text += (f"; Welch t = {test['t']:.2f} on {test['df']:.1f} df, |t| > {test['critical']:.2f} needed: {verdict(test)} "
                 f"(these seeds could detect only a difference beyond about {num(test['detectable'])} points)")
    for split in ("heldout", "handwritten"):  # the independent checks of transfer, where both arms have them
        da, db = arm.split_diffs(split), ref.split_diffs(split)
        if da and db:
            text += f". {split} gain {num(mean(da), sign=True)} vs {num(mean(db), sign=True)} points" + welch_note(da, db, " (", ")")
    ea, eb = arm.values("entropy_end"), ref.values("entropy_end")
    if ea and eb:
        text += f". Entropy at the end {mean(ea):.3f} vs {mean(eb):.3f} ({mean(ea) - mean(eb):+.3f})" + welch_note(ea, eb, ", ", "")
    return text + "."


def notes(arms: list[Arm]) -> list[str]:
    """Where the arms were not run alike: another base model, held-out evaluation or time budget than the reference."""
    ref, out = arms[0], []
    for arm in arms[1:]:
        for what, get in [("base model", lambda s: s.get("base_model")),
                          ("train.max_minutes", lambda s: s.get("minutes")),
                          ("held-out test set", lambda s: ((s.get("base") or {}).get("test") or {}).get("data")),
                          ("base model's test pass@1", lambda s: ((s.get("base") or {}).get("test") or {}).get("pass1")),
                          ("base model's rephrased pass@1",
                           lambda s: ((s.get("base") or {}).get("rephrased") or {}).get("pass1"))]:
            mine, theirs = get(arm.summary), get(ref.summary)
            if mine != theirs:
                out.append(f"note: arm {arm.name!r} differs from the reference in its {what}: {mine!r} vs {theirs!r}")
    return out


def report(arms: list[Arm]) -> str:
    ref = arms[0]
    lines = ["Arms (the first is the reference):", *[arm_line(a) for a in arms], "", table(arms)]
    if len(arms) > 1:
        lines += ["", f"Against the reference ({ref.name}):", *[comparison(a, ref) for a in arms[1:]]]
        lines += ["", "Seeds are few: a t-test on 3 seeds per arm can only show differences several times the seed "
                      "spread, and a non-significant difference is not evidence that the arms are alike. Each seed's "
                      "own before -> after test (McNemar, paired by problem) is the stronger check; see its column."]
    extra = notes(arms)
    if extra:
        lines += ["", *extra]
    return "\n".join(lines)


# ----------------------------------------------------------------------------
# The figure


def xs_of(rows: list[dict], x: str) -> list[float]:
    """The x of each row: its step, or the minutes of steps up to and including it."""
    if x == "step":
        return [float(r["step"]) for r in rows]
    total, out = 0.0, []
    for r in rows:
        total += float(r["step_time"]) if finite(r.get("step_time")) else 0.0
        out.append(total / 60)
    return out


def draw(arms: list[Arm], path: Path, x: str) -> None:
    import numpy as np
    from matplotlib.figure import Figure  # the Agg canvas; no pyplot, no display
    from matplotlib.ticker import MaxNLocator

    fig = Figure(figsize=(12, 8.5), layout="constrained")
    axes = fig.subplots(2, 2).flatten()
    colors = [f"C{i % 10}" for i in range(len(arms))]
    for ax, (column, title) in zip(axes[:3], CURVES):
        for arm, color in zip(arms, colors):
            curves = []
            for run in arm.runs:
                xs = xs_of(run.rows, x)
                points = [(xs[i], v) for i, v in series(run.rows, column)]
                if points:
                    px, py = zip(*points)
                    ax.plot(px, py, color=color, linewidth=0.8, alpha=0.45)
                    curves.append((np.array(px), np.array(py)))
            if not curves:
                continue
            lo, hi = max(c[0][0] for c in curves), min(c[0][-1] for c in curves)
            if hi < lo:  # the seeds' curves do not overlap
                continue
            grid = np.arange(math.ceil(lo), math.floor(hi) + 1) if x == "step" else np.linspace(lo, hi, 60)
            if len(grid):
                ys = np.mean([np.interp(grid, cx, cy) for cx, cy in curves], axis=0)
                ax.plot(grid, ys, color=color, linewidth=2.5, label=f"{arm.name} (mean of {len(curves)})")
        ax.set(title=title, xlabel="training step" if x == "step" else "training minutes (cumulative step_time)")
        if x == "step":
            ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.grid(alpha=0.3)
        ax.legend(loc="best", fontsize="small")
    ax = axes[3]
    for i, (arm, color) in enumerate(zip(arms, colors)):
        n = len(arm.runs)
        for j, run in enumerate(arm.runs):
            jitter = (j - (n - 1) / 2) * 0.04
            ax.plot([i - 0.2 + jitter, i + 0.2 + jitter], [100 * run.test_before, 100 * run.test_after],
                    color=color, linewidth=0.8, alpha=0.5, marker="o", ms=5)
        before, after = mean(arm.values("test_before")), mean(arm.values("test_after"))
        ax.hlines([100 * before, 100 * after], [i - 0.3, i + 0.1], [i - 0.1, i + 0.3], color=color, linewidth=3)
        ax.annotate(f"{100 * after:.1f}%", (i + 0.3, 100 * after), xytext=(3, 0), textcoords="offset points",
                    va="center", fontsize="small")
    ax.set_xticks(range(len(arms)), [f"{a.name}\nbefore -> after (n={len(a.runs)})" for a in arms], fontsize="small")
    ax.set_xlim(-0.6, len(arms) - 0.3)
    ax.set(title="held-out test pass@1 (greedy): base -> checkpoint", ylabel="pass@1 (%), bars: arm means")
    ax.grid(axis="y", alpha=0.3)
    fig.suptitle("DAPO ablation: " + " vs ".join(a.name for a in arms)
                 + f" (thin: seeds, thick: arm mean; x: {'steps' if x == 'step' else 'minutes'})")
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)


# ----------------------------------------------------------------------------
# Command line


def in_repo(path: Path) -> Path:
    return path if path.is_absolute() else ROOT / path


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="benchmarks/ablation.py", description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter,
                                     epilog="\n\n".join(__doc__.split("\n\n")[1:]))
    parser.add_argument("--arm", dest="arms", action="append", default=[], metavar="NAME=FOLDER", required=True,
                        help="a learn.py --out folder under a name (repeatable; the first is the reference)")
    parser.add_argument("--png", type=Path, default=Path("docs/ablation.png"), help="the figure (default docs/ablation.png)")
    parser.add_argument("--no-png", action="store_true", help="draw no figure")
    parser.add_argument("--md", type=Path, help="also write the arms, the table and the comparisons here")
    parser.add_argument("--x", choices=["step", "minutes"], default="step",
                        help="the curves' x axis: training step (default) or cumulative step_time in minutes")
    args = parser.parse_args(argv)
    pairs = []
    for spec in args.arms:
        name, sep, folder = spec.partition("=")
        if not sep or not name.strip() or not folder.strip():
            parser.error(f"--arm needs NAME=FOLDER, got {spec!r}")
        pairs.append((name.strip(), in_repo(Path(folder.strip()))))
    names = [n for n, _ in pairs]
    if len(set(names)) != len(names):
        parser.error(f"--arm names must differ, got {names}")
    args.arms = pairs
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    try:
        arms = [load_arm(name, folder) for name, folder in args.arms]
    except AblationError as error:
        print(f"ablation.py: {error}", file=sys.stderr)
        return 1
    text = report(arms)
    print(text)
    if args.md:
        md = in_repo(args.md)
        md.parent.mkdir(parents=True, exist_ok=True)
        md.write_text(text + "\n")
        print(f"\nwrote {md}")
    if not args.no_png:
        png = in_repo(args.png)
        draw(arms, png, args.x)
        print(f"wrote {png}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
