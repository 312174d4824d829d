"""Run an exported verl DAPO run's pieces through verl's own code (verl installed --no-deps in a side folder).

    PYTHONPATH=.venv/verl-site python tests/verl_support/check_export.py OUT_DIR TOKENIZER_DIR

1. composes verl's Hydra config (verl/trainer/config/ppo_trainer.yaml) with every override of OUT_DIR/run_verl_dapo.sh:
   a key verl does not know, or a value of the wrong type, fails here as it would on a GPU cluster;
2. builds verl's AlgoConfig / FilterGroupsConfig dataclasses from it (the DAPO switches);
3. loads OUT_DIR/reward.py with verl's custom-reward loader (`get_custom_reward_fn`);
4. reads OUT_DIR/train.parquet with verl's RLHFDataset (chat template applied by verl);
5. scores given completions with verl's DAPO reward manager (overlong buffer included) on DataProto batches.
Prints one JSON line: the composed DAPO settings, dataset facts and per-completion rewards, for the test to compare.
"""

from __future__ import annotations

import asyncio
import json
import re
import shlex
import sys
from pathlib import Path

import torch


def script_overrides(script: Path, model: str) -> list[str]:
    """The Hydra overrides of the launch script, with the shell variables filled in."""
    text = script.read_text()
    body = text[text.index("python3 -m verl.trainer.main_ppo"):]
    words = shlex.split(body.replace("\\\n", " "))[3:]
    env = {"MODEL": model, "N_GPUS:-8": "1", "NNODES:-1": "1"}
    out = []
    for word in words:
        if word == "$@":
            continue
        out.append(re.sub(r"\$\{([^}]+)\}", lambda m: env[m.group(1)], word))
    return out


def main() -> None:
    out_dir, tokenizer_dir = Path(sys.argv[1]), sys.argv[2]
    completions = json.loads(sys.argv[3])  # [[text, ground_truth], ...]

    import verl
    from hydra import compose, initialize_config_dir
    from omegaconf import OmegaConf
    from transformers import AutoTokenizer

    from verl import DataProto
    from verl.experimental.reward_loop.reward_manager.dapo import DAPORewardManager
    from verl.trainer.config import AlgoConfig
    from verl.trainer.ppo.reward import get_custom_reward_fn
    from verl.utils.config import omega_conf_to_dataclass
    from verl.utils.dataset.rl_dataset import RLHFDataset

    overrides = script_overrides(out_dir / "run_verl_dapo.sh", tokenizer_dir)
    config_dir = str(Path(verl.__file__).parent / "trainer" / "config")
    with initialize_config_dir(config_dir=config_dir, version_base=None):
        config = compose(config_name="ppo_trainer", overrides=overrides)
    algo = omega_conf_to_dataclass(config.algorithm, AlgoConfig)
    actor = config.actor_rollout_ref.actor

    compute_score = get_custom_reward_fn(config)
    tokenizer = AutoTokenizer.from_pretrained(tokenizer_dir)
    dataset = RLHFDataset(data_files=[str(out_dir / "train.parquet")], tokenizer=tokenizer, config=config.data)
    first = dataset[0]

    manager = DAPORewardManager(config, tokenizer, compute_score)
    prompt_ids = torch.tensor([tokenizer.encode("Q")])  # the manager decodes only the response
    results = []
    for text, ground_truth in completions:
        response = torch.tensor([tokenizer.encode(text, add_special_tokens=False)])
        batch = DataProto.from_dict(
            tensors={"prompts": prompt_ids, "responses": response,
                     "attention_mask": torch.ones(1, prompt_ids.shape[1] + response.shape[1], dtype=torch.long)},
            non_tensors={"data_source": ["dapo_nb"], "reward_model": [{"ground_truth": ground_truth}],
                         "extra_info": [{"index": 0}]},
        )
        result = asyncio.get_event_loop().run_until_complete(manager.run_single(batch))
        results.append({"num_tokens": response.shape[1], "reward": float(result["reward_score"]),
                        "info": {k: float(v) for k, v in result["reward_extra_info"].items()}})

    print("VERL_CHECK " + json.dumps({
        "verl": verl.__version__,
        "filter_groups": {"enable": algo.filter_groups.enable, "metric": algo.filter_groups.metric},
        "use_kl_in_reward": algo.use_kl_in_reward,
        "actor": {k: OmegaConf.to_container(actor)[k] for k in
                  ("clip_ratio_low", "clip_ratio_high", "loss_agg_mode", "use_kl_loss")},
        "rollout_n": config.actor_rollout_ref.rollout.n,
        "reward_manager": config.reward.reward_manager.name,
        "overlong_buffer_cfg": OmegaConf.to_container(config.reward.reward_kwargs.overlong_buffer_cfg),
        "max_resp_len": config.reward.reward_kwargs.max_resp_len,
        "dataset_rows": len(dataset),
        "first_item_keys": sorted(first),
        "first_raw_prompt": first.get("raw_prompt"),
        "results": results,
    }))


if __name__ == "__main__":
    main()
