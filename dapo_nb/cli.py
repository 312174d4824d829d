"""`dapo-nb` command line: Hydra-like `key=value` overrides on top of defaults and an optional YAML file.

    dapo-nb train [config.yaml] [key=value ...]   DAPO training; metrics in runs/<run>, checkpoints in checkpoints/<run>
                                                  (backend=trl: TRL's GRPOTrainer; data parallel with
                                                  `accelerate launch --num_processes N -m dapo_nb.cli train backend=trl ...`)
    dapo-nb eval  [config.yaml] [key=value ...]   greedy pass@1 and sampled avg@k on data.test_path; JSON summary last
    dapo-nb smoke [config.yaml] [key=value ...]   load the policy, sample a few rollouts, print them
    dapo-nb export verl [config.yaml] out_dir=DIR [key=value ...]
                                                  verl parquet data, reward module and DAPO launch script in DIR
    dapo-nb keys                                  every config key with its default

The seed's command line runs unchanged apart from the program name, e.g.
    dapo-nb train model.pretrained_model_name_or_path=Qwen/Qwen2.5-1.5B-Instruct model.force_float32=true \
        sampling.max_new_tokens=16 sampling.context_max_len=64 ppo.batch_size=1 ppo.mini_batch_size=1 \
        data.train_path=./data/train.jsonl train.total_steps=50
"""

from __future__ import annotations

import gc
import json
import os
import sys
import textwrap
import time


from .config import Config, ConfigError, all_keys, get_key, load_config, to_yaml


def _split_args(args: list[str]) -> tuple[str | None, list[str]]:
    """A leading *.yaml / *.yml argument is the config file; the rest are overrides."""
    if args and "=" not in args[0] and args[0].endswith((".yaml", ".yml")):
        return args[0], args[1:]
    bad = [a for a in args if "=" not in a]
    if bad:
        raise ConfigError(f"arguments must be key=value overrides (or a leading config .yaml); got {bad[0]!r}")
    return None, args


def cmd_keys(_args: list[str]) -> None:
    """Print every config key with its default value."""
    cfg = Config()
    for key in all_keys():
        print(f"{key} = {get_key(cfg, key)!r}")


def _load(cfg: Config):
    from .models import describe, policy_from_config

    t0 = time.perf_counter()
    model, tokenizer = policy_from_config(cfg.model)
    print(f"loaded {describe(model)} in {time.perf_counter() - t0:.1f}s", flush=True)
    return model, tokenizer


def cmd_train(args: list[str]) -> None:
    """Run DAPO training as configured (backend dapo_nb or trl); print the last step's main metrics as JSON."""
    import torch

    cfg = load_config(*_split_args(args))
    main_process = int(os.environ.get("RANK", "0")) == 0  # under `accelerate launch`, only rank 0 prints
    if main_process:
        print(to_yaml(cfg), flush=True)
    model, tokenizer = _load(cfg)
    if cfg.backend == "trl":
        from .trl_backend import last_checkpoint, train_with_trl

        history = train_with_trl(cfg, model=model, tokenizer=tokenizer)
        checkpoint = last_checkpoint(cfg)
        if torch.distributed.is_initialized():
            # The trainer's DDP wrapper holds the process group and outlives train_with_trl in reference cycles; freed
            # during interpreter shutdown instead, gloo's worker threads abort the process (SIGABRT, seen under load).
            gc.collect()
            torch.distributed.destroy_process_group()
    else:
        from .trainer import Trainer

        trainer = Trainer(cfg, model=model, tokenizer=tokenizer)
        history = trainer.train()
        checkpoint = trainer.checkpoint_root / f"step-{trainer.step}"
    last = history[-1] if history else {}
    keys = ["step", "reward", "rewards/correctness/mean", "rewards/format/mean", "completions/mean_length", "step_time"]
    if main_process:
        print(json.dumps({"run": cfg.train.run_name, "backend": cfg.backend, "metrics": str(cfg.output_dir / "metrics.jsonl"),
                          "checkpoint": str(checkpoint), **{k: last[k] for k in keys if k in last}}))


def cmd_eval(args: list[str]) -> None:
    """Evaluate a model or checkpoint on data.test_path; the last line is a JSON summary."""
    import torch

    from .data import load_prompts
    from .evaluate import evaluate
    from .rewards import reward_from_config

    cfg = load_config(*_split_args(args))
    torch.manual_seed(cfg.train.seed)
    model, tokenizer = _load(cfg)
    examples = load_prompts(cfg.data.test_path)
    if cfg.eval.max_prompts:
        examples = examples[: cfg.eval.max_prompts]
    t0 = time.perf_counter()
    summary = evaluate(
        model, tokenizer, examples, reward_from_config(cfg), system_prompt=cfg.data.system_prompt,
        max_new_tokens=cfg.sampling.max_new_tokens, context_max_len=cfg.sampling.context_max_len,
        num_samples=cfg.eval.num_samples, temperature=cfg.sampling.temperature or 1.0, seed=cfg.train.seed)
    summary = {"model": cfg.model.pretrained_model_name_or_path, "data": cfg.data.test_path,
               "seconds": round(time.perf_counter() - t0, 1), **summary}
    print(json.dumps(summary))


def cmd_smoke(args: list[str]) -> None:
    """Load the model, generate G rollouts for a few training prompts, print them."""
    import torch

    from .data import load_prompts, render_prompts
    from .generate import generate_rollouts

    cfg = load_config(*_split_args(args))
    print(to_yaml(cfg))
    torch.manual_seed(cfg.train.seed)
    model, tokenizer = _load(cfg)
    examples = load_prompts(cfg.data.train_path)[: cfg.ppo.batch_size]
    prompts = render_prompts(tokenizer, examples, cfg.data.system_prompt)
    generator = torch.Generator(device=model.device).manual_seed(cfg.train.seed)
    t0 = time.perf_counter()
    rollout = generate_rollouts(
        model, tokenizer, prompts, group_size=cfg.dapo.group_size, max_new_tokens=cfg.sampling.max_new_tokens,
        context_max_len=cfg.sampling.context_max_len, do_sample=cfg.sampling.do_sample,
        temperature=cfg.sampling.temperature, top_p=cfg.sampling.top_p, top_k=cfg.sampling.top_k, generator=generator,
    )
    seconds = time.perf_counter() - t0
    for i, text in enumerate(rollout.completion_texts):
        ex = examples[int(rollout.group_ids[i])]
        flag = " (truncated)" if rollout.truncated[i] else ""
        print(f"--- {ex.qid} #{i % rollout.group_size}  ground truth {ex.ground_truth}  {int(rollout.lengths[i])} tokens{flag}")
        print(textwrap.indent(text.strip() or "<empty>", "    "))
    tokens = int(rollout.lengths.sum())
    print(f"{len(rollout)} completions, {tokens} tokens in {seconds:.1f}s ({tokens / seconds:.1f} tokens/s)")


def cmd_export(args: list[str]) -> None:
    """`export verl out_dir=DIR ...`: write a verl DAPO run (data, reward module, launch script) for this config."""
    from .verl_recipe import export_verl

    if not args or args[0] != "verl":
        raise ConfigError("usage: dapo-nb export verl [config.yaml] out_dir=DIR [key=value ...] (verl is the only target)")
    out_dirs = [a.split("=", 1)[1] for a in args[1:] if a.startswith("out_dir=")]
    if len(out_dirs) != 1 or not out_dirs[0]:
        raise ConfigError("dapo-nb export verl needs exactly one out_dir=DIR (where the run's files go)")
    cfg = load_config(*_split_args([a for a in args[1:] if not a.startswith("out_dir=")]))
    paths = export_verl(cfg, out_dirs[0])
    for what, path in paths.items():
        print(f"{what:7s} {path}")
    print(f"run it on a GPU machine with verl installed: bash {paths['script']}")


COMMANDS = {"train": cmd_train, "export": cmd_export, "eval": cmd_eval, "smoke": cmd_smoke, "keys": cmd_keys}


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if not argv or argv[0] in ("-h", "--help") or argv[0] not in COMMANDS:
        print(__doc__)
        return 0 if not argv or argv[0] in ("-h", "--help") else 2
    from .data import DataValidationError
    from .models import ModelNotFoundError
    from .rewards import PluginError, WeightsError
    from .rewards.verl_export import VerlExportError
    from .runs import UnfilledBatchError

    try:
        COMMANDS[argv[0]](argv[1:])
    except (ConfigError, DataValidationError, ModelNotFoundError, PluginError, WeightsError,
            VerlExportError, UnfilledBatchError) as err:
        print(f"dapo-nb {argv[0]}: {type(err).__name__}: {err}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
