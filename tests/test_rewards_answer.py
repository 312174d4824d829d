"""Final-answer extraction and equivalence (dapo_nb/rewards/answer.py) on hand-written completions."""

from __future__ import annotations

import threading
import time

import pytest

from dapo_nb.rewards.answer import (
    answers_equivalent,
    extract_final_answer,
    has_final_answer,
    is_correct,
    plain_number,
    reference_answer,
)

# ----------------------------------------------------------------------------
# Extraction


@pytest.mark.parametrize(
    "text, span, marker",
    [
        ("so the result is \\boxed{540}.", "540", "boxed"),
        ("\\boxed{\\frac{1}{2}} is it", "\\frac{1}{2}", "boxed"),
        ("nested \\boxed{\\frac{\\sqrt{2}}{2}}", "\\frac{\\sqrt{2}}{2}", "boxed"),
        ("Steps...\nAnswer: 540", "540", "answer_line"),
        ("**Final Answer:** $-3$.", "-3", "answer_line"),
        ("The answer is 12.", "12", "answer_line"),
        ("The answer is: 12", "12", "answer_line"),
        ("Answer: \\(540\\)", "540", "answer_line"),
        ("Answer: \\[ \\frac{1}{2} \\]", "\\frac{1}{2}", "answer_line"),
        ("Answer: 540. Let me double-check: 3*180 = 540", "540", "answer_line"),
        ("Natalia sold 48/2 = 24 clips.\n#### 72", "72", "gsm8k"),
        ("I think it is 42, maybe 43", "43", "last_number"),
        ("half of it: 1/2", "1/2", "last_number"),
    ],
)
def test_extraction_finds_the_marked_span(text, span, marker):
    found = extract_final_answer(text)
    assert found is not None
    assert (found.text, found.marker) == (span, marker)


def test_last_candidate_wins_and_boxed_beats_answer_line():
    assert extract_final_answer("\\boxed{3} wait, no: \\boxed{5}").text == "5"
    assert extract_final_answer("Answer: 12\nOn reflection,\nAnswer: 15").text == "15"
    assert extract_final_answer("Answer: 7 because \\boxed{8}").text == "8"


def test_no_answer_at_all():
    assert extract_final_answer("") is None
    assert extract_final_answer("no digits here at all") is None
    assert not is_correct("", "540")
    assert not has_final_answer("")


def test_reference_answer_reads_gsm8k_solutions():
    assert reference_answer("She had 3+4 = 7 apples.\n#### 7") == "7"
    assert reference_answer("  540 ") == "540"
    assert reference_answer("\\boxed{\\frac{1}{2}}") == "\\frac{1}{2}"


# ----------------------------------------------------------------------------
# Equivalence


@pytest.mark.parametrize(
    "completion, truth",
    [
        ("Answer: 540", "540"),
        ("Answer: 540.0", "540"),
        ("Answer: 540,", "540"),
        ("Answer: +540", "540"),
        ("Answer: 1,234", "1234"),
        ("Answer: 1,234,567.50", "1234567.5"),
        ("Answer: −3", "-3"),  # Unicode minus
        ("Answer：５４０", "540"),  # full-width colon and digits
        ("Answer: 1e3", "1000"),
        ("Answer: 540 apples", "540"),
        ("\\boxed{\\frac{1}{2}}", "0.5"),
        ("\\boxed{\\dfrac12}", "\\frac{1}{2}"),
        ("Answer: 1/2", "\\frac{1}{2}"),
        ("\\boxed{1+x^2}", "x^2+1"),
        ("\\boxed{\\{2, 1\\}}", "\\{1,2\\}"),
        ("Answer: x = 3", "3"),
        ("Answer: B", "B"),
        ("Answer: yes", "Yes"),
        ("Answer: 123456789012345678901234567890", "123456789012345678901234567890"),
        ("Natalia sold 72 clips.\n#### 72", "In total 48 + 24 = 72.\n#### 72"),
    ],
)
def test_equivalent_answers_are_correct(completion, truth):
    assert is_correct(completion, truth)


@pytest.mark.parametrize(
    "completion, truth",
    [
        ("Answer: 541", "540"),
        ("Answer: 5400", "540"),  # the seed's substring test would have said yes
        ("Answer: 540 or 541", "540"),  # hedging is never correct
        ("Answer: I don't know", "540"),
        ("Answer: 123456789012345678901234567891", "123456789012345678901234567890"),  # no float rounding
        ("Answer: 1,234", "1.234"),
        ("\\boxed{\\frac{1}{3}}", "0.333"),
        ("Answer: -540", "540"),
        ("\\boxed{3} wait, no: \\boxed{5}", "3"),  # the last candidate counts
        ("Answer: A", "B"),
    ],
)
def test_different_answers_are_wrong(completion, truth):
    assert not is_correct(completion, truth)


def test_plain_number_is_exact_decimal():
    assert plain_number("1,234.50") == plain_number("1234.5")
    assert plain_number("12,34") is None  # not a thousands grouping
    assert plain_number("540 or 541") is None
    assert plain_number("x") is None


def test_answers_equivalent_rejects_empty_and_huge_spans():
    assert not answers_equivalent("", "540")
    assert not answers_equivalent("540", "")
    assert not answers_equivalent("1" * 600, "1" * 600)


# ----------------------------------------------------------------------------
# Format and robustness


@pytest.mark.parametrize(
    "completion, expected",
    [
        ("Answer: 540", True),
        ("\\boxed{\\frac{1}{2}}", True),
        ("#### 72", True),
        ("the result is 540", False),  # only the fallback found it
        ("Answer:", False),
        ("Answer: I don't know", False),
        ("Answer: 540 or 541", False),
    ],
)
def test_has_final_answer(completion, expected):
    assert has_final_answer(completion) is expected


def test_math_verify_works_off_the_main_thread():
    """math-verify's signal timeout fails in threads; we switch it off there instead of crashing."""
    results: list[object] = []

    def worker() -> None:
        try:
            results.append(is_correct("\\boxed{\\frac{1}{2}}", "0.5"))
        except Exception as error:  # pragma: no cover - the failure being tested for
            results.append(error)

    thread = threading.Thread(target=worker)
    thread.start()
    thread.join(timeout=30)
    assert results == [True]


def test_plain_number_fast_path_is_fast():
    start = time.perf_counter()
    for i in range(2000):
        assert is_correct(f"Step one.\nAnswer: {i},", str(i))
    assert time.perf_counter() - start < 2.0
