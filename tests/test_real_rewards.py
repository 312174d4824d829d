"""Reward code from real projects, unchanged (tests/fixtures/README.md): TRL 1.16's own reward files and open-r1's
rewards.py, on a MATH-schema dataset (`problem`, `solution` with \\boxed{}), scoring, training and evaluating through
the same call. Their factories get their arguments from the plugin entry; the callable objects TRL's factories return
are recognised; open-r1's `len_reward` bug of that commit (it asks for `solutions`) gets an error naming the column."""

from __future__ import annotations

import hashlib
import json
import subprocess
import sys
from pathlib import Path

import pytest

from dapo_nb.config import load_config
from dapo_nb.data import load_prompts_from_config
from dapo_nb.rewards import PluginError, reward_from_config

FIXTURES = Path(__file__).resolve().parent / "fixtures"
OPEN_R1 = FIXTURES / "open_r1" / "rewards.py"
TRL_FORMAT = FIXTURES / "trl_rewards" / "format_rewards.py"
TRL_OTHER = FIXTURES / "trl_rewards" / "other_rewards.py"

MATH_ROWS = [
    {"problem": f"What is ${a} + {b}$?", "solution": f"We add: ${a} + {b} = \\boxed{{{a + b}}}$.",
     "level": f"Level {1 + a % 3}", "type": "Prealgebra"} for a, b in [(2, 3), (4, 4), (7, 1), (5, 6), (9, 2), (3, 3)]]

PLUGINS = [  # conversational: open-r1's functions read completion[0]["content"], as TRL passes chat completions
    {"path": str(OPEN_R1), "function": "accuracy_reward", "format": "conversational"},
    {"path": str(OPEN_R1), "function": "format_reward", "format": "conversational", "name": "think_answer_format"},
    {"path": str(OPEN_R1), "function": "reasoning_steps_reward", "format": "conversational"},
    {"path": str(OPEN_R1), "function": "get_cosine_scaled_reward", "kwargs": {"max_len": 64}, "format": "conversational"},
    {"path": str(OPEN_R1), "function": "get_repetition_penalty_reward", "kwargs": {"ngram_size": 2, "max_penalty": -1.0},
     "format": "conversational", "name": "open_r1_repetition"},
    {"path": str(TRL_FORMAT), "function": "think_format_reward", "format": "conversational"},
    {"path": str(TRL_OTHER), "function": "get_repetition_penalty_reward", "kwargs": {"ngram_size": 2}},
    {"path": str(TRL_OTHER), "function": "get_soft_overlong_punishment",
     "kwargs": {"max_completion_len": 8, "soft_punish_cache": 4}},
]
NAMES = ["accuracy_reward", "think_answer_format", "reasoning_steps_reward", "cosine_scaled_reward",
         "open_r1_repetition", "think_format_reward", "repetition_penalty_reward", "soft_overlong_punishment_reward"]
MATH_KEYS = ["data.prompt_key=problem", "data.answer_key=solution", "data.answer_format=boxed"]


@pytest.fixture()
def math_file(tmp_path):
    path = tmp_path / "math.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in MATH_ROWS))
    return path


def overrides(math_file, *extra):
    return [f"data.train_path={math_file}", f"data.test_path={math_file}", *MATH_KEYS,
            f"reward.plugins={json.dumps(PLUGINS)}", *extra]


def test_the_fixtures_are_the_projects_files_unchanged():
    import trl.rewards.format_rewards as theirs_format
    import trl.rewards.other_rewards as theirs_other

    assert TRL_FORMAT.read_bytes() == Path(theirs_format.__file__).read_bytes()  # TRL 1.16.0, as pinned
    assert TRL_OTHER.read_bytes() == Path(theirs_other.__file__).read_bytes()
    assert hashlib.sha256(OPEN_R1.read_bytes()).hexdigest().startswith("3078067c")  # open-r1 @ 7832290
    for path in (TRL_FORMAT, TRL_OTHER):
        assert path.read_text().startswith("# Copyright 2020-2026 The HuggingFace Team. All rights reserved.")
    assert all((folder / "LICENSE").is_file() for folder in (OPEN_R1.parent, TRL_FORMAT.parent))


def test_real_reward_functions_score_what_they_should(math_file):
    cfg = load_config(overrides=overrides(math_file))
    reward = reward_from_config(cfg)
    assert [p.name for p in reward.plugins] == NAMES
    assert all(p.contract == "trl" for p in reward.plugins)  # TRL's callable objects take only completion_ids
    (first, *_) = load_prompts_from_config(cfg.data, "train")  # What is 2 + 3? (solution ...\boxed{5})
    texts = ["<think>\nStep 1: add.\nStep 2: check.\nStep 3: done.\n</think>\n<answer>\n$\\boxed{5}$\n</answer>",
             "The answer is $\\boxed{4}$."]
    ids = [[1, 2, 3, 4], [7, 7, 7, 7, 7, 7, 7, 7, 7, 7]]
    batch = reward.score_examples(texts, [first, first], completion_ids=ids, split="test")
    got = batch.objectives
    assert got["accuracy_reward"] == [1.0, 0.0]  # open-r1 reads the `solution` column with math-verify
    assert got["think_answer_format"] == [1.0, 0.0] and got["think_format_reward"] == [1.0, 0.0]
    assert got["reasoning_steps_reward"] == [1.0, 0.0]
    assert got["cosine_scaled_reward"][0] > 0.5 > 0 > got["cosine_scaled_reward"][1]  # right: positive; wrong: negative
    assert got["repetition_penalty_reward"] == [0.0, pytest.approx(-(1 - 1 / 9))]  # TRL's: token-id bigrams
    assert got["soft_overlong_punishment_reward"] == [0.0, -1.0]  # 4 tokens <= 8 - 4; 10 tokens > 8
    assert batch.error_counts["exception"] == 0


def test_open_r1_len_reward_of_that_commit_gets_an_error_naming_the_column(math_file):
    cfg = load_config(overrides=overrides(math_file) + [
        f"reward.plugins=[{{path: {OPEN_R1}, function: len_reward, format: conversational}}]"])
    reward = reward_from_config(cfg)
    with pytest.raises(PluginError) as caught:
        reward.check_columns(load_prompts_from_config(cfg.data, "train"))
    message = str(caught.value)
    assert "(len_reward) needs the column 'solutions'" in message and "did you mean the column 'solution'?" in message
    assert "data.answer_key=solution (data.answer_format=boxed) -> ground_truth" in message


@pytest.mark.slow
def test_real_reward_functions_drive_training_and_evaluation(tmp_path, math_file, model_dir):
    common = [f"model.pretrained_model_name_or_path={model_dir}", "sampling.max_new_tokens=6", "ppo.batch_size=2",
              "dapo.group_size=2", "dapo.dynamic_sampling=false", "train.threads=1", "train.run_name=real"]
    train = subprocess.run([sys.executable, "-m", "dapo_nb.cli", "train", *overrides(math_file, *common),
                            "train.total_steps=1", "train.eval_every=1", "train.eval_prompts=2"],
                           capture_output=True, text=True, cwd=tmp_path, timeout=600)
    assert train.returncode == 0, train.stderr[-3000:]
    metrics = [json.loads(line) for line in (tmp_path / "runs" / "real" / "metrics.jsonl").read_text().splitlines()]
    last = metrics[-1]
    assert last["reward_errors/exception"] == 0 and last["step"] == 1
    for name in NAMES:
        assert f"rewards/{name}/mean" in last and f"eval/rewards/{name}/mean" in last, name
    checkpoint = json.loads(train.stdout.strip().splitlines()[-1])["checkpoint"]
    evaluation = subprocess.run([sys.executable, "-m", "dapo_nb.cli", "eval", *overrides(math_file, *common),
                                 f"model.pretrained_model_name_or_path={checkpoint}", "eval.num_samples=2"],
                                capture_output=True, text=True, cwd=tmp_path, timeout=600)
    assert evaluation.returncode == 0, evaluation.stderr[-3000:]
    report = json.loads(evaluation.stdout.strip().splitlines()[-1])
    trained = {k for k in last if k.startswith("rewards/") and k.endswith("/mean")}
    assert trained == {k for k in report if k.startswith("rewards/")}  # the same objectives, the same names
    assert report["num_prompts"] == len(MATH_ROWS)
