"""Crash safety: a training process SIGKILLed during a checkpoint save, during an update or while writing a metrics
line; `train.resume=true` then continues from the last complete checkpoint and every step is logged exactly once.

The crashing run is the CLI's `train` in a child process whose script pauses at the chosen moment (after writing a
marker file) so the test kills it there, not after a guessed sleep. The resumed run is the plain CLI."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from safetensors.torch import load_file

from dapo_nb.checkpoint import atomic_directory, latest_checkpoint, load_trainer_state, remove_temp_dirs
from dapo_nb.config import load_config
from dapo_nb.models import load_policy
from dapo_nb.runs import truncate_run_logs
from dapo_nb.trainer import Trainer

REPO = Path(__file__).resolve().parents[1]

# CRASH_AT=<where>:<step>: pause (marker written, then sleep until SIGKILLed) at that moment of that step.
CHILD = r"""
import json, os, sys, time
from pathlib import Path
where, at = os.environ["CRASH_AT"].split(":")
at = int(at)
marker = Path(os.environ["CRASH_MARKER"])

def pause(note):
    tmp = marker.with_suffix(".tmp")
    tmp.write_text(note)
    tmp.rename(marker)
    time.sleep(600)

import torch
import dapo_nb.trainer
from dapo_nb.cli import main

if where == "save":  # checkpoint step-<at>: weights, tokenizer and optimizer written; rng and trainer_state not yet
    real_save = torch.save
    def save(obj, f, *args, **kwargs):
        real_save(obj, f, *args, **kwargs)
        if Path(f).name == "optimizer.pt" and Path(f).parent.name.startswith(f".step-{at}.tmp-"):
            pause(str(Path(f).parent))
    torch.save = save
elif where == "update":  # step <at>: right after its first optimizer step changed the parameters
    real_update = dapo_nb.trainer.Trainer.update
    def update(self, batch, advantages):
        if self.step + 1 == at:
            real_step = self.optimizer.step
            def step(*args, **kwargs):
                out = real_step(*args, **kwargs)
                pause(f"params_dirty={self._params_dirty}")
                return out
            self.optimizer.step = step
        return real_update(self, batch, advantages)
    dapo_nb.trainer.Trainer.update = update
elif where == "metrics":  # step <at>'s metrics line: torn, half of it written
    real_append = dapo_nb.trainer.append_metrics
    def append(output_dir, metrics):
        if metrics["step"] == at:
            line = json.dumps(metrics) + "\n"
            with open(Path(output_dir) / "metrics.jsonl", "a") as f:
                f.write(line[: len(line) // 2])
            pause("torn")
        real_append(output_dir, metrics)
    dapo_nb.trainer.append_metrics = append
sys.exit(main(["train", *sys.argv[1:]]))
"""


def overrides(tmp_path, train_file, *extra):
    return [
        f"model.pretrained_model_name_or_path={tmp_path / 'model'}", f"data.train_path={train_file}",
        "sampling.max_new_tokens=6", "ppo.batch_size=2", "ppo.mini_batch_size=1", "dapo.group_size=3",
        "ppo.learning_rate=1e-3", "train.log_rollouts=4", "train.threads=1", f"train.output_dir={tmp_path / 'run'}",
        f"train.checkpoint_dir={tmp_path / 'ckpt'}", "train.run_name=t",
        "reward.objectives=[detail]", "reward.weights={detail: 1.0}", "dapo.filter_metric=detail", *extra,
    ]


def child_env(**extra):
    path = os.pathsep.join(p for p in (str(REPO), os.environ.get("PYTHONPATH")) if p)
    return {**os.environ, "PYTHONPATH": path, "HF_HUB_OFFLINE": "1", **extra}


def train_until_killed(tmp_path, args, crash_at, timeout=120) -> str:
    """Run the CLI's train with CRASH_AT=crash_at, SIGKILL it once it pauses there; returns the marker's note."""
    marker = tmp_path / "crash.marker"
    marker.unlink(missing_ok=True)
    log_path = tmp_path / "crashed.log"
    with open(log_path, "w") as log:
        proc = subprocess.Popen([sys.executable, "-c", CHILD, *args], cwd=tmp_path, stdout=log, stderr=subprocess.STDOUT,
                                env=child_env(CRASH_AT=crash_at, CRASH_MARKER=str(marker)))
    try:
        deadline = time.monotonic() + timeout
        while not marker.exists():
            assert proc.poll() is None, f"the run ended (rc {proc.returncode}) before {crash_at}:\n{log_path.read_text()[-3000:]}"
            assert time.monotonic() < deadline, f"no {crash_at} within {timeout}s:\n{log_path.read_text()[-3000:]}"
            time.sleep(0.02)
        os.kill(proc.pid, signal.SIGKILL)
        assert proc.wait(timeout=30) == -signal.SIGKILL
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    return marker.read_text()


def resume_to_end(tmp_path, args) -> str:
    done = subprocess.run([sys.executable, "-m", "dapo_nb.cli", "train", *args, "train.resume=true"], cwd=tmp_path,
                          env=child_env(), capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    return done.stdout


def read_jsonl(path):
    return [json.loads(line) for line in Path(path).read_text().splitlines()]


def assert_run_complete(tmp_path, total):
    """Each step logged once, in order; rollouts of every step; no temporary folder; the last checkpoint loads."""
    assert [m["step"] for m in read_jsonl(tmp_path / "run" / "metrics.jsonl")] == list(range(1, total + 1))
    rollout_steps = [r["step"] for r in read_jsonl(tmp_path / "run" / "rollouts.jsonl")]
    assert rollout_steps == sorted(rollout_steps)
    assert {s: rollout_steps.count(s) for s in set(rollout_steps)} == {s: 4 for s in range(1, total + 1)}
    root = tmp_path / "ckpt" / "t"
    assert not list(root.glob(".*")), "a temporary checkpoint folder was left behind"
    last = latest_checkpoint(root)
    assert last == root / f"step-{total}"
    state, _, _ = load_trainer_state(last)
    assert state["step"] == total
    model, _ = load_policy(str(last))
    saved = load_file(last / "model.safetensors")
    name = next(iter(saved))
    assert model.state_dict()[name].equal(saved[name])


def test_sigkill_during_a_checkpoint_save_resumes_from_the_last_complete_one(tmp_path, train_file, model_dir):
    args = overrides(tmp_path, train_file, "train.total_steps=2", "train.save_every=1")
    half = Path(train_until_killed(tmp_path, args, "save:2"))
    root = tmp_path / "ckpt" / "t"
    assert half.parent == root and (half / "optimizer.pt").is_file() and (half / "model.safetensors").is_file()
    assert not (half / "trainer_state.json").exists() and not (root / "step-2").exists()
    assert latest_checkpoint(root) == root / "step-1"  # the half-written step 2 is not a checkpoint
    assert [m["step"] for m in read_jsonl(tmp_path / "run" / "metrics.jsonl")] == [1, 2]  # step 2 ran, unsaved
    before = [r["completion"] for r in read_jsonl(tmp_path / "run" / "rollouts.jsonl") if r["step"] == 2]

    out = resume_to_end(tmp_path, args)
    assert f"resumed {root / 'step-1'} at step 1" in out
    assert_run_complete(tmp_path, 2)
    # step 2 ran again from the step-1 checkpoint: the same data and sampling RNG give the same completions
    assert [r["completion"] for r in read_jsonl(tmp_path / "run" / "rollouts.jsonl") if r["step"] == 2] == before


def test_sigkill_during_an_update_resumes_from_the_last_checkpoint(tmp_path, train_file, model_dir):
    args = overrides(tmp_path, train_file, "train.total_steps=4", "train.save_every=2")
    assert train_until_killed(tmp_path, args, "update:4") == "params_dirty=True"  # parameters were mid-change
    root = tmp_path / "ckpt" / "t"
    assert sorted(p.name for p in root.iterdir()) == ["step-2"]  # nothing of steps 3-4 saved, no temporary folder
    assert [m["step"] for m in read_jsonl(tmp_path / "run" / "metrics.jsonl")] == [1, 2, 3]  # step 4: nothing logged
    assert {r["step"] for r in read_jsonl(tmp_path / "run" / "rollouts.jsonl")} == {1, 2, 3}

    out = resume_to_end(tmp_path, args)
    assert f"resumed {root / 'step-2'} at step 2" in out
    assert_run_complete(tmp_path, 4)  # step 3's lines from before the crash were dropped, not doubled


def test_sigkill_while_writing_a_metrics_line_drops_the_torn_line(tmp_path, train_file, model_dir):
    args = overrides(tmp_path, train_file, "train.total_steps=2", "train.save_every=1")
    train_until_killed(tmp_path, args, "metrics:2")
    text = (tmp_path / "run" / "metrics.jsonl").read_text()
    assert text.count("\n") == 1 and not text.endswith("\n")  # step 1's line, then half of step 2's
    assert {r["step"] for r in read_jsonl(tmp_path / "run" / "rollouts.jsonl")} == {1, 2}  # step 2's, unsaved

    out = resume_to_end(tmp_path, args)
    assert f"resumed {tmp_path / 'ckpt' / 't' / 'step-1'} at step 1" in out
    assert_run_complete(tmp_path, 2)


# --- the pieces, in process ---------------------------------------------------------------------------------


def write_lines(path, lines):
    path.write_text("".join(lines))


def test_truncate_drops_later_steps_and_a_torn_last_line(tmp_path):
    write_lines(tmp_path / "metrics.jsonl", ['{"step": 1}\n', '{"step": 2}\n', '{"step": 3}\n', '{"step": 4, "lo'])
    write_lines(tmp_path / "rollouts.jsonl", ['{"step": 1, "a": 1}\n', '{"step": 3, "a": 2}\n', '{"st'])
    with pytest.warns(UserWarning) as caught:
        truncate_run_logs(tmp_path, 2)
    assert sorted(Path(str(w.message)).name for w in caught) == [
        "metrics.jsonl, line 4: dropped a torn last line (a crash during its write)",
        "rollouts.jsonl, line 3: dropped a torn last line (a crash during its write)"]
    assert (tmp_path / "metrics.jsonl").read_text() == '{"step": 1}\n{"step": 2}\n'
    assert (tmp_path / "rollouts.jsonl").read_text() == '{"step": 1, "a": 1}\n'
    assert sorted(p.name for p in tmp_path.iterdir()) == ["metrics.jsonl", "rollouts.jsonl"]  # no temporary file


def test_truncate_refuses_a_corrupt_line_before_the_last(tmp_path):
    lines = ['{"step": 1}\n', 'garbage\n', '{"step": 2}\n']
    write_lines(tmp_path / "metrics.jsonl", lines)
    with pytest.raises(ValueError, match=r"metrics.jsonl, line 2: not a JSON object"):
        truncate_run_logs(tmp_path, 1)
    assert (tmp_path / "metrics.jsonl").read_text() == "".join(lines)  # left as it was


def test_leftover_temporary_folders_are_ignored_then_removed(tmp_path):
    with atomic_directory(tmp_path / "step-1") as tmp:
        (tmp / "trainer_state.json").write_text("{}")
    half = tmp_path / ".step-2.tmp-abc"  # what a crash mid-save leaves
    half.mkdir()
    (half / "trainer_state.json").write_text("{}")
    assert latest_checkpoint(tmp_path) == tmp_path / "step-1"
    with atomic_directory(tmp_path / "step-2") as tmp:  # a save of the same step still succeeds
        (tmp / "trainer_state.json").write_text('{"new": 1}')
    assert latest_checkpoint(tmp_path) == tmp_path / "step-2"
    with atomic_directory(tmp_path / "step-2") as tmp:  # replacing a checkpoint leaves nothing aside
        (tmp / "trainer_state.json").write_text('{"new": 2}')
    assert (tmp_path / "step-2" / "trainer_state.json").read_text() == '{"new": 2}'
    assert remove_temp_dirs(tmp_path) == [half]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["step-1", "step-2"]


def test_resume_without_a_checkpoint_keeps_the_crashed_logs_aside(tmp_path, train_file, model_dir):
    run = tmp_path / "run"
    run.mkdir()
    write_lines(run / "metrics.jsonl", ['{"step": 1}\n', '{"step": 2, "lo'])  # crashed before its first checkpoint
    trainer = Trainer(load_config(overrides=[*overrides(tmp_path, train_file, "train.total_steps=1"), "train.resume=true"]))
    assert trainer.step == 0
    assert not (run / "metrics.jsonl").exists()  # the resumed run starts a new log: no step twice
    assert [p.name.startswith("metrics.before-") for p in run.iterdir()] == [True]


def test_a_fresh_run_of_the_same_name_keeps_the_earlier_checkpoints_aside(tmp_path, train_file, model_dir):
    cfg = load_config(overrides=[*overrides(tmp_path, train_file, "train.total_steps=1")])
    Trainer(cfg).train()
    root = Path(cfg.train.checkpoint_dir) / cfg.train.run_name
    assert latest_checkpoint(root) == root / "step-1"
    second = Trainer(cfg)  # not resume: must neither resume from nor mix with the first run's step-1
    assert latest_checkpoint(root) is None
    kept = [p for p in root.parent.iterdir() if p.name.startswith(f"{root.name}.before-")]
    assert len(kept) == 1 and (kept[0] / "step-1" / "trainer_state.json").is_file()
    second.train()
    assert latest_checkpoint(root) == root / "step-1"
