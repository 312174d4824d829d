"""Live weights: validation, schedule, exact history, thread safety (dapo_nb/rewards/weights.py)."""

from __future__ import annotations

import math
import threading
import time

import pytest

from dapo_nb.rewards import LiveWeights, MultiObjectiveReward, WeightsError

KNOWN = ["correctness", "format", "clarity"]


@pytest.mark.parametrize(
    "weights, message",
    [
        ({"correctness": math.nan}, "must be finite"),
        ({"correctness": math.inf}, "must be finite"),
        ({"correctness": -0.5}, "must be >= 0"),
        ({"correctness": 0.0, "format": 0.0}, "at least one weight must be > 0"),
        ({"correctnes": 1.0}, "unknown objective 'correctnes'; known objectives: clarity, correctness, format"),
        ({"correctness": "1"}, "must be a number"),
        ({"correctness": True}, "must be a number"),
        ({"correctness": None}, "must be a number"),
    ],
)
def test_bad_weights_are_rejected(weights, message):
    with pytest.raises(WeightsError, match=message):
        LiveWeights(weights, KNOWN)


def test_set_merges_validates_and_keeps_old_weights_on_error():
    live = LiveWeights({"correctness": 1.0, "format": 0.2}, KNOWN)
    assert live.set({"format": 0.5}) == {"correctness": 1.0, "format": 0.5}
    with pytest.raises(WeightsError, match="unknown objective 'detail'"):
        live.set({"detail": 1.0})
    with pytest.raises(WeightsError, match="at least one"):
        live.set({"correctness": 0.0, "format": 0.0})
    assert live.get() == {"correctness": 1.0, "format": 0.5}
    assert live.set({"clarity": 1.0}, replace=True) == {"clarity": 1.0}


def test_get_returns_a_copy():
    live = LiveWeights({"correctness": 1.0}, KNOWN)
    live.get()["correctness"] = 99.0
    assert live.get() == {"correctness": 1.0}


def test_schedule_applies_from_its_step_on_once_each():
    live = LiveWeights(
        {"correctness": 1.0, "format": 0.0}, KNOWN, schedule={"2": {"format": 0.5}, 4: {"correctness": 0.0}}
    )
    used = [live.begin_batch(step)[1] for step in range(3)]
    assert used == [{"correctness": 1.0, "format": 0.0}] * 2 + [{"correctness": 1.0, "format": 0.5}]
    live.set({"format": 0.1})  # a manual change holds until the next due entry
    assert live.begin_batch(3)[1] == {"correctness": 1.0, "format": 0.1}
    assert live.begin_batch(4)[1] == {"correctness": 0.0, "format": 0.1}
    assert [step for step, _ in live.history] == [0, 1, 2, 3, 4]


def test_schedule_catches_up_when_a_run_resumes_past_it():
    live = LiveWeights({"correctness": 1.0}, KNOWN, schedule={1: {"format": 1.0}, 5: {"format": 2.0}})
    assert live.begin_batch(10)[1] == {"correctness": 1.0, "format": 2.0}


@pytest.mark.parametrize(
    "schedule, message",
    [
        ({-1: {"format": 1.0}}, "non-negative integer"),
        ({"soon": {"format": 1.0}}, "non-negative integer"),
        ({3: {"formatt": 1.0}}, r"schedule\[3\]: unknown objective 'formatt'"),
        ({3: {"format": -1.0}}, r"schedule\[3\]: weight of 'format'"),
        ({3: {"correctness": 0.0}}, r"schedule\[3\]: at least one weight"),
        ([1, 2], "must be a mapping"),
    ],
)
def test_bad_schedules_are_rejected_up_front(schedule, message):
    with pytest.raises(WeightsError, match=message):
        LiveWeights({"correctness": 1.0}, KNOWN, schedule=schedule)


def test_steps_default_to_previous_plus_one():
    live = LiveWeights({"correctness": 1.0}, KNOWN)
    assert [live.begin_batch(None)[0] for _ in range(2)] + [live.begin_batch(7)[0], live.begin_batch(None)[0]] == [
        0,
        1,
        7,
        8,
    ]


def test_history_is_exact_under_concurrent_changes():
    """A writer thread flips weights between two states while batches are scored: each batch's recorded
    weights must be one whole state (never a mix) and must be the weights its scores were computed with."""
    reward = MultiObjectiveReward(objectives=["correctness", "format"], weights={"correctness": 1.0, "format": 0.0})
    states = [{"correctness": 1.0, "format": 0.0}, {"correctness": 0.0, "format": 1.0}]
    stop = threading.Event()

    def writer() -> None:
        i = 0
        while not stop.is_set():
            reward.weights.set(states[i % 2])
            i += 1
            time.sleep(0.0002)

    thread = threading.Thread(target=writer)
    thread.start()
    batches = []
    try:
        while len(batches) < 200 or (len({tuple(b.weights.items()) for b in batches}) < 2 and len(batches) < 20_000):
            batches.append(reward.score(["Answer: 540", "Answer: 541"], ["540", "540"], step=len(batches)))
    finally:
        stop.set()
        thread.join()
    history = reward.weights.history
    assert [step for step, _ in history] == list(range(len(batches)))
    for batch, (_, recorded) in zip(batches, history, strict=True):
        assert recorded in states and recorded == batch.weights
        expected = [recorded["correctness"] * 1.0 + recorded["format"] * 1.0, recorded["format"] * 1.0]
        assert batch.scores == expected
    assert len({tuple(w.items()) for _, w in history}) == 2  # both states were actually seen
