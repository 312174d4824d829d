"""Tests for dapo_nb.arithmetic: determinism, split hygiene, answers, the rephrased held-out split, and the committed
data files."""

from __future__ import annotations

import re
import shlex
import subprocess
import sys
from pathlib import Path

import pytest

from dapo_nb.arithmetic import GENDER, LEVELS, NAMES, main, make_rephrased, make_splits
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


# The same for the rephrased style, written from the stories' wording, not from the generator's templates.
PRONOUN = r"(?:[Hh]e|[Ss]he|[Hh]is|[Hh]er|him)"
R_OPENING = re.compile(r"^(?:(?P<name>\w+) had|At first, (?P<name2>\w+) owned|(?P<name3>\w+) started the week with"
                       r"|In the morning, (?P<name4>\w+) counted) (?P<n>\d+) \w+(?: in (?:his|her) bag)?\.$")
R_EVENTS = [
    (re.compile(rf"^(?:{PRONOUN} bought (?P<n>\d+) more|{PRONOUN} aunt gave {PRONOUN} (?P<n2>\d+) extra \w+"
                rf"|{PRONOUN} won (?P<n3>\d+) \w+ in a game|After that, {PRONOUN} collected (?P<n4>\d+) new \w+)\.$"),
     lambda v, n: v + n),
    (re.compile(rf"^(?:{PRONOUN} gave (?P<n>\d+) \w+ to a classmate|On the way home, {PRONOUN} dropped (?P<n2>\d+) \w+"
                rf"|{PRONOUN} traded away (?P<n3>\d+) \w+|After giving away (?P<n4>\d+) \w+, {PRONOUN} took a short break)\.$"),
     lambda v, n: v - n),
    (re.compile(rf"^(?:Next, the number of \w+ {PRONOUN} had was multiplied by (?P<n>\d+)"
                rf"|{PRONOUN} collection of \w+ then grew to (?P<n2>\d+) times its earlier size)\.$"), lambda v, n: v * n),
    (re.compile(rf"^{PRONOUN} (?:divided the \w+ into (?P<n>\d+) equal piles and kept just one pile"
                rf"|shared the \w+ equally among (?P<n2>\d+) children, (?:himself|herself) included, and kept (?:his|her) share"
                rf"|packed the \w+ into (?P<n3>\d+) boxes with the same number in each and kept a single box)\.$"),
     lambda v, n: v / n),
]
R_QUESTION = re.compile(r"^(?:How many \w+ does \w+ have in total|How many \w+ did \w+ end up with"
                        r"|What number of \w+ does \w+ own at the end|How many \w+ does \w+ own now)\?$")


def sentences_of(question: str) -> list[str]:
    return [s.strip() for s in re.findall(r"[^.?]+[.?]", question)]


def number(match: re.Match) -> int:
    """The one number an event pattern captured: its alternatives name their number n, n2, n3, ..."""
    return int(next(value for value in match.groupdict().values() if value is not None))


def solve_rephrased(question: str) -> tuple[float, int, list[float]]:
    """(answer, number of events, every amount along the way) of a rephrased story."""
    sentences = sentences_of(question)
    opening = R_OPENING.match(sentences[0])
    assert opening, sentences[0]
    assert R_QUESTION.match(sentences[-1]), sentences[-1]
    value = float(opening["n"])
    amounts = [value]
    for sentence in sentences[1:-1]:
        found = [(m, apply) for pattern, apply in R_EVENTS if (m := pattern.match(sentence))]
        assert len(found) == 1, sentence
        match, apply = found[0]
        value = apply(value, number(match))
        amounts.append(value)
    return value, len(sentences) - 2, amounts


def check_steps(record: dict) -> None:
    """The `steps` chain is right, starts and ends where the record says, and uses the story's numbers in order."""
    ops = {"+": lambda a, b: a + b, "-": lambda a, b: a - b, "*": lambda a, b: a * b, "/": lambda a, b: a / b}
    value, numbers = None, []
    for step in record["steps"].split("; "):
        left, op, right, equals, result = step.split()
        assert equals == "=" and (value is None or int(left) == value), record
        assert ops[op](int(left), int(right)) == int(result), record
        value = int(result)
        numbers += [int(right)] if numbers else [int(left), int(right)]
    assert str(value) == record["ground_truth"], record
    assert [int(n) for n in re.findall(r"\d+", record["prompt"])] == numbers, record


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


def test_rephrased_answers_follow_from_the_text_and_stay_whole_and_in_range():
    records = make_rephrased(sorted(LEVELS), per_level=150, seed=3)
    for record in records:
        spec = LEVELS[record["level"]]
        answer, num_events, amounts = solve_rephrased(record["prompt"])
        assert str(int(answer)) == record["ground_truth"], record
        assert num_events == spec.num_ops, record
        assert all(a == int(a) and 0 <= a <= spec.max_value for a in amounts), record
        assert record["qid"].startswith(f"arith-rephrased-L{record['level']}-") and record["data_source"] == "arithmetic"
        check_steps(record)
    assert len({r["prompt"] for r in records}) == len(records) == 150 * len(LEVELS)
    # every operation occurs, with every wording of it
    events = [s for r in records for s in sentences_of(r["prompt"])[1:-1]]
    for pattern, _ in R_EVENTS:
        alternatives = {next(k for k, v in m.groupdict().items() if v is not None) for s in events if (m := pattern.match(s))}
        assert alternatives == {k for k in pattern.groupindex}, (pattern.pattern, alternatives)


def test_rephrased_pronouns_agree_and_nouns_agree_with_numbers():
    assert set(GENDER) == set(NAMES)
    records = make_rephrased([1, 2, 3], 200, seed=0)
    for record in records:
        name = sentences_of(record["prompt"])[0].replace("At first, ", "").replace("In the morning, ", "").split()[0]
        wrong = r"\b(she|her|herself)\b" if GENDER[name] == "he" else r"\b(he|his|him|himself)\b"
        assert not re.search(wrong, record["prompt"], re.I), record["prompt"]
    texts = " ".join(r["prompt"] for r in records)
    assert not re.search(r"\b1 \w+s\b", texts), "found '1 <plural>'"
    assert not re.search(r"\b([02-9]|\d\d+) (apple|marble|sticker|book|pencil|coin|card|shell|cookie|stamp|balloon|bead)\b", texts)


def test_rephrased_split_shares_no_sentence_with_the_plain_style_and_leaves_it_unchanged():
    plain = make_splits([1, 2, 3], 300, 50, seed=0)
    rephrased = make_rephrased([1, 2, 3], 100, seed=0)
    plain_sentences = {re.sub(r"\d+", "N", s) for records in plain.values() for r in records for s in sentences_of(r["prompt"])}
    rephrased_sentences = {re.sub(r"\d+", "N", s) for r in rephrased for s in sentences_of(r["prompt"])}
    assert not plain_sentences & rephrased_sentences
    assert make_rephrased([1, 2, 3], 100, seed=0) == rephrased  # deterministic
    assert make_rephrased([1, 2, 3], 100, seed=1) != rephrased
    assert make_rephrased([1, 3], [20, 10], seed=0) == rephrased[:20] + rephrased[200:210]  # each level its own stream
    assert make_splits([1, 2, 3], 300, 50, seed=0) == plain  # making it draws nothing from the plain streams


def test_rephrased_skips_excluded_questions():
    first = [r["prompt"] for r in make_rephrased([1], 5, seed=0)]
    again = [r["prompt"] for r in make_rephrased([1], 5, seed=0, exclude=[first[1]])]
    assert again[:4] == first[:1] + first[2:5] and first[1] not in again


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
    assert not (tmp_path / "a" / "test_rephrased.jsonl").exists()  # only with --rephrased-per-level
    train = load_prompts(tmp_path / "a" / "train.jsonl")
    assert len(train) == 50 and {e.extra["level"] for e in train} == {1, 3}
    assert all(e.data_source == "arithmetic" and re.fullmatch(r"\d+", e.ground_truth) for e in train)


def test_cli_writes_the_rephrased_split_without_changing_the_others(tmp_path):
    args = ["--levels", "1", "2", "--train-per-level", "25", "--test-per-level", "5", "--seed", "2"]
    main(["--out-dir", str(tmp_path / "a"), *args])
    main(["--out-dir", str(tmp_path / "b"), *args, "--rephrased-per-level", "4", "3"])
    for name in ("train.jsonl", "test.jsonl"):
        assert (tmp_path / "a" / name).read_bytes() == (tmp_path / "b" / name).read_bytes()
    rephrased = load_prompts(tmp_path / "b" / "test_rephrased.jsonl")
    assert [e.extra["level"] for e in rephrased] == [1] * 4 + [2] * 3


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
    for name in ("train.jsonl", "test.jsonl", "test_rephrased.jsonl"):
        packaged = REPO / "dapo_nb" / "data_files" / "arithmetic" / name
        assert (tmp_path / name).read_bytes() == packaged.read_bytes(), f"{packaged} is stale; rerun the README command"


def test_committed_files_load_and_do_not_overlap():
    train = load_prompts(REPO / "data" / "train.jsonl")
    test = load_prompts(REPO / "data" / "test.jsonl")
    assert 500 <= len(train) <= 2000 and 100 <= len(test) <= 200
    assert not {e.prompt for e in train} & {e.prompt for e in test}
    assert not {e.qid for e in train} & {e.qid for e in test}


def test_committed_rephrased_split_loads_is_right_and_shares_nothing_with_train_or_test():
    import json

    rephrased = load_prompts("builtin:arithmetic/test_rephrased")
    assert len(rephrased) == 150
    assert [e.extra["level"] for e in rephrased] == [1] * 50 + [2] * 50 + [3] * 50
    packaged = REPO / "dapo_nb" / "data_files" / "arithmetic" / "test_rephrased.jsonl"
    assert (REPO / "data" / "test_rephrased.jsonl").read_bytes() == packaged.read_bytes()  # the clone's link
    for line in packaged.read_text(encoding="utf-8").splitlines():
        check_steps(json.loads(line))  # the answer, recomputed from `steps`
    others = load_prompts("builtin:arithmetic/train") + load_prompts("builtin:arithmetic/test")
    assert not {e.prompt for e in rephrased} & {e.prompt for e in others}
    assert not {e.qid for e in rephrased} & {e.qid for e in others}
    assert len({e.prompt for e in rephrased}) == len({e.qid for e in rephrased}) == 150
