"""Tables and figures of the README's "Studies" evidence, from the study folders `dapo-nb sweep` filled.

    .venv/bin/python benchmarks/studies_report.py [--steering runs/studies/steering] [--scalarizers runs/studies/scalarizers]
                                                  [--front runs/studies/front] [--md benchmarks/results/studies.md]

steering     control vs steered (reward.schedule raises clarity to 1.0 at step k) with the same seeds: per seed the
             training clarity over steps k..end (metrics.jsonl) and the held-out clarity / pass@1 of the final
             policies; the effect is the paired steered - control difference, its mean over seeds with a 95% t
             interval (a seed's two runs are the same run until k). Figure: docs/study_steering.png.
scalarizers  per variation the mean and 95% t interval over seeds of held-out pass@1 and every objective, and
             Welch's test for every pair of variations and metric (which differences are significant at 5%).
front        the Pareto front of the variations' mean (correctness, clarity), its hypervolume with a bootstrap
             interval over seeds, dominance with confidence, and the rewarded-soup front beside it, with costs.
             Figure: docs/study_front.png.
Everything goes to stdout as markdown (and to --md). A folder that does not exist is skipped.
"""

from __future__ import annotations

import argparse
import itertools
import json
import math
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

import pandas as pd  # noqa: E402

from dapo_nb import plots  # noqa: E402
from dapo_nb.stats import front_statistics, mean_interval, summarize_study, welch_test  # noqa: E402
from dapo_nb.sweep import load_study, read_results, results_frame  # noqa: E402


def fmt(mean: float, low: float, high: float, scale: float = 1.0, digits: int = 3) -> str:
    if not math.isfinite(low):
        return f"{mean * scale:.{digits}f}"
    return f"{mean * scale:.{digits}f} [{low * scale:.{digits}f}, {high * scale:.{digits}f}]"


def table_md(frame: pd.DataFrame) -> str:
    header = "| " + " | ".join(map(str, frame.columns)) + " |"
    rule = "|" + "|".join("---" for _ in frame.columns) + "|"
    return "\n".join([header, rule, *("| " + " | ".join(map(str, row)) + " |" for row in frame.itertuples(index=False))])


def load(folder: Path) -> pd.DataFrame:
    return results_frame(read_results(folder))


def metrics_of(run_dir: str) -> pd.DataFrame:
    rows = [json.loads(line) for line in (Path(run_dir) / "metrics.jsonl").read_text().splitlines()]
    return pd.DataFrame(rows)


# ----------------------------------------------------------------------------


def steering(folder: Path, out: list[str]) -> None:
    table = load(folder)
    trained = table[(table["kind"] == "train") & (table["status"] == "done")]
    study = load_study(folder / "study.yaml")
    schedule = next(v for v in study.variants if v)["reward.schedule"]
    k, objective = next((int(step), name) for step, entry in schedule.items() for name in entry)
    arms = {"control": trained[trained["variation"] == "base"],
            "steered": trained[trained["variation"] != "base"]}
    per_seed, curves = [], {}
    for seed in sorted(trained["seed"].unique()):
        row = {"seed": int(seed)}
        for arm, rows in arms.items():
            trial = rows[rows["seed"] == seed].iloc[0]
            df = metrics_of(trial["run_dir"])
            df = df[df["step"] > 0]
            curves.setdefault(arm, []).append(df.set_index("step")[f"rewards/{objective}/mean"])
            row[f"{arm} train {objective} (steps {k}+)"] = df[df["step"] >= k][f"rewards/{objective}/mean"].mean()
            row[f"{arm} held-out {objective}"] = trial[f"eval/rewards/{objective}/mean"]
            row[f"{arm} held-out pass@1"] = trial["eval/pass@1"]
        control = curves["control"][-1]
        steered = curves["steered"][-1]
        before = [s for s in control.index if s < k]
        row["same run before k"] = bool((control.loc[before] - steered.loc[before]).abs().max() < 1e-9)
        per_seed.append(row)
    seeds = pd.DataFrame(per_seed)
    effects = []
    for what in (f"train {objective} (steps {k}+)", f"held-out {objective}", "held-out pass@1"):
        diffs = (seeds[f"steered {what}"] - seeds[f"control {what}"]).tolist()
        mean, low, high = mean_interval(diffs)
        effects.append({"effect (steered - control)": what, "per seed": ", ".join(f"{d:+.3f}" for d in diffs),
                        "mean [95% t interval]": fmt(mean, low, high), "excludes 0": bool(low > 0 or high < 0)})
    out += [f"### Steering ({folder})", "", f"`{objective}` raised to 1.0 from step {k}; {len(seeds)} seeds.", "",
            table_md(seeds.round(3)), "", table_md(pd.DataFrame(effects)), ""]
    fig, (ax,) = plots._figure(1, width=6.0, height=3.8)
    for arm, color in (("control", "tab:gray"), ("steered", "tab:blue")):
        frame = pd.concat(curves[arm], axis=1)
        mean = frame.mean(axis=1)
        ax.plot(mean.index, mean.values, color=color, label=f"{arm} (mean of {frame.shape[1]} seeds)")
        ax.fill_between(mean.index, frame.min(axis=1), frame.max(axis=1), color=color, alpha=0.15)
    ax.axvline(k - 0.5, color="black", ls=":", label=f"switch (step {k})")
    ax.set(xlabel="step", ylabel=f"training {objective} (mean over the step's completions)",
           title=f"steering {objective}: seeds' mean, band = min..max")
    ax.legend(fontsize="small")
    fig.savefig(REPO / "docs" / "study_steering.png", dpi=110)


def scalarizers(folder: Path, out: list[str]) -> None:
    table = load(folder)
    trained = table[(table["kind"] == "train") & (table["status"] == "done")]
    metrics = ["eval/pass@1", "eval/format@1", *sorted(c for c in table.columns if c.startswith("eval/rewards/"))]
    summary = summarize_study(trained, metrics)
    shown = pd.DataFrame({"variation": summary["variation"], "n": summary["n"],
                          **{m.replace("eval/rewards/", "").replace("/mean", ""):
                             [fmt(r[m], r[f"{m}_ci95_low"], r[f"{m}_ci95_high"]) for _, r in summary.iterrows()]
                             for m in metrics}})
    base = table[table["kind"] == "base"]
    tests = []
    for (a, ga), (b, gb) in itertools.combinations(trained.groupby("variation", sort=False), 2):
        if min(len(ga), len(gb)) < 2:  # a study still running: Welch needs two runs a side
            continue
        for metric in metrics:
            test = welch_test(ga[metric], gb[metric])
            tests.append({"a": a, "b": b, "metric": metric.replace("eval/rewards/", "").replace("/mean", ""),
                          "diff (a - b)": f"{test['diff']:+.3f}", "t": f"{test['t']:.2f}", "df": f"{test['df']:.1f}",
                          "p": f"{test['p_value']:.3g}", "significant": test["significant"]})
    tests = pd.DataFrame(tests)
    out += [f"### Scalarizers ({folder})", "", table_md(shown), ""]
    if len(base):
        out += ["base model: " + ", ".join(f"{m.replace('eval/rewards/', '').replace('/mean', '')} {base.iloc[0][m]:.3f}"
                                           for m in metrics), ""]
    significant = tests[tests["significant"]] if len(tests) else tests
    out += [f"{len(tests)} pairwise Welch tests, {len(significant)} significant at 5%:", "",
            table_md(significant) if len(significant) else "(none)", "", "<details><summary>all tests</summary>", "",
            table_md(tests), "", "</details>", ""]


def front(folder: Path, out: list[str]) -> None:
    table = load(folder)
    study = load_study(folder / "study.yaml")
    a, b = study.front
    x, y = f"eval/rewards/{a}/mean", f"eval/rewards/{b}/mean"
    trained = table[(table["kind"] == "train") & (table["status"] == "done")]
    summary = summarize_study(trained, ["eval/pass@1", x, y])
    stats = front_statistics(trained, x, y)
    soup_rows = table[(table["kind"] == "soup") & (table["status"] == "done")]
    soups = summarize_study(soup_rows, ["eval/pass@1", x, y], by="lambda") if len(soup_rows) else None
    figure = plots.plot_study_front(summary, stats, x, y, soups=soups, names=[a, b])
    figure.savefig(REPO / "docs" / "study_front.png", dpi=110)
    points = stats["points"].merge(summary.drop(columns=[x, y]), on=["variation", "n"])  # not on float means
    shown = pd.DataFrame({
        "variation": points["variation"], "n": points["n"],
        a: [fmt(r[x], r[f"{x}_ci95_low"], r[f"{x}_ci95_high"]) for _, r in points.iterrows()],
        b: [fmt(r[y], r[f"{y}_ci95_low"], r[f"{y}_ci95_high"]) for _, r in points.iterrows()],
        "pass@1": [fmt(r["eval/pass@1"], r["eval/pass@1_ci95_low"], r["eval/pass@1_ci95_high"]) for _, r in points.iterrows()],
        "on front": points["on_front"], "P(dominated)": points["p_dominated"].round(3),
        "dominated with confidence": points["dominated_with_confidence"]})
    low, high = stats["hypervolume_ci95"]
    out += [f"### Front ({folder})", "", table_md(shown), "",
            f"hypervolume of the means above (0, 0): {stats['hypervolume']:.4f}, 95% bootstrap over seeds "
            f"[{low:.4f}, {high:.4f}] ({stats['resamples']} resamples)", ""]
    if soups is not None:
        soup_stats = front_statistics(soup_rows.assign(variation=soup_rows["lambda"].map(lambda v: f"lambda={v:g}")),
                                      x, y)
        slow, shigh = soup_stats["hypervolume_ci95"]
        shown = pd.DataFrame({"lambda": soups["lambda"], "n": soups["n"],
                              a: [fmt(r[x], r[f"{x}_ci95_low"], r[f"{x}_ci95_high"]) for _, r in soups.iterrows()],
                              b: [fmt(r[y], r[f"{y}_ci95_low"], r[f"{y}_ci95_high"]) for _, r in soups.iterrows()],
                              "pass@1": [fmt(r["eval/pass@1"], r["eval/pass@1_ci95_low"], r["eval/pass@1_ci95_high"])
                                         for _, r in soups.iterrows()]})
        ingredients = {n for pair in soup_rows["ingredients"].dropna() for n in pair.split()}
        out += ["Rewarded soups:", "", table_md(shown), "",
                f"soup hypervolume {soup_stats['hypervolume']:.4f} [{slow:.4f}, {shigh:.4f}]", "",
                f"cost: the sweep trained {len(trained)} runs ({trained['minutes'].sum():.0f} min of training, "
                f"{trained['eval_minutes'].sum():.0f} min of evaluation); the soups reuse {len(ingredients)} of them "
                f"({trained[trained['trial'].isin(ingredients)]['minutes'].sum():.0f} min of training) and add "
                f"{int((soup_rows['eval_minutes'] > 0).sum())} evaluations of mixed weights ({soup_rows['eval_minutes'].sum():.0f} min)", ""]


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--steering", default=str(REPO / "runs" / "studies" / "steering"))
    parser.add_argument("--scalarizers", default=str(REPO / "runs" / "studies" / "scalarizers"))
    parser.add_argument("--front", default=str(REPO / "runs" / "studies" / "front"))
    parser.add_argument("--md", default=str(REPO / "benchmarks" / "results" / "studies.md"))
    args = parser.parse_args(argv)
    out: list[str] = []
    for name, fn in (("steering", steering), ("scalarizers", scalarizers), ("front", front)):
        folder = Path(getattr(args, name))
        if (folder / "study.yaml").is_file():
            fn(folder, out)
    text = "\n".join(out)
    Path(args.md).parent.mkdir(parents=True, exist_ok=True)
    Path(args.md).write_text(text + "\n")
    print(text)


if __name__ == "__main__":
    main()
