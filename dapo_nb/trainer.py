"""The DAPO loop: rollout -> reward -> dynamic-sampling filter -> clipped token-level update.

    trainer = Trainer(load_config(overrides=["train.total_steps=20"]))
    trainer.train()            # metrics in runs/<run>/metrics.jsonl, checkpoints in checkpoints/<run>/step-N

Each step (DAPO, arXiv 2503.14476, Algorithm 1):
  1. take `dapo.gen_batch_size` prompts, sample G completions each (`generate.py`), score them with
     the multi-objective reward (`rewards/`) under the live weights of this step;
  2. dynamic sampling: keep groups whose `dapo.filter_metric` (default correctness) varies; sample
     more batches until `ppo.batch_size` groups are kept (surplus groups of the last batch are left out) or
     `dapo.max_gen_batches` is reached, when `dapo.on_unfilled` says whether to train on fewer groups, skip
     the update or stop;
  3. advantages (R - group mean) / group std of the scalar reward; `ppo.epochs` passes over
     mini-batches of `ppo.mini_batch_size` groups with the decoupled-clip, token-mean loss
     (`dapo.py`), the generator's log-probs being the old policy; AdamW with warm-up and clipping.

Departures: greedy decoding (the seed's mode) gives identical completions in a group, so there the
advantage uses a batch-level baseline and dynamic sampling is off (said once). A step whose loss or
gradient norm is not finite is skipped with parameters untouched (`skipped_updates`). Optional KL
(k3) to a frozen reference when `dapo.beta > 0` (DAPO itself has none).

Data parallel (`accelerate launch --num_processes N -m dapo_nb.cli train ...` or `torchrun --nproc_per_node N ...`:
RANK / WORLD_SIZE in the environment; `init_data_parallel` forms one gloo (CPU) or nccl (GPU) group): N replicas
of this loop that make the update one process makes over the same groups.
  * every rank draws the same global generation batch (the seeded permutation, one data cursor) and samples its
    contiguous share, rank r the r-th of N equal shares, with its own generator (seed derived from seed and rank;
    rank 0's is the one-process seed);
  * dynamic sampling counts groups with signal over all ranks after each generation batch (one all-reduce): the
    first groups in global order (rank 0's, then rank 1's, ...) fill the batch, as one process taking the whole
    generation batch would, so every rank samples the same number of batches and `dapo.on_unfilled` decides alike;
  * a kept group stays on the rank that sampled it; its global id is its place in that global order, advantages are
    computed over all ranks' scores in that order, and mini-batches are the one-process mini-batches of global ids,
    each rank running forward/backward on its own groups of each one (possibly none);
  * the token-mean (and seq-mean) loss of a mini-batch is divided by the GLOBAL token (sequence) count of the
    mini-batch, so summing the ranks' gradients (an all-reduce after each mini-batch's backward, `_reduce_gradients`)
    gives exactly the one-process gradient; clipping, the finite-check and AdamW then run identically everywhere.
    No DDP wrapper: DDP needs every rank in lockstep on the same number of backward passes, while here a rank may
    have no rows in a mini-batch, and the update pass calls the decoder directly (`completion_logprobs`);
  * rank 0 owns the live weights (sliders, `train.weights_file`) and broadcasts them before every step; it alone
    writes metrics, rollouts, checkpoints (with every rank's RNG states, so resume restores each rank), trackers,
    held-out evaluation (the others wait for its numbers) and `replicas.json` (each rank's parameter digest);
    stop requests and `train.max_minutes` are agreed, so all ranks stop after the same step.
"""

from __future__ import annotations

import contextlib
import copy
import datetime
import json
import math
import os
import threading
import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from types import SimpleNamespace

import torch
import yaml
from tqdm.auto import tqdm

from . import dapo
from .checkpoint import (BEST_DIR, DiskFullError, checkpoint_path, latest_checkpoint, load_trainer_state, prune_checkpoints,
                         read_best, remove_temp_dirs, require_optimizer_state, save_best, save_checkpoint)
from .config import Config, ConfigError, to_dict
from .cpu_threads import AdaptiveThreads
from .data import evenly_spread, load_prompts_from_config, question_text, render_prompts
from .evaluate import evaluate
from .generate import Rollout, completion_logprobs, generate_rollouts, is_greedy
from .models import apply_lora, policy_from_config, uses_bf16_autocast
from .rewards import MultiObjectiveReward, RewardBatch, WeightsError, reward_from_config
from .runs import (RolloutRecord, UnfilledBatchError, append_rollouts, archive_checkpoints, archive_run_logs, checkpoint_root, install_stop_handlers,
                   append_metrics, refuse_if_training, sync_run_logs, training_lock, truncate_run_logs)
from .scored import ScoredRollout, score_rollout
from .trackers import Trackers


def held_out_examples(cfg: Config) -> list | None:
    """The held-out prompts `train.eval_every` evaluates, for both backends: `train.eval_prompts` (0 =
    `eval.max_prompts`, 0 there = all) spread evenly over data.test_path; None when train.eval_every=0. Called at
    start, so a wrong data.test_path fails before training, not at step N."""
    every, cap = cfg.train.eval_every, cfg.train.eval_prompts or cfg.eval.max_prompts
    if every < 0 or cfg.train.eval_prompts < 0:
        raise ConfigError(f"train.eval_every={every} and train.eval_prompts={cfg.train.eval_prompts} must be >= 0")
    if not every:
        return None
    return evenly_spread(load_prompts_from_config(cfg.data, "test"), cap)


def held_out_metrics(model, tokenizer, examples, reward: MultiObjectiveReward, cfg: Config, *, step: int) -> dict:
    """Greedy pass@1 / format@1 of `model` on the held-out prompts, as the `eval/*` metrics both backends log, plus
    `time/eval`.

    evaluate() runs under no_grad and generation restores the model's train/eval mode; it draws from its own
    generator (seeded by train.seed), never the rollout generator or torch's global one, and scores with
    split="test", which only reads the live weights."""
    t0 = time.perf_counter()
    summary = evaluate(model, tokenizer, examples, reward, system_prompt=cfg.data.system_prompt,
                       max_new_tokens=cfg.sampling.max_new_tokens, context_max_len=cfg.sampling.context_max_len,
                       num_samples=0, seed=cfg.train.seed, stats=True, step=step)
    out = {"eval/pass@1": summary["pass@1"], "eval/format@1": summary["format@1"], "eval/num_prompts": summary["num_prompts"]}
    # every objective of the reward on the held-out prompts, named as in training: eval/rewards/<name>/mean
    out.update({f"eval/{key}": value for key, value in summary.items() if key == "reward" or key.startswith("rewards/")})
    interval = summary.get("pass@1_ci95")  # [lo, hi] when evaluate's summary has intervals
    if isinstance(interval, (list, tuple)) and len(interval) == 2:
        out["eval/pass@1_ci95_low"], out["eval/pass@1_ci95_high"] = float(interval[0]), float(interval[1])
    out["time/eval"] = time.perf_counter() - t0
    return out


def improves_best(key: str, metrics: dict, best: dict | None) -> bool:
    """train.keep_best, for both backends: whether this metrics line holds a held-out evaluation of a trained step
    (step >= 1: the base model of eval_at_start's step 0 is no checkpoint of the run) whose `key` beats `best`
    (`checkpoint.read_best`'s record; None = no best yet). Higher is better, ties keep the earlier step. ConfigError
    when the line has held-out metrics but not `key`."""
    held_out = sorted(k for k in metrics if k.startswith("eval/"))
    if not key or not held_out:
        return False
    if key not in metrics:
        raise ConfigError(f"train.keep_best={key} is not a held-out metric of this run; choose one of "
                          f"{', '.join(held_out)}, or train.keep_best='' for none")
    value = metrics[key]
    if metrics.get("step", 0) < 1 or not isinstance(value, (int, float)) or not math.isfinite(value):
        return False
    return best is None or value > best["value"]


def best_record(cfg: Config, metrics: dict) -> dict:
    """The best.json of a best checkpoint: which metric, its value, the step, and the run's config."""
    key = cfg.train.keep_best
    return {"metric": key, "value": metrics[key], "step": metrics["step"], "run_name": cfg.train.run_name,
            "backend": cfg.backend, "config": to_dict(cfg)}


# ----------------------------------------------------------------------------
# Data parallel: N processes, one torch.distributed group (module docstring)

GRADIENT_BUCKET = 1 << 25  # elements per gradient all-reduce (128 MiB of float32)


@dataclass
class DataParallel:
    """This process's place among the replicas of a run; world=1 is one process and every method a no-op.

    The collectives the trainer uses, on `device` (the GPU for nccl, the host for gloo)."""

    rank: int = 0
    world: int = 1
    device: torch.device = field(default_factory=lambda: torch.device("cpu"))
    owns_group: bool = False  # init_data_parallel created the process group (the CLI destroys it at the end)

    @property
    def main(self) -> bool:
        return self.rank == 0

    def sum(self, values: list[float]) -> list[float]:
        """Element-wise sums over ranks (float64)."""
        if self.world == 1:
            return [float(v) for v in values]
        tensor = torch.tensor([float(v) for v in values], dtype=torch.float64, device=self.device)
        torch.distributed.all_reduce(tensor)
        return tensor.tolist()

    def any(self, flags: list[bool]) -> list[bool]:
        """Element-wise: is the flag set on any rank?"""
        return [total > 0 for total in self.sum([float(bool(f)) for f in flags])]

    def rows(self, values: list[float]) -> list[list[float]]:
        """Every rank's `values`, in rank order (one all-reduce of a world x len table)."""
        if self.world == 1:
            return [[float(v) for v in values]]
        table = torch.zeros(self.world, len(values), dtype=torch.float64, device=self.device)
        table[self.rank] = torch.tensor([float(v) for v in values], dtype=torch.float64, device=self.device)
        torch.distributed.all_reduce(table)
        return table.tolist()

    def gather(self, obj) -> list:
        """Every rank's picklable `obj`, in rank order."""
        if self.world == 1:
            return [obj]
        out = [None] * self.world
        torch.distributed.all_gather_object(out, obj)
        return out

    def broadcast(self, obj):
        """Rank 0's picklable `obj` on every rank."""
        if self.world == 1:
            return obj
        box = [obj]
        torch.distributed.broadcast_object_list(box, src=0)
        return box[0]

    def barrier(self) -> None:
        if self.world > 1:
            torch.distributed.barrier()


def rank_seed(seed: int, rank: int) -> int:
    """The sampling generator's seed of `rank`: train.seed itself on rank 0 (a one-process run's stream), another
    fixed function of (seed, rank) elsewhere."""
    return seed if rank == 0 else (seed * 1_000_003 + rank * 0x9E3779B9) % (2**63 - 1)


def check_data_parallel(cfg: Config, world: int) -> None:
    """ConfigError for a launch of `world` > 1 processes that cannot work, naming the key to change."""
    if cfg.model.device_map:
        raise ConfigError(f"model.device_map={cfg.model.device_map!r} shards one model over the GPUs of one process "
                          f"(model parallel), but {world} processes were launched (data parallel, one whole replica "
                          "each); launch one process for device_map, or drop model.device_map to train N replicas "
                          "(README, 'Scaling out')")
    per_batch = cfg.dapo.gen_batch_size or cfg.ppo.batch_size
    if per_batch % world:
        key = "dapo.gen_batch_size" if cfg.dapo.gen_batch_size else "ppo.batch_size (dapo.gen_batch_size=0)"
        raise ConfigError(f"{key}: {per_batch} prompts per generation batch do not split evenly over {world} "
                          f"processes; set dapo.gen_batch_size to a multiple of {world} (each rank samples an equal "
                          "share of every generation batch)")


def init_data_parallel(cfg: Config) -> DataParallel:
    """This process's DataParallel: world 1 unless launched by torchrun / `accelerate launch` (WORLD_SIZE > 1) or a
    process group already exists. Refuses launches that cannot work (`check_data_parallel`), puts this process on
    GPU LOCAL_RANK when there are GPUs, and forms the group (nccl on GPUs, gloo on CPUs) unless one exists."""
    dist = torch.distributed
    if dist.is_available() and dist.is_initialized():
        world, rank = dist.get_world_size(), dist.get_rank()
    else:
        world, rank = int(os.environ.get("WORLD_SIZE") or 1), int(os.environ.get("RANK") or 0)
    if world <= 1:
        return DataParallel()
    check_data_parallel(cfg, world)
    if not dist.is_available():
        raise ConfigError(f"WORLD_SIZE={world}: this torch build has no torch.distributed; launch one process")
    cuda = torch.cuda.is_available()
    if cuda:
        local = int(os.environ.get("LOCAL_RANK") or rank % torch.cuda.device_count())
        if local >= torch.cuda.device_count():
            raise ConfigError(f"LOCAL_RANK={local}, but this machine has {torch.cuda.device_count()} GPU(s): launch at "
                              "most one process per GPU (--num_processes / --nproc_per_node)")
        torch.cuda.set_device(local)
    owns = False
    if not dist.is_initialized():
        # an hour: rank 0 saves checkpoints and evaluates while the others wait in the next collective
        dist.init_process_group("nccl" if cuda else "gloo", timeout=datetime.timedelta(minutes=60))
        owns = True
    device = torch.device("cuda", torch.cuda.current_device()) if dist.get_backend() == "nccl" else torch.device("cpu")
    return DataParallel(rank=dist.get_rank(), world=dist.get_world_size(), device=device, owns_group=owns)


def _without_trackers(cfg: Config) -> Config:
    """`cfg` with train.report_to=none: the trackers of ranks other than 0."""
    quiet = copy.deepcopy(cfg)
    quiet.train.report_to = ["none"]
    return quiet


def _light(scored: ScoredRollout) -> SimpleNamespace:
    """What `Trainer._generation_stats` reads of a ScoredRollout, on the host: sent to the other ranks."""
    rollout = scored.rollout
    return SimpleNamespace(group_ids=scored.group_ids, valid=scored.valid, scores=scored.scores, rollout=SimpleNamespace(
        lengths=rollout.lengths.cpu(), truncated=rollout.truncated.cpu(), num_prompts_truncated=rollout.num_prompts_truncated))


class Trainer:
    """Owns the policy, optimizer, reward and data cursor of one run; `train()` runs it, `stop()` ends it cleanly."""

    def __init__(self, cfg: Config, *, model=None, tokenizer=None, reward: MultiObjectiveReward | None = None):
        self.cfg = cfg.validate()
        self.dp = init_data_parallel(self.cfg)  # one process, or this rank of N (a launch that cannot work fails here)
        # train.report_to; a missing tracker package fails here, before the model loads. Rank 0 alone logs to them
        self.trackers = Trackers(cfg if self.dp.main else _without_trackers(cfg))
        if cfg.train.threads:
            torch.set_num_threads(cfg.train.threads)
        self.cpu_threads = None if cfg.train.threads else AdaptiveThreads()  # fewer threads beside a busy neighbour
        torch.manual_seed(cfg.train.seed)
        # data and reward before the model: a wrong file, plugin or missing column fails in seconds, not after the load
        self.examples = load_prompts_from_config(cfg.data, "train")
        self.reward = reward or reward_from_config(cfg)
        self.reward.check_columns(self.examples)
        self.eval_examples = held_out_examples(cfg)  # train.eval_every: held-out prompts (None = no eval during training)
        if self.eval_examples is not None:
            self.reward.check_columns(self.eval_examples)
        if model is None:
            model, tokenizer = policy_from_config(cfg.model)
        wrap = cfg.model.lora.r > 0 and not hasattr(model, "disable_adapter")  # a LoRA checkpoint comes wrapped
        self.model = apply_lora(model, cfg.model.lora) if wrap else model
        self.lora = hasattr(self.model, "disable_adapter")
        weight = next(self.model.parameters())
        self.bf16_autocast = uses_bf16_autocast(cfg.model.autocast, weight.device.type, weight.dtype)  # `auto` resolved
        self.tokenizer = tokenizer
        # the KL reference: the base model with adapters off under LoRA, else a frozen copy (only when beta > 0)
        self.ref_model = None
        if cfg.dapo.beta > 0 and not hasattr(self.model, "disable_adapter"):
            self.ref_model = copy.deepcopy(self.model).eval().requires_grad_(False)

        self.prompts = render_prompts(tokenizer, self.examples, cfg.data.system_prompt)
        self.greedy = is_greedy(cfg.sampling.do_sample, cfg.sampling.temperature)
        if self.greedy:
            warnings.warn("greedy decoding: all G completions of a prompt are identical, so advantages use a batch-level "
                          "baseline and dynamic sampling is off (set sampling.do_sample=true for group signal)", stacklevel=2)

        params = [p for p in self.model.parameters() if p.requires_grad]
        # fused: one kernel for all parameters (CPU and CUDA); the per-tensor loop took ~15% of an update on CPU
        fused = all(p.dtype.is_floating_point and p.device.type in ("cpu", "cuda") for p in params)
        self.optimizer = torch.optim.AdamW(params, lr=cfg.ppo.learning_rate, weight_decay=cfg.ppo.weight_decay,
                                           fused=fused or None)
        warmup = cfg.ppo.warmup_steps
        self.scheduler = torch.optim.lr_scheduler.LambdaLR(
            self.optimizer, lambda update: min(1.0, (update + 1) / warmup) if warmup else 1.0)
        if self.dp.world > 1 and self.dp.device.type == "cuda" and self.model.device != self.dp.device:
            raise ConfigError(f"rank {self.dp.rank} of {self.dp.world}: the model is on {self.model.device}, its GPU is "
                              f"{self.dp.device}; load it after init_data_parallel(cfg) (dapo-nb train does)")
        self.generator = torch.Generator(device=self.model.device).manual_seed(rank_seed(cfg.train.seed, self.dp.rank))

        self.step, self.epoch, self.cursor = 0, 0, 0
        self.history: list[dict] = []  # metrics of every step of this run
        self.callbacks: list = []  # called with each step's metrics dict (live plots, widgets)
        self.stop_event = threading.Event()
        self.run_event = threading.Event()  # cleared = paused between steps
        self.run_event.set()
        self.output_dir = cfg.output_dir
        self.checkpoint_root = checkpoint_root(cfg)
        self.last_saved_step = -1
        self.best: dict | None = None  # best.json of checkpoints/<run>/best (train.keep_best), restored on resume
        self._params_dirty = False  # True once an optimizer step of the running step has changed parameters
        self._last_step, self._deadline = cfg.train.total_steps, math.inf  # where train() will stop (its own call's)
        self._weights_file_seen = None  # train.weights_file: the (mtime, size) last read, "missing" when absent
        self.weight_changes: list[dict] = []  # each change train.weights_file made: after_step, what, value
        self._dp_gid = torch.zeros(0, dtype=torch.long)  # data parallel, host: global id of each local group
        self._dp_groups = 0  # data parallel: groups kept over all ranks this step
        if self.dp.main:  # another process training into the same folder (a launcher we do not know) is refused
            refuse_if_training(self.output_dir)
        if cfg.train.resume:
            self.resume()
        elif self.dp.main:  # a fresh run: an earlier run of the same name keeps its logs and checkpoints, renamed
            archive_run_logs(self.output_dir)
            archive_checkpoints(self.checkpoint_root, cfg.train.keep_previous_runs)
        if self.dp.world > 1:
            self._broadcast_parameters()  # replicas start identical, whatever each process loaded or initialised
            self.dp.barrier()
            if self.dp.main:
                print(f"dapo_nb: {self.dp.world} data-parallel processes ({torch.distributed.get_backend()}); each "
                      f"samples {(cfg.dapo.gen_batch_size or cfg.ppo.batch_size) // self.dp.world} prompt(s) of every "
                      "generation batch; rank 0 writes the run's files", flush=True)
        if self.dp.main and self.bf16_autocast and cfg.model.autocast == "auto":
            print("dapo_nb: model.autocast=auto: rollouts and update forward passes in bf16 autocast on this CPU "
                  "(model.autocast=none: float32 throughout)", flush=True)
        self.trackers.open(start_step=self.step)  # fresh at 0, else continuing the resumed run's tracker runs

    # ------------------------------------------------------------------------
    # Data order: a seeded permutation per epoch; (epoch, cursor) is saved with checkpoints

    def _next_indices(self, count: int) -> list[int]:
        picked = []
        while len(picked) < count:
            n = len(self.examples)
            order = (torch.randperm(n, generator=torch.Generator().manual_seed(self.cfg.train.seed * 100_003 + self.epoch))
                     if self.cfg.data.shuffle else torch.arange(n))
            take = min(count - len(picked), n - self.cursor)
            picked += order[self.cursor : self.cursor + take].tolist()
            self.cursor += take
            if self.cursor == n:
                self.epoch, self.cursor = self.epoch + 1, 0
        return picked

    # ------------------------------------------------------------------------
    # 1-2. Rollouts, rewards, dynamic sampling

    def autocast(self):
        """bf16 autocast around rollouts and update forward passes when `model.autocast` resolves to it, else nothing."""
        if not self.bf16_autocast:
            return contextlib.nullcontext()
        device = self.model.device.type
        if not torch.amp.is_autocast_available(device):
            raise ConfigError(f"model.autocast={self.cfg.model.autocast}: torch has no autocast on {device}; set model.autocast=none")
        return torch.autocast(device, dtype=torch.bfloat16)

    def sample(self, indices: list[int]) -> tuple[ScoredRollout, RewardBatch]:
        """Generate and score G completions for the given prompts: the rollout on the device, rewards on the host."""
        cfg = self.cfg
        with self.autocast():
            rollout = generate_rollouts(
                self.model, self.tokenizer, [self.prompts[i] for i in indices], group_size=cfg.dapo.group_size,
                max_new_tokens=cfg.sampling.max_new_tokens, context_max_len=cfg.sampling.context_max_len,
                do_sample=cfg.sampling.do_sample, temperature=cfg.sampling.temperature, top_p=cfg.sampling.top_p,
                top_k=cfg.sampling.top_k, generator=self.generator,
            )
        prompt_examples = [self.examples[i] for i in indices]
        reward = score_rollout(self.reward, rollout, prompt_examples, step=self.step + 1)
        rows = [prompt_examples[g] for g in rollout.group_ids.tolist()]
        return ScoredRollout.of(rollout, reward, rows), reward

    def collect(self) -> tuple[ScoredRollout | None, dict]:
        """Sample until ppo.batch_size groups with signal are kept (DAPO dynamic sampling); returns batch and stats.

        All selection happens on the host (ScoredRollout's group ids, scores, objectives). Under data parallel the
        batch is this rank's kept groups (None when it kept none), the stats are over all ranks, and `_dp_groups` /
        `_dp_gid` say how many groups all ranks kept and the global id of each of this rank's."""
        cfg = self.cfg
        want = cfg.ppo.batch_size
        per_batch = cfg.dapo.gen_batch_size or want
        filtering = cfg.dapo.dynamic_sampling and not self.greedy
        sharded = self.dp.world > 1
        share = per_batch // self.dp.world  # prompts of each generation batch this rank samples
        kept: list[ScoredRollout] = []
        seen: list[ScoredRollout] = []
        rewards: list[RewardBatch] = []
        parts: list[list[int]] = []  # data parallel: groups each rank kept of each generation batch that kept any
        stop_seen = False  # data parallel: a stop requested on any rank, as of the last generation batch
        have = 0
        stats = {"dynamic/groups_kept": 0, "dynamic/groups_dropped": 0, "dynamic/groups_surplus": 0,
                 "dynamic/num_gen_batches": 0}
        for _ in range(cfg.dapo.max_gen_batches if filtering else 1):
            if (stop_seen if sharded else self.stop_event.is_set()) and have:
                break
            indices = self._next_indices(per_batch)  # the global generation batch, the same on every rank
            if sharded:
                indices = indices[self.dp.rank * share:(self.dp.rank + 1) * share]
            scored, reward = self.sample(indices)
            stats["dynamic/num_gen_batches"] += 1
            seen.append(scored)
            rewards.append(reward)
            scored = scored.select(torch.nonzero(scored.valid).flatten())  # on_error="drop" rows never train
            if filtering:
                signal = dapo.groups_with_signal(scored.metric(cfg.dapo.filter_metric), scored.group_ids,
                                                 cfg.dapo.filter_threshold)  # (n,) host
            else:
                signal = torch.ones(len(scored), dtype=torch.bool)
            with_signal = scored.group_ids[signal].unique()  # (k,) host
            if sharded:  # count over all ranks; the first in global order (rank 0's, then rank 1's, ...) fill the batch
                table = self.dp.rows([len(with_signal), scored.group_ids.unique().numel(), self.stop_event.is_set()])
                counts, left, taken = [int(row[0]) for row in table], want - have, []
                for count in counts:
                    taken.append(min(count, max(left, 0)))
                    left -= taken[-1]
                groups = with_signal[: taken[self.dp.rank]]
                stats["dynamic/groups_kept"] += sum(taken)
                stats["dynamic/groups_dropped"] += int(sum(row[1] for row in table)) - sum(counts)
                stats["dynamic/groups_surplus"] += sum(counts) - sum(taken)
                stop_seen = any(row[2] > 0 for row in table)
                if sum(taken):
                    parts.append(taken)
                if len(groups):
                    kept.append(scored.select(scored.rows_of_groups(groups)))
                have += sum(taken)
            else:
                groups = with_signal[: want - have]  # the first ones fill the batch; the rest are surplus
                stats["dynamic/groups_kept"] += len(groups)
                stats["dynamic/groups_dropped"] += scored.group_ids.unique().numel() - len(with_signal)  # no signal
                stats["dynamic/groups_surplus"] += len(with_signal) - len(groups)
                if len(groups):
                    kept.append(scored.select(scored.rows_of_groups(groups)))
                    have += len(groups)
            if have >= want:
                break
        filled = have >= want
        stats["dynamic/batch_filled"] = float(filled)
        stats.update(self._generation_stats(*self._all_generation_batches(seen, rewards)) if sharded
                     else self._generation_stats(seen, rewards))
        if not filled and filtering and not (stop_seen if sharded else self.stop_event.is_set()):
            policy = cfg.dapo.on_unfilled
            if policy == "error":
                raise UnfilledBatchError(
                    f"step {self.step + 1}: only {have} of ppo.batch_size={want} groups had a varying "
                    f"{cfg.dapo.filter_metric} after dapo.max_gen_batches={cfg.dapo.max_gen_batches} generation batches; "
                    "raise dapo.max_gen_batches or dapo.gen_batch_size, filter on another metric, or set "
                    "dapo.on_unfilled=train|skip")
            if policy == "skip":
                kept, parts = [], []
        if sharded:
            self._dp_gid, self._dp_groups = self._global_group_ids(parts)
        batch = ScoredRollout.concat(kept, self.tokenizer.pad_token_id) if kept else None
        return batch, stats

    def _all_generation_batches(self, seen: list[ScoredRollout], rewards: list[RewardBatch]):
        """Data parallel: every rank's generation batches in one-process order (batch by batch, rank by rank), as the
        host values `_generation_stats` reads."""
        everyone = self.dp.gather([(_light(s), r) for s, r in zip(seen, rewards)])
        pairs = [everyone[rank][b] for b in range(len(seen)) for rank in range(self.dp.world)]
        return [s for s, _ in pairs], [r for _, r in pairs]

    def _global_group_ids(self, parts: list[list[int]]) -> tuple[torch.Tensor, int]:
        """Data parallel: (global id of each of this rank's kept groups, in its batch's order; groups kept in all).

        Global order is one process's: generation batch by batch, within one rank 0's kept groups, then rank 1's..."""
        ids, base = [], 0
        for taken in parts:
            start = base + sum(taken[: self.dp.rank])
            ids += range(start, start + taken[self.dp.rank])
            base += sum(taken)
        return torch.tensor(ids, dtype=torch.long), base  # host, like ScoredRollout.group_ids

    def _generation_stats(self, seen: list[ScoredRollout], rewards: list[RewardBatch]) -> dict:
        """Reward and length metrics over every completion sampled this step (TRL's names); host tensors only."""
        out: dict = RewardBatch.concat(rewards).metrics()  # reward, reward_std, rewards/*, weights/*, reward_errors/*
        # the share of groups whose reward has zero std over the rows that train (on_error="drop" rows left out)
        groups = flat = 0
        for s in seen:
            ids = s.group_ids[s.valid]
            groups += ids.unique().numel()
            flat += ids.unique().numel() - ids[dapo.groups_with_signal(s.scores[s.valid], ids)].unique().numel()
        out["frac_reward_zero_std"] = flat / groups if groups else math.nan
        lengths = torch.cat([s.rollout.lengths for s in seen]).float()
        out["completions/mean_length"] = lengths.mean().item()
        out["completions/min_length"] = lengths.min().item()
        out["completions/max_length"] = lengths.max().item()
        out["completions/clipped_ratio"] = torch.cat([s.rollout.truncated for s in seen]).float().mean().item()
        out["num_generated_tokens"] = int(lengths.sum().item())
        out["prompts_truncated"] = sum(s.rollout.num_prompts_truncated for s in seen)
        return out

    # ------------------------------------------------------------------------
    # 3. The update

    def advantages(self, batch: ScoredRollout | None) -> torch.Tensor:
        """(N,) float32 host advantages of the batch's scalar rewards (group-relative; batch baseline when greedy).

        Data parallel: computed over every rank's kept rows in one-process order (so `dapo.std_scale=batch` and
        greedy's batch baseline see the whole batch), and this rank's rows returned; every rank must call it."""
        if self.dp.world > 1:
            return self._global_advantages(batch)
        return self._advantages_of(batch.scores, batch.group_ids)

    def _advantages_of(self, scores: torch.Tensor, group_ids: torch.Tensor) -> torch.Tensor:
        std_scale = self.cfg.dapo.std_scale
        if self.greedy:
            return dapo.batch_baseline_advantages(scores, std_scale if std_scale != "group" else "batch")
        return dapo.group_advantages(scores, group_ids, std_scale)

    def _global_advantages(self, batch: ScoredRollout | None) -> torch.Tensor:
        # host bookkeeping on host tensors (ScoredRollout's group_ids and scores), as the one-process path; update()
        # moves the advantages to the device
        ids = self._dp_gid[batch.group_ids] if batch is not None else torch.zeros(0, dtype=torch.long)  # (n,) global
        scores = batch.scores if batch is not None else torch.zeros(0)
        parts = self.dp.gather((ids.tolist(), scores.tolist()))
        all_ids = torch.tensor([g for p in parts for g in p[0]], dtype=torch.long)
        all_scores = torch.tensor([v for p in parts for v in p[1]], dtype=torch.float32)
        order = torch.argsort(all_ids, stable=True)  # one process's row order: groups adjacent, in global order
        out = torch.empty(len(order), dtype=torch.float32)
        out[order] = self._advantages_of(all_scores[order], all_ids[order]).float()
        start = sum(len(p[0]) for p in parts[: self.dp.rank])
        return out[start : start + len(ids)]

    def update(self, batch: ScoredRollout, advantages: torch.Tensor) -> dict:
        """ppo.epochs passes of mini-batch AdamW updates on one rollout batch; returns loss/clip/grad metrics.

        `advantages` (N,) may be on the host; mini-batches are chosen on the host and their rows copied to the
        device once each.

        Data parallel: every rank calls it (`batch` None where the rank kept no group). The mini-batches are one
        process's, made of global group ids; each rank runs its own groups of each, divides the loss by the
        mini-batch's token (sequence) count over ALL ranks, and the ranks' gradients are summed before clipping and
        the optimizer step, which then are the same on every rank."""
        cfg = self.cfg
        sharded = self.dp.world > 1
        rollout = batch.rollout if batch is not None else None
        device = rollout.device if rollout is not None else self.model.device
        if rollout is not None:
            advantages = advantages.to(device)  # (N,)
            mask = rollout.completion_mask.float()  # (N, C) device
            if cfg.dapo.overlong_filtering:
                mask = dapo.overlong_filter_mask(mask, rollout.truncated)
            tokens_per_row = mask.sum(-1).cpu()  # (N,) host: token counts for the loss denominators
        temperature = 1.0 if self.greedy else cfg.sampling.temperature
        if sharded:  # global ids 0..K-1, their token and sequence counts over all ranks, and which are this rank's
            group_tokens, group_seqs = self._global_token_counts(batch, tokens_per_row if rollout is not None else None)
            groups = torch.arange(self._dp_groups)  # host, as batch.group_ids.unique() below
            local_of = {g: i for i, g in enumerate(self._dp_gid.tolist())}
        else:
            groups = batch.group_ids.unique()  # host
        per_update = cfg.ppo.groups_per_update
        shuffle = torch.Generator().manual_seed(cfg.train.seed * 1_000_003 + self.step)
        sums: dict[str, float] = {}
        totals = {} if sharded else sums  # data parallel: loss and grad_norm are global already, kept apart from sums
        updates = skipped = 0
        gap_sum = gap_tokens = 0.0  # |update log-prob - rollout log-prob| before the first optimizer step
        self.model.train()
        for epoch in range(cfg.ppo.epochs):
            order = groups[torch.randperm(len(groups), generator=shuffle)]
            for start in range(0, len(order), per_update):
                if sharded:
                    chosen = order[start : start + per_update]
                    n_tokens, n_seqs = group_tokens[chosen].sum().item(), group_seqs[chosen].sum().item()
                    mine = [local_of[g] for g in chosen.tolist() if g in local_of]
                    host_rows = (batch.rows_of_groups(torch.tensor(mine, dtype=torch.long)) if mine
                                 else torch.zeros(0, dtype=torch.long))
                else:
                    host_rows = batch.rows_of_groups(order[start : start + per_update])
                    n_tokens = tokens_per_row[host_rows].sum().item()
                    n_seqs = (tokens_per_row[host_rows] > 0).sum().item()
                if n_tokens == 0:
                    continue
                rows = host_rows.to(device)
                self.optimizer.zero_grad(set_to_none=True)
                loss_total, finite = 0.0, True
                micro = cfg.ppo.micro_batch_size or len(rows)
                for chunk in rows.split(micro) if len(rows) else []:
                    with self.autocast():
                        logp = completion_logprobs(self.model, rollout, chunk, temperature)  # (n, C)
                        ref = self._reference_logprobs(rollout, chunk, temperature) if cfg.dapo.beta > 0 else None
                    if updates == skipped == 0:  # the policy still is the rollout's: any gap is numerics
                        gap_sum += ((logp.detach() - rollout.old_logprobs[chunk]).abs() * mask[chunk]).sum().item()
                        gap_tokens += mask[chunk].sum().item()
                    loss, stats = dapo.dapo_loss(
                        logp, rollout.old_logprobs[chunk], advantages[chunk], mask[chunk], eps_low=cfg.dapo.eps_low,
                        eps_high=cfg.dapo.eps_high, loss_agg=cfg.dapo.loss_agg, ref_logprobs=ref, beta=cfg.dapo.beta,
                        num_tokens_in_batch=n_tokens, num_seqs_in_batch=n_seqs)
                    if not torch.isfinite(loss):
                        finite = False
                        break
                    loss.backward()
                    loss_total += loss.item()
                    share = stats["num_tokens"] / n_tokens
                    for k, v in stats.items():
                        if k != "num_tokens":
                            sums[k] = sums.get(k, 0.0) + v * share
                params = [p for p in self.model.parameters() if p.requires_grad]
                if sharded:
                    finite, loss_total = self._reduce_gradients(params, finite, loss_total)
                grad_norm = torch.nn.utils.clip_grad_norm_(params, cfg.ppo.max_grad_norm or float("inf")).item()
                if not finite or not math.isfinite(grad_norm):
                    self.optimizer.zero_grad(set_to_none=True)  # parameters stay untouched
                    skipped += 1
                    continue
                self._params_dirty = True
                self.optimizer.step()
                self.scheduler.step()
                updates += 1
                totals["loss"] = totals.get("loss", 0.0) + loss_total
                totals["grad_norm"] = totals.get("grad_norm", 0.0) + grad_norm
        if sharded:  # each rank's share of the token-weighted stats, summed; then the global loss and grad norm
            merged: dict[str, float] = {}
            gaps = [0.0, 0.0]
            for part_sums, part_gap in self.dp.gather((sums, (gap_sum, gap_tokens))):
                for k, v in part_sums.items():
                    merged[k] = merged.get(k, 0.0) + v
                gaps = [gaps[0] + part_gap[0], gaps[1] + part_gap[1]]
            gap_sum, gap_tokens = gaps
            sums = {**merged, **totals}
        attempts = max(updates + skipped, 1)
        out = {k: v / attempts if k not in ("loss", "grad_norm") else v / max(updates, 1) for k, v in sums.items()}
        out.pop("policy_loss", None)
        if gap_tokens:
            out["logprobs/update_vs_rollout_abs_diff"] = gap_sum / gap_tokens
        out.update({"optimizer_updates": updates, "skipped_updates": skipped,
                    "learning_rate": self.scheduler.get_last_lr()[0]})
        return out

    @torch.no_grad()
    def _reference_logprobs(self, batch: Rollout, rows: torch.Tensor, temperature: float) -> torch.Tensor:
        if self.ref_model is not None:
            return completion_logprobs(self.ref_model, batch, rows, temperature)
        with self.model.disable_adapter():  # LoRA: the base model is the reference, no second copy
            return completion_logprobs(self.model, batch, rows, temperature)

    def _global_token_counts(self, batch: ScoredRollout | None, tokens_per_row: torch.Tensor | None):
        """Data parallel: (completion tokens, non-empty completions) of each global group, over all ranks; host."""
        table = torch.zeros(self._dp_groups, 2, dtype=torch.float64, device=self.dp.device)
        if batch is not None:
            local = torch.zeros(len(self._dp_gid), 2, dtype=torch.float64)
            local[:, 0].index_add_(0, batch.group_ids, tokens_per_row.double())
            local[:, 1].index_add_(0, batch.group_ids, (tokens_per_row > 0).double())
            table[self._dp_gid.to(self.dp.device)] = local.to(self.dp.device)
        torch.distributed.all_reduce(table)
        table = table.cpu()
        return table[:, 0], table[:, 1]

    def _reduce_gradients(self, params: list[torch.Tensor], finite: bool, loss: float) -> tuple[bool, float]:
        """Data parallel: sum every rank's gradients of this mini-batch (each rank's loss is already divided by the
        global token count, so the sum is one process's gradient); returns (finite on every rank, the summed loss).

        A parameter no rank produced a gradient for keeps None (AdamW then skips it, as in one process)."""
        flags = torch.tensor([float(not finite), loss if finite else 0.0, *(float(p.grad is not None) for p in params)],
                             dtype=torch.float64, device=self.dp.device)
        torch.distributed.all_reduce(flags)
        for p in params:
            if p.grad is None:
                p.grad = torch.zeros_like(p)
        bucket: list[torch.Tensor] = []

        def flush():
            flat = torch.cat([p.grad.reshape(-1) for p in bucket])
            torch.distributed.all_reduce(flat)
            offset = 0
            for p in bucket:
                p.grad.copy_(flat[offset : offset + p.numel()].view_as(p.grad))
                offset += p.numel()
            bucket.clear()

        for p in sorted(params, key=lambda p: (str(p.grad.dtype), str(p.grad.device))):
            if bucket and (p.grad.dtype != bucket[0].grad.dtype or p.grad.device != bucket[0].grad.device
                           or sum(q.numel() for q in bucket) + p.numel() > GRADIENT_BUCKET):
                flush()
            bucket.append(p)
        if bucket:
            flush()
        for p, count in zip(params, flags[2:].tolist()):
            if count == 0:
                p.grad = None
        return flags[0].item() == 0, flags[1].item()

    def _broadcast_parameters(self) -> None:
        """Data parallel: rank 0's trainable parameters on every rank (as DDP does when it wraps a model)."""
        with torch.no_grad():
            for p in self.model.parameters():
                if p.requires_grad:
                    torch.distributed.broadcast(p.data, src=0)

    # ------------------------------------------------------------------------
    # One step, the loop, logging

    def train_step(self) -> dict:
        """Collect a batch, update, log; returns this step's metrics."""
        self.output_dir.mkdir(parents=True, exist_ok=True)
        self._sync_live_weights()  # train.weights_file; data parallel: rank 0's weights reach every rank
        if (self.step == 0 and self.eval_examples is not None and self.cfg.train.eval_at_start
                and not any(m.get("step") == 0 for m in self.history)):  # the before point of the held-out curve
            self._record({"step": 0, **self.evaluate_held_out()})
            self._keep_best(self.history[-1])  # checks that train.keep_best names one of its metrics
        t0 = time.perf_counter()
        threads = self.cpu_threads.update() if self.cpu_threads else torch.get_num_threads()
        batch, metrics = self.collect()
        t1 = time.perf_counter()
        if self.dp.world > 1 and self._dp_groups:  # every rank takes part, also one that kept no group itself
            advantages = self.advantages(batch)  # (n,) host, this rank's rows
            metrics.update(self.update(batch, advantages))
            entropy_sum, count = 0.0, 0.0
            if batch is not None:
                mask = batch.rollout.completion_mask.bool()
                entropy_sum, count = batch.rollout.entropies[mask].sum().item(), mask.sum().item()
            entropy_sum, count = self.dp.sum([entropy_sum, count])
            metrics["entropy"] = entropy_sum / count if count else math.nan
            self._log_rollouts(batch, advantages)
        elif self.dp.world == 1 and batch is not None:
            advantages = self.advantages(batch)  # (N,) host
            metrics.update(self.update(batch, advantages))
            mask = batch.rollout.completion_mask.bool()
            metrics["entropy"] = batch.rollout.entropies[mask].mean().item() if mask.any().item() else math.nan
            self._log_rollouts(batch, advantages)
        else:
            metrics.update({"optimizer_updates": 0, "skipped_updates": 0})
        self.step += 1
        seconds = time.perf_counter() - t0
        metrics.update({"step": self.step, "scalarizer": self.reward.scalarizer, "cpu_threads": threads, "step_time": seconds, "time/generate_and_score": t1 - t0,
                        "time/update": seconds - (t1 - t0), "tokens_per_second": metrics["num_generated_tokens"] / seconds})
        if self.eval_examples is not None and (self.step % self.cfg.train.eval_every == 0 or self._is_last_step()):
            metrics.update(self.evaluate_held_out())  # after the timings: not in step_time or tokens_per_second
        self._record(metrics)
        self._keep_best(metrics)
        return metrics

    def _is_last_step(self) -> bool:
        """Whether train() stops after the step just done (train.total_steps or train.max_minutes; agreed by all ranks)."""
        if self.step == self._last_step:
            return True
        return self.dp.any([time.monotonic() >= self._deadline])[0]

    def _record(self, metrics: dict) -> None:
        """One metrics.jsonl line: history, file (rank 0), trackers (rank 0), callbacks."""
        self.history.append(metrics)
        if self.dp.main:
            append_metrics(self.output_dir, metrics)
        self._params_dirty = False
        self.trackers.log(metrics)  # train.report_to: TensorBoard / W&B / Trackio (trackers.py)
        for callback in self.callbacks:
            callback(metrics)

    # ------------------------------------------------------------------------
    # Held-out evaluation during training (train.eval_every)

    def evaluate_held_out(self) -> dict:
        """Greedy pass@1 / format@1 of the current policy on the held-out prompts (`held_out_metrics`).

        Data parallel: rank 0 evaluates (the whole prompt set, so the numbers are one process's), the others wait
        for its numbers; every rank must call it."""
        metrics = {}
        if self.dp.main:
            with self.autocast():
                metrics = held_out_metrics(self.model, self.tokenizer, self.eval_examples, self.reward, self.cfg,
                                           step=self.step)
        return self.dp.broadcast(metrics)

    def _rollout_records(self, batch: ScoredRollout, advantages: torch.Tensor, count: int) -> list[RolloutRecord]:
        rollout = batch.rollout
        lengths, truncated = rollout.lengths[:count].tolist(), rollout.truncated[:count].tolist()
        return [RolloutRecord(
            step=self.step + 1, qid=ex.qid, prompt=question_text(ex), completion=rollout.completion_texts[i],
            ground_truth=ex.ground_truth, objectives={k: v[i].item() for k, v in batch.objectives.items()},
            score=batch.scores[i].item(), advantage=advantages[i].item(), length=int(lengths[i]),
            truncated=bool(truncated[i]), backend="dapo_nb") for i, ex in enumerate(batch.examples[:count])]

    def _log_rollouts(self, batch: ScoredRollout | None, advantages: torch.Tensor) -> None:
        """The first train.log_rollouts rows of the step's batch to rollouts.jsonl; data parallel: the first in
        global order over all ranks (every rank sends its first ones), written by rank 0."""
        if self.dp.world == 1:
            append_rollouts(self.output_dir, self._rollout_records(batch, advantages, min(self.cfg.train.log_rollouts,
                                                                                          len(batch))))
            return
        mine = []
        if batch is not None:
            count = min(self.cfg.train.log_rollouts, len(batch))
            keys = self._dp_gid[batch.group_ids[:count]].tolist()
            mine = [((key, i), record) for i, (key, record) in
                    enumerate(zip(keys, self._rollout_records(batch, advantages, count)))]
        everyone = sorted((item for part in self.dp.gather(mine) for item in part), key=lambda item: item[0])
        if self.dp.main:
            append_rollouts(self.output_dir, [record for _, record in everyone[: self.cfg.train.log_rollouts]])

    # ------------------------------------------------------------------------
    # Live weights: train.weights_file, and rank 0's weights on every rank

    def _sync_live_weights(self) -> None:
        """Before a step: rank 0 re-reads train.weights_file when it changed; under data parallel its weights and
        scalarizer are then broadcast, so every rank scores the step with the same ones (the schedule's entries
        are applied by each rank alike, in `begin_batch`)."""
        if self.dp.main and self.cfg.train.weights_file:
            self._read_weights_file()
        if self.dp.world == 1:
            return
        state = self.dp.broadcast({"weights": self.reward.weights.get(), "scalarizer": self.reward.scalarizer}
                                  if self.dp.main else None)
        if not self.dp.main:
            if state["weights"] != self.reward.weights.get():
                self.reward.weights.set(state["weights"], replace=True)
            if state["scalarizer"] != self.reward.scalarizer:
                self.reward.scalarizer = state["scalarizer"]

    def _read_weights_file(self) -> None:
        """train.weights_file: apply its {objective: weight} mapping when the file changed since it was last read,
        validated as a slider move is (`LiveWeights.set`: names among the objectives, numbers >= 0, one > 0). Bad
        content is said once (until the file changes again) and the weights stay as they were."""
        path = Path(self.cfg.train.weights_file)
        try:
            stat = path.stat()
        except OSError:
            if self._weights_file_seen != "missing":
                self._weights_file_seen = "missing"
                warnings.warn(f"train.weights_file={path}: no such file (yet); the weights stay "
                              f"{self.reward.weights.get()} until it appears", stacklevel=3)
            return
        seen = (stat.st_mtime_ns, stat.st_size)
        if seen == self._weights_file_seen:
            return
        self._weights_file_seen = seen
        before = self.reward.weights.get()
        try:
            updates = yaml.safe_load(path.read_text())
            if not isinstance(updates, dict) or not updates:
                raise WeightsError(f"expected a YAML mapping {{objective: weight}}, e.g. {{format: 0.5}}; got {updates!r}")
            after = self.reward.weights.set(updates)
        except (OSError, UnicodeDecodeError, yaml.YAMLError, WeightsError) as err:
            warnings.warn(f"train.weights_file={path}: {err}; the weights stay {before}", stacklevel=3)
            return
        changed = {name: value for name, value in after.items() if before.get(name) != value}
        if changed:
            self.weight_changes.append({"after_step": self.step, "what": "weights_file", "value": changed})
            print(f"train.weights_file: from step {self.step + 1}, "
                  + ", ".join(f"weights/{k}={v:g}" for k, v in changed.items()), flush=True)

    def train(self, steps: int | None = None) -> list[dict]:
        """Run until train.total_steps (or `steps` more), train.max_minutes, stop() or Ctrl-C / SIGTERM; ends with a checkpoint.

        While it runs, `<output_dir>/.training.lock` is held (rank 0): a second process training into the same
        folder is refused. Data parallel: every rank calls it; they stop after the same step."""
        with training_lock(self.output_dir) if self.dp.main else contextlib.nullcontext():
            return self._train(steps)

    def _stop_before_step(self, deadline: float) -> bool:
        """Stop requested or train.max_minutes spent; data parallel: on any rank (then every rank stops here)."""
        stop, late = self.stop_event.is_set(), time.monotonic() >= deadline
        if self.dp.world == 1:
            return stop or late
        stop, late = self.dp.any([stop, late])
        if stop:
            self.stop_event.set()
        return stop or late

    def _train(self, steps: int | None) -> list[dict]:
        total = self.cfg.train.total_steps
        end = total if steps is None else min(total, self.step + steps)
        deadline = time.monotonic() + 60 * self.cfg.train.max_minutes if self.cfg.train.max_minutes > 0 else math.inf
        self._last_step, self._deadline = end, deadline  # train_step evaluates the last step, so the curve ends there
        self.stop_event.clear()
        restore = install_stop_handlers(self.stop_event, lambda: f"step {self.step + 1}")
        bar = tqdm(total=total, initial=self.step, desc=self.cfg.train.run_name, unit="step", dynamic_ncols=True,
                   disable=not self.dp.main)
        try:
            while self.step < end and not self._stop_before_step(deadline):
                while not self.run_event.wait(0.2):  # paused from the control panel
                    if self.stop_event.is_set():
                        break
                if self.stop_event.is_set() and self.dp.world == 1:  # data parallel: decided together, above
                    break
                metrics = self.train_step()
                bar.update(1)
                bar.set_postfix(reward=f"{metrics['reward']:.3f}", kept=metrics["dynamic/groups_kept"])
                every = self.cfg.train.save_every
                if every and self.step % every == 0:
                    self._save_unless_disk_full()
        except UnfilledBatchError:
            if self.step > self.last_saved_step:  # the failed step changed nothing: keep the steps before it
                self.save()
            raise
        except KeyboardInterrupt:
            if self._params_dirty:  # interrupted mid-update: the last checkpoint stays the latest
                warnings.warn(f"interrupted during the update of step {self.step + 1}: not saving a half-updated model; "
                              f"resume from {latest_checkpoint(self.checkpoint_root)}", stacklevel=2)
                return self.history
            print(f"interrupted: step {self.step + 1} abandoned before any parameter changed")
        finally:
            bar.close()
            restore()
            self._last_step, self._deadline = self.cfg.train.total_steps, math.inf
            self.trackers.close()  # a later train() or train_step() reopens them, continuing
        if self.step > self.last_saved_step and not self._params_dirty:
            self.save()
        if self.dp.world > 1:
            self._write_replicas()
        return self.history

    def _write_replicas(self) -> None:
        """Data parallel: runs/<run>/replicas.json with every rank's parameter digest (as backend=trl writes it);
        RuntimeError when they differ."""
        from .trl_backend import parameter_digest

        digests = self.dp.gather(parameter_digest(self.model))
        in_sync = len(set(digests)) == 1
        if self.dp.main:
            (self.output_dir / "replicas.json").write_text(json.dumps(
                {"processes": len(digests), "parameter_sha256": digests, "in_sync": in_sync, "step": self.step,
                 "backend": "dapo_nb"}, indent=1) + "\n")
        if not in_sync:
            raise RuntimeError(f"data-parallel replicas diverged (parameter digests {digests}); see "
                               f"{self.output_dir / 'replicas.json'}")

    def stop(self) -> None:
        """Finish the current step, save a checkpoint and return from train() (thread-safe)."""
        self.stop_event.set()
        self.run_event.set()

    # ------------------------------------------------------------------------
    # Checkpoints

    def save(self) -> Path:
        """Checkpoint the current step to checkpoints/<run>/step-N (atomic; weights only with
        train.save_optimizer=false), then delete all but the newest train.save_total_limit.

        DiskFullError (one line; every earlier checkpoint intact) when it does not fit the free space."""
        state = {"step": self.step, "epoch": self.epoch, "cursor": self.cursor, "config": to_dict(self.cfg),
                 "live_weights": self.reward.weights.state_dict()}
        rng = {"torch": torch.get_rng_state(), "generator": self.generator.get_state()}
        if self.dp.world > 1:  # rank 0 writes; every rank's RNG states go in, so a resume restores each rank
            rng["ranks"] = self.dp.gather({"torch": torch.get_rng_state(), "generator": self.generator.get_state()})
            error = self._on_main(lambda: self._write_checkpoint(state, rng))
            if error is not None:
                raise error
            self.last_saved_step = self.step
            return checkpoint_path(self.checkpoint_root, self.step)
        sync_run_logs(self.output_dir)  # the log lines of steps <= N reach the disk before checkpoint N
        path = save_checkpoint(self.checkpoint_root, self.step, self.model, self.tokenizer, self.optimizer,
                               self.scheduler, rng, state, merge_lora=self.cfg.model.lora.merge_on_save,
                               save_optimizer=self.cfg.train.save_optimizer)
        self.last_saved_step = self.step
        prune_checkpoints(self.checkpoint_root, self.cfg.train.save_total_limit)
        return path

    def _write_checkpoint(self, state: dict, rng: dict) -> None:
        """Rank 0's part of a data-parallel save: the logs to disk, checkpoint step-N, pruning (as `save`)."""
        sync_run_logs(self.output_dir)
        save_checkpoint(self.checkpoint_root, self.step, self.model, self.tokenizer, self.optimizer, self.scheduler,
                        rng, state, merge_lora=self.cfg.model.lora.merge_on_save,
                        save_optimizer=self.cfg.train.save_optimizer)
        prune_checkpoints(self.checkpoint_root, self.cfg.train.save_total_limit)

    def _on_main(self, work) -> Exception | None:
        """Data parallel: run `work` on rank 0; None when it succeeded, else the error, on every rank (a DiskFullError
        as itself, anything else as a RuntimeError naming it; rank 0 raises its own), so that all ranks go on or stop
        together and none waits forever in the next collective."""
        error = None
        if self.dp.main:
            try:
                work()
            except Exception as err:  # noqa: BLE001 - every rank must hear of it
                error = err
        problem = self.dp.broadcast(None if error is None else (
            (error.reason, error.fix) if isinstance(error, DiskFullError) else f"{type(error).__name__}: {error}"))
        if problem is None:
            return None
        if self.dp.main and not isinstance(error, DiskFullError):
            raise error
        if isinstance(problem, tuple):
            return error if self.dp.main else DiskFullError(*problem)
        return RuntimeError(f"rank 0 failed: {problem}")

    def _save_unless_disk_full(self) -> Path | None:
        """A save during the run (train.save_every); with train.on_disk_full=skip one that does not fit is said and
        skipped, and the next save tries again (the final save, `save`, always raises)."""
        try:
            return self.save()
        except DiskFullError as err:
            self._skip_or_stop(err)
            return None

    def _skip_or_stop(self, err: DiskFullError) -> None:
        """train.on_disk_full: stop re-raises (the run ends with its one line, exit 2); skip prints it and goes on."""
        if self.cfg.train.on_disk_full != "skip":
            raise err
        print(f"{err.reason}; not saved (train.on_disk_full=skip): training goes on and the next save tries again",
              flush=True)

    def _keep_best(self, metrics: dict) -> None:
        """train.keep_best: when this step's held-out evaluation beats the run's best, its weights replace
        checkpoints/<run>/best (weights only: for `dapo-nb eval` and sharing); a full disk follows train.on_disk_full."""
        if not improves_best(self.cfg.train.keep_best, metrics, self.best):
            return
        record = best_record(self.cfg, metrics)
        write = lambda: save_best(self.checkpoint_root / BEST_DIR, self.model, self.tokenizer, record,  # noqa: E731
                                  merge_lora=self.cfg.model.lora.merge_on_save)
        if self.dp.world > 1:  # rank 0 writes, every rank keeps the same record and decides alike on a full disk
            error = self._on_main(write)
            if error is not None:
                if not isinstance(error, DiskFullError):
                    raise error
                self._skip_or_stop(error)
                return
            self.best = record
            return
        try:
            write()
        except DiskFullError as err:
            self._skip_or_stop(err)
            return
        self.best = record

    def resume(self, path: str | Path | None = None) -> int:
        """Load the latest (or given) checkpoint of this run into model, optimizer, RNGs and data cursor; returns its step.

        Crash leftovers are cleared: checkpoint folders a crash left mid-save, and metrics/rollouts lines of steps after
        the checkpoint (or, with no checkpoint, the logs are kept aside as for a fresh run), so each step is logged once.
        Data parallel: every rank loads the checkpoint, with its own RNG states when the checkpoint has them for
        this many ranks; rank 0 alone clears files."""
        if self.dp.main:
            remove_temp_dirs(self.checkpoint_root)
        path = Path(path) if path else latest_checkpoint(self.checkpoint_root)
        if path is None:
            if self.dp.main:
                print(f"train.resume: no checkpoint under {self.checkpoint_root}; starting at step 0")
                archive_run_logs(self.output_dir)
            return 0
        require_optimizer_state(path)  # a weights-only checkpoint (train.save_optimizer=false) cannot continue its run
        state, optim, rng = load_trainer_state(path)
        from safetensors.torch import load_file

        weights_file = path / ("adapter_model.safetensors" if self.lora else "model.safetensors")
        if self.lora:
            from peft import set_peft_model_state_dict
            set_peft_model_state_dict(self.model, load_file(weights_file))
        else:
            missing, unexpected = self.model.load_state_dict(load_file(weights_file), strict=False)
            if unexpected or [m for m in missing if "lm_head" not in m]:
                raise ValueError(f"{weights_file} does not fit this model: missing {missing[:3]}, unexpected {unexpected[:3]}")
            if missing:
                self.model.tie_weights()
        self.optimizer.load_state_dict(optim["optimizer"])
        self.scheduler.load_state_dict(optim["scheduler"])
        ranks = rng.get("ranks")  # every rank's RNG states, in a checkpoint saved under data parallel
        fresh_stream = False
        if self.dp.world > 1 and ranks is not None and len(ranks) == self.dp.world:
            rng = ranks[self.dp.rank]  # this rank's own streams
        elif self.dp.world > 1 or ranks is not None:
            if self.dp.main:
                warnings.warn(f"{path} was saved by {len(ranks) if ranks else 1} process(es) and is resumed by "
                              f"{self.dp.world}: the data order continues, ranks > 0 start new sampling streams",
                              stacklevel=2)
            fresh_stream = not self.dp.main
        torch.set_rng_state(rng["torch"])
        if fresh_stream:  # new but reproducible: a function of (seed, step, rank)
            self.generator.manual_seed(rank_seed(self.cfg.train.seed + state["step"], self.dp.rank))
        else:
            self.generator.set_state(rng["generator"])
        self.step, self.epoch, self.cursor = state["step"], state["epoch"], state["cursor"]
        self.reward.weights.load_state_dict(state["live_weights"])
        self.last_saved_step = self.step
        self.best = read_best(self.checkpoint_root / BEST_DIR)  # a later evaluation must beat it to replace it
        if self.dp.main:
            truncate_run_logs(self.output_dir, self.step)
            print(f"resumed {path} at step {self.step}")
        return self.step
