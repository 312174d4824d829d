"""What a study's machinery costs on this machine, and which concurrency to default to.

    .venv/bin/python benchmarks/bench_sweep.py [--steps 4] [--rounds 2] [--out benchmarks/results/bench_sweep]

1. Ray start-up: `ray.init()` of a local cluster until it runs a first task, then `ray.shutdown()` (3 times).
2. Per-trial overhead: the same tiny trial (a 2-layer random model, 1 step, 3 held-out prompts) run by
   `sweep.run_trial` directly and as a Ray task of a running cluster, alternated; the difference is Ray's share.
3. Concurrency: the recipe (the config defaults, dynamic sampling off so that every step does the same work) for
   `--steps` steps, either one run with train.threads=2, or two runs at once with train.threads=1 each, alternated
   `--rounds` times. Reported as recipe steps per minute of wall time over both arms' training (model loads
   excluded: each run's metrics give its step times), i.e. the throughput a study gets from each layout.

Prints one line per measurement and a JSON summary (also `<out>/summary.json`).
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))


def ray_startup(times: int = 3) -> list[float]:
    import ray

    out = []
    for _ in range(times):
        start = time.perf_counter()
        ray.init(include_dashboard=False, log_to_driver=False, configure_logging=False)
        ray.get(ray.remote(lambda: 1).remote())
        out.append(time.perf_counter() - start)
        ray.shutdown()
    return out


def tiny_trial(folder: Path):
    import torch
    from transformers import AutoTokenizer, LlamaConfig, LlamaForCausalLM

    from dapo_nb.models import embedded_model_dir
    from dapo_nb.sweep import Study, plan

    torch.manual_seed(0)
    tokenizer = AutoTokenizer.from_pretrained(embedded_model_dir())
    config = LlamaConfig(vocab_size=len(tokenizer), hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                         num_attention_heads=4, num_key_value_heads=2, bos_token_id=tokenizer.bos_token_id,
                         eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id,
                         tie_word_embeddings=True)
    model = folder / "tiny"
    LlamaForCausalLM(config).save_pretrained(model)
    tokenizer.save_pretrained(model)
    data = folder / "data.jsonl"
    data.write_text("".join(json.dumps({"qid": f"q{i}", "prompt": f"What is {i} + {i}?", "ground_truth": str(2 * i)})
                            + "\n" for i in range(8)))
    study = Study(base={"model.pretrained_model_name_or_path": str(model), "data.train_path": str(data),
                        "data.test_path": str(data), "sampling.max_new_tokens": 4, "ppo.batch_size": 2,
                        "dapo.group_size": 2, "dapo.dynamic_sampling": False, "train.total_steps": 1})
    study.eval.prompts = 3
    (trial,) = [t for t in plan(study, folder / "study") if t.kind == "train"]
    return study, trial


def trial_overhead(folder: Path, rounds: int) -> dict:
    import dataclasses

    import ray

    from dapo_nb.sweep import run_trial

    study, trial = tiny_trial(folder)
    plain = json.loads(json.dumps(dataclasses.asdict(study), default=str))
    ray.init(include_dashboard=False, log_to_driver=False, configure_logging=False)
    task = ray.remote(run_trial).options(num_cpus=1)
    ray.get(task.remote(trial, plain, str(folder / "study"), str(REPO)))  # warm the worker
    direct, on_ray = [], []
    for _ in range(rounds):
        start = time.perf_counter()
        run_trial(trial, plain, str(folder / "study"), str(REPO))
        direct.append(time.perf_counter() - start)
        start = time.perf_counter()
        ray.get(task.remote(trial, plain, str(folder / "study"), str(REPO)))
        on_ray.append(time.perf_counter() - start)
        print(f"tiny trial: direct {direct[-1]:.2f} s, as a Ray task {on_ray[-1]:.2f} s", flush=True)
    ray.shutdown()
    return {"direct_s": direct, "ray_task_s": on_ray,
            "overhead_s": statistics.median(on_ray) - statistics.median(direct)}


def recipe_runs(folder: Path, threads: int, copies: int, steps: int) -> float:
    """Train `copies` recipe runs at once with `threads` each; returns recipe steps per wall minute of training."""
    processes, outputs = [], []
    for i in range(copies):
        out = folder / f"t{threads}-c{i}-{time.monotonic_ns()}"
        outputs.append(out)
        processes.append(subprocess.Popen(
            [sys.executable, "-m", "dapo_nb.cli", "train", f"train.total_steps={steps}", f"train.threads={threads}",
             "dapo.dynamic_sampling=false", "train.save_every=0", f"train.output_dir={out}",
             f"train.checkpoint_dir={out}/ckpt", f"train.run_name=bench{i}"], cwd=REPO,
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL))
    for process in processes:
        if process.wait():
            raise RuntimeError("a recipe run failed")
    rows = [[json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()] for out in outputs]
    # the overlapping part: from the latest first-step start to the earliest end; steps inside it per minute
    wall = max(sum(r["step_time"] for r in run) for run in rows)
    return copies * steps / (wall / 60)


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--steps", type=int, default=4)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--out", default=str(REPO / "benchmarks" / "results" / "bench_sweep"))
    args = parser.parse_args(argv)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    summary: dict = {}
    startup = ray_startup()
    print(f"ray start-up to a first task: {', '.join(f'{s:.1f}' for s in startup)} s", flush=True)
    summary["ray_startup_s"] = startup
    with tempfile.TemporaryDirectory() as tmp:
        summary["trial"] = trial_overhead(Path(tmp), args.rounds)
    print(f"per-trial overhead of Ray (median): {summary['trial']['overhead_s']:+.2f} s", flush=True)
    layouts = {"1 run x 2 threads": (2, 1), "2 runs x 1 thread": (1, 2)}
    rates: dict = {name: [] for name in layouts}
    with tempfile.TemporaryDirectory() as tmp:
        for _ in range(args.rounds):
            for name, (threads, copies) in layouts.items():
                rates[name].append(recipe_runs(Path(tmp), threads, copies, args.steps))
                print(f"{name}: {rates[name][-1]:.2f} recipe steps / min", flush=True)
    summary["steps_per_minute"] = rates
    ratio = statistics.median(rates["2 runs x 1 thread"]) / statistics.median(rates["1 run x 2 threads"])
    summary["two_single_thread_runs_over_one_two_thread_run"] = ratio
    print(f"2 x 1 thread / 1 x 2 threads: {ratio:.2f}x the steps per minute", flush=True)
    (out / "summary.json").write_text(json.dumps(summary, indent=1))
    print(json.dumps(summary))


if __name__ == "__main__":
    main()
