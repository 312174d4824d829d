"""Dynamic sampling's bookkeeping on a scripted task: which prompts have signal is known in advance.

Prompts whose ground truth is "signal" get a reward that varies with the completion text (a hash: the tiny random
model's sampled completions differ, so the group's values differ); prompts marked "flat" get 0 whatever is
written. With `data.shuffle=false` each generation batch takes the next prompts in file order, so the counts of
kept, dropped and surplus groups are known exactly.
"""

from __future__ import annotations

import json
import zlib

import pytest
import torch

from dapo_nb.config import load_config
from dapo_nb.rewards import register_objective
from dapo_nb.runs import UnfilledBatchError
from dapo_nb.trainer import Trainer

#                 batch 1            batch 2            batch 3
ORDER = ["flat", "signal", "signal", "flat", "signal", "signal", "flat", "flat"]


@pytest.fixture()
def scripted(tmp_path, model_dir, scratch_registry):
    register_objective(lambda completion, ground_truth, **_: (zlib.crc32(completion.encode()) % 1000) / 1000
                       if ground_truth == "signal" else 0.0, name="scripted", low=0.0, high=1.0)
    path = tmp_path / "scripted.jsonl"
    path.write_text("".join(json.dumps({"qid": f"q{i}", "prompt": f"Say something {i}.", "ground_truth": kind}) + "\n"
                            for i, kind in enumerate(ORDER)))

    def make(*extra) -> Trainer:
        return Trainer(load_config(overrides=[
            f"model.pretrained_model_name_or_path={model_dir}", f"data.train_path={path}", "data.shuffle=false",
            "sampling.max_new_tokens=6", "dapo.group_size=3", "dapo.gen_batch_size=2", "ppo.batch_size=3", "ppo.mini_batch_size=0",
            "dapo.filter_metric=scripted", "reward.objectives=[scripted]", "reward.weights={scripted: 1.0}",
            "ppo.learning_rate=1e-3", "train.save_every=0", f"train.output_dir={tmp_path / 'run'}",
            f"train.checkpoint_dir={tmp_path / 'ckpt'}", "train.run_name=ds", *extra]))
    return make


def params(trainer):
    return [p.detach().clone() for p in trainer.model.parameters()]


def test_refill_across_batches_trims_the_surplus_and_counts_each_kind(scripted):
    trainer = scripted()
    batch, stats = trainer.collect()
    # batch 1 [flat, signal]: 1 kept, 1 dropped; batch 2 [signal, flat]: 1 kept, 1 dropped;
    # batch 3 [signal, signal]: 1 kept (the batch is full), 1 surplus
    assert stats["dynamic/num_gen_batches"] == 3
    assert (stats["dynamic/groups_kept"], stats["dynamic/groups_dropped"], stats["dynamic/groups_surplus"]) == (3, 2, 1)
    assert stats["dynamic/batch_filled"] == 1.0
    assert [ex.qid for ex in batch.examples] == ["q1"] * 3 + ["q2"] * 3 + ["q4"] * 3
    assert batch.group_ids.tolist() == [0, 0, 0, 1, 1, 1, 2, 2, 2]  # renumbered, rows of a group adjacent
    assert all(ex.ground_truth == "signal" for ex in batch.examples)
    assert stats["frac_reward_zero_std"] == pytest.approx(2 / 6)  # 2 flat groups among the 6 sampled


@pytest.mark.parametrize("policy", ["train", "skip"])
def test_an_unfilled_batch_trains_on_what_it_has_or_skips(scripted, policy):
    trainer = scripted("dapo.max_gen_batches=2", f"dapo.on_unfilled={policy}")  # 2 of the 3 groups it wants
    before = params(trainer)
    metrics = trainer.train_step()
    assert metrics["dynamic/batch_filled"] == 0.0 and metrics["dynamic/groups_kept"] == 2
    changed = any(not torch.equal(a, b) for a, b in zip(before, params(trainer)))
    if policy == "train":
        assert metrics["optimizer_updates"] == 1 and changed
    else:
        assert metrics["optimizer_updates"] == 0 and not changed
    assert json.loads((trainer.output_dir / "metrics.jsonl").read_text().splitlines()[-1])["step"] == 1


def test_an_unfilled_batch_can_stop_the_run_after_saving_the_steps_before(scripted, tmp_path):
    trainer = scripted("dapo.max_gen_batches=3", "dapo.on_unfilled=error", "train.total_steps=3")
    with pytest.raises(UnfilledBatchError, match="raise dapo.max_gen_batches"):
        trainer.train()  # step 1 fills from q0-q5; step 2 sees [q6, q7], [q0, q1], [q2, q3]: 2 groups with signal
    assert trainer.step == 1
    assert (tmp_path / "ckpt" / "ds" / "step-1").is_dir()  # the step before the failure is saved, nothing lost
