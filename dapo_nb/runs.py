"""A run's files and signals: where its logs and checkpoints go, earlier logs kept, logs trimmed on resume, stop requests.

Shared by both training backends (`trainer.py`, `trl_backend.py`) and the notebooks' live panel, so each of
these rules lives here once:

    runs/<run_name>/metrics.jsonl, rollouts.jsonl      (train.output_dir)
    checkpoints/<run_name>/step-N  (ours)  or  checkpoint-N  (TRL)      (train.checkpoint_dir)

A fresh run renames an earlier run's logs (`metrics.before-<time>.jsonl`) instead of appending to them; a resumed
run drops log lines written after the checkpoint it resumes from. SIGTERM or a first Ctrl-C asks the running
step to finish and save; a second Ctrl-C abandons it.
"""

from __future__ import annotations

import json
import signal
import threading
import time
from pathlib import Path
from typing import Callable

from .checkpoint import latest_checkpoint, latest_trl_checkpoint, load_trainer_state
from .config import Config, from_dict, load_config


def checkpoint_root(cfg: Config) -> Path:
    """`<train.checkpoint_dir>/<train.run_name>`: the folder of a run's checkpoints, either backend."""
    return Path(cfg.train.checkpoint_dir) / cfg.train.run_name


def install_stop_handlers(stop_event: threading.Event, running: Callable[[], str]) -> Callable[[], None]:
    """SIGTERM / first Ctrl-C set `stop_event` (finish the running step, then save); a second Ctrl-C raises
    KeyboardInterrupt at once. Main thread only; returns the function that restores the previous handlers."""
    if threading.current_thread() is not threading.main_thread():
        return lambda: None

    def request_stop(signum, frame):
        if stop_event.is_set() and signum == signal.SIGINT:
            raise KeyboardInterrupt
        print(f"\n{signal.Signals(signum).name}: finishing {running()}, then saving (Ctrl-C again to abandon it)")
        stop_event.set()

    previous = {s: signal.signal(s, request_stop) for s in (signal.SIGINT, signal.SIGTERM)}
    return lambda: [signal.signal(s, h) for s, h in previous.items()]


def archive_run_logs(output_dir: Path) -> list[Path]:
    """A fresh run starts new metrics/rollouts files; an earlier run's are renamed (kept), not appended to."""
    moved = []
    stamp = time.strftime("%Y%m%d-%H%M%S")
    for name in ("metrics.jsonl", "rollouts.jsonl"):
        path = Path(output_dir) / name
        if path.is_file():
            moved.append(path.rename(path.with_name(f"{path.stem}.before-{stamp}.jsonl")))
    if moved:
        print(f"{output_dir}: an earlier run's logs were kept as {', '.join(p.name for p in moved)}")
    return moved


def truncate_run_logs(output_dir: Path, step: int) -> None:
    """Drop metrics/rollouts lines written after the checkpoint we resume from (a crash may have left them)."""
    for name in ("metrics.jsonl", "rollouts.jsonl"):
        path = output_dir / name
        if path.is_file():
            lines = [l for l in path.read_text().splitlines() if l.strip() and json.loads(l)["step"] <= step]
            path.write_text("".join(l + "\n" for l in lines))


def config_of_checkpoint(path: str | Path) -> Config:
    """The Config a checkpoint was trained with."""
    state, _, _ = load_trainer_state(path)
    return from_dict(state["config"])


def latest_run_checkpoint(run_name: str, checkpoint_dir: str | Path = "checkpoints",
                          runs_dir: str | Path = "runs") -> tuple[Path | None, Config | None]:
    """(newest checkpoint, its config) of a run of either backend: our step-N (config inside), else TRL's
    checkpoint-N (config in runs/<run>/config.yaml, written by backend=trl); (None, None) if there is none."""
    root = Path(checkpoint_dir) / run_name
    ours = latest_checkpoint(root)
    if ours is not None:
        return ours, config_of_checkpoint(ours)
    trl = latest_trl_checkpoint(root)
    config_file = Path(runs_dir) / run_name / "config.yaml"
    if trl is not None and config_file.is_file():
        return trl, load_config(config_file)
    return None, None
