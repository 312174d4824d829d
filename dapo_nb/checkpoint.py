"""Checkpoints that a crash cannot corrupt, and resume that continues the same run.

A checkpoint is a folder `checkpoints/<run>/step-N/` holding

    model.safetensors (or adapter_model.safetensors with LoRA), config.json, tokenizer files
    optimizer.pt        optimizer + lr-scheduler state, loaded with torch.load(weights_only=True)
    rng.pt              torch / sampling-generator RNG states (tensors), weights_only too
    trainer_state.json  step, data cursor, live-weight history, the run's config

It is written to `.step-N.tmp-*` and renamed into place only when complete, so the newest
`step-N` is always whole: `latest_checkpoint()` ignores temporary folders (a resumed run deletes
them). Nothing is unpickled: safetensors for weights, `weights_only=True` for optimizer and RNG
tensors, JSON for the rest.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import tempfile
from contextlib import contextmanager
from pathlib import Path


STATE_FILE = "trainer_state.json"


def checkpoint_path(root: str | Path, step: int) -> Path:
    """`<root>/step-<step>`."""
    return Path(root) / f"step-{step}"


def latest_checkpoint(root: str | Path) -> Path | None:
    """The complete `step-N` folder with the highest N under root, or None."""
    found = []
    for path in Path(root).glob("step-*"):
        match = re.fullmatch(r"step-(\d+)", path.name)
        if match and (path / STATE_FILE).is_file():
            found.append((int(match.group(1)), path))
    return max(found)[1] if found else None


def latest_trl_checkpoint(root: str | Path) -> Path | None:
    """The `checkpoint-N` folder (written by backend=trl, i.e. TRL's Trainer) with the highest N under root, or None."""
    from transformers.trainer_utils import get_last_checkpoint

    last = get_last_checkpoint(str(root)) if Path(root).is_dir() else None
    return Path(last) if last else None


def fsync_path(path: Path) -> None:
    """Flush a file's (or folder's) data to disk; a no-op where the system cannot open it (a folder on Windows)."""
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:  # a folder on a system that cannot open one (Windows)
        return
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


@contextmanager
def atomic_directory(final: str | Path):
    """Yield a temporary sibling folder `.<name>.tmp-*`; on success its files are fsynced and it is renamed to
    `final`, on error it is removed.

    A crash (SIGKILL, power cut) leaves `final` as it was or complete, never partly written, plus at worst the hidden
    temporary folder (`remove_temp_dirs`). Replacing an existing `final` renames it aside first rather than deleting
    it in place, so a crash then can lose it but cannot leave half of it."""
    final = Path(final)
    final.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{final.name}.tmp-", dir=final.parent))
    tmp.chmod(0o755)  # mkdtemp makes it private; a checkpoint is an ordinary folder
    old = tmp.with_name(tmp.name + "-old")
    try:
        yield tmp
        for path in [*tmp.rglob("*"), tmp]:
            fsync_path(path)
        if final.exists():
            final.rename(old)
        tmp.rename(final)
        fsync_path(final.parent)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
        shutil.rmtree(old, ignore_errors=True)


def remove_temp_dirs(root: str | Path) -> list[Path]:
    """Delete the `.step-N.tmp-*` folders under root that a crash left mid-save (never complete, never loaded);
    returns them. For the process taking over a run: another process's save in progress looks the same."""
    found = sorted(Path(root).glob(".step-*.tmp-*"))
    for path in found:
        shutil.rmtree(path, ignore_errors=True)
    return found


def save_checkpoint(root: str | Path, step: int, model, tokenizer, optimizer, scheduler, rng: dict, state: dict,
                    merge_lora: bool = False) -> Path:
    """Write everything needed to resume at `step`, atomically; returns the folder."""
    final = checkpoint_path(root, step)
    with atomic_directory(final) as tmp:
        model.save_pretrained(tmp, safe_serialization=True)
        tokenizer.save_pretrained(tmp)
        if merge_lora and hasattr(model, "merge_and_unload"):
            save_merged_lora(model, tmp / "merged")
            tokenizer.save_pretrained(tmp / "merged")
        import torch

        torch.save({"optimizer": optimizer.state_dict(), "scheduler": scheduler.state_dict()}, tmp / "optimizer.pt")
        torch.save(rng, tmp / "rng.pt")
        (tmp / STATE_FILE).write_text(json.dumps(state, indent=1))  # written last: marks the folder complete
    return final


def load_trainer_state(path: str | Path) -> tuple[dict, dict, dict]:
    """(state json, optimizer+scheduler states, rng states) of a checkpoint, without unpickling code."""
    path = Path(path)
    if not (path / STATE_FILE).is_file():
        raise FileNotFoundError(f"{path} is not a complete dapo-nb checkpoint (no {STATE_FILE})")
    state = json.loads((path / STATE_FILE).read_text())
    import torch

    optim = torch.load(path / "optimizer.pt", weights_only=True)
    rng = torch.load(path / "rng.pt", weights_only=True)
    return state, optim, rng


def save_merged_lora(peft_model, out_dir: str | Path) -> None:
    """Save base weights with the LoRA adapters merged in, as a plain model folder (the live model keeps its adapters)."""
    import copy

    merged = copy.deepcopy(peft_model).merge_and_unload()
    merged.save_pretrained(out_dir, safe_serialization=True)
