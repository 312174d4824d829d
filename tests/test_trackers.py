"""train.report_to: metrics.jsonl and the config reach TensorBoard (read back from the event files), W&B (offline
files) and Trackio (local database); resumed runs continue them; missing packages fail clearly; backend=trl passes
report_to through to TRL."""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import struct
import sys
from pathlib import Path

import pytest

# `make install` puts wandb and trackio in a side folder (tests/trackers_support/requirements.txt); appended, so the
# venv's own packages win wherever both have one
TRACKERS_SITE = Path(sys.prefix) / "trackers-site"
if TRACKERS_SITE.is_dir() and str(TRACKERS_SITE) not in sys.path:
    sys.path.append(str(TRACKERS_SITE))

from dapo_nb import trackers  # noqa: E402
from dapo_nb.config import ConfigError, load_config  # noqa: E402
from dapo_nb.trainer import Trainer  # noqa: E402


def make_cfg(tmp_path, train_file, *extra):
    """The tiny random model of conftest.py, 2 groups of 3 completions, 6 tokens: a step takes well under a second."""
    return load_config(overrides=[
        f"model.pretrained_model_name_or_path={tmp_path / 'model'}", f"data.train_path={train_file}",
        "sampling.max_new_tokens=6", "ppo.batch_size=2", "dapo.group_size=3", "ppo.learning_rate=1e-3",
        "train.total_steps=3", "train.save_every=0", "train.threads=1", f"train.output_dir={tmp_path / 'run'}",
        f"train.checkpoint_dir={tmp_path / 'ckpt'}", "train.run_name=t", "train.log_rollouts=0",
        "reward.objectives=[detail]", "reward.weights={detail: 1.0}", "dapo.filter_metric=detail",
        "dapo.on_unfilled=train", *extra,
    ])


def metrics_lines(tmp_path) -> dict[int, dict]:
    lines = [json.loads(l) for l in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    return {m["step"]: m for m in lines}


# ----------------------------------------------------------------------------
# Config and errors


def test_report_to_takes_trl_names_one_or_several():
    assert load_config().train.report_to == ["none"]
    assert trackers.enabled(load_config()) == []
    assert load_config(overrides=["train.report_to=tensorboard"]).train.report_to == ["tensorboard"]
    cfg = load_config(overrides=["train.report_to=[tensorboard, wandb]"])
    assert trackers.enabled(cfg) == ["tensorboard", "wandb"]
    assert load_config(overrides=["train.report_to=tensorboard,trackio"]).train.report_to == ["tensorboard", "trackio"]
    with pytest.raises(ConfigError, match=r"'mlflow' is not valid; choose from none, tensorboard, wandb, trackio"):
        load_config(overrides=["train.report_to=mlflow"])
    with pytest.raises(ConfigError, match="none cannot be combined"):
        load_config(overrides=["train.report_to=[none, wandb]"])


def test_a_missing_tracker_package_names_pip_and_the_key_before_the_model_loads(tmp_path, monkeypatch):
    real = importlib.util.find_spec
    monkeypatch.setattr(trackers.importlib.util, "find_spec", lambda name, *a: None if name == "wandb" else real(name, *a))
    # the model path does not exist: the tracker check must come first
    cfg = load_config(overrides=["train.report_to=[tensorboard, wandb]", f"model.pretrained_model_name_or_path={tmp_path / 'none'}"])
    with pytest.raises(ConfigError, match=r"train.report_to=wandb needs the `wandb` package.*pip install wandb.*"
                                          r"pip install 'dapo-nb\[trackers\]'"):
        Trainer(cfg)


def test_metrics_split_into_numbers_and_text():
    step, numbers, texts = trackers.split_metrics({"step": 3, "reward": 0.5, "optimizer_updates": 2, "scalarizer": "tchebycheff",
                                                   "dynamic/batch_filled": True, "entropy": float("nan"), "x": None})
    assert step == 3 and texts == {"scalarizer": "tchebycheff"}
    assert set(numbers) == {"reward", "optimizer_updates", "dynamic/batch_filled", "entropy"}
    assert numbers["optimizer_updates"] == 2.0 and numbers["dynamic/batch_filled"] == 1.0


# ----------------------------------------------------------------------------
# TensorBoard


def read_tensorboard(folder):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    acc = EventAccumulator(str(folder), size_guidance={"scalars": 0, "tensors": 0})
    acc.Reload()
    return acc


def test_tensorboard_gets_every_metric_at_its_step_and_a_resume_drops_stale_points(tmp_path, train_file, model_dir):
    pytest.importorskip("tensorboard")
    folder = tmp_path / "run" / "tensorboard"
    Trainer(make_cfg(tmp_path, train_file, "train.total_steps=1")).train()  # report_to=none: no tracker files
    assert not folder.exists() and not (tmp_path / "run" / trackers.STATE_FILE).exists()

    cfg = make_cfg(tmp_path, train_file, "train.report_to=tensorboard", "train.save_every=2")
    Trainer(cfg).train()  # steps 1-3, checkpoints 2 and 3
    assert folder.is_dir()
    # a crash after step 3 was logged, before its checkpoint: the resumed run redoes step 3
    import shutil

    shutil.rmtree(tmp_path / "ckpt" / "t" / "step-3")
    Trainer(make_cfg(tmp_path, train_file, "train.report_to=tensorboard", "train.resume=true",
                     "train.total_steps=4")).train()

    lines = metrics_lines(tmp_path)
    assert sorted(lines) == [1, 2, 3, 4]
    acc = read_tensorboard(folder)
    tags = set(acc.Tags()["scalars"])
    numeric = {k for k, v in lines[1].items() if isinstance(v, (int, float)) and k != "step"}
    assert numeric <= tags, numeric - tags  # every number of metrics.jsonl
    for tag in ("reward", "loss", "weights/detail", "dynamic/groups_kept"):
        events = acc.Scalars(tag)
        assert [e.step for e in events] == [1, 2, 3, 4], tag  # step 3 once: the stale point was purged
        assert [e.value for e in events] == pytest.approx([lines[s][tag] for s in (1, 2, 3, 4)], rel=1e-6), tag
    texts = set(acc.Tags()["tensors"])
    assert {"config/text_summary", "scalarizer/text_summary"} <= texts
    config_text = acc.Tensors("config/text_summary")[0].tensor_proto.string_val[0].decode()
    assert "run_name: t" in config_text and "report_to:" in config_text
    assert "weighted_sum" in acc.Tensors("scalarizer/text_summary")[0].tensor_proto.string_val[0].decode()
    assert acc.PluginTagToContent("hparams")  # the config as HParams

    # a fresh run of the same name keeps the earlier run's folder aside and starts an empty one
    Trainer(make_cfg(tmp_path, train_file, "train.report_to=tensorboard", "train.total_steps=1")).train()
    assert [p.name.startswith("tensorboard.before-") for p in (tmp_path / "run").glob("tensorboard*")].count(True) == 1
    assert [e.step for e in read_tensorboard(folder).Scalars("reward")] == [1]


def test_train_step_outside_train_logs_and_a_second_train_continues(tmp_path, train_file, model_dir):
    """Notebooks call train_step() directly and train() several times: the trackers follow."""
    pytest.importorskip("tensorboard")
    trainer = Trainer(make_cfg(tmp_path, train_file, "train.report_to=tensorboard", "train.total_steps=3"))
    trainer.train_step()
    trainer.train(steps=1)  # closes the trackers when it returns
    trainer.train()  # reopens them, continuing
    assert [e.step for e in read_tensorboard(tmp_path / "run" / "tensorboard").Scalars("reward")] == [1, 2, 3]


# ----------------------------------------------------------------------------
# Weights & Biases, offline


def wandb_records(path):
    """(kind, record) of a .wandb file: W&B's LevelDB-style log of protobuf Records (32 KiB blocks, 7-byte chunk
    headers: crc, length, type FULL=1 / FIRST=2 / MIDDLE=3 / LAST=4), after a 7-byte file header ':W&B'."""
    from wandb.proto import wandb_internal_pb2

    data = path.read_bytes()
    assert data[:4] == b":W&B"
    pos, pending = 7, b""
    while pos + 7 <= len(data):
        if 32768 - pos % 32768 < 7:  # block trailer
            pos += 32768 - pos % 32768
            continue
        _, length, kind = struct.unpack("<IHB", data[pos : pos + 7])
        chunk, pos = data[pos + 7 : pos + 7 + length], pos + 7 + length
        if kind == 0:
            break
        pending = chunk if kind in (1, 2) else pending + chunk
        if kind in (1, 4):
            record = wandb_internal_pb2.Record()
            record.ParseFromString(pending)
            yield record.WhichOneof("record_type"), record


def wandb_history(path) -> dict[int, dict]:
    rows = {}
    for kind, record in wandb_records(path):
        if kind == "history":
            row = {item.key or "/".join(item.nested_key): json.loads(item.value_json) for item in record.history.item}
            rows[row["_step"]] = row
    return rows


def test_wandb_offline_gets_metrics_config_and_a_resume_continues_the_run(tmp_path, train_file, model_dir, monkeypatch):
    if importlib.util.find_spec("wandb") is None:
        pytest.skip("wandb is not installed (optional: pip install 'dapo-nb[trackers]')")
    monkeypatch.setenv("WANDB_MODE", "offline")  # never the network
    monkeypatch.setenv("WANDB_SILENT", "true")
    monkeypatch.setenv("WANDB_CONSOLE", "off")
    monkeypatch.setenv("WANDB_CONFIG_DIR", str(tmp_path / "wandb-config"))
    monkeypatch.setenv("WANDB_CACHE_DIR", str(tmp_path / "wandb-cache"))
    monkeypatch.setenv("WANDB_DATA_DIR", str(tmp_path / "wandb-data"))
    monkeypatch.delenv("WANDB_DIR", raising=False)  # default: the run's folder
    for name in ("WANDB_RUN_ID", "WANDB_RESUME", "WANDB_PROJECT", "WANDB_API_KEY"):
        monkeypatch.delenv(name, raising=False)

    Trainer(make_cfg(tmp_path, train_file, "train.report_to=wandb", "train.total_steps=2")).train()
    Trainer(make_cfg(tmp_path, train_file, "train.report_to=wandb", "train.total_steps=3", "train.resume=true")).train()

    run_id = json.loads((tmp_path / "run" / trackers.STATE_FILE).read_text())["wandb_run_id"]
    files = sorted((tmp_path / "run" / "wandb").glob(f"offline-run-*-{run_id}/run-{run_id}.wandb"))
    assert len(files) == 2  # the resumed run logged under the same id
    history = {**wandb_history(files[0]), **wandb_history(files[1])}
    lines = metrics_lines(tmp_path)
    assert sorted(history) == [1, 2, 3]
    for step in (1, 2, 3):
        for key in ("reward", "loss", "weights/detail", "completions/mean_length"):
            assert history[step][key] == pytest.approx(lines[step][key], rel=1e-6), (step, key)
    runs = [r.run for kind, r in wandb_records(files[0]) if kind == "run"]
    assert runs[0].run_id == run_id and runs[0].project == "dapo-nb" and runs[0].display_name == "t"
    config = {item.key: json.loads(item.value_json) for item in runs[0].config.update}
    assert config["ppo"]["batch_size"] == 2 and config["train"]["report_to"] == ["wandb"]
    updates = {item.key: json.loads(item.value_json) for kind, r in wandb_records(files[0]) if kind == "config"
               for item in r.config.update}
    assert updates["scalarizer"] == "weighted_sum"  # strings go to the run config


# ----------------------------------------------------------------------------
# Trackio, local


def local_trackio(tmp_path, monkeypatch, test_name: str) -> bool:
    """Point Trackio at a database under tmp_path for this test. False where it cannot be, because trackio was
    imported earlier in this process (trl imports it; its folder is fixed at import time): then the test has run,
    and passed, in a fresh process instead."""
    if importlib.util.find_spec("trackio") is None:
        pytest.skip("trackio is not installed (optional: pip install 'dapo-nb[trackers]')")
    if "trackio" in sys.modules:
        if os.environ.get("DAPO_NB_TRACKIO_CHILD"):
            pytest.fail("trackio is imported before this test even in a fresh process")
        child = subprocess.run(
            [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", f"{__file__}::{test_name}"],
            capture_output=True, text=True, timeout=600, env={**os.environ, "DAPO_NB_TRACKIO_CHILD": "1"},
            cwd=Path(__file__).resolve().parents[1])
        assert child.returncode == 0 and "\n1 passed" in "\n" + child.stdout, child.stdout[-3000:] + child.stderr[-2000:]
        return False
    monkeypatch.setenv("TRACKIO_DIR", str(tmp_path / "trackio"))  # read once, when trackio is imported
    for name in ("TRACKIO_SPACE_ID", "TRACKIO_SERVER_URL"):
        monkeypatch.delenv(name, raising=False)
    return True


def test_trackio_local_gets_metrics_config_and_a_resume_continues_the_run(tmp_path, train_file, model_dir, monkeypatch):
    if not local_trackio(tmp_path, monkeypatch, "test_trackio_local_gets_metrics_config_and_a_resume_continues_the_run"):
        return
    Trainer(make_cfg(tmp_path, train_file, "train.report_to=trackio", "train.total_steps=2")).train()
    Trainer(make_cfg(tmp_path, train_file, "train.report_to=trackio", "train.total_steps=3", "train.resume=true")).train()

    from trackio.sqlite_storage import SQLiteStorage

    assert (tmp_path / "trackio" / "dapo-nb.db").is_file()
    assert SQLiteStorage.get_runs("dapo-nb") == ["t"]  # one run, continued
    logs = {row["step"]: row for row in SQLiteStorage.get_logs("dapo-nb", "t")}
    lines = metrics_lines(tmp_path)
    assert sorted(logs) == [1, 2, 3]
    for step in (1, 2, 3):
        assert logs[step]["reward"] == pytest.approx(lines[step]["reward"], rel=1e-6)
        assert logs[step]["loss"] == pytest.approx(lines[step]["loss"], rel=1e-6)
    assert logs[1]["scalarizer"] == "weighted_sum"
    assert SQLiteStorage.get_run_config("dapo-nb", "t")["ppo"]["batch_size"] == 2


# ----------------------------------------------------------------------------
# backend=trl: TRL's own report_to


def test_trl_gets_report_to_run_name_and_project(tmp_path):
    from trl import GRPOConfig

    from dapo_nb.trl_backend import batch_layout, grpo_config_kwargs

    cfg = load_config(overrides=["backend=trl", "dapo.dynamic_sampling=false", "train.run_name=r1",
                                 "train.report_to=[tensorboard]", "train.tracker_project=proj"])
    kwargs = grpo_config_kwargs(cfg, batch_layout(cfg, 1), str(tmp_path), use_cpu=True)
    assert (kwargs["report_to"], kwargs["run_name"], kwargs["project"]) == (["tensorboard"], "r1", "proj")
    args = GRPOConfig(**kwargs)
    assert args.report_to == ["tensorboard"] and args.run_name == "r1" and args.project == "proj"
    quiet = load_config(overrides=["backend=trl", "dapo.dynamic_sampling=false"])
    assert GRPOConfig(**grpo_config_kwargs(quiet, batch_layout(quiet, 1), str(tmp_path), use_cpu=True)).report_to == []
    clash = load_config(overrides=["backend=trl", "dapo.dynamic_sampling=false", "trl.args={report_to: wandb}"])
    with pytest.raises(ConfigError, match="trl.args.report_to comes from train.report_to"):
        grpo_config_kwargs(clash, batch_layout(clash, 1), str(tmp_path), use_cpu=True)


def trl_cfg(tmp_path, model_dir, train_file, *extra):
    """backend=trl on the tiny model: 2 groups of 4 completions, 6 tokens, one optimizer update a step."""
    return load_config(overrides=[
        "backend=trl", f"model.pretrained_model_name_or_path={model_dir}", f"data.train_path={train_file}",
        f"train.output_dir={tmp_path / 'run'}", f"train.checkpoint_dir={tmp_path / 'ckpt'}", "train.run_name=t",
        "ppo.batch_size=2", "dapo.group_size=4", "sampling.max_new_tokens=6", "dapo.dynamic_sampling=false",
        "train.threads=1", *extra])


def test_trl_training_writes_tensorboard_into_the_run_folder_and_a_resume_drops_stale_points(
        tmp_path, train_file, model_dir, monkeypatch):
    pytest.importorskip("tensorboard")
    import shutil

    from dapo_nb.trl_backend import train_with_trl

    monkeypatch.setenv("TENSORBOARD_LOGGING_DIR", "unset")
    monkeypatch.delenv("TENSORBOARD_LOGGING_DIR")  # restored to unset after the test, whatever trackers.py sets
    tensorboard = ["train.report_to=tensorboard", f"data.test_path={train_file}", "train.eval_every=2",
                   "train.eval_prompts=2"]
    train_with_trl(trl_cfg(tmp_path, model_dir, train_file, *tensorboard, "train.total_steps=3", "train.save_every=2"))
    # a crash after step 3 was logged, before its checkpoint: the resumed run redoes step 3
    shutil.rmtree(tmp_path / "ckpt" / "t" / "checkpoint-3")
    train_with_trl(trl_cfg(tmp_path, model_dir, train_file, *tensorboard, "train.total_steps=4", "train.resume=true"))

    lines = metrics_lines(tmp_path)
    assert sorted(lines) == [1, 2, 3, 4]
    acc = read_tensorboard(tmp_path / "run" / "tensorboard")
    events = acc.Scalars("train/reward")  # TRL's names, prefixed train/, at TRL's optimizer steps
    assert [e.step for e in events] == [lines[s]["optimizer_step"] for s in (1, 2, 3, 4)] == [1, 2, 3, 4]  # 3 once
    assert [e.value for e in events] == pytest.approx([lines[s]["reward"] for s in (1, 2, 3, 4)], rel=1e-6)
    assert "train/loss" in acc.Tags()["scalars"]
    # held-out evaluation reaches TRL's trackers too: step 2, and 4 (every 2nd, the last); the first run's last
    # step, 3, was evaluated as well, but past checkpoint 2, so purged with the rest of that step
    held_out = acc.Scalars("train/eval/pass@1")
    assert [e.step for e in held_out] == [2, 4]
    assert [e.value for e in held_out] == pytest.approx([lines[2]["eval/pass@1"], lines[4]["eval/pass@1"]])


def test_trl_trackio_fresh_runs_start_new_runs_and_a_resume_continues_its_own(tmp_path, train_file, model_dir,
                                                                             monkeypatch):
    if not local_trackio(tmp_path, monkeypatch, "test_trl_trackio_fresh_runs_start_new_runs_and_a_resume_continues_its_own"):
        return
    from dapo_nb.trl_backend import train_with_trl

    trackio = ["train.report_to=trackio", "train.save_every=1"]
    train_with_trl(trl_cfg(tmp_path, model_dir, train_file, *trackio, "train.total_steps=1"))  # an earlier run
    train_with_trl(trl_cfg(tmp_path, model_dir, train_file, *trackio, "train.total_steps=1"))  # fresh, same name
    train_with_trl(trl_cfg(tmp_path, model_dir, train_file, *trackio, "train.total_steps=2", "train.resume=true"))

    from trackio.sqlite_storage import SQLiteStorage

    runs = [r for r in SQLiteStorage.get_run_records("dapo-nb") if r["name"] == "t"]
    assert len(runs) == 2  # the second fresh run did not continue the first
    steps_logged = {r["id"]: [row["train/global_step"] for row in SQLiteStorage.get_logs("dapo-nb", run_id=r["id"])
                              if "train/reward" in row] for r in runs}
    assert sorted(steps_logged.values()) == [[1], [1, 2]]  # the resumed run continued the second, its own
