"""A run's files and signals: where its logs and checkpoints go, earlier logs kept, logs trimmed on resume, stop requests.

Shared by both training backends (`trainer.py`, `trl_backend.py`) and the notebooks' live panel, so each of
these rules lives here once:

    runs/<run_name>/metrics.jsonl, rollouts.jsonl      (train.output_dir)
    checkpoints/<run_name>/step-N  (ours)  or  checkpoint-N  (TRL)      (train.checkpoint_dir)

A fresh run renames an earlier run's logs (`metrics.before-<time>.jsonl`) instead of appending to them, and moves
its checkpoints to `<run_name>.before-<time>`, keeping the `train.keep_previous_runs` newest such sets (both printed
with their size); a resumed run drops log lines written after the checkpoint it resumes from. An append that finds
the disk full stops the run with a one-line DiskFullError. SIGTERM or a first Ctrl-C asks the running step to finish
and save; a second Ctrl-C abandons it. While our trainer trains, `<output_dir>/.training.lock` is held
(`training_lock`): a second process training into the same folder (a copy started beside it, or N copies from a
launcher that does not set RANK / WORLD_SIZE) is refused with one line instead of interleaving its logs and
checkpoints with the first's.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
import signal
import threading
import time
import warnings
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Callable

from .checkpoint import (DiskFullError, folder_bytes, format_bytes, free_bytes, fsync_path, is_disk_full,
                         latest_checkpoint, latest_trl_checkpoint, load_trainer_state)
from .config import Config, ConfigError, from_dict, load_config

LOCK_FILE = ".training.lock"  # in a run's output folder while our trainer trains into it


class UnfilledBatchError(RuntimeError):
    """dapo.on_unfilled=error and dynamic sampling found too few groups with signal (the run saves, then stops)."""


class RunInUseError(ConfigError):
    """Another process is training into this run's folder; the message names it and what to do."""


def _in_use(output_dir: Path, holder: str) -> RunInUseError:
    return RunInUseError(
        f"another process ({holder.strip() or 'unknown'}) is training into {output_dir} ({LOCK_FILE} is held): two "
        "runs there would overwrite each other's metrics and checkpoints. Wait for it, give this run another "
        "train.run_name / train.output_dir, or launch N data-parallel replicas with `accelerate launch "
        "--num_processes N` / `torchrun --nproc_per_node N`, which set RANK and WORLD_SIZE (README, 'Scaling out')")


def _try_lock(fd: int, tries: int = 20) -> bool:
    """flock(fd) exclusively without blocking, retrying for about a second (a `refuse_if_training` probe holds it
    for an instant)."""
    import fcntl

    for attempt in range(tries):
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            return True
        except BlockingIOError:
            if attempt + 1 < tries:
                time.sleep(0.05)
    return False


def refuse_if_training(output_dir: Path) -> None:
    """RunInUseError when another process holds `<output_dir>/.training.lock`; creates nothing (called before a run
    renames or trims the folder's logs)."""
    path = Path(output_dir) / LOCK_FILE
    try:
        import fcntl  # noqa: F401 - no locks where there is no fcntl (Windows)

        fd = os.open(path, os.O_RDONLY)
    except (ImportError, OSError):
        return
    try:
        if not _try_lock(fd):
            raise _in_use(Path(output_dir), path.read_text(errors="replace"))
    finally:
        os.close(fd)  # releases the probe's lock


@contextmanager
def training_lock(output_dir: Path):
    """Hold `<output_dir>/.training.lock` (pid and host inside) while a run trains; RunInUseError when another
    process holds it. Removed on exit; a killed process's lock is released by the system. Best effort: where the
    file cannot be made (no fcntl, a full or read-only disk) the run goes on without it."""
    output_dir = Path(output_dir)
    path = output_dir / LOCK_FILE
    try:
        import fcntl  # noqa: F401

        output_dir.mkdir(parents=True, exist_ok=True)
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    except (ImportError, OSError):
        yield
        return
    try:
        if not _try_lock(fd):
            raise _in_use(output_dir, path.read_text(errors="replace"))
        try:
            os.ftruncate(fd, 0)
            os.write(fd, f"pid {os.getpid()} on {os.uname().nodename}\n".encode())
        except OSError:  # a full disk: the lock holds without its note
            pass
        try:
            yield
        finally:
            with contextlib.suppress(OSError):
                path.unlink()
    finally:
        os.close(fd)


@dataclass
class RolloutRecord:
    """One line of rollouts.jsonl: the same fields from both backends."""

    step: int
    qid: str
    prompt: str  # the user's question (data.question_text)
    completion: str
    ground_truth: str
    objectives: dict[str, float]  # raw objective values
    score: float  # the scalar reward
    advantage: float | None  # None where the backend computes it out of our sight (TRL)
    length: int  # completion tokens, EOS included
    truncated: bool  # the token budget ran out before EOS
    backend: str  # dapo_nb | trl


def append_rollouts(output_dir: Path, records: list[RolloutRecord]) -> None:
    """Append records to `<output_dir>/rollouts.jsonl`, one JSON object a line."""
    if records:
        path = Path(output_dir) / "rollouts.jsonl"
        with disk_full_stops_the_run(path), open(path, "a") as f:
            f.write("".join(json.dumps(asdict(r)) + "\n" for r in records))


@contextmanager
def disk_full_stops_the_run(path: Path):
    """An append to a run log that fails because the disk is full ends the run with one DiskFullError line naming
    the file (a partly written line is a torn last line, which train.resume drops); other errors pass unchanged."""
    try:
        yield
    except Exception as err:
        if isinstance(err, DiskFullError) or not is_disk_full(err, path.parent):
            raise
        raise DiskFullError(f"no space left on the disk of {path} to append to it ({format_bytes(free_bytes(path))} "
                            "free); the run stopped", "Free space there or point train.output_dir elsewhere, then "
                            "continue with train.resume=true (from the last checkpoint)") from err


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


def unused_path(path: Path, ending: str = "") -> Path:
    """`path`, or the same name with -2, -3, ... inserted before `ending` (".jsonl") when it exists: two fresh runs
    within a second must not have the second's archive replace the first's."""
    base = path.name[: len(path.name) - len(ending)]
    candidate, n = path, 2
    while candidate.exists():
        candidate = path.with_name(f"{base}-{n}{ending}")
        n += 1
    return candidate


def archive_run_logs(output_dir: Path) -> list[Path]:
    """A fresh run starts new metrics/rollouts files; an earlier run's are renamed (kept), not appended to. Printed
    with their size and that of every earlier run's logs kept there (they are small: nothing is deleted)."""
    moved = []
    stamp = time.strftime("%Y%m%d-%H%M%S")
    for name in ("metrics.jsonl", "rollouts.jsonl"):
        path = Path(output_dir) / name
        if path.is_file():
            moved.append(path.rename(unused_path(path.with_name(f"{path.stem}.before-{stamp}.jsonl"), ".jsonl")))
    if moved:
        kept = list(Path(output_dir).glob("*.before-*.jsonl"))
        print(f"{output_dir}: an earlier run's logs were kept as {', '.join(p.name for p in moved)} "
              f"({format_bytes(sum(folder_bytes(p) for p in moved))}; all earlier runs' logs there: {len(kept)} "
              f"files, {format_bytes(sum(folder_bytes(p) for p in kept))})")
    return moved


def earlier_checkpoint_sets(root: Path) -> list[Path]:
    """The `<root>.before-<time>` folders beside root (earlier runs' checkpoints of the same name), oldest first."""
    root = Path(root)
    if not root.parent.is_dir():
        return []
    pattern = re.compile(re.escape(root.name) + r"\.before-(\d{8}-\d{6})(?:-(\d+))?")
    found = []
    for path in root.parent.iterdir():
        match = pattern.fullmatch(path.name)
        if match and path.is_dir():
            found.append((match.group(1), int(match.group(2) or 1), path))
    return [path for *_, path in sorted(found)]


def archive_checkpoints(root: Path, keep_previous: int = 1) -> Path | None:
    """A fresh run must not inherit an earlier run's checkpoints (resume and `latest` would pick them up): a root that
    holds any is renamed to `<root>.before-<time>`, and the new run starts with an empty one. Of such earlier sets,
    the `keep_previous` newest are kept (`train.keep_previous_runs`; 0 = none, the one just moved aside included) and
    older ones deleted. Printed every time any exist, with the space they take; returns where the earlier run's
    checkpoints are kept, or None (none, or deleted)."""
    root = Path(root)
    holds = root.is_dir() and any(any(root.glob(p)) for p in ("step-*", "checkpoint-*", "best"))
    aside = unused_path(root.with_name(f"{root.name}.before-{time.strftime('%Y%m%d-%H%M%S')}"))
    moved = root.rename(aside) if holds else None
    earlier = earlier_checkpoint_sets(root)
    if not earlier:
        return None
    sizes = {path: folder_bytes(path) for path in earlier}
    doomed = earlier[: max(len(earlier) - keep_previous, 0)]
    for path in doomed:
        shutil.rmtree(path)
    print(f"{root}: {describe_earlier_sets(moved, earlier, doomed, sizes)} (train.keep_previous_runs={keep_previous}; "
          "train.resume=true continues a run instead, another train.run_name keeps both)")
    return None if moved in doomed else moved


def describe_earlier_sets(moved: Path | None, earlier: list[Path], doomed: list[Path], sizes: dict[Path, int]) -> str:
    """What `archive_checkpoints` did, for its printed line: the set it moved aside, those it deleted, those kept."""
    kept = [path for path in earlier if path not in doomed]
    news = []
    if moved is not None:
        news.append(f"an earlier run's checkpoints ({format_bytes(sizes[moved])}) were "
                    + ("deleted" if moved in doomed else f"moved to {moved.name}"))
    if [path for path in doomed if path != moved]:
        news.append("deleted " + ", ".join(f"{p.name} ({format_bytes(sizes[p])})" for p in doomed if p != moved))
    news.append(f"earlier runs' checkpoints kept: {len(kept)} ({format_bytes(sum(sizes[p] for p in kept))})"
                + (f" in {', '.join(p.name for p in kept)}" if kept else ""))
    return "; ".join(news)


def append_metrics(output_dir: Path, metrics: dict) -> None:
    """Append one step's metrics to `<output_dir>/metrics.jsonl` as one line in one write: a crash leaves the line
    whole, absent, or torn as the file's last line (which `truncate_run_logs` drops on resume)."""
    path = Path(output_dir) / "metrics.jsonl"
    with disk_full_stops_the_run(path), open(path, "a") as f:
        f.write(json.dumps(metrics) + "\n")


def read_metrics(path: Path) -> list[dict]:
    """The lines of a metrics.jsonl, one dict per line (the step-0 line of `train.eval_at_start` included); a torn
    last line (being written now, or cut by a crash: resume drops it too) is skipped, a bad line elsewhere raises
    ValueError naming the file and line."""
    path = Path(path)
    lines = [(n, line) for n, line in enumerate(path.read_text().splitlines(), start=1) if line.strip()]
    rows = []
    for i, (number, line) in enumerate(lines):
        try:
            rows.append(json.loads(line))
        except json.JSONDecodeError as error:
            if i == len(lines) - 1:
                break
            raise ValueError(f"{path}:{number}: not a JSON object ({error.msg})") from None
    return rows


def sync_run_logs(output_dir: Path) -> None:
    """fsync metrics/rollouts.jsonl; called before a checkpoint is written, so that even after a power cut the
    checkpoint of step N does not outlive the log lines of steps <= N."""
    for name in ("metrics.jsonl", "rollouts.jsonl"):
        path = Path(output_dir) / name
        if path.is_file():
            fsync_path(path)


def truncate_run_logs(output_dir: Path, step: int) -> None:
    """Keep only the metrics/rollouts lines of steps <= `step`, the checkpoint a run resumes from.

    A crash may have left lines of later steps and, killed during an append, a torn last line: both are dropped.
    An unparseable line before the last is no crash's doing: ValueError naming the file and line. Each file is
    rewritten to a temporary file and renamed over the original, so a crash here loses no line."""
    for name in ("metrics.jsonl", "rollouts.jsonl"):
        path = Path(output_dir) / name
        if not path.is_file():
            continue
        lines = [(n, l) for n, l in enumerate(path.read_text(errors="replace").splitlines(), 1) if l.strip()]
        kept = []
        for i, (number, line) in enumerate(lines):
            try:
                line_step = json.loads(line)["step"]
            except (ValueError, KeyError, TypeError) as err:
                if i == len(lines) - 1:
                    warnings.warn(f"{path}, line {number}: dropped a torn last line (a crash during its write)", stacklevel=2)
                    break
                raise ValueError(f"{path}, line {number}: not a JSON object with a 'step' ({err!r}); "
                                 "fix or delete that line to resume") from None
            if line_step <= step:
                kept.append(line + "\n")
        tmp = path.with_name(path.name + ".tmp")
        with open(tmp, "w") as f:
            f.write("".join(kept))
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)


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
