"""A training step on an idle machine vs the same step while another process keeps one core busy, per thread count.

    .venv/bin/python benchmarks/bench_busy.py [--threads 1,2,0] [--steps 2] [--prompts 2] [--group-size 4]
                                             [--max-new-tokens 32] [--rounds 2]

Why: torch runs one OpenMP thread per core and its parallel regions end at a barrier, so when another process takes
a core, every region waits for the thread that lost its core; on the 2-core development machine a step was once
measured at 303 s instead of ~15 s that way. This script measures what each `train.threads` value costs on an idle
machine and how much one competing busy process (a pure-Python loop, the lightest kind of neighbour) slows it.
`--threads 0` is the trainer's default (see `dapo_nb.trainer.default_threads`).

Each (threads, idle|busy) contender runs in its own subprocess: load the embedded model, one untimed warm-up step,
then `--steps` timed `Trainer.train_step()` calls (2 prompts x G=4 x 32 tokens by default, dynamic sampling off).
The contenders alternate for `--rounds` rounds. Printed: median seconds per step for each, then one JSON line with
`slowdown_busy_over_idle` per thread setting (target: at most about 2 for the default).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time

CHILD = r"""
import json, sys, tempfile, time
from dapo_nb.config import load_config
from dapo_nb.trainer import Trainer
threads, steps, prompts, group, tokens = map(int, sys.argv[1:6])
out = tempfile.mkdtemp()
cfg = load_config(overrides=[f"train.threads={threads}", f"ppo.batch_size={prompts}", f"dapo.group_size={group}",
                             f"sampling.max_new_tokens={tokens}", "dapo.dynamic_sampling=false", "train.save_every=0",
                             f"train.output_dir={out}", f"train.checkpoint_dir={out}", "train.log_rollouts=0"])
trainer = Trainer(cfg)
import torch
trainer.train_step()  # warm-up
times = []
for _ in range(steps):
    start = time.perf_counter()
    trainer.train_step()
    times.append(time.perf_counter() - start)
print("RESULT " + json.dumps({"threads": torch.get_num_threads(), "times": times}))
"""

BUSY = "while True: pass"


def run(threads: int, busy: bool, args) -> dict:
    neighbour = subprocess.Popen([sys.executable, "-c", BUSY]) if busy else None
    try:
        time.sleep(0.5 if busy else 0)
        env = {k: v for k, v in os.environ.items() if k not in ("OMP_NUM_THREADS", "MKL_NUM_THREADS")}
        proc = subprocess.run([sys.executable, "-c", CHILD, str(threads), str(args.steps), str(args.prompts),
                               str(args.group_size), str(args.max_new_tokens)],
                              capture_output=True, text=True, env=env, timeout=1800)
    finally:
        if neighbour:
            neighbour.kill()
            neighbour.wait()
    line = next((l for l in proc.stdout.splitlines() if l.startswith("RESULT ")), None)
    if line is None:
        raise RuntimeError(f"child failed (threads={threads}, busy={busy}):\n{proc.stderr[-3000:]}")
    return json.loads(line[len("RESULT "):])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", default="1,2,0", help="train.threads values to compare (0 = the default)")
    parser.add_argument("--steps", type=int, default=2)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--prompts", type=int, default=2)
    parser.add_argument("--group-size", type=int, default=4)
    parser.add_argument("--max-new-tokens", type=int, default=32)
    args = parser.parse_args()
    settings = [int(t) for t in args.threads.split(",")]
    times: dict[tuple[int, bool], list[float]] = {}
    used: dict[int, int] = {}
    for round_ in range(args.rounds):
        for threads in settings:
            for busy in (False, True):
                result = run(threads, busy, args)
                used[threads] = result["threads"]
                times.setdefault((threads, busy), []).extend(result["times"])
                print(f"round {round_} train.threads={threads} (torch {result['threads']}) "
                      f"{'busy' if busy else 'idle'}: {', '.join(f'{t:.2f}' for t in result['times'])} s/step",
                      flush=True)
    summary = {"cores": os.cpu_count(), "load_average": os.getloadavg()[0], "settings": {}}
    for threads in settings:
        idle, busy = statistics.median(times[(threads, False)]), statistics.median(times[(threads, True)])
        summary["settings"][str(threads)] = {"torch_threads": used[threads], "idle_s_per_step": round(idle, 2),
                                             "busy_s_per_step": round(busy, 2),
                                             "slowdown_busy_over_idle": round(busy / idle, 2)}
    print(json.dumps(summary))


if __name__ == "__main__":
    main()
