"""`dapo-nb` command line: Hydra-like `key=value` overrides on top of defaults and an optional YAML file.

    dapo-nb train [config.yaml] [key=value ...]   DAPO training; metrics in runs/<run>, checkpoints in checkpoints/<run>
                                                  (backend=trl: TRL's GRPOTrainer; data parallel over N processes:
                                                  `accelerate launch --num_processes N -m dapo_nb.cli train ...`)
    dapo-nb eval  [config.yaml] [key=value ...]   greedy pass@1 and sampled avg@k on data.test_path; JSON summary last
    dapo-nb smoke [config.yaml] [key=value ...]   load the policy, sample a few rollouts, print them
    dapo-nb sweep STUDY.yaml out_dir=DIR [key=value ...]
                                                  a study: training runs (variations x seeds) on Ray, each judged
                                                  on the same held-out prompts; DIR/results.csv (dapo_nb/sweep.py)
    dapo-nb export verl [config.yaml] out_dir=DIR [key=value ...]
                                                  verl parquet data, reward module and DAPO launch script in DIR
    dapo-nb keys [PATTERN]                        every config key (or those matching PATTERN) with its default,
                                                  type and documentation

    dapo-nb COMMAND --help                        that command's usage
    --debug (anywhere), or DAPO_NB_DEBUG=1        show the traceback of an error instead of one line

Data: data.train_path and data.test_path default to builtin:arithmetic/train and builtin:arithmetic/test, the task
shipped inside the package, so every command works from any directory. Any other path is relative to the working
directory.

Errors: a mistake in what you gave (a key, a value, a file, its data, a reward plugin, a model or checkpoint path)
or a disk too full for a checkpoint ends the command with one line on stderr and exit code 2; anything else (a bug)
with one line, a hint to rerun with --debug, and exit code 1.

The seed's command line runs unchanged apart from the program name, e.g.
    dapo-nb train model.pretrained_model_name_or_path=Qwen/Qwen2.5-1.5B-Instruct model.force_float32=true \\
        sampling.max_new_tokens=16 sampling.context_max_len=64 ppo.batch_size=1 ppo.mini_batch_size=1 \\
        data.train_path=./data/train.jsonl train.total_steps=50
"""

from __future__ import annotations

import contextlib
import fnmatch
import gc
import json
import os
import sys
import textwrap
import time

import yaml

from .config import Config, ConfigError, all_keys, get_key, key_docs, key_types, load_config, to_yaml

_OPTIONS = """
options:
  -h, --help   show this help and exit
  --debug      on an error, show the traceback instead of one line (also: DAPO_NB_DEBUG=1)"""

_CONFIG_ARGS = """
  config.yaml  optional YAML file of groups (model:, data:, ppo:, ...), applied before the overrides
  key=value    dotted overrides with YAML values, e.g. ppo.batch_size=8 reward.weights.format=0.5;
               `dapo-nb keys` lists every key with its default and documentation"""

USAGE = {
    "train": f"""usage: dapo-nb train [config.yaml] [key=value ...]

DAPO training on data.train_path (default builtin:arithmetic/train, the task shipped with the package).
Prints the resolved config, then one JSON summary line (run, metrics file, last checkpoint, last step's metrics).
Metrics go to runs/<train.run_name>/metrics.jsonl, checkpoints to <train.checkpoint_dir>/<train.run_name>/step-N.
backend=trl trains with TRL's GRPOTrainer instead. Data parallel over N processes (either trainer; README
"Scaling out"): accelerate launch --num_processes N -m dapo_nb.cli train ...   (or torchrun --nproc_per_node N)
{_CONFIG_ARGS}

examples:
  dapo-nb train train.total_steps=20 reward.weights.format=0.5
  dapo-nb train run.yaml data.train_path=my_prompts.jsonl train.run_name=mine
  dapo-nb train train.run_name=mine train.resume=true
{_OPTIONS}""",
    "eval": f"""usage: dapo-nb eval [config.yaml] [key=value ...]

Greedy pass@1 and sampled avg@k (eval.num_samples) of model.pretrained_model_name_or_path (a model or a dapo-nb
checkpoint folder) on data.test_path (default builtin:arithmetic/test); the last line is a JSON summary.
Each score comes with its 95% interval (pass@1_ci95, format@1_ci95: Wilson score over the prompts; avg@k_ci95:
percentile bootstrap over prompts, seeded, as the k samples of one prompt are not independent).
eval.compare_to=MODEL evaluates a second model on the same prompts with the same seed and pairs them: McNemar's
exact test on per-problem greedy correctness (b = right only with model.pretrained_model_name_or_path, c = right
only with eval.compare_to); one readable line, then the JSON with both summaries and the test.
{_CONFIG_ARGS}

examples:
  dapo-nb eval eval.num_samples=0 eval.max_prompts=50
  dapo-nb eval model.pretrained_model_name_or_path=checkpoints/dapo/step-50
  dapo-nb eval model.pretrained_model_name_or_path=checkpoints/dapo/step-50 eval.compare_to=default eval.num_samples=0
{_OPTIONS}""",
    "sweep": f"""usage: dapo-nb sweep STUDY.yaml out_dir=DIR [key=value ...]

Run a study: every variation of STUDY.yaml (its grid and variants) with every seed, each trained as `dapo-nb train`
would (or as notebooks/03_training.ipynb with trial: notebook) and judged by `dapo-nb eval` on the same held-out
prompts; the base model is judged once too. Trials run on Ray: a local cluster of this machine by default,
RAY_ADDRESS or sweep.address=ADDRESS for a cluster; sweep.cpus_per_trial / sweep.gpus_per_trial decide how many run
at once. DIR/results.csv (and .parquet) gets one row per trial; DIR/trials/<trial>/ keeps its logs and metrics.
Running the same command again reruns nothing that finished; Ctrl-C stops the running trials and keeps the rest.
  STUDY.yaml   base: {{key: value}}, grid: {{key: [values]}}, variants: [{{...}}], seeds: [0, 1, 2], eval:, front:,
               soups:, sweep:, keep: (dapo_nb/sweep.py documents every key; studies/ has examples)
  key=value    overrides of the study file's keys, e.g. seeds=[0] sweep.max_concurrent=1 eval.prompts=50

examples:
  dapo-nb sweep studies/scalarizers.yaml out_dir=studies/scalarizers
  dapo-nb sweep studies/front.yaml out_dir=/shared/front sweep.address=auto sweep.gpus_per_trial=1
{_OPTIONS}""",
    "smoke": f"""usage: dapo-nb smoke [config.yaml] [key=value ...]

Load the policy, sample dapo.group_size completions for the first ppo.batch_size prompts of data.train_path and
print them with their lengths: a quick check that model, data and sampling settings work together.
{_CONFIG_ARGS}

example:
  dapo-nb smoke ppo.batch_size=2 sampling.max_new_tokens=32
{_OPTIONS}""",
    "export": f"""usage: dapo-nb export verl [config.yaml] out_dir=DIR [key=value ...]

Write a verl DAPO run for this config into DIR: train.parquet and test.parquet (data.train_path / data.test_path
in verl's schema), reward.py (the configured reward as a verl compute_score) and run_verl_dapo.sh. Imports no
torch. verl is the only target.
{_CONFIG_ARGS}

example:
  dapo-nb export verl out_dir=verl_run ppo.batch_size=64 dapo.group_size=16
{_OPTIONS}""",
    "keys": f"""usage: dapo-nb keys [PATTERN]

Every config key as key=default (type), then its documentation (the comment beside the field in dapo_nb/config.py).
PATTERN keeps the keys that contain it (case-insensitive), or, when it holds * ? or [, the keys matching it as a glob.

examples:
  dapo-nb keys
  dapo-nb keys batch
  dapo-nb keys 'reward.*'
{_OPTIONS}""",
}

# The package's own error classes, by module: each says what the user got wrong. Looked up in sys.modules, never
# imported here, so that `export verl` and `keys` stay free of torch (an error of a module never loaded cannot occur).
USER_ERRORS = (
    ("dapo_nb.config", "ConfigError"),
    ("dapo_nb.data", "DataValidationError"),
    ("dapo_nb.models", "ModelNotFoundError"),
    ("dapo_nb.rewards.plugins", "PluginError"),
    ("dapo_nb.rewards.objectives", "ObjectiveError"),
    ("dapo_nb.rewards.scalarize", "ScalarizeError"),
    ("dapo_nb.rewards.weights", "WeightsError"),
    ("dapo_nb.rewards.verl_export", "VerlExportError"),
    ("dapo_nb.runs", "UnfilledBatchError"),
    ("dapo_nb.checkpoint", "DiskFullError"),  # a checkpoint or log line that does not fit: the folder, needed, free
    ("dapo_nb.checkpoint", "CheckpointError"),  # e.g. train.resume from a weights-only checkpoint
    ("dapo_nb.dapo", "DapoInputError"),
    ("dapo_nb.sweep", "StudyError"),
)
# Raised while reading what the user pointed at (a config file, data, a plugin, a model or checkpoint), these mean
# the input is wrong; raised anywhere else, they are bugs.
INPUT_ERRORS = (OSError, ValueError, ImportError, yaml.YAMLError)
EXIT_USER_ERROR, EXIT_BUG, EXIT_INTERRUPTED = 2, 1, 130


@contextlib.contextmanager
def _reading(what: str | None = None):
    """Code in this block reads user input; `what` (a key or file) is named in the error line of what fails here."""
    try:
        yield
    except Exception as err:
        if not hasattr(err, "_dapo_nb_reading"):  # the innermost block names it
            with contextlib.suppress(AttributeError):
                err._dapo_nb_reading = what
        raise


def is_user_error(err: BaseException) -> bool:
    """The package's own errors anywhere; OSError / ValueError / ImportError / YAML errors while reading input."""
    for module, name in USER_ERRORS:
        cls = getattr(sys.modules.get(module), name, None)
        if isinstance(cls, type) and isinstance(err, cls):
            return True
    return hasattr(err, "_dapo_nb_reading") and isinstance(err, INPUT_ERRORS)


def _one_line(text: str) -> str:
    """A multi-line message as one line."""
    out = ""
    for line in (line.strip() for line in str(text).splitlines()):
        if line:
            out = line if not out else out + (" " if out[-1] in ".,:;!?" else "; ") + line
    return out


def error_line(command: str, err: BaseException) -> tuple[int, str]:
    """(exit code, the one line for stderr) for an error that ended `dapo-nb <command>`."""
    what = getattr(err, "_dapo_nb_reading", None)
    prefix = f"dapo-nb {command}: " + (f"{what}: " if what else "")
    message = _one_line(str(err)) or "(no message)"
    if is_user_error(err):
        return EXIT_USER_ERROR, f"{prefix}{type(err).__name__}: {message}"
    return EXIT_BUG, f"{prefix}unexpected {type(err).__name__}: {message} (rerun with --debug for the traceback)"


# ----------------------------------------------------------------------------
# Shared steps: each reads user input, so its failures are the user's to fix


def _split_args(args: list[str]) -> tuple[str | None, list[str]]:
    """A leading *.yaml / *.yml argument is the config file; the rest are overrides."""
    if args and "=" not in args[0] and args[0].endswith((".yaml", ".yml")):
        return args[0], args[1:]
    bad = [a for a in args if "=" not in a]
    if bad:
        raise ConfigError(f"arguments must be key=value overrides (or a leading config .yaml); got {bad[0]!r}")
    return None, args


def _config(args: list[str]) -> Config:
    path, overrides = _split_args(args)
    with _reading(f"config file {path}" if path else None):
        try:
            return load_config(path, overrides)
        except ConfigError as err:  # its message names the file or the override already
            err._dapo_nb_reading = None
            raise


def _prompts(cfg: Config, which: str):
    """The prompts at data.train_path (which="train") or data.test_path ("test"), validated; before the slow model load."""
    from .data import load_prompts_from_config

    with _reading(f"data.{which}_path"):
        return load_prompts_from_config(cfg.data, which)


def _reward(cfg: Config):
    from .rewards import reward_from_config

    with _reading("reward"):
        return reward_from_config(cfg)


def _load(cfg: Config):
    from .models import describe, policy_from_config

    t0 = time.perf_counter()
    with _reading(f"model.pretrained_model_name_or_path={cfg.model.pretrained_model_name_or_path}"):
        model, tokenizer = policy_from_config(cfg.model)
    print(f"loaded {describe(model)} in {time.perf_counter() - t0:.1f}s", flush=True)
    return model, tokenizer


# ----------------------------------------------------------------------------
# Commands


def _yaml_value(value) -> str:
    """A value as an override would spell it: YAML flow style (null, [a, b], {x: 1.0})."""
    text = yaml.safe_dump(value, default_flow_style=True, width=10**9).strip()
    return text[: -len("...")].strip() if text.endswith("\n...") else text


def cmd_keys(args: list[str]) -> None:
    """Print each config key (those matching PATTERN) as key=default (type) with its documentation."""
    if len(args) > 1:
        raise ConfigError(f"dapo-nb keys takes at most one PATTERN, got {len(args)}: {' '.join(args)}")
    pattern = args[0] if args else ""
    glob = any(c in pattern for c in "*?[")
    keys = [k for k in all_keys()
            if (fnmatch.fnmatchcase(k, pattern) if glob else pattern.lower() in k.lower())]
    if not keys:
        raise ConfigError(f"no config key matches {pattern!r}; `dapo-nb keys` lists them all")
    cfg, docs, types = Config(), key_docs(), key_types()
    for key in keys:
        print(f"{key}={_yaml_value(get_key(cfg, key))}  ({types[key]})")
        if docs.get(key):
            print(textwrap.fill(docs[key], width=110, initial_indent="    ", subsequent_indent="    "))


def cmd_train(args: list[str]) -> None:
    """Run DAPO training as configured (backend dapo_nb or trl); print the last step's main metrics as JSON."""
    cfg = _config(args)
    main_process = int(os.environ.get("RANK", "0")) == 0  # under `accelerate launch`, only rank 0 prints
    if main_process:
        print(to_yaml(cfg), flush=True)
    examples = _prompts(cfg, "train")  # a missing or bad file fails now, not after loading the model
    reward = _reward(cfg)
    reward.check_columns(examples)  # as does a reward function that needs a column the data lacks
    if cfg.train.eval_every:
        reward.check_columns(_prompts(cfg, "test"))
    data_parallel = None
    if cfg.backend != "trl":
        from .trainer import init_data_parallel

        # launched by torchrun / accelerate launch (WORLD_SIZE > 1): refuse what cannot work before the model loads,
        # join the process group and take this rank's GPU, so the model loads onto it
        data_parallel = init_data_parallel(cfg)
    model, tokenizer = _load(cfg)
    if cfg.backend == "trl":
        import torch

        from .trl_backend import last_checkpoint, train_with_trl

        history = train_with_trl(cfg, model=model, tokenizer=tokenizer, reward=reward)
        checkpoint = last_checkpoint(cfg)
        if torch.distributed.is_initialized():
            # The trainer's DDP wrapper holds the process group and outlives train_with_trl in reference cycles; freed
            # during interpreter shutdown instead, gloo's worker threads abort the process (SIGABRT, seen under load).
            gc.collect()
            torch.distributed.destroy_process_group()
    else:
        from .trainer import Trainer

        trainer = None
        try:
            with _reading():  # the data, the tokenizer's chat template, train.resume's checkpoint
                trainer = Trainer(cfg, model=model, tokenizer=tokenizer, reward=reward)
            history = trainer.train()
            checkpoint = trainer.checkpoint_root / f"step-{trainer.step}"
        finally:
            if data_parallel.owns_group:  # N replicas (trainer.py): the group goes before interpreter shutdown, as above
                import torch

                trainer = None
                gc.collect()
                torch.distributed.destroy_process_group()
    last = history[-1] if history else {}
    keys = ["step", "reward", "rewards/correctness/mean", "rewards/format/mean", "completions/mean_length", "step_time"]
    if main_process:
        print(json.dumps({"run": cfg.train.run_name, "backend": cfg.backend, "metrics": str(cfg.output_dir / "metrics.jsonl"),
                          "checkpoint": str(checkpoint), **{k: last[k] for k in keys if k in last}}))


def cmd_eval(args: list[str]) -> None:
    """Evaluate a model or checkpoint on data.test_path (and, with eval.compare_to, a second one, paired); the last
    line is a JSON summary."""
    cfg = _config(args)
    examples = _prompts(cfg, "test")
    reward = _reward(cfg)
    reward.check_columns(examples)  # a reward function's missing column fails here, before any model loads
    import copy

    import torch

    from .data import evenly_spread
    from .evaluate import evaluate
    from .stats import paired_comparison

    examples = evenly_spread(examples, cfg.eval.max_prompts)

    def run(model_cfg, key: str) -> tuple[dict, dict]:
        from .models import describe, policy_from_config

        torch.manual_seed(cfg.train.seed)
        t0 = time.perf_counter()
        with _reading(f"{key}={model_cfg.model.pretrained_model_name_or_path}"):
            model, tokenizer = policy_from_config(model_cfg.model)
        print(f"loaded {describe(model)} in {time.perf_counter() - t0:.1f}s", flush=True)
        t0 = time.perf_counter()
        summary = evaluate(
            model, tokenizer, examples, reward, system_prompt=cfg.data.system_prompt,
            max_new_tokens=cfg.sampling.max_new_tokens, context_max_len=cfg.sampling.context_max_len,
            num_samples=cfg.eval.num_samples, temperature=cfg.sampling.temperature or 1.0, seed=cfg.train.seed,
            stats=True)
        per_problem = summary.pop("per_problem")
        del model
        gc.collect()
        return {"model": model_cfg.model.pretrained_model_name_or_path, "data": cfg.data.test_path,
                "seconds": round(time.perf_counter() - t0, 1), **summary}, per_problem

    def scores(s: dict) -> str:
        lo, hi = s["pass@1_ci95"]
        return f"{s['model']}: pass@1 {s['pass@1']:.3f} [{lo:.3f}, {hi:.3f}]"

    first, first_problems = run(cfg, "model.pretrained_model_name_or_path")
    if not cfg.eval.compare_to:
        print(f"{scores(first)} (95% Wilson, n={first['num_prompts']})", flush=True)
        # per-problem greedy correctness, so that a later evaluation can be paired with this one (stats.paired_comparison)
        print(json.dumps({**first, "per_problem": first_problems}))
        return
    other = copy.deepcopy(cfg)
    other.model.pretrained_model_name_or_path = cfg.eval.compare_to
    second, second_problems = run(other, "eval.compare_to")
    test = paired_comparison(first_problems, second_problems)
    verdict = "significant" if test["significant"] else "not significant"
    print(f"{scores(first)} vs {scores(second)} (95% Wilson, n={test['n']}); McNemar exact: b={test['b']} "
          f"c={test['c']} p={test['p_value']:.4g}, {verdict} at {test['alpha']}", flush=True)
    print(json.dumps({"model": first, "compare_to": second, "pass@1_diff": first["pass@1"] - second["pass@1"],
                      "mcnemar": test}))


def cmd_smoke(args: list[str]) -> None:
    """Load the model, generate G rollouts for a few training prompts, print them."""
    cfg = _config(args)
    examples = _prompts(cfg, "train")[: cfg.ppo.batch_size]
    print(to_yaml(cfg))
    import torch

    from .data import render_prompts
    from .generate import generate_rollouts

    torch.manual_seed(cfg.train.seed)
    model, tokenizer = _load(cfg)
    with _reading("model.pretrained_model_name_or_path"):  # a tokenizer without a chat template
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


def cmd_sweep(args: list[str]) -> None:
    """`sweep STUDY.yaml out_dir=DIR [key=value ...]`: run or continue a study on Ray; the table is DIR/results.csv."""
    from .sweep import StudyError, run_sweep

    if not args or "=" in args[0] or not args[0].endswith((".yaml", ".yml")):
        raise StudyError("usage: dapo-nb sweep STUDY.yaml out_dir=DIR [key=value ...] (the study file comes first)")
    out_dirs = [a.split("=", 1)[1] for a in args[1:] if a.startswith("out_dir=")]
    if len(out_dirs) != 1 or not out_dirs[0]:
        raise StudyError("dapo-nb sweep needs exactly one out_dir=DIR (where the trials and results.csv go)")
    overrides = [a for a in args[1:] if not a.startswith("out_dir=")]
    bad = [a for a in overrides if "=" not in a]
    if bad:
        raise StudyError(f"arguments after the study file must be key=value; got {bad[0]!r}")
    table = run_sweep(args[0], out_dirs[0], overrides)
    failed = table[table["status"] != "done"] if len(table) else table
    for _, row in failed.iterrows():
        print(f"failed: {row['trial']}: {row['error']}", file=sys.stderr)


def cmd_export(args: list[str]) -> None:
    """`export verl out_dir=DIR ...`: write a verl DAPO run (data, reward module, launch script) for this config."""
    if not args or args[0] != "verl":
        raise ConfigError("usage: dapo-nb export verl [config.yaml] out_dir=DIR [key=value ...] (verl is the only target)")
    out_dirs = [a.split("=", 1)[1] for a in args[1:] if a.startswith("out_dir=")]
    if len(out_dirs) != 1 or not out_dirs[0]:
        raise ConfigError("dapo-nb export verl needs exactly one out_dir=DIR (where the run's files go)")
    cfg = _config([a for a in args[1:] if not a.startswith("out_dir=")])
    from .verl_recipe import export_verl

    with _reading():  # data files, the reward plugin, out_dir
        paths = export_verl(cfg, out_dirs[0])
    for what, path in paths.items():
        print(f"{what:7s} {path}")
    print(f"run it on a GPU machine with verl installed: bash {paths['script']}")


COMMANDS = {"train": cmd_train, "eval": cmd_eval, "sweep": cmd_sweep, "smoke": cmd_smoke, "export": cmd_export,
            "keys": cmd_keys}


def _debug_from_env() -> bool:
    return os.environ.get("DAPO_NB_DEBUG", "").strip().lower() not in ("", "0", "false", "no", "off")


def main(argv: list[str] | None = None) -> int:
    """Run one command; errors end it with one line on stderr (exit 2: user error, 1: bug) unless --debug."""
    argv = list(sys.argv[1:] if argv is None else argv)
    debug = "--debug" in argv or _debug_from_env()
    argv = [a for a in argv if a != "--debug"]
    command, args = (argv[0], argv[1:]) if argv else ("--help", [])
    if command not in COMMANDS and command not in ("-h", "--help"):
        print(f"dapo-nb: unknown command {command!r}; choose one of {', '.join(COMMANDS)} (dapo-nb --help)",
              file=sys.stderr)
        return EXIT_USER_ERROR
    try:
        if command in ("-h", "--help"):
            print(__doc__)
        elif "-h" in args or "--help" in args:
            print(USAGE[command])
        else:
            COMMANDS[command](args)
        sys.stdout.flush()  # a closed pipe shows here, not at interpreter exit
    except KeyboardInterrupt:
        if debug:
            raise
        print(f"dapo-nb {command}: interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED
    except BrokenPipeError:  # the reader of stdout went away (dapo-nb keys | head): nothing left to say
        with contextlib.suppress(OSError):
            os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0
    except Exception as err:
        if debug:
            raise
        code, line = error_line(command, err)
        print(line, file=sys.stderr, flush=True)
        return code
    return 0


if __name__ == "__main__":
    sys.exit(main())
