"""Live training from a notebook: a background runner and ipywidgets panels that steer the reward while it runs.

    panel = ControlPanel(Trainer(cfg))
    display(panel)              # a slider per objective weight, scalarizer, Pause / Resume / Stop, live plots
    panel.start()               # trains in a background thread
    await panel.wait_async()    # returns when training ends; widget events keep flowing meanwhile

Why a thread and an `await`: the kernel handles a widget's messages (a slider moved, a button clicked) on the
same channel as cell executions. A cell that blocks (`thread.join()`, `time.sleep`) holds them back until it ends,
so the sliders would only act after training. Training therefore runs in a thread, and the cell that waits for it
awaits (`wait_async`): ipykernel 7.4 dispatches comm messages while the running cell awaits (ipykernel PR #1565;
older kernels hold them like a blocking cell; tests/test_live.py checks the kernel we install), so a moved slider
calls `trainer.reward.weights.set(...)` at once and the next step's metrics record the new weights. Under
papermill nobody moves the sliders; `await panel.wait_async()` simply blocks until the run ends. `wait()` is the
blocking variant for scripts.

Semantics: a weight change applies from the next scored batch (the step in progress keeps the weights it began
with); the scalarizer choice from the next scored batch too. Stop finishes the current step and saves a
checkpoint (`Trainer.stop`). Pause takes effect between steps. A fresh run (trainer at step 0, not resumed) starts
new metrics.jsonl / rollouts.jsonl files instead of appending to those of an earlier run with the same name. With
`train.eval_every` the live dashboard draws the held-out pass@1 beside the reward and the status line shows its latest value.

`RewardExplorer` is the same slider set without training: it re-scores a fixed list of completions and shows
them ranked, so you can see what a weight or scalarizer change does before you train with it.
"""

from __future__ import annotations

import asyncio
import html
import threading
import time
from pathlib import Path
from typing import Mapping, Sequence

import ipywidgets as widgets
import pandas as pd

from .data import PromptExample
from .plots import figure_png, metrics_frame, plot_dashboard, run_figures, save_figures
from .rewards import SCALARIZERS, MultiObjectiveReward, WeightsError
from .runs import archive_run_logs

MAX_WEIGHT = 2.0  # slider range is [0, MAX_WEIGHT] unless a weight starts higher


# ----------------------------------------------------------------------------
# The background runner


def clear_run_logs(trainer) -> bool:
    """Start new metrics.jsonl / rollouts.jsonl when `trainer` starts afresh (an earlier run's are renamed, kept)."""
    if trainer.step != 0 or trainer.cfg.train.resume:
        return False
    archive_run_logs(Path(trainer.output_dir))
    return True


class TrainingRunner:
    """Runs `trainer.train()` in a daemon thread; pause / resume / stop it; wait for it (blocking or awaiting)."""

    def __init__(self, trainer, *, fresh: bool = True):
        self.trainer = trainer
        self.thread: threading.Thread | None = None
        self.error: BaseException | None = None
        if fresh:
            clear_run_logs(trainer)

    @property
    def state(self) -> str:
        """idle | running | paused | stopping | finished | failed."""
        if self.thread is None:
            return "idle"
        if self.thread.is_alive():
            if self.trainer.stop_event.is_set():
                return "stopping"
            return "running" if self.trainer.run_event.is_set() else "paused"
        return "failed" if self.error is not None else "finished"

    def start(self, steps: int | None = None) -> None:
        """Start training (up to train.total_steps, or `steps` more) in the background."""
        if self.thread is not None and self.thread.is_alive():
            raise RuntimeError("training is already running; stop() it or wait() for it first")
        self.error = None
        self.trainer.run_event.set()
        self.thread = threading.Thread(target=self._run, args=(steps,), name="dapo-train", daemon=True)
        self.thread.start()

    def _run(self, steps: int | None) -> None:
        try:
            self.trainer.train(steps)
        except BaseException as error:  # re-raised in wait(); the thread must not die silently
            self.error = error

    def pause(self) -> None:
        """Hold training before the next step."""
        self.trainer.run_event.clear()

    def resume(self) -> None:
        """Continue after pause()."""
        self.trainer.run_event.set()

    def stop(self) -> None:
        """Finish the current step, save a checkpoint and end (thread-safe)."""
        self.trainer.stop()

    def wait(self, timeout: float | None = None) -> list[dict]:
        """Block until training ends (raises what the training thread raised); returns the trainer's history."""
        if self.thread is not None:
            self.thread.join(timeout)
            if self.thread.is_alive():
                raise TimeoutError(f"training still running after {timeout} s (at step {self.trainer.step})")
        return self._result()

    async def wait_async(self, poll_seconds: float = 0.2, timeout: float | None = None) -> list[dict]:
        """Await the end of training while the kernel keeps handling widget events; returns the history."""
        start = time.monotonic()
        while self.thread is not None and self.thread.is_alive():
            if timeout is not None and time.monotonic() - start > timeout:
                raise TimeoutError(f"training still running after {timeout} s (at step {self.trainer.step})")
            await asyncio.sleep(poll_seconds)
        return self._result()

    def _result(self) -> list[dict]:
        if self.error is not None:
            raise RuntimeError(f"training failed at step {self.trainer.step + 1}: {self.error!r}") from self.error
        return self.trainer.history


# ----------------------------------------------------------------------------
# Widgets shared by the panels


def weight_sliders(weights: Mapping[str, float], max_value: float = MAX_WEIGHT) -> dict[str, widgets.FloatSlider]:
    """One FloatSlider per objective; description = the objective name, CSS class `dapo-weight-<name>`."""
    top = max([max_value, *weights.values()])
    sliders = {}
    for name, value in weights.items():
        slider = widgets.FloatSlider(value=value, min=0.0, max=top, step=0.05, description=name,
                                     continuous_update=False, readout_format=".2f",
                                     style={"description_width": "initial"})
        slider.add_class(f"dapo-weight-{name}")
        sliders[name] = slider
    return sliders


def scalarizer_dropdown(value: str) -> widgets.Dropdown:
    """The scalarizer choice; description `scalarizer`, CSS class `dapo-scalarizer`."""
    dropdown = widgets.Dropdown(options=list(SCALARIZERS), value=value, description="scalarizer")
    dropdown.add_class("dapo-scalarizer")
    return dropdown


def _button(label: str, icon: str) -> widgets.Button:
    button = widgets.Button(description=label, icon=icon, tooltip=f"{label} training")
    button.add_class(f"dapo-{label.lower()}")
    return button


# ----------------------------------------------------------------------------
# The training control panel


class ControlPanel:
    """Sliders, scalarizer, Pause / Resume / Stop and live plots around one Trainer (display it, then start())."""

    def __init__(self, trainer, *, plot_every: int = 1, max_weight: float = MAX_WEIGHT, fresh: bool = True):
        self.trainer = trainer
        self.runner = TrainingRunner(trainer, fresh=fresh)
        self.plot_every = max(int(plot_every), 0)
        self.changes: list[dict] = []  # every weight / scalarizer change made from the panel: step, what, value
        self.last_error = ""  # the latest problem, shown under the status line
        self._local = threading.local()  # .syncing: this thread is writing slider values itself (no echo)

        self.max_weight = max_weight
        self.sliders = weight_sliders(trainer.reward.weights.get(), max_weight)
        self.scalarizer = scalarizer_dropdown(trainer.reward.scalarizer)
        self.pause_button, self.resume_button = _button("Pause", "pause"), _button("Resume", "play")
        self.stop_button = _button("Stop", "stop")
        self.status = widgets.HTML()
        self.status.add_class("dapo-status")
        self.plot = widgets.Image(format="png", layout=widgets.Layout(max_width="100%"))
        self.plot.add_class("dapo-plot")

        for name, slider in self.sliders.items():
            slider.observe(lambda change, name=name: self._on_slider(name, change), names="value")
        self.scalarizer.observe(self._on_scalarizer, names="value")
        self.pause_button.on_click(lambda _: self._act(self.runner.pause))
        self.resume_button.on_click(lambda _: self._act(self.runner.resume))
        self.stop_button.on_click(lambda _: self._act(self.runner.stop))
        trainer.callbacks.append(self._on_step)

        self.controls = widgets.VBox([widgets.HTML("<b>objective weights</b> (apply from the next step)"),
                                      *self.sliders.values(), self.scalarizer])
        buttons = widgets.HBox([self.pause_button, self.resume_button, self.stop_button])
        self.widget = widgets.VBox([widgets.HBox([self.controls, widgets.VBox([buttons, self.status])]), self.plot])
        self._refresh()

    def _repr_mimebundle_(self, **kwargs):
        return self.widget._repr_mimebundle_(**kwargs)

    # -- running -------------------------------------------------------------

    def start(self, steps: int | None = None) -> None:
        """Start training in the background."""
        self.runner.start(steps)
        self._refresh()

    def wait(self, timeout: float | None = None) -> list[dict]:
        """Block until training ends (widget events wait too; prefer `await wait_async()` in a notebook)."""
        try:
            return self.runner.wait(timeout)
        finally:
            self._refresh()

    async def wait_async(self, timeout: float | None = None) -> list[dict]:
        """Await the end of training; sliders and buttons keep working meanwhile."""
        try:
            return await self.runner.wait_async(timeout=timeout)
        finally:
            self._refresh()

    def save_plots(self, folder: str | Path | None = None) -> list[Path]:
        """The run's standard figures as PNGs in <folder> (default runs/<run>/plots); returns the paths."""
        folder = Path(folder) if folder is not None else Path(self.trainer.output_dir) / "plots"
        return save_figures(run_figures(metrics_frame(self.trainer.history), self.trainer.cfg.train.run_name), folder)

    # -- widget events (kernel thread) -----------------------------------------

    def _on_slider(self, name: str, change) -> None:
        if getattr(self._local, "syncing", False):
            return
        try:
            self.trainer.reward.weights.set({name: float(change["new"])})
        except WeightsError as error:  # e.g. every weight at 0: put the slider back
            self._set_sliders({name: change["old"]})
            self._refresh(error=str(error))
            return
        self.changes.append({"after_step": self.trainer.step, "what": f"weights/{name}", "value": float(change["new"])})
        self._refresh(error="")

    def _on_scalarizer(self, change) -> None:
        self.trainer.reward.scalarizer = change["new"]
        self.changes.append({"after_step": self.trainer.step, "what": "scalarizer", "value": change["new"]})
        self._refresh()

    def _act(self, action) -> None:
        action()
        self._refresh()

    # -- training events (training thread) ---------------------------------------

    def _set_sliders(self, values: Mapping[str, float]) -> None:
        """Show `values` on the sliders without feeding them back into the weights."""
        self._local.syncing = True
        try:
            for name, value in values.items():
                slider = self.sliders.get(name)
                if slider is not None and slider.value != value:
                    slider.max = max(slider.max, value)
                    slider.value = value
        finally:
            self._local.syncing = False

    def _add_new_sliders(self, weights: Mapping[str, float]) -> None:
        """Sliders for objectives that appeared since the panel was built (a plugin's breakdown keys, known after its
        first call)."""
        new = {name: value for name, value in weights.items() if name not in self.sliders}
        if not new:
            return
        for name, slider in weight_sliders(new, self.max_weight).items():
            slider.observe(lambda change, name=name: self._on_slider(name, change), names="value")
            self.sliders[name] = slider
        self.controls.children = [self.controls.children[0], *self.sliders.values(), self.scalarizer]

    def _on_step(self, metrics: dict) -> None:
        weights = self.trainer.reward.weights.get()
        self._add_new_sliders(weights)
        self._set_sliders(weights)  # a schedule may have moved weights
        error = ""
        if self.plot_every and (metrics["step"] % self.plot_every == 0 or metrics["step"] >= self.trainer.cfg.train.total_steps):
            try:
                self.plot.value = figure_png(plot_dashboard(metrics_frame(self.trainer.history), self.trainer.cfg.train.run_name))
            except Exception as failure:  # a plotting problem must not end the training run: show it instead
                error = f"live plot failed at step {metrics['step']}: {failure!r}"
        self._refresh(error=error)

    def _refresh(self, error: str | None = None) -> None:
        """Redraw status and buttons; `error` replaces the problem shown ("" clears it, None keeps it)."""
        if error is not None:
            self.last_error = error
        state = self.runner.state
        history = self.trainer.history
        last = next((m for m in reversed(history) if "reward" in m), {})  # not a step-0 line of eval/* only
        held_out = next((m for m in reversed(history) if "eval/pass@1" in m), None)  # train.eval_every
        weights = ", ".join(f"{k}={v:g}" for k, v in self.trainer.reward.weights.get().items())
        text = (f"<b>{html.escape(state)}</b> · step {self.trainer.step}/{self.trainer.cfg.train.total_steps}"
                + (f" · reward {last.get('reward', float('nan')):.3f}" if last else "")
                + (f" · held-out pass@1 {held_out['eval/pass@1']:.3f} (step {held_out['step']})" if held_out else "")
                + f"<br>weights: {html.escape(weights)} · scalarizer: {html.escape(self.trainer.reward.scalarizer)}")
        if self.last_error:
            text += f"<br><span style='color:#b00'>{html.escape(self.last_error)}</span>"
        self.status.value = text
        self.pause_button.disabled = state != "running"
        self.resume_button.disabled = state != "paused"
        self.stop_button.disabled = state not in ("running", "paused")


# ----------------------------------------------------------------------------
# Reward design without training


class RewardExplorer:
    """Weight sliders and a scalarizer choice that re-rank a fixed table of completions as they move."""

    def __init__(self, reward: MultiObjectiveReward, completions: Sequence[str], examples: Sequence[PromptExample | str],
                 *, labels: Sequence[str] | None = None, num_tokens: Sequence[int] | None = None,
                 completion_ids: Sequence[Sequence[int]] | None = None, max_weight: float = MAX_WEIGHT,
                 text_width: int = 70):
        """`examples`: the example (`PromptExample`) each completion answers, or just its ground-truth text; scored
        with `reward.score_examples`, the call training makes, as split "test" (reads the weights, records nothing)."""
        if labels is not None and len(labels) != len(completions):
            raise ValueError(f"labels has {len(labels)} entries but there are {len(completions)} completions")
        if len(examples) != len(completions):
            raise ValueError(f"examples has {len(examples)} entries but there are {len(completions)} completions")
        self.reward = reward
        self.completions = list(completions)
        self.examples = [ex if isinstance(ex, PromptExample) else PromptExample(f"#{i}", "", str(ex))
                         for i, ex in enumerate(examples)]
        self.completion_ids = list(completion_ids) if completion_ids is not None else None
        self.labels = list(labels) if labels is not None else [f"#{i}" for i in range(len(completions))]
        self.num_tokens = list(num_tokens) if num_tokens is not None else None
        self.text_width = text_width
        self.table = self.rank()  # first, so that a plugin's breakdown keys (known after one call) get sliders too
        self.sliders = weight_sliders(reward.weights.get(), max_weight)
        self.scalarizer = scalarizer_dropdown(reward.scalarizer)
        self.message = widgets.HTML()
        self.view = widgets.HTML()
        self.view.add_class("dapo-ranking")
        for name, slider in self.sliders.items():
            slider.observe(lambda change, name=name: self._on_slider(name, change), names="value")
        self.scalarizer.observe(self._on_scalarizer, names="value")
        self.widget = widgets.VBox([widgets.HBox([widgets.VBox(list(self.sliders.values())),
                                                  widgets.VBox([self.scalarizer, self.message])]), self.view])
        self._show()

    def _repr_mimebundle_(self, **kwargs):
        return self.widget._repr_mimebundle_(**kwargs)

    def rank(self) -> pd.DataFrame:
        """Score every completion under the current weights and scalarizer; best first."""
        batch = self.reward.score_examples(self.completions, self.examples, split="test", num_tokens=self.num_tokens,
                                           completion_ids=self.completion_ids)
        table = pd.DataFrame({"label": self.labels, "score": batch.scores, **batch.objectives,
                              "text": [t if len(t) <= self.text_width else t[: self.text_width - 1] + "…"
                                       for t in (c.replace("\n", " ⏎ ") for c in self.completions)]})
        table = table.sort_values("score", ascending=False, kind="stable").reset_index(drop=True)
        table.insert(0, "rank", range(1, len(table) + 1))
        return table

    def _on_slider(self, name: str, change) -> None:
        try:
            self.reward.weights.set({name: float(change["new"])})
        except WeightsError as error:
            self.sliders[name].value = change["old"]  # re-enters this handler with the old, valid value
            self.message.value = f"<span style='color:#b00'>{html.escape(str(error))}</span>"
            return
        self.message.value = ""
        self.table = self.rank()
        self._show()

    def _on_scalarizer(self, change) -> None:
        self.reward.scalarizer = change["new"]
        self.table = self.rank()
        self._show()

    def _show(self) -> None:
        self.view.value = self.table.to_html(index=False, float_format=lambda v: f"{v:.4g}", escape=True)
