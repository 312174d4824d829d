"""`backend=trl`: the same config, rewards and live weights, trained by TRL's `GRPOTrainer` (Accelerate data parallel).

    dapo-nb train backend=trl key=value ...                                          # one process
    accelerate launch --num_processes N -m dapo_nb.cli train backend=trl key=value   # N data-parallel processes
    history = train_with_trl(load_config(overrides=["backend=trl"]))                 # from a notebook

How our config maps onto TRL 1.16's `GRPOConfig` (`grpo_config_kwargs` builds it; `trl.args` adds any other field):

  dapo.group_size G -> num_generations       dapo.eps_low / eps_high -> epsilon / epsilon_high
  dapo.loss_agg     -> loss_type: token-mean -> "dapo", seq-mean-token-mean -> "grpo",
                       seq-mean-token-sum -> "dr_grpo" (TRL divides the token sums by max_completion_length,
                       ours by the sequence count: the same gradient up to a constant factor)
  dapo.std_scale    -> scale_rewards (group / batch / none)    dapo.beta -> beta (k3 KL, TRL loads the reference)
  dapo.overlong_filtering -> mask_truncated_completions        ppo.epochs -> num_iterations
  sampling.*        -> max_completion_length, temperature, top_p, top_k
  ppo.batch_size B, ppo.mini_batch_size M, ppo.micro_batch_size -> per_device_train_batch_size,
                       gradient_accumulation_steps, steps_per_generation, so that one generation batch is
                       B x G completions and every optimizer update sees M x G of them, over all processes
  train.total_steps -> max_steps (x updates per batch); train.save_every -> save_steps; train.resume ->
                       resume_from_checkpoint (refused from a checkpoint without optimizer state);
                       train.save_total_limit -> save_total_limit; train.save_optimizer=false -> save_only_model;
                       ppo.learning_rate / warmup_steps / weight_decay / max_grad_norm
  train.report_to  -> report_to (TRL's trackers; TensorBoard into runs/<run>/tensorboard, see trackers.py),
                       train.run_name -> run_name, train.tracker_project -> project
  reward: weighted_sum without a plugin -> one reward function per objective, `reward_weights` = the live
                       weights (re-read for every generation batch, so sliders and reward.schedule work),
                       normalization none -> multi_objective_aggregation="sum_then_normalize",
                       group_zscore -> "normalize_then_sum" (GDPO: TRL z-scores each objective in its group as
                       we do, but then normalizes the summed reward over the whole batch, where we use the group);
                       tchebycheff / smooth_tchebycheff / a plugin -> one reward function `score` (our scalar, any
                       normalization) with weight 1, and one per objective with weight 0 so each is still logged.

What TRL lacks: **dynamic sampling**. GRPOTrainer trains on every sampled group; a group whose rewards are all
equal gets advantage 0 (no gradient) but its tokens still count in the token-mean denominator, and nothing is
re-sampled to fill the batch. This backend says so once, logs `frac_reward_zero_std` (the share of groups DAPO
would have dropped) and leaves the filtering to `backend=dapo_nb` or verl (`dapo-nb export verl`). Also not
mapped: greedy decoding (`sampling.do_sample=false`, refused), `sampling.context_max_len` (TRL does not truncate
prompts; longer ones are reported), `model.device_map` (model parallel; refused, see README "Scaling out").

As in backend=dapo_nb (callbacks below): `train.eval_every` / `train.eval_at_start` add the same held-out `eval/*`
metrics to the same metrics.jsonl lines (`HeldOutEval`; the main process evaluates, the others wait for its numbers);
`train.max_minutes`, SIGTERM and Ctrl-C stop between generation batches, never between the optimizer updates of one
(`StopControl`), so checkpoint-N holds whole steps: N = steps x updates per batch; a resumed run continues its
TensorBoard folder with `purge_step` and its Trackio run, and a fresh run starts a new Trackio run
(`trackers.adapt_trl_callbacks`).

Files: metrics.jsonl (our format: one line per generation batch with TRL's metric names plus `weights/<name>`,
`scalarizer`, `backend`, and the `eval/*` of held-out evaluation) and rollouts.jsonl go to runs/<run>, written by
the main process only; TRL's checkpoints (`checkpoint-<optimizer step>`, model + optimizer, loadable by `load_policy`
and `dapo-nb eval`) go to checkpoints/<run>; replicas.json records each process's parameter digest after training
(data-parallel replicas must be identical). As in backend=dapo_nb (`CheckpointGuard`): a fresh run keeps
train.keep_previous_runs earlier checkpoint sets, the free space is checked before each checkpoint-N
(train.on_disk_full), a write that fills the disk ends in the same one-line DiskFullError, and train.keep_best writes
the weights of the best held-out evaluation to checkpoints/<run>/best (our own folder, not TRL's
`load_best_model_at_end`, which needs TRL's evaluation loop).
"""

from __future__ import annotations

import hashlib
import json
import math
import threading
import time
import warnings
from dataclasses import dataclass
from pathlib import Path

import torch
from accelerate.utils import broadcast_object_list
from transformers import TrainerCallback
from transformers.integrations import is_deepspeed_zero3_enabled

from .checkpoint import (BEST_DIR, DISK_FULL_FIX, STATE_FILE, DiskFullError, ensure_free_space, expected_checkpoint_bytes,
                         is_disk_full, latest_trl_checkpoint, read_best, require_optimizer_state, save_best)
from .config import Config, ConfigError, to_yaml
from .data import load_prompts_from_config, render_prompts, to_chat_messages
from .rewards import MultiObjectiveReward
from .data import question_text
from .generate import eos_token_ids, is_greedy
from .models import lora_config, pick_dtype, uses_bf16_autocast
from .rewards import reward_from_config
from .runs import (RolloutRecord, append_metrics, append_rollouts, archive_checkpoints, archive_run_logs, checkpoint_root, install_stop_handlers,
                   truncate_run_logs)
from .trackers import adapt_trl_callbacks, prepare_trl_trackers, trl_report_kwargs
from .trainer import best_record, held_out_examples, held_out_metrics, improves_best

LOSS_TYPES = {"token-mean": "dapo", "seq-mean-token-mean": "grpo", "seq-mean-token-sum": "dr_grpo"}
SOURCE_KEYS = {  # GRPOConfig field -> the dapo-nb key it is made from (for error messages)
    "num_generations": "dapo.group_size", "per_device_train_batch_size": "ppo.mini_batch_size / ppo.micro_batch_size",
    "gradient_accumulation_steps": "ppo.mini_batch_size / ppo.micro_batch_size",
    "steps_per_generation": "ppo.batch_size / ppo.mini_batch_size", "num_iterations": "ppo.epochs",
    "logging_steps": "ppo.batch_size / ppo.mini_batch_size / ppo.epochs (one metrics line per batch)",
    "max_steps": "train.total_steps", "save_steps": "train.save_every", "save_total_limit": "train.save_total_limit",
    "save_only_model": "train.save_optimizer", "seed": "train.seed",
    "shuffle_dataset": "data.shuffle", "activation_checkpointing": "model.gradient_checkpointing",
    "max_completion_length": "sampling.max_new_tokens", "temperature": "sampling.temperature",
    "top_p": "sampling.top_p", "top_k": "sampling.top_k", "use_vllm": "trl.use_vllm", "vllm_mode": "trl.vllm_mode",
    "loss_type": "dapo.loss_agg", "epsilon": "dapo.eps_low", "epsilon_high": "dapo.eps_high", "beta": "dapo.beta",
    "scale_rewards": "dapo.std_scale", "mask_truncated_completions": "dapo.overlong_filtering",
    "learning_rate": "ppo.learning_rate", "weight_decay": "ppo.weight_decay", "max_grad_norm": "ppo.max_grad_norm",
    "warmup_steps": "ppo.warmup_steps", "lr_scheduler_type": "ppo.warmup_steps",
    "report_to": "train.report_to", "run_name": "train.run_name", "project": "train.tracker_project",
}


# ----------------------------------------------------------------------------
# Batch geometry and GRPOConfig


@dataclass(frozen=True)
class BatchLayout:
    """How B prompt groups of G completions per step split over processes, updates and micro-batches."""

    per_device_batch: int  # completions per process per forward/backward
    grad_accum: int  # micro-batches per optimizer update
    steps_per_generation: int  # micro-batches per generation batch (per process)
    updates_per_batch: int  # optimizer updates per generation batch (mini-batches x epochs)

    def steps_done(self, optimizer_steps: int) -> int:
        """Our `step` (generation batches trained on) after TRL's `global_step` optimizer updates."""
        return math.ceil(optimizer_steps / self.updates_per_batch)


def batch_layout(cfg: Config, world_size: int) -> BatchLayout:
    """Check that the batch splits into whole groups per process and return TRL's batch settings."""
    G, B = cfg.dapo.group_size, cfg.ppo.batch_size
    M = cfg.ppo.groups_per_update
    for key, groups in (("ppo.batch_size", B), ("ppo.mini_batch_size", M)):
        if groups % world_size:
            raise ConfigError(f"{key}={groups} prompt groups do not split evenly over {world_size} processes; use a "
                              f"multiple of {world_size} (each process must score whole groups of {G})")
    per_update = M * G // world_size  # completions per process per optimizer update
    micro = cfg.ppo.micro_batch_size or per_update
    if per_update % micro:
        raise ConfigError(f"ppo.micro_batch_size={micro} must divide the {per_update} completions each process "
                          f"trains on per update (ppo.mini_batch_size x dapo.group_size / processes)")
    accum = per_update // micro
    return BatchLayout(micro, accum, accum * (B // M), (B // M) * cfg.ppo.epochs)


def check_trl_config(cfg: Config) -> None:
    """Refuse what TRL cannot do; warn about what it does differently."""
    if is_greedy(cfg.sampling.do_sample, cfg.sampling.temperature):
        raise ConfigError("backend=trl samples G completions per prompt; sampling.do_sample=false / temperature=0 "
                          "(greedy) is only supported by backend=dapo_nb")
    if cfg.model.device_map:
        raise ConfigError(f"model.device_map={cfg.model.device_map!r} shards one model over GPUs (model parallel); "
                          "backend=trl replicates the model on every process (data parallel). Use backend=dapo_nb "
                          "with device_map, or backend=trl without it (README, 'Scaling out')")
    if cfg.dapo.dynamic_sampling:
        warnings.warn("backend=trl: TRL's GRPOTrainer has no dynamic sampling; groups whose rewards are all equal "
                      "stay in the batch with zero advantage and nothing is re-sampled (frac_reward_zero_std in "
                      "metrics.jsonl is the share DAPO would drop). Set dapo.dynamic_sampling=false to silence this, "
                      "or use backend=dapo_nb or the verl export for real dynamic sampling", stacklevel=3)


def grpo_config_kwargs(cfg: Config, layout: BatchLayout, output_dir: str, use_cpu: bool) -> dict:
    """GRPOConfig keyword arguments equivalent to `cfg` (see the module docstring for the mapping)."""
    save_steps = (cfg.train.save_every or cfg.train.total_steps) * layout.updates_per_batch
    mapped = dict(  # from our config; trl.args may not contradict them
        # the batch
        num_generations=cfg.dapo.group_size, per_device_train_batch_size=layout.per_device_batch,
        gradient_accumulation_steps=layout.grad_accum, steps_per_generation=layout.steps_per_generation,
        num_iterations=cfg.ppo.epochs, max_steps=cfg.train.total_steps * layout.updates_per_batch,
        logging_steps=layout.updates_per_batch, save_steps=save_steps, seed=cfg.train.seed,
        save_total_limit=cfg.train.save_total_limit or None, save_only_model=not cfg.train.save_optimizer,
        shuffle_dataset=cfg.data.shuffle, activation_checkpointing=cfg.model.gradient_checkpointing,
        # sampling
        max_completion_length=cfg.sampling.max_new_tokens, temperature=cfg.sampling.temperature,
        top_p=cfg.sampling.top_p, top_k=cfg.sampling.top_k, use_vllm=cfg.trl.use_vllm, vllm_mode=cfg.trl.vllm_mode,
        # the DAPO objective
        loss_type=LOSS_TYPES[cfg.dapo.loss_agg], epsilon=cfg.dapo.eps_low, epsilon_high=cfg.dapo.eps_high,
        beta=cfg.dapo.beta, scale_rewards=cfg.dapo.std_scale, mask_truncated_completions=cfg.dapo.overlong_filtering,
        # the optimizer
        learning_rate=cfg.ppo.learning_rate, weight_decay=cfg.ppo.weight_decay,
        max_grad_norm=cfg.ppo.max_grad_norm or 1e9, warmup_steps=cfg.ppo.warmup_steps,
        lr_scheduler_type="constant_with_warmup" if cfg.ppo.warmup_steps else "constant",
        # trackers: TRL's report_to, run_name, project (trackers.py; "none" unless train.report_to names some)
        **trl_report_kwargs(cfg),
    )
    clash = sorted(set(cfg.trl.args) & set(mapped))
    if clash:
        sources = "; ".join(f"trl.args.{name} comes from {SOURCE_KEYS.get(name, 'the dapo-nb config')}" for name in clash)
        raise ConfigError(f"{sources}: set the dapo-nb key instead (the module docstring of dapo_nb/trl_backend.py "
                          "lists the mapping)")
    kwargs = dict(
        output_dir=output_dir, disable_tqdm=False, save_strategy="steps", use_cpu=use_cpu,
        dataloader_num_workers=0, log_completions=False, fp16=False,
        # TRL's bf16 is its autocast (its default on); ours decides it, so both backends compute in one precision:
        # half-precision weights on a GPU (force_float32 / dtype), or model.autocast resolving to bf16
        bf16=(not use_cpu and not cfg.model.force_float32 and cfg.model.dtype in ("auto", "bfloat16"))
        or uses_bf16_autocast(cfg.model.autocast, "cpu" if use_cpu else "cuda",
                              pick_dtype(cfg.model.dtype, cfg.model.force_float32)),
        **mapped,
    )
    kwargs.update(cfg.trl.args)
    return kwargs


# ----------------------------------------------------------------------------
# Our reward as TRL reward functions


class TRLRewardAdapter:
    """Scores each generation batch once with our `MultiObjectiveReward` and hands TRL one column per function.

    `functions` are TRL reward functions (their `__name__` becomes `rewards/<name>/mean` in TRL's logs);
    `initial_weights` are TRL's `reward_weights`. In the linear case (weighted_sum, no plugin) the trainer's
    `reward_weights` are replaced by the weights our reward used for the batch, right before TRL applies them.
    """

    def __init__(self, reward: MultiObjectiveReward, cfg: Config, layout: BatchLayout, examples,
                 eos_token_ids: frozenset[int] = frozenset()):
        self.reward, self.cfg, self.layout = reward, cfg, layout
        self.eos_token_ids = eos_token_ids  # a completion that ends in one of these was not truncated
        self.examples = {ex.qid: ex for ex in examples}  # the prompt as our trainer passes it to plugins
        self.names = list(reward.names)  # a seed-contract plugin's breakdown keys join after its first call
        self.linear = reward.scalarizer == "weighted_sum" and not reward.plugins
        self.trainer = None  # set by build_trl_trainer; needed to move TRL's reward_weights
        self.rollouts_path: Path | None = None  # main process only
        self._batch_for = None  # the `completions` list object the cached batch belongs to
        self._batch = None
        columns = [] if self.linear else [self._function("score", lambda b: b.scores)]
        columns += [self._function(name, lambda b, name=name: b.objectives[name]) for name in self.names]
        self.functions = columns
        weights = reward.weights.get()
        self.initial_weights = ([float(weights.get(n, 0.0)) for n in self.names] if self.linear
                                else [1.0] + [0.0] * len(self.names))
        self.aggregation = ("normalize_then_sum" if self.linear and reward.normalization == "group_zscore"
                            else "sum_then_normalize")

    def _function(self, name: str, column):
        def reward_function(prompts, completions, completion_ids, ground_truth, qid, trainer_state, log_metric=None, **_):
            batch = self._score(completions, completion_ids, ground_truth, qid, trainer_state, log_metric)
            applies = batch.applicable.get(name) or [True] * len(batch.valid)  # a plugin's None stays None for TRL
            return [float(v) if ok and applied else None for v, ok, applied in zip(column(batch), batch.valid, applies)]

        reward_function.__name__ = reward_function.__qualname__ = name
        return reward_function

    def _score(self, completions, completion_ids, ground_truth, qid, trainer_state, log_metric):
        if self._batch_for is completions:
            return self._batch
        G = self.cfg.dapo.group_size
        if len(completions) % G:  # batch_layout guarantees whole groups; group_zscore and logging rely on it
            raise RuntimeError(f"TRL passed {len(completions)} completions, not whole groups of {G}")
        texts = [c[-1]["content"] if isinstance(c, list) else c for c in completions]
        step = self.layout.steps_done(trainer_state.global_step) + 1  # the step this batch is generated for
        batch = self.reward.score_examples(  # the call our trainer makes; TRL's own trainer_state
            texts, [self.examples[q] for q in qid], step=step, group_ids=[i // G for i in range(len(texts))],
            num_tokens=[len(ids) for ids in completion_ids], completion_ids=completion_ids, trainer_state=trainer_state)
        if self.linear and self.trainer is not None:  # TRL multiplies by these right after the reward functions
            self.trainer.reward_weights = torch.tensor([batch.weights.get(n, 0.0) for n in self.names])
        if log_metric is not None:  # the metrics our trainer logs, less those TRL computes itself
            for key, value in batch.metrics().items():
                if not self._logged_by_trl(key):
                    log_metric(key, value)
        if self.rollouts_path is not None:
            self._log_rollouts(step, texts, completion_ids, ground_truth, qid, batch)
        self._batch_for, self._batch = completions, batch
        return batch

    def _logged_by_trl(self, key: str) -> bool:
        """TRL logs reward, reward_std and each reward function's mean / std itself."""
        functions = ["score"] * (not self.linear) + self.names
        return key in ("reward", "reward_std") or any(key.startswith(f"rewards/{n}/") for n in functions)

    def _log_rollouts(self, step, texts, completion_ids, ground_truth, qid, batch) -> None:
        count = min(self.cfg.train.log_rollouts, len(texts))
        budget = self.cfg.sampling.max_new_tokens
        append_rollouts(self.rollouts_path.parent, [RolloutRecord(
            step=step, qid=qid[i], prompt=question_text(self.examples[qid[i]]), completion=texts[i],
            ground_truth=ground_truth[i], objectives={k: v[i] for k, v in batch.objectives.items()},
            score=batch.scores[i], advantage=None, length=len(completion_ids[i]),
            truncated=len(completion_ids[i]) >= budget and completion_ids[i][-1] not in self.eos_token_ids,
            backend="trl") for i in range(count)])


def trl_dataset(examples, tokenizer, system_prompt: str | None):
    """Conversational rows for TRL and each prompt's token count. Fails if TRL's tokenization of a prompt
    (`apply_chat_template(..., tokenize=True)`, as GRPOTrainer does it) differs from what our generator feeds."""
    from datasets import Dataset

    messages = [to_chat_messages(ex, system_prompt) for ex in examples]
    ours = tokenizer(render_prompts(tokenizer, examples, system_prompt), add_special_tokens=False)["input_ids"]
    theirs = tokenizer.apply_chat_template(messages, add_generation_prompt=True, tokenize=True,
                                           return_dict=True)["input_ids"]
    for ex, our_ids, their_ids in zip(examples, ours, theirs):
        if list(our_ids) != list(their_ids):
            raise RuntimeError(f"prompt {ex.qid}: TRL would tokenize it differently from dapo-nb "
                               f"({len(our_ids)} vs {len(their_ids)} tokens); the backends would not be comparable")
    # the reward functions find each row's example (every column of the record) by its qid
    rows = [{"prompt": m, "ground_truth": ex.ground_truth, "qid": ex.qid} for m, ex in zip(messages, examples)]
    return Dataset.from_list(rows), [len(ids) for ids in ours]


# ----------------------------------------------------------------------------
# Callbacks: metrics file, held-out evaluation, stop requests, final checkpoint


def is_held_out_only(logs: dict) -> bool:
    """The logs of `train.eval_at_start` (HeldOutEval's step-0 point): held-out metrics and no training step."""
    return "eval/pass@1" in logs and "reward" not in logs


class MetricsWriter(TrainerCallback):
    """One metrics.jsonl line per generation batch in our format (and the step-0 held-out line), written by the main
    process only."""

    def __init__(self, cfg: Config, layout: BatchLayout, on_metrics):
        self.cfg, self.layout, self.on_metrics = cfg, layout, on_metrics
        self.last = time.perf_counter()

    def on_log(self, args, state, control, logs=None, **kwargs):
        if logs and "reward" in logs:
            record = self._step_record(state, logs)
        elif logs and is_held_out_only(logs):  # as backend=dapo_nb writes it: step 0, eval/* and time/eval only
            record = {"step": self.layout.steps_done(state.global_step),
                      **{k: v for k, v in logs.items() if k.startswith("eval/") or k == "time/eval"}}
        else:  # the end-of-training summary has no step metrics
            return
        if state.is_world_process_zero:
            append_metrics(self.cfg.output_dir, record)
        self.on_metrics(record)

    def _step_record(self, state, logs: dict) -> dict:
        now = time.perf_counter()
        record = {"step": self.layout.steps_done(state.global_step), "backend": "trl",
                  "scalarizer": self.cfg.reward.scalarizer, "optimizer_step": state.global_step,
                  "step_time": now - self.last}  # TRL's own step_time, when logged, replaces ours
        record.update({k: v for k, v in logs.items() if not k.startswith("rewards/score/")})
        self.last = now
        return record


class StopControl(TrainerCallback):
    """SIGTERM / Ctrl-C / train.max_minutes: every process stops after the same step, and a checkpoint is saved.

    Only between generation batches: TRL's `global_step` counts optimizer updates, `layout.updates_per_batch` to a
    batch, and a stop after some of them would save a checkpoint holding part of a step that metrics.jsonl does not
    show (checkpoint-3 after the 2 lines of steps 1-2, at 2 updates a step). `out_of_time` records whether
    train.max_minutes ended the run, which makes the last step one HeldOutEval evaluates."""

    def __init__(self, cfg: Config, layout: BatchLayout):
        self.cfg, self.layout = cfg, layout
        self.trainer = None  # set once the GRPOTrainer exists (its accelerator decides together)
        self.requested = threading.Event()
        minutes = cfg.train.max_minutes
        self.deadline = time.monotonic() + 60 * minutes if minutes > 0 else math.inf
        self.out_of_time = False

    def on_train_begin(self, args, state, control, **kwargs):
        if state.is_world_process_zero and self.cfg.train.resume and state.global_step:
            truncate_run_logs(self.cfg.output_dir, self.layout.steps_done(state.global_step))

    def on_step_end(self, args, state, control, **kwargs):
        if state.global_step % self.layout.updates_per_batch:  # inside a generation batch: never stop here
            return control
        requested, self.out_of_time = self._decide_together()
        if requested or self.out_of_time:
            control.should_training_stop = True
        if control.should_training_stop or state.global_step >= state.max_steps:
            control.should_save = True  # the end of a run always leaves a checkpoint
        return control

    def _decide_together(self) -> tuple[bool, bool]:
        """(stop requested, max_minutes spent) on any process: all of them stop after the same step, or one waits
        forever in the next all-reduce."""
        accelerator = self.trainer.accelerator
        flags = torch.tensor([float(self.requested.is_set()), float(time.monotonic() > self.deadline)],
                             device=accelerator.device)
        if accelerator.num_processes > 1:
            flags = accelerator.reduce(flags, reduction="sum")
        requested, out_of_time = flags.tolist()
        return requested > 0, out_of_time > 0


class HeldOutEval(TrainerCallback):
    """`train.eval_every` under backend=trl: backend=dapo_nb's held-out evaluation (`dapo_nb.trainer.held_out_examples`
    and `held_out_metrics`: the same prompts, reward, settings and `eval/*` / `time/eval` keys) at the same steps of
    ours (generation batches): every train.eval_every steps, after the last step (train.total_steps reached or
    train.max_minutes spent; not after a stop request), and with train.eval_at_start at step 0 before a fresh run
    trains.

    It adds its metrics to the `logs` of the step's on_log, which it sees first (build_trl_trainer puts it ahead of
    the other callbacks): MetricsWriter writes them in that step's metrics.jsonl line, after the step's timings, and
    TRL's trackers log them with the rest (as `train/eval/...`). The step-0 point goes through `trainer.log`.
    The main process evaluates the unwrapped model (generation restores its train/eval mode; evaluate() draws from
    its own seeded generator, so training's random numbers are untouched); the others wait in the broadcast of its
    numbers, so every process logs the same line and no collective of training is left waiting."""

    def __init__(self, trainer, cfg: Config, layout: BatchLayout, examples, reward: MultiObjectiveReward,
                 stopper: StopControl):
        self.trainer, self.cfg, self.layout, self.examples = trainer, cfg, layout, examples
        self.reward, self.stopper = reward, stopper

    def on_train_begin(self, args, state, control, **kwargs):
        if self.cfg.train.eval_at_start and state.global_step == 0:
            self.trainer.log(self._evaluate(step=0))  # the before point of the held-out curve

    def on_log(self, args, state, control, logs=None, **kwargs):
        if logs and "reward" in logs and self._due(state):
            logs.update(self._evaluate(step=self.layout.steps_done(state.global_step)))

    def _due(self, state) -> bool:
        step = self.layout.steps_done(state.global_step)
        last = state.global_step >= state.max_steps or self.stopper.out_of_time
        return step % self.cfg.train.eval_every == 0 or last

    def _evaluate(self, step: int) -> dict:
        accelerator = self.trainer.accelerator
        metrics = {}
        if accelerator.is_main_process:
            model = accelerator.unwrap_model(self.trainer.model)
            with accelerator.autocast():  # the precision TRL trains in
                metrics = held_out_metrics(model, self.trainer.processing_class, self.examples, self.reward, self.cfg,
                                           step=step)
        if accelerator.num_processes > 1:
            metrics = broadcast_object_list([metrics], from_process=0)[0]
        return metrics


class CheckpointGuard(TrainerCallback):
    """Disk space and the best checkpoint under backend=trl, as backend=dapo_nb handles them.

    Before TRL writes `checkpoint-N` (on_step_end, after StopControl and TRL's own flow decided to save) the free
    space is checked against the checkpoint's expected size: train.on_disk_full=stop raises the one-line
    DiskFullError with the last checkpoint intact, skip cancels this save (the final one always stops). After a
    held-out evaluation that beats the run's best (`improves_best`, train.keep_best) the weights go to
    `<checkpoint root>/best`. The main process decides and writes; its answer is broadcast, so every process stops
    or goes on together and none waits forever in the next collective."""

    def __init__(self, trainer, cfg: Config, layout: BatchLayout):
        self.trainer, self.cfg, self.layout = trainer, cfg, layout
        self.root = checkpoint_root(cfg)
        self.best = read_best(self.root / BEST_DIR)  # a fresh run moved an earlier run's best aside: None

    def on_step_end(self, args, state, control, **kwargs):
        if not control.should_save:
            return control
        problem = self._on_main_process(lambda: self._check_space(state.global_step))
        if problem is None:
            return control
        final = state.global_step >= state.max_steps or control.should_training_stop
        if final or self.cfg.train.on_disk_full != "skip":
            raise DiskFullError(*problem)
        print(f"{problem[0]}; not saved (train.on_disk_full=skip): training goes on and the next save tries again",
              flush=True)
        control.should_save = False
        return control

    def on_log(self, args, state, control, logs=None, **kwargs):
        line = {**(logs or {}), "step": self.layout.steps_done(state.global_step)}  # as MetricsWriter writes it
        if not improves_best(self.cfg.train.keep_best, line, self.best):
            return
        record = best_record(self.cfg, line)
        problem = self._on_main_process(lambda: save_best(
            self.root / BEST_DIR, self._model(), self.trainer.processing_class, record,
            merge_lora=self.cfg.model.lora.merge_on_save))
        if problem is None:
            self.best = record
        elif self.cfg.train.on_disk_full != "skip":
            raise DiskFullError(*problem)
        else:
            print(f"{problem[0]}; not saved (train.on_disk_full=skip): training goes on", flush=True)

    def _model(self):
        return self.trainer.accelerator.unwrap_model(self.trainer.model)

    def _check_space(self, global_step: int) -> None:
        """DiskFullError unless checkpoint-<global_step> fits the free space (`expected_checkpoint_bytes`)."""
        previous = latest_trl_checkpoint(self.root)
        optimizer = self.trainer.optimizer if self.cfg.train.save_optimizer else None
        needed = expected_checkpoint_bytes(self._model(), optimizer, previous=previous)
        intact = f"the last checkpoint {previous.name} is intact" if previous else "no checkpoint of this run was saved yet"
        ensure_free_space(self.root / f"checkpoint-{global_step}", needed, intact)

    def _on_main_process(self, work) -> tuple[str, str] | None:
        """Run `work` on the main process; None when it succeeded, else its DiskFullError's (reason, fix), the same
        answer on every process."""
        accelerator = self.trainer.accelerator
        problem = None
        if accelerator.is_main_process:
            try:
                work()
            except DiskFullError as err:
                problem = (err.reason, err.fix)
        if accelerator.num_processes > 1:
            problem = broadcast_object_list([problem], from_process=0)[0]
        return problem


def disk_full_during_save(err: BaseException, root: Path) -> DiskFullError | None:
    """The DiskFullError for an error of TRL's training loop that a full disk caused (`is_disk_full`: TRL writes
    checkpoint-N in place, with no temporary folder), after deleting the checkpoint-N folders it left without
    trainer_state.json (TRL writes that last); None for any other error."""
    if isinstance(err, DiskFullError) or not is_disk_full(err, root):
        return None
    import shutil

    half = [p for p in Path(root).glob("checkpoint-*") if p.is_dir() and not (p / STATE_FILE).is_file()]
    for path in half:
        shutil.rmtree(path, ignore_errors=True)
    last = latest_trl_checkpoint(root)
    message = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
    return DiskFullError(f"the disk filled up while backend=trl wrote to {root} ({message}); "
                         + (f"the half-written {', '.join(p.name for p in half)} {'was' if len(half) == 1 else 'were'} "
                            "removed; " if half else "")
                         + (f"the last checkpoint {last.name} is intact" if last else "no checkpoint of this run was saved"),
                         DISK_FULL_FIX)


def check_eval_placement(cfg: Config, trainer) -> None:
    """train.eval_every generates with the whole model on the main process alone: refuse sharded training."""
    if cfg.train.eval_every and (trainer.is_fsdp_enabled or is_deepspeed_zero3_enabled()):
        raise ConfigError(f"train.eval_every={cfg.train.eval_every} evaluates the whole model on the main process, "
                          "which FSDP / DeepSpeed ZeRO-3 shard over processes; set train.eval_every=0 and evaluate "
                          "the checkpoints with `dapo-nb eval`")


# ----------------------------------------------------------------------------
# Building and running


def parameter_digest(model) -> str:
    """sha256 of every parameter's bytes in name order: equal digests = identical weights."""
    digest = hashlib.sha256()
    for name, param in sorted(model.named_parameters()):
        digest.update(name.encode())
        digest.update(param.detach().to("cpu", torch.float32).contiguous().numpy().tobytes())
    return digest.hexdigest()


def build_trl_trainer(cfg: Config, *, model=None, tokenizer=None, reward: MultiObjectiveReward | None = None,
                      callbacks=(), on_metrics=None):
    """A ready `trl.GRPOTrainer` for `cfg` (plus the reward adapter); `train_with_trl` runs it."""
    from accelerate import PartialState
    from trl import GRPOConfig, GRPOTrainer

    from .models import policy_from_config

    cfg = cfg.validate()
    check_trl_config(cfg)
    if cfg.train.threads:
        torch.set_num_threads(cfg.train.threads)
    use_cpu = not torch.cuda.is_available()
    state = PartialState(cpu=use_cpu)  # cpu=True: several CPU processes form a gloo group (else each runs alone)
    layout = batch_layout(cfg, state.num_processes)
    if state.is_main_process:
        print(f"backend=trl: {state.num_processes} process(es), {state.distributed_type.value}"
              f"{f' ({state.backend})' if state.backend else ''}; per process {layout.per_device_batch} completions "
              f"x {layout.grad_accum} accumulation per update, {layout.updates_per_batch} update(s) per batch", flush=True)
    examples = load_prompts_from_config(cfg.data, "train")  # data and reward first: their errors come before the load
    reward = reward or reward_from_config(cfg)
    reward.check_columns(examples)
    eval_examples = held_out_examples(cfg)  # train.eval_every: held-out prompts (None = no eval during training)
    if eval_examples is not None:
        reward.check_columns(eval_examples)
    resume_from = last_checkpoint(cfg) if cfg.train.resume else None
    if resume_from is not None:
        require_optimizer_state(resume_from)  # TRL would silently start a fresh AdamW from a save_only_model checkpoint
    resume_step = checkpoint_step(resume_from) if resume_from else 0  # 0: a fresh run
    if model is None:
        model, tokenizer = policy_from_config(cfg.model)
    dataset, prompt_lengths = trl_dataset(examples, tokenizer, cfg.data.system_prompt)
    too_long = sum(n > cfg.sampling.context_max_len for n in prompt_lengths)
    if too_long and state.is_main_process:
        warnings.warn(f"{too_long} of {len(examples)} prompts in {cfg.data.train_path} are longer than "
                      f"sampling.context_max_len={cfg.sampling.context_max_len} tokens; TRL does not truncate "
                      "prompts, so they are trained on whole", stacklevel=2)

    adapter = TRLRewardAdapter(reward, cfg, layout, examples, eos_token_ids=frozenset(eos_token_ids(model, tokenizer)))
    args = GRPOConfig(**grpo_config_kwargs(cfg, layout, str(checkpoint_root(cfg)), use_cpu),
                      reward_weights=adapter.initial_weights, multi_objective_aggregation=adapter.aggregation)
    peft_config = None
    if cfg.model.lora.r > 0 and not hasattr(model, "disable_adapter"):
        peft_config = lora_config(cfg.model.lora)

    if state.is_main_process:
        cfg.output_dir.mkdir(parents=True, exist_ok=True)
        if not resume_step:  # fresh, or train.resume without a checkpoint: an earlier run's files are kept aside
            archive_run_logs(cfg.output_dir)
            archive_checkpoints(checkpoint_root(cfg), cfg.train.keep_previous_runs)
        (cfg.output_dir / "config.yaml").write_text(to_yaml(cfg))
        prepare_trl_trackers(cfg, resume_step)  # train.report_to: where TRL's TensorBoard / W&B write, W&B run id
        adapter.rollouts_path = cfg.output_dir / "rollouts.jsonl"
    state.wait_for_everyone()

    stopper = StopControl(cfg, layout)
    writer = MetricsWriter(cfg, layout, on_metrics or (lambda record: None))
    trainer = GRPOTrainer(model=model, reward_funcs=adapter.functions, args=args,
                          train_dataset=dataset,
                          processing_class=tokenizer, peft_config=peft_config,
                          callbacks=[writer, stopper, *callbacks])
    stopper.trainer = adapter.trainer = trainer
    trainer.add_callback(CheckpointGuard(trainer, cfg, layout))  # after StopControl: sees its decision to save
    if eval_examples is not None:
        check_eval_placement(cfg, trainer)
        # first in line: its on_log adds the held-out metrics before the trackers and MetricsWriter see the logs
        trainer.callback_handler.callbacks.insert(0, HeldOutEval(trainer, cfg, layout, eval_examples, reward, stopper))
    adapt_trl_callbacks(trainer, cfg, resume_step)  # TensorBoard purge_step on resume, a new Trackio run when fresh
    trainer.dapo_nb_stopper, trainer.dapo_nb_resume_from = stopper, resume_from
    return trainer, adapter


def train_with_trl(cfg: Config, *, model=None, tokenizer=None, reward: MultiObjectiveReward | None = None,
                   callbacks=()) -> list[dict]:
    """Train with TRL as `cfg` says; returns the metrics of each generation batch (also in runs/<run>/metrics.jsonl)."""
    from accelerate.utils import gather_object

    history: list[dict] = []
    trainer, _ = build_trl_trainer(cfg, model=model, tokenizer=tokenizer, reward=reward, callbacks=callbacks,
                                   on_metrics=history.append)
    start_from = trainer.dapo_nb_resume_from
    if cfg.train.resume and start_from is None:
        print(f"train.resume: no TRL checkpoint under {trainer.args.output_dir}; starting at step 0")
    restore = install_stop_handlers(trainer.dapo_nb_stopper.requested, lambda: "the current step")
    try:
        trainer.train(resume_from_checkpoint=str(start_from) if start_from else None)
    except Exception as err:
        disk_full = disk_full_during_save(err, checkpoint_root(cfg)) if trainer.accelerator.is_main_process else None
        if disk_full is not None:
            raise disk_full from err
        raise
    finally:
        restore()
    digests = gather_object([parameter_digest(trainer.accelerator.unwrap_model(trainer.model))])
    if trainer.accelerator.is_main_process:
        in_sync = len(set(digests)) == 1
        (cfg.output_dir / "replicas.json").write_text(json.dumps(
            {"processes": len(digests), "parameter_sha256": digests, "in_sync": in_sync,
             "optimizer_steps": trainer.state.global_step}, indent=1) + "\n")
        if not in_sync:
            raise RuntimeError(f"data-parallel replicas diverged (parameter digests {digests}); see replicas.json")
    return history


def last_checkpoint(cfg: Config) -> Path | None:
    """The newest TRL checkpoint of this run, if any."""
    return latest_trl_checkpoint(checkpoint_root(cfg))


def checkpoint_step(path: Path) -> int:
    """TRL's `global_step` (optimizer updates) of a `checkpoint-N` folder: N."""
    return int(Path(path).name.rsplit("-", 1)[1])
