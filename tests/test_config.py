"""Config: the seed's keys, dotted overrides, YAML, and errors that say how to fix them."""

from __future__ import annotations

import pytest

from dapo_nb.config import ConfigError, all_keys, from_dict, load_config, to_dict

SEED_COMMAND = (
    "model.pretrained_model_name_or_path=Qwen/Qwen2.5-1.5B-Instruct model.force_float32=true "
    "sampling.max_new_tokens=16 sampling.context_max_len=64 ppo.batch_size=1 ppo.mini_batch_size=1 "
    "data.train_path=./data/train.jsonl train.total_steps=50"
).split()


def test_the_seed_command_line_parses_with_its_meaning():
    cfg = load_config(overrides=SEED_COMMAND)
    assert cfg.model.pretrained_model_name_or_path == "Qwen/Qwen2.5-1.5B-Instruct"
    assert cfg.model.force_float32 is True
    assert (cfg.sampling.max_new_tokens, cfg.sampling.context_max_len) == (16, 64)
    assert (cfg.ppo.batch_size, cfg.ppo.mini_batch_size, cfg.train.total_steps) == (1, 1, 50)
    assert cfg.data.train_path == "./data/train.jsonl"


def test_names_users_rely_on_exist():
    keys = set(all_keys())
    for key in ["dapo.group_size", "dapo.eps_low", "dapo.eps_high", "dapo.loss_agg", "dapo.dynamic_sampling",
                "dapo.filter_metric", "dapo.max_gen_batches", "sampling.do_sample", "sampling.temperature", "train.seed",
                "train.run_name", "train.output_dir", "train.save_every", "train.resume", "reward.plugin",
                "reward.weights", "reward.on_error", "model.lora.r", "model.lora.alpha", "model.lora.target_modules"]:
        assert key in keys, key
    cfg = load_config()
    assert (cfg.dapo.eps_low, cfg.dapo.eps_high, cfg.dapo.loss_agg) == (0.2, 0.28, "token-mean")
    assert cfg.dapo.beta == 0.0 and cfg.dapo.filter_metric == "correctness"


def test_dotted_dict_entries_yaml_values_and_scientific_floats():
    cfg = load_config(overrides=["reward.weights.clarity=0.25", "reward.schedule={5: {format: 0.5}}", "ppo.learning_rate=1e-5",
                                 "model.lora.target_modules=[q_proj, v_proj]", "train.output_dir=null"])
    assert cfg.reward.weights["clarity"] == 0.25 and cfg.reward.weights["correctness"] == 1.0
    assert cfg.reward.schedule == {5: {"format": 0.5}}
    assert cfg.ppo.learning_rate == 1e-5 and cfg.model.lora.target_modules == ["q_proj", "v_proj"]


def test_yaml_file_then_overrides(tmp_path):
    path = tmp_path / "run.yaml"
    path.write_text("ppo:\n  batch_size: 8\n  mini_batch_size: 4\nreward:\n  weights: {correctness: 1.0}\n")
    cfg = load_config(path, ["ppo.mini_batch_size=2"])
    assert (cfg.ppo.batch_size, cfg.ppo.mini_batch_size) == (8, 2)
    assert cfg.reward.weights == {"correctness": 1.0}
    bad = tmp_path / "bad.yaml"
    bad.write_text("ppo:\n  batch_sise: 8\n")
    with pytest.raises(ConfigError, match=r"bad.yaml: unknown config key 'ppo.batch_sise'; did you mean ppo.batch_size"):
        load_config(bad)


@pytest.mark.parametrize("override, message", [
    ("ppo.batchsz=2", "did you mean ppo.batch_size"),
    ("ppo.batch_size=two", "ppo.batch_size='two' has the wrong type: expected int, got str"),
    ("sampling.do_sample=maybe", "sampling.do_sample='maybe' has the wrong type: expected bool"),
    ("dapo.loss_agg=mean", "choose one of: token-mean, seq-mean-token-mean, seq-mean-token-sum"),
    ("reward.on_error=ignore", "choose one of: raise, zero, drop"),
    ("ppo.mini_batch_size=3", "must divide ppo.batch_size=4"),
    ("dapo.group_size=0", "dapo.group_size=0 must be >= 1"),
    ("batch_size", "must look like key=value"),
])
def test_bad_overrides_say_what_to_fix(override, message):
    with pytest.raises(ConfigError, match=message.replace("(", r"\(").replace("[", r"\[")):
        load_config(overrides=[override])


def test_round_trip_through_a_dict():
    cfg = load_config(overrides=SEED_COMMAND + ["reward.schedule={3: {format: 1.0}}"])
    assert from_dict(to_dict(cfg)) == cfg


def test_tchebycheff_ideal_and_mu_are_config_keys():
    import math

    from dapo_nb.rewards import reward_from_config

    cfg = load_config(overrides=["reward.scalarizer=smooth_tchebycheff", "reward.mu=0.5", "reward.ideal.correctness=0.8",
                                 "reward.weights={correctness: 1.0, format: 0.5}"])
    reward = reward_from_config(cfg)
    assert (reward.ideal, reward.mu) == ({"correctness": 0.8}, 0.5)
    # correct and formatted: gaps w (z* - f) are 1.0 * (0.8 - 1) for correctness, 0.5 * (1 - 1) for format (z* = its bound)
    want = -0.5 * math.log(math.exp(-0.2 / 0.5) + math.exp(0.0))
    assert reward.score(["Answer: 4"], ["4"]).scores[0] == pytest.approx(want)


def test_a_mini_batch_not_smaller_than_the_batch_means_one_update():
    """The recipe's ppo.mini_batch_size=2 must not make small batches (a quick ppo.batch_size=1 run) fail."""
    assert load_config(overrides=["ppo.batch_size=1"]).ppo.groups_per_update == 1
    assert load_config(overrides=["ppo.batch_size=4"]).ppo.groups_per_update == 2
    assert load_config(overrides=["ppo.batch_size=4", "ppo.mini_batch_size=0"]).ppo.groups_per_update == 4
    with pytest.raises(ConfigError, match="mini_batch_size=2 must divide ppo.batch_size=3"):
        load_config(overrides=["ppo.batch_size=3"])
