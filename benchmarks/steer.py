"""Weight steering, headless: does raising one objective's weight mid-run move that objective, and how soon?

    .venv/bin/python benchmarks/steer.py [--steps 10] [--switch-step 4] [--objective clarity] [--weight 1.0]
                                         [--seed 0] [--window 3] [--threshold 0.05] [--set key=value ...]
                                         [--out benchmarks/results/steer] [--png docs/steering.png]

Two training runs of the recipe (the config defaults, plus any `--set key=value`) from the same seed and the same
starting model, `--steps` steps each:
  control  `--objective` is in `reward.objectives` with weight 0 for the whole run: it is scored and logged
           (`rewards/<objective>/mean`) but does not enter the reward;
  steered  the same, plus `reward.schedule={k: {<objective>: <weight>}}` with k = `--switch-step`: from step k on
           (steps count from 1, as in the metrics) the objective enters the reward with `--weight`.
Before step k both runs optimise the same reward from the same seed, so on one CPU with the same thread count
they are the same run step for step (the script reports whether they were). The default objective is `clarity`
(the seed's structure proxy, `min(1, newlines / 8 + 0.2)`): one the recipe does not weight and does not push (left
at weight 0 it falls as completions get shorter), so a gap is the schedule's doing. `length` (a length penalty) moves
less: the recipe shortens completions by itself (README, "Weight steering"). Any registered objective works; one the
recipe weights is set to 0 before k in both runs (said in the output).

What it prints: one line per step and run while training; then, per run, the objective's mean over the steps
before k and over the steps from k on, and the mean completion length likewise; the steered minus control gap
of a rolling mean (`--window` steps, counted from k) and the first step from k where the gap exceeds
`--threshold` in the direction the weight pushes (a positive weight raises the objective; objectives are
higher-is-better); whether the `weights/<objective>` metric followed the schedule (0 before k, `--weight` from k
in the steered run, 0 throughout in the control); one JSON line with all of it (also `<out>/summary.json`).
Files: `<out>/control/metrics.jsonl`, `<out>/steered/metrics.jsonl` (the trainer's per-step metrics), and the
figure (`--png`): both runs' objective mean and mean completion length per step, a vertical line at k.
No checkpoints are written. Held-out evaluation during training is off (`train.eval_every=0`) unless `--set` turns
it on. Cost: two runs of `--steps` recipe steps each, plus one model load; the script prints the wall time.
"""

from __future__ import annotations

import argparse
import copy
import json
import math
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from dapo_nb.config import load_config  # noqa: E402
from dapo_nb.models import policy_from_config  # noqa: E402
from dapo_nb.plots import load_metrics  # noqa: E402
from dapo_nb.rewards import get_objective  # noqa: E402
from dapo_nb.rewards.reward import objective_names  # noqa: E402
from dapo_nb.trainer import Trainer  # noqa: E402

RUNS = ("control", "steered")


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter,
                                     epilog=__doc__.split("\n\n", 1)[1])
    parser.add_argument("--steps", type=int, default=10, help="training steps of each run (default 10)")
    parser.add_argument("--switch-step", type=int, default=4,
                        help="k: the steered run's weight applies from this step on (steps count from 1; default 4)")
    parser.add_argument("--objective", default="clarity", help="the objective whose weight is raised (default clarity)")
    parser.add_argument("--weight", type=float, default=1.0, help="its weight from step k in the steered run (default 1.0)")
    parser.add_argument("--seed", type=int, default=0, help="train.seed of both runs (default 0)")
    parser.add_argument("--window", type=int, default=3, help="rolling mean over this many steps, from k (default 3)")
    parser.add_argument("--threshold", type=float, default=0.05,
                        help="a rolling steered - control gap above this counts as steered (default 0.05)")
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                        help="a config override for both runs, as on the dapo-nb command line (repeatable)")
    parser.add_argument("--out", default=str(REPO / "benchmarks" / "results" / "steer"),
                        help="folder for the runs' metrics and summary.json (default benchmarks/results/steer)")
    parser.add_argument("--png", default=str(REPO / "docs" / "steering.png"), help="the figure (default docs/steering.png)")
    args = parser.parse_args(argv)
    if not 2 <= args.switch_step <= args.steps:
        parser.error(f"--switch-step must be in 2..--steps (got {args.switch_step} with --steps {args.steps}): "
                     "at least one step before k and one from k")
    if args.weight < 0 or args.window < 1 or args.threshold < 0:
        parser.error("--weight and --threshold must be >= 0 and --window >= 1")
    return args


def run_configs(args) -> tuple[dict, list[str]]:
    """The two runs' configs (control, steered) and notes on what was changed from the recipe."""
    get_objective(args.objective)  # an unknown name fails here, listing the registered ones
    base = load_config(overrides=args.overrides)
    notes = []
    if base.reward.weights.get(args.objective, 0.0):
        notes.append(f"the recipe weights {args.objective} {base.reward.weights[args.objective]:g}; "
                     "both runs start it at 0")
    objectives = list(dict.fromkeys([*objective_names(base.reward), args.objective]))
    weights = {**base.reward.weights, args.objective: 0.0}
    out = Path(args.out)
    configs = {}
    for name in RUNS:
        schedule = {int(k): dict(v) for k, v in base.reward.schedule.items()}
        if name == "steered":
            schedule[args.switch_step] = {**schedule.get(args.switch_step, {}), args.objective: args.weight}
        configs[name] = load_config(overrides=[
            "train.eval_every=0", *args.overrides,  # the user's --set wins over the eval default, not over the rest
            f"train.seed={args.seed}", f"train.total_steps={args.steps}", f"train.run_name=steer-{name}",
            f"train.output_dir={out / name}", f"train.checkpoint_dir={out / 'checkpoints'}",
            f"reward.objectives={json.dumps(objectives)}", f"reward.weights={json.dumps(weights)}",
            f"reward.schedule={json.dumps(schedule)}"])
    return configs, notes


def train(name: str, cfg, model, tokenizer, objective: str) -> float:
    """cfg.train.total_steps steps, no checkpoint; prints one line a step; returns the wall seconds."""
    trainer = Trainer(cfg, model=model, tokenizer=tokenizer)
    start = time.perf_counter()
    while trainer.step < cfg.train.total_steps:
        m = trainer.train_step()
        print(f"{name:8s} step {m['step']:3d}/{cfg.train.total_steps}: reward {m['reward']:+.3f}  "
              f"{objective} {m[f'rewards/{objective}/mean']:+.3f} (weight {m.get(f'weights/{objective}', math.nan):g})  "
              f"mean length {m['completions/mean_length']:5.1f}  {m['step_time']:5.1f} s", flush=True)
    return time.perf_counter() - start


def mean(values) -> float:
    values = [v for v in values if v == v]
    return sum(values) / len(values) if values else math.nan


def analyse(frames: dict, args) -> dict:
    """Before / after means, the first steered step, and whether the weight metric followed the schedule."""
    k, objective = args.switch_step, args.objective
    column, weight_column = f"rewards/{objective}/mean", f"weights/{objective}"
    summary: dict = {"objective": objective, "weight": args.weight, "switch_step": k, "steps": args.steps,
                     "seed": args.seed, "window": args.window, "threshold": args.threshold, "overrides": args.overrides}
    series = {}
    for name, df in frames.items():
        df = df[df[column].notna()]  # training steps only (not a step-0 line of held-out evaluation)
        series[name] = dict(zip(df["step"].astype(int), df[column].astype(float)))
        before, after = df[df["step"] < k], df[df["step"] >= k]
        summary[name] = {
            f"{objective}_before": mean(before[column]), f"{objective}_after": mean(after[column]),
            "mean_length_before": mean(before["completions/mean_length"]),
            "mean_length_after": mean(after["completions/mean_length"]),
            "weights_before": sorted(set(before[weight_column].astype(float))),
            "weights_after": sorted(set(after[weight_column].astype(float))),
        }
    control, steered = series["control"], series["steered"]
    common = sorted(set(control) & set(steered))
    pre = [s for s in common if s < k]
    summary["same_before_switch"] = all(control[s] == steered[s] for s in pre) and bool(pre)
    summary["max_abs_gap_before_switch"] = max((abs(control[s] - steered[s]) for s in pre), default=math.nan)
    direction = 1.0 if args.weight > 0 else -1.0  # higher is better: a positive weight pushes the objective up
    gaps, first = {}, None
    for s in (s for s in common if s >= k):
        window = [t for t in common if max(k, s - args.window + 1) <= t <= s]
        gaps[s] = mean(steered[t] for t in window) - mean(control[t] for t in window)
        if first is None and direction * gaps[s] > args.threshold:
            first = s
    summary["rolling_gap"] = {int(s): round(g, 4) for s, g in gaps.items()}
    summary["first_steered_step"] = first
    summary["steps_to_effect"] = None if first is None else first - k + 1  # 1 = already at step k
    summary["schedule_took_effect"] = (
        summary["steered"]["weights_before"] == [0.0] and summary["steered"]["weights_after"] == [args.weight]
        and summary["control"]["weights_before"] == [0.0] and summary["control"]["weights_after"] == [0.0])
    return summary


def draw(frames: dict, summary: dict, path: Path) -> None:
    from matplotlib.figure import Figure
    from matplotlib.ticker import MaxNLocator

    k, objective = summary["switch_step"], summary["objective"]
    fig = Figure(figsize=(10, 4), layout="constrained")
    axes = fig.subplots(1, 2)
    styles = {"control": dict(color="gray", marker="o", linewidth=3, alpha=0.7, label="control (weight 0 throughout)"),
              "steered": dict(color="tab:red", marker="s", linewidth=1.5, label=f"steered (weight {summary['weight']:g} from step {k})")}
    for ax, column, title in [(axes[0], f"rewards/{objective}/mean", f"objective {objective!r} (mean per training step)"),
                              (axes[1], "completions/mean_length", "mean completion length (tokens)")]:
        for name, df in frames.items():
            df = df[df[column].notna()]
            ax.plot(df["step"], df[column], ms=4, **styles[name])
        ax.axvline(k - 0.5, color="black", linestyle="--", linewidth=1)
        ax.annotate(f"weight switch (step {k})", xy=(k - 0.5, 1), xycoords=("data", "axes fraction"),
                    xytext=(3, -12), textcoords="offset points", fontsize="small")
        if summary["first_steered_step"] is not None and column.startswith("rewards/"):
            ax.axvline(summary["first_steered_step"], color="tab:red", linestyle=":", linewidth=1,
                       label=f"first step with rolling gap > {summary['threshold']:g}")
        ax.set(title=title, xlabel="step")
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.legend(loc="best", fontsize="small")
    fig.suptitle(f"Weight steering: {objective} weight 0 -> {summary['weight']:g} at step {k} (seed {summary['seed']})")
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)


def main(argv=None) -> int:
    args = parse_args(argv)
    configs, notes = run_configs(args)
    for note in notes:
        print(f"note: {note}")
    cfg = configs["control"]
    print(f"steer: {args.objective} weight 0 -> {args.weight:g} at step {args.switch_step} of {args.steps}; seed {args.seed}; "
          f"recipe lr {cfg.ppo.learning_rate:g}, {cfg.ppo.batch_size} prompts x G={cfg.dapo.group_size}, "
          f"max_new_tokens {cfg.sampling.max_new_tokens}; overrides {args.overrides or 'none'}", flush=True)
    start = time.perf_counter()
    model, tokenizer = policy_from_config(cfg.model)
    load_seconds = time.perf_counter() - start
    seconds = {"control": train("control", configs["control"], copy.deepcopy(model), tokenizer, args.objective)}
    seconds["steered"] = train("steered", configs["steered"], model, tokenizer, args.objective)  # the last run may train the original
    frames = {name: load_metrics(Path(args.out) / name) for name in RUNS}
    summary = analyse(frames, args)
    summary["seconds"] = {"load": round(load_seconds, 1), **{n: round(s, 1) for n, s in seconds.items()},
                          "total": round(time.perf_counter() - start, 1)}
    summary["notes"] = notes
    draw(frames, summary, Path(args.png))
    summary["figure"] = str(args.png)

    k, objective = args.switch_step, args.objective
    print(f"\n{objective} (training mean), steps 1-{k - 1} before the switch | steps {k}-{args.steps} from it; "
          "mean completion length likewise")
    for name in RUNS:
        s = summary[name]
        print(f"  {name:8s} {s[f'{objective}_before']:+.3f} | {s[f'{objective}_after']:+.3f}    "
              f"length {s['mean_length_before']:5.1f} | {s['mean_length_after']:5.1f}")
    print(f"same run before the switch: {'yes' if summary['same_before_switch'] else 'no'} "
          f"(largest gap {summary['max_abs_gap_before_switch']:.4f})")
    gap = ", ".join(f"{s}: {g:+.3f}" for s, g in summary["rolling_gap"].items())
    print(f"rolling steered - control gap ({args.window} steps from {k}): {gap}")
    if summary["first_steered_step"] is None:
        print(f"first steered step: none within {args.steps} steps (gap never above {args.threshold:g})")
    else:
        print(f"first steered step: {summary['first_steered_step']} "
              f"({summary['steps_to_effect']} step(s) after the switch counting step {k}; gap > {args.threshold:g})")
    print(f"schedule took effect (weights/{objective}): {'yes' if summary['schedule_took_effect'] else 'NO'}; "
          f"wall time {summary['seconds']['total']:.0f} s (load {load_seconds:.0f} s, control {seconds['control']:.0f} s, "
          f"steered {seconds['steered']:.0f} s); figure {args.png}")
    Path(args.out).mkdir(parents=True, exist_ok=True)
    (Path(args.out) / "summary.json").write_text(json.dumps(summary, indent=1) + "\n")
    print(json.dumps(summary))
    return 0 if summary["schedule_took_effect"] else 1


if __name__ == "__main__":
    sys.exit(main())
