"""Checkpoints that a crash cannot corrupt, and resume that continues the same run.

A checkpoint is a folder `checkpoints/<run>/step-N/` holding

    model.safetensors (or adapter_model.safetensors with LoRA), config.json, tokenizer files
    optimizer.pt        optimizer + lr-scheduler state, loaded with torch.load(weights_only=True)
    rng.pt              torch / sampling-generator RNG states (tensors), weights_only too
    trainer_state.json  step, data cursor, live-weight history, the run's config, metrics so far

It is written to `.step-N.tmp-*` and renamed into place only when complete, so the newest
`step-N` is always whole: `latest_checkpoint()` ignores temporary folders. Nothing is unpickled:
safetensors for weights, `weights_only=True` for optimizer and RNG tensors, JSON for the rest.
"""

from __future__ import annotations

import json
import re
import shutil
import tempfile
from contextlib import contextmanager
from pathlib import Path

import torch

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


@contextmanager
def atomic_directory(final: str | Path):
    """Yield a temporary sibling folder; on success it replaces `final` by a rename, on error it is removed."""
    final = Path(final)
    final.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{final.name}.tmp-", dir=final.parent))
    tmp.chmod(0o755)  # mkdtemp makes it private; a checkpoint is an ordinary folder
    try:
        yield tmp
        if final.exists():
            shutil.rmtree(final)
        tmp.rename(final)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


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
    optim = torch.load(path / "optimizer.pt", weights_only=True)
    rng = torch.load(path / "rng.pt", weights_only=True)
    return state, optim, rng


def save_merged_lora(peft_model, out_dir: str | Path) -> None:
    """Save base weights with the LoRA adapters merged in, as a plain model folder (the live model keeps its adapters)."""
    import copy

    merged = copy.deepcopy(peft_model).merge_and_unload()
    merged.save_pretrained(out_dir, safe_serialization=True)
