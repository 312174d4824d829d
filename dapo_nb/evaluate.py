"""Held-out evaluation: greedy pass@1 and sampled avg@k on a prompt file, with per-objective means.

    summary = evaluate(model, tokenizer, load_prompts("data/test.jsonl"), reward, num_samples=4)

pass@1 is the fraction of prompts whose greedy completion is correct (`rewards.answer.is_correct`:
the final answer equals the ground truth); avg@k is the mean correctness over k sampled completions
per prompt, as in the DAPO paper's avg@32. `format@1` is the fraction of greedy completions with a
parseable final-answer line. Every objective of the given reward is averaged too, so a run's
shaped objectives can be compared before and after training.
"""

from __future__ import annotations

import math

import torch
from tqdm.auto import tqdm

from .data import PromptExample, render_prompts
from .generate import generate_rollouts
from .rewards import MultiObjectiveReward, has_final_answer, is_correct


@torch.no_grad()
def evaluate(
    model,
    tokenizer,
    examples: list[PromptExample],
    reward: MultiObjectiveReward | None = None,
    *,
    system_prompt: str | None = None,
    max_new_tokens: int = 64,
    context_max_len: int = 256,
    num_samples: int = 4,
    temperature: float = 1.0,
    batch_prompts: int = 16,
    seed: int = 0,
) -> dict:
    """Greedy pass@1 / format@1 and (num_samples > 0) sampled avg@k, plus per-objective means, over `examples`."""
    if not examples:
        raise ValueError("evaluate() needs at least one prompt")
    prompts = render_prompts(tokenizer, examples, system_prompt)
    generator = torch.Generator(device=model.device).manual_seed(seed)
    summary: dict = {"num_prompts": len(examples)}
    modes = [("greedy", 1, False)] + ([(f"sampled", num_samples, True)] if num_samples > 0 else [])
    for mode, k, do_sample in modes:
        correct, formatted, objective_sums, count = 0.0, 0.0, {}, 0
        bar = tqdm(total=len(examples), desc=f"eval {mode}" + (f" x{k}" if do_sample else ""), unit="prompt",
                   leave=False, dynamic_ncols=True)
        for start in range(0, len(examples), batch_prompts):
            chunk = examples[start : start + batch_prompts]
            rollout = generate_rollouts(
                model, tokenizer, prompts[start : start + batch_prompts], group_size=k, max_new_tokens=max_new_tokens,
                context_max_len=context_max_len, do_sample=do_sample, temperature=temperature, generator=generator)
            truths = [chunk[g].ground_truth for g in rollout.group_ids.tolist()]
            correct += sum(is_correct(t, gt) for t, gt in zip(rollout.completion_texts, truths))
            formatted += sum(has_final_answer(t) for t in rollout.completion_texts)
            count += len(rollout)
            if reward is not None:
                scored = reward.score(rollout.completion_texts, truths, group_ids=rollout.group_ids.tolist(),
                                      num_tokens=rollout.lengths.tolist(), split="test", step=0)
                for name, values in scored.objectives.items():
                    objective_sums[name] = objective_sums.get(name, 0.0) + math.fsum(values)
            bar.update(len(chunk))
        bar.close()
        if mode == "greedy":
            summary["pass@1"] = correct / count
            summary["format@1"] = formatted / count
        else:
            summary[f"avg@{k}"] = correct / count
            summary[f"format_avg@{k}"] = formatted / count
        summary.update({f"{mode}/{name}/mean": total / count for name, total in objective_sums.items()})
    return summary
