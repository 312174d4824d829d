"""The update pass's log-probs: fused, chunked output head vs the model's full logits, time and peak memory.

    .venv/bin/python benchmarks/bench_logprobs.py [--prompts 2] [--group-size 4] [--max-new-tokens 48] [--rounds 5]
                                                  [--model default] [--threads N]

Both contenders run `generate.completion_logprobs` forward + backward on the same rollout (sampled once from the
model): `fused` takes the decoder's hidden states to `dapo.linear_token_logprobs` (what the trainer uses), `full`
takes the model's (n, C, V) logits to `dapo.token_logprobs` (the path for models whose head is not a plain linear
map). They alternate `--rounds` times; the JSON line gives median seconds and `ratio_fused_over_full` (below 1 =
fused faster). On CUDA it also gives each one's peak memory above the model.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time

import torch

from dapo_nb import generate
from dapo_nb.data import load_prompts, render_prompts
from dapo_nb.models import load_policy


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="default")
    parser.add_argument("--data", default="data/train.jsonl")
    parser.add_argument("--prompts", type=int, default=2)
    parser.add_argument("--group-size", type=int, default=4)
    parser.add_argument("--max-new-tokens", type=int, default=48)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--threads", type=int, default=0)
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    model, tokenizer = load_policy(args.model)
    prompts = render_prompts(tokenizer, load_prompts(args.data)[: args.prompts], None)
    rollout = generate.generate_rollouts(model, tokenizer, prompts, group_size=args.group_size,
                                         max_new_tokens=args.max_new_tokens,
                                         generator=torch.Generator(model.device).manual_seed(0))
    rows = torch.arange(len(rollout), device=model.device)
    assert generate.fused_output_head(model) is not None, "this model's head is not fusable"
    cuda = model.device.type == "cuda"

    def run(fused: bool) -> tuple[float, float]:
        generate._FUSABLE[model] = fused  # which path completion_logprobs takes
        model.zero_grad(set_to_none=True)
        if cuda:
            torch.cuda.synchronize()
            torch.cuda.reset_peak_memory_stats()
        base = torch.cuda.memory_allocated() if cuda else 0
        start = time.perf_counter()
        logp = generate.completion_logprobs(model, rollout, rows)
        (logp * rollout.completion_mask).sum().backward()
        if cuda:
            torch.cuda.synchronize()
        peak = (torch.cuda.max_memory_allocated() - base) / 2**30 if cuda else float("nan")
        return time.perf_counter() - start, peak

    model.train()
    run(True), run(False)  # warm-up
    times = {"fused": [], "full": []}
    peaks = {"fused": 0.0, "full": 0.0}
    for _ in range(args.rounds):
        for name in ("fused", "full"):
            seconds, peak = run(name == "fused")
            times[name].append(seconds)
            peaks[name] = max(peaks[name], peak)
    generate._FUSABLE[model] = True
    summary = {
        "device": str(model.device), "rows": len(rollout), "completion_tokens": rollout.completion_ids.shape[1],
        "vocab": model.get_output_embeddings().weight.shape[0], "threads": torch.get_num_threads(),
        **{f"{k}_median_s": round(statistics.median(v), 4) for k, v in times.items()},
        "ratio_fused_over_full": round(statistics.median(times["fused"]) / statistics.median(times["full"]), 3),
    }
    if cuda:
        summary.update({f"{k}_peak_gib": round(v, 3) for k, v in peaks.items()})
    print(json.dumps(summary))


if __name__ == "__main__":
    main()
