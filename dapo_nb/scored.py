"""Rollouts with their rewards: the trainer's one host/device boundary, as a typed value.

    reward_batch = score_rollout(reward, rollout, prompt_examples, step=3)   # the one scoring call, from a Rollout
    scored = ScoredRollout.of(rollout, reward_batch, examples)   # rollout on the model's device, rewards on the host
    kept = scored.select(rows)                                   # rows: host indices, copied to the device once
    advantages = dapo.group_advantages(kept.scores, kept.group_ids)   # host math on host tensors

Where tensors live, and why:

* `rollout` (ids, masks, behaviour log-probs, ...) stays on the model's device: it feeds the model in the update.
* Everything a reward produced (scores, objective values, validity) and the group ids that bookkeeping needs
  live on the host as tensors. Rewards are computed on the host from text anyway, and the filter / advantage math
  on a few hundred numbers costs nothing there. `group_ids` is copied from the device once, when the value is built.
* Crossings are explicit calls: `Rollout.select` (host rows -> device), `advantages.to(device)` in the trainer,
  `.tolist()` / `.item()` for logs.

Replaces the string-keyed `Rollout.extras` dict ("objective/<name>", "score", "valid") of earlier versions.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from .data import PromptExample
from .generate import Rollout
from .rewards import MultiObjectiveReward, RewardBatch


def score_rollout(reward: MultiObjectiveReward, rollout: Rollout, prompt_examples: list[PromptExample], *,
                  step: int | None, split: str = "train") -> RewardBatch:
    """Score a rollout whose group g answers `prompt_examples[g]`: every completion with its example, group, token
    count and token ids (through `MultiObjectiveReward.score_examples`, the call every scorer makes)."""
    group_ids, lengths = rollout.group_ids.tolist(), rollout.lengths.tolist()
    return reward.score_examples(
        rollout.completion_texts, [prompt_examples[g] for g in group_ids], step=step, split=split, group_ids=group_ids,
        num_tokens=lengths, completion_ids=[ids[:n] for ids, n in zip(rollout.completion_ids.tolist(), lengths)])


@dataclass
class ScoredRollout:
    """A Rollout (device) and, per row, its prompt example and reward (host); every row list and tensor has N entries."""

    rollout: Rollout
    examples: list[PromptExample]  # (N,) the prompt each completion answers
    group_ids: torch.Tensor  # (N,) long, host copy of rollout.group_ids
    scores: torch.Tensor  # (N,) float32, host: the scalar reward
    objectives: dict[str, torch.Tensor]  # name -> (N,) float64, host: raw objective values
    valid: torch.Tensor  # (N,) bool, host: False where reward.on_error="drop" dropped the row

    @classmethod
    def of(cls, rollout: Rollout, reward: RewardBatch, examples: list[PromptExample]) -> ScoredRollout:
        if not (len(rollout) == len(examples) == len(reward.scores)):
            raise ValueError(f"{len(rollout)} rollouts, {len(examples)} examples and {len(reward.scores)} scores")
        return cls(
            rollout=rollout, examples=list(examples), group_ids=rollout.group_ids.cpu(),
            scores=torch.tensor(reward.scores, dtype=torch.float32),
            objectives={name: torch.tensor(values, dtype=torch.float64) for name, values in reward.objectives.items()},
            valid=torch.tensor(reward.valid, dtype=torch.bool),
        )

    def __len__(self) -> int:
        return len(self.examples)

    def metric(self, name: str) -> torch.Tensor:
        """(N,) host values of objective `name`, or of the scalar reward for "score"."""
        if name == "score":
            return self.scores.double()
        if name not in self.objectives:
            raise ValueError(f"dapo.filter_metric={name!r} is not an objective of this reward "
                             f"({', '.join(self.objectives)}); set dapo.filter_metric=score or one of those")
        return self.objectives[name]

    def select(self, rows: torch.Tensor) -> ScoredRollout:
        """Only `rows` (host indices); the rollout gets them on its device in one copy."""
        rows = torch.as_tensor(rows, dtype=torch.long)
        picked = rows.tolist()
        return ScoredRollout(
            rollout=self.rollout.select(rows), examples=[self.examples[i] for i in picked], group_ids=self.group_ids[rows],
            scores=self.scores[rows], objectives={k: v[rows] for k, v in self.objectives.items()}, valid=self.valid[rows])

    def rows_of_groups(self, groups: torch.Tensor) -> torch.Tensor:
        """(n,) host indices of the rows whose group is in `groups` (host)."""
        return torch.nonzero(torch.isin(self.group_ids, groups)).flatten()

    @staticmethod
    def concat(parts: list[ScoredRollout], pad_token_id: int) -> ScoredRollout:
        """Join batches; groups are renumbered 0, 1, ... as `Rollout.concat` does."""
        rollout = Rollout.concat([p.rollout for p in parts], pad_token_id)
        return ScoredRollout(
            rollout=rollout, examples=[ex for p in parts for ex in p.examples], group_ids=rollout.group_ids.cpu(),
            scores=torch.cat([p.scores for p in parts]),
            objectives={k: torch.cat([p.objectives[k] for p in parts]) for k in parts[0].objectives},
            valid=torch.cat([p.valid for p in parts]))
