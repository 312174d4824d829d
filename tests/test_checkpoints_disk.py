"""Checkpoints that cannot fill a disk, and a clear word when it is full.

Retention (train.save_total_limit, train.keep_previous_runs), weights-only checkpoints (train.save_optimizer), the
best held-out checkpoint (train.keep_best), and a full disk (train.on_disk_full): refused before a save, or failing
during the write or a log append, always one DiskFullError line (exit 2) with the last checkpoint intact. The
small-disk test mounts real tmpfs file systems and runs the CLI in subprocesses; the others fake the free space or
the failing write in process. backend=trl maps the same keys onto TRL's."""

from __future__ import annotations

import errno
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from dapo_nb import checkpoint as checkpoint_module
from dapo_nb import cli
from dapo_nb.checkpoint import CheckpointError, DiskFullError, expected_checkpoint_bytes, folder_bytes, read_best
from dapo_nb.config import ConfigError, load_config
from dapo_nb.models import load_policy
from dapo_nb.runs import append_metrics, archive_checkpoints, archive_run_logs
from dapo_nb.trainer import Trainer

REPO = Path(__file__).resolve().parents[1]


def overrides(tmp_path, train_file, *extra):
    return [
        f"model.pretrained_model_name_or_path={tmp_path / 'model'}", f"data.train_path={train_file}",
        f"data.test_path={train_file}", "sampling.max_new_tokens=6", "ppo.batch_size=2", "ppo.mini_batch_size=1",
        "dapo.group_size=3", "ppo.learning_rate=1e-3", "train.threads=1", f"train.output_dir={tmp_path / 'run'}",
        f"train.checkpoint_dir={tmp_path / 'ckpt'}", "train.run_name=t",
        "reward.objectives=[detail]", "reward.weights={detail: 1.0}", "dapo.filter_metric=detail", *extra,
    ]


def make_trainer(tmp_path, train_file, *extra) -> Trainer:
    return Trainer(load_config(overrides=overrides(tmp_path, train_file, *extra)))


def step_folders(root: Path) -> list[str]:
    return sorted((p.name for p in root.iterdir() if p.name.startswith("step-")), key=lambda n: int(n.split("-")[1]))


def hidden(root: Path) -> list[str]:
    return [p.name for p in root.iterdir() if p.name.startswith(".")]


def scripted_held_out(monkeypatch, values: dict[int, float]) -> None:
    """evaluate_held_out returns eval/pass@1 = values[step] (a real evaluation of a random tiny model is always 0)."""
    def evaluate_held_out(self):
        return {"eval/pass@1": values[self.step], "eval/format@1": 0.0, "eval/num_prompts": 12, "time/eval": 0.0}

    monkeypatch.setattr(Trainer, "evaluate_held_out", evaluate_held_out)


# ----------------------------------------------------------------------------
# Retention and the best checkpoint


def test_retention_keeps_the_newest_checkpoints_and_the_best_weights(tmp_path, train_file, model_dir, monkeypatch,
                                                                     capsys):
    """save_total_limit=2 of 4 saves leaves step-3 and step-4; the held-out curve peaks at step 2 and gets worse,
    and best/ holds step 2's weights, loadable by `dapo-nb eval`; a resumed run's worse evaluation leaves it."""
    scripted_held_out(monkeypatch, {1: 0.2, 2: 0.5, 3: 0.5, 4: 0.1, 5: 0.4})
    trainer = make_trainer(tmp_path, train_file, "train.total_steps=4", "train.save_every=1",
                           "train.save_total_limit=2", "train.eval_every=1")
    at_step_2 = {}
    trainer.callbacks.append(lambda m: at_step_2.update(
        {k: v.clone() for k, v in trainer.model.state_dict().items()}) if m["step"] == 2 else None)
    trainer.train()
    root = tmp_path / "ckpt" / "t"
    assert step_folders(root) == ["step-3", "step-4"] and hidden(root) == []
    best = read_best(root / "best")
    assert (best["metric"], best["value"], best["step"]) == ("eval/pass@1", 0.5, 2)  # a tie (step 3) keeps step 2
    saved = load_file(root / "best" / "model.safetensors")
    assert all(torch.equal(saved[k], at_step_2[k]) for k in saved)
    assert not (root / "best" / "optimizer.pt").exists()  # weights only

    capsys.readouterr()
    code = cli.main(["eval", f"model.pretrained_model_name_or_path={root / 'best'}", f"data.test_path={train_file}",
                     "eval.num_samples=0", "eval.max_prompts=2", "sampling.max_new_tokens=4",
                     "reward.objectives=[detail]", "reward.weights={detail: 1.0}"])
    out = capsys.readouterr()
    assert code == 0, out.err
    assert json.loads(out.out.strip().splitlines()[-1])["num_prompts"] == 2

    resumed = make_trainer(tmp_path, train_file, "train.total_steps=5", "train.save_every=1",
                           "train.save_total_limit=2", "train.eval_every=1", "train.resume=true")
    assert resumed.best["step"] == 2
    resumed.train()  # step 5 evaluates 0.4 < 0.5
    assert read_best(root / "best")["step"] == 2 and step_folders(root) == ["step-4", "step-5"]


def test_keep_best_must_name_a_held_out_metric(tmp_path, train_file, model_dir, monkeypatch):
    with pytest.raises(ConfigError, match="train.keep_best='reward' must name a held-out metric"):
        load_config(overrides=["train.keep_best=reward"])
    scripted_held_out(monkeypatch, {0: 0.0})
    trainer = make_trainer(tmp_path, train_file, "train.eval_every=1", "train.eval_at_start=true",
                           "train.keep_best=eval/pass@2")
    with pytest.raises(ConfigError, match=r"train.keep_best=eval/pass@2 is not a held-out metric of this run; "
                                          r"choose one of eval/format@1, eval/num_prompts, eval/pass@1"):
        trainer.train_step()  # the step-0 evaluation already tells


@pytest.mark.parametrize("override, message", [
    ("train.on_disk_full=wait", "choose one of: stop, skip"),
    ("train.save_total_limit=-1", "must be >= 0"),
    ("train.keep_previous_runs=-2", "must be >= 0"),
])
def test_bad_checkpoint_keys_say_what_to_fix(override, message):
    with pytest.raises(ConfigError, match=message):
        load_config(overrides=[override])


def test_weights_only_checkpoints_are_a_third_and_are_not_resumed(tmp_path, train_file, model_dir):
    """train.save_optimizer=false leaves out optimizer.pt: AdamW's two moments per weight, twice the weights' bytes
    (1.08 GB of the embedded model's 1.6 GB). train.resume refuses such a checkpoint with one line (exit 2)."""
    full = make_trainer(tmp_path, train_file, "train.total_steps=1")
    full.train()
    light = make_trainer(tmp_path, train_file, "train.total_steps=1", "train.save_optimizer=false",
                         f"train.checkpoint_dir={tmp_path / 'light'}")
    light.train()
    with_optimizer, weights_only = tmp_path / "ckpt" / "t" / "step-1", tmp_path / "light" / "t" / "step-1"
    weights = (with_optimizer / "model.safetensors").stat().st_size
    optimizer = (with_optimizer / "optimizer.pt").stat().st_size
    assert optimizer == pytest.approx(2 * weights, rel=0.01)
    assert not (weights_only / "optimizer.pt").exists()
    assert folder_bytes(with_optimizer) - folder_bytes(weights_only) == pytest.approx(optimizer, abs=64)
    # the estimate the free-space check uses is never below what was written, and at most the files' margin above
    for trainer, path in ((full, with_optimizer), (light, weights_only)):
        estimate = expected_checkpoint_bytes(trainer.model, trainer.optimizer if path == with_optimizer else None)
        assert folder_bytes(path) <= estimate <= folder_bytes(path) + checkpoint_module.FILES_OVERHEAD
    assert load_policy(str(weights_only))[0] is not None  # evaluable as any checkpoint

    with pytest.raises(CheckpointError) as caught:
        make_trainer(tmp_path, train_file, "train.total_steps=2", f"train.checkpoint_dir={tmp_path / 'light'}",
                     "train.resume=true")
    code, line = cli.error_line("train", caught.value)
    assert code == 2 and "\n" not in line
    assert f"{weights_only} holds no optimizer state (saved with train.save_optimizer=false)" in line
    assert f"model.pretrained_model_name_or_path={weights_only}" in line


def test_a_fresh_run_keeps_keep_previous_runs_earlier_sets_and_says_their_size(tmp_path, capsys):
    root = tmp_path / "ckpt" / "t"

    def a_run(tag: str) -> None:
        (root / "step-1").mkdir(parents=True)
        (root / "step-1" / "trainer_state.json").write_text("{}")
        (root / "step-1" / "model.safetensors").write_bytes(tag.encode() * 1500)

    for tag in "abc":  # three runs of the same name within a second: their archives get distinct names
        a_run(tag)
        archive_checkpoints(root, keep_previous=2)
    earlier = sorted(p.name for p in root.parent.iterdir() if p.name.startswith("t.before-"))
    assert len(earlier) == 2 and not root.exists()
    assert sorted((root.parent / n / "step-1" / "model.safetensors").read_bytes()[:1] for n in earlier) == [b"b", b"c"]
    said = capsys.readouterr().out.strip().splitlines()[-1]
    assert "an earlier run's checkpoints (1.5 kB) were moved to t.before-" in said
    assert "deleted t.before-" in said and "earlier runs' checkpoints kept: 2 (3.0 kB)" in said
    assert "train.keep_previous_runs=2" in said

    a_run("d")
    assert archive_checkpoints(root, keep_previous=0) is None  # 0: the earlier sets go, this one too
    assert not [p for p in root.parent.iterdir() if p.name.startswith("t.before-")]
    said = capsys.readouterr().out
    assert "an earlier run's checkpoints (1.5 kB) were deleted" in said and "kept: 0 (0 B)" in said

    logs = tmp_path / "run"
    logs.mkdir()
    (logs / "metrics.jsonl").write_text('{"step": 1}\n' * 100)
    archive_run_logs(logs)
    said = capsys.readouterr().out
    assert "an earlier run's logs were kept as metrics.before-" in said
    assert "(1.2 kB; all earlier runs' logs there: 1 files, 1.2 kB)" in said


# ----------------------------------------------------------------------------
# A full disk: refused before the save, failing during it, failing a log append


def fake_free_space(monkeypatch, free: dict) -> None:
    """checkpoint.free_bytes returns free["bytes"] (the test changes it as the run goes)."""
    monkeypatch.setattr(checkpoint_module, "free_bytes", lambda path: free["bytes"])


def test_no_room_for_a_checkpoint_stops_with_one_line_and_the_last_one_intact(tmp_path, train_file, model_dir,
                                                                                monkeypatch):
    free = {"bytes": 10**12}
    fake_free_space(monkeypatch, free)
    trainer = make_trainer(tmp_path, train_file, "train.total_steps=3", "train.save_every=1")
    trainer.callbacks.append(lambda m: free.update(bytes=1000) if m["step"] == 2 else None)
    with pytest.raises(DiskFullError) as caught:
        trainer.train()
    root = tmp_path / "ckpt" / "t"
    code, line = cli.error_line("train", caught.value)
    assert code == 2 and "\n" not in line
    assert (f"not enough disk space for step-2 in {root}: it needs about 27.5 MB and 1.0 kB are free; the last "
            "checkpoint step-1 is intact. Free space there") in line
    assert "train.resume=true" in line
    assert step_folders(root) == ["step-1"] and hidden(root) == []
    free["bytes"] = 10**12
    resumed = make_trainer(tmp_path, train_file, "train.total_steps=3", "train.save_every=1", "train.resume=true")
    assert resumed.step == 1


def test_on_disk_full_skip_goes_on_and_the_next_save_tries_again(tmp_path, train_file, model_dir, monkeypatch, capsys):
    free = {"bytes": 10**12}
    fake_free_space(monkeypatch, free)
    trainer = make_trainer(tmp_path, train_file, "train.total_steps=3", "train.save_every=1",
                           "train.on_disk_full=skip", "train.save_total_limit=0")
    trainer.callbacks.append(lambda m: free.update(bytes=1000 if m["step"] == 2 else 10**12))
    trainer.train()
    root = tmp_path / "ckpt" / "t"
    assert step_folders(root) == ["step-1", "step-3"]
    said = capsys.readouterr().out
    assert f"not enough disk space for step-2 in {root}" in said and "not saved (train.on_disk_full=skip)" in said
    # the final save has no next one to retry at: it stops even with skip
    trainer = make_trainer(tmp_path, train_file, "train.total_steps=1", "train.on_disk_full=skip")
    free["bytes"] = 1000
    with pytest.raises(DiskFullError, match="no checkpoint of this run was saved yet"):
        trainer.train()


def _enospc(*args, **kwargs):
    raise OSError(errno.ENOSPC, "No space left on device")


def _safetensors_full(*args, **kwargs):
    raise Exception("Error while serializing: I/O error: No space left on device (os error 28)")


@pytest.mark.parametrize("failure", ["oserror", "safetensors", "torch_writer", "not_a_full_disk"])
def test_a_disk_that_fills_during_the_write_is_the_same_clear_error(tmp_path, train_file, model_dir, monkeypatch,
                                                                     failure):
    """The free-space check passed but the write runs out of space: the errno (tokenizer files), safetensors'
    words, or torch.save's errno-less `inline_container` error on a disk that is then full. Each becomes DiskFullError
    with the half-written folder removed; a write failing on a disk with room stays what it was."""
    free = {"bytes": 10**12}
    fake_free_space(monkeypatch, free)
    trainer = make_trainer(tmp_path, train_file, "train.total_steps=2", "train.save_every=1")
    trainer.train(steps=1)
    real_save = torch.save

    def torch_save(obj, path, *args, **kwargs):
        if Path(path).name == "optimizer.pt":
            free["bytes"] = 0 if failure == "torch_writer" else free["bytes"]
            raise RuntimeError("[enforce fail at inline_container.cc:672] . unexpected pos 113311168 vs 113311056")
        return real_save(obj, path, *args, **kwargs)

    if failure == "oserror":
        monkeypatch.setattr(trainer.tokenizer, "save_pretrained", _enospc)
    elif failure == "safetensors":
        monkeypatch.setattr(trainer.model, "save_pretrained", _safetensors_full)
    else:
        monkeypatch.setattr(torch, "save", torch_save)
    trainer.train_step()
    root = tmp_path / "ckpt" / "t"
    if failure == "not_a_full_disk":
        with pytest.raises(RuntimeError, match="inline_container") as caught:
            trainer.save()
        assert not isinstance(caught.value, DiskFullError)
    else:
        with pytest.raises(DiskFullError) as caught:
            trainer.save()
        line = cli.error_line("train", caught.value)[1]
        assert (f"the disk filled up while writing step-2 in {root}: it needs about 27.5 MB and 1.0 TB were free "
                "before; the half-written folder was removed and the last checkpoint step-1 is intact") in line
    assert step_folders(root) == ["step-1"] and hidden(root) == []
    monkeypatch.undo()
    load_policy(str(root / "step-1"))


@pytest.mark.skipif(not os.path.exists("/dev/full"), reason="needs /dev/full, whose writes fail with ENOSPC")
def test_a_log_append_on_a_full_disk_stops_with_one_line(tmp_path):
    (tmp_path / "metrics.jsonl").symlink_to("/dev/full")
    with pytest.raises(DiskFullError) as caught:
        append_metrics(tmp_path, {"step": 1, "reward": 0.5})
    code, line = cli.error_line("train", caught.value)
    assert code == 2 and f"no space left on the disk of {tmp_path / 'metrics.jsonl'} to append to it" in line
    assert "train.resume=true" in line


# ----------------------------------------------------------------------------
# A real small file system, the CLI in subprocesses


def child_env():
    path = os.pathsep.join(p for p in (str(REPO), os.environ.get("PYTHONPATH")) if p)
    return {**{k: v for k, v in os.environ.items() if k != "DAPO_NB_DEBUG"}, "PYTHONPATH": path, "HF_HUB_OFFLINE": "1",
            "OMP_NUM_THREADS": "1"}


# the CLI's train with the free-space check switched off, so the write itself runs out of space
WITHOUT_CHECK = """
import sys
import dapo_nb.checkpoint
dapo_nb.checkpoint.ensure_free_space = lambda *args, **kwargs: None
from dapo_nb.cli import main
sys.exit(main(["train", *sys.argv[1:]]))
"""


def train_cli(tmp_path, args, *, check_space=True) -> subprocess.CompletedProcess:
    command = ["-m", "dapo_nb.cli", "train"] if check_space else ["-c", WITHOUT_CHECK]
    return subprocess.run([sys.executable, *command, *args], cwd=tmp_path, env=child_env(), capture_output=True,
                          text=True, timeout=300)


@pytest.fixture()
def small_disk(tmp_path):
    """A tmpfs mounted at tmp_path/disk; mount(size) mounts or remounts it with that size. Skipped where mounting is
    not permitted (not root, no CAP_SYS_ADMIN)."""
    disk = tmp_path / "disk"
    disk.mkdir()
    mounted = []

    def mount(size: str) -> Path:
        options = f"size={size}" + (",remount" if mounted else "")
        done = subprocess.run(["mount", "-t", "tmpfs", "-o", options, "tmpfs", str(disk)], capture_output=True,
                              text=True)
        if done.returncode:
            pytest.skip(f"cannot mount a tmpfs here ({done.stderr.strip() or done.returncode})")
        mounted.append(size)
        return disk

    yield mount
    if mounted:
        subprocess.run(["umount", str(disk)], check=False)


def assert_one_line(result: subprocess.CompletedProcess, *phrases: str) -> str:
    """Exit 2 and one error line, the last on stderr (progress bars share stderr), naming each of `phrases`."""
    assert result.returncode == 2, result.stdout[-2000:] + result.stderr[-3000:]
    assert "Traceback" not in result.stdout + result.stderr
    errors = [line for line in result.stderr.splitlines() if line.startswith("dapo-nb ")]
    assert len(errors) == 1 and result.stderr.strip().splitlines()[-1] == errors[0], result.stderr
    for phrase in phrases:
        assert phrase in errors[0], errors[0]
    return errors[0]


def test_a_small_file_system_ends_the_run_with_one_line_and_the_last_checkpoint_resumes(tmp_path, train_file,
                                                                                        model_dir, small_disk):
    """On a 2 MB tmpfs not even the first checkpoint fits. On a 40 MB one the first (22.7 MB) fits and the second
    does not: refused before writing, or (check switched off) failing mid-write; both exit 2 with one line, step-1
    intact and no half-written folder. With room again, train.resume=true continues from step-1."""
    args = overrides(tmp_path, train_file, "train.total_steps=2", "train.save_every=1",
                     f"train.checkpoint_dir={tmp_path / 'disk'}")
    root = small_disk("2M") / "t"
    line = assert_one_line(train_cli(tmp_path, args), "DiskFullError", f"not enough disk space for step-1 in {root}",
                           "no checkpoint of this run was saved yet")
    assert "2.1 MB are free" in line
    assert not root.exists()  # nothing written

    small_disk("40M")
    assert_one_line(train_cli(tmp_path, args), f"not enough disk space for step-2 in {root}: it needs about",
                    "the last checkpoint step-1 is intact", "train.resume=true")
    assert step_folders(root) == ["step-1"] and hidden(root) == []
    assert [json.loads(l)["step"] for l in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()] == [1, 2]

    result = train_cli(tmp_path, [*args, "train.resume=true"], check_space=False)
    assert_one_line(result, f"the disk filled up while writing step-2 in {root}", "the half-written folder was removed",
                    "the last checkpoint step-1 is intact")
    assert f"resumed {root / 'step-1'} at step 1" in result.stdout
    assert step_folders(root) == ["step-1"] and hidden(root) == []
    model, _ = load_policy(str(root / "step-1"))  # the last good checkpoint loads

    small_disk("100M")
    result = train_cli(tmp_path, [*args, "train.resume=true"])
    assert result.returncode == 0, result.stderr[-3000:]
    assert step_folders(root) == ["step-1", "step-2"]
    assert [json.loads(l)["step"] for l in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()] == [1, 2]


# ----------------------------------------------------------------------------
# backend=trl


def trl_overrides(tmp_path, model_dir, train_file, *extra):
    return ["backend=trl", f"model.pretrained_model_name_or_path={model_dir}", f"data.train_path={train_file}",
            f"data.test_path={train_file}", f"train.output_dir={tmp_path / 'run'}",
            f"train.checkpoint_dir={tmp_path / 'ckpt'}", "train.run_name=t", "ppo.batch_size=2", "dapo.group_size=4",
            "sampling.max_new_tokens=8", "dapo.dynamic_sampling=false", "ppo.learning_rate=1e-4", *extra]


def test_trl_gets_the_checkpoint_keys(tmp_path):
    from dapo_nb.trl_backend import batch_layout, grpo_config_kwargs

    cfg = load_config(overrides=["backend=trl", "train.save_total_limit=3", "train.save_optimizer=false"])
    kwargs = grpo_config_kwargs(cfg, batch_layout(cfg, 1), str(tmp_path), use_cpu=True)
    assert (kwargs["save_total_limit"], kwargs["save_only_model"]) == (3, True)
    cfg = load_config(overrides=["backend=trl", "train.save_total_limit=0"])
    assert grpo_config_kwargs(cfg, batch_layout(cfg, 1), str(tmp_path), use_cpu=True)["save_total_limit"] is None
    cfg = load_config(overrides=["backend=trl", "trl.args={save_total_limit: 1}"])
    with pytest.raises(ConfigError, match="trl.args.save_total_limit comes from train.save_total_limit"):
        grpo_config_kwargs(cfg, batch_layout(cfg, 1), str(tmp_path), use_cpu=True)


def test_trl_keeps_the_newest_and_the_best_and_refuses_to_resume_weights_only(tmp_path, model_dir, train_file,
                                                                               monkeypatch):
    import dapo_nb.trl_backend as trl_backend

    values = {1: 0.3, 2: 0.6, 3: 0.2}
    monkeypatch.setattr(trl_backend, "held_out_metrics", lambda model, tokenizer, examples, reward, cfg, *, step: {
        "eval/pass@1": values[step], "eval/format@1": 0.0, "eval/num_prompts": 12, "time/eval": 0.0})
    cfg = load_config(overrides=trl_overrides(tmp_path, model_dir, train_file, "train.total_steps=3",
                                              "train.save_every=1", "train.save_total_limit=1",
                                              "train.save_optimizer=false", "train.eval_every=1"))
    trl_backend.train_with_trl(cfg)
    root = tmp_path / "ckpt" / "t"
    assert sorted(p.name for p in root.iterdir() if p.name.startswith("checkpoint-")) == ["checkpoint-3"]
    assert not (root / "checkpoint-3" / "optimizer.pt").exists()  # save_only_model
    best = read_best(root / "best")
    assert (best["step"], best["value"], best["backend"]) == (2, 0.6, "trl")
    load_policy(str(root / "best"))
    with pytest.raises(CheckpointError, match=r"checkpoint-3 holds no optimizer state"):
        trl_backend.build_trl_trainer(load_config(overrides=trl_overrides(
            tmp_path, model_dir, train_file, "train.total_steps=4", "train.resume=true")))


def test_trl_refuses_a_checkpoint_that_does_not_fit(tmp_path, model_dir, train_file, monkeypatch):
    from dapo_nb.trl_backend import train_with_trl

    monkeypatch.setattr(checkpoint_module, "free_bytes", lambda path: 1000)
    cfg = load_config(overrides=trl_overrides(tmp_path, model_dir, train_file, "train.total_steps=1"))
    with pytest.raises(DiskFullError, match=r"not enough disk space for checkpoint-1 in .*: it needs about .* and "
                                            r"1.0 kB are free; no checkpoint of this run was saved yet"):
        train_with_trl(cfg)
    assert not list((tmp_path / "ckpt" / "t").glob("checkpoint-*"))


def test_trl_write_that_fills_the_disk_is_the_same_clear_error(tmp_path):
    """TRL writes checkpoint-N in place: a full disk mid-write leaves one without trainer_state.json (written last),
    which is removed, and the error becomes DiskFullError naming the last complete checkpoint."""
    from dapo_nb.trl_backend import disk_full_during_save

    root = tmp_path / "ckpt"
    (root / "checkpoint-1").mkdir(parents=True)
    (root / "checkpoint-1" / "trainer_state.json").write_text("{}")
    (root / "checkpoint-2").mkdir()
    (root / "checkpoint-2" / "model.safetensors").write_bytes(b"half")
    assert disk_full_during_save(RuntimeError("a bug"), root) is None
    assert (root / "checkpoint-2").is_dir()  # not a full disk: nothing touched
    error = disk_full_during_save(OSError(errno.ENOSPC, "No space left on device"), root)
    assert isinstance(error, DiskFullError)
    assert (f"the disk filled up while backend=trl wrote to {root} ([Errno 28] No space left on device); the "
            "half-written checkpoint-2 was removed; the last checkpoint checkpoint-1 is intact") in str(error)
    assert sorted(p.name for p in root.iterdir()) == ["checkpoint-1"]
