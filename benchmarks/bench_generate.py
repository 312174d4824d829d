"""Generated tokens per second: our batched generator vs the seed's way vs plain `model.generate`.

    .venv/bin/python benchmarks/bench_generate.py [--prompts 2] [--group-size 4] [--max-new-tokens 48] [--rounds 3]

Same model (the embedded default unless --model), same training prompts, same token budget.
  ours   generate_rollouts(): B prompts x G samples in one batched loop, with behaviour log-probs
  seed   the prototype's way: one completion at a time, greedy (`model.generate`, do_sample=False)
  hf     plain `model.generate` on the same B x G batch, sampling, no log-probs
The three run in turn, `--rounds` times, so machine noise hits all of them alike; the ratios of
summed tokens over summed seconds are printed last. Target (issue 2): ours >= 5x seed.
"""

from __future__ import annotations

import argparse
import json
import time

import torch

from dapo_nb.data import load_prompts, render_prompts
from dapo_nb.generate import generate_rollouts
from dapo_nb.models import load_policy


def run_ours(model, tok, prompts, args, seed):
    r = generate_rollouts(model, tok, prompts, group_size=args.group_size, max_new_tokens=args.max_new_tokens,
                          generator=torch.Generator(model.device).manual_seed(seed))
    return int(r.lengths.sum())


@torch.no_grad()
def run_seed(model, tok, prompts, args, seed):
    tokens = 0
    for prompt in prompts:
        for _ in range(args.group_size):
            enc = tok(prompt, return_tensors="pt", add_special_tokens=False)
            out = model.generate(**enc, max_new_tokens=args.max_new_tokens, do_sample=False, num_beams=1,
                                 pad_token_id=tok.pad_token_id)
            tokens += out.shape[1] - enc.input_ids.shape[1]
    return tokens


@torch.no_grad()
def run_hf(model, tok, prompts, args, seed):
    torch.manual_seed(seed)
    batch = [p for p in prompts for _ in range(args.group_size)]
    enc = tok(batch, return_tensors="pt", padding=True, add_special_tokens=False)
    out = model.generate(**enc, max_new_tokens=args.max_new_tokens, do_sample=True, pad_token_id=tok.pad_token_id)
    completion = out[:, enc.input_ids.shape[1]:]
    # count tokens up to and including the first EOS, as ours does
    is_eos = completion == tok.eos_token_id
    before = torch.cumsum(is_eos.long(), 1) - is_eos.long()
    return int((before == 0).sum())


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default="default")
    ap.add_argument("--data", default="data/train.jsonl")
    ap.add_argument("--prompts", type=int, default=2)
    ap.add_argument("--group-size", type=int, default=4)
    ap.add_argument("--max-new-tokens", type=int, default=48)
    ap.add_argument("--rounds", type=int, default=3)
    args = ap.parse_args()

    model, tok = load_policy(args.model)
    prompts = render_prompts(tok, load_prompts(args.data)[: args.prompts])
    contenders = {"ours": run_ours, "seed": run_seed, "hf": run_hf}
    totals = {name: [0, 0.0] for name in contenders}
    run_ours(model, tok, prompts[:1], argparse.Namespace(group_size=1, max_new_tokens=4), 0)  # warm-up
    for round_ in range(args.rounds):
        for name, fn in contenders.items():
            t0 = time.perf_counter()
            tokens = fn(model, tok, prompts, args, seed=round_)
            seconds = time.perf_counter() - t0
            totals[name][0] += tokens
            totals[name][1] += seconds
            print(f"round {round_} {name:5s} {tokens:5d} tokens {seconds:7.2f}s {tokens / seconds:7.1f} tok/s", flush=True)
    rate = {name: tokens / seconds for name, (tokens, seconds) in totals.items()}
    summary = {
        "batch": f"{args.prompts}x{args.group_size}", "max_new_tokens": args.max_new_tokens, "threads": torch.get_num_threads(),
        **{f"{k}_tokens_per_s": round(v, 1) for k, v in rate.items()},
        "ours_vs_seed": round(rate["ours"] / rate["seed"], 2), "ours_vs_hf": round(rate["ours"] / rate["hf"], 2),
    }
    print(json.dumps(summary))


if __name__ == "__main__":
    main()
