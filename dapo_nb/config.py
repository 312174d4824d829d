"""Every knob of a dapo-nb run, documented once, with dotted overrides and YAML files.

A run is configured by one `Config`: the training `backend` and groups (`model`, `data`,
`sampling`, `ppo`, `dapo`, `reward`, `train`, `eval`, `trl`). The seed prototype's keys keep their names and meaning:
`model.pretrained_model_name_or_path`, `model.force_float32`, `sampling.max_new_tokens`,
`sampling.context_max_len`, `ppo.batch_size`, `ppo.mini_batch_size`, `data.train_path`,
`train.total_steps`.

    cfg = load_config("run.yaml", ["ppo.batch_size=8", "reward.weights.clarity=0.25"])

Overrides are `a.b.c=value` with the value read as YAML (`true`, `1e-5`, `[a, b]`, `{10: {x: 1}}`),
like Hydra's syntax but with no Hydra. An unknown key fails with the closest valid key; a value
of the wrong type fails naming the key and the expected type; option strings are checked with
the list of valid ones.
"""

from __future__ import annotations

import dataclasses
import difflib
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from .data import ANSWER_FORMATS
from .rewards.plugins import ON_ERROR, PluginError, config_plugin_entries, parse_plugin_entries
from .rewards.scalarize import NORMALIZATIONS, SCALARIZERS


# Options of string-valued keys. Those of the reward live with the reward code, which checks them too; the DAPO
# loss's live here and dapo.py imports them (this module must stay importable without torch).
STD_SCALES = ("group", "batch", "none")  # dapo.std_scale
LOSS_AGGS = ("token-mean", "seq-mean-token-mean", "seq-mean-token-sum")  # dapo.loss_agg
REPORT_TO = ("none", "tensorboard", "wandb", "trackio")  # train.report_to: TRL's tracker names (trackers.py)
OPTIONS = {
    "backend": ("dapo_nb", "trl"),
    "trl.vllm_mode": ("colocate", "server"),
    "model.dtype": ("auto", "float32", "bfloat16", "float16"),
    "model.autocast": ("auto", "none", "bf16"),
    "dapo.on_unfilled": ("train", "skip", "error"),
    "train.on_disk_full": ("stop", "skip"),
    "dapo.loss_agg": LOSS_AGGS,
    "dapo.std_scale": STD_SCALES,
    "reward.scalarizer": SCALARIZERS,
    "reward.normalization": NORMALIZATIONS,
    "reward.on_error": ON_ERROR,
    "data.answer_format": ANSWER_FORMATS,
}


# Dict-valued keys: a YAML mapping replaces the whole dict, and `key.<entry>=value` sets one entry
DICT_KEYS = ("reward.weights", "reward.ideal", "reward.schedule", "trl.args", "data.where", "data.train_where")


class ConfigError(ValueError):
    """A config key or value is wrong; the message says which and how to fix it."""


# ----------------------------------------------------------------------------
# The groups


@dataclass
class LoraConfig:
    r: int = 0  # LoRA rank; 0 = off (full fine-tuning). Adapters let a 7B policy fit one GPU.
    alpha: int = 32  # LoRA scaling numerator (scale = alpha / r)
    dropout: float = 0.0  # dropout on the adapter input
    target_modules: list[str] = field(default_factory=lambda: ["q_proj", "k_proj", "v_proj", "o_proj"])  # layers to adapt
    merge_on_save: bool = False  # also save a merged full model beside the adapter in each checkpoint


@dataclass
class ModelConfig:
    pretrained_model_name_or_path: str = "default"  # HF id, local dir / checkpoint, or `default` (embedded SmolLM2-135M-Instruct)
    force_float32: bool = True  # seed key: float32 weights (stable; the only fast dtype on CPUs without bf16)
    dtype: str = "auto"  # used when force_float32=false: auto (bf16 on capable GPUs) | float32 | bfloat16 | float16
    device_map: str | None = None  # `auto` shards one model across visible GPUs (model parallel, as in the seed)
    gradient_checkpointing: bool = False  # trade compute for activation memory in the update pass
    autocast: str = "auto"  # auto | none | bf16: rollouts and update forward passes under bf16 autocast, weights and
    #                         optimizer stay in their dtype, log-softmax in float32; metric logprobs/update_vs_rollout_abs_diff
    #                         shows the cost; auto = bf16 for a float32 model on a CPU with native bf16, else none
    trust_remote_code: bool = False  # allow custom model code from the hub
    lora: LoraConfig = field(default_factory=LoraConfig)


@dataclass
class DataConfig:
    train_path: str = "builtin:arithmetic/train"  # seed key: jsonl {"qid","prompt","ground_truth"}, parquet, HF dataset,
    #                 or builtin:<task>/<split>, a file shipped in the package (the arithmetic task); paths are relative to the working directory
    test_path: str = "builtin:arithmetic/test"  # held-out prompts for `dapo-nb eval` and before/after checks (same forms as train_path)
    system_prompt: str | None = None  # None = the task's default instruction (answer format); "" = no system message
    shuffle: bool = True  # shuffle training prompts each pass (seeded by train.seed)
    train_split: str = "train"  # split of a Hugging Face dataset or data folder read for train_path (slices like train[:1000] work)
    test_split: str = "test"  # split read for test_path (`dapo-nb eval`, before/after checks)
    subset: str | None = None  # Hugging Face dataset config (subset), e.g. main for openai/gsm8k; None = its only one
    prompt_key: str = "prompt"  # field holding the question (text or chat messages), e.g. question (GSM8K), problem (MATH)
    answer_key: str = "ground_truth"  # field holding the reference answer, e.g. answer (GSM8K), solution (MATH); a.b = nested
    answer_format: str = "plain"  # how answer_key holds the answer: plain (all of it) | gsm8k (after the last ####) | boxed (last \boxed{})
    id_key: str | None = None  # field holding a unique id; None = qid when present, else <data_source>-<row>
    skip_unparsed: bool = False  # drop records whose answer answer_format cannot find (counted in one warning) instead of failing
    where: dict[str, Any] = field(default_factory=dict)  # keep only records whose fields have these values, in train_path and
    #                 test_path alike: {level: [1]} = the shipped task's easiest level (make demo); a list = any of them; {} = all
    train_where: dict[str, Any] = field(default_factory=dict)  # as data.where, after it, for train_path only: {level: [1]}
    #                 = train on the easiest level, evaluate on every level; {} = train on all data.where keeps


@dataclass
class SamplingConfig:
    max_new_tokens: int = 64  # seed key: completion budget L_max in tokens
    context_max_len: int = 256  # seed key: longest prompt in tokens; longer prompts lose their left part (warned)
    do_sample: bool = True  # false = greedy (the seed's only mode; no group signal, see dapo.dynamic_sampling)
    temperature: float = 0.7  # sampling temperature; 0 means greedy. Below 1 so small models' rollouts stay near their
    #                           greedy answers (SmolLM2-135M: sampled accuracy at T=1 is a fraction of greedy); the loss uses the same T
    top_p: float = 1.0  # nucleus sampling mass (1 = off)
    top_k: int = 0  # keep the k most likely tokens (0 = off)


@dataclass
class PPOConfig:
    batch_size: int = 4  # seed key: prompt groups per training step (each has dapo.group_size completions)
    mini_batch_size: int = 2  # seed key: prompt groups per optimizer update (batch_size / mini_batch_size updates per epoch); 0 or >= batch_size = the whole batch
    epochs: int = 1  # mu in the DAPO paper: passes over each rollout batch; >1 makes the clip matter
    micro_batch_size: int = 0  # completions per forward/backward (gradient accumulation); 0 = a whole mini batch
    learning_rate: float = 1e-5  # AdamW lr (DAPO paper: 1e-6 for 32B; the 135M default model learns in minutes at 1e-5, see benchmarks/README.md)
    warmup_steps: int = 0  # linear warm-up of the lr over this many optimizer updates
    weight_decay: float = 0.0  # AdamW weight decay
    max_grad_norm: float = 1.0  # gradient clipping by global norm (0 = off)

    @property
    def groups_per_update(self) -> int:
        """Prompt groups per optimizer update: mini_batch_size, or the whole batch when it is 0 or not smaller."""
        return min(self.mini_batch_size or self.batch_size, self.batch_size)


@dataclass
class DAPOConfig:
    group_size: int = 8  # G: completions sampled per prompt (more gives more groups with both right and wrong answers)
    eps_low: float = 0.2  # lower clip: ratio >= 1 - eps_low (DAPO Clip-Higher keeps this at 0.2)
    eps_high: float = 0.28  # upper clip: ratio <= 1 + eps_high (DAPO raises it to 0.28 against entropy collapse)
    loss_agg: str = "token-mean"  # token-mean (DAPO, Eq. 8) | seq-mean-token-mean (GRPO) | seq-mean-token-sum (Dr. GRPO)
    std_scale: str = "group"  # advantage scale: group (GRPO/DAPO) | batch | none (Dr. GRPO)
    beta: float = 0.0  # KL weight to a frozen reference (k3); 0 = DAPO's choice, and no reference model is loaded
    dynamic_sampling: bool = True  # drop groups without signal and keep sampling until ppo.batch_size groups
    filter_metric: str = "correctness"  # an objective name or `score`; correctness drops all-wrong groups
    filter_threshold: float = 0.0  # a group is kept when the std of filter_metric is above this
    max_gen_batches: int = 4  # sample at most this many generation batches per step, then dapo.on_unfilled decides
    on_unfilled: str = "train"  # fewer than ppo.batch_size groups with signal after max_gen_batches: train (on those
    #                             kept) | skip (no update this step) | error (stop the run); counted as dynamic/batch_filled=0
    gen_batch_size: int = 0  # prompts per generation batch (DAPO over-samples); 0 = ppo.batch_size
    overlong_filtering: bool = False  # mask truncated completions out of the loss (DAPO overlong filtering)


@dataclass
class RewardConfig:
    objectives: list[str] = field(default_factory=lambda: ["correctness", "format"])  # registered objective names
    weights: dict[str, float] = field(default_factory=lambda: {"correctness": 1.0, "format": 0.1})  # initial weights
    scalarizer: str = "weighted_sum"  # weighted_sum | tchebycheff | smooth_tchebycheff
    ideal: dict[str, float] = field(default_factory=dict)  # Tchebycheff ideal point z*_i per objective; unlisted = the objective's upper bound
    mu: float = 0.1  # smooth_tchebycheff smoothing: -> 0 is tchebycheff, large spreads credit over every objective's gap
    normalization: str = "none"  # none | group_zscore (z-score each objective within a prompt group, then combine)
    plugin: str | None = None  # one reward plugin, shorthand for a one-entry reward.plugins (placed first when both are set)
    plugins: list[Any] = field(default_factory=list)  # reward plugins scored together with the objectives: file.py | file.py:function | {path, function, name, contract, format, kwargs} (kwargs: function is a factory called with them); objectives <name>, <name>.<breakdown key>
    on_error: str = "raise"  # what a failing plugin/objective call does: raise | zero | drop
    schedule: dict[int, dict[str, float]] = field(default_factory=dict)  # {step: weights} from that step on (steps count from 1, as in metrics)
    overlong_buffer_len: int = 16  # L_cache of DAPO's soft overlong punishment (objective `overlong`), L_max = max_new_tokens
    marked_answer_only: bool = True  # correctness needs a marked final answer (Answer: line, ####, \boxed{}); false = the last number counts too


@dataclass
class TrainConfig:
    total_steps: int = 50  # seed key: training steps (one rollout batch each)
    max_minutes: float = 0.0  # wall-clock budget: no new step starts after this many minutes (0 = none); saves as usual
    seed: int = 0  # seeds data order, sampling and init; same seed -> same run on CPU
    run_name: str = "dapo"  # names runs/<run_name> and checkpoints/<run_name>
    output_dir: str | None = None  # where metrics.jsonl and rollouts.jsonl go; None = runs/<run_name>
    checkpoint_dir: str = "checkpoints"  # checkpoints go to <checkpoint_dir>/<run_name>/step-N
    save_every: int = 25  # checkpoint every N steps (0 = only at the end)
    save_total_limit: int = 2  # keep the newest N step checkpoints of the run, delete older ones after each save (0 = all);
    #                            the last one always stays and best/ (keep_best) is apart; TRL's save_total_limit under backend=trl
    save_optimizer: bool = True  # also save the optimizer state (2/3 of a full fine-tune's checkpoint); false = weights only,
    #                              for checkpoints that are only evaluated or shared: train.resume refuses them (TRL's save_only_model)
    keep_previous_runs: int = 1  # a fresh run moves an earlier run's checkpoints of its name to <run_name>.before-<time>: keep the
    #                              N newest such sets, delete older ones (0 = delete at once); printed with their size every time
    keep_best: str = "eval/pass@1"  # with eval_every: when this held-out metric (higher is better) beats the run's best, that step's
    #                                 weights go to <checkpoint_dir>/<run_name>/best (weights only, replaced atomically, never pruned); "" = off
    on_disk_full: str = "stop"  # a save that does not fit the free disk space: stop (one line, exit 2, the last checkpoint intact) |
    #                             skip (keep training and try again at the next save; the final save always stops)
    resume: bool = False  # continue from the latest checkpoint of this run
    log_rollouts: int = 4  # completions per step written to rollouts.jsonl
    threads: int = 0  # torch CPU threads; 0 = before each step, the cores other processes left free (cpu_threads.py)
    report_to: list[str] = field(default_factory=lambda: ["none"])  # trackers (TRL's names): none | tensorboard | wandb | trackio, or a list [tensorboard, wandb] (trackers.py)
    tracker_project: str = "dapo-nb"  # the W&B / Trackio project runs are logged to (train.run_name names the run)
    weights_file: str = ""  # steer a headless run: a YAML mapping {objective: weight} re-read before each step when it changed
    #                         and applied like a slider move (same checks; bad content is warned about once and the weights
    #                         stay), logged as weights/<name>; under data parallel rank 0 reads it for every rank; "" = off (backend dapo_nb)
    eval_every: int = 0  # greedy pass@1 / format@1 on data.test_path every N steps and after the last, in that step's metrics (eval/*); 0 = off (backend dapo_nb)
    eval_prompts: int = 0  # held-out prompts evaluated during training (N spread evenly over the file); 0 = eval.max_prompts (0 there: all)
    eval_at_start: bool = False  # with eval_every: also evaluate before the first step of a fresh run (a step-0 metrics line of eval/* only)


@dataclass
class TRLConfig:
    use_vllm: bool = False  # backend=trl on GPUs: generate with vLLM (TRL's use_vllm; needs `pip install vllm`)
    vllm_mode: str = "colocate"  # colocate (vLLM shares the training GPUs) | server (a separate `trl vllm-serve`)
    args: dict[str, Any] = field(default_factory=dict)  # any other GRPOConfig field, e.g. {bf16: true, deepspeed: ds.json}


@dataclass
class EvalConfig:
    num_samples: int = 4  # k of sampled avg@k (0 = greedy pass@1 only)
    max_prompts: int = 0  # evaluate N test prompts spread evenly over the file (data.evenly_spread: files are often ordered by difficulty); 0 = all
    compare_to: str = ""  # a second model or checkpoint for `dapo-nb eval`: both run on the same prompts and seed, compared by McNemar's exact test on per-problem greedy correctness; empty = evaluate one model


@dataclass
class Config:
    backend: str = "dapo_nb"  # the training loop: dapo_nb (ours, full DAPO) | trl (TRL's GRPOTrainer, Accelerate data parallel)
    model: ModelConfig = field(default_factory=ModelConfig)
    data: DataConfig = field(default_factory=DataConfig)
    sampling: SamplingConfig = field(default_factory=SamplingConfig)
    ppo: PPOConfig = field(default_factory=PPOConfig)
    dapo: DAPOConfig = field(default_factory=DAPOConfig)
    reward: RewardConfig = field(default_factory=RewardConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    eval: EvalConfig = field(default_factory=EvalConfig)
    trl: TRLConfig = field(default_factory=TRLConfig)

    @property
    def output_dir(self) -> Path:
        """runs/<run_name> unless train.output_dir says otherwise."""
        return Path(self.train.output_dir or Path("runs") / self.train.run_name)

    def validate(self) -> Config:
        """Check option strings and relations between fields; returns self."""
        for key, options in OPTIONS.items():
            _choice(key, get_key(self, key), list(options))
        for key in ["sampling.max_new_tokens", "sampling.context_max_len", "ppo.batch_size",
                    "ppo.epochs", "dapo.group_size", "dapo.max_gen_batches", "train.total_steps"]:
            if get_key(self, key) < 1:
                raise ConfigError(f"{key}={get_key(self, key)} must be >= 1")
        if self.ppo.mini_batch_size < 0 or self.ppo.batch_size % self.ppo.groups_per_update:
            raise ConfigError(f"ppo.mini_batch_size={self.ppo.mini_batch_size} must divide ppo.batch_size={self.ppo.batch_size} "
                              "(or be 0 or >= it: one update on the whole batch)")
        if not (0 <= self.dapo.eps_low < 1 and self.dapo.eps_high >= 0):
            raise ConfigError(f"need 0 <= dapo.eps_low < 1 and dapo.eps_high >= 0 (got {self.dapo.eps_low}, {self.dapo.eps_high})")
        if not 0 < self.sampling.top_p <= 1:
            raise ConfigError(f"sampling.top_p={self.sampling.top_p} must be in (0, 1]")
        if self.ppo.learning_rate <= 0 or self.sampling.temperature < 0 or self.dapo.beta < 0:
            raise ConfigError("ppo.learning_rate must be > 0, sampling.temperature and dapo.beta >= 0")
        for key in ["data.prompt_key", "data.answer_key", "data.train_split", "data.test_split", "data.id_key", "data.subset"]:
            value = get_key(self, key)
            if not (value is None and key in ("data.id_key", "data.subset")) and not str(value).strip():
                raise ConfigError(f"{key}={value!r} must not be empty" + ("; use null for none" if key in ("data.id_key", "data.subset") else ""))
        for key in ("where", "train_where"):
            for name, wanted in getattr(self.data, key).items():
                values = wanted if isinstance(wanted, list) else [wanted]
                if not str(name).strip() or not values or any(isinstance(v, (dict, list)) or v is None for v in values):
                    raise ConfigError(f"data.{key}={getattr(self.data, key)!r}: each entry is a field name and a value or a "
                                      f"non-empty list of values, e.g. data.{key}={{level: [1, 2]}}")
        if self.train.save_total_limit < 0 or self.train.keep_previous_runs < 0:
            raise ConfigError(f"train.save_total_limit={self.train.save_total_limit} (0 = keep all) and "
                              f"train.keep_previous_runs={self.train.keep_previous_runs} (0 = keep none) must be >= 0")
        if self.train.keep_best and not self.train.keep_best.startswith("eval/"):
            raise ConfigError(f"train.keep_best={self.train.keep_best!r} must name a held-out metric of train.eval_every, "
                              "e.g. eval/pass@1, eval/format@1 or eval/reward; \"\" = off")
        unknown = [name for name in self.train.report_to if name not in REPORT_TO]
        if unknown or ("none" in self.train.report_to and len(self.train.report_to) > 1):
            raise ConfigError(f"train.report_to={self.train.report_to}: "
                              + (f"{unknown[0]!r} is not valid; " if unknown else "none cannot be combined with a tracker; ")
                              + f"choose from {', '.join(REPORT_TO)}, several as a list: train.report_to=[tensorboard, wandb]")
        try:  # entries and names only; files are imported when the reward is built
            parse_plugin_entries(config_plugin_entries(self.reward))
        except PluginError as error:
            raise ConfigError(f"reward.plugins / reward.plugin: {error}") from None
        return self


def _choice(key: str, value: str, options: list[str]) -> None:
    if value not in options:
        raise ConfigError(f"{key}={value!r} is not valid; choose one of: {', '.join(options)}")


# ----------------------------------------------------------------------------
# Dotted keys


def leaf_fields(node=None, prefix: str = "") -> list[tuple[str, dataclasses.Field, type]]:
    """(dotted key, its dataclass field, the dataclass declaring it) for every settable key, in declaration order."""
    node = Config() if node is None else node
    out = []
    for f in dataclasses.fields(node):
        value = getattr(node, f.name)
        if dataclasses.is_dataclass(value):
            out += leaf_fields(value, f"{prefix}{f.name}.")
        else:
            out.append((prefix + f.name, f, type(node)))
    return out


def all_keys() -> list[str]:
    """Every settable dotted key, e.g. `ppo.batch_size`."""
    return [key for key, _, _ in leaf_fields()]


def key_types() -> dict[str, str]:
    """Each dotted key's annotation as written in this file, e.g. 'str | None'."""
    return {key: f.type if isinstance(f.type, str) else getattr(f.type, "__name__", str(f.type))
            for key, f, _ in leaf_fields()}


def get_key(cfg: Config, key: str):
    """Value at a dotted key."""
    node = cfg
    for part in key.split("."):
        node = getattr(node, part)
    return node


def key_docs() -> dict[str, str]:
    """Each dotted key's documentation, read from this file's source: the `# ...` comment after the key's dataclass
    field, followed by the comment-only lines right below the field (its continuation lines, e.g. model.autocast's).
    The field comments are the one place a key is documented; `dapo-nb keys` prints them. A key without a comment
    maps to "". Convention this relies on: a comment-only line directly below a field continues that field's comment."""
    import ast
    import inspect
    import io
    import sys
    import tokenize

    try:
        source = inspect.getsource(sys.modules[__name__])
    except (OSError, TypeError):  # no source shipped (e.g. a .pyc-only install)
        return {key: "" for key in all_keys()}
    comments: dict[int, tuple[str, bool]] = {}  # line -> (text without '#', whether the line holds only the comment)
    for token in tokenize.generate_tokens(io.StringIO(source).readline):
        if token.type == tokenize.COMMENT:
            alone = not token.line[: token.start[1]].strip()
            comments[token.start[0]] = (token.string.lstrip("#").strip(), alone)
    fields_docs: dict[str, dict[str, str]] = {}  # class name -> field name -> doc
    for node in ast.parse(source).body:
        if not isinstance(node, ast.ClassDef):
            continue
        docs = fields_docs.setdefault(node.name, {})
        for stmt in node.body:
            if not (isinstance(stmt, ast.AnnAssign) and isinstance(stmt.target, ast.Name)):
                continue
            text, alone = comments.get(stmt.end_lineno, ("", True))
            parts = [] if alone else [text]
            line = stmt.end_lineno + 1
            while comments.get(line, ("", False))[1]:  # also below a class's last field, outside its AST node
                parts.append(comments[line][0])
                line += 1
            docs[stmt.target.id] = " ".join(p for p in parts if p)

    return {key: fields_docs.get(owner.__name__, {}).get(f.name, "") for key, f, owner in leaf_fields()}


def set_key(cfg: Config, key: str, value) -> None:
    """Set a dotted key, checking that it exists and that the value has the field's type."""
    parts = key.split(".")
    # reward.weights.<name>=v and reward.schedule.<step>=... address entries of dict fields
    if len(parts) >= 3 and ".".join(parts[:2]) in DICT_KEYS:
        container_key, entry = ".".join(parts[:2]), ".".join(parts[2:])
        current = dict(get_key(cfg, container_key))
        current[int(entry) if container_key == "reward.schedule" and entry.isdigit() else entry] = value
        return set_key(cfg, container_key, current)
    node = cfg
    for i, part in enumerate(parts):
        names = {f.name: f for f in dataclasses.fields(node)}
        if part not in names:
            raise ConfigError(_unknown_key_message(key))
        if i == len(parts) - 1:
            hint = typing.get_type_hints(type(node))[part]
            setattr(node, part, coerce_value(key, value, hint))
            return
        node = getattr(node, part)
        if not dataclasses.is_dataclass(node):
            raise ConfigError(_unknown_key_message(key))


def _unknown_key_message(key: str) -> str:
    close = difflib.get_close_matches(key, all_keys(), n=3, cutoff=0.5)
    hint = f"; did you mean {' or '.join(close)}?" if close else "; `dapo-nb keys` lists every key"
    return f"unknown config key {key!r}{hint}"


def coerce_value(key: str, value, hint):
    """Return value converted to the annotated type, or raise ConfigError naming key and type."""
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if hint is Any:
        return value
    if origin in (typing.Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        inner = [a for a in args if a is not type(None)]
        return coerce_value(key, value, inner[0])
    if hint is bool:
        if isinstance(value, bool):
            return value
    elif hint is int:
        if isinstance(value, str) and value.strip().lstrip("-").isdigit():  # JSON turns dict keys into strings
            value = int(value)
        if isinstance(value, int) and not isinstance(value, bool):
            return value
    elif hint is float:
        if isinstance(value, str):  # YAML 1.1 reads 1e-5 (no dot) as a string
            try:
                value = float(value)
            except ValueError:
                pass
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
    elif hint is str:
        if isinstance(value, (str, int, float)) and not isinstance(value, bool):
            return str(value)
    elif origin is list:
        if isinstance(value, str):
            value = [v.strip() for v in value.split(",") if v.strip()]
        if isinstance(value, list):
            return [coerce_value(f"{key}[{i}]", v, args[0]) for i, v in enumerate(value)]
    elif origin is dict:
        if isinstance(value, dict):
            return {coerce_value(f"{key} key", k, args[0]): coerce_value(f"{key}.{k}", v, args[1]) for k, v in value.items()}
    name = getattr(hint, "__name__", str(hint))
    raise ConfigError(f"{key}={value!r} has the wrong type: expected {name}, got {type(value).__name__}")


# ----------------------------------------------------------------------------
# Building a Config


def parse_override(text: str) -> tuple[str, object]:
    """`a.b=value` -> ("a.b", YAML-parsed value)."""
    if "=" not in text:
        raise ConfigError(f"override {text!r} must look like key=value, e.g. ppo.batch_size=8")
    key, raw = text.split("=", 1)
    try:
        value = yaml.safe_load(raw) if raw.strip() else ""
    except yaml.YAMLError:
        value = raw
    return key.strip(), value


def apply_dict(cfg: Config, data: dict, prefix: str = "", source: str = "") -> None:
    """Apply a nested dict (from YAML or a checkpoint) onto cfg."""
    for k, v in data.items():
        key = f"{prefix}{k}"
        if isinstance(v, dict) and key not in DICT_KEYS:
            apply_dict(cfg, v, key + ".", source)
            continue
        try:
            set_key(cfg, key, v)
        except ConfigError as err:
            raise ConfigError(f"{source}: {err}" if source else str(err)) from None


def load_config(path: str | Path | None = None, overrides: list[str] | None = None) -> Config:
    """Defaults, then the YAML file, then `key=value` overrides; validated."""
    cfg = Config()
    if path:
        path = Path(path)
        if not path.is_file():
            raise ConfigError(f"config file {path} does not exist")
        data = yaml.safe_load(path.read_text()) or {}
        if not isinstance(data, dict):
            raise ConfigError(f"{path}: the top level must be a mapping of groups (model:, ppo:, ...)")
        apply_dict(cfg, data, source=str(path))
    for text in overrides or []:
        key, value = parse_override(text)
        set_key(cfg, key, value)
    return cfg.validate()


def to_dict(cfg: Config) -> dict:
    """Plain nested dict (JSON/YAML-safe)."""
    return dataclasses.asdict(cfg)


def from_dict(data: dict) -> Config:
    """Inverse of to_dict."""
    cfg = Config()
    apply_dict(cfg, data)
    return cfg.validate()


def to_yaml(cfg: Config) -> str:
    """The resolved config as YAML, as printed at the start of a run."""
    return yaml.safe_dump(to_dict(cfg), sort_keys=False)
