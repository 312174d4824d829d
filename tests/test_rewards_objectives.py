"""Built-in objectives, the registry, and the seed's worked examples A and B."""

from __future__ import annotations

import pytest

from dapo_nb.rewards import (
    SEED_WEIGHTS,
    MultiObjectiveReward,
    ObjectiveError,
    get_objective,
    register_objective,
)
from dapo_nb.rewards.objectives import check_overlong_settings, describe_objectives

FILLER = "We restate the quantities carefully and check every intermediate product once more. "


def seed_text(steps: list[str], final_line: str, total_chars: int) -> str:
    """Newline-separated steps + final line, padded (inside step 1) to exactly total_chars."""
    body = "\n".join(steps) + "\n" + final_line
    missing = total_chars - len(body)
    assert missing >= 0, "steps too long for the requested size"
    steps = [steps[0] + (FILLER * (missing // len(FILLER) + 1))[:missing]] + steps[1:]
    text = "\n".join(steps) + "\n" + final_line
    assert len(text) == total_chars
    return text


def example_a() -> str:
    """Seed Example A: 'Answer: 540', 10 newline-separated steps, one 'Alternative approach', 900 chars."""
    steps = [f"Step {i}: multiply and add the partial results." for i in range(1, 10)]
    steps.append("Alternative approach: count the complement instead, same result.")
    return seed_text(steps, "Answer: 540", 900)


def example_b() -> str:
    """Seed Example B: wrong final answer, 12 well-formatted steps, 1300 chars, no alternative approach."""
    steps = [f"Step {i}: expand the expression and collect like terms." for i in range(1, 13)]
    return seed_text(steps, "Answer: 450", 1300)



# ----------------------------------------------------------------------------
# Seed examples with the built-in objectives


def test_seed_texts_match_the_description():
    a, b = example_a(), example_b()
    assert (a.count("\n"), len(a), "Answer: 540" in a, "alternative approach" in a.lower()) == (10, 900, True, True)
    assert (b.count("\n"), len(b), "540" in b, "alternative" in b.lower() or "another approach" in b.lower()) == (
        12,
        1300,
        False,
        False,
    )


def test_example_a_scores_exactly_0_9125():
    reward = MultiObjectiveReward(objectives=list(SEED_WEIGHTS), weights=SEED_WEIGHTS)
    batch = reward.score([example_a()], ["540"])
    assert {name: column[0] for name, column in batch.objectives.items()} == {
        "correctness": 1.0,
        "clarity": 1.0,
        "detail": 0.75,
        "creativity": 0.5,
    }
    assert batch.scores[0] == 0.9125


def test_example_b_scores_exactly_0_42():
    reward = MultiObjectiveReward(objectives=list(SEED_WEIGHTS), weights=SEED_WEIGHTS)
    batch = reward.score([example_b()], ["540"])
    assert {name: column[0] for name, column in batch.objectives.items()} == {
        "correctness": 0.0,
        "clarity": 1.0,
        "detail": 1.0,
        "creativity": 0.2,
    }
    assert batch.scores[0] == 0.42


# ----------------------------------------------------------------------------
# Each built-in objective


def call(name: str, completion: str, ground_truth: str = "540", **context) -> float:
    return get_objective(name).fn(completion, ground_truth, **context)


@pytest.mark.parametrize(
    "name, completion, expected",
    [
        ("correctness", "Answer: 540", 1.0),
        ("correctness", "Answer: 541", 0.0),
        ("correctness", "", 0.0),
        ("format", "Answer: 540", 1.0),
        ("format", "\\boxed{2}", 1.0),
        ("format", "it is 540", 0.0),
        ("format", "", 0.0),
        ("clarity", "", 0.2),
        ("clarity", "a\nb\nc\nd", 0.2 + 3 / 8),
        ("clarity", "\n" * 20, 1.0),
        ("detail", "", 0.0),
        ("detail", "x" * 600, 0.5),
        ("detail", "x" * 5000, 1.0),
        ("detail", "é" * 600, 0.5),  # characters, not bytes
        ("creativity", "Here is an ALTERNATIVE.", 0.5),
        ("creativity", "Another approach: symmetry.", 0.5),
        ("creativity", "Just compute.", 0.2),
        ("creativity", "", 0.2),
    ],
)
def test_builtin_objective_values(name, completion, expected):
    assert call(name, completion) == pytest.approx(expected, abs=1e-12)


@pytest.mark.parametrize(
    "num_tokens, expected",
    [(0, 0.0), (80, 0.0), (90, -0.5), (99, -0.95), (100, -1.0), (101, -1.0), (10_000, -1.0)],
)
def test_overlong_is_dapo_eq13(num_tokens, expected):
    """L_max = 100, L_cache = 20: 0 up to 80 tokens, linear to -1 at 100, -1 beyond."""
    value = call("overlong", "text", num_tokens=num_tokens, overlong_max_len=100, overlong_buffer_len=20)
    assert value == pytest.approx(expected)


@pytest.mark.parametrize("num_tokens, expected", [(0, 0.0), (50, -0.5), (100, -1.0), (300, -1.0)])
def test_length_is_a_linear_penalty(num_tokens, expected):
    assert call("length", "text", num_tokens=num_tokens, overlong_max_len=100) == pytest.approx(expected)


def test_builtin_values_stay_in_documented_ranges():
    texts = ["", "Answer: 540", "é\n" * 900, "alternative\n\\boxed{540}", "#### 12"]
    for name in ("correctness", "format", "clarity", "detail", "creativity"):
        objective = get_objective(name)
        for text in texts:
            assert objective.low <= objective.fn(text, "540") <= objective.high, (name, text)


@pytest.mark.parametrize("max_len, buffer_len", [(0, 0), (100, 0), (100, 200), (100.0, 10), (None, 10), (True, 1)])
def test_overlong_settings_are_validated(max_len, buffer_len):
    with pytest.raises(ObjectiveError, match="overlong"):
        check_overlong_settings(max_len, buffer_len)


# ----------------------------------------------------------------------------
# The registry


def test_register_by_decorator_and_use_in_a_reward(scratch_registry):
    @register_objective(low=0.0, high=1.0)
    def politeness(completion, ground_truth, **_):
        """1 if the answer says please."""
        return float("please" in completion.lower())

    assert get_objective("politeness").doc == "1 if the answer says please."
    assert "politeness" in describe_objectives()
    batch = MultiObjectiveReward(objectives=["politeness"]).score(["Please see: 3", "3"], ["3", "3"])
    assert batch.objectives["politeness"] == [1.0, 0.0]


def test_register_plain_call_with_name(scratch_registry):
    def shout(completion, ground_truth, **_):
        return float(completion.isupper())

    register_objective(shout, name="loud")
    assert get_objective("loud").fn is shout


def test_registry_rejects_bad_definitions(scratch_registry):
    with pytest.raises(ObjectiveError, match="already registered"):
        register_objective(lambda completion, ground_truth, **_: 0.0, name="correctness")
    with pytest.raises(ObjectiveError, match="identifier"):
        register_objective(lambda completion, ground_truth, **_: 0.0, name="bad/name")
    with pytest.raises(ObjectiveError, match="cannot be called as"):
        register_objective(lambda completion: 0.0, name="one_arg")
    with pytest.raises(ObjectiveError, match="low=2"):
        register_objective(lambda completion, ground_truth, **_: 0.0, name="inverted", low=2, high=1)
    with pytest.raises(ObjectiveError, match="not context keys"):
        register_objective(lambda completion, ground_truth, **_: 0.0, name="needy", needs=("tokens",))


def test_unknown_objective_lists_known_ones():
    with pytest.raises(ObjectiveError, match="known objectives: .*correctness"):
        get_objective("corectness")
