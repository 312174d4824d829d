"""Plots of a run: reward and per-objective curves, weight history, clip / entropy / length panels, Pareto fronts.

    df = load_metrics("runs/dapo")                 # or metrics_frame(trainer.history) while training
    save_figures({"rewards": plot_rewards(df), "weights": plot_weights(df)}, "runs/dapo/plots")

Every plot takes a run's metrics as a pandas DataFrame (one row per step, the trainer's metric names as columns)
and returns a matplotlib `Figure` made without pyplot: no global figure state, so the same code runs under the
Agg backend, in a notebook, and from the live panel's training thread. Notebooks show a figure with `display(fig)`.

The reward panel (dashboard, rewards figure) also draws the held-out greedy pass@1 / format@1 of `train.eval_every`
at the steps that logged `eval/pass@1` (other rows are NaN there and skipped), with its 95% band when logged.

`plot_pareto` draws runs in the plane of two objectives with their front (`stats.pareto_mask`, `stats.hypervolume`:
every objective maximized); `plot_study_front` draws a study's variations with their seed intervals, the front, the
points dominated with confidence and the rewarded-soup front beside it. `plot_scalarizer_tradeoff` draws, with `rewards.scalarize` itself, why a weighted sum only reaches
the convex part of a front while Tchebycheff reaches all of it.
"""

from __future__ import annotations

import io
import math
import re
from pathlib import Path
from typing import Mapping, Sequence

import numpy as np
import pandas as pd
from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator

from .rewards.scalarize import scalarize
from .runs import read_metrics
from .stats import _as_points, hypervolume, pareto_mask

# ----------------------------------------------------------------------------
# Metrics as a table


def metrics_frame(history: Sequence[Mapping]) -> pd.DataFrame:
    """One row per step from a list of metric dicts (`trainer.history`); a repeated step keeps its last row."""
    df = pd.DataFrame(list(history))
    if df.empty:
        return pd.DataFrame({"step": pd.Series(dtype=int)})
    if "step" not in df:
        raise ValueError("metrics have no 'step' column; pass the trainer's per-step metric dicts")
    return df.drop_duplicates("step", keep="last").sort_values("step").reset_index(drop=True)


def load_metrics(run: str | Path) -> pd.DataFrame:
    """The metrics of a run folder (runs/<name>) or of a metrics.jsonl file, one row per step."""
    path = Path(run)
    path = path / "metrics.jsonl" if path.is_dir() else path
    if not path.is_file():
        raise FileNotFoundError(f"no metrics at {path}; train first (notebooks/03_training.ipynb or `dapo-nb train`) "
                                "or point at a runs/<run_name> folder that has a metrics.jsonl")
    return metrics_frame(read_metrics(path))


def objective_names(df: pd.DataFrame) -> list[str]:
    """Objectives that have a `rewards/<name>/mean` column, in column order."""
    return [c.split("/")[1] for c in df.columns if c.startswith("rewards/") and c.endswith("/mean")]


def weight_changes(df: pd.DataFrame) -> pd.DataFrame:
    """Rows (step, objective, before, after) for every step whose weight differs from the step before."""
    rows = []
    columns = [c for c in df.columns if c.startswith("weights/")]
    steps = df[df[columns].notna().any(axis=1)]  # not a step-0 line of held-out evaluation only (train.eval_at_start)
    for column in columns:
        values = steps[column].tolist()
        for i in range(1, len(values)):
            if not _same(values[i], values[i - 1]):
                rows.append({"step": int(steps["step"].iloc[i]), "objective": column.split("/", 1)[1],
                             "before": values[i - 1], "after": values[i]})
    return pd.DataFrame(rows, columns=["step", "objective", "before", "after"]).sort_values("step", kind="stable")


def _same(a, b) -> bool:
    if isinstance(a, float) and isinstance(b, float) and math.isnan(a) and math.isnan(b):
        return True
    return a == b


# ----------------------------------------------------------------------------
# Panels (each draws on one Axes, so figures can combine them)


def _column(df: pd.DataFrame, name: str) -> pd.Series:
    return df[name] if name in df else pd.Series(np.nan, index=df.index)


def draw_reward(ax, df: pd.DataFrame) -> None:
    """Mean scalar reward per step with a +-1 std band, and the held-out pass@1 beside it when logged (eval/*)."""
    mean, std = _column(df, "reward"), _column(df, "reward_std").fillna(0.0)  # NaN at a step-0 line of eval/* only
    ax.plot(df["step"], mean, marker="o", ms=3, color="black", label="reward")
    ax.fill_between(df["step"], mean - std, mean + std, color="gray", alpha=0.25, label="+-1 std")
    draw_held_out(ax, df)
    ax.set(title="scalar reward", xlabel="step", ylabel="reward")
    ax.legend(loc="best", fontsize="small")


def held_out(df: pd.DataFrame) -> pd.DataFrame:
    """The steps that have a held-out evaluation (train.eval_every): step, eval/pass@1 and the other eval/* columns."""
    if "eval/pass@1" not in df:
        return df.iloc[0:0]
    return df[df["eval/pass@1"].notna()]


def draw_held_out(ax, df: pd.DataFrame) -> None:
    """Held-out greedy pass@1 (and format@1, and the 95% interval when logged) at the steps that have it."""
    rows = held_out(df)
    if rows.empty:
        return
    n = rows["eval/num_prompts"].iloc[-1] if "eval/num_prompts" in rows else None
    ax.plot(rows["step"], rows["eval/pass@1"], marker="s", ms=4, color="tab:green",
            label="held-out pass@1" + (f" ({int(n)} prompts)" if n is not None and n == n else ""))
    if "eval/pass@1_ci95_low" in rows and "eval/pass@1_ci95_high" in rows:
        ax.fill_between(rows["step"], rows["eval/pass@1_ci95_low"], rows["eval/pass@1_ci95_high"], color="tab:green",
                        alpha=0.15, label="pass@1 95% CI")
    if "eval/format@1" in rows:
        ax.plot(rows["step"], rows["eval/format@1"], marker="^", ms=4, color="tab:olive", linestyle="--",
                label="held-out format@1")


def draw_objectives(ax, df: pd.DataFrame) -> None:
    """Mean raw value of every objective per step."""
    for name in objective_names(df):
        ax.plot(df["step"], df[f"rewards/{name}/mean"], marker="o", ms=3, label=name)
    ax.set(title="objectives (raw means)", xlabel="step", ylabel="value")
    if objective_names(df):
        ax.legend(loc="best", fontsize="small")


def draw_weights(ax, df: pd.DataFrame) -> None:
    """Weight of each objective per step; dotted lines mark the steps where a weight changed."""
    columns = [c for c in df.columns if c.startswith("weights/")]
    for i, column in enumerate(columns):  # thinner and dashed in turn, so equal weights stay visible on top of each other
        ax.step(df["step"], df[column], where="post", marker=".", linewidth=2.5 - 0.5 * (i % 4),
                linestyle=["-", "--", ":", "-."][i % 4], label=column.split("/", 1)[1])
    for step in weight_changes(df)["step"].unique():
        ax.axvline(step, color="red", linestyle=":", linewidth=1)
        ax.annotate(f"changed @ {step}", (step, 0.03), xycoords=("data", "axes fraction"), rotation=90,
                    va="bottom", ha="right", fontsize="x-small", color="red")
    ax.set(title="objective weights", xlabel="step", ylabel="weight")
    if columns:
        ax.legend(loc="best", fontsize="small")


def _figure(ncols: int, nrows: int = 1, width: float = 4.6, height: float = 3.4, steps: bool = True) -> tuple[Figure, list]:
    """A constrained-layout figure and its axes, flat; `steps`: whole-number ticks on the x axes."""
    fig = Figure(figsize=(width * ncols, height * nrows), layout="constrained")
    axes = [ax for row in fig.subplots(nrows, ncols, squeeze=False) for ax in row]
    for ax in axes if steps else []:
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    return fig, axes


# ----------------------------------------------------------------------------
# Figures of a run


def plot_rewards(df: pd.DataFrame) -> Figure:
    """Scalar reward and each objective's mean over steps."""
    fig, (left, right) = _figure(2)
    draw_reward(left, df)
    draw_objectives(right, df)
    return fig


def plot_objectives(df: pd.DataFrame) -> Figure:
    """One panel per objective: its mean over steps, with its weight on a second axis."""
    names = objective_names(df) or ["(none)"]
    fig, axes = _figure(len(names), width=3.6)
    for ax, name in zip(axes, names):
        ax.plot(df["step"], _column(df, f"rewards/{name}/mean"), marker="o", ms=3, color="tab:blue")
        ax.set(title=name, xlabel="step", ylabel="mean value")
        twin = ax.twinx()
        twin.step(df["step"], _column(df, f"weights/{name}"), where="post", color="tab:red", alpha=0.6)
        twin.set_ylabel("weight", color="tab:red")
    return fig


def plot_weights(df: pd.DataFrame) -> Figure:
    """Weight history with the moments the weights changed marked."""
    fig, (ax,) = _figure(1, width=6.0)
    draw_weights(ax, df)
    return fig


def plot_dynamics(df: pd.DataFrame) -> Figure:
    """Clip fractions (low / high side of Clip-Higher), token entropy, completion lengths and truncation."""
    fig, (clip, entropy, length) = _figure(3)
    clip.plot(df["step"], _column(df, "clip_ratio/low_mean"), marker="o", ms=3, label="low (ratio < 1 - eps_low)")
    clip.plot(df["step"], _column(df, "clip_ratio/high_mean"), marker="o", ms=3, label="high (ratio > 1 + eps_high)")
    clip.set(title="clipped token fraction", xlabel="step", ylabel="fraction")
    clip.legend(loc="best", fontsize="small")
    entropy.plot(df["step"], _column(df, "entropy"), marker="o", ms=3, color="tab:purple")
    entropy.set(title="token entropy (nats)", xlabel="step", ylabel="entropy")
    length.plot(df["step"], _column(df, "completions/mean_length"), marker="o", ms=3, label="mean length")
    length.set(title="completion length (tokens)", xlabel="step", ylabel="tokens")
    twin = length.twinx()
    twin.plot(df["step"], _column(df, "completions/clipped_ratio"), color="tab:red", linestyle="--", label="truncated")
    twin.set_ylabel("truncated fraction", color="tab:red")
    return fig


def plot_dashboard(df: pd.DataFrame, title: str = "") -> Figure:
    """Reward, objectives and weights side by side: the live panel's picture."""
    fig, (reward, objectives, weights) = _figure(3, width=4.2, height=3.0)
    draw_reward(reward, df)
    draw_objectives(objectives, df)
    draw_weights(weights, df)
    if title:
        fig.suptitle(title)
    return fig


def plot_token_view(tokens: Sequence[str], logprobs: Sequence[float], entropies: Sequence[float]) -> Figure:
    """Per-token log-prob and entropy of one completion (tokens on the x axis)."""
    width = min(max(6.0, 0.35 * len(tokens)), 24.0)
    fig, (lp, ent) = _figure(1, nrows=2, width=width, height=2.4, steps=False)
    x = np.arange(len(tokens))
    lp.bar(x, logprobs, color="tab:blue")
    lp.set(ylabel="log-prob", title="sampled token log-prob under the behaviour policy")
    ent.bar(x, entropies, color="tab:orange")
    ent.set(ylabel="entropy (nats)", title="entropy of the sampling distribution")
    ent.set_xticks(x, [repr(t)[1:-1] for t in tokens], rotation=90, fontsize="x-small")
    lp.set_xticks(x, [""] * len(x))
    return fig


# ----------------------------------------------------------------------------
# Saving


def figure_png(fig: Figure, dpi: int = 90) -> bytes:
    """The figure as PNG bytes (for an ipywidgets Image)."""
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=dpi)
    return buffer.getvalue()


def save_figures(figures: Mapping[str, Figure], folder: str | Path, dpi: int = 110) -> list[Path]:
    """Write each figure to <folder>/<name>.png; returns the paths."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for name, fig in figures.items():
        path = folder / f"{name}.png"
        fig.savefig(path, dpi=dpi)
        paths.append(path)
    return paths


def run_figures(df: pd.DataFrame, title: str = "") -> dict[str, Figure]:
    """The standard set of figures of a run, by file name: dashboard, rewards, objectives, weights, dynamics."""
    return {"dashboard": plot_dashboard(df, title), "rewards": plot_rewards(df), "objectives": plot_objectives(df),
            "weights": plot_weights(df), "dynamics": plot_dynamics(df)}


# ----------------------------------------------------------------------------
# Pareto fronts (pareto_mask and hypervolume live in stats.py)


def plot_pareto(points, names: Sequence[str], labels: Sequence[str] | None = None, reference=None) -> Figure:
    """Runs in the plane of two objectives, the Pareto front joined, and (with a reference) its hypervolume."""
    p = _as_points(points)
    if p.shape[1] != 2 or len(names) != 2:
        raise ValueError("plot_pareto draws two objectives: give (n, 2) points and two names")
    front = pareto_mask(p)
    fig, (ax,) = _figure(1, width=5.5, height=4.2, steps=False)
    ax.scatter(p[~front, 0], p[~front, 1], color="gray", label="dominated")
    order = np.argsort(p[front, 0])
    ax.plot(p[front, 0][order], p[front, 1][order], "o-", color="tab:red", label="Pareto front")
    for i, label in enumerate(labels or []):
        ax.annotate(label, p[i], textcoords="offset points", xytext=(4, 4), fontsize="x-small")
    title = "weight sweep"
    if reference is not None:
        ref = [float(r) for r in reference]
        xs, ys = p[front, 0][order], p[front, 1][order]
        above = (xs > ref[0]) & (ys > ref[1])
        if above.any():  # the dominated region whose area is the hypervolume: a staircase down to the reference
            xs, ys = xs[above], ys[above]
            ax.fill_between([ref[0], *xs], [*ys, ys[-1]], ref[1], step="post", color="tab:red", alpha=0.12,
                            label="dominated region")
        ax.scatter([ref[0]], [ref[1]], marker="x", color="black", label="reference")
        title += f": hypervolume {hypervolume(p, ref):.4g}"
    ax.set(xlabel=names[0], ylabel=names[1], title=title)
    ax.legend(loc="best", fontsize="small")
    return fig


def _short_label(label) -> str:
    """'reward.weights={"correctness": 0.33, "clarity": 0.67}' -> 'weights=correctness: 0.33, clarity: 0.67'."""
    text = re.sub(r'[{}"]', "", str(label))
    text = re.sub(r"\b\w+\.(?=\w+=)", "", text)  # the dotted key's group: reward.weights= -> weights=
    return text if len(text) <= 44 else text[:43] + "…"


def plot_study_front(summary: pd.DataFrame, front: Mapping, x: str, y: str, soups: pd.DataFrame | None = None,
                     by: str = "variation", names: Sequence[str] | None = None) -> Figure:
    """A study in the plane of two held-out objectives: each variation's mean over seeds with its 95% intervals
    (`stats.summarize_study` columns `<m>`, `<m>_ci95_low|high`), the Pareto front of the means and its hypervolume
    with the seed-bootstrap interval (`stats.front_statistics`), the variations dominated with confidence drawn
    hollow, and, with `soups` (a summary by `lambda`), the rewarded-soup front beside it."""
    fig, (ax,) = _figure(1, width=6.4, height=4.8, steps=False)
    points = front["points"].set_index(by)
    rows = summary.set_index(by).loc[points.index]

    def bars(frame, column):
        low, high = frame[f"{column}_ci95_low"], frame[f"{column}_ci95_high"]
        return np.nan_to_num(np.vstack([frame[column] - low, high - frame[column]]), nan=0.0)

    sure = points["dominated_with_confidence"].to_numpy(bool)
    for mask, style in ((~sure, dict(fmt="o", color="tab:blue", label="variation (mean, 95% CI over seeds)")),
                        (sure, dict(fmt="o", color="gray", mfc="white", label="dominated with confidence"))):
        if mask.any():
            ax.errorbar(rows[x][mask], rows[y][mask], xerr=bars(rows[mask], x), yerr=bars(rows[mask], y), capsize=3,
                        lw=1, **style)
    on = points[points["on_front"]].sort_values(x)
    ax.plot(on[x], on[y], "-", color="tab:red", lw=1.5, label="Pareto front of the means")
    for label, row in points.iterrows():
        ax.annotate(_short_label(label), (row[x], row[y]), textcoords="offset points", xytext=(5, 4), fontsize="x-small")
    if soups is not None and len(soups):
        order = soups.sort_values("lambda")
        ax.errorbar(order[x], order[y], xerr=bars(order, x), yerr=bars(order, y), fmt="s--", color="tab:green",
                    capsize=3, lw=1, label="rewarded soups (by lambda)")
        for _, row in order.iterrows():
            ax.annotate(f"λ={row['lambda']:g}", (row[x], row[y]), textcoords="offset points", xytext=(5, -10),
                        fontsize="x-small", color="tab:green")
    low, high = front["hypervolume_ci95"]
    axis_names = names or (x, y)
    ax.set(xlabel=axis_names[0], ylabel=axis_names[1],
           title=f"hypervolume {front['hypervolume']:.4f} [{low:.4f}, {high:.4f}] (95% bootstrap over seeds)")
    ax.legend(loc="best", fontsize="x-small")
    return fig


def plot_scalarizer_tradeoff(names: Sequence[str] = ("correctness", "clarity"), candidates=None,
                             ideal: Sequence[float] = (1.0, 1.0), scalarizers=("weighted_sum", "tchebycheff")) -> Figure:
    """Which candidate each scalarizer ranks first as the weight moves from objective 2 to objective 1.

    Left: the candidates (default: a front bowed toward the origin, whose middle is not convex) and the
    winner of each scalarizer at equal weights. Right: objective-1 value of the winner against w1 (w2 = 1 - w1).
    A weighted sum jumps between the two ends; Tchebycheff walks along the whole front.
    """
    if candidates is None:
        t = np.linspace(0.0, 1.0, 11)
        candidates = np.stack([t, (1.0 - np.sqrt(t)) ** 2], axis=1)  # f1 + f2 <= 1: the middle is not convex
    c = _as_points(candidates)
    columns = {names[0]: c[:, 0].tolist(), names[1]: c[:, 1].tolist()}
    ideal_map = {names[0]: float(ideal[0]), names[1]: float(ideal[1])}

    def best(scalarizer: str, w1: float) -> int:
        weights = {names[0]: w1, names[1]: 1.0 - w1}
        return int(np.argmax(scalarize(columns, weights, scalarizer=scalarizer, ideal=ideal_map)))

    fig, (front, sweep) = _figure(2, steps=False)
    front.scatter(c[:, 0], c[:, 1], color="gray", label="candidates")
    w1s = np.linspace(0.02, 0.98, 49)
    for i, (style, scalarizer) in enumerate(zip(("s", "^", "v"), scalarizers)):
        pick = best(scalarizer, 0.5)
        front.scatter(*c[pick], s=160 + 80 * i, marker=style, facecolors="none", edgecolors=f"C{i}", linewidths=2,
                      label=f"{scalarizer} best @ equal weights")
        sweep.plot(w1s, [c[best(scalarizer, w), 0] for w in w1s], marker=style, ms=4, color=f"C{i}", label=scalarizer)
    front.set(xlabel=names[0], ylabel=names[1], title="candidates and equal-weight winners")
    front.legend(loc="best", fontsize="small")
    sweep.set(xlabel=f"w({names[0]}) = 1 - w({names[1]})", ylabel=f"{names[0]} of the winner",
              title="winner as the weight moves")
    sweep.legend(loc="best", fontsize="small")
    return fig
