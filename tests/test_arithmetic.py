"""Tests for dapo_nb.arithmetic: determinism, split hygiene, answers, and the committed data files."""

from __future__ import annotations

import re
import shlex
import subprocess
import sys
from pathlib import Path

import pytest

from dapo_nb.arithmetic import LEVELS, main, make_splits
from dapo_nb.data import load_prompts

REPO = Path(__file__).resolve().parents[1]

# ----------------------------------------------------------------------------
# An independent reader of the story text: the answer must follow from the words alone.

OPENING = re.compile(r"^(?P<name>\w+) has (?P<n>\d+) (?P<noun>\w+)\.$")
EVENTS = [
    (re.compile(r"^Then (?:\w+ buys|\w+ finds|a friend gives \w+) (?P<n>\d+) more \w+\.$"), lambda v, n: v + n),
    (re.compile(r"^Then \w+ (?:gives away|loses|sells) (?P<n>\d+) \w+\.$"), lambda v, n: v - n),
    (re.compile(r"^Then \w+ gets enough \w+ to have (?P<n>\d+) times as many as before\.$"), lambda v, n: v * n),
    (re.compile(r"^Then \w+ splits the \w+ into (?P<n>\d+) equal groups and keeps only one group\.$"), lambda v, n: v / n),
]
QUESTION = re.compile(r"^How many \w+ does \w+ have now\?$")


def solve(question: str) -> tuple[float, int, list[float]]:
    """(answer, number of events, every amount along the way) read from the question text."""
    sentences = re.findall(r"[^.?]+[.?]", question)
    sentences = [s.strip() for s in sentences]
    opening = OPENING.match(sentences[0])
    assert opening, sentences[0]
    assert QUESTION.match(sentences[-1]), sentences[-1]
    value = float(opening["n"])
    amounts = [value]
    for sentence in sentences[1:-1]:
        matches = [(pattern.match(sentence), apply) for pattern, apply in EVENTS]
        match, apply = next((m, a) for m, a in matches if m)
        value = apply(value, int(match["n"]))
        amounts.append(value)
    return value, len(sentences) - 2, amounts


# ----------------------------------------------------------------------------
# Generator


def test_answers_follow_from_the_text_and_stay_whole_and_in_range():
    splits = make_splits(sorted(LEVELS), train_per_level=150, test_per_level=30, seed=3)
    for record in splits["train"] + splits["test"]:
        spec = LEVELS[record["level"]]
        answer, num_events, amounts = solve(record["prompt"])
        assert str(int(answer)) == record["ground_truth"], record
        assert num_events == spec.num_ops, record
        assert all(a == int(a) and 0 <= a <= spec.max_value for a in amounts), record
        assert record["qid"].startswith(f"arith-L{record['level']}-")


def test_nouns_agree_with_numbers():
    records = make_splits([1, 2, 3], 300, 0, seed=0)["train"]
    texts = " ".join(r["prompt"] for r in records)
    assert not re.search(r"\b1 \w+s\b", texts), "found '1 <plural>'"
    assert not re.search(r"\b([02-9]|\d\d+) (apple|marble|sticker|book|pencil|coin|card|shell|cookie|stamp|balloon|bead)\b", texts)
    assert re.search(r"\b1 \w+[^s]\b", texts), "expected some '1 <singular>' in 300 problems"


def test_same_seed_same_records_other_seed_differs():
    assert make_splits([1, 2], 40, 10, seed=5) == make_splits([1, 2], 40, 10, seed=5)
    assert make_splits([1, 2], 40, 10, seed=5)["test"] != make_splits([1, 2], 40, 10, seed=6)["test"]


def test_splits_share_no_question_and_qids_are_unique():
    splits = make_splits([1, 2, 3], 300, 60, seed=0)
    train_texts = {r["prompt"] for r in splits["train"]}
    test_texts = {r["prompt"] for r in splits["test"]}
    assert len(train_texts) == 900 and len(test_texts) == 180
    assert not train_texts & test_texts
    qids = [r["qid"] for r in splits["train"] + splits["test"]]
    assert len(set(qids)) == len(qids)


def test_test_split_and_each_level_are_stable_when_other_sizes_change():
    small = make_splits([1, 2], 20, 10, seed=0)
    large = make_splits([1, 2, 3], 200, 10, seed=0)
    assert large["test"][:20] == small["test"]  # levels 1 and 2 come first in the test file
    assert {r["qid"] for r in small["train"]} <= {r["qid"] for r in large["train"]}


def test_per_level_counts():
    splits = make_splits([1, 2, 3], [5, 3, 1], [2, 1, 0], seed=0)
    count = lambda records, level: sum(r["level"] == level for r in records)
    assert [count(splits["train"], level) for level in (1, 2, 3)] == [5, 3, 1]
    assert [count(splits["test"], level) for level in (1, 2, 3)] == [2, 1, 0]


def test_train_file_mixes_levels():
    train = make_splits([1, 2, 3], 100, 0, seed=0)["train"]
    assert {r["level"] for r in train[:30]} == {1, 2, 3}


@pytest.mark.parametrize(
    "kwargs, message",
    [
        (dict(levels=[9], train_per_level=1, test_per_level=1), r"unknown level\(s\) \[9\]"),
        (dict(levels=[1, 1], train_per_level=1, test_per_level=1), "must not repeat"),
        (dict(levels=[1], train_per_level=-1, test_per_level=1), ">= 0"),
        (dict(levels=[1, 2], train_per_level=[1, 2, 3], test_per_level=1), r"one count or one per level \(2\), got 3"),
        (dict(levels=[1], train_per_level=10**6, test_per_level=0), "cannot supply 1000000 distinct problems; ask for at most"),
    ],
)
def test_bad_arguments_are_clear_errors(kwargs, message):
    with pytest.raises(ValueError, match=message):
        make_splits(**kwargs)


# ----------------------------------------------------------------------------
# Command line and the committed files


def test_cli_writes_byte_identical_loadable_files(tmp_path):
    args = ["--levels", "1", "3", "--train-per-level", "25", "--test-per-level", "5", "--seed", "2"]
    main(["--out-dir", str(tmp_path / "a"), *args])
    main(["--out-dir", str(tmp_path / "b"), *args])
    for name in ("train.jsonl", "test.jsonl"):
        assert (tmp_path / "a" / name).read_bytes() == (tmp_path / "b" / name).read_bytes()
    train = load_prompts(tmp_path / "a" / "train.jsonl")
    assert len(train) == 50 and {e.extra["level"] for e in train} == {1, 3}
    assert all(e.data_source == "arithmetic" and re.fullmatch(r"\d+", e.ground_truth) for e in train)


def test_cli_rejects_unknown_level(capsys):
    with pytest.raises(SystemExit) as caught:
        main(["--levels", "7"])
    assert caught.value.code == 2
    assert "unknown level(s) [7]" in capsys.readouterr().err


def readme_command() -> list[str]:
    """The regeneration command written in data/README.md."""
    readme = (REPO / "data" / "README.md").read_text(encoding="utf-8")
    lines = [line.strip() for line in readme.splitlines() if line.strip().startswith("python -m dapo_nb.arithmetic")]
    assert len(lines) == 1, "data/README.md must state the one command that made the files"
    return shlex.split(lines[0])


def test_committed_files_match_the_readme_command(tmp_path):
    command = readme_command()
    assert command[command.index("--out-dir") + 1] == "dapo_nb/data_files/arithmetic"  # the package data
    command[command.index("--out-dir") + 1] = str(tmp_path)
    subprocess.run([sys.executable, *command[1:]], check=True, cwd=REPO, capture_output=True)
    for name in ("train.jsonl", "test.jsonl"):
        packaged = REPO / "dapo_nb" / "data_files" / "arithmetic" / name
        assert (tmp_path / name).read_bytes() == packaged.read_bytes(), f"{packaged} is stale; rerun the README command"


def test_committed_files_load_and_do_not_overlap():
    train = load_prompts(REPO / "data" / "train.jsonl")
    test = load_prompts(REPO / "data" / "test.jsonl")
    assert 500 <= len(train) <= 2000 and 100 <= len(test) <= 200
    assert not {e.prompt for e in train} & {e.prompt for e in test}
    assert not {e.qid for e in train} & {e.qid for e in test}
