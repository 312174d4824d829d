"""Reward plugins: the seed / verl / TRL contracts, and every way a plugin can go wrong."""

from __future__ import annotations

import math
import textwrap
from pathlib import Path

import pytest

from dapo_nb.rewards import SEED_WEIGHTS, MultiObjectiveReward, ObjectiveError, PluginError, WeightsError, load_plugin

try:  # the seed's example texts; tests/ is on sys.path under pytest's default import mode
    from test_rewards_objectives import example_a, example_b
except ImportError:  # tests/ turned into a package
    from tests.test_rewards_objectives import example_a, example_b

# The seed's plugin, exactly as printed in its README (section 4).
SEED_PLUGIN = '''
def compute_score(split: str, solution_str: str, ground_truth: str, info: dict) -> dict:
    """
    Return a scalar reward for PPO and (optionally) a breakdown dict.
    Implement any scalarization you want (weighted sum, etc.).
    """
    # --- toy heuristics (replace with your own logic or JSON lookups) ---
    correctness = 1.0 if ground_truth and ground_truth.strip() in solution_str else 0.0
    clarity     = min(1.0, solution_str.count("\\n") / 8.0 + 0.2)  # crude: more structure → clearer, capped at 1.0
    detail      = min(1.0, len(solution_str) / 1200.0)            # crude: longer → more detail, capped at 1.0
    creativity  = 0.5 if ("alternative" in solution_str.lower() or "another approach" in solution_str.lower()) else 0.2

    # weighted sum (edit weights as you like)
    w = {"correctness": 0.5, "clarity": 0.25, "detail": 0.15, "creativity": 0.10}
    score = (
        w["correctness"] * correctness +
        w["clarity"]     * clarity +
        w["detail"]      * detail +
        w["creativity"]  * creativity
    )

    return {
        "score": float(score),
        "breakdown": {
            "correctness": float(correctness),
            "clarity": float(clarity),
            "detail": float(detail),
            "creativity": float(creativity),
        }
    }
'''


SEED = "my_multiobj_reward_fixed"  # the seed plugin's name (its file's stem): objectives SEED and SEED.<key>


def write_plugin(tmp_path: Path, source: str, name: str = "plugin_under_test.py") -> Path:
    path = tmp_path / name
    path.write_text(textwrap.dedent(source), encoding="utf-8")
    return path


@pytest.fixture
def seed_plugin(tmp_path: Path) -> Path:
    return write_plugin(tmp_path, SEED_PLUGIN, "my_multiobj_reward_fixed.py")


# ----------------------------------------------------------------------------
# The seed contract, unchanged


def test_seed_plugin_reproduces_examples_a_and_b(seed_plugin):
    reward = MultiObjectiveReward(plugin=str(seed_plugin))
    batch = reward.score([example_a(), example_b()], ["540", "540"])
    assert batch.scores[0] == pytest.approx(0.9125, abs=1e-12)  # the plugin's own float sum
    assert batch.scores[1] == pytest.approx(0.42, abs=1e-12)
    assert batch.objectives[f"{SEED}.correctness"] == [1.0, 0.0]  # namespaced: never the built-in correctness
    assert batch.objectives[f"{SEED}.detail"] == [0.75, 1.0]
    assert batch.weights == {SEED: 1.0, **{f"{SEED}.{k}": 0.0 for k in ("clarity", "correctness", "creativity", "detail")}}
    metrics = batch.metrics()
    for key in (f"rewards/{SEED}/mean", f"rewards/{SEED}.correctness/mean", f"rewards/{SEED}.clarity/std",
                f"weights/{SEED}.detail"):
        assert key in metrics
    assert metrics[f"rewards/{SEED}.creativity/mean"] == pytest.approx(0.35)


def test_seed_breakdown_can_be_reweighted_live(seed_plugin):
    reward = MultiObjectiveReward(plugin=seed_plugin, weights={SEED: 0.0, **{f"{SEED}.{k}": w for k, w in SEED_WEIGHTS.items()}})
    assert reward.objectives == {}  # every weighted name is the plugin's
    assert reward.score([example_a()], ["540"]).scores == [0.9125]  # exactly, via math.fsum
    reward.weights.set({f"{SEED}.creativity": 0.0, f"{SEED}.correctness": 1.0})
    batch = reward.score([example_a()], ["540"])
    assert batch.scores == [pytest.approx(1.0 + 0.25 + 0.15 * 0.75)]
    assert reward.names == [SEED, *(f"{SEED}.{k}" for k in ("clarity", "correctness", "creativity", "detail"))]


def test_plugin_with_builtin_objectives(seed_plugin):
    reward = MultiObjectiveReward(objectives=["format"], plugin=seed_plugin)
    batch = reward.score(["Answer: 540", "540"], ["540", "540"])
    assert batch.objectives["format"] == [1.0, 0.0]
    # format adds 1; the seed's own score differs only by detail: 0.15 * (11 - 3) / 1200 characters
    assert batch.scores[0] - batch.scores[1] == pytest.approx(1.0 + 0.15 * 8 / 1200)


def test_plugin_weights_are_checked_once_keys_are_known(seed_plugin):
    reward = MultiObjectiveReward(plugin=seed_plugin, weights={SEED: 1.0, f"{SEED}.clartiy": 0.5})
    with pytest.raises(WeightsError, match=rf"unknown objective '{SEED}.clartiy'; known objectives: {SEED}, {SEED}.clarity"):
        reward.score(["Answer: 540"], ["540"])
    with pytest.raises(ObjectiveError, match=rf"unknown objective 'my_plugin.x'.*named after the plugin: {SEED}, {SEED}.<br"):
        MultiObjectiveReward(plugin=seed_plugin, weights={"my_plugin.x": 1.0})  # no such plugin: known at once
    with pytest.raises(WeightsError, match=r"schedule\[3\]: unknown objective 'clarity'; known objectives: correctness"):
        MultiObjectiveReward(plugin=seed_plugin, weights={"correctness": 1.0}, schedule={3: {"clarity": 1.0}})


def test_seed_plugin_receives_split_and_info(tmp_path):
    path = write_plugin(
        tmp_path,
        """
        def compute_score(split, solution_str, ground_truth, info):
            return {"score": 1.0 if split == "eval" else 0.0,
                    "breakdown": {"index": float(info["index"]), "qid_len": float(len(info["qid"]))}}
    """,
    )
    batch = MultiObjectiveReward(plugin=path).score(
        ["a", "b"], ["1", "1"], split="eval", infos=[{"qid": "q1"}, {"qid": "q22"}]
    )
    assert batch.scores == [1.0, 1.0]
    assert batch.objectives["plugin_under_test.index"] == [0.0, 1.0]
    assert batch.objectives["plugin_under_test.qid_len"] == [2.0, 3.0]


def test_bare_float_is_accepted(tmp_path):
    path = write_plugin(
        tmp_path, "def compute_score(split, solution_str, ground_truth, info):\n    return len(solution_str) / 10\n"
    )
    assert MultiObjectiveReward(plugin=path).score(["abcde"], ["x"]).scores == [0.5]


# ----------------------------------------------------------------------------
# verl and TRL contracts


def test_verl_contract(tmp_path):
    path = write_plugin(
        tmp_path,
        """
        def compute_score(data_source, solution_str, ground_truth, extra_info=None):
            ok = solution_str.strip().endswith(ground_truth)
            return {"score": 1.0 if ok else -1.0, "acc": ok, "pred": solution_str[-3:], "source_len": len(data_source)}
    """,
    )
    reward = MultiObjectiveReward(plugin=path)
    assert reward.plugin.contract == "verl"
    batch = reward.score(["x 540", "x 541"], ["540", "540"], infos=[{"data_source": "gsm8k"}, {}])
    assert batch.scores == [1.0, -1.0]
    assert batch.objectives["plugin_under_test.acc"] == [1.0, 0.0]  # bools count as numbers
    assert "plugin_under_test.pred" not in batch.objectives  # verl's string extras are skipped
    assert batch.objectives["plugin_under_test.source_len"] == [5.0, 7.0]  # "gsm8k", then the default "dapo_nb"


def test_trl_reward_function(tmp_path):
    def length_bonus(completions, ground_truth, **kwargs):
        return [None if c == "skip" else float(len(c)) for c in completions]

    reward = MultiObjectiveReward(objectives=["correctness"], plugin=length_bonus)
    assert reward.plugin.contract == "trl" and reward.names == ["correctness", "length_bonus"]
    batch = reward.score(["Answer: 7", "skip", "Answer: 8"], ["7", "7", "7"])
    assert batch.objectives["length_bonus"] == [9.0, 0.0, 9.0]  # None: not applicable, adds 0 like TRL's nansum
    assert batch.scores == [10.0, 0.0, 9.0]
    assert batch.applicable == {"length_bonus": [True, False, True]}
    assert batch.metrics()["rewards/length_bonus/mean"] == 9.0  # TRL's nanmean leaves the None out
    assert batch.valid == [True, True, True]  # correctness still scores the second sample


# ----------------------------------------------------------------------------
# Bad plugins: load time (always raised)


def test_missing_file():
    with pytest.raises(PluginError, match="not found"):
        MultiObjectiveReward(plugin="no/such/plugin.py")


def test_file_that_fails_to_import(tmp_path):
    path = write_plugin(tmp_path, "import not_a_real_module_xyz\n")
    with pytest.raises(PluginError, match="failed to import: ModuleNotFoundError"):
        load_plugin(path)
    bad_syntax = write_plugin(tmp_path, "def compute_score(:\n", "broken.py")
    with pytest.raises(PluginError, match="broken.py.*SyntaxError"):
        load_plugin(bad_syntax)


def test_missing_function_lists_what_the_file_defines(tmp_path):
    path = write_plugin(tmp_path, "def score_it(split, solution_str, ground_truth, info):\n    return 1.0\n")
    with pytest.raises(
        PluginError,
        match=r"'compute_score' is missing; the file defines \['score_it'\].*reward.plugins=\[.*plugin_under_test.py:score_it\]",
    ):
        load_plugin(path)
    assert load_plugin(path, function="score_it").contract == "seed"
    assert load_plugin(f"{path}:score_it").name == "score_it"


def test_function_name_bound_to_a_non_callable(tmp_path):
    path = write_plugin(tmp_path, "compute_score = 3\n")
    with pytest.raises(PluginError, match="is not callable"):
        load_plugin(path)


@pytest.mark.parametrize(
    "source, message",
    [
        ("def compute_score(split, solution_str, ground_truth):\n    return 1.0\n", "wrong signature .* seed contract"),
        ("def compute_score(data_source, solution_str):\n    return 1.0\n", "wrong signature .* verl contract"),
        ("def compute_score(a, b, c, d):\n    return 1.0\n", "cannot tell its contract"),
    ],
)
def test_wrong_signatures(tmp_path, source, message):
    with pytest.raises(PluginError, match=message):
        load_plugin(write_plugin(tmp_path, source))


def test_forced_contract_and_trl_signature():
    def positional(a, b, c, d):
        return 1.0

    assert load_plugin(positional, contract="seed").contract == "seed"
    assert load_plugin(lambda completions: [0.0]).contract == "trl"  # gets only the keywords it names
    with pytest.raises(PluginError, match="wrong signature .* trl contract"):
        load_plugin(positional, contract="trl")
    with pytest.raises(PluginError, match="unknown plugin contract"):
        load_plugin(positional, contract="openai")


# ----------------------------------------------------------------------------
# Bad plugins: per sample (on_error policy)

BAD_RESULTS = {
    "exception": ('raise ValueError("boom on " + solution_str)', "raised ValueError: boom on bad"),
    "non_finite": ('return {"score": float("nan"), "breakdown": {"a": 1.0}}', "'score' is nan"),
    "non_finite_inf": ('return {"score": 1.0, "breakdown": {"a": float("inf")}}', r"breakdown\['a'\] is inf"),
    "non_numeric": ('return {"score": "high", "breakdown": {"a": 1.0}}', "'score' is str 'high', not a number"),
    "non_numeric_list": ("return [1.0]", "returned list"),
    "non_numeric_breakdown": ('return {"score": 1.0, "breakdown": [1.0]}', "'breakdown' is list"),
    "missing_score": (
        'return {"reward": 1.0, "breakdown": {"a": 1.0}}',
        r"returned a dict without 'score' \(keys: \['breakdown', 'reward'\]\)",
    ),
    "keys_changed": (
        'return {"score": 1.0, "breakdown": {"b": 1.0}}',
        r"breakdown keys changed from \['a'\] \(missing: \['a'\], new: \['b'\]\)",
    ),
}


def flaky_plugin(tmp_path: Path, bad_line: str) -> Path:
    """A seed plugin that is fine except on completions equal to 'bad'."""
    return write_plugin(
        tmp_path,
        f"""
        def compute_score(split, solution_str, ground_truth, info):
            if solution_str == "bad":
                {bad_line}
            return {{"score": 1.0, "breakdown": {{"a": 0.5}}}}
    """,
    )


@pytest.mark.parametrize("case", sorted(BAD_RESULTS))
def test_bad_sample_raises_naming_plugin_sample_and_problem(tmp_path, case):
    bad_line, problem = BAD_RESULTS[case]
    reward = MultiObjectiveReward(plugin=flaky_plugin(tmp_path, bad_line))
    with pytest.raises(
        PluginError, match=rf"plugin_under_test.py.*sample 1 qid='q-bad' \(completion 'bad'\): {problem}.*on_error"
    ):
        reward.score(
            ["good", "bad", "good"], ["1"] * 3, infos=[{"qid": "q-good"}, {"qid": "q-bad"}, {"qid": "q-good2"}]
        )


def test_plugin_exception_is_chained_for_its_traceback(tmp_path):
    reward = MultiObjectiveReward(plugin=flaky_plugin(tmp_path, BAD_RESULTS["exception"][0]))
    with pytest.raises(PluginError) as caught:
        reward.score(["bad"], ["1"])
    assert isinstance(caught.value.__cause__, ValueError) and str(caught.value.__cause__) == "boom on bad"


@pytest.mark.parametrize("case", sorted(BAD_RESULTS))
def test_bad_sample_zero_policy(tmp_path, case):
    bad_line, _ = BAD_RESULTS[case]
    kind = case.split("_inf")[0].split("_list")[0].split("_breakdown")[0]
    reward = MultiObjectiveReward(plugin=flaky_plugin(tmp_path, bad_line), on_error="zero")
    batch = reward.score(["good", "bad", "good"], ["1"] * 3)
    assert batch.scores == [1.0, 0.0, 1.0] and batch.valid == [True] * 3
    assert batch.objectives["plugin_under_test.a"] == [0.5, 0.0, 0.5]
    assert batch.error_counts[kind] == 1 and sum(batch.error_counts.values()) == 1
    assert batch.metrics()[f"reward_errors/{kind}"] == 1.0
    assert len(batch.error_messages) == 1 and "sample 1" in batch.error_messages[0]


def test_bad_sample_drop_policy(tmp_path, caplog):
    reward = MultiObjectiveReward(plugin=flaky_plugin(tmp_path, 'return {"score": float("nan")}'), on_error="drop")
    batch = reward.score(["good", "bad", "bad", "good"], ["1"] * 4)
    assert batch.valid == [True, False, False, True]
    assert batch.scores == [1.0, 0.0, 0.0, 1.0]
    metrics = batch.metrics()
    assert metrics["reward_errors/non_finite"] == 2.0 and metrics["reward_errors/dropped"] == 2.0
    assert metrics["reward"] == 1.0 and metrics["reward_std"] == 0.0  # dropped samples stay out of the stats
    assert "plugin_under_test.py" in caplog.text and "on_error=drop" in caplog.text  # logged, not silent


def test_tensor_like_value_gets_a_hint(tmp_path):
    path = write_plugin(
        tmp_path,
        """
        class FakeTensor:
            def item(self):
                return 1.0
        def compute_score(split, solution_str, ground_truth, info):
            return FakeTensor()
    """,
    )
    with pytest.raises(PluginError, match=r"return .item\(\)"):
        MultiObjectiveReward(plugin=path).score(["x"], ["1"])


@pytest.mark.parametrize(
    "fn, kind, message",
    [
        (lambda completions, **kw: [1.0], "wrong_length", "returned 1 values for a batch of 2"),
        (lambda completions, **kw: 1.0, "wrong_length", "returned float for a batch of 2"),
        (lambda completions, **kw: [1.0, math.nan], "non_finite", "is nan"),
        (lambda completions, **kw: [1.0, "x"], "non_numeric", "is str"),
        (lambda completions, **kw: 1 / 0, "exception", "ZeroDivisionError.*whole batch"),
    ],
)
def test_bad_trl_functions(fn, kind, message):
    with pytest.raises(PluginError, match=message):
        MultiObjectiveReward(plugin=fn).score(["a", "b"], ["1", "1"])
    batch = MultiObjectiveReward(plugin=fn, on_error="zero").score(["a", "b"], ["1", "1"])
    assert batch.error_counts[kind] >= 1


def test_all_samples_failing_before_keys_are_known(tmp_path):
    path = write_plugin(
        tmp_path, "def compute_score(split, solution_str, ground_truth, info):\n    raise RuntimeError('down')\n"
    )
    reward = MultiObjectiveReward(on_error="zero", plugin=path, weights={"plugin_under_test.later_key": 0.5})
    batch = reward.score(["a", "b"], ["1", "1"])
    assert batch.scores == [0.0, 0.0] and batch.error_counts["exception"] == 2
