"""`dapo-nb export verl out_dir=DIR`: our data, reward and DAPO settings as a ready verl run.

Writes to DIR:
  train.parquet, test.parquet   data.train_path / data.test_path in verl's RL schema (chat prompt with our system prompt)
  reward.py                     standalone `compute_score` (rewards/verl_export.py): score, acc, one key per objective
  run_verl_dapo.sh              `python3 -m verl.trainer.main_ppo` with the DAPO recipe, written for verl 0.9.1

The launch script's settings (`verl_overrides`), from our config:
  Clip-Higher          actor.clip_ratio_low / clip_ratio_high = dapo.eps_low / eps_high (0.2 / 0.28)
  token-level loss     actor.loss_agg_mode = dapo.loss_agg (verl uses our three names)
  dynamic sampling     algorithm.filter_groups.enable = dapo.dynamic_sampling, .metric = acc for
                       dapo.filter_metric=correctness (else the objective's key, `score` for our scalar)
  overlong shaping     reward.reward_manager.name=dapo with reward_kwargs.overlong_buffer_cfg: len =
                       reward.overlong_buffer_len, penalty_factor = the weight of objective `overlong` (enable only
                       when that weight is > 0), max_resp_len = sampling.max_new_tokens. verl adds it to `score`,
                       which is exactly our weighted sum with the `overlong` term (DAPO Eq. 13).
  no KL                algorithm.use_kl_in_reward=False, actor.use_kl_loss = dapo.beta > 0 (k3 = low_var_kl)
  the rest             GRPO advantages (norm_adv_by_std_in_grpo = dapo.std_scale == group), rollout.n = G, batch
                       and mini-batch sizes in prompts, lr, warm-up, clipping, epochs, sampling, steps.

Departures, each refused with a clear error or said in the script: verl's reward is static (no live weights; a
reward.schedule is not exported, the step-1 weights are), `dapo.std_scale=batch` has no verl GRPO equivalent,
`overlong` travels only with the weighted_sum scalarizer (verl adds it after compute_score), `length`, plugins,
user objectives and group_zscore do not travel (see rewards/verl_export.py), and `dapo.overlong_filtering` has no
verl 0.9.1 switch.
"""

from __future__ import annotations

import shlex
import tempfile
import warnings
from dataclasses import replace
from pathlib import Path

from .config import Config, ConfigError
from .models import EMBEDDED_NAMES, embedded_model_dir
from .data import load_prompts_from_config
from .rewards import objective_names, reward_from_config
from .rewards.verl_export import jsonl_to_verl_parquet, reward_to_verl_module

VERL_VERSION = "0.9.1"  # the verl release the launch script's keys were checked against
SCRIPT_NAME = "run_verl_dapo.sh"


def _bool(value: bool) -> str:
    return "True" if value else "False"


def overlong_settings(cfg: Config) -> tuple[float, list[str]]:
    """(penalty factor, objectives left for reward.py): `overlong` moves into verl's DAPO reward manager."""
    factor = float(cfg.reward.weights.get("overlong", 0.0))
    if factor > 0 and cfg.reward.scalarizer != "weighted_sum":
        raise ConfigError(f"reward.scalarizer={cfg.reward.scalarizer} with an `overlong` weight cannot go to verl: "
                          "verl adds the overlong penalty after compute_score, which matches only weighted_sum")
    return factor, [n for n in objective_names(cfg.reward) if n != "overlong"]


def filter_metric_key(cfg: Config) -> str:
    """The reward_extra_info key verl's filter_groups should read for dapo.filter_metric."""
    metric = cfg.dapo.filter_metric
    return "acc" if metric == "correctness" else metric


def verl_overrides(cfg: Config, out_dir: Path) -> list[str]:
    """Hydra overrides for verl.trainer.main_ppo equivalent to `cfg` (paths inside `out_dir`; the model comes
    from the launch script's MODEL)."""
    if cfg.dapo.std_scale == "batch":
        raise ConfigError("dapo.std_scale=batch has no verl GRPO equivalent; use group (DAPO) or none")
    factor, _ = overlong_settings(cfg)
    s, p, d = cfg.sampling, cfg.ppo, cfg.dapo
    mini = p.groups_per_update
    actor = "actor_rollout_ref.actor"
    rollout = "actor_rollout_ref.rollout"
    kwargs = "+reward.reward_kwargs"
    return [
        "algorithm.adv_estimator=grpo",
        f"algorithm.norm_adv_by_std_in_grpo={_bool(d.std_scale == 'group')}",
        "algorithm.use_kl_in_reward=False",
        f"algorithm.filter_groups.enable={_bool(d.dynamic_sampling)}",
        f"algorithm.filter_groups.metric={filter_metric_key(cfg)}",
        f"data.train_files={out_dir / 'train.parquet'}",
        f"data.val_files={out_dir / 'test.parquet'}",
        f"data.train_batch_size={p.batch_size}",
        f"data.max_prompt_length={s.context_max_len}",
        f"data.max_response_length={s.max_new_tokens}",
        "data.truncation=left",
        f"{actor}.optim.lr={p.learning_rate}",
        f"{actor}.optim.lr_warmup_steps={p.warmup_steps}",
        f"{actor}.optim.weight_decay={p.weight_decay}",
        f"{actor}.grad_clip={p.max_grad_norm}",
        f"{actor}.ppo_mini_batch_size={mini}",
        f"{actor}.ppo_epochs={p.epochs}",
        f"{actor}.clip_ratio_low={d.eps_low}",
        f"{actor}.clip_ratio_high={d.eps_high}",
        f"{actor}.loss_agg_mode={d.loss_agg}",
        f"{actor}.use_kl_loss={_bool(d.beta > 0)}",
        f"{actor}.kl_loss_coef={d.beta}",
        f"{actor}.kl_loss_type=low_var_kl",
        f"{actor}.entropy_coeff=0",
        f"{rollout}.n={d.group_size}",
        f"{rollout}.temperature={s.temperature}",
        f"{rollout}.top_p={s.top_p}",
        f"{rollout}.top_k={s.top_k or -1}",
        f"reward.custom_reward_function.path={out_dir / 'reward.py'}",
        "reward.custom_reward_function.name=compute_score",
        "reward.reward_manager.name=dapo",
        f"{kwargs}.overlong_buffer_cfg.enable={_bool(factor > 0)}",
        f"{kwargs}.overlong_buffer_cfg.len={cfg.reward.overlong_buffer_len}",
        f"{kwargs}.overlong_buffer_cfg.penalty_factor={factor}",
        f"{kwargs}.overlong_buffer_cfg.log=False",
        f"{kwargs}.max_resp_len={s.max_new_tokens}",
        f"trainer.total_training_steps={cfg.train.total_steps}",
        f"trainer.save_freq={cfg.train.save_every or -1}",
        "trainer.project_name=dapo-nb",
        f"trainer.experiment_name={cfg.train.run_name}",
        f"trainer.default_local_dir={Path(cfg.train.checkpoint_dir).resolve() / (cfg.train.run_name + '-verl')}",
        "trainer.logger=[console]",
    ]


def _script(overrides: list[str], model_path: str) -> str:
    return "\n".join([
        "#!/usr/bin/env bash",
        f"# DAPO on verl {VERL_VERSION}, written by `dapo-nb export verl` (dapo_nb/verl_recipe.py says what maps to what).",
        "# Needs a GPU machine with verl and vLLM installed. Environment: MODEL (HF id or local dir),",
        "# N_GPUS (per node, default 8), NNODES (default 1). Extra Hydra overrides on the command line win,",
        "# e.g. bash run_verl_dapo.sh actor_rollout_ref.rollout.tensor_model_parallel_size=2",
        "set -euo pipefail",
        f"MODEL=${{MODEL:-{shlex.quote(model_path)}}}",
        "python3 -m verl.trainer.main_ppo \\",
        '    "actor_rollout_ref.model.path=${MODEL}" \\',
        *(f"    {shlex.quote(o)} \\" for o in overrides),
        '    "trainer.n_gpus_per_node=${N_GPUS:-8}" \\',
        '    "trainer.nnodes=${NNODES:-1}" \\',
        '    "$@"',
        "",
    ])


def export_verl(cfg: Config, out_dir: str | Path) -> dict[str, Path]:
    """Write parquet data, reward module and launch script for `cfg` into out_dir; returns their paths."""
    out = Path(out_dir).resolve()
    if cfg.reward.schedule:
        warnings.warn("reward.schedule is not exported: verl's reward is static, reward.py uses the weights of step 1",
                      stacklevel=2)
    name = cfg.model.pretrained_model_name_or_path
    model_path = str(embedded_model_dir()) if name in EMBEDDED_NAMES else name
    overrides = verl_overrides(cfg, out)  # first: refuses what cannot travel before writing anything
    _, objectives = overlong_settings(cfg)
    weights = {k: v for k, v in cfg.reward.weights.items() if k != "overlong"}
    verl_cfg = replace(cfg, reward=replace(cfg.reward, objectives=objectives, weights=weights, schedule={}))
    out.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=out.parent, prefix=f".{out.name}-") as staging:  # all or nothing
        stage = Path(staging)
        reward_to_verl_module(reward_from_config(verl_cfg), stage / "reward.py")
        for split in ("train", "test"):
            jsonl_to_verl_parquet(load_prompts_from_config(cfg.data, split), stage / f"{split}.parquet", split=split,
                                  system_prompt=cfg.data.system_prompt)
        (stage / SCRIPT_NAME).write_text(_script(overrides, model_path))
        (stage / SCRIPT_NAME).chmod(0o755)
        out.mkdir(exist_ok=True)
        paths = {}
        for what, name in (("reward", "reward.py"), ("train", "train.parquet"), ("test", "test.parquet"),
                           ("script", SCRIPT_NAME)):
            paths[what] = (stage / name).replace(out / name)
    return paths
