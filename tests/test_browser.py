"""Real-browser test: JupyterLab in Debian's headless Chromium runs 03_training.ipynb and a person moves a slider.

    bash tests/browser_support/install.sh                # once: apt-get install chromium; pip install playwright
    .venv/bin/python -m pytest -q -m browser tests/test_browser.py

What happens: a temp folder gets a copy of the notebook, its parameters overridden to a tiny run by a cell
injected after its `parameters` cell (as papermill does), and 16 generated arithmetic prompts; nothing in the
repo is written except the screenshots.
`jupyter lab` serves it on 127.0.0.1 with a random token; Playwright drives /usr/bin/chromium (never a browser
download) to open the notebook, Run > Run All Cells, wait for the control panel, type a new value into one
weight slider's readout while training runs, and check that `runs/<run>/metrics.jsonl` records the old weight
at an early step and the new one at a later step. Stop (the panel's button) ends the run with a checkpoint.

Screenshots (git-ignored): tests/output/browser/browser.png and browser-harness.png; on failure
browser-failure.png / browser-harness-failure.png, and the error carries the first traceback shown in the
notebook or the tail of JupyterLab's log. Without Chromium or Playwright the tests skip locally and fail
under CI=true. `test_widget_harness` proves the JupyterLab + Chromium + ipywidgets path on a two-cell
stand-in notebook, so a failure there is the harness, a failure only in the training test is the notebook.
"""

from __future__ import annotations

import contextlib
from pathlib import Path

import nbformat
import pytest
from dapo_nb.arithmetic import make_splits, write_jsonl
from browser_support.lab import (JupyterLab, cell_errors, launch_chromium, open_notebook, read_jsonl, require_browser,
                                 run_all_cells, screenshot, set_slider, slider, unless_cell_error, wait_for,
                                 wait_for_kernel_idle)

pytestmark = pytest.mark.browser

REPO = Path(__file__).resolve().parents[1]
SCREENSHOT_DIR = REPO / "tests" / "output" / "browser"  # git-ignored; never the user's notebooks/executed/
TRAINING_NOTEBOOK = "notebooks/03_training.ipynb"
RUN_NAME = "browser"
MOVED, OLD, NEW = "format", 0.2, 0.75  # the slider the test moves, its start and its new value
# a tiny run on the embedded model: 2 prompts x G=2, 8 new tokens, one generation batch per step, plots every
# 2 steps; far more steps than needed, because the test clicks Stop once the new weight is recorded
TRAINING_PARAMETERS = {
    "model": "default", "train_path": "data/browser_train.jsonl", "run_name": RUN_NAME, "steps": 40,
    "weights": {"correctness": 1.0, MOVED: OLD}, "schedule": {}, "batch_size": 2, "group_size": 2,
    "max_new_tokens": 8, "plot_every": 2, "eval_every": 0, "overrides": ["dapo.max_gen_batches=1", "ppo.mini_batch_size=0", "train.threads=1"],
}
KERNELSPEC = {"name": "python3", "display_name": "Python 3 (ipykernel)", "language": "python"}


# ----------------------------------------------------------------------------
# Fixtures: one JupyterLab and one Chromium for the module


@pytest.fixture(scope="module")
def lab_root(tmp_path_factory) -> Path:
    """The temp root JupyterLab serves: notebooks/ (filled by each test) and a small training set in data/."""
    root = tmp_path_factory.mktemp("lab-root")
    (root / "notebooks").mkdir()
    records = make_splits([1], train_per_level=16, test_per_level=0)["train"]  # the shipped task, 16 easy problems
    write_jsonl(records, root / TRAINING_PARAMETERS["train_path"])
    return root


@pytest.fixture(scope="module")
def lab(lab_root, tmp_path_factory):
    """JupyterLab serving `lab_root`; its process group is killed afterwards."""
    require_browser()
    server = JupyterLab(lab_root, tmp_path_factory.mktemp("jupyter-state"))
    try:
        yield server.start()
    finally:
        server.stop()


@pytest.fixture(scope="module")
def browser(lab, tmp_path_factory):
    """A headless Chromium context (fresh profile)."""
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        context = launch_chromium(playwright, tmp_path_factory.mktemp("chromium") / "profile")
        try:
            yield context
        finally:
            context.close()


@contextlib.contextmanager
def diagnostics(page_holder: list, lab: JupyterLab, name: str):
    """On failure: save a screenshot, and re-raise with it and the tail of JupyterLab's log in the message."""
    (SCREENSHOT_DIR / f"{name}-failure.png").unlink(missing_ok=True)
    try:
        yield
    except BaseException as error:
        shot = "(no page)"
        if page_holder:
            with contextlib.suppress(Exception):
                shot = str(screenshot(page_holder[0], SCREENSHOT_DIR / f"{name}-failure.png"))
        log = lab.log_tail()
        raise AssertionError(f"{error}\n\nscreenshot: {shot}\n--- JupyterLab log (tail) ---\n{log}") from error


def write_notebook(source: Path | nbformat.NotebookNode, target: Path, parameters: dict) -> Path:
    """Copy a notebook with a cell setting `parameters` right after its `parameters` cell (as papermill does)."""
    nb = source if isinstance(source, nbformat.NotebookNode) else nbformat.read(source, as_version=4)
    nb.metadata.setdefault("kernelspec", KERNELSPEC)  # no kernel-picker dialog
    tagged = [i for i, cell in enumerate(nb.cells) if "parameters" in cell.metadata.get("tags", [])]
    assert len(tagged) == 1, f"{target.name}: expected one cell tagged `parameters`, found {len(tagged)}"
    code = "# Injected by tests/test_browser.py\n" + "\n".join(f"{k} = {v!r}" for k, v in parameters.items())
    nb.cells.insert(tagged[0] + 1, nbformat.v4.new_code_cell(code, metadata={"tags": ["injected-parameters"]}))
    target.parent.mkdir(parents=True, exist_ok=True)
    nbformat.write(nb, target)
    return target


# ----------------------------------------------------------------------------
# The harness on a stand-in notebook


STAND_IN_CODE = '''\
import json, threading, time
import ipywidgets as widgets

weight = widgets.FloatSlider(value=0.5, min=0.0, max=2.0, step=0.05, description="stand-in weight")
weight.add_class("dapo-weight-stand_in")
live = {"stand_in": weight.value}
weight.observe(lambda change: live.update(stand_in=change["new"]), names="value")

def train():  # records the live weight each "step", like the trainer's metrics.jsonl
    for step in range(1, steps + 1):
        time.sleep(0.5)
        with open(metrics_path, "a") as f:
            f.write(json.dumps({"step": step, "weights/stand_in": live["stand_in"]}) + "\\n")

threading.Thread(target=train, daemon=True).start()
weight'''


def test_widget_harness(lab, browser, lab_root):
    """A slider typed into in Chromium reaches the kernel's observer while a background thread records it."""
    nb = nbformat.v4.new_notebook(metadata={"kernelspec": KERNELSPEC})
    nb.cells = [
        nbformat.v4.new_markdown_cell("# Stand-in for the training panel"),
        nbformat.v4.new_code_cell("steps: int = 240  # recorded steps\nmetrics_path: str = 'never.jsonl'  # output",
                                  metadata={"tags": ["parameters"]}),
        nbformat.v4.new_code_cell(STAND_IN_CODE),
        nbformat.v4.new_code_cell('raise RuntimeError("stand-in failure")'),  # proves cell_errors() sees tracebacks
    ]
    metrics = lab_root / "notebooks" / "stand_in_metrics.jsonl"
    write_notebook(nb, lab_root / "notebooks" / "stand_in.ipynb", {"metrics_path": metrics.name})
    pages: list = []
    with diagnostics(pages, lab, "browser-harness"):
        page = open_notebook(browser, lab, "notebooks/stand_in.ipynb")
        pages.append(page)
        run_all_cells(page)
        slider(page, "stand_in").wait_for(state="visible", timeout=60_000)
        wait_for(lambda: read_jsonl(metrics), 30, f"a first record in {metrics}")
        set_slider(page, "stand_in", 1.25)
        changed = wait_for(lambda: [r for r in read_jsonl(metrics) if r["weights/stand_in"] == 1.25], 30,
                           "a record with the slider's new value")
        records = read_jsonl(metrics)
        assert records[0]["weights/stand_in"] == 0.5
        assert changed[0]["step"] > records[0]["step"]
        errors = wait_for(lambda: cell_errors(page), 30, "the stand-in's failing cell to show its traceback")
        assert len(errors) == 1 and "stand-in failure" in errors[0], errors
        screenshot(page, SCREENSHOT_DIR / "browser-harness.png")
        page.close()
        lab.shutdown_kernels()


# ----------------------------------------------------------------------------
# The training notebook


def weight_history(metrics_path: Path) -> list[tuple[int, float]]:
    """(step, recorded weight of the moved objective) for every step logged so far."""
    return [(r["step"], r[f"weights/{MOVED}"]) for r in read_jsonl(metrics_path)]


def test_training_panel_slider_changes_recorded_weights(lab, browser, lab_root, embedded_dir):
    """Run 03_training.ipynb in Chromium, move a weight slider mid-run: later steps record the new weight."""
    assert (REPO / TRAINING_NOTEBOOK).is_file(), f"{TRAINING_NOTEBOOK} is missing"
    write_notebook(REPO / TRAINING_NOTEBOOK, lab_root / TRAINING_NOTEBOOK, TRAINING_PARAMETERS)
    metrics = lab_root / "runs" / RUN_NAME / "metrics.jsonl"  # the notebook works from the (temp) repo root
    pages: list = []
    with diagnostics(pages, lab, "browser"):
        page = open_notebook(browser, lab, TRAINING_NOTEBOOK)
        pages.append(page)
        run_all_cells(page)
        # model load and the first step take a while on a 2-core machine
        wait_for(unless_cell_error(page, slider(page, MOVED).is_visible), 180, f"the {MOVED!r} weight slider")
        wait_for(unless_cell_error(page, lambda: weight_history(metrics)), 180, f"the first training step in {metrics}")

        set_slider(page, MOVED, NEW)  # while training runs
        page.locator(".dapo-status", has_text=f"{MOVED}={NEW:g}").wait_for(timeout=30_000)
        recorded_new = lambda: [(s, w) for s, w in weight_history(metrics) if abs(w - NEW) < 1e-6]  # noqa: E731
        changed = wait_for(unless_cell_error(page, recorded_new), 120, f"a step that records weights/{MOVED}={NEW}")
        page.locator("button.dapo-stop").click()

        history = weight_history(metrics)
        first_new = changed[0][0]
        assert history[0] == (1, pytest.approx(OLD)), f"step 1 should use the starting weight: {history}"
        assert first_new > 1, history
        assert all(abs(w - OLD) < 1e-6 for s, w in history if s < first_new), history
        assert all(abs(w - NEW) < 1e-6 for s, w in history if s >= first_new), history

        # Stop ends the run with a checkpoint, and the rest of the notebook runs to its last check
        last_check = page.locator(".jp-OutputArea-output", has_text="check: saved").first  # an output, not the source
        wait_for(unless_cell_error(page, last_check.is_visible), 180, "the notebook's last cell (`check: saved`)")
        wait_for_kernel_idle(page, 60)
        assert cell_errors(page) == []
        steps = len(read_jsonl(metrics))
        assert steps < TRAINING_PARAMETERS["steps"], "Stop did not end the run early"
        assert (lab_root / "checkpoints" / RUN_NAME / f"step-{steps}").is_dir(), "Stop saved no checkpoint"
        slider(page, MOVED).scroll_into_view_if_needed()  # the panel, with its plots, in the picture
        shot = screenshot(page, SCREENSHOT_DIR / "browser.png")
        print(f"screenshot: {shot}; weights/{MOVED}: {history}")
        page.close()
        lab.shutdown_kernels()
