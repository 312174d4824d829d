"""Held-out evaluation during training (train.eval_every): eval/* metrics at the right steps, the training run itself
unchanged (same rollouts, same losses, same model mode), and the held-out curve on the dashboard and the live panel."""

from __future__ import annotations

import json
import math

import pytest

from dapo_nb import plots
from dapo_nb.config import ConfigError
from dapo_nb.live import ControlPanel
from dapo_nb.trainer import Trainer

from tests.test_trainer import TIMING_KEYS, make_cfg

EVAL_KEYS = {"eval/pass@1", "eval/format@1", "eval/num_prompts"}


def _lines(path):
    return [json.loads(line) for line in path.read_text().splitlines()]


def _without_eval_and_timing(rows):
    return [{k: v for k, v in r.items() if not k.startswith("eval/") and k not in (*TIMING_KEYS, "time/eval")}
            for r in rows if r["step"] > 0]


def test_eval_every_logs_held_out_metrics_and_leaves_training_unchanged(tmp_path, train_file, model_dir):
    off_dir, on_dir = tmp_path / "off", tmp_path / "on"
    off = Trainer(make_cfg(tmp_path, train_file, f"train.output_dir={off_dir}", f"train.checkpoint_dir={off_dir}/ckpt"))
    off.train()
    on = Trainer(make_cfg(tmp_path, train_file, f"train.output_dir={on_dir}", f"train.checkpoint_dir={on_dir}/ckpt",
                          f"data.test_path={train_file}", "train.eval_every=2", "train.eval_prompts=3",
                          "train.eval_at_start=true"))
    panel = ControlPanel(on, plot_every=1)  # the live panel around the run: its plot and status show the held-out curve
    panel.start()
    panel.wait(timeout=300)

    metrics = _lines(on_dir / "metrics.jsonl")
    assert [m["step"] for m in metrics] == [0, 1, 2, 3, 4]
    assert [m["step"] for m in metrics if EVAL_KEYS <= set(m)] == [0, 2, 4]
    assert not any(k.startswith("eval/") for m in metrics if m["step"] in (1, 3) for k in m)
    # the reward's objectives on the held-out prompts, named as training names them (eval/ + rewards/<name>/mean)
    held_out_objectives = {"eval/reward", "eval/rewards/detail/mean"}
    assert set(metrics[0]) - {"step", "time/eval"} == (EVAL_KEYS | {"eval/pass@1_ci95_low", "eval/pass@1_ci95_high"}
                                                      | held_out_objectives)
    for m in metrics:
        if "eval/pass@1" in m:
            assert 0.0 <= m["eval/pass@1"] <= 1.0 and 0.0 <= m["eval/format@1"] <= 1.0
            assert 0.0 <= m["eval/rewards/detail/mean"] <= 1.0 and m["eval/reward"] == m["eval/rewards/detail/mean"]
            assert m["eval/num_prompts"] == 3 and m["time/eval"] > 0
            # the trainer asks evaluate() for 95% Wilson bounds
            assert 0.0 <= m["eval/pass@1_ci95_low"] <= m["eval/pass@1"] <= m["eval/pass@1_ci95_high"] <= 1.0
            if m["step"]:  # the evaluation took place after the step's timings were taken
                assert math.isclose(m["tokens_per_second"], m["num_generated_tokens"] / m["step_time"])
                assert math.isclose(m["step_time"], m["time/generate_and_score"] + m["time/update"])

    # the training run is the one without evaluation: same sampled completions, same updates, same RNG, same mode
    same = lambda path: [(r["step"], r["qid"], r["completion"], r["advantage"]) for r in _lines(path)]
    assert same(on_dir / "rollouts.jsonl") == same(off_dir / "rollouts.jsonl")
    assert _without_eval_and_timing(metrics) == _without_eval_and_timing(_lines(off_dir / "metrics.jsonl"))
    assert on.generator.get_state().equal(off.generator.get_state())
    assert on.model.training == off.model.training
    assert on.reward.weights.get() == off.reward.weights.get()

    assert panel.plot.value[:4] == b"\x89PNG" and "held-out pass@1" in panel.status.value and "(step 4)" in panel.status.value
    df = plots.metrics_frame(on.history)
    assert plots.weight_changes(df).empty  # the step-0 line has no weights: not a weight change at step 1
    assert plots.held_out(df)["step"].tolist() == [0, 2, 4]


def test_the_last_step_is_evaluated_so_the_curve_ends_at_the_checkpoint(tmp_path, train_file, model_dir):
    """eval_every=3 of 4 steps: evaluated at 3 and at 4, the last; a max_minutes budget spent by step 1 ends the run
    there, evaluated too. One metrics line per step either way."""
    by_count = Trainer(make_cfg(tmp_path, train_file, f"train.output_dir={tmp_path / 'count'}",
                                f"data.test_path={train_file}", "train.eval_every=3", "train.eval_prompts=2"))
    by_count.train()
    assert [m["step"] for m in by_count.history] == [1, 2, 3, 4]
    assert [m["step"] for m in by_count.history if "eval/pass@1" in m] == [3, 4]
    by_count.train_step()  # past train(): only eval_every decides again (step 5: no evaluation)
    assert "eval/pass@1" not in by_count.history[-1]

    by_clock = Trainer(make_cfg(tmp_path, train_file, f"train.output_dir={tmp_path / 'clock'}",
                                f"train.checkpoint_dir={tmp_path / 'clock-ckpt'}", f"data.test_path={train_file}",
                                "train.eval_every=3", "train.eval_prompts=2", "train.max_minutes=0.0001"))
    by_clock.train()
    assert [m["step"] for m in by_clock.history] == [1] and "eval/pass@1" in by_clock.history[0]
    assert (tmp_path / "clock-ckpt" / "t" / "step-1").is_dir()


def test_eval_keys_are_checked_and_off_by_default(tmp_path, train_file, model_dir):
    trainer = Trainer(make_cfg(tmp_path, train_file, "train.total_steps=1"))
    assert trainer.eval_examples is None
    assert not any(k.startswith("eval/") for k in trainer.train_step())
    with pytest.raises(ConfigError, match="train.eval_every"):
        Trainer(make_cfg(tmp_path, train_file, "train.eval_every=-1"))


def _history_with_held_out(steps: int = 6, every: int = 2) -> list[dict]:
    rows = [{"step": 0, "eval/pass@1": 0.1, "eval/format@1": 0.5, "eval/num_prompts": 8}]  # train.eval_at_start
    for step in range(1, steps + 1):
        row = {"step": step, "reward": 0.1 * step, "reward_std": 0.05, "rewards/correctness/mean": 0.05 * step,
               "weights/correctness": 1.0}
        if step % every == 0:
            row.update({"eval/pass@1": 0.1 + 0.05 * step, "eval/format@1": 0.6, "eval/num_prompts": 8,
                        "eval/pass@1_ci95_low": 0.05 * step, "eval/pass@1_ci95_high": 0.2 + 0.05 * step})
        rows.append(row)
    return rows


def _labels(ax) -> list[str]:
    return [line.get_label() for line in ax.get_lines()]


def test_dashboard_and_rewards_figure_draw_the_held_out_curve_at_the_evaluated_steps():
    df = plots.metrics_frame(_history_with_held_out())
    for fig in (plots.plot_dashboard(df, "t"), plots.plot_rewards(df)):
        reward_ax = fig.axes[0]
        labels = _labels(reward_ax)
        assert "reward" in labels and "held-out pass@1 (8 prompts)" in labels and "held-out format@1" in labels
        line = reward_ax.get_lines()[labels.index("held-out pass@1 (8 prompts)")]
        assert list(line.get_xdata()) == [0, 2, 4, 6]  # only the steps that have it: no NaN gaps in the line
        assert list(line.get_ydata()) == pytest.approx([0.1, 0.2, 0.3, 0.4])
        assert "pass@1 95% CI" in reward_ax.get_legend_handles_labels()[1]
        plots.figure_png(fig)  # renders
    plain = plots.metrics_frame([r for r in _history_with_held_out() if r["step"] > 0 and "eval/pass@1" not in r])
    assert not [l for l in _labels(plots.plot_dashboard(plain).axes[0]) if l.startswith("held-out")]
