"""Rewards as researchers write them: several plugins at once, TRL reward functions in standard and conversational
format, the seed's plugin on the default config (reward, a training step, the TRL adapter), and error messages."""

from __future__ import annotations

import json
import re
import textwrap
from pathlib import Path

import pytest

from dapo_nb.config import ConfigError, all_keys, load_config
from dapo_nb.data import PromptExample
from dapo_nb.rewards import MultiObjectiveReward, PluginError, RewardBatch, objective_names, reward_from_config

try:  # the seed's plugin file as its README prints it, and its worked examples A and B
    from test_rewards_objectives import example_a, example_b
    from test_rewards_plugins import SEED_PLUGIN
except ImportError:  # tests/ turned into a package
    from tests.test_rewards_objectives import example_a, example_b
    from tests.test_rewards_plugins import SEED_PLUGIN

ROOT = Path(__file__).resolve().parents[1]
SEED = "my_multiobj_reward_fixed"
SEED_KEYS = ("clarity", "correctness", "creativity", "detail")

# A file of TRL reward functions as TRL's docs and open-r1 write them (one conversational, one standard).
TRL_FUNCTIONS = '''
import re

SEEN = {}


def accuracy_reward(completions, ground_truth, **kwargs):
    """Conversational: completions[i] == [{"role": "assistant", "content": ...}]."""
    SEEN["accuracy_reward"] = dict(kwargs, completions=completions, ground_truth=ground_truth)
    contents = [completion[0]["content"] for completion in completions]
    return [1.0 if re.search(r"Answer:\\s*" + re.escape(truth), c) else 0.0 for c, truth in zip(contents, ground_truth)]


def brevity(completions, **kwargs):
    """Standard: plain strings; None (not applicable) for empty completions."""
    SEEN["brevity"] = dict(kwargs, completions=completions)
    return [None if not c else 1.0 / (1 + len(c)) for c in completions]


def level_bonus(completions, level):
    """No **kwargs: gets only what it names (a dataset column here)."""
    return [0.5 if lv == "hard" else 0.0 for lv in level]
'''


def write(tmp_path: Path, name: str, source: str) -> Path:
    path = tmp_path / name
    path.write_text(textwrap.dedent(source), encoding="utf-8")
    return path


@pytest.fixture
def seed_file(tmp_path) -> Path:
    return write(tmp_path, f"{SEED}.py", SEED_PLUGIN)


@pytest.fixture
def trl_file(tmp_path) -> Path:
    return write(tmp_path, "trl_rewards.py", TRL_FUNCTIONS)


def seen(reward: MultiObjectiveReward) -> dict:
    """What the functions of trl_rewards.py received, by function name."""
    return next(p.fn.__globals__["SEEN"] for p in reward.plugins if "SEEN" in p.fn.__globals__)


# ----------------------------------------------------------------------------
# Several sources at once


def test_two_plugin_files_at_once_add_weighted_objectives(seed_file, trl_file):
    texts, truths = [example_a(), "Answer: 8"], ["540", "7"]
    alone = MultiObjectiveReward(objectives=["format"], weights={"format": 1.0})
    reward = MultiObjectiveReward(objectives=["format"], weights={"format": 1.0, "brevity": 2.0},
                                  plugins=[str(seed_file), f"{trl_file}:brevity"])
    batch = reward.score(texts, truths)
    names = ["format", SEED, "brevity", *(f"{SEED}.{k}" for k in SEED_KEYS)]
    assert reward.names == names and list(batch.objectives) == names[:3] + names[3:]
    assert batch.weights == {"format": 1.0, SEED: 1.0, "brevity": 2.0, **{f"{SEED}.{k}": 0.0 for k in SEED_KEYS}}
    seed_scores = batch.objectives[SEED]
    assert seed_scores[0] == pytest.approx(0.9125)  # the seed's worked example A
    assert batch.objectives["brevity"] == [pytest.approx(1 / (1 + len(t))) for t in texts]
    base = alone.score(texts, truths).scores
    assert batch.scores == [pytest.approx(b + s + 2.0 / (1 + len(t))) for b, s, t in zip(base, seed_scores, texts)]
    metrics = batch.metrics()
    assert metrics["weights/brevity"] == 2.0 and metrics[f"weights/{SEED}.correctness"] == 0.0
    assert metrics[f"rewards/{SEED}.correctness/mean"] == 0.5
    reward.weights.set({"brevity": 0.0, f"{SEED}.correctness": 1.0})  # what a slider does: the scalar moves
    moved = reward.score(texts, truths).scores
    assert moved == [pytest.approx(b + s + c) for b, s, c in zip(base, seed_scores, [1.0, 0.0])]


def test_config_plugins_list_and_the_plugin_shorthand(seed_file, trl_file):
    cfg = load_config(overrides=[f"reward.plugin={seed_file}", f"reward.plugins=[{trl_file}:brevity]",
                                 "reward.weights={correctness: 1, brevity: 0.5, clarity: 0.2}"])
    assert objective_names(cfg.reward) == ["correctness", "format", "clarity"]  # brevity is the plugin's
    reward = reward_from_config(cfg)
    assert [p.name for p in reward.plugins] == [SEED, "brevity"]  # reward.plugin first
    assert reward.weights.get() == {"correctness": 1.0, "format": 0.0, "clarity": 0.2, SEED: 1.0, "brevity": 0.5}
    yaml_entry = load_config(overrides=[f"reward.plugins=[{{path: {trl_file}, function: brevity, name: short}}]"])
    assert [p.name for p in reward_from_config(yaml_entry).plugins] == ["short"]


def test_slider_panel_picks_up_every_plugin_objective(seed_file, trl_file):
    from dapo_nb.live import RewardExplorer

    reward = MultiObjectiveReward(objectives=["format"], plugins=[seed_file, f"{trl_file}:brevity"])
    explorer = RewardExplorer(reward, [example_a(), example_b()], ["540", "540"])
    assert list(explorer.sliders) == reward.names  # the breakdown keys, known after one call, included
    explorer.sliders[f"{SEED}.detail"].value = 1.5
    assert reward.weights.get()[f"{SEED}.detail"] == 1.5


def test_control_panel_adds_sliders_for_breakdown_keys_after_the_first_step(seed_file):
    from dapo_nb.live import ControlPanel

    reward = MultiObjectiveReward(objectives=["format"], plugin=seed_file)

    class FakeTrainer:  # what the panel reads of a Trainer
        callbacks, history, step = [], [], 0
        cfg = load_config()

    FakeTrainer.reward = reward
    panel = ControlPanel(FakeTrainer(), plot_every=0, fresh=False)
    assert list(panel.sliders) == ["format", SEED]
    reward.score([example_a()], ["540"])
    panel._on_step({"step": 1})  # what the trainer's callback does after a step
    assert list(panel.sliders) == reward.names
    assert list(panel.controls.children[1:-1]) == list(panel.sliders.values())
    panel.sliders[f"{SEED}.clarity"].value = 0.7
    assert reward.weights.get()[f"{SEED}.clarity"] == 0.7


# ----------------------------------------------------------------------------
# TRL reward functions: formats, keyword arguments, None


def test_conversational_trl_function_gets_messages_and_every_column(trl_file):
    reward = MultiObjectiveReward(objectives=[], plugins=[f"{trl_file}:accuracy_reward"])
    prompts = [[{"role": "system", "content": "Be brief."}, {"role": "user", "content": "What is 3 + 4?"}]] * 2
    infos = [{"qid": "q1", "data_source": "arith", "level": "easy"}, {"qid": "q1", "data_source": "arith", "level": "easy"}]
    batch = reward.score(["Answer: 7", "Answer: 8"], ["7", "7"], prompts=prompts, infos=infos, step=3,
                         completion_ids=[[5, 6], [5, 7, 8]])
    assert batch.objectives["accuracy_reward"] == [1.0, 0.0] and batch.scores == [1.0, 0.0]
    got = seen(reward)["accuracy_reward"]
    assert got["completions"] == [[{"role": "assistant", "content": "Answer: 7"}], [{"role": "assistant", "content": "Answer: 8"}]]
    assert got["prompts"] == prompts
    assert got["ground_truth"] == ["7", "7"] and got["qid"] == ["q1", "q1"]
    assert got["data_source"] == ["arith", "arith"] and got["level"] == ["easy", "easy"]
    assert got["completion_ids"] == [[5, 6], [5, 7, 8]] and got["trainer_state"].global_step == 3
    assert set(got) == {"prompts", "completions", "completion_ids", "trainer_state", "ground_truth", "qid",
                        "data_source", "level"}  # what TRL passes (less log_extra / log_metric), nothing of ours


def test_standard_format_for_text_prompts_and_an_explicit_format(trl_file):
    reward = MultiObjectiveReward(objectives=[], plugins=[f"{trl_file}:brevity"])
    reward.score(["abc", "de"], ["1", "1"], prompts=["What is 1?", "What is 1?"])
    got = seen(reward)["brevity"]
    assert got["completions"] == ["abc", "de"] and got["prompts"] == ["What is 1?", "What is 1?"]
    assert "completion_ids" not in got  # the caller had none
    forced = MultiObjectiveReward(objectives=[], plugins=[
        {"path": str(trl_file), "function": "accuracy_reward", "format": "conversational"}])
    assert forced.score(["Answer: 1"], ["1"], prompts=["What is 1?"]).scores == [1.0]
    assert seen(forced)["accuracy_reward"]["prompts"] == [[{"role": "user", "content": "What is 1?"}]]


def test_a_conversational_function_on_text_prompts_says_how_to_fix_it(trl_file):
    reward = MultiObjectiveReward(objectives=[], plugins=[f"{trl_file}:accuracy_reward"])
    with pytest.raises(PluginError, match=r"TypeError.*standard format.*set format: conversational in its reward.plugins"):
        reward.score(["Answer: 1"], ["1"], prompts=["What is 1?"])


def test_a_function_without_kwargs_gets_only_what_it_names(trl_file):
    reward = MultiObjectiveReward(objectives=[], plugins=[f"{trl_file}:level_bonus"])
    batch = reward.score(["a", "b"], ["1", "1"], infos=[{"level": "hard"}, {"level": "easy"}])
    assert batch.scores == [0.5, 0.0]
    with pytest.raises(PluginError, match=r"needs the column 'level', which the data does not have; its columns are "
                                          r"ground_truth, qid, besides prompts"):
        reward.score(["a"], ["1"], infos=[{"qid": "q"}])


def test_none_is_not_applicable_as_in_trl(trl_file):
    reward = MultiObjectiveReward(objectives=["format"], weights={"format": 1.0},
                                  plugins=[f"{trl_file}:brevity"])
    batch = reward.score(["Answer: 1", "", "x"], ["1"] * 3)
    assert batch.objectives["brevity"] == [0.1, 0.0, 0.5] and batch.applicable == {"brevity": [True, False, True]}
    assert batch.scores == [1.1, 0.0, 0.5] and batch.valid == [True, True, True]  # format still scores sample 1
    assert batch.metrics()["rewards/brevity/mean"] == pytest.approx(0.3)  # nanmean: over samples 0 and 2
    step = RewardBatch.concat([batch, reward.score(["Answer: 1"], ["1"])])  # a step's generation batches
    assert step.applicable == {"brevity": [True, False, True, True]}
    only = MultiObjectiveReward(objectives=["format"], weights={"format": 0.0}, plugins=[f"{trl_file}:brevity"])
    unscorable = only.score(["Answer: 1", ""], ["1"] * 2)  # every weighted objective returned None for sample 1
    assert unscorable.valid == [True, False] and unscorable.metrics()["reward_errors/dropped"] == 1.0


# ----------------------------------------------------------------------------
# The seed's plugin on the default config


def test_seed_plugin_on_the_default_config(seed_file):
    cfg = load_config(overrides=[f"reward.plugin={seed_file}"])
    reward = reward_from_config(cfg)
    batch = reward.score([example_a(), example_b()], ["540", "540"])
    assert reward.names == ["correctness", "format", SEED, *(f"{SEED}.{k}" for k in SEED_KEYS)]
    assert batch.weights == {"correctness": 1.0, "format": 0.1, SEED: 1.0, **{f"{SEED}.{k}": 0.0 for k in SEED_KEYS}}
    builtin = batch.objectives["correctness"]  # the built-in final-answer check, beside the seed's own
    assert batch.objectives[f"{SEED}.correctness"] == [1.0, 0.0]
    assert batch.scores == [pytest.approx(c + 0.1 * f + s) for c, f, s in
                            zip(builtin, batch.objectives["format"], [0.9125, 0.42])]
    exact = reward_from_config(load_config(overrides=[f"reward.plugin={seed_file}", "reward.weights={correctness: 0, format: 0}"]))
    assert exact.score([example_a(), example_b()], ["540", "540"]).scores == [pytest.approx(0.9125), pytest.approx(0.42)]


def test_seed_plugin_trains_a_step_on_the_default_reward_config(tmp_path, seed_file, train_file, model_dir):
    from dapo_nb.trainer import Trainer

    cfg = load_config(overrides=[
        f"model.pretrained_model_name_or_path={model_dir}", f"data.train_path={train_file}", "sampling.max_new_tokens=6",
        "ppo.batch_size=2", "dapo.group_size=3", "ppo.learning_rate=1e-3", "train.total_steps=1", "train.save_every=0",
        "train.threads=1", f"train.output_dir={tmp_path / 'run'}", f"train.checkpoint_dir={tmp_path / 'ckpt'}",
        f"reward.plugin={seed_file}", f"dapo.filter_metric={SEED}.detail"])  # random weights are never correct
    metrics = Trainer(cfg).train()[-1]
    assert metrics["weights/correctness"] == 1.0 and metrics["weights/format"] == 0.1 and metrics[f"weights/{SEED}"] == 1.0
    for name in ("correctness", "format", SEED, *(f"{SEED}.{k}" for k in SEED_KEYS)):
        assert f"rewards/{name}/mean" in metrics, name
    assert metrics["reward_errors/exception"] == 0 and metrics["loss"] == metrics["loss"]  # a real update, no NaN


def test_seed_plugin_through_the_trl_adapter(seed_file):
    from dapo_nb.trl_backend import TRLRewardAdapter, batch_layout

    cfg = load_config(overrides=[f"reward.plugin={seed_file}", "dapo.group_size=2"])
    adapter = TRLRewardAdapter(reward_from_config(cfg), cfg, batch_layout(cfg, 1), [PromptExample("q0", "Sum?", "540")])
    assert [fn.__name__ for fn in adapter.functions] == ["score", "correctness", "format", SEED]

    class State:
        global_step = 0

    logged = {}
    texts = [example_a(), example_b()]
    columns = [fn(prompts=[[{"role": "user", "content": "Sum?"}]] * 2,
                  completions=[[{"role": "assistant", "content": t}] for t in texts],
                  completion_ids=[[1, 2], [3]], ground_truth=["540"] * 2, qid=["q0"] * 2, info_json=["{}"] * 2,
                  trainer_state=State(), log_metric=logged.__setitem__) for fn in adapter.functions]
    assert columns[3] == [pytest.approx(0.9125), pytest.approx(0.42)]
    assert logged[f"rewards/{SEED}.correctness/mean"] == 0.5  # breakdown keys reach the logs through log_metric


# ----------------------------------------------------------------------------
# Errors name real keys


def test_error_messages_name_real_config_keys(tmp_path):
    keys = set(all_keys())
    sources = [ROOT / "dapo_nb/rewards" / name for name in ("plugins.py", "reward.py", "weights.py", "objectives.py")]
    for path in sources:
        for match in re.finditer(r"reward\.(?!py\b)([a-z_]+)\b(?!\()", path.read_text()):
            assert f"reward.{match.group(1)}" in keys, f"{path.name} names reward.{match.group(1)}"
    no_function = write(tmp_path, "mine.py", "def judge(split, solution_str, ground_truth, info):\n    return 1.0\n")
    with pytest.raises(PluginError, match=r"reward.plugins=\[.*mine.py:judge\]") as caught:
        MultiObjectiveReward(plugins=[no_function])
    assert "plugin_function" not in str(caught.value)
    with pytest.raises(PluginError, match="reward.plugins / reward.plugin entries are .py files"):
        MultiObjectiveReward(plugins=["no/such/file.py"])


@pytest.mark.parametrize("overrides, match", [
    (["reward.plugins=[a.py, x/a.py]"], "both named 'a'.*name: other_name"),
    (["reward.plugins=[{path: a.py, fn: x}]"], r"unknown keys \['fn'\].*path, function, name, contract, format"),
    (["reward.plugins=[{path: a.py, format: chat}]"], "unknown plugin format 'chat'; choose auto, standard, conversational"),
    (["reward.plugins=[{path: a.py, contract: openai}]"], "unknown plugin contract 'openai'"),
    (["reward.plugins=[score.py]"], "'score' .* is the scalar reward itself"),
    (["reward.plugins=[my.reward.py]"], r"'my.reward' \(from its file\) must use letters"),
])
def test_bad_plugin_entries_fail_in_the_config(overrides, match):
    with pytest.raises(ConfigError, match="reward.plugins / reward.plugin: .*" + match):
        load_config(overrides=overrides)


def test_plugin_names_must_not_shadow_objectives(tmp_path):
    path = write(tmp_path, "format.py", "def compute_score(split, solution_str, ground_truth, info):\n    return 1.0\n")
    with pytest.raises(PluginError, match="named 'format', like the registered objective 'format'.*name: other_name"):
        MultiObjectiveReward(plugins=[path])
    assert MultiObjectiveReward(plugins=[{"path": str(path), "name": "fmt"}]).names == ["fmt"]


def test_verl_export_still_refuses_plugins_from_the_new_key(tmp_path, seed_file):
    from dapo_nb.rewards.verl_export import VerlExportError
    from dapo_nb.verl_recipe import export_verl

    with pytest.raises(VerlExportError, match="cannot be embedded"):
        export_verl(load_config(overrides=[f"reward.plugins=[{seed_file}]"]), tmp_path / "out")
    assert not (tmp_path / "out").exists()


def test_the_config_round_trips_plugin_entries(tmp_path, trl_file):
    from dapo_nb.config import from_dict, to_dict

    cfg = load_config(overrides=[f"reward.plugins=[{trl_file}:brevity, {{path: {trl_file}, function: level_bonus}}]"])
    again = from_dict(json.loads(json.dumps(to_dict(cfg))))  # as a checkpoint stores it
    assert again.reward.plugins == cfg.reward.plugins
