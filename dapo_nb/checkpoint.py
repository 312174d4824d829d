"""Checkpoints that a crash cannot corrupt, and resume that continues the same run.

A checkpoint is a folder `checkpoints/<run>/step-N/` holding

    model.safetensors (or adapter_model.safetensors with LoRA), config.json, tokenizer files
    optimizer.pt        optimizer + lr-scheduler state, loaded with torch.load(weights_only=True); absent with
                        train.save_optimizer=false (weights only)
    rng.pt              torch / sampling-generator RNG states (tensors), weights_only too
    trainer_state.json  step, data cursor, live-weight history, the run's config

It is written to `.step-N.tmp-*` and renamed into place only when complete, so the newest
`step-N` is always whole: `latest_checkpoint()` ignores temporary folders (a resumed run deletes
them). Nothing is unpickled: safetensors for weights, `weights_only=True` for optimizer and RNG
tensors, JSON for the rest.

Disk use is bounded and checked: `train.save_optimizer=false` leaves out optimizer.pt (weights only; such a
checkpoint cannot be resumed, `require_optimizer_state`), `prune_checkpoints` keeps the newest
`train.save_total_limit`, and before writing, `ensure_free_space` compares the free space with the checkpoint's
expected size (`expected_checkpoint_bytes`). A write that still runs out of space (ENOSPC, or torch's writer
failing on a full disk) becomes the same one-line `DiskFullError`, with the half-written folder removed.
`checkpoints/<run>/best` (`save_best`) holds the weights of the step with the best held-out metric
(`train.keep_best`): weights only, replaced atomically when a later evaluation beats it, never pruned.
"""

from __future__ import annotations

import errno
import json
import os
import re
import shutil
import tempfile
from contextlib import contextmanager
from pathlib import Path


STATE_FILE = "trainer_state.json"
OPTIMIZER_FILE = "optimizer.pt"  # the same name in TRL's checkpoint-N
BEST_DIR = "best"  # <checkpoint root>/best: the weights of the best held-out evaluation (train.keep_best)
BEST_FILE = "best.json"  # in BEST_DIR: metric, value, step, config
FILES_OVERHEAD = 8 * 2**20  # tokenizer, config and state files beside the tensors (SmolLM2's tokenizer: about 3.5 MB)


class CheckpointError(ValueError):
    """A checkpoint cannot serve what was asked of it (train.resume from a weights-only one); the message says why
    and what to do instead."""


class DiskFullError(OSError):
    """A checkpoint or log line does not fit the free disk space. One line naming the folder, the space needed and
    free, what is intact, and the fix; `reason` is the same line without the fix (train.on_disk_full=skip prints it)."""

    def __init__(self, reason: str, fix: str = ""):
        super().__init__(f"{reason}. {fix}" if fix else reason)
        self.reason, self.fix = reason, fix


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
    """Delete the `.step-N.tmp-*` and `.best.tmp-*` folders under root that a crash left mid-save or mid-prune (never
    complete, never loaded); returns them. For the process taking over a run: another process's save in progress
    looks the same."""
    found = sorted([*Path(root).glob(".step-*.tmp-*"), *Path(root).glob(f".{BEST_DIR}.tmp-*")])
    for path in found:
        shutil.rmtree(path, ignore_errors=True)
    return found


def save_checkpoint(root: str | Path, step: int, model, tokenizer, optimizer, scheduler, rng: dict, state: dict,
                    merge_lora: bool = False, save_optimizer: bool = True) -> Path:
    """Write everything needed to resume at `step` (without optimizer.pt when `save_optimizer` is false: weights
    only), atomically; returns the folder.

    DiskFullError, with every earlier checkpoint intact, when the free space is less than the checkpoint's expected
    size, or when the disk fills up during the write (the half-written folder is removed)."""
    final = checkpoint_path(root, step)
    previous = latest_checkpoint(root)
    needed = expected_checkpoint_bytes(model, optimizer if save_optimizer else None, merge_lora=merge_lora,
                                       previous=previous)
    intact = f"the last checkpoint {previous.name} is intact" if previous else "no checkpoint of this run was saved yet"
    ensure_free_space(final, needed, intact)
    with atomic_directory(final) as tmp, disk_full_as_error(final, needed, intact):
        write_weights(tmp, model, tokenizer, merge_lora)
        import torch

        if save_optimizer:
            torch.save({"optimizer": optimizer.state_dict(), "scheduler": scheduler.state_dict()}, tmp / OPTIMIZER_FILE)
        torch.save(rng, tmp / "rng.pt")
        (tmp / STATE_FILE).write_text(json.dumps(state, indent=1))  # written last: marks the folder complete
    return final


def write_weights(folder: Path, model, tokenizer, merge_lora: bool = False) -> None:
    """The loadable part of a checkpoint: safetensors weights (the adapter with LoRA, plus a merged copy in
    `merged/` when `merge_lora`), config and tokenizer; what `dapo-nb eval` and `load_policy` read."""
    model.save_pretrained(folder, safe_serialization=True)
    tokenizer.save_pretrained(folder)
    if merge_lora and hasattr(model, "merge_and_unload"):
        save_merged_lora(model, folder / "merged")
        tokenizer.save_pretrained(folder / "merged")


def load_trainer_state(path: str | Path) -> tuple[dict, dict | None, dict]:
    """(state json, optimizer+scheduler states or None for a weights-only checkpoint, rng states) of a checkpoint,
    without unpickling code."""
    path = Path(path)
    if not (path / STATE_FILE).is_file():
        raise FileNotFoundError(f"{path} is not a complete dapo-nb checkpoint (no {STATE_FILE})")
    state = json.loads((path / STATE_FILE).read_text())
    import torch

    optim = torch.load(path / OPTIMIZER_FILE, weights_only=True) if has_optimizer_state(path) else None
    rng = torch.load(path / "rng.pt", weights_only=True)
    return state, optim, rng


def has_optimizer_state(path: str | Path) -> bool:
    """Whether a checkpoint (ours or TRL's) holds the optimizer state a resumed run continues with."""
    return (Path(path) / OPTIMIZER_FILE).is_file()


def require_optimizer_state(path: str | Path) -> None:
    """CheckpointError unless `path` can be resumed: a weights-only checkpoint (train.save_optimizer=false) has no
    AdamW moments or lr-schedule position, and a run continued with fresh ones would not be the same run."""
    if not has_optimizer_state(path):
        raise CheckpointError(
            f"{path} holds no optimizer state (saved with train.save_optimizer=false), so train.resume=true cannot "
            f"continue its run; start a new run from its weights with train.resume=false "
            f"model.pretrained_model_name_or_path={path} and another train.run_name, and keep "
            "train.save_optimizer=true in runs you want to resume")


# ----------------------------------------------------------------------------
# Retention: the newest train.save_total_limit checkpoints, and the best one apart


def prune_checkpoints(root: str | Path, keep: int) -> list[Path]:
    """Delete all but the `keep` newest complete `step-N` folders under root (0 = keep all); returns those deleted.

    Called after a save succeeded, so the newest (the one just written, at the end of a run the final one) always
    stays. Each is renamed to a hidden temporary name before it is deleted: a crash midway leaves a folder that
    `latest_checkpoint` ignores and `remove_temp_dirs` clears, never half a `step-N`. `best/` is not a `step-N`."""
    if keep <= 0:
        return []
    complete = sorted((int(p.name.split("-")[1]), p) for p in Path(root).glob("step-*")
                      if re.fullmatch(r"step-\d+", p.name) and (p / STATE_FILE).is_file())
    doomed = [path for _, path in complete[:-keep]]
    for path in doomed:
        hidden = path.rename(path.with_name(f".{path.name}.tmp-pruned"))
        shutil.rmtree(hidden, ignore_errors=True)
    return doomed


def save_best(folder: str | Path, model, tokenizer, info: dict, merge_lora: bool = False) -> Path:
    """Write the weights of the best evaluation so far to `folder` (`<checkpoint root>/best`) with `best.json`
    (`info`: metric, value, step, config), atomically replacing the earlier best; returns the folder.

    Weights only (no optimizer): it is for `dapo-nb eval` and sharing, not for resuming. DiskFullError as for
    `save_checkpoint`, the earlier best intact."""
    folder = Path(folder)
    earlier = read_best(folder)
    needed = expected_checkpoint_bytes(model, None, merge_lora=merge_lora)
    intact = f"the earlier best (step {earlier['step']}) is intact" if earlier else "no best checkpoint was saved yet"
    ensure_free_space(folder, needed, intact)
    with atomic_directory(folder) as tmp, disk_full_as_error(folder, needed, intact):
        write_weights(tmp, model, tokenizer, merge_lora)
        (tmp / BEST_FILE).write_text(json.dumps(info, indent=1))
    return folder


def read_best(folder: str | Path) -> dict | None:
    """The `best.json` of a best-checkpoint folder (metric, value, step, ...), or None when there is none."""
    path = Path(folder) / BEST_FILE
    return json.loads(path.read_text()) if path.is_file() else None


# ----------------------------------------------------------------------------
# Disk space: sizes, the check before a save, and a full disk during one


def format_bytes(count: float) -> str:
    """A size as people read it, in decimal units as `df -H` and file managers print them: 1.6 GB, 542 MB, 27.5 MB."""
    for unit in ("B", "kB", "MB", "GB", "TB"):
        if abs(count) < 1000 or unit == "TB":
            return f"{count:.0f} {unit}" if unit == "B" or abs(count) >= 100 else f"{count:.1f} {unit}"
        count /= 1000
    raise AssertionError("unreachable")


def folder_bytes(path: str | Path) -> int:
    """The bytes of the files under `path` (0 when it does not exist)."""
    path = Path(path)
    if path.is_file():
        return path.stat().st_size
    return sum(f.stat().st_size for f in path.rglob("*") if f.is_file()) if path.is_dir() else 0


def free_bytes(path: str | Path) -> int:
    """Free bytes for this user on the file system that holds `path` (or would: its nearest existing parent)."""
    path = Path(path).absolute()
    while not path.exists() and path != path.parent:
        path = path.parent
    return shutil.disk_usage(path).free


def tensor_bytes(tensors) -> int:
    """The bytes of the distinct tensors in an iterable (tied weights counted once, as safetensors saves them)."""
    seen, total = set(), 0
    for tensor in tensors:
        key = (tensor.device, tensor.data_ptr(), tensor.numel(), tensor.dtype)
        if key not in seen:
            seen.add(key)
            total += tensor.numel() * tensor.element_size()
    return total


def expected_checkpoint_bytes(model, optimizer=None, *, merge_lora: bool = False, previous: Path | None = None) -> int:
    """What a checkpoint of `model` (and `optimizer`'s state, when given) will take on disk: the bytes of the tensors
    saved plus FILES_OVERHEAD, or the size of `previous` (the run's last checkpoint of the same kind) if larger.

    With LoRA the weights saved are the adapter's (the trainable parameters), plus every weight with merge_lora."""
    import torch

    lora = hasattr(model, "peft_config")
    weights = [p for p in model.parameters() if p.requires_grad] if lora else list(model.state_dict().values())
    if lora and merge_lora:
        weights += [t for name, t in model.state_dict().items() if "lora_" not in name]
    total = tensor_bytes(weights) + FILES_OVERHEAD
    if optimizer is not None:
        total += tensor_bytes(t for state in optimizer.state_dict()["state"].values() for t in state.values()
                              if isinstance(t, torch.Tensor))
    if previous is not None and has_optimizer_state(previous) == (optimizer is not None):
        total = max(total, folder_bytes(previous))
    return total


def ensure_free_space(folder: str | Path, needed: int, intact: str) -> None:
    """DiskFullError naming `folder`, the space needed and free, unless the file system holding it has `needed`
    bytes free. `intact` says what the refusal leaves as it was ("the last checkpoint step-4 is intact")."""
    folder, free = Path(folder), free_bytes(folder)
    if free < needed:
        raise DiskFullError(f"not enough disk space for {folder.name} in {folder.parent}: it needs about "
                            f"{format_bytes(needed)} and {format_bytes(free)} are free; {intact}", DISK_FULL_FIX)


DISK_FULL_FIX = ("Free space there or point train.checkpoint_dir at a larger disk (fewer or smaller checkpoints: "
                 "train.save_total_limit, train.save_optimizer=false, train.keep_previous_runs), then continue with "
                 "train.resume=true")
DISK_FULL_ERRNOS = {errno.ENOSPC, errno.EDQUOT}
DISK_FULL_TEXTS = ("No space left on device", "os error 28", "Disk quota exceeded", "StorageFull")  # safetensors' words
TORCH_WRITER_TEXTS = ("inline_container", "PytorchStreamWriter")  # torch.save's writer, which hides the errno


def is_disk_full(err: BaseException, folder: str | Path) -> bool:
    """Whether `err` (or an exception it came from) means the disk holding `folder` is full: an OSError with ENOSPC
    or EDQUOT, a message that says so (safetensors words the OS error as text), or torch.save's writer failing
    (`[enforce fail at inline_container.cc] unexpected pos`, no errno) while less than 64 MiB are free there."""
    chain, seen = [], err
    while seen is not None and seen not in chain:
        chain.append(seen)
        seen = seen.__cause__ or seen.__context__
    for error in chain:
        if isinstance(error, OSError) and error.errno in DISK_FULL_ERRNOS:
            return True
        if any(text in str(error) for text in DISK_FULL_TEXTS):
            return True
    torch_writer = any(text in str(error) for error in chain for text in TORCH_WRITER_TEXTS)
    return torch_writer and free_bytes(folder) < 64 * 2**20


@contextmanager
def disk_full_as_error(folder: str | Path, needed: int, intact: str):
    """Turn a failure of the writes in this block that a full disk caused (`is_disk_full`) into DiskFullError
    naming `folder`; checked before the enclosing `atomic_directory` removes its temporary folder (the disk is still
    full then). Other errors pass unchanged."""
    folder, free_before = Path(folder), free_bytes(folder)
    try:
        yield
    except DiskFullError:
        raise
    except Exception as err:
        if not is_disk_full(err, folder):
            raise
        raise DiskFullError(f"the disk filled up while writing {folder.name} in {folder.parent}: it needs about "
                            f"{format_bytes(needed)} and {format_bytes(free_before)} were free before; the "
                            f"half-written folder was removed and {intact}", DISK_FULL_FIX) from err


def save_merged_lora(peft_model, out_dir: str | Path) -> None:
    """Save base weights with the LoRA adapters merged in, as a plain model folder (the live model keeps its adapters)."""
    import copy

    merged = copy.deepcopy(peft_model).merge_and_unload()
    merged.save_pretrained(out_dir, safe_serialization=True)
