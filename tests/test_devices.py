"""Every tensor path on an accelerator: the generator, the DAPO math, training in each mode, evaluation.

On a machine with CUDA these run on the GPU. Without one (CI) they run on `SimulatedAccelerator`
(tests/simulated_device.py): a second device with real data on the CPU that raises wherever CUDA raises on a
host/device mix. The first tests check the simulation itself against what CUDA does.
"""

from __future__ import annotations

import json

import pytest
import torch

from dapo_nb import dapo
from dapo_nb.config import load_config
from dapo_nb.evaluate import evaluate
from dapo_nb.data import load_prompts
from dapo_nb.generate import completion_logprobs, generate_rollouts
from dapo_nb.models import load_policy
from dapo_nb.rewards import register_objective
from dapo_nb.trainer import Trainer

from simulated_device import DeviceMismatch, DeviceTensor, SimulatedAccelerator


@pytest.fixture()
def accelerator():
    """The device to test on: the real GPU when there is one, else the simulated accelerator."""
    if torch.cuda.is_available():
        yield torch.device("cuda")
        return
    with SimulatedAccelerator() as device:
        yield device


def on(device: torch.device, tensor: torch.Tensor) -> bool:
    return tensor.device.type == device.type


# ----------------------------------------------------------------------------------------------------------------
# The simulation refuses what CUDA refuses and allows what CUDA allows


def test_a_host_device_mix_raises_as_on_cuda(accelerator):
    ids = torch.arange(6, device=accelerator)
    host = torch.tensor([1, 2])
    for mix in (lambda: torch.isin(ids, host), lambda: ids + host[:1].expand(6).clone(), lambda: host[ids[:2]],
                lambda: torch.rand(2, device=accelerator, generator=torch.Generator().manual_seed(0))):
        with pytest.raises(RuntimeError):
            mix()
    # allowed on CUDA: host scalars, host indices into device tensors, explicit copies, .item() / .tolist()
    assert (ids * torch.tensor(2)).tolist() == [0, 2, 4, 6, 8, 10]
    assert ids[torch.tensor([0, 5])].tolist() == [0, 5] and ids[:2][host > 1].tolist() == [1]
    assert torch.isin(ids, host.to(accelerator)).sum().item() == 2 and on(accelerator, ids.cumsum(0))
    assert ids.cpu().device.type == "cpu" and torch.tensor([3], device=accelerator).device.type == accelerator.type
    g = torch.Generator(device=accelerator).manual_seed(0)
    assert on(accelerator, torch.rand(2, device=accelerator, generator=g))


def test_the_simulation_runs_real_numbers(accelerator):
    if accelerator.type == "cuda":
        pytest.skip("checks the simulation")
    x = torch.tensor([[1.0, 2.0], [3.0, 4.0]], device=accelerator, requires_grad=True)
    (x.softmax(-1)[:, 0].sum() * 2).backward()
    assert isinstance(x.grad, DeviceTensor)
    torch.testing.assert_close(x.grad.cpu(), torch.func.grad(lambda t: t.softmax(-1)[:, 0].sum() * 2)(x.detach().cpu()))
    with pytest.raises(DeviceMismatch, match="numpy"):
        x.detach().numpy()
    tied = torch.nn.Linear(3, 5, bias=False)
    model = torch.nn.ModuleDict({"embed": torch.nn.Embedding(5, 3), "head": tied})
    model.embed.weight = tied.weight
    model.to(accelerator)
    assert model.embed.weight is model.head.weight and isinstance(model.head.weight, DeviceTensor)


# ----------------------------------------------------------------------------------------------------------------
# The package on the accelerator


PROMPTS = ["What is 2 + 3?", "Name a colour.", "Count to three."]


@pytest.fixture()
def device_policy(tiny_model_dir, accelerator):
    model, tokenizer = load_policy(str(tiny_model_dir))
    return model.to(accelerator), tokenizer


def test_rollouts_live_on_the_models_device(device_policy, accelerator):
    model, tok = device_policy
    g = torch.Generator(device=accelerator).manual_seed(0)
    r = generate_rollouts(model, tok, PROMPTS, group_size=3, max_new_tokens=5, generator=g)
    for name in ("prompt_ids", "completion_ids", "completion_mask", "old_logprobs", "entropies", "truncated",
                 "lengths", "group_ids"):
        assert on(accelerator, getattr(r, name)), name
    assert r.group_ids.tolist() == [0, 0, 0, 1, 1, 1, 2, 2, 2] and len(r.completion_texts) == 9
    greedy = generate_rollouts(model, tok, PROMPTS, group_size=2, max_new_tokens=5, do_sample=False)
    assert on(accelerator, greedy.completion_ids)


def test_update_pass_logprobs_on_the_device_match_the_behaviour_logprobs(device_policy, accelerator):
    model, tok = device_policy
    r = generate_rollouts(model, tok, PROMPTS, group_size=2, max_new_tokens=5,
                          generator=torch.Generator(device=accelerator).manual_seed(1))
    rows = torch.tensor([0, 1, 4])  # host rows are accepted and moved
    logp = completion_logprobs(model, r, rows)
    assert on(accelerator, logp)
    torch.testing.assert_close((logp * r.completion_mask[rows.to(accelerator)]).detach().cpu(), r.old_logprobs[rows.to(accelerator)].cpu(),
                               atol=1e-4, rtol=1e-4)


def test_a_host_generator_for_a_device_model_is_a_clear_error(device_policy):
    model, tok = device_policy
    with pytest.raises(ValueError, match="generator is on cpu.*torch.Generator\\(device=model.device\\)"):
        generate_rollouts(model, tok, PROMPTS, group_size=2, max_new_tokens=3, generator=torch.Generator())


def test_dapo_math_on_the_device(accelerator):
    rewards = torch.tensor([1.0, 0.0, 1.0, 1.0, 1.0, 1.0], device=accelerator)
    groups = torch.tensor([0, 0, 0, 1, 1, 1], device=accelerator)
    adv = dapo.group_advantages(rewards, groups)
    assert on(accelerator, adv) and adv[3:].abs().max().item() == 0
    assert dapo.groups_with_signal(rewards, groups).tolist() == [True] * 3 + [False] * 3
    assert on(accelerator, dapo.batch_baseline_advantages(rewards))
    logits = torch.randn(2, 3, 11, device=accelerator, requires_grad=True)
    targets = torch.randint(0, 11, (2, 3), device=accelerator)
    logp = dapo.token_logprobs(logits, targets)
    mask = torch.ones(2, 3, device=accelerator)
    loss, stats = dapo.dapo_loss(logp, logp.detach(), torch.tensor([1.0, -1.0], device=accelerator), mask,
                                 ref_logprobs=logp.detach(), beta=0.1)
    loss.backward()
    assert on(accelerator, logits.grad) and stats["kl"] == 0.0
    assert on(accelerator, dapo.overlong_filter_mask(mask, torch.tensor([True, False], device=accelerator)))


def device_cfg(tmp_path, train_file, *extra):
    return load_config(overrides=[
        f"data.train_path={train_file}", "sampling.max_new_tokens=5", "ppo.batch_size=2", "ppo.mini_batch_size=1",
        "dapo.group_size=3", "ppo.learning_rate=1e-3", "train.total_steps=2", "train.save_every=0",
        f"train.output_dir={tmp_path / 'run'}", f"train.checkpoint_dir={tmp_path / 'ckpt'}", "train.run_name=dev",
        "reward.objectives=[detail]", "reward.weights={detail: 1.0}", "dapo.filter_metric=detail", *extra])


@pytest.mark.parametrize("mode", [
    [],                                                              # group advantages, dynamic sampling
    ["dapo.gen_batch_size=3", "dapo.filter_metric=score"],           # over-sampling, filter on the scalar
    ["sampling.do_sample=false", "reward.objectives=[answer_size]", "reward.weights={answer_size: 1.0}",
     "dapo.filter_metric=answer_size"],                              # greedy: batch baseline
    ["dapo.beta=0.05", "dapo.std_scale=batch", "ppo.micro_batch_size=2"],  # KL to a frozen copy
    ["model.lora.r=4", "dapo.beta=0.05"],                             # LoRA, the base as KL reference
], ids=["dynamic-sampling", "over-sampling", "greedy", "kl-reference", "lora"])
def test_training_steps_on_the_device(tmp_path, train_file, device_policy, accelerator, mode, scratch_registry):
    # greedy completions of the random model are all alike; a reward that differs by prompt gives the batch baseline
    # something to learn from
    register_objective(lambda completion, ground_truth, **_: int(ground_truth) / 22, name="answer_size", low=0, high=1)
    model, tok = device_policy
    trainer = Trainer(device_cfg(tmp_path, train_file, *mode), model=model, tokenizer=tok)
    trainable = {n: p.detach().cpu().clone() for n, p in trainer.model.named_parameters() if p.requires_grad}
    for _ in range(2):
        metrics = trainer.train_step()
    assert metrics["optimizer_updates"] > 0 and metrics["skipped_updates"] == 0
    changed = [n for n, p in trainer.model.named_parameters() if p.requires_grad and not torch.equal(p.detach().cpu(), trainable[n])]
    assert changed, metrics
    assert all(on(accelerator, p) for p in trainer.model.parameters())
    logged = [json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    assert [m["step"] for m in logged] == [1, 2]
    rollouts = [json.loads(line) for line in (tmp_path / "run" / "rollouts.jsonl").read_text().splitlines()]
    assert rollouts and all(isinstance(r["advantage"], float) for r in rollouts)


def test_checkpoint_from_the_device_reloads(tmp_path, train_file, device_policy):
    model, tok = device_policy
    trainer = Trainer(device_cfg(tmp_path, train_file, "train.total_steps=1"), model=model, tokenizer=tok)
    trainer.train()
    saved = load_policy(str(tmp_path / "ckpt" / "dev" / "step-1"))[0].state_dict()
    for name, value in trainer.model.state_dict().items():
        torch.testing.assert_close(saved[name], value.detach().cpu())


def test_evaluation_on_the_device(device_policy, train_file):
    model, tok = device_policy
    summary = evaluate(model, tok, load_prompts(train_file)[:4], max_new_tokens=4, num_samples=2, batch_prompts=3)
    assert summary["num_prompts"] == 4 and 0.0 <= summary["pass@1"] <= 1.0 and "avg@2" in summary
