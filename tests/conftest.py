"""Shared fixtures: the embedded model (cached once per machine) and tiny random-weight models."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from transformers import AutoTokenizer, LlamaConfig, LlamaForCausalLM

from dapo_nb.models import embedded_model_dir, load_policy


@pytest.fixture(scope="session")
def embedded_dir():
    """Safetensors directory of the embedded SmolLM2-135M-Instruct (dequantized on first use, ~30 s)."""
    return embedded_model_dir()


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory, embedded_dir):
    """A 2-layer random Llama with the embedded tokenizer (its chat template included), saved like a checkpoint."""
    torch.manual_seed(0)
    tokenizer = AutoTokenizer.from_pretrained(embedded_dir)
    config = LlamaConfig(
        vocab_size=len(tokenizer), hidden_size=32, intermediate_size=64, num_hidden_layers=2,
        num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=512,
        bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id,
        tie_word_embeddings=True,
    )
    path = tmp_path_factory.mktemp("tiny-llama")
    LlamaForCausalLM(config).save_pretrained(path)
    tokenizer.save_pretrained(path)
    return path


@pytest.fixture()
def tiny_policy(tiny_model_dir):
    """(model, tokenizer) of the tiny random model, fresh for each test."""
    return load_policy(str(tiny_model_dir))


@pytest.fixture(scope="session")
def embedded_policy(embedded_dir):
    """(model, tokenizer) of the real embedded model, shared by the slow tests (do not train it in place)."""
    return load_policy("default")


@pytest.fixture
def scratch_registry():
    """Remove the objectives a test registers."""
    from dapo_nb.rewards import OBJECTIVES

    before = set(OBJECTIVES)
    yield
    for name in set(OBJECTIVES) - before:
        del OBJECTIVES[name]


@pytest.fixture()
def train_file(tmp_path):
    """12 tiny prompts in the seed's jsonl schema."""
    import json

    path = tmp_path / "train.jsonl"
    rows = [{"qid": f"q{i}", "prompt": f"What is {i} + {i}?", "ground_truth": str(2 * i)} for i in range(12)]
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


@pytest.fixture()
def model_dir(tmp_path, tiny_model_dir):
    """A private copy of the tiny model at tmp_path/model (training may write next to it)."""
    import shutil

    return Path(shutil.copytree(tiny_model_dir, tmp_path / "model"))
