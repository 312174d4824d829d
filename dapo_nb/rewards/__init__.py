"""Multi-objective rewards: objectives, scalarizers, live weights, plugins, and export to verl.

    from dapo_nb.rewards import MultiObjectiveReward
    reward = MultiObjectiveReward(objectives=["correctness", "format"], weights={"correctness": 1.0, "format": 0.2})
    batch = reward.score(completions, ground_truths, group_ids=group_ids)

Modules, one concept each: `answer` (what counts as a correct answer), `objectives` (registry and
built-ins), `scalarize` (weighted sum, Tchebycheff, smooth Tchebycheff; group z-score),
`weights` (thread-safe live weights and schedule), `plugins` (seed / TRL / verl contracts; any
number at once, objectives `<plugin>` and `<plugin>.<key>`), `reward` (the combined reward),
`verl_export` (standalone verl reward module, jsonl -> parquet).
"""

from .answer import answers_equivalent, extract_final_answer, has_final_answer, is_correct
from .objectives import (
    BUILTIN_OBJECTIVES,
    OBJECTIVES,
    SEED_WEIGHTS,
    Objective,
    ObjectiveError,
    describe_objectives,
    get_objective,
    register_objective,
)
from .plugins import CONTRACTS, ERROR_KINDS, FORMATS, ON_ERROR, PluginError, PluginSpec, load_plugin, parse_plugin_entry
from .reward import MultiObjectiveReward, RewardBatch, objective_names, reward_from_config
from .scalarize import NORMALIZATIONS, SCALARIZERS, ScalarizeError
from .weights import LiveWeights, WeightsError

__all__ = [
    "BUILTIN_OBJECTIVES",
    "CONTRACTS",
    "ERROR_KINDS",
    "FORMATS",
    "LiveWeights",
    "MultiObjectiveReward",
    "NORMALIZATIONS",
    "OBJECTIVES",
    "ON_ERROR",
    "Objective",
    "ObjectiveError",
    "PluginError",
    "PluginSpec",
    "RewardBatch",
    "reward_from_config",
    "objective_names",
    "SCALARIZERS",
    "SEED_WEIGHTS",
    "ScalarizeError",
    "WeightsError",
    "answers_equivalent",
    "describe_objectives",
    "extract_final_answer",
    "get_objective",
    "has_final_answer",
    "is_correct",
    "load_plugin",
    "parse_plugin_entry",
    "register_objective",
]
