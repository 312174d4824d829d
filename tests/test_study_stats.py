"""The statistics and the figure of a study (dapo_nb/stats.py, plots.plot_study_front) on hand-made tables whose
answers are worked out by hand here."""

from __future__ import annotations

import math

import matplotlib
import pandas as pd
import pytest

matplotlib.use("Agg")

from dapo_nb import plots  # noqa: E402
from dapo_nb.stats import front_statistics, hypervolume, mean_interval, pareto_mask, summarize_study, welch_test  # noqa: E402


def test_mean_interval_is_the_student_t_interval_of_the_runs():
    mean, low, high = mean_interval([1.0, 2.0, 3.0])
    half = 4.302652729911275 * 1.0 / math.sqrt(3)  # t(0.975, 2 df) x sd / sqrt(n)
    assert mean == 2.0 and low == pytest.approx(2.0 - half) and high == pytest.approx(2.0 + half)
    assert mean_interval([0.4, float("nan"), None, 0.6])[0] == pytest.approx(0.5)  # missing runs are left out
    single = mean_interval([0.7])
    assert single[0] == 0.7 and math.isnan(single[1]) and math.isnan(single[2])  # one run: no interval
    assert all(math.isnan(v) for v in mean_interval([]))


def test_welch_test_matches_the_textbook_case_and_refuses_one_run():
    test = welch_test([1.0, 2.0, 3.0], [4.0, 5.0, 6.0])
    assert test["diff"] == -3.0
    assert test["t"] == pytest.approx(-3.0 / math.sqrt(1 / 3 + 1 / 3))  # -3.674
    assert test["df"] == pytest.approx(4.0)
    assert test["p_value"] == pytest.approx(0.02131, abs=1e-4) and test["significant"]
    assert not welch_test([0.1, 0.3], [0.2, 0.2])["significant"]
    constant = welch_test([0.2, 0.2, 0.2], [0.2, 0.2, 0.2])  # the creativity objective of the scalarizers study
    assert constant["t"] == 0.0 and constant["p_value"] == 1.0 and not constant["significant"]
    with pytest.raises(ValueError, match="at least 2 runs on each side"):
        welch_test([0.5], [0.1, 0.2])


def study_table() -> pd.DataFrame:
    """Three variations x 3 seeds: two ends of a front (a, b) and one clearly dominated point (c)."""
    rows = []
    for variation, xs, ys in (("a", [0.88, 0.90, 0.92], [0.09, 0.10, 0.11]),
                              ("b", [0.09, 0.10, 0.11], [0.88, 0.90, 0.92]),
                              ("c", [0.04, 0.05, 0.06], [0.04, 0.05, 0.06])):
        for seed, (x, y) in enumerate(zip(xs, ys)):
            rows.append({"variation": variation, "seed": seed, "x": x, "y": y, "pass": 0.1 * seed})
    return pd.DataFrame(rows)


def test_summarize_study_gives_each_variation_its_runs_mean_and_interval():
    summary = summarize_study(study_table(), ["x", "pass"])
    assert list(summary["variation"]) == ["a", "b", "c"] and list(summary["n"]) == [3, 3, 3]
    a = summary.iloc[0]
    assert a["x"] == pytest.approx(0.90) and a["pass"] == pytest.approx(0.1)
    assert (a["x_ci95_low"], a["x_ci95_high"]) == pytest.approx(mean_interval([0.88, 0.90, 0.92])[1:])


def test_pareto_mask_and_hypervolume_by_hand():
    assert list(pareto_mask([[1, 3], [2, 2], [1, 1], [2, 2]])) == [True, True, False, True]  # ties dominate nothing
    # union of [0,1]x[0,3] and [0,2]x[0,2] = 3 + 4 - 2
    assert hypervolume([[1, 3], [2, 2], [1, 1]], [0, 0]) == pytest.approx(5.0)
    assert hypervolume([[0.5, 0.5]], [1, 1]) == 0.0  # below the reference adds nothing
    assert hypervolume([[1, 1, 1]], [0, 0, 0]) == pytest.approx(1.0)
    with pytest.raises(ValueError, match="NaN"):
        hypervolume([[float("nan"), 1]], [0, 0])


def test_front_statistics_finds_the_front_its_volume_and_what_is_dominated_with_confidence():
    stats = front_statistics(study_table(), "x", "y", resamples=500, seed=3)
    points = stats["points"].set_index("variation")
    assert list(points["on_front"]) == [True, True, False]
    # the means (0.9, 0.1) and (0.1, 0.9) above (0, 0): 0.09 + 0.09 - 0.01
    assert stats["hypervolume"] == pytest.approx(0.17)
    low, high = stats["hypervolume_ci95"]
    assert low < 0.17 < high and high - low < 0.03
    assert points.loc["c", "p_dominated"] == 1.0 and points.loc["c", "dominated_with_confidence"]
    assert points.loc["a", "p_dominated"] == 0.0 and not points.loc["a", "dominated_with_confidence"]
    again = front_statistics(study_table(), "x", "y", resamples=500, seed=3)  # seeded: the same interval again
    assert again["hypervolume_ci95"] == stats["hypervolume_ci95"]


def test_the_front_figure_draws_the_dominated_point_hollow_and_short_labels():
    table = study_table()
    table["variation"] = table["variation"].map({"a": 'reward.weights={"correctness": 1.0}',
                                                 "b": 'reward.weights={"clarity": 1.0}',
                                                 "c": 'reward.weights={"correctness": 0.5, "clarity": 0.5}'})
    summary = summarize_study(table, ["x", "y"])
    stats = front_statistics(table, "x", "y", resamples=200)
    soups = summarize_study(table.assign(**{"lambda": table["seed"] * 0.5}), ["x", "y"], by="lambda")
    fig = plots.plot_study_front(summary, stats, "x", "y", soups=soups, names=["correctness", "clarity"])
    ax = fig.axes[0]
    labels = {t.get_text() for t in ax.texts}
    assert {"weights=correctness: 1.0", "weights=clarity: 1.0", "weights=correctness: 0.5, clarity: 0.5"} <= labels
    legend = [t.get_text() for t in ax.get_legend().get_texts()]
    assert "dominated with confidence" in legend and "rewarded soups (by lambda)" in legend
    assert ax.get_xlabel() == "correctness" and "hypervolume 0.1700" in ax.get_title()
