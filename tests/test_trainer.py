"""The training loop on a tiny random model: a step runs, dynamic sampling fills batches, checkpoints resume
exactly, non-finite updates are skipped, interrupts save."""

from __future__ import annotations

import dataclasses
import json
import math
import os
import signal
import threading

import pytest
import torch
from safetensors.torch import load_file

from dapo_nb.checkpoint import latest_checkpoint
from dapo_nb.config import load_config
from dapo_nb.models import load_policy
from dapo_nb.runs import RolloutRecord
from dapo_nb.trainer import Trainer

TIMING_KEYS = ("step_time", "tokens_per_second", "time/generate_and_score", "time/update")


def make_cfg(tmp_path, train_file, *extra):
    return load_config(overrides=[
        f"model.pretrained_model_name_or_path={tmp_path / 'model'}", f"data.train_path={train_file}",
        "sampling.max_new_tokens=6", "ppo.batch_size=2", "ppo.mini_batch_size=1", "dapo.group_size=3",
        "ppo.learning_rate=1e-3", "train.total_steps=4", "train.save_every=0", "train.threads=1", f"train.output_dir={tmp_path / 'run'}",
        f"train.checkpoint_dir={tmp_path / 'ckpt'}", "train.run_name=t",
        # random tiny models are never correct, so filter on a shaped objective that varies
        "reward.objectives=[detail]", "reward.weights={detail: 1.0}", "dapo.filter_metric=detail",
        *extra,
    ])


def strip_timing(rows):
    return [{k: v for k, v in r.items() if k not in TIMING_KEYS} for r in rows]


def test_a_step_logs_trl_named_metrics_and_rollouts(tmp_path, train_file, model_dir):
    trainer = Trainer(make_cfg(tmp_path, train_file, "train.total_steps=1"))
    before = {k: v.clone() for k, v in trainer.model.state_dict().items()}
    history = trainer.train()
    m = history[-1]
    for key in ["reward", "reward_std", "rewards/detail/mean", "weights/detail", "frac_reward_zero_std",
                "completions/mean_length", "completions/clipped_ratio", "clip_ratio/low_mean", "clip_ratio/high_mean",
                "entropy", "grad_norm", "loss", "learning_rate", "dynamic/groups_kept", "dynamic/groups_dropped",
                "dynamic/num_gen_batches", "step_time", "tokens_per_second"]:
        assert key in m, key
    assert m["dynamic/groups_kept"] == 2 and m["optimizer_updates"] == 2  # 2 groups, mini-batches of 1 group
    lines = (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()
    assert [json.loads(l)["step"] for l in lines] == [1]
    rollouts = [json.loads(l) for l in (tmp_path / "run" / "rollouts.jsonl").read_text().splitlines()]
    assert rollouts and all(set(r) == {f.name for f in dataclasses.fields(RolloutRecord)} for r in rollouts)
    assert all(r["backend"] == "dapo_nb" and isinstance(r["advantage"], float) for r in rollouts)
    changed = any(not torch.equal(before[k], v) for k, v in trainer.model.state_dict().items())
    assert changed
    assert latest_checkpoint(tmp_path / "ckpt" / "t").name == "step-1"  # saved at the end


def test_resume_gives_the_same_run_as_straight_training(tmp_path, train_file, model_dir):
    straight = Trainer(make_cfg(tmp_path, train_file, f"train.output_dir={tmp_path / 'a'}",
                                f"train.checkpoint_dir={tmp_path / 'ca'}"))
    full = strip_timing(straight.train())
    first = Trainer(make_cfg(tmp_path, train_file, f"train.output_dir={tmp_path / 'b'}",
                             f"train.checkpoint_dir={tmp_path / 'cb'}"))
    first.train(steps=2)
    del first
    second = Trainer(make_cfg(tmp_path, train_file, f"train.output_dir={tmp_path / 'b'}",
                              f"train.checkpoint_dir={tmp_path / 'cb'}", "train.resume=true"))
    assert second.step == 2
    second.train()
    resumed = strip_timing([json.loads(l) for l in (tmp_path / "b" / "metrics.jsonl").read_text().splitlines()])
    assert [r["step"] for r in resumed] == [1, 2, 3, 4]
    # same data order and sampling RNG: the very same completions; numbers equal up to float32 summation order
    # (CPU BLAS kernels may sum in another order from one allocation to the next)
    texts = lambda run: [(r["step"], r["completion"]) for r in map(json.loads, (tmp_path / run / "rollouts.jsonl").open())]
    assert texts("a") == texts("b")
    for got, want in zip(resumed, full):
        assert got.keys() == want.keys()
        for k in got:
            same = math.isclose(got[k], want[k], rel_tol=1e-3, abs_tol=1e-6) if isinstance(got[k], float) else got[k] == want[k]
            assert same, (got["step"], k, got[k], want[k])
    a = load_file(tmp_path / "ca" / "t" / "step-4" / "model.safetensors")
    b = load_file(tmp_path / "cb" / "t" / "step-4" / "model.safetensors")
    assert a.keys() == b.keys()
    for k in a:
        torch.testing.assert_close(a[k], b[k], atol=1e-5, rtol=1e-4)
    assert [s for s, _ in second.reward.weights.history] == [1, 2, 3, 4]  # live-weight history survived the resume


def test_non_finite_update_is_skipped_and_parameters_untouched(tmp_path, train_file, model_dir, monkeypatch):
    import dapo_nb.trainer as trainer_module

    trainer = Trainer(make_cfg(tmp_path, train_file, "train.total_steps=1"))
    before = {k: v.clone() for k, v in trainer.model.state_dict().items()}
    original = trainer_module.completion_logprobs
    broken = lambda *a, **k: original(*a, **k) * float("nan")  # a numerically broken forward pass
    monkeypatch.setattr(trainer_module, "completion_logprobs", broken)
    m = trainer.train()[-1]
    assert m["skipped_updates"] == 2 and m["optimizer_updates"] == 0
    assert all(torch.equal(before[k], v) for k, v in trainer.model.state_dict().items())


def test_dynamic_sampling_drops_groups_without_signal(tmp_path, train_file, model_dir):
    # correctness is always 0 for a random model: every group is dropped, sampling stops at max_gen_batches
    trainer = Trainer(make_cfg(tmp_path, train_file, "reward.objectives=[correctness,detail]",
                               "reward.weights={correctness: 1.0, detail: 0.5}", "dapo.filter_metric=correctness",
                               "dapo.max_gen_batches=3", "train.total_steps=1"))
    m = trainer.train()[-1]
    assert m["dynamic/num_gen_batches"] == 3 and m["dynamic/groups_kept"] == 0 and m["dynamic/groups_dropped"] == 6
    assert m["dynamic/batch_filled"] == 0.0 and m["optimizer_updates"] == 0
    # filtering on the shaped score instead keeps them (the pitfall DESIGN.md warns about)
    trainer = Trainer(make_cfg(tmp_path, train_file, "reward.objectives=[correctness,detail]",
                               "reward.weights={correctness: 1.0, detail: 0.5}", "dapo.filter_metric=score",
                               "train.total_steps=1", "train.run_name=t2"))
    assert trainer.train()[-1]["dynamic/groups_kept"] == 2


def test_sigterm_finishes_the_step_and_saves(tmp_path, train_file, model_dir):
    trainer = Trainer(make_cfg(tmp_path, train_file, "train.total_steps=50"))
    trainer.callbacks.append(lambda m: os.kill(os.getpid(), signal.SIGTERM) if m["step"] == 2 else None)
    trainer.train()
    assert trainer.step == 2
    assert latest_checkpoint(tmp_path / "ckpt" / "t").name == "step-2"


def test_stop_from_another_thread(tmp_path, train_file, model_dir):
    trainer = Trainer(make_cfg(tmp_path, train_file, "train.total_steps=50"))
    trainer.callbacks.append(lambda m: trainer.stop() if m["step"] == 1 else None)
    thread = threading.Thread(target=trainer.train)
    thread.start()
    thread.join(timeout=120)
    assert not thread.is_alive() and trainer.step == 1
    assert latest_checkpoint(tmp_path / "ckpt" / "t").name == "step-1"


def test_schedule_steps_are_metrics_steps(tmp_path, train_file, model_dir):
    trainer = Trainer(make_cfg(tmp_path, train_file, "reward.objectives=[detail,format]", "train.total_steps=3",
                               "reward.weights={detail: 1.0, format: 0.0}", "reward.schedule={2: {format: 0.7}}"))
    assert [(h["step"], h["weights/format"]) for h in trainer.train()] == [(1, 0.0), (2, 0.7), (3, 0.7)]


def test_a_fresh_run_keeps_an_earlier_runs_logs(tmp_path, train_file, model_dir):
    (tmp_path / "run").mkdir()
    (tmp_path / "run" / "metrics.jsonl").write_text('{"step": 9}\n')
    trainer = Trainer(make_cfg(tmp_path, train_file, "train.total_steps=1"))
    trainer.train()
    kept = list((tmp_path / "run").glob("metrics.before-*.jsonl"))
    assert len(kept) == 1 and kept[0].read_text() == '{"step": 9}\n'
    assert [json.loads(l)["step"] for l in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()] == [1]


def test_live_weight_change_applies_from_the_next_step(tmp_path, train_file, model_dir):
    trainer = Trainer(make_cfg(tmp_path, train_file, "reward.objectives=[detail,format]",
                               "reward.weights={detail: 1.0, format: 0.0}", "train.total_steps=3"))
    trainer.callbacks.append(lambda m: trainer.reward.weights.set({"format": 0.5}) if m["step"] == 1 else None)
    history = trainer.train()
    assert [h["weights/format"] for h in history] == [0.0, 0.5, 0.5]


def test_greedy_mode_uses_a_batch_baseline(tmp_path, train_file, model_dir, scratch_registry):
    from dapo_nb import dapo
    from dapo_nb.rewards import register_objective

    # greedy completions of a group are identical, so their group advantages are all 0; a reward that differs by
    # prompt (ground truths 0, 2, ..., 22) gives the batch baseline something to tell apart
    register_objective(lambda completion, ground_truth, **_: int(ground_truth) / 22, name="answer_size", low=0, high=1)
    with pytest.warns(UserWarning, match="batch-level baseline"):
        trainer = Trainer(make_cfg(tmp_path, train_file, "sampling.do_sample=false", "train.total_steps=1",
                                   "ppo.batch_size=3", "train.log_rollouts=9", "reward.objectives=[answer_size]",
                                   "reward.weights={answer_size: 1.0}", "dapo.filter_metric=answer_size"))
    batch, stats = trainer.collect()
    assert stats["dynamic/num_gen_batches"] == 1 and stats["dynamic/groups_kept"] == 3  # no dynamic sampling
    texts = batch.rollout.completion_texts
    assert all(texts[i] == texts[i - i % 3] for i in range(9))  # identical within each group
    scores = torch.tensor([int(ex.ground_truth) / 22 for ex in batch.examples])
    torch.testing.assert_close(batch.scores, scores)
    assert len(set(scores.tolist())) == 3  # three prompts, three rewards
    expected = (scores - scores.mean()) / (scores.std() + 1e-6)  # (R - batch mean) / (batch std + eps)
    advantages = trainer.advantages(batch)
    torch.testing.assert_close(advantages, expected)
    assert advantages.abs().max() > 0.5  # the batch baseline gives signal ...
    assert torch.equal(dapo.group_advantages(batch.scores, batch.group_ids), torch.zeros(9))  # ... groups give none
    # the step itself trains on these advantages: the logged rows of a step satisfy the same formula
    m = trainer.train_step()
    assert m["dynamic/groups_kept"] == 3 and m["optimizer_updates"] == 3
    rows = [json.loads(line) for line in (tmp_path / "run" / "rollouts.jsonl").read_text().splitlines()]
    assert len(rows) == 9
    logged = torch.tensor([r["score"] for r in rows])
    torch.testing.assert_close(logged, torch.tensor([int(r["ground_truth"]) / 22 for r in rows]))
    torch.testing.assert_close(torch.tensor([r["advantage"] for r in rows]),
                               (logged - logged.mean()) / (logged.std() + 1e-6))


def test_lora_trains_adapters_only_saves_them_and_uses_the_base_as_reference(tmp_path, train_file, model_dir):
    trainer = Trainer(make_cfg(tmp_path, train_file, "model.lora.r=4", "model.lora.merge_on_save=true",
                               "dapo.beta=0.1", "train.total_steps=1"))
    assert trainer.ref_model is None  # the base model with adapters off is the reference: no second copy
    base_before = {k: v.clone() for k, v in trainer.model.state_dict().items() if "lora_" not in k}
    m = trainer.train()[-1]
    assert m["optimizer_updates"] == 2 and "kl" in m and m["kl"] >= 0
    after = trainer.model.state_dict()
    assert all(torch.equal(base_before[k], after[k]) for k in base_before)  # frozen base
    ckpt = latest_checkpoint(tmp_path / "ckpt" / "t")
    assert (ckpt / "adapter_model.safetensors").is_file() and not (ckpt / "model.safetensors").exists()
    assert (ckpt / "merged" / "model.safetensors").is_file()
    # a LoRA checkpoint loads as base + adapter, and its merged copy as a plain model, with the same outputs
    ids = torch.tensor([[1, 2, 3, 4]])
    adapter_model, _ = load_policy(str(ckpt))
    merged_model, _ = load_policy(str(ckpt / "merged"))
    with torch.no_grad():
        torch.testing.assert_close(adapter_model(ids).logits, merged_model(ids).logits, atol=1e-4, rtol=1e-4)
        torch.testing.assert_close(adapter_model(ids).logits, trainer.model(ids).logits, atol=1e-5, rtol=1e-5)


def test_time_budget_stops_after_the_running_step(tmp_path, train_file, model_dir):
    trainer = Trainer(make_cfg(tmp_path, train_file, "train.total_steps=50", "train.max_minutes=0.0001"))
    trainer.train()
    assert trainer.step == 1  # the first step starts before the budget is spent; no second one
    assert latest_checkpoint(tmp_path / "ckpt" / "t").name == "step-1"


def test_bf16_autocast_runs_and_reports_the_rollout_update_gap(tmp_path, train_file, model_dir):
    exact = Trainer(make_cfg(tmp_path, train_file, "train.total_steps=1", "model.autocast=none")).train_step()
    assert exact["logprobs/update_vs_rollout_abs_diff"] < 1e-4  # float32 both times: the same numbers
    mixed = Trainer(make_cfg(tmp_path, train_file, "train.total_steps=1", "model.autocast=bf16",
                             f"train.output_dir={tmp_path / 'bf16'}")).train_step()
    assert 1e-4 < mixed["logprobs/update_vs_rollout_abs_diff"] < 1.0 and mixed["optimizer_updates"] > 0


def test_autocast_auto_is_bf16_exactly_on_a_cpu_with_native_bf16(tmp_path, train_file, model_dir):
    """model.autocast=auto (the default): bf16 autocast where oneDNN computes bf16 natively, else float32; the
    rollout/update log-prob gap shows which one ran."""
    trainer = Trainer(make_cfg(tmp_path, train_file, "train.total_steps=1"))
    native = torch.ops.mkldnn._is_mkldnn_bf16_supported()
    assert trainer.bf16_autocast is native
    gap = trainer.train_step()["logprobs/update_vs_rollout_abs_diff"]
    assert gap > 1e-4 if native else gap < 1e-4


def test_default_threads_make_room_for_a_busy_neighbour():
    """train.threads=0: the step after another process kept a core busy runs one torch thread fewer."""
    import subprocess
    import sys
    import time

    from dapo_nb.cpu_threads import AdaptiveThreads

    policy = AdaptiveThreads()
    if not policy.active or policy.cores < 2:
        pytest.skip("needs Linux /proc/stat describing this process's CPUs, and 2 or more of them")
    before = torch.get_num_threads()
    neighbour = subprocess.Popen([sys.executable, "-c", "while True: pass"])
    try:
        time.sleep(2.0)
        assert policy.update() == policy.cores - policy.busy_neighbours < policy.cores
        assert torch.get_num_threads() == policy.cores - policy.busy_neighbours
    finally:
        neighbour.kill()
        neighbour.wait()
        torch.set_num_threads(before)
