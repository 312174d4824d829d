"""Training throughput: our DAPO trainer vs TRL's `GRPOTrainer`, same model, data, reward and budget.

    .venv/bin/python benchmarks/bench_trainer.py [--prompts 2] [--group-size 4] [--max-new-tokens 48]
                                                 [--rounds 2] [--steps 3] [--threads N] [--only ours|trl]
                                                 [--with-dynamic] [--data data/train.jsonl] [--out summary.json]
                                                 [--model embedded|tiny|smollm2-135m|smollm2-1.7b] [--tokenizer DIR]
                                                 [--device cpu|cuda] [--reward objectives|text_hash] [--micro-batch N]
                                                 [--bf16]
    .venv/bin/python benchmarks/bench_trainer.py --compare-to REV [--rounds 3] ...   # the regression guard

The regression guard (`--compare-to REV`, a commit, tag or branch): our trainer at the working tree against our
trainer at REV, alternated round by round in one run (the same settings and machine state for both), no TRL.
REV's package is exported with `git archive` into a temporary folder and put first on the child's PYTHONPATH; the
timing code is this file's. The summary's `ratio_vs_rev` = completions/s of the working tree / REV's (> 1: faster
now), with `ratio_vs_rev_cpu` per CPU second. Run it before resolving any change to the hot path (generation,
scoring, update, thread handling): a ratio below about 0.95 over 3 rounds is a regression to explain.

What is compared (one optimizer step each = `--prompts` prompts x `--group-size` completions):
  ours  `dapo_nb.trainer.Trainer.train_step()`: batched rollouts with behaviour log-probs, our multi-objective
        reward, one token-mean DAPO update (eps 0.2 / 0.28). Dynamic sampling is OFF (`dapo.dynamic_sampling=false`)
        so both do the same work per step: TRL has no dynamic sampling. `--with-dynamic` adds a third contender,
        `ours_ds`, with it on: it may sample several batches per step (completions/s counts all of them) and
        drop groups without signal (`trained_completions_per_s` counts only the completions it trained on).
  trl   TRL's `GRPOTrainer` with `loss_type="dapo"`, `epsilon=0.2`, `epsilon_high=0.28`, `beta=0.0`,
        `num_iterations=1`, `per_device_train_batch_size = prompts x G` (or `--micro-batch`, with gradient
        accumulation up to prompts x G: one generation batch = one optimizer step either way),
        `use_cpu` on the CPU only, `bf16=False`, `gradient_checkpointing=False`, no vLLM, no checkpoints, no reports.
Shared: the model in float32 (TRL loads it by path), the same prompts in file order (no shuffling, so step k sees
the same prompts in both), the same chat rendering (checked token for token), the same reward, sampling at
temperature 1, the same lr (constant), grad clipping 1.0, micro-batch, torch threads and seed.

Precision (`--bf16`): both in bf16 mixed precision, the weights and optimizer still float32: ours with
`model.autocast=bf16` (rollouts and update forwards under bf16 autocast), TRL with `bf16=True` (its default:
Accelerate wraps the model's forward in bf16 autocast, generation included). Without it both compute in float32. Ours
reports `rollout_update_logprob_gap`, the mean |update - rollout| log-prob of a token before the first optimizer
update (`logprobs/update_vs_rollout_abs_diff`): below 1e-4 in float32, what the lower precision costs under `--bf16`.

The model (`--model`): `embedded` is the embedded SmolLM2-135M-Instruct (real weights). `tiny` (hidden 32, 2 layers),
`smollm2-135m` and `smollm2-1.7b` are random-weight models built from a config of that architecture with the
embedded tokenizer (`--tokenizer DIR`, default the embedded model's folder): built once in a subprocess, saved to a
temporary folder, given by path to both contenders, deleted at the end. Random weights rarely emit EOS, so their
completions run to the token budget: fine for throughput, useless for learning. Their rewards never vary with the
`objectives` reward (correctness + format: always 0), so use `--reward text_hash` with them: a stable hash of the
completion text in [0, 1), so no group has zero reward std and every step trains on every group.

The device (`--device`): `cpu` (the default; CUDA is hidden from the contenders) or `cuda` (one GPU; torch threads
left at torch's default unless `--threads` is given). On `cuda` each contender also reports its peak GPU memory
(`torch.cuda.max_memory_allocated()` over the timed steps, reset after the warm-up) and the card's name.
`benchmarks/bench_gpu.py` (`make bench-gpu`) runs the GPU comparison with this script.

How it runs: every contender runs in its own subprocess (so peak RSS, `ru_maxrss`, is its own), for `--rounds`
rounds, alternating ours / trl (who goes first rotates each round, so an order effect cannot pass for a speed
difference), because this shared machine is noisy. In each subprocess one untimed warm-up
step is followed by `--steps` timed steps; the time of a step runs from the end of the previous step to the end
of this one (everything the trainer does per step; model loading and our final checkpoint are excluded).

How to read the output: one line per contender and round (s/step, completions/s, tokens/s, mean completion
length), then one JSON line. `ratio_completions_per_s` = ours / trl (target >= 2). Sampled completion lengths
differ from run to run, and a shorter completion is cheaper, so also compare `mean_length` and
`ratio_tokens_per_s`. CPU seconds (`time.process_time()`, all threads of the process) are printed beside wall
seconds: at `--threads 1` they measure the work done and move less with the machine's load than wall time, so
`ratio_completions_per_cpu_s` is the steadier ratio on a busy machine. `time_share` splits a step into
generation, reward, the rest of scoring (`other_scoring`: TRL's log-prob and advantage work before the update)
and the update (forward + backward + AdamW); the largest share is the next thing to optimize;
`seconds_per_step_by_phase` gives the same split in seconds and `generation_tokens_per_s` is generated tokens per
second of generation. `load` is the machine's load average around each run; `same_prompts_each_step` checks both
trained on the same prompts.

Threads: on a machine that other work keeps busy, torch's OpenMP threads wait on each other when a core is
taken away; with 2 threads on 2 busy cores we measured generation 5x slower than with 1 thread. Compare at
`--threads 1` on a loaded machine, and at the default (one thread per core) on an idle one.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import shutil
import subprocess
import sys
import tempfile
import time
import zlib
from dataclasses import asdict, dataclass
from pathlib import Path

RESULT_TAG = "BENCH_RESULT "
WARMUP_STEPS = 1
PHASES = ("generation", "reward", "other_scoring", "update")
GAP = "logprobs/update_vs_rollout_abs_diff"  # our metric: mean |update - rollout| log-prob (~0 in float32)
REWARDS = ("objectives", "text_hash")

# Random-weight models: LlamaConfig fields of the real architectures (vocabulary, special tokens: the tokenizer's).
ARCHITECTURES = {
    "tiny": dict(hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4,
                 num_key_value_heads=2, max_position_embeddings=512, rope_theta=10_000.0),
    "smollm2-135m": dict(hidden_size=576, intermediate_size=1536, num_hidden_layers=30, num_attention_heads=9,
                         num_key_value_heads=3, max_position_embeddings=8192, rope_theta=100_000.0),
    "smollm2-1.7b": dict(hidden_size=2048, intermediate_size=8192, num_hidden_layers=24, num_attention_heads=32,
                         num_key_value_heads=32, max_position_embeddings=8192, rope_theta=130_000.0),
}
MODELS = ("embedded", *ARCHITECTURES)


@dataclass
class Settings:
    """What every contender is given; sent to each subprocess as JSON."""

    data: str
    prompts: int
    group_size: int
    max_new_tokens: int
    steps: int
    threads: int
    learning_rate: float
    seed: int
    dynamic_sampling: bool = False
    model: str = ""  # model folder; "" = the embedded SmolLM2-135M-Instruct
    device: str = "cpu"  # cpu | cuda
    reward: str = "objectives"  # objectives (our correctness + format) | text_hash
    micro_batch: int = 0  # sequences per forward/backward in the update; 0 = the whole batch
    bf16: bool = False  # both in bf16 mixed precision (float32 weights): ours model.autocast=bf16, TRL bf16=True


# ----------------------------------------------------------------------------
# Timing helpers (used inside the subprocesses)


Span = tuple[float, float]  # (wall seconds, CPU seconds of this process)


_CUDA = False  # set in a contender's process on --device cuda: clocks wait for the GPU first


def clock() -> Span:
    """Wall time and this process's CPU time (all threads), in seconds (after the GPU's queued work, on cuda)."""
    if _CUDA:
        import torch

        torch.cuda.synchronize()
    return time.perf_counter(), time.process_time()


def since(start: Span) -> Span:
    """(wall, CPU) seconds elapsed since `start`."""
    wall, cpu = clock()
    return wall - start[0], cpu - start[1]


def timed(fn, bucket: list[Span]):
    """Wrap `fn` so each call appends its (wall, CPU) seconds to `bucket`."""

    def wrapper(*args, **kwargs):
        start = clock()
        try:
            return fn(*args, **kwargs)
        finally:
            bucket.append(since(start))

    return wrapper


def total(bucket: list[Span]) -> Span:
    """Summed (wall, CPU) seconds of a bucket."""
    return sum(w for w, _ in bucket), sum(c for _, c in bucket)


def peak_rss_mib() -> float:
    """Peak resident memory of this process in MiB (Linux reports ru_maxrss in KiB)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def reset_peak_gpu_memory() -> None:
    """Start measuring peak GPU memory from here (no-op on the CPU)."""
    if _CUDA:
        import torch

        torch.cuda.reset_peak_memory_stats()


def peak_gpu_mib() -> float | None:
    """Peak GPU memory allocated by torch since the last reset, in MiB; None on the CPU."""
    if not _CUDA:
        return None
    import torch

    return torch.cuda.max_memory_allocated() / 2**20


def environment(device: str) -> dict:
    """The device's name and the versions that matter, as this process sees them."""
    import importlib.metadata

    import torch
    import transformers

    try:
        trl_version = importlib.metadata.version("trl")
    except importlib.metadata.PackageNotFoundError:
        trl_version = None
    name = torch.cuda.get_device_name() if device == "cuda" else (platform.processor() or platform.machine())
    return {"device_name": name, "python": platform.python_version(), "torch": torch.__version__,
            "transformers": transformers.__version__, "trl": trl_version}


def text_hash(completion, ground_truth, **_):
    """A stable pseudo-random score of the completion text (crc32) in [0, 1): differs whenever texts differ."""
    return zlib.crc32(completion.encode("utf-8", "surrogatepass")) / 2**32


def make_reward(s: Settings, cfg):
    """The reward both contenders use: our correctness + format objectives, or `text_hash` alone."""
    from dapo_nb.rewards import MultiObjectiveReward, register_objective

    try:
        from dapo_nb.rewards import reward_from_config
    except ImportError:  # revisions before d661bfb (the regression guard's --compare-to) kept it in trainer.py
        from dapo_nb.trainer import reward_from_config

    if s.reward == "objectives":
        return reward_from_config(cfg)
    register_objective(text_hash, low=0.0, high=1.0, replace=True)
    return MultiObjectiveReward(objectives=["text_hash"], weights={"text_hash": 1.0})


def step_record(step: Span, generation: Span, reward: Span, scoring: Span, completions: int,
                trained_completions: int, tokens: float) -> dict:
    """One timed step; `scoring` is the whole generate-and-score phase, the update is the rest of the step."""
    record = {"completions": completions, "trained_completions": trained_completions, "tokens": tokens}
    for prefix, i in (("", 0), ("cpu_", 1)):  # wall seconds, then CPU seconds
        record[prefix + "seconds"] = step[i]
        record[prefix + "generation"] = generation[i]
        record[prefix + "reward"] = reward[i]
        record[prefix + "other_scoring"] = max(scoring[i] - generation[i] - reward[i], 0.0)
        record[prefix + "update"] = max(step[i] - scoring[i], 0.0)
    return record


# ----------------------------------------------------------------------------
# Contender: our trainer


def run_ours(s: Settings, workdir: Path) -> dict:
    """Warm-up + timed `Trainer.train_step()` calls (no checkpoint is written: train() is not called)."""
    import torch

    import dapo_nb.trainer as trainer_module
    from dapo_nb.config import ModelConfig, load_config

    try:
        from dapo_nb.models import policy_from_config
    except ImportError:  # revisions before 95a935f (the regression guard's --compare-to) spelled the options out
        from dapo_nb.models import load_policy

        def policy_from_config(m):
            return load_policy(m.pretrained_model_name_or_path, force_float32=m.force_float32, dtype=m.dtype,
                               device_map=m.device_map, gradient_checkpointing=m.gradient_checkpointing,
                               trust_remote_code=m.trust_remote_code)

    if s.threads:
        torch.set_num_threads(s.threads)
    cfg = load_config(overrides=[
        f"data.train_path={s.data}", "data.shuffle=false", f"ppo.batch_size={s.prompts}",
        f"dapo.group_size={s.group_size}", f"sampling.max_new_tokens={s.max_new_tokens}",
        f"dapo.dynamic_sampling={str(s.dynamic_sampling).lower()}", f"train.total_steps={WARMUP_STEPS + s.steps}",
        "train.save_every=0", f"train.output_dir={workdir / 'run'}", f"train.checkpoint_dir={workdir / 'ckpt'}",
        f"ppo.learning_rate={s.learning_rate}", f"train.seed={s.seed}", "train.log_rollouts=0",
        f"model.pretrained_model_name_or_path={s.model or 'default'}", "model.force_float32=true",
        f"ppo.micro_batch_size={s.micro_batch}", *([f"train.threads={s.threads}"] if s.threads else []),
        # as TRL is given: temperature 1 and one optimizer update per generation batch (not the recipe's 0.7 and 2)
        "sampling.temperature=1.0", "ppo.mini_batch_size=0",
        # the precision: float32, or bf16 autocast with --bf16 (revisions before model.autocast are float32 only)
        *([f"model.autocast={'bf16' if s.bf16 else 'none'}"] if hasattr(ModelConfig, "autocast") or s.bf16 else []),
    ])
    t0 = time.perf_counter()
    model, tokenizer = policy_from_config(cfg.model)  # load_policy: onto the first GPU when there is one
    if model.device.type != s.device:
        raise RuntimeError(f"our model landed on {model.device}, not on --device {s.device}")
    trainer = trainer_module.Trainer(cfg, model=model, tokenizer=tokenizer, reward=make_reward(s, cfg))
    setup_s = time.perf_counter() - t0
    generation_s: list[Span] = []
    reward_s: list[Span] = []
    scoring_s: list[Span] = []
    qids: list[str] = []
    score = trainer.reward.score

    def score_and_record(*args, **kwargs):
        qids.extend(info["qid"] for info in kwargs.get("infos") or [])
        return score(*args, **kwargs)

    trainer.reward.score = timed(score_and_record, reward_s)
    trainer.collect = timed(trainer.collect, scoring_s)  # sampling (+ dynamic-sampling retries) and scoring
    if hasattr(trainer_module, "generate_rollouts"):  # the generator as the trainer module calls it
        trainer_module.generate_rollouts = timed(trainer_module.generate_rollouts, generation_s)

    steps = []
    for step in range(WARMUP_STEPS + s.steps):
        for bucket in (generation_s, reward_s, scoring_s, qids):
            bucket.clear()
        start = clock()
        m = trainer.train_step()
        elapsed = since(start)
        if step < WARMUP_STEPS:
            reset_peak_gpu_memory()  # the timed steps' peak only
            continue
        reward, scoring = total(reward_s), total(scoring_s)
        generation = total(generation_s) if generation_s else (scoring[0] - reward[0], scoring[1] - reward[1])
        steps.append(step_record(
            elapsed, generation, reward, scoring,
            completions=int(m.get("dynamic/num_gen_batches", 1)) * s.prompts * s.group_size,
            trained_completions=int(m.get("dynamic/groups_kept", s.prompts)) * s.group_size,
            tokens=m["num_generated_tokens"]))
        steps[-1]["own_metrics"] = {k: m[k] for k in m if k.startswith("time/") or k in ("step_time", GAP)}
        steps[-1]["reward_mean"] = m["reward"]
        steps[-1]["qids"] = sorted(set(qids))
    return {"steps": steps, "setup_s": setup_s, "threads": torch.get_num_threads(), "peak_gpu_mib": peak_gpu_mib()}


# ----------------------------------------------------------------------------
# Contender: TRL GRPOTrainer


def trl_reward_function(reward, qids_seen: list[list[str]]):
    """Our MultiObjectiveReward as a TRL reward function; records the qids of each call in `qids_seen`."""

    def dapo_nb_reward(prompts, completions, completion_ids, ground_truth, qid, **_):
        qids_seen.append(sorted(set(qid)))
        texts = [c[-1]["content"] if isinstance(c, list) else c for c in completions]
        return reward.score(texts, list(ground_truth), num_tokens=[len(ids) for ids in completion_ids]).scores

    return dapo_nb_reward


def run_trl(s: Settings, workdir: Path) -> dict:
    """Warm-up + timed optimizer steps of TRL's GRPOTrainer, timed with a callback and wrapped methods."""
    import torch
    from transformers import TrainerCallback
    from trl import GRPOConfig, GRPOTrainer

    from dapo_nb.config import load_config
    from dapo_nb.data import load_prompts
    from dapo_nb.models import embedded_model_dir, load_tokenizer
    from dapo_nb.trl_backend import trl_dataset  # checks TRL tokenizes each prompt exactly as our trainer does

    if s.threads:
        torch.set_num_threads(s.threads)
    model_dir = s.model or str(embedded_model_dir())
    tokenizer = load_tokenizer(model_dir)
    ours_cfg = load_config(overrides=[f"sampling.max_new_tokens={s.max_new_tokens}"])
    n = s.prompts * s.group_size
    micro = s.micro_batch or n  # per-device batch; gradient accumulation makes up one generation batch
    if n % micro:
        raise ValueError(f"--micro-batch {micro} must divide prompts x G = {n}")
    args = GRPOConfig(
        output_dir=str(workdir / "trl"), report_to="none", save_strategy="no", logging_steps=1, disable_tqdm=True,
        use_cpu=s.device == "cpu", bf16=s.bf16, fp16=False, gradient_checkpointing=False, use_vllm=False,
        model_init_kwargs={"dtype": torch.float32},
        per_device_train_batch_size=micro, gradient_accumulation_steps=n // micro,
        num_generations=s.group_size, max_completion_length=s.max_new_tokens, num_iterations=1,
        loss_type="dapo", epsilon=0.2, epsilon_high=0.28, beta=0.0, scale_rewards="group",
        mask_truncated_completions=False, temperature=1.0, top_p=1.0, top_k=0,
        learning_rate=s.learning_rate, lr_scheduler_type="constant", warmup_steps=0, weight_decay=0.0,
        max_grad_norm=ours_cfg.ppo.max_grad_norm, max_steps=WARMUP_STEPS + s.steps,
        shuffle_dataset=False, seed=s.seed, dataloader_num_workers=0, log_completions=False,
    )
    assert args.generation_batch_size == n and args.steps_per_generation == args.gradient_accumulation_steps, (
        f"TRL would not do one generation batch per optimizer step: {args.generation_batch_size=}, "
        f"{args.steps_per_generation=}, {args.gradient_accumulation_steps=}")

    class StepClock(TrainerCallback):
        """(wall, CPU) clock at each optimizer-step end, and TRL's logged metrics of each step."""

        def __init__(self):
            self.ends: list[Span] = []
            self.logs: list[dict] = []

        def on_train_begin(self, args, state, control, **kwargs):
            self.ends.append(clock())

        def on_step_end(self, args, state, control, **kwargs):  # once per optimizer step
            self.ends.append(clock())
            if len(self.ends) == WARMUP_STEPS + 1:  # the warm-up ended: measure the timed steps' peak only
                reset_peak_gpu_memory()

        def on_log(self, args, state, control, logs=None, **kwargs):
            if logs and "completions/mean_length" in logs:
                self.logs.append(dict(logs))

    t0 = time.perf_counter()
    step_clock = StepClock()
    qids_seen: list[list[str]] = []
    trainer = GRPOTrainer(model=model_dir, reward_funcs=trl_reward_function(make_reward(s, ours_cfg), qids_seen),
                          args=args, processing_class=tokenizer,
                          train_dataset=trl_dataset(load_prompts(s.data)[: s.prompts * (WARMUP_STEPS + s.steps)],
                                                    tokenizer, ours_cfg.data.system_prompt)[0],
                          callbacks=[step_clock])
    setup_s = time.perf_counter() - t0
    if trainer.model.device.type != s.device:
        raise RuntimeError(f"TRL's model landed on {trainer.model.device}, not on --device {s.device}")
    generation_s: list[Span] = []
    reward_s: list[Span] = []
    scoring_s: list[Span] = []
    trainer._generate = timed(trainer._generate, generation_s)
    trainer._calculate_rewards = timed(trainer._calculate_rewards, reward_s)
    trainer._generate_and_score_completions = timed(trainer._generate_and_score_completions, scoring_s)
    trainer.train()

    if len(step_clock.logs) != WARMUP_STEPS + s.steps or len(scoring_s) != WARMUP_STEPS + s.steps:
        raise RuntimeError(f"expected {WARMUP_STEPS + s.steps} steps, got {len(step_clock.logs)} logs and "
                           f"{len(scoring_s)} generation batches")
    steps = []
    for i in range(WARMUP_STEPS, WARMUP_STEPS + s.steps):
        logs = step_clock.logs[i]
        (wall0, cpu0), (wall1, cpu1) = step_clock.ends[i], step_clock.ends[i + 1]
        steps.append(step_record((wall1 - wall0, cpu1 - cpu0), generation_s[i], reward_s[i], scoring_s[i],
                                 completions=n, trained_completions=n, tokens=logs["completions/mean_length"] * n))
        steps[-1]["own_metrics"] = {"step_time": logs.get("step_time")}
        steps[-1]["reward_mean"] = logs.get("reward")
        steps[-1]["qids"] = qids_seen[i]
    return {"steps": steps, "setup_s": setup_s, "threads": torch.get_num_threads(), "peak_gpu_mib": peak_gpu_mib()}


CONTENDERS = {"ours": run_ours, "ours_ds": run_ours, "trl": run_trl}


# ----------------------------------------------------------------------------
# Random-weight models


def build_model(spec: dict) -> dict:
    """Save a random-weight Llama of `spec["architecture"]` with the embedded tokenizer to `spec["out"]`.

    Built on `spec["device"]` (fast initialisation on a GPU) and seeded, so every run gets the same weights. Also
    imports what the contenders will need (`spec["imports"]`) so a missing package fails here, in seconds."""
    import importlib

    import torch
    from transformers import AutoTokenizer, LlamaConfig, LlamaForCausalLM

    from dapo_nb.models import embedded_model_dir

    for module in spec["imports"]:
        importlib.import_module(module)
    t0 = time.perf_counter()
    tokenizer = AutoTokenizer.from_pretrained(spec["tokenizer"] or embedded_model_dir())
    arch = dict(ARCHITECTURES[spec["architecture"]])
    rope_theta = arch.pop("rope_theta")
    config = LlamaConfig(
        vocab_size=len(tokenizer), tie_word_embeddings=True, rms_norm_eps=1e-5,
        rope_parameters={"rope_type": "default", "rope_theta": rope_theta}, bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id, **arch)
    torch.manual_seed(spec["seed"])
    with torch.device(spec["device"]):
        model = LlamaForCausalLM(config).float()
    model.save_pretrained(spec["out"])
    tokenizer.save_pretrained(spec["out"])
    return {"parameters": sum(p.numel() for p in model.parameters()), "build_s": time.perf_counter() - t0,
            "vocab_size": config.vocab_size}


def child_main(name: str, settings_json: str) -> None:
    """Run one contender (or the model build) in this process and print its result as one tagged JSON line."""
    global _CUDA
    payload = json.loads(settings_json)
    device = payload["device"]
    if device == "cuda":
        import torch

        if not torch.cuda.is_available():
            raise SystemExit("--device cuda: torch sees no CUDA device here")
        _CUDA = True
    if name == "build":
        result = build_model(payload)
    else:
        workdir = Path(tempfile.mkdtemp(prefix=f"bench-{name}-"))
        try:
            result = CONTENDERS[name](Settings(**payload), workdir)
        finally:
            shutil.rmtree(workdir, ignore_errors=True)
    result["peak_rss_mib"] = peak_rss_mib()
    result["environment"] = environment(device)
    print(RESULT_TAG + json.dumps(result), flush=True)


# ----------------------------------------------------------------------------
# Parent: alternate the contenders, print per round, summarise


def export_revision(rev: str) -> Path:
    """The package as committed at `rev` (git archive), in a temporary folder the caller deletes."""
    root = Path(__file__).resolve().parents[1]
    folder = Path(tempfile.mkdtemp(prefix="bench-rev-"))
    archive = subprocess.run(["git", "-C", str(root), "archive", "--format=tar", rev, "dapo_nb"], capture_output=True)
    if archive.returncode:
        shutil.rmtree(folder, ignore_errors=True)
        raise SystemExit(f"--compare-to {rev}: git archive failed: {archive.stderr.decode().strip()}")
    subprocess.run(["tar", "-x", "-C", str(folder)], input=archive.stdout, check=True)
    return folder


def run_child(name: str, payload: dict, threads: int = 0, package_root: Path | None = None) -> dict:
    """Start one contender (or "build") in a fresh interpreter and parse its result line; `package_root`: import
    dapo_nb from there (the regression guard's other revision) instead of this working tree."""
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false"}
    if threads:
        env["OMP_NUM_THREADS"] = str(threads)
    if payload["device"] == "cpu":
        env["CUDA_VISIBLE_DEVICES"] = ""  # a CPU run stays on the CPU even on a GPU machine
    root = Path(__file__).resolve().parents[1]
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(package_root or root), env.get("PYTHONPATH", "")]))
    t0 = time.perf_counter()
    proc = subprocess.run([sys.executable, __file__, "--child", name, "--settings", json.dumps(payload)],
                          capture_output=True, text=True, env=env, cwd=root)
    lines = [line for line in proc.stdout.splitlines() if line.startswith(RESULT_TAG)]
    if proc.returncode != 0 or not lines:
        tail = "\n".join((proc.stdout + proc.stderr).splitlines()[-40:])
        raise RuntimeError(f"{'model build' if name == 'build' else 'contender ' + name} failed "
                           f"(exit {proc.returncode}):\n{tail}")
    result = json.loads(lines[-1][len(RESULT_TAG):])
    result["process_s"] = round(time.perf_counter() - t0, 1)  # start-up, imports and model loading included
    return result


def totals(steps: list[dict]) -> dict:
    """Summed seconds, completions, tokens and phase seconds over a list of step records."""
    keys = ("completions", "trained_completions", "tokens", "seconds", "cpu_seconds", *PHASES,
            *(f"cpu_{phase}" for phase in PHASES))
    return {k: sum(step[k] for step in steps) for k in keys}


def summarize(results: list[dict]) -> dict:
    """Throughput over every timed step of every round, phase shares, peak memory."""
    all_steps = [step for r in results for step in r["steps"]]
    t = totals(all_steps)
    peaks_gpu = [r["peak_gpu_mib"] for r in results if r.get("peak_gpu_mib") is not None]
    gaps = [step["own_metrics"][GAP] for step in all_steps if GAP in step.get("own_metrics", {})]
    return {
        "seconds_per_step": round(t["seconds"] / len(all_steps), 2),
        "completions_per_s": round(t["completions"] / t["seconds"], 3),
        "trained_completions_per_s": round(t["trained_completions"] / t["seconds"], 3),
        "tokens_per_s": round(t["tokens"] / t["seconds"], 1),
        "generation_tokens_per_s": round(t["tokens"] / t["generation"], 1) if t["generation"] else None,
        "cpu_seconds_per_step": round(t["cpu_seconds"] / len(all_steps), 2),
        "completions_per_cpu_s": round(t["completions"] / t["cpu_seconds"], 3),
        "mean_length": round(t["tokens"] / t["completions"], 1),
        "peak_rss_mib": round(max(r["peak_rss_mib"] for r in results)),
        "peak_gpu_mib": round(max(peaks_gpu)) if peaks_gpu else None,
        "time_share": {phase: round(t[phase] / t["seconds"], 3) for phase in PHASES},
        "seconds_per_step_by_phase": {phase: round(t[phase] / len(all_steps), 3) for phase in PHASES},
        "cpu_time_share": {phase: round(t[f"cpu_{phase}"] / t["cpu_seconds"], 3) for phase in PHASES},
        "seconds_per_round": [round(totals(r["steps"])["seconds"] / len(r["steps"]), 2) for r in results],
        "load_average_per_round": [r["load_average"] for r in results],
        "setup_s": round(sum(r["setup_s"] for r in results) / len(results), 1),
        "process_s_per_round": [r["process_s"] for r in results],
        "threads": results[0]["threads"],
        "rollout_update_logprob_gap": sum(gaps) / len(gaps) if gaps else None,  # ours: what bf16 costs
    }


def parser() -> argparse.ArgumentParser:
    """The command line of this script (bench_gpu.py builds its runs with it too)."""
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", default="data/train.jsonl", help="training prompts, jsonl {qid, prompt, ground_truth}")
    ap.add_argument("--prompts", type=int, default=2, help="prompts per optimizer step")
    ap.add_argument("--group-size", type=int, default=4, help="G: completions per prompt")
    ap.add_argument("--max-new-tokens", type=int, default=48, help="completion budget (TRL: max_completion_length)")
    ap.add_argument("--rounds", type=int, default=2, help="alternating rounds per contender")
    ap.add_argument("--steps", type=int, default=3, help=f"timed steps per round (after {WARMUP_STEPS} warm-up step)")
    ap.add_argument("--threads", type=int, default=0,
                    help="torch threads of both (0 = one per core on --device cpu, torch's default on cuda)")
    ap.add_argument("--lr", type=float, default=1e-6, help="learning rate of both (constant)")
    ap.add_argument("--seed", type=int, default=0, help="seed of round 0; round r uses seed + r")
    ap.add_argument("--only", choices=["ours", "trl"], help="run a single contender")
    ap.add_argument("--with-dynamic", action="store_true", help="also time ours with dynamic sampling on (ours_ds)")
    ap.add_argument("--model", choices=MODELS, default="embedded",
                    help="embedded SmolLM2-135M-Instruct, or a random-weight model of that architecture")
    ap.add_argument("--tokenizer", default="",
                    help="tokenizer folder for the random-weight models (default: the embedded model's)")
    ap.add_argument("--device", choices=["cpu", "cuda"], default="cpu", help="where both contenders train")
    ap.add_argument("--reward", choices=REWARDS, default="objectives",
                    help="objectives: our correctness + format; text_hash: a hash of the text (always varies)")
    ap.add_argument("--micro-batch", type=int, default=0,
                    help="sequences per forward/backward in the update (0 = all prompts x G at once)")
    ap.add_argument("--compare-to", metavar="REV",
                    help="regression guard: our trainer here against our trainer at git revision REV, alternated")
    ap.add_argument("--bf16", action="store_true",
                    help="both in bf16 mixed precision, weights float32 (ours model.autocast=bf16, TRL bf16=True)")
    ap.add_argument("--out", type=Path, help="also write the JSON summary to this file")
    ap.add_argument("--child", choices=[*CONTENDERS, "build"], help=argparse.SUPPRESS)
    ap.add_argument("--settings", help=argparse.SUPPRESS)
    return ap


def check_args(ap: argparse.ArgumentParser, args: argparse.Namespace) -> None:
    """Reject arguments no run could use, before anything starts."""
    if not Path(args.data).is_file():
        ap.error(f"--data {args.data} does not exist; generate it with `python -m dapo_nb.arithmetic --out-dir data`")
    if min(args.prompts, args.group_size, args.max_new_tokens, args.rounds, args.steps) < 1:
        ap.error("--prompts, --group-size, --max-new-tokens, --rounds and --steps must be >= 1")
    if args.micro_batch < 0 or (args.micro_batch and (args.prompts * args.group_size) % args.micro_batch):
        ap.error(f"--micro-batch {args.micro_batch} must divide prompts x G = {args.prompts * args.group_size}")
    if args.tokenizer and not Path(args.tokenizer, "tokenizer_config.json").is_file():
        ap.error(f"--tokenizer {args.tokenizer} has no tokenizer_config.json")


def benchmark(args: argparse.Namespace, log=print, keep_going: bool = False) -> dict:
    """Run the comparison `args` describes (see `parser()`); print per round with `log`; return the summary.

    A contender that fails raises RuntimeError, or with `keep_going` gets {"error": its last lines} in the summary
    (and no further rounds) while the others go on; the model build failing always raises."""
    threads = args.threads or (os.cpu_count() or 1 if args.device == "cpu" else 0)
    load, cores = os.getloadavg()[0], os.cpu_count() or 1
    if load > cores / 2 and args.device == "cpu":
        hint = " and torch's threads wait on each other (try --threads 1)" if threads > 1 else ""
        log(f"note: load average {load:.1f} on {cores} cores: other processes share the CPU, so the figures are "
            f"noisy{hint}; compare the ratios, CPU seconds included")

    names = [n for n in ("ours", "trl") if args.only in (None, n)]
    if args.with_dynamic and args.only != "trl":
        names.insert(1, "ours_ds")
    revision_root = None
    if args.compare_to:  # the regression guard: the working tree against REV, both our trainer
        names = ["ours", f"ours@{args.compare_to}"]
        revision_root = export_revision(args.compare_to)
    results: dict[str, list[dict]] = {name: [] for name in names}
    errors: dict[str, str] = {}
    log(f"{args.model} model on {args.device}: {args.prompts} prompts x G={args.group_size} x {args.max_new_tokens} "
        f"tokens, {threads or 'default'} threads, {args.rounds} rounds x {args.steps} timed steps "
        f"(+{WARMUP_STEPS} warm-up), {args.reward} reward, micro-batch {args.micro_batch or 'all'}, "
        f"{'bf16 mixed precision' if args.bf16 else 'float32'}; "
        f"contenders: {', '.join(names)}")
    model_dir, built = "", None
    if args.model != "embedded":
        model_dir = tempfile.mkdtemp(prefix=f"bench-model-{args.model}-")
        built = run_child("build", {"architecture": args.model, "tokenizer": str(Path(args.tokenizer).resolve())
                                    if args.tokenizer else "", "out": model_dir, "device": args.device,
                                    "seed": args.seed, "imports": ["trl", "datasets"] if "trl" in names else []},
                          threads)
        log(f"built a random-weight {args.model} ({built['parameters'] / 1e6:.1f}M parameters) in "
            f"{built['process_s']:.0f} s")
    try:
        for round_ in range(args.rounds):
            order = names[round_ % len(names):] + names[:round_ % len(names)]  # who runs first rotates: A B, B A, ...
            for name in [n for n in order if n not in errors]:
                settings = Settings(data=str(Path(args.data).resolve()), prompts=args.prompts,
                                    group_size=args.group_size, max_new_tokens=args.max_new_tokens, steps=args.steps,
                                    threads=threads, learning_rate=args.lr, seed=args.seed + round_,
                                    dynamic_sampling=name == "ours_ds", model=model_dir, device=args.device,
                                    reward=args.reward, micro_batch=args.micro_batch, bf16=args.bf16)
                load_before = os.getloadavg()[0]
                try:
                    result = run_child(name.split("@")[0], asdict(settings), threads,
                                       package_root=revision_root if "@" in name else None)
                except RuntimeError as error:
                    if not keep_going:
                        raise
                    log(f"round {round_} {name} FAILED: {error}")
                    errors[name] = str(error)[-3000:]
                    continue
                result["load_average"] = round((load_before + os.getloadavg()[0]) / 2, 1)
                results[name].append(result)
                t = totals(result["steps"])
                share = " ".join(f"{p} {t[p] / t['seconds']:.0%}/{t['cpu_' + p] / t['cpu_seconds']:.0%}"
                                 for p in PHASES)
                gpu = f"  peak GPU {result['peak_gpu_mib'] / 1024:.1f} GiB" if result.get("peak_gpu_mib") else ""
                log(f"round {round_} {name:7s} {t['seconds'] / len(result['steps']):6.2f} s/step "
                    f"(CPU {t['cpu_seconds'] / len(result['steps']):6.2f} s) "
                    f"{t['completions'] / t['seconds']:6.3f} completions/s {t['tokens'] / t['seconds']:6.1f} tokens/s "
                    f"mean length {t['tokens'] / t['completions']:5.1f}  share wall/CPU [{share}]  peak RSS "
                    f"{result['peak_rss_mib']:.0f} MiB{gpu}  load {result['load_average']}  "
                    f"process {result['process_s']:.0f} s")
    finally:
        if model_dir:
            shutil.rmtree(model_dir, ignore_errors=True)
        if revision_root:
            shutil.rmtree(revision_root, ignore_errors=True)

    if len(errors) == len(names):
        raise RuntimeError("every contender failed:\n" + "\n".join(errors.values()))
    env = next(rs[0]["environment"] for rs in results.values() if rs)
    summary: dict = {
        "settings": {"model": args.model, "device": args.device, "prompts": args.prompts, "group_size": args.group_size,
                     "max_new_tokens": args.max_new_tokens, "rounds": args.rounds, "steps": args.steps,
                     "threads": threads, "reward": args.reward, "micro_batch": args.micro_batch,
                     "bf16": args.bf16, "contenders": names},
        "device_name": env["device_name"],
        "versions": {k: env[k] for k in ("python", "torch", "transformers", "trl")},
    }
    if built:
        summary["model_parameters"] = built["parameters"]
    summary.update({name: {"error": errors[name]} if name in errors else summarize(rs) for name, rs in results.items()})
    if args.compare_to and all(name in results and name not in errors for name in names):
        now, then = summary["ours"], summary[names[1]]
        summary["ratio_vs_rev"] = round(now["completions_per_s"] / then["completions_per_s"], 3)
        summary["ratio_vs_rev_cpu"] = round(now["completions_per_cpu_s"] / then["completions_per_cpu_s"], 3)
        summary["ratio_vs_rev_per_round"] = [
            round((totals(a["steps"])["completions"] / totals(a["steps"])["seconds"])
                  / (totals(b["steps"])["completions"] / totals(b["steps"])["seconds"]), 3)
            for a, b in zip(results["ours"], results[names[1]])]
    if all(name in results and name not in errors for name in ("ours", "trl")):
        ours, trl = summary["ours"], summary["trl"]
        summary["ratio_completions_per_s"] = round(ours["completions_per_s"] / trl["completions_per_s"], 2)
        summary["ratio_tokens_per_s"] = round(ours["tokens_per_s"] / trl["tokens_per_s"], 2)
        summary["ratio_completions_per_cpu_s"] = round(ours["completions_per_cpu_s"] / trl["completions_per_cpu_s"], 2)
        summary["ratio_peak_rss"] = round(ours["peak_rss_mib"] / trl["peak_rss_mib"], 2)
        if ours["peak_gpu_mib"] and trl["peak_gpu_mib"]:
            summary["ratio_peak_gpu_memory"] = round(ours["peak_gpu_mib"] / trl["peak_gpu_mib"], 2)
        summary["target_ratio"] = 2.0
        summary["target_met"] = summary["ratio_completions_per_s"] >= 2.0
        summary["same_prompts_each_step"] = all(
            [step["qids"] for step in o["steps"]] == [step["qids"] for step in t["steps"]]
            for o, t in zip(results["ours"], results["trl"]))
    return summary


def main() -> None:
    ap = parser()
    args = ap.parse_args()
    if args.child:
        child_main(args.child, args.settings)
        return
    check_args(ap, args)
    text = json.dumps(benchmark(args, log=lambda line: print(line, flush=True)))
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(text + "\n")
    print(text)


if __name__ == "__main__":
    main()
