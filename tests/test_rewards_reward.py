"""MultiObjectiveReward end to end: configuration errors, inputs, metrics, schedule, objective errors."""

from __future__ import annotations

import pytest

from dapo_nb.rewards import (
    MultiObjectiveReward,
    ObjectiveError,
    PluginError,
    WeightsError,
    register_objective,
)



# ----------------------------------------------------------------------------
# Configuration


def test_defaults_and_unweighted_objectives():
    assert MultiObjectiveReward().weights.get() == {"correctness": 1.0, "format": 1.0}
    reward = MultiObjectiveReward(objectives=["correctness", "clarity"], weights={"correctness": 1.0})
    assert reward.weights.get() == {"correctness": 1.0, "clarity": 0.0}  # listed, logged, not rewarded
    assert MultiObjectiveReward(weights={"detail": 2.0}).names == ["detail"]


@pytest.mark.parametrize(
    "kwargs, error, message",
    [
        (
            {"objectives": ["corectness"]},
            ObjectiveError,
            "unknown objective 'corectness'; known objectives: clarity, correctness",
        ),
        ({"objectives": "correctness"}, ValueError, "write \\['correctness'\\]"),
        ({"objectives": ["format", "format"]}, ValueError, "more than once"),
        ({"objectives": []}, ValueError, "no objectives"),
        (
            {"weights": {"correctness": 1.0, "clarity": 1.0}, "objectives": ["correctness"]},
            WeightsError,
            "unknown objective 'clarity'",
        ),
        ({"weights": {"correctness": -1.0}}, WeightsError, ">= 0"),
        ({"scalarizer": "sum"}, ValueError, "choose one of weighted_sum, tchebycheff, smooth_tchebycheff"),
        ({"normalization": "batch"}, ValueError, "choose one of none, group_zscore"),
        ({"on_error": "ignore"}, ValueError, "not one of raise, zero, drop"),
        ({"objectives": ["overlong"]}, ObjectiveError, "overlong_max_len must be a positive integer"),
        ({"objectives": ["overlong"], "overlong_max_len": 100, "overlong_buffer_len": 200}, ObjectiveError, "exceeds"),
        ({"objectives": ["length"], "overlong_max_len": -5}, ObjectiveError, "overlong_max_len"),
        ({"ideal": {"correctness": float("nan")}}, ValueError, "ideal\\['correctness'\\] is nan"),
        ({"schedule": {5: {"detail": 1.0}}}, WeightsError, "schedule\\[5\\]: unknown objective 'detail'"),
    ],
)
def test_configuration_errors(kwargs, error, message):
    with pytest.raises(error, match=message):
        MultiObjectiveReward(**kwargs)


# ----------------------------------------------------------------------------
# Inputs


@pytest.mark.parametrize(
    "call, message",
    [
        (dict(completions="Answer: 1", ground_truths=["1"]), "completions must be a list"),
        (dict(completions=["a", 3], ground_truths=["1", "1"]), r"completions\[1\] is int"),
        (dict(completions=["a"], ground_truths=["1", "2"]), "ground_truths has 2 items but completions has 1"),
        (dict(completions=["a"], ground_truths=[1]), r"ground_truths\[0\] is int"),
        (dict(completions=["a"], ground_truths=["1"], group_ids=[0, 1]), "group_ids has 2 items"),
        (dict(completions=["a"], ground_truths=["1"], num_tokens=[1.5]), r"num_tokens\[0\] is float"),
        (dict(completions=["a"], ground_truths=["1"], infos=["qid"]), r"infos\[0\] is str"),
    ],
)
def test_bad_inputs_name_the_argument(call, message):
    with pytest.raises(ValueError, match=message):
        MultiObjectiveReward().score(**call)


def test_overlong_needs_num_tokens():
    reward = MultiObjectiveReward(objectives=["correctness", "overlong"], overlong_max_len=100, overlong_buffer_len=20)
    with pytest.raises(ValueError, match="objective 'overlong' needs num_tokens"):
        reward.score(["Answer: 1"], ["1"])
    batch = reward.score(["Answer: 1", "Answer: 1", "Answer: 2"], ["1"] * 3, num_tokens=[50, 90, 120])
    assert batch.objectives["overlong"] == [0.0, -0.5, -1.0]
    assert batch.scores == [1.0, 0.5, -1.0]  # DAPO: R = correctness + R_length


def test_empty_batch_and_unicode():
    reward = MultiObjectiveReward(objectives=["correctness", "format", "detail"])
    empty = reward.score([], [])
    assert empty.scores == [] and empty.metrics()["reward"] != empty.metrics()["reward"]  # NaN
    batch = reward.score(["Ответ 🙂\nAnswer: ４２", ""], ["42", "42"])
    assert batch.objectives["correctness"] == [1.0, 0.0] and batch.objectives["format"] == [1.0, 0.0]


# ----------------------------------------------------------------------------
# Metrics, weights, history


def test_metrics_use_trl_names_and_record_the_weights_used():
    reward = MultiObjectiveReward(objectives=["correctness", "format"], weights={"correctness": 1.0, "format": 0.2})
    batch = reward.score(["Answer: 540", "Answer: 541", "it is 540"], ["540"] * 3, step=3)
    metrics = batch.metrics()
    assert batch.scores == [1.2, 0.2, 0.0]  # "it is 540" states no answer: correctness 0 (marked_answer_only)
    mean = 1.4 / 3
    assert metrics["reward"] == pytest.approx(mean)
    assert metrics["reward_std"] == pytest.approx((((1.2 - mean) ** 2 + (0.2 - mean) ** 2 + mean**2) / 3) ** 0.5)
    assert metrics["rewards/correctness/mean"] == pytest.approx(1 / 3)
    assert metrics["rewards/format/std"] == pytest.approx((2 / 9) ** 0.5)
    assert metrics["weights/format"] == 0.2
    assert metrics["reward_errors/exception"] == 0.0
    assert reward.weights.history == [(3, {"correctness": 1.0, "format": 0.2})]


def test_schedule_drives_headless_runs():
    reward = MultiObjectiveReward(
        objectives=["correctness", "format"], weights={"correctness": 1.0, "format": 1.0}, schedule={2: {"format": 0.0}}
    )
    scores = [reward.score(["Answer: 541"], ["540"], step=step).scores[0] for step in range(4)]
    assert scores == [1.0, 1.0, 0.0, 0.0]  # 'format' off from step 2 on
    assert [w["format"] for _, w in reward.weights.history] == [1.0, 1.0, 0.0, 0.0]


# ----------------------------------------------------------------------------
# Errors inside registered objectives follow on_error too


def test_user_objective_errors(scratch_registry):
    @register_objective(low=0.0, high=1.0)
    def picky(completion, ground_truth, **_):
        """Fails on 'boom', out of range on 'big'."""
        if completion == "boom":
            raise KeyError("missing")
        return 5.0 if completion == "big" else 1.0

    with pytest.raises(PluginError, match=r"objective 'picky': sample 1 \(completion 'boom'\): raised KeyError"):
        MultiObjectiveReward(objectives=["picky"]).score(["ok", "boom"], ["1", "1"])
    with pytest.raises(
        PluginError, match=r"sample 0 \(completion 'big'\): returned 5.0, outside its documented range \[0.0, 1.0\]"
    ):
        MultiObjectiveReward(objectives=["picky"]).score(["big"], ["1"])
    batch = MultiObjectiveReward(objectives=["picky", "correctness"], on_error="drop").score(
        ["ok", "boom", "big"], ["1"] * 3
    )
    assert batch.valid == [True, False, False]
    assert batch.error_counts["exception"] == 1 and batch.error_counts["out_of_range"] == 1


def test_user_objective_returning_nan_or_text(scratch_registry):
    register_objective(lambda completion, ground_truth, **_: float("nan"), name="nanny")
    register_objective(lambda completion, ground_truth, **_: "0.5", name="texty")
    with pytest.raises(PluginError, match="objective 'nanny'.*is nan"):
        MultiObjectiveReward(objectives=["nanny"]).score(["x"], ["1"])
    zeroed = MultiObjectiveReward(objectives=["texty", "correctness"], on_error="zero").score(["Answer: 1"], ["1"])
    assert zeroed.objectives["texty"] == [0.0] and zeroed.scores == [1.0] and zeroed.error_counts["non_numeric"] == 1
