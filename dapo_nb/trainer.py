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
"""

from __future__ import annotations

import contextlib
import copy
import math
import threading
import time
import warnings
from pathlib import Path

import torch
from tqdm.auto import tqdm

from . import dapo
from .checkpoint import (BEST_DIR, DiskFullError, latest_checkpoint, load_trainer_state, prune_checkpoints, read_best,
                         remove_temp_dirs, require_optimizer_state, save_best, save_checkpoint)
from .config import Config, ConfigError, to_dict
from .cpu_threads import AdaptiveThreads
from .data import evenly_spread, load_prompts_from_config, question_text, render_prompts
from .evaluate import evaluate
from .generate import Rollout, completion_logprobs, generate_rollouts, is_greedy
from .models import apply_lora, policy_from_config
from .rewards import MultiObjectiveReward, RewardBatch, reward_from_config
from .runs import (RolloutRecord, UnfilledBatchError, append_rollouts, archive_checkpoints, archive_run_logs, checkpoint_root, install_stop_handlers,
                   append_metrics, sync_run_logs, truncate_run_logs)
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


class Trainer:
    """Owns the policy, optimizer, reward and data cursor of one run; `train()` runs it, `stop()` ends it cleanly."""

    def __init__(self, cfg: Config, *, model=None, tokenizer=None, reward: MultiObjectiveReward | None = None):
        self.cfg = cfg.validate()
        self.trackers = Trackers(cfg)  # train.report_to; a missing tracker package fails here, before the model loads
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
        self.generator = torch.Generator(device=self.model.device).manual_seed(cfg.train.seed)

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
        if cfg.train.resume:
            self.resume()
        else:  # a fresh run: an earlier run of the same name keeps its logs and checkpoints, renamed
            archive_run_logs(self.output_dir)
            archive_checkpoints(self.checkpoint_root, cfg.train.keep_previous_runs)
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
        """bf16 autocast around rollouts and update forward passes when model.autocast=bf16, else nothing."""
        if self.cfg.model.autocast == "none":
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

        All selection happens on the host (ScoredRollout's group ids, scores, objectives)."""
        cfg = self.cfg
        want = cfg.ppo.batch_size
        per_batch = cfg.dapo.gen_batch_size or want
        filtering = cfg.dapo.dynamic_sampling and not self.greedy
        kept: list[ScoredRollout] = []
        seen: list[ScoredRollout] = []
        rewards: list[RewardBatch] = []
        have = 0
        stats = {"dynamic/groups_kept": 0, "dynamic/groups_dropped": 0, "dynamic/groups_surplus": 0,
                 "dynamic/num_gen_batches": 0}
        for _ in range(cfg.dapo.max_gen_batches if filtering else 1):
            if self.stop_event.is_set() and kept:
                break
            scored, reward = self.sample(self._next_indices(per_batch))
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
        stats.update(self._generation_stats(seen, rewards))
        if not filled and filtering and not self.stop_event.is_set():
            policy = cfg.dapo.on_unfilled
            if policy == "error":
                raise UnfilledBatchError(
                    f"step {self.step + 1}: only {have} of ppo.batch_size={want} groups had a varying "
                    f"{cfg.dapo.filter_metric} after dapo.max_gen_batches={cfg.dapo.max_gen_batches} generation batches; "
                    "raise dapo.max_gen_batches or dapo.gen_batch_size, filter on another metric, or set "
                    "dapo.on_unfilled=train|skip")
            if policy == "skip":
                kept = []
        batch = ScoredRollout.concat(kept, self.tokenizer.pad_token_id) if kept else None
        return batch, stats

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

    def advantages(self, batch: ScoredRollout) -> torch.Tensor:
        """(N,) float32 host advantages of the batch's scalar rewards (group-relative; batch baseline when greedy)."""
        std_scale = self.cfg.dapo.std_scale
        if self.greedy:
            return dapo.batch_baseline_advantages(batch.scores, std_scale if std_scale != "group" else "batch")
        return dapo.group_advantages(batch.scores, batch.group_ids, std_scale)

    def update(self, batch: ScoredRollout, advantages: torch.Tensor) -> dict:
        """ppo.epochs passes of mini-batch AdamW updates on one rollout batch; returns loss/clip/grad metrics.

        `advantages` (N,) may be on the host; mini-batches are chosen on the host and their rows copied to the
        device once each."""
        cfg = self.cfg
        rollout = batch.rollout
        device = rollout.device
        advantages = advantages.to(device)  # (N,)
        mask = rollout.completion_mask.float()  # (N, C) device
        if cfg.dapo.overlong_filtering:
            mask = dapo.overlong_filter_mask(mask, rollout.truncated)
        tokens_per_row = mask.sum(-1).cpu()  # (N,) host: token counts for the loss denominators
        temperature = 1.0 if self.greedy else cfg.sampling.temperature
        groups = batch.group_ids.unique()  # host
        per_update = cfg.ppo.groups_per_update
        shuffle = torch.Generator().manual_seed(cfg.train.seed * 1_000_003 + self.step)
        sums: dict[str, float] = {}
        updates = skipped = 0
        gap_sum = gap_tokens = 0.0  # |update log-prob - rollout log-prob| before the first optimizer step
        self.model.train()
        for epoch in range(cfg.ppo.epochs):
            order = groups[torch.randperm(len(groups), generator=shuffle)]
            for start in range(0, len(order), per_update):
                host_rows = batch.rows_of_groups(order[start : start + per_update])
                n_tokens = tokens_per_row[host_rows].sum().item()
                n_seqs = (tokens_per_row[host_rows] > 0).sum().item()
                if n_tokens == 0:
                    continue
                rows = host_rows.to(device)
                self.optimizer.zero_grad(set_to_none=True)
                loss_total, finite = 0.0, True
                micro = cfg.ppo.micro_batch_size or len(rows)
                for chunk in rows.split(micro):
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
                grad_norm = torch.nn.utils.clip_grad_norm_(params, cfg.ppo.max_grad_norm or float("inf")).item()
                if not finite or not math.isfinite(grad_norm):
                    self.optimizer.zero_grad(set_to_none=True)  # parameters stay untouched
                    skipped += 1
                    continue
                self._params_dirty = True
                self.optimizer.step()
                self.scheduler.step()
                updates += 1
                sums["loss"] = sums.get("loss", 0.0) + loss_total
                sums["grad_norm"] = sums.get("grad_norm", 0.0) + grad_norm
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

    # ------------------------------------------------------------------------
    # One step, the loop, logging

    def train_step(self) -> dict:
        """Collect a batch, update, log; returns this step's metrics."""
        self.output_dir.mkdir(parents=True, exist_ok=True)
        if (self.step == 0 and self.eval_examples is not None and self.cfg.train.eval_at_start
                and not any(m.get("step") == 0 for m in self.history)):  # the before point of the held-out curve
            self._record({"step": 0, **self.evaluate_held_out()})
            self._keep_best(self.history[-1])  # checks that train.keep_best names one of its metrics
        t0 = time.perf_counter()
        threads = self.cpu_threads.update() if self.cpu_threads else torch.get_num_threads()
        batch, metrics = self.collect()
        t1 = time.perf_counter()
        if batch is not None:
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
        last = self.step == self._last_step or time.monotonic() >= self._deadline  # train() stops after this step
        if self.eval_examples is not None and (self.step % self.cfg.train.eval_every == 0 or last):
            metrics.update(self.evaluate_held_out())  # after the timings: not in step_time or tokens_per_second
        self._record(metrics)
        self._keep_best(metrics)
        return metrics

    def _record(self, metrics: dict) -> None:
        """One metrics.jsonl line: history, file, trackers, callbacks."""
        self.history.append(metrics)
        append_metrics(self.output_dir, metrics)
        self._params_dirty = False
        self.trackers.log(metrics)  # train.report_to: TensorBoard / W&B / Trackio (trackers.py)
        for callback in self.callbacks:
            callback(metrics)

    # ------------------------------------------------------------------------
    # Held-out evaluation during training (train.eval_every)

    def evaluate_held_out(self) -> dict:
        """Greedy pass@1 / format@1 of the current policy on the held-out prompts (`held_out_metrics`)."""
        with self.autocast():
            return held_out_metrics(self.model, self.tokenizer, self.eval_examples, self.reward, self.cfg, step=self.step)

    def _log_rollouts(self, batch: ScoredRollout, advantages: torch.Tensor) -> None:
        count = min(self.cfg.train.log_rollouts, len(batch))
        rollout = batch.rollout
        lengths, truncated = rollout.lengths[:count].tolist(), rollout.truncated[:count].tolist()
        append_rollouts(self.output_dir, [RolloutRecord(
            step=self.step + 1, qid=ex.qid, prompt=question_text(ex), completion=rollout.completion_texts[i],
            ground_truth=ex.ground_truth, objectives={k: v[i].item() for k, v in batch.objectives.items()},
            score=batch.scores[i].item(), advantage=advantages[i].item(), length=int(lengths[i]),
            truncated=bool(truncated[i]), backend="dapo_nb") for i, ex in enumerate(batch.examples[:count])])

    def train(self, steps: int | None = None) -> list[dict]:
        """Run until train.total_steps (or `steps` more), train.max_minutes, stop() or Ctrl-C / SIGTERM; ends with a checkpoint."""
        total = self.cfg.train.total_steps
        end = total if steps is None else min(total, self.step + steps)
        deadline = time.monotonic() + 60 * self.cfg.train.max_minutes if self.cfg.train.max_minutes > 0 else math.inf
        self._last_step, self._deadline = end, deadline  # train_step evaluates the last step, so the curve ends there
        self.stop_event.clear()
        restore = install_stop_handlers(self.stop_event, lambda: f"step {self.step + 1}")
        bar = tqdm(total=total, initial=self.step, desc=self.cfg.train.run_name, unit="step", dynamic_ncols=True)
        try:
            while self.step < end and not self.stop_event.is_set() and time.monotonic() < deadline:
                while not self.run_event.wait(0.2):  # paused from the control panel
                    if self.stop_event.is_set():
                        break
                if self.stop_event.is_set():
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
        return self.history

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
        sync_run_logs(self.output_dir)  # the log lines of steps <= N reach the disk before checkpoint N
        path = save_checkpoint(self.checkpoint_root, self.step, self.model, self.tokenizer, self.optimizer,
                               self.scheduler, rng, state, merge_lora=self.cfg.model.lora.merge_on_save,
                               save_optimizer=self.cfg.train.save_optimizer)
        self.last_saved_step = self.step
        prune_checkpoints(self.checkpoint_root, self.cfg.train.save_total_limit)
        return path

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
        try:
            save_best(self.checkpoint_root / BEST_DIR, self.model, self.tokenizer, record,
                      merge_lora=self.cfg.model.lora.merge_on_save)
        except DiskFullError as err:
            self._skip_or_stop(err)
            return
        self.best = record

    def resume(self, path: str | Path | None = None) -> int:
        """Load the latest (or given) checkpoint of this run into model, optimizer, RNGs and data cursor; returns its step.

        Crash leftovers are cleared: checkpoint folders a crash left mid-save, and metrics/rollouts lines of steps after
        the checkpoint (or, with no checkpoint, the logs are kept aside as for a fresh run), so each step is logged once."""
        remove_temp_dirs(self.checkpoint_root)
        path = Path(path) if path else latest_checkpoint(self.checkpoint_root)
        if path is None:
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
        torch.set_rng_state(rng["torch"])
        self.generator.set_state(rng["generator"])
        self.step, self.epoch, self.cursor = state["step"], state["epoch"], state["cursor"]
        self.reward.weights.load_state_dict(state["live_weights"])
        self.last_saved_step = self.step
        self.best = read_best(self.checkpoint_root / BEST_DIR)  # a later evaluation must beat it to replace it
        truncate_run_logs(self.output_dir, self.step)
        print(f"resumed {path} at step {self.step}")
        return self.step
