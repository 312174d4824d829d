"""One scoring path: every place that scores completions makes the same call, and reward code gets clear errors.

A recording plugin (tests/scoring_support.py) shows the keyword names each scorer passes: training, evaluation during
training, `dapo-nb eval`, the TRL backend (notebooks 01/02: tests/test_notebooks.py; studies: tests/test_sweep.py).
Then the entry forms of reward.plugins that real projects need: factories with arguments, async functions, TRL's
callable objects, and errors that name the column a function wanted and the data.* key behind it.
"""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
import textwrap
import time

import pytest

from dapo_nb.config import load_config
from dapo_nb.data import PromptExample
from dapo_nb.rewards import MultiObjectiveReward, PluginError, load_plugin, reward_from_config

from tests.scoring_support import expected, plugin_entries, recorded, write_recorder

COLUMNS = ["level", "topic"]  # the data's own columns, besides qid / prompt / ground_truth / data_source


@pytest.fixture()
def data_file(tmp_path):
    rows = [{"qid": f"q{i}", "prompt": f"What is {i} + {i}?", "ground_truth": str(2 * i), "level": i % 3,
             "topic": "sums"} for i in range(8)]
    path = tmp_path / "data.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def tiny_overrides(tmp_path, model_dir, data_file, recorder):
    entries = ", ".join(plugin_entries(recorder))
    return [f"model.pretrained_model_name_or_path={model_dir}", f"data.train_path={data_file}",
            f"data.test_path={data_file}", "sampling.max_new_tokens=4", "ppo.batch_size=2", "ppo.mini_batch_size=0",
            "dapo.group_size=2", "dapo.dynamic_sampling=false", "train.total_steps=1", "train.save_every=0",
            "train.threads=1", f"train.output_dir={tmp_path / 'run'}", f"train.checkpoint_dir={tmp_path / 'ckpt'}",
            f"reward.plugins=[{entries}]", "eval.num_samples=2", "eval.max_prompts=3"]


def test_training_and_evaluation_during_training_make_the_same_call(tmp_path, model_dir, data_file):
    from dapo_nb.trainer import Trainer

    recorder, log = write_recorder(tmp_path)
    cfg = load_config(overrides=[*tiny_overrides(tmp_path, model_dir, data_file, recorder), "train.eval_every=1",
                                 "train.eval_prompts=2"])
    Trainer(cfg).train()
    trl_keys, seed_keys = expected(COLUMNS)
    got = recorded(log)
    assert got["trl"] == {trl_keys}  # training's batch and the held-out batch: the same keywords
    assert got["seed:train"] == {seed_keys} and got["seed:test"] == {seed_keys}
    assert got["steps"] == {1}  # the training step, and the step of the policy evaluated after it


def test_dapo_nb_eval_makes_the_call_training_makes(tmp_path, model_dir, data_file):
    recorder, log = write_recorder(tmp_path)
    result = subprocess.run([sys.executable, "-m", "dapo_nb.cli", "eval",
                             *tiny_overrides(tmp_path, model_dir, data_file, recorder)],
                            capture_output=True, text=True, cwd=tmp_path, timeout=300)
    assert result.returncode == 0, result.stderr[-2000:]
    trl_keys, seed_keys = expected(COLUMNS)
    got = recorded(log)
    assert got["trl"] == {trl_keys} and got["seed:test"] == {seed_keys} and "seed:train" not in got
    report = json.loads(result.stdout.strip().splitlines()[-1])
    # every objective of the configured reward, under training's names, greedy and sampled
    for name in ("correctness", "format", "recorder", "record"):
        assert f"rewards/{name}/mean" in report and f"sampled/rewards/{name}/mean" in report, name


def test_the_trl_backend_makes_the_call_our_trainer_makes(tmp_path, model_dir, data_file):
    from dapo_nb.trl_backend import train_with_trl

    recorder, log = write_recorder(tmp_path)
    cfg = load_config(overrides=[*tiny_overrides(tmp_path, model_dir, data_file, recorder), "backend=trl"])
    train_with_trl(cfg)
    trl_keys, seed_keys = expected(COLUMNS)
    got = recorded(log)
    assert got["trl"] == {trl_keys} and got["seed:train"] == {seed_keys}


def test_evaluation_reports_every_objective_as_training_names_it(tmp_path, model_dir, data_file):
    """A seed plugin's breakdown keys too: the held-out summary and a training line have the same reward names."""
    from dapo_nb.evaluate import evaluate
    from dapo_nb.models import load_policy
    from dapo_nb.trainer import Trainer

    from tests.test_rewards_plugins import SEED_PLUGIN

    seed = tmp_path / "seed_reward.py"
    seed.write_text(textwrap.dedent(SEED_PLUGIN))
    overrides = [*tiny_overrides(tmp_path, model_dir, data_file, seed), f"reward.plugins=[{seed}]"]
    metrics = Trainer(load_config(overrides=overrides)).train()[-1]
    cfg = load_config(overrides=overrides)
    model, tokenizer = load_policy(str(model_dir))
    examples = [PromptExample(f"q{i}", f"What is {i} + {i}?", str(2 * i), "data", {"level": 0, "topic": "sums"})
                for i in range(3)]
    summary = evaluate(model, tokenizer, examples, reward_from_config(cfg), max_new_tokens=4, num_samples=0)
    trained = {k for k in metrics if k.startswith("rewards/") and k.endswith("/mean")}
    held_out = {k for k in summary if k.startswith("rewards/")}
    assert trained == held_out and "rewards/seed_reward.clarity/mean" in held_out


# ----------------------------------------------------------------------------
# Errors name the real cause


def test_a_missing_column_names_the_column_the_columns_and_the_data_keys(tmp_path):
    plugin = tmp_path / "needs_solution.py"
    plugin.write_text("def accuracy(completions, solution, **kwargs):\n    return [0.0] * len(completions)\n")
    rows = [{"problem": "What is 1 + 1?", "answer": "2", "level": "Level 1"}]
    data = tmp_path / "math.jsonl"
    data.write_text("".join(json.dumps(r) + "\n" for r in rows))
    cfg = load_config(overrides=[f"data.train_path={data}", "data.prompt_key=problem", "data.answer_key=answer",
                                 f"reward.plugins=[{plugin}:accuracy]"])
    reward = reward_from_config(cfg)
    from dapo_nb.data import load_prompts_from_config

    examples = load_prompts_from_config(cfg.data, "train")
    with pytest.raises(PluginError) as caught:
        reward.check_columns(examples)  # before any model loads
    message = str(caught.value)
    assert "needs the column 'solution', which the data does not have" in message
    assert "its columns are answer, data_source, level, problem, qid" in message
    assert "data.answer_key=answer (data.answer_format=plain) -> ground_truth" in message
    assert "format" not in message.replace("answer_format", "")  # not a format problem, so no format hint
    # the same at scoring time, **kwargs or not (the function would otherwise fail inside with a TypeError)
    with pytest.raises(PluginError, match="needs the column 'solution'"):
        reward.score_examples(["2"], examples)


def test_the_cli_refuses_a_missing_column_before_loading_the_model(tmp_path):
    plugin = tmp_path / "needs_solution.py"
    plugin.write_text("def accuracy(completions, solutions, **kwargs):\n    return [0.0] * len(completions)\n")
    data = tmp_path / "math.jsonl"
    data.write_text(json.dumps({"problem": "1 + 1?", "solution": "It is \\boxed{2}."}) + "\n")
    keys = [f"data.train_path={data}", f"data.test_path={data}", "data.prompt_key=problem", "data.answer_key=solution",
            "data.answer_format=boxed", f"reward.plugins=[{plugin}:accuracy]",
            "model.pretrained_model_name_or_path=/nonexistent/model"]  # never reached
    for command in ("train", "eval"):
        result = subprocess.run([sys.executable, "-m", "dapo_nb.cli", command, *keys], capture_output=True, text=True,
                                cwd=tmp_path, timeout=120)
        assert result.returncode == 2, result.stderr
        line = result.stderr.strip()
        assert len(line.splitlines()) == 1 and "needs the column 'solutions'" in line
        assert "did you mean the column 'solution'?" in line and "nonexistent" not in line


def test_the_format_hint_only_when_the_format_is_the_cause(tmp_path):
    plugin = tmp_path / "fns.py"
    plugin.write_text(textwrap.dedent('''
        def wants_messages(completions, **kwargs):
            return [float(c[0]["content"] == "Answer: 1") for c in completions]

        def buggy(completions, **kwargs):
            return [{}["missing"] for c in completions]  # a KeyError of its own, in either format
    '''))
    hinted = MultiObjectiveReward(objectives=[], plugins=[f"{plugin}:wants_messages"])
    with pytest.raises(PluginError, match=r"works on the conversational one: set format: conversational"):
        hinted.score(["Answer: 1"], ["1"], prompts=["What is 1?"])
    plain = MultiObjectiveReward(objectives=[], plugins=[f"{plugin}:buggy"])
    with pytest.raises(PluginError) as caught:
        plain.score(["Answer: 1"], ["1"], prompts=["What is 1?"])
    assert "KeyError" in str(caught.value) and "set format" not in str(caught.value)


# ----------------------------------------------------------------------------
# Factories with arguments, TRL's callable objects, async functions


FACTORIES = '''
def get_length_penalty(limit, scale=1.0):
    if limit <= 0:
        raise ValueError("limit must be positive")

    def length_penalty(completions, **kwargs):
        return [-scale * max(0, len(c) - limit) for c in completions]

    return length_penalty


def not_a_factory(completions, **kwargs):
    return [0.0] * len(completions)


def get_nothing(x):
    return 3


class Counter:
    __name__ = "token_counter"

    def __call__(self, completion_ids, **kwargs):
        return [float(len(ids)) for ids in completion_ids]


def get_counter():
    return Counter()
'''


def test_a_factory_is_called_once_with_its_kwargs_and_named_after_what_it_returns(tmp_path):
    path = tmp_path / "factories.py"
    path.write_text(FACTORIES)
    cfg = load_config(overrides=[
        f"reward.plugins=[{{path: {path}, function: get_length_penalty, kwargs: {{limit: 3, scale: 0.5}}}}, "
        f"{{path: {path}, function: get_counter, kwargs: {{}}, name: ids}}]",
        "reward.weights={correctness: 1.0, length_penalty: 2.0}"])  # a weight for the factory's function, by its name
    reward = reward_from_config(cfg)
    assert [p.name for p in reward.plugins] == ["length_penalty", "ids"]
    batch = reward.score(["abc", "abcdefg"], ["1", "1"], completion_ids=[[1, 2], [3]])
    assert batch.objectives["length_penalty"] == [0.0, -2.0] and batch.objectives["ids"] == [2.0, 1.0]
    assert batch.weights["length_penalty"] == 2.0
    assert batch.scores == [0.0 + 2.0 * 0.0 + 2.0, 0.0 + 2.0 * -2.0 + 1.0]  # correctness 0, ids weight 1


@pytest.mark.parametrize("entry, message", [
    ({"function": "get_length_penalty", "kwargs": {"limt": 3}}, r"kwargs do not fit the factory get_length_penalty\(limt=3\)"),
    ({"function": "get_length_penalty", "kwargs": {"limit": 0}}, r"get_length_penalty\(limit=0\) raised ValueError: limit must"),
    ({"function": "get_nothing", "kwargs": {"x": 1}}, r"returned int 3, not a reward function"),
    ({"function": "get_length_penalty"}, r"If it is a factory that returns the reward function, give its arguments"),
    ({"function": "not_a_factory", "kwargs": []}, r"'kwargs' must be a mapping"),
])
def test_factory_errors_say_what_to_fix(tmp_path, entry, message):
    path = tmp_path / "factories.py"
    path.write_text(FACTORIES)
    with pytest.raises(PluginError, match=message):
        load_plugin({"path": str(path), **entry})


def test_async_functions_of_a_batch_run_concurrently_even_inside_a_running_loop(tmp_path):
    path = tmp_path / "slow.py"
    path.write_text(textwrap.dedent('''
        import asyncio

        async def judge_a(completions, **kwargs):
            await asyncio.sleep(0.5)
            return [1.0 for _ in completions]

        async def judge_b(completions, **kwargs):
            await asyncio.sleep(0.5)
            return [0.5 for _ in completions]

        async def compute_score(data_source, solution_str, ground_truth, extra_info=None):
            await asyncio.sleep(0.5)
            return {"score": float(ground_truth in solution_str), "length": len(solution_str)}
    '''))
    reward = MultiObjectiveReward(objectives=[], plugins=[f"{path}:judge_a", f"{path}:judge_b", f"{path}"])
    assert all(p.is_async for p in reward.plugins)
    start = time.perf_counter()
    batch = reward.score(["Answer: 2", "Answer: 3", "x"], ["2", "2", "2"])
    seconds = time.perf_counter() - start
    assert batch.objectives["judge_a"] == [1.0] * 3 and batch.objectives["judge_b"] == [0.5] * 3
    assert batch.objectives["slow"] == [1.0, 0.0, 0.0] and batch.objectives["slow.length"] == [9.0, 9.0, 1.0]
    assert seconds < 1.2, f"five 0.5 s calls took {seconds:.2f} s: not concurrent"

    async def in_a_notebook():  # a Jupyter kernel runs cells inside its own event loop
        return reward.score(["Answer: 2"], ["2"])

    assert asyncio.run(in_a_notebook()).objectives["slow"] == [1.0]


def test_an_async_function_that_raises_is_reported_like_a_sync_one(tmp_path):
    path = tmp_path / "bad.py"
    path.write_text("async def judge(completions, **kwargs):\n    raise RuntimeError('judge offline')\n")
    reward = MultiObjectiveReward(objectives=["format"], plugins=[f"{path}:judge"], on_error="zero")
    batch = reward.score(["Answer: 1"], ["1"])
    assert batch.error_counts["exception"] == 1 and "judge offline" in batch.error_messages[0]
    with pytest.raises(PluginError, match="judge offline"):
        MultiObjectiveReward(objectives=[], plugins=[f"{path}:judge"]).score(["x"], ["1"])
