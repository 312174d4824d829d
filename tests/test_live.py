"""The live panels: background runner, weight sliders, scalarizer, Pause / Resume / Stop, and a real kernel
handling slider and button messages while a cell awaits training (what a browser does, minus the browser)."""

from __future__ import annotations

import asyncio
import time

import pytest

from dapo_nb.checkpoint import latest_checkpoint
from dapo_nb.config import load_config
from dapo_nb.live import ControlPanel, RewardExplorer, TrainingRunner, scalarizer_dropdown, weight_sliders
from dapo_nb.rewards import SCALARIZERS, MultiObjectiveReward
from dapo_nb.trainer import Trainer


def overrides(tmp_path, train_file, *extra) -> list[str]:
    """A tiny run of the random 2-layer model; it is never correct, so dynamic sampling filters on `detail`."""
    return [f"model.pretrained_model_name_or_path={tmp_path / 'model'}", f"data.train_path={train_file}",
            "sampling.max_new_tokens=4", "ppo.batch_size=1", "dapo.group_size=2", "train.total_steps=3",
            "train.save_every=0", f"train.output_dir={tmp_path / 'run'}", f"train.checkpoint_dir={tmp_path / 'ckpt'}",
            "train.run_name=live", "reward.objectives=[detail, format]", "reward.weights={detail: 1.0, format: 0.0}",
            "dapo.filter_metric=detail", "dapo.max_gen_batches=1", *extra]


def make_trainer(tmp_path, train_file, *extra) -> Trainer:
    return Trainer(load_config(overrides=overrides(tmp_path, train_file, *extra)))


def wait_for(predicate, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.05)


# ----------------------------------------------------------------------------
# Widgets


def test_sliders_and_dropdown_are_labelled_for_people_and_for_browser_tests():
    sliders = weight_sliders({"correctness": 1.0, "format": 3.0})
    assert [s.description for s in sliders.values()] == ["correctness", "format"]
    assert sliders["correctness"].max == 3.0 and sliders["format"].value == 3.0  # range grows to fit a big weight
    assert "dapo-weight-format" in sliders["format"]._dom_classes
    dropdown = scalarizer_dropdown("tchebycheff")
    assert (dropdown.description, list(dropdown.options), dropdown.value) == ("scalarizer", list(SCALARIZERS), "tchebycheff")


def seed_like_texts() -> tuple[list[str], list[str]]:
    """A correct terse answer and a wrong, long, well-structured one (seed Examples A / B in spirit)."""
    good = "12 + 7 = 19\nAnswer: 19"
    wordy = "\n".join(f"Step {i}: we carefully add the numbers again and again." for i in range(12)) + "\nAnswer: 20"
    return [good, wordy], ["19", "19"]


def test_reward_explorer_reranks_when_a_slider_or_the_scalarizer_moves():
    texts, truths = seed_like_texts()
    reward = MultiObjectiveReward(objectives=["correctness", "clarity"], weights={"correctness": 1.0, "clarity": 0.1})
    explorer = RewardExplorer(reward, texts, truths, labels=["good", "wordy"])
    assert explorer.table["label"].tolist() == ["good", "wordy"]
    assert explorer.table["rank"].tolist() == [1, 2]
    explorer.sliders["correctness"].value = 0.0  # what a moved slider does in the kernel
    assert reward.weights.get()["correctness"] == 0.0
    assert explorer.table["label"].tolist() == ["wordy", "good"]
    assert "wordy" in explorer.view.value.split("good")[0], "the HTML table shows the new order"
    explorer.scalarizer.value = "tchebycheff"
    assert reward.scalarizer == "tchebycheff" and (explorer.table["score"] <= 0).all()


def test_reward_explorer_refuses_all_zero_weights_and_puts_the_slider_back():
    texts, truths = seed_like_texts()
    reward = MultiObjectiveReward(objectives=["correctness", "clarity"], weights={"correctness": 1.0, "clarity": 0.0})
    explorer = RewardExplorer(reward, texts, truths)
    explorer.sliders["correctness"].value = 0.0
    assert explorer.sliders["correctness"].value == 1.0 and reward.weights.get()["correctness"] == 1.0
    assert "at least one weight must be" in explorer.message.value
    with pytest.raises(ValueError, match="labels has 1"):
        RewardExplorer(reward, texts, truths, labels=["one"])


# ----------------------------------------------------------------------------
# The control panel around a real (tiny) trainer


def test_pause_move_a_slider_resume_and_the_next_steps_record_it(tmp_path, train_file, model_dir):
    trainer = make_trainer(tmp_path, train_file)
    panel = ControlPanel(trainer)
    assert panel.sliders["format"].value == 0.0 and panel.pause_button.disabled  # idle: nothing to pause
    trainer.callbacks.append(lambda m: panel.pause_button.click() if m["step"] == 1 else None)
    panel.start()
    wait_for(lambda: panel.runner.state == "paused")
    assert trainer.step == 1 and not panel.resume_button.disabled and panel.pause_button.disabled
    assert "paused" in panel.status.value
    time.sleep(0.5)
    assert trainer.step == 1, "a paused run takes no step"
    panel.sliders["format"].value = 0.5
    panel.resume_button.click()
    history = panel.wait(timeout=120)
    assert [m["weights/format"] for m in history] == [0.0, 0.5, 0.5]
    assert panel.changes == [{"after_step": 1, "what": "weights/format", "value": 0.5}]
    assert panel.plot.value[:4] == b"\x89PNG" and "finished" in panel.status.value
    assert latest_checkpoint(tmp_path / "ckpt" / "live").name == "step-3"
    paths = panel.save_plots()
    assert {p.name for p in paths} >= {"dashboard.png", "weights.png"} and paths[0].parent == tmp_path / "run" / "plots"


def test_stop_button_finishes_the_step_and_saves(tmp_path, train_file, model_dir):
    trainer = make_trainer(tmp_path, train_file, "train.total_steps=50")
    panel = ControlPanel(trainer, plot_every=0)
    trainer.callbacks.append(lambda m: panel.stop_button.click() if m["step"] == 1 else None)
    panel.start()
    history = asyncio.run(panel.wait_async(timeout=120))
    assert len(history) == 1 and trainer.step == 1 and panel.runner.state == "finished"
    assert latest_checkpoint(tmp_path / "ckpt" / "live").name == "step-1"
    assert panel.stop_button.disabled and panel.plot.value == b""


def test_scalarizer_and_schedule_show_on_the_panel(tmp_path, train_file, model_dir):
    trainer = make_trainer(tmp_path, train_file, "train.total_steps=2", "reward.schedule={2: {format: 2.5}}")
    panel = ControlPanel(trainer, plot_every=0)
    panel.scalarizer.value = "smooth_tchebycheff"
    assert trainer.reward.scalarizer == "smooth_tchebycheff"
    panel.start()
    history = panel.wait(timeout=120)
    assert [m["weights/format"] for m in history] == [0.0, 2.5]
    assert panel.sliders["format"].value == 2.5 and panel.sliders["format"].max >= 2.5  # synced, not fed back
    assert [c["what"] for c in panel.changes] == ["scalarizer"]
    assert all(m["reward"] <= 0 for m in history), "Tchebycheff-type scores are <= 0"


def test_all_zero_weights_are_refused_on_the_panel(tmp_path, train_file, model_dir):
    panel = ControlPanel(make_trainer(tmp_path, train_file))
    panel.sliders["detail"].value = 0.0
    assert panel.sliders["detail"].value == 1.0 and panel.trainer.reward.weights.get()["detail"] == 1.0
    assert "at least one weight must be" in panel.status.value and panel.changes == []


def test_runner_reports_a_failing_run_and_starts_fresh_logs(tmp_path, train_file, model_dir):
    (tmp_path / "run").mkdir()
    (tmp_path / "run" / "metrics.jsonl").write_text('{"step": 7, "reward": 1.0}\n')  # an earlier run of this name
    trainer = make_trainer(tmp_path, train_file, "dapo.filter_metric=creativity")  # not an objective: fails in step 1
    runner = TrainingRunner(trainer)
    assert not (tmp_path / "run" / "metrics.jsonl").exists()
    runner.start()
    with pytest.raises(RuntimeError, match="training failed at step 1") as info:
        runner.wait(timeout=120)
    assert "creativity" in str(info.value.__cause__) and runner.state == "failed"


# ----------------------------------------------------------------------------
# A real kernel: the notebook's `await panel.wait_async()` keeps slider and button messages flowing


KERNEL_SETUP = """
from dapo_nb.config import load_config
from dapo_nb.live import ControlPanel
from dapo_nb.trainer import Trainer
trainer = Trainer(load_config(overrides={overrides!r}))
panel = ControlPanel(trainer, plot_every=0)
trainer.callbacks.append(lambda m: panel.runner.pause() if m["step"] == 1 else None)
display(panel)
print(panel.sliders["format"].model_id, panel.resume_button.model_id)
"""


def test_kernel_handles_widget_messages_while_the_cell_awaits_training(tmp_path, train_file, model_dir):
    from jupyter_client.manager import start_new_kernel

    km, kc = start_new_kernel(kernel_name="python3", cwd=str(tmp_path))
    try:
        ids = run_cell(kc, KERNEL_SETUP.format(overrides=overrides(tmp_path, train_file))).split()
        slider_id, resume_id = ids[-2], ids[-1]
        run_cell(kc, "panel.start()")
        waiting = kc.execute("history = await panel.wait_async(timeout=120)\nprint([m['weights/format'] for m in history])")
        metrics = tmp_path / "run" / "metrics.jsonl"
        wait_for(lambda: metrics.is_file() and len(metrics.read_text().splitlines()) == 1)  # paused after step 1
        # exactly what a browser's widget manager sends: a state update, then a button click
        kc.shell_channel.send(kc.session.msg("comm_msg", {"comm_id": slider_id, "data": {
            "method": "update", "state": {"value": 0.5}, "buffer_paths": []}}))
        time.sleep(0.5)
        kc.shell_channel.send(kc.session.msg("comm_msg", {"comm_id": resume_id, "data": {
            "method": "custom", "content": {"event": "click"}}}))
        output = collect(kc, waiting, timeout=180)
        assert output.strip().splitlines()[-1] == "[0.0, 0.5, 0.5]", output
    finally:
        kc.stop_channels()
        km.shutdown_kernel(now=True)


def collect(kc, msg_id: str, timeout: float) -> str:
    """Stream text of one execution until the kernel is idle; raises on an error output."""
    text = []
    deadline = time.monotonic() + timeout
    while True:
        msg = kc.get_iopub_msg(timeout=max(deadline - time.monotonic(), 0.1))
        if msg["parent_header"].get("msg_id") != msg_id:
            continue
        kind, content = msg["msg_type"], msg["content"]
        if kind == "stream":
            text.append(content["text"])
        elif kind == "error":
            raise AssertionError(f"kernel error: {content['ename']}: {content['evalue']}")
        elif kind == "status" and content["execution_state"] == "idle":
            return "".join(text)


def run_cell(kc, code: str, timeout: float = 180) -> str:
    return collect(kc, kc.execute(code), timeout)


def test_a_failing_live_plot_is_shown_and_training_goes_on(tmp_path, train_file, model_dir, monkeypatch):
    def broken_plot(*args, **kwargs):
        raise RuntimeError("no room for the legend")

    monkeypatch.setattr("dapo_nb.live.plot_dashboard", broken_plot)  # fault injection: the plot code itself fails
    trainer = make_trainer(tmp_path, train_file, "train.total_steps=2")
    panel = ControlPanel(trainer)
    panel.start()
    assert len(panel.wait(timeout=120)) == 2
    assert "live plot failed at step 2" in panel.status.value and "no room for the legend" in panel.status.value
