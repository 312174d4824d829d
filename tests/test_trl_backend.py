"""backend=trl: config mapping, our reward inside TRL, in-process training, and 2-process data parallel."""

from __future__ import annotations

import dataclasses
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from dapo_nb import plots
from dapo_nb.config import ConfigError, load_config
from dapo_nb.data import PromptExample
from dapo_nb.models import load_policy, uses_bf16_autocast
from dapo_nb.trl_backend import (
    TRLRewardAdapter,
    batch_layout,
    build_trl_trainer,
    grpo_config_kwargs,
    last_checkpoint,
    parameter_digest,
    train_with_trl,
)
from dapo_nb.rewards import reward_from_config
from dapo_nb.runs import RolloutRecord

ROOT = Path(__file__).resolve().parents[1]


def trl_config(tmp_path, model_dir, train_file, *extra):
    return load_config(overrides=[
        "backend=trl", f"model.pretrained_model_name_or_path={model_dir}", f"data.train_path={train_file}",
        f"train.output_dir={tmp_path / 'run'}", f"train.checkpoint_dir={tmp_path / 'ckpt'}", "train.run_name=t",
        "ppo.batch_size=2", "dapo.group_size=4", "sampling.max_new_tokens=8", "dapo.dynamic_sampling=false",
        "ppo.learning_rate=1e-4", "train.total_steps=2", *extra])


def test_layout_and_grpo_config_match_our_batch(tmp_path):
    from trl import GRPOConfig

    cfg = load_config(overrides=["ppo.batch_size=4", "ppo.mini_batch_size=2", "dapo.group_size=4", "ppo.epochs=2",
                                 "ppo.micro_batch_size=2", "dapo.overlong_filtering=true", "dapo.loss_agg=token-mean"])
    two = batch_layout(cfg, world_size=2)  # per process: 4 completions per update in 2 micro-batches of 2
    assert (two.per_device_batch, two.grad_accum, two.steps_per_generation, two.updates_per_batch) == (2, 2, 4, 4)
    one = batch_layout(cfg, world_size=1)
    args = GRPOConfig(**grpo_config_kwargs(cfg, one, str(tmp_path), use_cpu=True))
    assert args.generation_batch_size == 4 * 4  # B x G completions per generation batch
    assert args.per_device_train_batch_size * args.gradient_accumulation_steps == 2 * 4  # M x G per update
    assert (args.loss_type, args.epsilon, args.epsilon_high, args.beta) == ("dapo", 0.2, 0.28, 0.0)
    assert args.mask_truncated_completions and args.num_iterations == 2 and args.scale_rewards == "group"
    assert args.max_steps == cfg.train.total_steps * 4 and args.logging_steps == 4
    assert args.use_cpu and args.bf16 == uses_bf16_autocast("auto", "cpu", torch.float32)  # model.autocast=auto
    for autocast, bf16 in (("none", False), ("bf16", True)):  # TRL computes in the precision our trainer would
        cfg = load_config(overrides=[f"model.autocast={autocast}"])
        assert GRPOConfig(**grpo_config_kwargs(cfg, batch_layout(cfg, 1), str(tmp_path), use_cpu=True)).bf16 is bf16


@pytest.mark.parametrize("overrides, match", [
    (["sampling.do_sample=false"], "greedy"),
    (["model.device_map=auto"], "model parallel"),
    (["ppo.batch_size=3", "ppo.mini_batch_size=0"], "split evenly over 2 processes"),
    (["ppo.micro_batch_size=3"], "micro_batch_size=3 must divide"),
    (["trl.args={num_generations: 2}"], "dapo.group_size"),
])
def test_refusals_name_the_key(tmp_path, overrides, match):
    from dapo_nb.trl_backend import check_trl_config

    cfg = load_config(overrides=["backend=trl", "dapo.dynamic_sampling=false", *overrides])
    with pytest.raises(ConfigError, match=match):
        check_trl_config(cfg)
        grpo_config_kwargs(cfg, batch_layout(cfg, world_size=2), str(tmp_path), use_cpu=True)


def test_dynamic_sampling_is_said_to_be_missing():
    from dapo_nb.trl_backend import check_trl_config

    with pytest.warns(UserWarning, match="no dynamic sampling"):
        check_trl_config(load_config(overrides=["backend=trl"]))


class _State:
    global_step = 0


def _call(adapter, texts, truths):
    logged = {}
    kwargs = dict(prompts=[""] * len(texts), completions=[[{"role": "assistant", "content": t}] for t in texts],
                  completion_ids=[[1] * (i + 1) for i in range(len(texts))], ground_truth=truths,
                  qid=[f"q{i // 4}" for i in range(len(texts))], info_json=["{}"] * len(texts), trainer_state=_State(),
                  log_metric=lambda name, value: logged.__setitem__(name, value))
    return [fn(**kwargs) for fn in adapter.functions], logged


@pytest.mark.parametrize("scalarizer", ["weighted_sum", "tchebycheff"])
def test_trl_combines_our_columns_into_our_reward(scalarizer):
    """What TRL computes from the adapter's columns and weights equals our reward's scalar."""
    cfg = load_config(overrides=["dapo.group_size=4", "reward.objectives=[correctness,format,clarity]", f"reward.scalarizer={scalarizer}",
                                 "reward.weights={correctness: 1.0, format: 0.3, clarity: 0.2}"])
    examples = [PromptExample("q0", "What is 12 + 7?", "19")]
    adapter = TRLRewardAdapter(reward_from_config(cfg), cfg, batch_layout(cfg, 1), examples)
    texts = ["12 + 7 = 19\nAnswer: 19", "It is 20.", "Answer: 19", "First, 12. Then 7. So 19.\nAnswer: 19"]
    columns, logged = _call(adapter, texts, ["19"] * 4)
    trl_sum = (torch.tensor(columns).T * torch.tensor(adapter.initial_weights)).sum(dim=1)
    ours = reward_from_config(cfg).score(texts, ["19"] * 4, group_ids=[0] * 4, num_tokens=[1, 2, 3, 4]).scores
    assert trl_sum.tolist() == pytest.approx(ours, abs=1e-6)
    assert [fn.__name__ for fn in adapter.functions] == (
        ["correctness", "format", "clarity"] if scalarizer == "weighted_sum" else ["score", "correctness", "format", "clarity"])
    assert logged["weights/format"] == pytest.approx(0.3)


def _varied(completion: str, ground_truth: str, **_) -> float:
    """Differs between sampled texts, so every group has reward variance and the policy moves."""
    return (sum(map(ord, completion)) % 101) / 100


def test_in_process_training_writes_our_metrics_and_resumes(tmp_path, model_dir, train_file, scratch_registry):
    """The notebook path: schedule moves a weight mid-run, metrics read by our plots, checkpoint, resume."""
    from dapo_nb.rewards import register_objective

    register_objective(_varied, name="varied", low=0.0, high=1.0)
    reward = ["reward.objectives=[correctness,format,varied]", "reward.weights={correctness: 1, format: 0.1, varied: 1}"]
    cfg = trl_config(tmp_path, model_dir, train_file, *reward, "reward.schedule={2: {format: 0.7}}", "train.save_every=1")
    history = train_with_trl(cfg)
    lines = [json.loads(l) for l in (tmp_path / "run/metrics.jsonl").read_text().splitlines()]
    assert [m["step"] for m in lines] == [1, 2] and [m["step"] for m in history] == [1, 2]
    assert [m["weights/format"] for m in lines] == pytest.approx([0.1, 0.7])  # the schedule reached TRL's weights
    assert all(m["backend"] == "trl" and "clip_ratio/high_mean" in m and "rewards/correctness/mean" in m for m in lines)
    df = plots.load_metrics(tmp_path / "run")
    assert plots.objective_names(df) == ["correctness", "format", "varied"]
    assert set(plots.run_figures(df)) >= {"rewards", "objectives", "weights"}
    replicas = json.loads((tmp_path / "run/replicas.json").read_text())
    assert replicas["processes"] == 1 and replicas["optimizer_steps"] == 2
    checkpoint = last_checkpoint(cfg)
    assert checkpoint.name == "checkpoint-2"
    model, _ = load_policy(str(checkpoint))  # our loader (and `dapo-nb eval`) read TRL's checkpoints
    assert parameter_digest(model) == replicas["parameter_sha256"][0]
    assert parameter_digest(model) != parameter_digest(load_policy(str(model_dir))[0])  # it trained

    resumed = trl_config(tmp_path, model_dir, train_file, *reward, "train.resume=true", "train.total_steps=3")
    train_with_trl(resumed)
    lines = [json.loads(l) for l in (tmp_path / "run/metrics.jsonl").read_text().splitlines()]
    assert [m["step"] for m in lines] == [1, 2, 3]
    assert last_checkpoint(resumed).name == "checkpoint-3"


def _lines(path) -> list[dict]:
    return [json.loads(line) for line in Path(path).read_text().splitlines()]


def _held_out_keys(line: dict) -> set[str]:
    return {k for k in line if k.startswith("eval/") or k == "time/eval"}


def test_held_out_eval_at_our_steps_with_our_keys_and_training_unchanged(tmp_path, model_dir, train_file):
    """train.eval_every / eval_at_start under TRL: the eval/* of backend=dapo_nb (same keys; the same numbers for the
    same model), in the lines of our steps 0, every 2nd and the last; the rollouts are those of a run without it."""
    held_out = [f"data.test_path={train_file}", "train.eval_every=2", "train.eval_prompts=3", "train.eval_at_start=true"]
    trl_dir, off_dir, ours_dir = tmp_path / "trl", tmp_path / "off", tmp_path / "ours"
    paths = lambda d: [f"train.output_dir={d}", f"train.checkpoint_dir={d / 'ckpt'}"]
    history = train_with_trl(trl_config(tmp_path, model_dir, train_file, *held_out, *paths(trl_dir), "train.total_steps=3"))
    train_with_trl(trl_config(tmp_path, model_dir, train_file, *paths(off_dir), "train.total_steps=3"))
    from dapo_nb.trainer import Trainer

    ours = Trainer(trl_config(tmp_path, model_dir, train_file, *held_out, *paths(ours_dir), "backend=dapo_nb",
                              "train.total_steps=1"))
    ours.train()

    lines = _lines(trl_dir / "metrics.jsonl")
    assert [m["step"] for m in lines] == [0, 1, 2, 3] and history == lines
    assert [m["step"] for m in lines if "eval/pass@1" in m] == [0, 2, 3]  # every 2nd step and the last
    ours_lines = _lines(ours_dir / "metrics.jsonl")
    assert [m["step"] for m in ours_lines if "eval/pass@1" in m] == [0, 1]
    assert set(lines[0]) == set(ours_lines[0])  # the step-0 line: step, eval/*, time/eval
    assert _held_out_keys(lines[2]) == _held_out_keys(lines[3]) == _held_out_keys(ours_lines[1]) == (
        set(ours_lines[0]) - {"step"})
    assert {"eval/pass@1_ci95_low", "eval/reward", "eval/rewards/correctness/mean"} <= _held_out_keys(lines[2])
    # the same untrained model, prompts and greedy decoding: the same held-out numbers
    assert {k: v for k, v in lines[0].items() if k != "time/eval"} == pytest.approx(
        {k: v for k, v in ours_lines[0].items() if k != "time/eval"})
    assert lines[2]["eval/num_prompts"] == 3 and lines[2]["time/eval"] > 0 and lines[2]["reward"] is not None

    # evaluating drew none of training's random numbers: the same completions, rewards and losses as without it
    completions = lambda d: [(r["step"], r["qid"], r["completion"]) for r in _lines(d / "rollouts.jsonl")]
    assert completions(trl_dir) == completions(off_dir)
    off = _lines(off_dir / "metrics.jsonl")
    assert [(m["reward"], m["loss"]) for m in lines[1:]] == [(m["reward"], m["loss"]) for m in off]


@pytest.mark.parametrize("stop_by", ["max_minutes", "request"])
def test_a_stop_waits_for_the_last_update_of_the_step(tmp_path, model_dir, train_file, stop_by):
    """2 optimizer updates per step (ppo.mini_batch_size=2 of ppo.batch_size=4): a deadline or stop request that
    comes during the first update ends the run after the second, so checkpoint-N holds whole steps (N = 2 x the
    last step of metrics.jsonl). The last step is evaluated when the clock ended the run, not after a stop request."""
    from transformers import TrainerCallback

    class RequestStopDuringTheFirstStep(TrainerCallback):
        def on_step_begin(self, args, state, control, **kwargs):
            if state.global_step == 0:
                holder["trainer"].dapo_nb_stopper.requested.set()

    holder = {}
    cfg = trl_config(tmp_path, model_dir, train_file, "ppo.batch_size=4", "ppo.mini_batch_size=2",
                     "train.total_steps=3", "train.save_every=0", f"data.test_path={train_file}", "train.eval_every=3",
                     "train.eval_prompts=2", *(["train.max_minutes=0.0001"] if stop_by == "max_minutes" else []))
    trainer, _ = build_trl_trainer(cfg, callbacks=[RequestStopDuringTheFirstStep()] if stop_by == "request" else [])
    holder["trainer"] = trainer
    trainer.train()
    lines = _lines(tmp_path / "run/metrics.jsonl")
    assert [m["step"] for m in lines] == [1] and lines[-1]["optimizer_step"] == 2
    assert last_checkpoint(cfg).name == "checkpoint-2"
    assert ("eval/pass@1" in lines[-1]) == (stop_by == "max_minutes")


def test_held_out_eval_is_refused_where_the_model_is_sharded():
    from types import SimpleNamespace

    from dapo_nb.trl_backend import check_eval_placement

    cfg = load_config(overrides=["backend=trl", "train.eval_every=5"])
    with pytest.raises(ConfigError, match="train.eval_every=5 .* FSDP / DeepSpeed ZeRO-3 .* train.eval_every=0"):
        check_eval_placement(cfg, SimpleNamespace(is_fsdp_enabled=True))
    check_eval_placement(cfg, SimpleNamespace(is_fsdp_enabled=False))  # DDP: every process holds the whole model


def test_stop_request_saves_a_checkpoint(tmp_path, model_dir, train_file):
    """SIGTERM / Ctrl-C set the same flag: the step finishes, training stops, the checkpoint is written."""
    from transformers import TrainerCallback

    cfg = trl_config(tmp_path, model_dir, train_file, "train.total_steps=5", "train.save_every=0")
    holder = {}

    class RequestStopAfterFirstStep(TrainerCallback):
        def on_step_begin(self, args, state, control, **kwargs):
            if state.global_step == 1:
                holder["trainer"].dapo_nb_stopper.requested.set()

    trainer, _ = build_trl_trainer(cfg, callbacks=[RequestStopAfterFirstStep()])
    holder["trainer"] = trainer
    trainer.train()
    assert trainer.state.global_step == 2
    assert last_checkpoint(cfg).name == "checkpoint-2"


PLUGIN = '''
def compute_score(split, solution_str, ground_truth, info):
    varied = (sum(map(ord, solution_str)) % 101) / 100  # differs between sampled texts: every group has signal
    return {"score": varied, "breakdown": {"varied": varied}}
'''


def test_two_process_data_parallel(tmp_path, embedded_dir):
    """accelerate launch, 2 CPU processes (gloo), embedded model: identical trained replicas, metrics written once."""
    plugin = tmp_path / "plugin.py"
    plugin.write_text(PLUGIN)
    steps = 2
    env = {**os.environ, "ACCELERATE_USE_CPU": "true", "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1",
           "TOKENIZERS_PARALLELISM": "false"}
    command = [
        str(Path(sys.executable).with_name("accelerate")), "launch", "--multi_gpu", "--num_processes", "2",
        "--num_machines", "1", "--mixed_precision", "no", "--dynamo_backend", "no", "-m", "dapo_nb.cli", "train",
        "backend=trl", f"train.total_steps={steps}", "ppo.batch_size=2", "dapo.group_size=4",
        "sampling.max_new_tokens=16", "dapo.dynamic_sampling=false", "ppo.learning_rate=1e-5", "train.threads=1",
        f"reward.plugin={plugin}", "reward.weights={correctness: 1.0, plugin: 1.0}", "train.run_name=dp",
        f"train.output_dir={tmp_path / 'run'}", f"train.checkpoint_dir={tmp_path / 'ckpt'}",
        "train.eval_every=2", "train.eval_prompts=2", "train.eval_at_start=true",  # rank 0 evaluates, rank 1 waits
    ]
    proc = subprocess.run(command, capture_output=True, text=True, env=env, cwd=ROOT, timeout=900)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-5000:]
    assert "backend=trl: 2 process(es), MULTI_CPU (gloo)" in proc.stdout

    replicas = json.loads((tmp_path / "run/replicas.json").read_text())
    assert replicas["processes"] == 2 and replicas["in_sync"] and replicas["optimizer_steps"] == steps
    first, second = replicas["parameter_sha256"]
    assert first == second  # both ranks hold the same trained weights
    assert first != parameter_digest(load_policy("default")[0])  # and they did train
    lines = [json.loads(l) for l in (tmp_path / "run/metrics.jsonl").read_text().splitlines()]
    assert [m["step"] for m in lines] == list(range(0, steps + 1))  # written once, by rank 0
    assert [m["step"] for m in lines if "eval/pass@1" in m] == [0, 2] and lines[2]["eval/num_prompts"] == 2
    assert all(m["rewards/plugin/mean"] > 0 and m["rewards/plugin.varied/mean"] > 0 and m["reward_std"] > 0
               for m in lines[1:])
    rollouts = [json.loads(l) for l in (tmp_path / "run/rollouts.jsonl").read_text().splitlines()]
    assert len(rollouts) == steps * 4
    # the same schema as our trainer's lines; TRL computes advantages out of our sight, so they are null
    assert all(set(r) == {f.name for f in dataclasses.fields(RolloutRecord)} and r["backend"] == "trl"
               and r["advantage"] is None and (not r["truncated"] or r["length"] == 16) for r in rollouts)
    summary = json.loads(proc.stdout.strip().splitlines()[-1])  # printed once, by rank 0
    assert summary["backend"] == "trl" and summary["checkpoint"].endswith(f"checkpoint-{steps}")


def test_lora_through_trl_saves_an_adapter_our_loader_reads(tmp_path, model_dir, train_file):
    cfg = trl_config(tmp_path, model_dir, train_file, "model.lora.r=4", "model.lora.target_modules=[q_proj,v_proj]",
                     "train.total_steps=1")
    train_with_trl(cfg)
    checkpoint = last_checkpoint(cfg)
    assert (checkpoint / "adapter_config.json").is_file() and not (checkpoint / "model.safetensors").exists()
    model, _ = load_policy(str(checkpoint))  # base model + adapter
    assert hasattr(model, "disable_adapter")
