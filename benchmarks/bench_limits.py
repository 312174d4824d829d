"""How far decoding and the update are from this CPU's physical limits.

    .venv/bin/python benchmarks/bench_limits.py [--prompts 4] [--group-size 8] [--max-new-tokens 64] [--threads 2]

1. The machine: float32 matmul peak (`torch.mm` of 2048 x 2048 matrices, best of 5, GFLOP/s) and memory bandwidth
   (summing a 512 MiB tensor, best of 5, GB/s), at `--threads`.
2. Decoding (`generate_rollouts` on the embedded model, the recipe's batch and budget, temperature 1): per decode step
   (all rows one token) the matmul FLOPs are 2 x rows x (decoder parameters + output head) plus attention
   (4 x rows x layers x positions x hidden), so achieved GFLOP/s = that over the step's seconds; and each step must
   read every weight once (4 bytes a float32 parameter), so the weight traffic alone bounds a step from below at
   weight bytes / bandwidth. Printed: achieved GFLOP/s and its share of the matmul peak, the bandwidth bound and the
   measured step time.
3. The update (`completion_logprobs` + backward on the same rollout): a forward over the completion tokens costs
   2 x tokens x parameters, the backward about twice that, so FLOPs = 6 x tokens x parameters (plus the prompt pass,
   once per group); achieved GFLOP/s and share of the peak.
4. Where a decode step's time goes: one forward of 1 row and of all rows on a prompt's KV cache (the 1-row step is
   almost all fixed cost: Python and per-layer dispatch plus reading the weights), and `sample_next_token` on the
   rows' (N, V) logits alone.
Prints lines and one JSON summary.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))


def best_seconds(fn, repeats: int = 5) -> float:
    fn()  # warm
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return min(times)


def machine_limits() -> dict:
    a, b = torch.randn(2048, 2048), torch.randn(2048, 2048)
    matmul = best_seconds(lambda: torch.mm(a, b))
    big = torch.ones(128 * 2**20)  # 512 MiB of float32
    read = best_seconds(lambda: big.sum())
    return {"matmul_gflops": 2 * 2048**3 / matmul / 1e9, "bandwidth_gbs": big.numel() * 4 / read / 1e9}


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--prompts", type=int, default=4)
    parser.add_argument("--group-size", type=int, default=8)
    parser.add_argument("--max-new-tokens", type=int, default=64)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)

    from dapo_nb.data import load_prompts, render_prompts
    from dapo_nb.generate import completion_logprobs, generate_rollouts
    from dapo_nb.models import load_policy

    limits = machine_limits()
    print(f"machine ({args.threads} threads): float32 matmul peak {limits['matmul_gflops']:.1f} GFLOP/s, "
          f"memory read {limits['bandwidth_gbs']:.1f} GB/s", flush=True)
    model, tokenizer = load_policy("default")
    config = model.config
    params = sum(p.numel() for p in model.parameters())
    head = model.get_output_embeddings().weight.numel()
    decoder = params - model.get_input_embeddings().weight.numel()  # tied embedding: the head is the embedding
    examples = load_prompts("builtin:arithmetic/train")[: args.prompts]
    prompts = render_prompts(tokenizer, examples)
    rows = args.prompts * args.group_size

    generator = torch.Generator().manual_seed(0)
    generate_rollouts(model, tokenizer, prompts, group_size=args.group_size, max_new_tokens=4, generator=generator)
    start = time.perf_counter()
    rollout = generate_rollouts(model, tokenizer, prompts, group_size=args.group_size,
                                max_new_tokens=args.max_new_tokens, generator=generator)
    seconds = time.perf_counter() - start
    lengths = rollout.lengths.tolist()
    prompt_len = int(rollout.prompt_mask.sum(1).float().mean())

    def token_flops(t: int) -> int:  # one row's token at decode step t: matmuls + attention over its context
        return 2 * (decoder + head) + 4 * config.num_hidden_layers * (prompt_len + t) * config.hidden_size

    flops = sum(token_flops(t) for n in lengths for t in range(n))  # the tokens kept
    steps = rollout.completion_ids.shape[1]
    weight_bytes = 4 * (decoder + head)
    bound = steps * weight_bytes / (limits["bandwidth_gbs"] * 1e9)
    # the loop computes every row at every step, finished ones too: that work, whether kept or not
    computed = sum(token_flops(t) for t in range(steps)) * rows
    decode = {"seconds": seconds, "decode_steps": steps, "tokens": sum(lengths), "gflops": flops / seconds / 1e9,
              "computed_gflops": computed / seconds / 1e9,
              "share_of_matmul_peak": flops / seconds / 1e9 / limits["matmul_gflops"],
              "weight_read_bound_s": bound, "seconds_per_step": seconds / steps}
    print(f"decoding {rows} rows x up to {args.max_new_tokens} tokens ({sum(lengths)} generated, {steps} steps): "
          f"{seconds:.2f} s, {decode['gflops']:.1f} GFLOP/s = {decode['share_of_matmul_peak']:.0%} of the matmul "
          f"peak ({decode['computed_gflops']:.1f} GFLOP/s counting finished rows' work); "
          f"{decode['seconds_per_step'] * 1000:.0f} ms a step against {bound / steps * 1000:.0f} ms to read "
          f"the weights once ({weight_bytes / 2**20:.0f} MiB)", flush=True)

    model.train()
    rows_all = torch.arange(len(rollout))
    start = time.perf_counter()
    logp = completion_logprobs(model, rollout, rows_all, 1.0)
    (-(logp * rollout.completion_mask).sum() / rollout.completion_mask.sum()).backward()
    seconds = time.perf_counter() - start
    model.zero_grad(set_to_none=True)
    tokens = int(rollout.completion_mask.sum())
    flops = 6 * tokens * (decoder + head) + 6 * args.prompts * prompt_len * decoder
    update = {"seconds": seconds, "tokens": tokens, "gflops": flops / seconds / 1e9,
              "share_of_matmul_peak": flops / seconds / 1e9 / limits["matmul_gflops"]}
    print(f"update forward + backward over {tokens} completion tokens: {seconds:.2f} s, {update['gflops']:.1f} GFLOP/s "
          f"= {update['share_of_matmul_peak']:.0%} of the matmul peak", flush=True)
    model.eval()
    parts = decode_step_parts(model, tokenizer, prompts, args.group_size)
    print(f"one decode step: 1 row {parts['forward_1_row_ms']:.1f} ms, {rows} rows {parts['forward_all_rows_ms']:.1f} ms "
          f"forward + {parts['sample_ms']:.1f} ms sampling; the weight read alone takes {bound / steps * 1000:.1f} ms",
          flush=True)
    print(json.dumps({"threads": args.threads, "machine": limits, "parameters": params, "decode": decode,
                      "update": update, "decode_step": parts}))


@torch.no_grad()
def decode_step_parts(model, tokenizer, prompts: list[str], group_size: int) -> dict:
    """Milliseconds of one decode step's forward at 1 row and at all rows, and of sampling all rows (best of 5)."""
    from dapo_nb.generate import sample_next_token, tokenize_prompts

    ids, mask, _ = tokenize_prompts(tokenizer, prompts, 256)  # (B, P)
    ids, mask = ids.repeat_interleave(group_size, 0), mask.repeat_interleave(group_size, 0)  # (N, P)

    def step_seconds(n: int) -> float:
        out = model(input_ids=ids[:n], attention_mask=mask[:n], use_cache=True, logits_to_keep=1)
        token = out.logits[:, -1].argmax(-1, keepdim=True)  # (n, 1)
        grown = {"mask": mask[:n], "position": mask[:n].sum(1, keepdim=True)}  # (n, P), (n, 1)

        def one():  # as in the decoding loop: the cache, the mask and the position grow by one a call
            grown["mask"] = torch.cat([grown["mask"], torch.ones_like(token)], dim=1)
            model(input_ids=token, attention_mask=grown["mask"], position_ids=grown["position"], cache=out.cache,
                  use_cache=True)
            grown["position"] = grown["position"] + 1
        return best_seconds(one)

    logits = torch.randn(ids.shape[0], model.config.vocab_size)  # (N, V)
    sample = best_seconds(lambda: sample_next_token(logits, do_sample=True, temperature=1.0))
    return {"forward_1_row_ms": step_seconds(1) * 1000, "forward_all_rows_ms": step_seconds(ids.shape[0]) * 1000,
            "sample_ms": sample * 1000}


if __name__ == "__main__":
    main()
