"""reward.marked_answer_only: `correctness` counts only a stated (marked) final answer, in every place the reward
is computed: answer.is_correct, the objective, MultiObjectiveReward, the config, the TRL adapter and the verl export."""

from __future__ import annotations

import importlib.util
import subprocess
import sys
from pathlib import Path

import pytest

from dapo_nb.config import ConfigError, Config, from_dict, load_config, to_dict, to_yaml
from dapo_nb.data import PromptExample
from dapo_nb.rewards import MultiObjectiveReward, get_objective, reward_from_config
from dapo_nb.rewards.answer import is_correct
from dapo_nb.rewards.verl_export import VerlExportError, reward_to_verl_module, write_verl_reward_module

ROOT = Path(__file__).resolve().parents[1]
# A completion cut off at the token budget while still counting: its last number happens to be the answer.
RAMBLING = "We add 12 and 7. Let me count up from 12 to be sure: 13, 14, 15, 16, 17, 18, 19"
MARKED = ["Answer: 19", "12 + 7 = 19\n#### 19", "So $\\boxed{19}$.", "Adding them, the answer is 19."]


def load_module(path: Path):
    spec = importlib.util.spec_from_file_location(f"marked_{path.stem}", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


# ----------------------------------------------------------------------------
# answer.py and the objective


def test_unmarked_last_number_counts_only_when_the_option_is_off():
    assert is_correct(RAMBLING, "19")  # the default of is_correct stays lenient (evaluation's pass@1)
    assert not is_correct(RAMBLING, "19", marked_only=True)
    assert is_correct(RAMBLING, "19", marked_only=False)


@pytest.mark.parametrize("completion", MARKED)
@pytest.mark.parametrize("marked_only", [True, False])
def test_marked_answers_count_either_way(completion, marked_only):
    assert is_correct(completion, "19", marked_only=marked_only)
    assert not is_correct(completion, "20", marked_only=marked_only)


def test_a_wrong_marked_answer_is_not_rescued_by_a_later_number():
    assert not is_correct("Answer: 20\nCheck: 12 + 7 = 19", "19", marked_only=False)
    assert not is_correct("Answer: 20\nCheck: 12 + 7 = 19", "19", marked_only=True)


def test_correctness_objective_defaults_to_marked_answers_only():
    correctness = get_objective("correctness").fn
    assert correctness(RAMBLING, "19") == 0.0
    assert correctness(RAMBLING, "19", marked_answer_only=True) == 0.0
    assert correctness(RAMBLING, "19", marked_answer_only=False) == 1.0
    for completion in MARKED:
        assert correctness(completion, "19") == correctness(completion, "19", marked_answer_only=False) == 1.0
    assert get_objective("format").fn(RAMBLING, "19", marked_answer_only=False) == 0.0  # format never had the fallback


# ----------------------------------------------------------------------------
# The reward and the config


def test_reward_scores_correctness_on_marked_answers_by_default():
    texts, truths = [RAMBLING, *MARKED], ["19"] * (len(MARKED) + 1)
    on = MultiObjectiveReward(objectives=["correctness"]).score(texts, truths)
    off = MultiObjectiveReward(objectives=["correctness"], marked_answer_only=False).score(texts, truths)
    assert on.objectives["correctness"] == [0.0] + [1.0] * len(MARKED)
    assert off.objectives["correctness"] == [1.0] * (len(MARKED) + 1)
    assert on.scores == on.objectives["correctness"] and off.scores == off.objectives["correctness"]
    with pytest.raises(ValueError, match="marked_answer_only must be True or False"):
        MultiObjectiveReward(marked_answer_only="yes")


def test_config_key_round_trips_and_reaches_the_reward(tmp_path):
    assert Config().reward.marked_answer_only is True
    default = reward_from_config(load_config())
    assert default.marked_answer_only is True
    assert default.score([RAMBLING, "Answer: 19"], ["19", "19"]).objectives["correctness"] == [0.0, 1.0]

    cfg = load_config(overrides=["reward.marked_answer_only=false"])
    assert cfg.reward.marked_answer_only is False
    assert from_dict(to_dict(cfg)) == cfg
    path = tmp_path / "run.yaml"
    path.write_text(to_yaml(cfg))
    assert load_config(path).reward.marked_answer_only is False
    lenient = reward_from_config(cfg)
    assert lenient.marked_answer_only is False
    assert lenient.score([RAMBLING, "Answer: 19"], ["19", "19"]).objectives["correctness"] == [1.0, 1.0]
    with pytest.raises(ConfigError, match="reward.marked_answer_only='maybe' has the wrong type: expected bool"):
        load_config(overrides=["reward.marked_answer_only=maybe"])


def test_keys_lists_the_option_with_its_reason():
    result = subprocess.run([sys.executable, "-m", "dapo_nb.cli", "keys", "marked"], cwd=ROOT, capture_output=True,
                            text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    head, doc = result.stdout.splitlines()[:2]
    assert head == "reward.marked_answer_only=true  (bool)"
    assert "correctness needs a marked final answer" in doc and "the last number counts too" in doc


def test_trl_adapter_uses_the_option():
    pytest.importorskip("trl")
    from dapo_nb.trl_backend import TRLRewardAdapter, batch_layout

    class State:
        global_step = 0

    texts = [RAMBLING, "12 + 7 = 19\n#### 19"]
    columns = {}
    for value in ("true", "false"):
        cfg = load_config(overrides=[f"reward.marked_answer_only={value}", "dapo.group_size=2",
                                     "reward.objectives=[correctness, format]"])
        adapter = TRLRewardAdapter(reward_from_config(cfg), cfg, batch_layout(cfg, 1),
                                   [PromptExample("q0", "What is 12 + 7?", "19")])
        assert [fn.__name__ for fn in adapter.functions] == ["correctness", "format"]
        columns[value] = [fn(prompts=["What is 12 + 7?"] * 2, completions=texts, completion_ids=[[1, 2], [3]],
                             ground_truth=["19"] * 2, qid=["q0"] * 2, info_json=["{}"] * 2, trainer_state=State(),
                             log_metric=lambda *_: None) for fn in adapter.functions]
    assert columns["true"][0] == [0.0, 1.0] and columns["false"][0] == [1.0, 1.0]
    assert columns["true"][1] == columns["false"][1] == [0.0, 1.0]  # format: unchanged


# ----------------------------------------------------------------------------
# verl export


@pytest.mark.parametrize("marked_only", [True, False])
def test_verl_module_applies_the_same_rule(tmp_path, marked_only):
    reward = MultiObjectiveReward(objectives=["correctness", "format"], weights={"correctness": 1.0, "format": 0.1},
                                  marked_answer_only=marked_only)
    path = reward_to_verl_module(reward, tmp_path / "reward.py")
    assert f"MARKED_ANSWER_ONLY = {marked_only}" in path.read_text()
    module = load_module(path)
    texts = [RAMBLING, *MARKED, "Answer: 20"]
    ours = reward.score(texts, ["19"] * len(texts))
    for i, text in enumerate(texts):
        result = module.compute_score("dapo_nb", text, "19")
        assert (result["score"], result["acc"], result["correctness"]) == (
            ours.scores[i], ours.objectives["correctness"][i], ours.objectives["correctness"][i])
    assert module.compute_score("dapo_nb", RAMBLING, "19")["acc"] == (0.0 if marked_only else 1.0)
    # `acc` follows the rule also when correctness is not one of the objectives
    alone = load_module(write_verl_reward_module(tmp_path / "fmt.py", ["format"], {"format": 1.0},
                                                 marked_answer_only=marked_only))
    assert alone.compute_score("dapo_nb", RAMBLING, "19")["acc"] == (0.0 if marked_only else 1.0)
    with pytest.raises(VerlExportError, match="marked_answer_only must be True or False"):
        write_verl_reward_module(tmp_path / "bad.py", ["correctness"], {"correctness": 1.0}, marked_answer_only=1)


def test_dapo_nb_export_verl_carries_the_config_key(tmp_path):
    pytest.importorskip("pyarrow")
    from dapo_nb.verl_recipe import export_verl

    for value, expected in (("true", 0.0), ("false", 1.0)):
        cfg = load_config(overrides=[f"reward.marked_answer_only={value}"])
        paths = export_verl(cfg, tmp_path / value)
        module = load_module(paths["reward"])
        assert module.MARKED_ANSWER_ONLY is (value == "true")
        assert module.compute_score("dapo_nb", RAMBLING, "19")["acc"] == expected
