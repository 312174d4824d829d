"""Our trainer on N data-parallel processes (2 CPU processes, gloo, 1 thread each, the tiny random model).

The 2-process tests launch real process groups (`torchrun --standalone` and `accelerate launch`), so they take
tens of seconds each on a 2-core machine.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import warnings
from pathlib import Path

import pytest
import torch

import dapo_nb.trainer as trainer_module
from dapo_nb.config import ConfigError, load_config
from dapo_nb.generate import Rollout
from dapo_nb.models import load_policy
from dapo_nb.runs import LOCK_FILE, RunInUseError, training_lock
from dapo_nb.trainer import Trainer, init_data_parallel

ROOT = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
ENV = {**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false",
       "CUDA_VISIBLE_DEVICES": "", "PYTHONPATH": str(ROOT)}

# Objectives shared by the test process and the launched ranks. `scripted` varies inside a group only for prompts
# whose ground truth is "signal" (a hash of the sampled text; the tiny model's samples differ), so with
# data.shuffle=false which groups dynamic sampling keeps is known in advance. `lengthy` moves the scalar reward
# whenever its weight moves.
OBJECTIVES = r'''
import zlib
from dapo_nb.rewards import register_objective
register_objective(lambda completion, ground_truth, **_: (zlib.crc32(completion.encode()) % 1000) / 1000
                   if ground_truth == "signal" else 0.0, name="scripted", low=0.0, high=1.0)
register_objective(lambda completion, ground_truth, **_: (len(completion) % 7) / 7, name="lengthy", low=0.0, high=1.0)
'''

# Rank r samples the r-th half of each global generation batch of 4 prompts (| marks the halves):
#        step 1                                         step 2
#        batch 1            batch 2                     batch 3              batch 4
ORDER = ["signal", "flat", "flat", "flat", "signal", "signal", "signal", "flat",
         "flat", "signal", "signal", "signal", "signal", "signal", "flat", "flat"]
# kept per rank:  [1 | 0]  [2 | 1] -> full (4)      [1 | 2]  [1 of 2 | 0] -> full (4), 1 surplus

DRIVER = OBJECTIVES + r'''
import json, os, sys
from dataclasses import fields
from pathlib import Path
import torch
import dapo_nb.trainer as trainer_module
from dapo_nb.config import load_config

out, overrides = Path(sys.argv[1]), json.loads(sys.argv[2])
rank = int(os.environ["RANK"])
recorded = []  # every rollout this rank sampled, in order: the one-process reference replays them
real = trainer_module.generate_rollouts

def recording(*args, **kwargs):
    rollout = real(*args, **kwargs)
    recorded.append({f.name: getattr(rollout, f.name) for f in fields(rollout)})
    return rollout

trainer_module.generate_rollouts = recording
trainer = trainer_module.Trainer(load_config(overrides=overrides))
# a slider move on rank 0 alone, after step 1: rank 1 scores step 2 with it only if rank 0's weights reach it
trainer.callbacks.append(lambda m: trainer.reward.weights.set({"lengthy": 0.5}) if rank == 0 and m["step"] == 1 else None)
trainer.train()
torch.save({"rollouts": recorded, "params": {n: p.detach().clone() for n, p in trainer.model.named_parameters()},
            "weights_history": trainer.reward.weights.history, "history": trainer.history}, out / f"rank{rank}.pt")
torch.distributed.destroy_process_group()
'''


# `dapo-nb train` on rank 1 with a clock that jumps past any train.max_minutes once its first step has begun
LATE_RANK_1 = r'''
import os, sys, time, types
import dapo_nb.trainer as trainer_module
from dapo_nb.cli import main

if os.environ["RANK"] == "1":
    started = []
    real_step = trainer_module.Trainer.train_step

    def train_step(self):
        started.append(self.step)
        return real_step(self)

    trainer_module.Trainer.train_step = train_step
    trainer_module.time = types.SimpleNamespace(
        perf_counter=time.perf_counter, monotonic=lambda: time.monotonic() + (1e7 if started else 0.0))
sys.exit(main(sys.argv[1:]))
'''


def _scripted_file(tmp_path) -> Path:
    path = tmp_path / "scripted.jsonl"
    path.write_text("".join(json.dumps({"qid": f"q{i}", "prompt": f"Say something {i}.", "ground_truth": kind}) + "\n"
                            for i, kind in enumerate(ORDER)))
    return path


def _overrides(model_dir, data, out, *extra) -> list[str]:
    return [f"model.pretrained_model_name_or_path={model_dir}", f"data.train_path={data}", "data.shuffle=false",
            "sampling.max_new_tokens=6", "dapo.group_size=3", "dapo.gen_batch_size=4", "ppo.batch_size=4",
            "ppo.mini_batch_size=2", "dapo.filter_metric=scripted", "dapo.max_gen_batches=4",
            "reward.objectives=[scripted,lengthy]", "reward.weights={scripted: 1.0, lengthy: 0.0}",
            "reward.schedule={2: {scripted: 2.0}}", "ppo.learning_rate=1e-3", "train.total_steps=2",
            "train.save_every=0", "train.threads=1", "train.log_rollouts=8", f"train.output_dir={out / 'run'}",
            f"train.checkpoint_dir={out / 'ckpt'}", "train.run_name=dp",
            "model.autocast=none",  # float32: two ranks must match one process to 5e-6, below bf16's rounding
            *extra]


def _lines(path) -> list[dict]:
    return [json.loads(line) for line in Path(path).read_text().splitlines()]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _run(command, env=None, timeout=600) -> subprocess.CompletedProcess:
    """Run a launcher in its own session; on a timeout (a rank left waiting in a collective) kill all its processes."""
    proc = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env or ENV, cwd=ROOT,
                            start_new_session=True)
    try:
        stdout, stderr = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        stdout, stderr = proc.communicate()
        pytest.fail(f"{command[0]} still running after {timeout} s: {stdout[-2000:]} {stderr[-4000:]}")
    assert proc.returncode == 0, stdout[-3000:] + stderr[-6000:]
    return subprocess.CompletedProcess(command, proc.returncode, stdout, stderr)


def test_two_ranks_make_the_update_of_one_process_over_the_same_groups(tmp_path, model_dir, scratch_registry):
    """2 ranks with dynamic sampling equal 1 process that trains on the same groups.

    How both runs see the same groups: the data order is a seeded permutation (here the file order,
    data.shuffle=false) shared by all ranks; rank r samples the r-th half of each global generation batch with its own
    generator (seed derived from (seed, rank)). The 2-process run records every rollout each rank sampled. The
    1-process reference is an ordinary Trainer whose generator is replaced by a replay: for its i-th generation batch
    (the whole global batch) it returns rank 0's and rank 1's i-th rollouts concatenated (`Rollout.concat`), after
    checking that it asked for exactly those prompts. Everything after sampling (scoring, dynamic sampling, advantages,
    mini-batches, loss, AdamW) is the reference's own one-process code. The ORDER above makes the ranks keep different
    numbers of groups (one keeps none of a generation batch, one has a surplus), so a mini-batch can have no rows on
    a rank. A slider move on rank 0 only (after step 1) and a reward.schedule entry (step 2) change the weights."""
    data = _scripted_file(tmp_path)
    out2 = tmp_path / "two"
    out2.mkdir()
    driver = tmp_path / "driver.py"
    driver.write_text(DRIVER)
    proc = _run([str(BIN / "torchrun"), "--standalone", "--nproc_per_node", "2", str(driver), str(out2),
                 json.dumps(_overrides(model_dir, data, out2))])
    assert "2 data-parallel processes (gloo)" in proc.stdout
    ranks = [torch.load(out2 / f"rank{r}.pt", weights_only=False) for r in (0, 1)]

    # the replicas: the same weights at every step (the broadcast), the same parameters, written once
    assert ranks[0]["weights_history"] == ranks[1]["weights_history"]
    assert [w for _, w in ranks[0]["weights_history"]][-1] == {"scripted": 2.0, "lengthy": 0.5}
    replicas = json.loads((out2 / "run/replicas.json").read_text())
    assert replicas["processes"] == 2 and replicas["in_sync"] and replicas["step"] == 2
    for name, value in ranks[0]["params"].items():
        assert torch.equal(value, ranks[1]["params"][name]), name
    lines = _lines(out2 / "run/metrics.jsonl")
    assert [m["step"] for m in lines] == [1, 2]  # one rank writes
    assert [(m["dynamic/num_gen_batches"], m["dynamic/groups_kept"], m["dynamic/groups_dropped"],
             m["dynamic/groups_surplus"]) for m in lines] == [(2, 4, 4, 0), (2, 4, 3, 1)]
    assert [m["weights/lengthy"] for m in lines] == [0.0, 0.5] and [m["weights/scripted"] for m in lines] == [1.0, 2.0]
    assert (out2 / "ckpt/dp/step-2/model.safetensors").is_file()

    # the reference: one process, the same groups
    exec(OBJECTIVES, {})
    pairs = list(zip(ranks[0]["rollouts"], ranks[1]["rollouts"]))
    assert len(ranks[0]["rollouts"]) == len(ranks[1]["rollouts"]) == 4  # both ranks sampled 4 generation batches
    calls = iter(pairs)

    def replay(model, tokenizer, prompts, **kwargs):
        parts = [Rollout(**record) for record in next(calls)]
        assert prompts == [t for part in parts for t in part.prompt_texts[:: part.group_size]]
        return Rollout.concat(parts, tokenizer.pad_token_id)

    out1 = tmp_path / "one"
    model, tokenizer = load_policy(str(model_dir))
    one = Trainer(load_config(overrides=_overrides(model_dir, data, out1)), model=model.to("cpu"), tokenizer=tokenizer)
    one.callbacks.append(lambda m: one.reward.weights.set({"lengthy": 0.5}) if m["step"] == 1 else None)
    original = trainer_module.generate_rollouts
    trainer_module.generate_rollouts = replay
    try:
        one.train()
    finally:
        trainer_module.generate_rollouts = original
    assert next(calls, None) is None  # it asked for exactly the 4 generation batches the ranks sampled

    start = {name: p.detach().cpu() for name, p in load_policy(str(model_dir))[0].named_parameters()}
    trained = {name: p.detach() for name, p in one.model.named_parameters()}
    assert any(not torch.equal(trained[n], start[n]) for n in trained)  # it trained
    # equal up to float summation order (measured: at most 3e-7 apart; an update moves a weight by about lr = 1e-3)
    for name, value in ranks[0]["params"].items():
        torch.testing.assert_close(value, trained[name], atol=5e-6, rtol=1e-4, msg=name)
    # the same steps, metric by metric: counts exactly, sums of floats up to their order
    for got, want in zip(lines, _lines(out1 / "run/metrics.jsonl")):
        for key in ("dynamic/num_gen_batches", "dynamic/groups_kept", "dynamic/groups_dropped", "dynamic/groups_surplus",
                    "dynamic/batch_filled", "optimizer_updates", "skipped_updates", "num_generated_tokens",
                    "weights/lengthy", "weights/scripted"):
            assert got[key] == want[key], key
        for key in ("reward", "reward_std", "rewards/scripted/mean", "frac_reward_zero_std", "loss", "grad_norm",
                    "clip_ratio/region_mean", "entropy", "completions/mean_length"):
            assert got[key] == pytest.approx(want[key], rel=1e-4, abs=1e-6), key
    rows = lambda out: [(r["step"], r["qid"], r["completion"], r["score"]) for r in _lines(out / "run/rollouts.jsonl")]
    assert rows(out2) == rows(out1) and len(rows(out1)) == 16  # the first 8 rows of each step's global batch
    advantages = lambda out: [r["advantage"] for r in _lines(out / "run/rollouts.jsonl")]
    assert advantages(out2) == pytest.approx(advantages(out1), abs=1e-6)


def test_accelerate_launch_of_the_cli_with_lora_eval_trackers_weights_file_then_resume(tmp_path, model_dir, train_file):
    """`accelerate launch --num_processes 2 -m dapo_nb.cli train` (LoRA, held-out eval, TensorBoard, a weights file),
    then `torchrun` resuming it with train.max_minutes spent after one step: one set of files, in-sync replicas."""
    weights = tmp_path / "w.yaml"
    weights.write_text("format: 0.3\n")
    common = [f"model.pretrained_model_name_or_path={model_dir}", f"data.train_path={train_file}",
              f"data.test_path={train_file}", "sampling.max_new_tokens=6", "dapo.group_size=3", "ppo.batch_size=2",
              "ppo.mini_batch_size=1", "ppo.learning_rate=1e-3", "train.threads=1", "reward.objectives=[detail,format]",
              "reward.weights={detail: 1.0, format: 0.0}", "dapo.filter_metric=detail", "model.lora.r=4",
              "train.eval_every=2", "train.eval_prompts=2", "train.report_to=tensorboard", f"train.weights_file={weights}",
              f"train.output_dir={tmp_path / 'run'}", f"train.checkpoint_dir={tmp_path / 'ckpt'}", "train.run_name=cli"]
    first = _run([str(BIN / "accelerate"), "launch", "--multi_gpu", "--num_processes", "2", "--num_machines", "1",
                  "--mixed_precision", "no", "--dynamo_backend", "no", "--main_process_port", str(_free_port()),
                  "-m", "dapo_nb.cli", "train", *common, "train.total_steps=2", "train.eval_at_start=true"],
                 env={**ENV, "ACCELERATE_USE_CPU": "true"})
    assert first.stdout.count("train.weights_file: from step 1, weights/format=0.3") == 1  # rank 0 reads it
    summary = json.loads(first.stdout.strip().splitlines()[-1])  # printed once
    assert summary["step"] == 2 and summary["checkpoint"].endswith("step-2")
    lines = _lines(tmp_path / "run/metrics.jsonl")
    assert [m["step"] for m in lines] == [0, 1, 2]
    assert [m["step"] for m in lines if "eval/pass@1" in m] == [0, 2]  # rank 0 evaluated, every rank went on
    assert all(m["weights/format"] == 0.3 for m in lines[1:])
    assert (tmp_path / "ckpt/cli/step-2/adapter_model.safetensors").is_file()
    replicas = json.loads((tmp_path / "run/replicas.json").read_text())
    assert replicas["processes"] == 2 and replicas["in_sync"]
    assert not (tmp_path / "run" / LOCK_FILE).exists()  # released at the end

    # resumed by torchrun; rank 1's clock runs out once step 3 has begun, rank 0's never (train.max_minutes=60)
    wrapper = tmp_path / "late_rank1.py"
    wrapper.write_text(LATE_RANK_1)
    second = _run([str(BIN / "torchrun"), "--standalone", "--nproc_per_node", "2", str(wrapper), "train", *common,
                   "train.total_steps=6", "train.resume=true", "train.max_minutes=60"])
    assert "resumed" in second.stdout
    lines = _lines(tmp_path / "run/metrics.jsonl")
    # both ranks stopped after step 3 (one rank's budget ran out), which is evaluated as a run's last step is
    assert [m["step"] for m in lines] == [0, 1, 2, 3] and "eval/pass@1" in lines[-1]
    replicas = json.loads((tmp_path / "run/replicas.json").read_text())
    assert replicas["in_sync"] and replicas["step"] == 3
    assert sorted(p.name for p in (tmp_path / "ckpt/cli").iterdir() if p.name.startswith("step-")) == ["step-2", "step-3"]
    # one TensorBoard writer per launch (rank 0's), the resumed one in the same folder
    assert len(list((tmp_path / "run/tensorboard").glob("events.out.tfevents.*"))) == 2
    rollouts = _lines(tmp_path / "run/rollouts.jsonl")
    assert sorted({r["step"] for r in rollouts}) == [1, 2, 3] and len(rollouts) == 3 * 4


def test_launches_that_cannot_work_are_refused_before_any_group_forms(monkeypatch):
    monkeypatch.setenv("WORLD_SIZE", "2")
    monkeypatch.setenv("RANK", "0")
    with pytest.raises(ConfigError, match="model.device_map='auto' shards one model .* 2 processes were launched"):
        init_data_parallel(load_config(overrides=["model.device_map=auto"]))
    with pytest.raises(ConfigError, match="dapo.gen_batch_size: 3 prompts per generation batch do not split evenly"):
        init_data_parallel(load_config(overrides=["dapo.gen_batch_size=3"]))
    with pytest.raises(ConfigError, match=r"ppo.batch_size \(dapo.gen_batch_size=0\): 5 prompts"):
        init_data_parallel(load_config(overrides=["ppo.batch_size=5", "ppo.mini_batch_size=0"]))
    assert not torch.distributed.is_initialized()
    monkeypatch.setenv("WORLD_SIZE", "1")
    assert init_data_parallel(load_config()).world == 1


def _tiny(tmp_path, train_file, model_dir, *extra):
    return load_config(overrides=[
        f"model.pretrained_model_name_or_path={model_dir}", f"data.train_path={train_file}", "sampling.max_new_tokens=6",
        "ppo.batch_size=2", "ppo.mini_batch_size=0", "dapo.group_size=3", "train.threads=1", "train.save_every=0",
        f"train.output_dir={tmp_path / 'run'}", f"train.checkpoint_dir={tmp_path / 'ckpt'}", "train.run_name=w",
        "reward.objectives=[detail,format]", "reward.weights={detail: 1.0, format: 0.0}",
        "dapo.filter_metric=detail", *extra])


def test_weights_file_steers_a_headless_run_and_bad_content_keeps_the_weights(tmp_path, train_file, model_dir):
    """train.weights_file is re-read before each step when it changed: applied like a slider move and logged as
    weights/<name>; a file that does not validate is warned about once and the weights stay."""
    path = tmp_path / "weights.yaml"
    edits = {1: "format: 0.5\n", 2: "format: -1\n", 4: "nonsense: 1\n"}  # after step N, the file becomes ...

    def edit(metrics):
        if metrics["step"] in edits:
            path.write_text(edits[metrics["step"]])
            os.utime(path, ns=(metrics["step"] * 10**9, metrics["step"] * 10**9))  # a new mtime, however fast the step

    trainer = Trainer(_tiny(tmp_path, train_file, model_dir, f"train.weights_file={path}", "train.total_steps=5"))
    trainer.callbacks.append(edit)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        history = trainer.train()
    assert [m["weights/format"] for m in history] == [0.0, 0.5, 0.5, 0.5, 0.5]
    problems = [str(w.message) for w in caught if "train.weights_file" in str(w.message)]
    assert len(problems) == 3  # the missing file and each bad version once, not once per step
    assert "no such file" in problems[0] and "weight of 'format' is -1" in problems[1]
    assert "unknown objective 'nonsense'" in problems[2] and "the weights stay {'detail': 1.0, 'format': 0.5}" in problems[2]
    assert trainer.weight_changes == [{"after_step": 1, "what": "weights_file", "value": {"format": 0.5}}]


def test_a_second_process_cannot_train_into_a_run_being_trained(tmp_path, train_file, model_dir):
    cfg = _tiny(tmp_path, train_file, model_dir, "train.total_steps=1")
    (tmp_path / "run").mkdir()
    (tmp_path / "run" / "metrics.jsonl").write_text('{"step": 1}\n')
    holder = subprocess.Popen([sys.executable, "-c", (
        "import sys, time; from dapo_nb.runs import training_lock\n"
        f"with training_lock({str(tmp_path / 'run')!r}):\n    print('held', flush=True); time.sleep(60)")],
        stdout=subprocess.PIPE, text=True, env=ENV, cwd=ROOT)
    try:
        assert holder.stdout.readline().strip() == "held"
        with pytest.raises(RunInUseError, match="another process .* is training into"):
            Trainer(cfg)
        assert (tmp_path / "run" / "metrics.jsonl").read_text() == '{"step": 1}\n'  # its logs untouched
    finally:
        holder.kill()
        holder.wait()
    trainer = Trainer(cfg)  # the holder is gone: its lock went with it
    with training_lock(tmp_path / "run"):
        with pytest.raises(RunInUseError):
            trainer.train()
    trainer.train()
    assert not (tmp_path / "run" / LOCK_FILE).exists()
