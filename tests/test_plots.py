"""Plots of a run: metrics tables, weight-change detection, figures (without pyplot), Pareto front and hypervolume."""

from __future__ import annotations

import json
import subprocess
import sys
import threading

import numpy as np
import pytest
from matplotlib.figure import Figure

from dapo_nb import plots
from dapo_nb.rewards.scalarize import scalarize


def fake_history(steps: int = 5, change_at: int = 3) -> list[dict]:
    """Per-step metric dicts with the trainer's names; the format weight moves from 0.1 to 0.5 at `change_at`."""
    rows = []
    for step in range(1, steps + 1):
        rows.append({
            "step": step, "reward": 0.1 * step, "reward_std": 0.05,
            "rewards/correctness/mean": 0.05 * step, "rewards/format/mean": 0.2 * step,
            "weights/correctness": 1.0, "weights/format": 0.1 if step < change_at else 0.5,
            "clip_ratio/low_mean": 0.01, "clip_ratio/high_mean": 0.02, "entropy": 1.5 - 0.1 * step,
            "completions/mean_length": 20 + step, "completions/clipped_ratio": 0.25,
        })
    return rows


# ----------------------------------------------------------------------------
# Tables


def test_metrics_frame_sorts_and_keeps_the_last_row_of_a_repeated_step():
    rows = fake_history(3)
    redo = dict(rows[1], reward=9.0)  # a restarted run wrote step 2 again
    df = plots.metrics_frame([rows[2], rows[0], rows[1], redo])
    assert df["step"].tolist() == [1, 2, 3]
    assert df.loc[df["step"] == 2, "reward"].item() == 9.0


def test_load_metrics_reads_a_run_folder_and_names_bad_lines(tmp_path):
    run = tmp_path / "run"
    run.mkdir()
    (run / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in fake_history(4)))
    assert plots.load_metrics(run)["step"].tolist() == [1, 2, 3, 4]
    assert plots.objective_names(plots.load_metrics(run / "metrics.jsonl")) == ["correctness", "format"]
    (run / "metrics.jsonl").write_text(json.dumps(fake_history(1)[0]) + "\n{broken\n" + json.dumps(fake_history(2)[1]))
    with pytest.raises(ValueError, match=r"metrics.jsonl:2"):
        plots.load_metrics(run)
    # a last line still being written (or torn by a crash) is left out, not an error
    (run / "metrics.jsonl").write_text(json.dumps(fake_history(1)[0]) + '\n{"step": 2, "rew')
    assert plots.load_metrics(run)["step"].tolist() == [1]
    with pytest.raises(FileNotFoundError, match="03_training"):
        plots.load_metrics(tmp_path / "nothing-here")


def test_weight_changes_lists_each_step_where_a_weight_moved():
    changes = plots.weight_changes(plots.metrics_frame(fake_history(6, change_at=4)))
    assert changes.to_dict("records") == [{"step": 4, "objective": "format", "before": 0.1, "after": 0.5}]
    assert plots.weight_changes(plots.metrics_frame(fake_history(3, change_at=99))).empty


# ----------------------------------------------------------------------------
# Figures


def test_weight_plot_marks_the_change_moment():
    fig = plots.plot_weights(plots.metrics_frame(fake_history(5, change_at=3)))
    ax = fig.axes[0]
    vertical = [line for line in ax.lines if list(line.get_xdata()) == [3, 3]]
    assert len(vertical) == 1, "one marker line at step 3"
    assert any("changed @ 3" in text.get_text() for text in ax.texts)
    assert sorted(line.get_label() for line in ax.lines if not line.get_label().startswith("_")) == ["correctness", "format"]


def test_every_run_figure_draws_and_saves_png(tmp_path):
    df = plots.metrics_frame(fake_history())
    figures = plots.run_figures(df, "demo")
    assert set(figures) == {"dashboard", "rewards", "objectives", "weights", "dynamics"}
    assert all(isinstance(f, Figure) for f in figures.values())
    assert len(figures["objectives"].axes) == 4  # two objectives, each with a twin weight axis
    paths = plots.save_figures(figures, tmp_path / "plots")
    assert [p.name for p in paths] == [f"{n}.png" for n in figures]
    assert all(p.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" for p in paths)
    assert plots.figure_png(figures["dashboard"])[:4] == b"\x89PNG"


def test_figures_tolerate_missing_metrics():
    """A step without an update (every group dropped) has no clip or entropy metrics: the panels still draw."""
    df = plots.metrics_frame([{"step": 1, "reward": 0.0}, {"step": 2, "reward": 0.5}])
    for fig in plots.run_figures(df).values():
        assert plots.figure_png(fig)[:4] == b"\x89PNG"


def test_plots_never_import_pyplot_and_draw_from_a_thread():
    code = ("import sys, dapo_nb.plots as p; import dapo_nb.live; "
            "assert 'matplotlib.pyplot' not in sys.modules, 'pyplot imported'; print('ok')")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert result.stdout.strip() == "ok", result.stderr
    out = {}
    thread = threading.Thread(target=lambda: out.setdefault("png", plots.figure_png(
        plots.plot_dashboard(plots.metrics_frame(fake_history())))))
    thread.start()
    thread.join(60)
    assert out["png"][:4] == b"\x89PNG"


def test_token_view_has_one_tick_per_token():
    fig = plots.plot_token_view(["An", "swer", ":", " 5"], [-0.1, -2.0, -0.5, -1.0], [0.3, 2.2, 0.9, 1.1])
    assert [t.get_text() for t in fig.axes[1].get_xticklabels()] == ["An", "swer", ":", " 5"]
    assert [p.get_height() for p in fig.axes[0].patches] == [-0.1, -2.0, -0.5, -1.0]


# ----------------------------------------------------------------------------
# Pareto front and hypervolume


def test_pareto_mask_keeps_exactly_the_non_dominated_points():
    points = [[1, 3], [2, 2], [3, 1], [1, 1], [2, 2], [0.5, 3]]
    assert plots.pareto_mask(points).tolist() == [True, True, True, False, True, False]


def test_hypervolume_2d_and_3d_by_hand():
    assert plots.hypervolume([[1, 3], [2, 2], [3, 1]], [0, 0]) == pytest.approx(6.0)  # 3 + 2 + 1 staircase
    assert plots.hypervolume([[1, 3], [2, 2], [3, 1], [1, 1]], [0, 0]) == pytest.approx(6.0)  # dominated adds 0
    assert plots.hypervolume([[1, 2, 3]], [0, 0, 0]) == pytest.approx(6.0)
    assert plots.hypervolume([[1, 1, 2], [2, 1, 1]], [0, 0, 0]) == pytest.approx(3.0)  # 2 + 2 - overlap 1
    assert plots.hypervolume([[-1, 5]], [0, 0]) == 0.0  # not above the reference in every objective
    assert plots.hypervolume([[0.5, -0.5]], [0, -1]) == pytest.approx(0.25)


def test_hypervolume_matches_monte_carlo_in_3d():
    rng = np.random.default_rng(0)
    points = rng.uniform(0, 1, size=(6, 3))
    samples = rng.uniform(0, 1, size=(200_000, 3))
    covered = (samples[:, None, :] <= points[None, :, :]).all(-1).any(-1).mean()
    assert plots.hypervolume(points, [0, 0, 0]) == pytest.approx(covered, abs=0.01)


def test_pareto_inputs_are_checked():
    with pytest.raises(ValueError, match=r"\(n, m\)"):
        plots.pareto_mask([1, 2, 3])
    with pytest.raises(ValueError, match="reference has 3 values"):
        plots.hypervolume([[1, 2]], [0, 0, 0])
    with pytest.raises(ValueError, match="NaN"):
        plots.hypervolume([[1, float("nan")]], [0, 0])
    with pytest.raises(ValueError, match="two objectives"):
        plots.plot_pareto([[1, 2, 3]], ["a", "b", "c"])


def test_pareto_plot_title_carries_the_hypervolume():
    fig = plots.plot_pareto([[1, 3], [2, 2], [1, 1]], ["correctness", "format"], labels=["a", "b", "c"], reference=[0, 0])
    assert "hypervolume 5" in fig.axes[0].get_title()
    front = [line for line in fig.axes[0].lines if line.get_label() == "Pareto front"][0]
    assert list(front.get_xdata()) == [1, 2]


def test_scalarizer_tradeoff_shows_weighted_sum_skipping_the_non_convex_middle():
    fig = plots.plot_scalarizer_tradeoff(("correctness", "clarity"))
    by_label = {line.get_label(): np.asarray(line.get_ydata()) for line in fig.axes[1].lines}
    weighted, tcheby = by_label["weighted_sum"], by_label["tchebycheff"]
    assert set(np.round(weighted, 6)) <= {0.0, 1.0}, "a weighted sum only picks an end of a front bowed inward"
    assert ((tcheby > 0.05) & (tcheby < 0.95)).sum() >= 20, "Tchebycheff reaches the middle of the front"
    assert np.all(np.diff(tcheby) >= 0), "more weight on objective 1 never picks a worse objective-1 value"
    # the figure uses the reward's own scalarizer: at equal weights Tchebycheff prefers the middle point
    middle = scalarize({"a": [0.0, 0.25, 1.0], "b": [1.0, 0.25, 0.0]}, {"a": 0.5, "b": 0.5},
                       scalarizer="tchebycheff", ideal={"a": 1.0, "b": 1.0})
    assert int(np.argmax(middle)) == 1
