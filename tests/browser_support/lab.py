"""Drive JupyterLab in Debian's headless Chromium through Playwright, for tests/test_browser.py.

    lab = JupyterLab(root_dir, state_dir).start()        # jupyter lab on 127.0.0.1:<free port>, random token
    with sync_playwright() as pw:
        context = launch_chromium(pw, user_data_dir)
        page = open_notebook(context, lab, "notebooks/03_training.ipynb")
        run_all_cells(page)
        set_slider(page, "correctness", 0.1)             # typed into the slider's readout, then Enter
    lab.stop()

The browser is Debian's `chromium` (installed by `install.sh` beside this file), never a browser
that Playwright downloads. Everything waits by polling with generous timeouts: on the 2-core CI
machine JupyterLab takes 10-20 s to start and the kernel a few more.
"""

from __future__ import annotations

import json
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path
from typing import Callable, TypeVar

import pytest

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
    "--disable-dev-shm-usage",
]
INSTALL_HINT = "run `bash tests/browser_support/install.sh` (apt-get install chromium; pip install playwright)"
T = TypeVar("T")


# ----------------------------------------------------------------------------
# Prerequisites and polling


def require_browser() -> None:
    """Skip (locally) or fail (CI=true) when Chromium or the Playwright driver is missing."""
    missing = []
    if not (os.path.exists(CHROMIUM) and os.access(CHROMIUM, os.X_OK)):
        missing.append(f"{CHROMIUM} (Debian package `chromium`)")
    try:
        import playwright  # noqa: F401
    except ImportError:
        missing.append("the Python package `playwright`")
    if not missing:
        return
    reason = f"real-browser test needs {' and '.join(missing)}: {INSTALL_HINT}"
    if os.environ.get("CI", "").lower() in ("1", "true", "yes"):
        pytest.fail(reason, pytrace=False)
    pytest.skip(reason)


def wait_for(condition: Callable[[], T], timeout: float, what: str, interval: float = 0.5) -> T:
    """Poll `condition` until it returns something truthy; TimeoutError naming `what` after `timeout` s."""
    deadline = time.monotonic() + timeout
    while True:
        value = condition()
        if value:
            return value
        if time.monotonic() > deadline:
            raise TimeoutError(f"timed out after {timeout:.0f} s waiting for {what}")
        time.sleep(interval)


def read_jsonl(path: Path) -> list[dict]:
    """The complete lines of a jsonl file that another process may be appending to ([] if absent)."""
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip().endswith("}")]


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


# ----------------------------------------------------------------------------
# JupyterLab server


class JupyterLab:
    """A `jupyter lab` process serving `root_dir` on 127.0.0.1 with a random token; logs go to a file."""

    def __init__(self, root_dir: Path, state_dir: Path):
        self.root_dir = Path(root_dir)
        self.state_dir = Path(state_dir)  # Jupyter's config / data / runtime / settings, isolated from ~
        self.port = free_port()
        self.token = secrets.token_hex(16)
        self.log_path = self.state_dir / "jupyter.log"
        self.process: subprocess.Popen | None = None

    def url(self, path: str = "lab", query: str = "") -> str:
        """Address of `path` on this server, token included."""
        return f"http://127.0.0.1:{self.port}/{path}?{query + '&' if query else ''}token={self.token}"

    def api(self, method: str, path: str) -> object:
        """Call the server's REST API (e.g. "GET", "api/sessions"); the decoded JSON answer, or None."""
        request = urllib.request.Request(f"http://127.0.0.1:{self.port}/{path}", method=method,
                                         headers={"Authorization": f"token {self.token}"})
        with urllib.request.urlopen(request, timeout=30) as response:
            body = response.read()
        return json.loads(body) if body else None

    def shutdown_kernels(self) -> None:
        """End every notebook session and its kernel (frees the CPU for the next test)."""
        for session in self.api("GET", "api/sessions"):
            self.api("DELETE", f"api/sessions/{session['id']}")

    def start(self, timeout: float = 120) -> JupyterLab:
        """Start the server (own process group) and wait until /api/status answers."""
        jupyter = Path(sys.executable).with_name("jupyter")
        env = dict(os.environ)
        for name, sub in (("JUPYTER_CONFIG_DIR", "config"), ("JUPYTER_DATA_DIR", "data"),
                          ("JUPYTER_RUNTIME_DIR", "runtime"), ("JUPYTERLAB_SETTINGS_DIR", "settings"),
                          ("JUPYTERLAB_WORKSPACES_DIR", "workspaces"), ("IPYTHONDIR", "ipython")):
            env[name] = str(self.state_dir / sub)
        env.setdefault("OMP_NUM_THREADS", "1")  # the machine has 2 shared cores
        self._write_settings(self.state_dir / "settings")
        command = [
            str(jupyter), "lab", "--no-browser", "--ip=127.0.0.1", f"--port={self.port}", "--port-retries=0",
            f"--ServerApp.root_dir={self.root_dir}", f"--IdentityProvider.token={self.token}",
            "--LabApp.news_url=None", "--LabApp.check_for_updates_class=jupyterlab.NeverCheckForUpdate",
            "--ServerApp.terminals_enabled=False", "--allow-root",  # CI runs as root
        ]
        self.state_dir.mkdir(parents=True, exist_ok=True)
        with open(self.log_path, "wb") as log:
            self.process = subprocess.Popen(command, cwd=self.root_dir, env=env, stdout=log, stderr=subprocess.STDOUT,
                                            stdin=subprocess.DEVNULL, start_new_session=True)
        wait_for(self._answers, timeout, f"JupyterLab on port {self.port} (log: {self.log_path})", interval=0.5)
        return self

    def _answers(self) -> bool:
        if self.process is not None and self.process.poll() is not None:
            raise RuntimeError(f"jupyter lab exited with {self.process.returncode}:\n{self.log_tail()}")
        try:
            with urllib.request.urlopen(self.url("api/status"), timeout=5) as response:
                return response.status == 200
        except OSError:
            return False

    @staticmethod
    def _write_settings(settings_dir: Path) -> None:
        """User settings: no news / update pop-ups, and every notebook cell attached to the page."""
        settings_dir = settings_dir / "@jupyterlab"
        for plugin, values in {
            "apputils-extension/notification.jupyterlab-settings": {
                "fetchNews": "false", "checkForUpdates": False, "doNotDisturbMode": True},
            "notebook-extension/tracker.jupyterlab-settings": {"windowingMode": "none"},  # every cell in the DOM
        }.items():
            path = settings_dir / plugin
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(json.dumps(values))

    def log_tail(self, lines: int = 40) -> str:
        """The last lines of the server's log (server errors, kernels that failed to start or died)."""
        if not self.log_path.exists():
            return "(no jupyter log)"
        return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])

    def stop(self) -> None:
        """SIGTERM the whole process group (server and kernels), SIGKILL whatever is left after 15 s."""
        if self.process is None or self.process.poll() is not None:
            return
        group = os.getpgid(self.process.pid)
        os.killpg(group, signal.SIGTERM)
        try:
            self.process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            pass
        try:
            os.killpg(group, signal.SIGKILL)  # kernels that outlived the server
        except ProcessLookupError:
            pass
        self.process.wait(timeout=10)


# ----------------------------------------------------------------------------
# Browser and notebook UI


def launch_chromium(playwright, user_data_dir: Path):
    """A headless Chromium context with a fresh profile (Debian's binary, never a download)."""
    if user_data_dir.exists():
        shutil.rmtree(user_data_dir)
    context = playwright.chromium.launch_persistent_context(
        str(user_data_dir), executable_path=CHROMIUM, headless=True, args=CHROMIUM_ARGS,
        viewport={"width": 1400, "height": 1000},
    )
    context.set_default_timeout(30_000)
    return context


def open_notebook(context, lab: JupyterLab, notebook: str, timeout: float = 120):
    """Open `notebook` (relative to the server's root) alone in a fresh workspace; wait until its kernel is idle."""
    page = context.new_page()
    workspace = Path(notebook).stem.replace(".", "-")
    page.goto(lab.url(f"lab/workspaces/{workspace}/tree/{notebook}", "reset"), timeout=timeout * 1000)
    page.wait_for_selector(".jp-NotebookPanel .jp-Notebook .jp-Cell", timeout=timeout * 1000)
    wait_for_kernel_idle(page, timeout)
    return page


def wait_for_kernel_idle(page, timeout: float = 120) -> None:
    """Wait until the status bar shows a kernel (not "No Kernel") that is Idle."""
    page.wait_for_function(
        """() => {
            const bar = document.querySelector('#jp-main-statusbar');
            const text = bar ? bar.innerText : '';
            return /\\|\\s*Idle/.test(text) && !/No Kernel/.test(text);
        }""",
        timeout=timeout * 1000,
    )


def run_all_cells(page, timeout: float = 60) -> None:
    """Focus the notebook, choose Run > Run All Cells, and wait until its first code cell has started."""
    page.locator(".jp-NotebookPanel .jp-Cell .jp-InputPrompt").first.click()  # the notebook is the current widget
    page.locator(".lm-MenuBar-itemLabel", has_text="Run").first.click()
    page.locator(".lm-Menu-itemLabel", has_text="Run All Cells").first.click()
    first_prompt = page.locator(".jp-NotebookPanel .jp-CodeCell .jp-InputPrompt").first
    wait_for(lambda: any(c in first_prompt.inner_text() for c in "*0123456789"), timeout, "Run All Cells to start")


def slider(page, objective: str):
    """The weight slider of `objective` (dapo_nb.live gives it the CSS class `dapo-weight-<objective>`)."""
    return page.locator(f".widget-slider.dapo-weight-{objective}").first


def set_slider(page, objective: str, value: float, timeout: float = 60) -> None:
    """Type `value` into the slider's readout box and press Enter, as a person would."""
    widget = slider(page, objective)
    widget.wait_for(state="visible", timeout=timeout * 1000)
    widget.scroll_into_view_if_needed()
    readout = widget.locator(".widget-readout")
    readout.click()
    page.keyboard.press("Control+A")
    page.keyboard.type(f"{value}")
    page.keyboard.press("Enter")


def cell_errors(page) -> list[str]:
    """The text of every traceback in the open notebook's outputs (JupyterLab renders errors as stderr)."""
    stderr = page.locator('.jp-OutputArea-output[data-mime-type="application/vnd.jupyter.stderr"]')
    return [text[-3000:] for text in stderr.filter(has_text="Traceback (most recent call last)").all_inner_texts()]


def unless_cell_error(page, condition: Callable[[], T]) -> Callable[[], T]:
    """`condition`, but raising at once when a cell has failed (so a broken notebook does not wait out a timeout)."""
    def check():
        errors = cell_errors(page)
        if errors:
            raise AssertionError("a notebook cell raised:\n" + errors[0])
        return condition()
    return check


def screenshot(page, path: Path) -> Path:
    """A full-page PNG of the current page at `path` (folders created)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(path), full_page=True)
    return path
