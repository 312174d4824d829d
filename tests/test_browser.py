"""Real-browser test: JupyterLab in Debian's headless Chromium runs 03_training.ipynb and a person moves a slider.

    bash tests/browser_support/install.sh                # once: apt-get install chromium; pip install playwright
    .venv/bin/python -m pytest -q -m browser tests/test_browser.py

What happens: a temp folder gets a copy of notebooks/ and data/ (the notebook's parameters overridden to a tiny
run by papermill's own parameter injection, so nothing in the repo is written except the screenshot);
`jupyter lab` serves it on 127.0.0.1 with a random token; Playwright drives /usr/bin/chromium (never a browser
download) to open the notebook, Run > Run All Cells, wait for the control panel, type a new value into one
weight slider's readout while training runs, and check that `runs/<run>/metrics.jsonl` records the old weight
at an early step and the new one at a later step. Stop (the panel's button) ends the run with a checkpoint.

Screenshots: notebooks/executed/browser.png (git-ignored); on failure also browser-failure.png, and the
error carries the tail of JupyterLab's log. Without Chromium or Playwright the tests skip locally and fail
under CI=true. `test_widget_harness` proves the JupyterLab + Chromium + ipywidgets path on a two-cell
stand-in notebook, so a failure there is the harness, a failure only in the training test is the notebook.
"""

from __future__ import annotations

import contextlib
import shutil
from pathlib import Path

import nbformat
import pytest
from browser_support.lab import (JupyterLab, launch_chromium, open_notebook, read_jsonl, require_browser,
                                 run_all_cells, screenshot, set_slider, slider, wait_for, wait_for_kernel_idle)

pytestmark = pytest.mark.browser

REPO = Path(__file__).resolve().parents[1]
SCREENSHOT_DIR = REPO / "notebooks" / "executed"  # git-ignored
TRAINING_NOTEBOOK = "notebooks/03_training.ipynb"
# a tiny run on the embedded model: 2 prompts x G=2, 8 new tokens; enough steps that training is still going when
# the slider moves (the test clicks Stop once the new weight is recorded)
TRAINING_PARAMETERS: dict = {}  # filled in once the notebook's parameter names are known
KERNELSPEC = {"name": "python3", "display_name": "Python 3 (ipykernel)", "language": "python"}


# ----------------------------------------------------------------------------
# Fixtures: one JupyterLab and one Chromium for the module


@pytest.fixture(scope="module")
def lab_root(tmp_path_factory) -> Path:
    """A temp root dir holding copies of the repo's notebooks/ and data/."""
    root = tmp_path_factory.mktemp("lab-root")
    for folder in ("notebooks", "data"):
        if (REPO / folder).is_dir():
            shutil.copytree(REPO / folder, root / folder, ignore=shutil.ignore_patterns("executed", ".ipynb_checkpoints"))
    (root / "notebooks").mkdir(exist_ok=True)
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
    try:
        yield
    except BaseException as error:
        shot = "(no page)"
        if page_holder:
            with contextlib.suppress(Exception):
                shot = str(screenshot(page_holder[0], SCREENSHOT_DIR / f"{name}-failure.png"))
        raise AssertionError(f"{error}\n\nscreenshot: {shot}\n--- JupyterLab log (tail) ---\n{lab.log_tail()}") from error


def write_notebook(source: Path | nbformat.NotebookNode, target: Path, parameters: dict) -> Path:
    """Copy a notebook with `parameters` injected after its `parameters` cell (papermill's way)."""
    from papermill.parameterize import parameterize_notebook

    nb = source if isinstance(source, nbformat.NotebookNode) else nbformat.read(source, as_version=4)
    nb.metadata.setdefault("kernelspec", KERNELSPEC)  # no kernel-picker dialog
    for cell in nb.cells:
        cell.metadata.setdefault("tags", [])  # papermill reads every cell's tags
    nb = parameterize_notebook(nb, parameters)
    for cell in nb.cells:  # papermill's bookkeeping is not wanted in a notebook a person opens
        cell.metadata.pop("papermill", None)
    nb.metadata.pop("papermill", None)
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
        page.close()
