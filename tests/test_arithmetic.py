"""Tests for dapo_nb.arithmetic: answers exact and whole, determinism, split hygiene, the held-out sentence families
(test_heldout shares no sentence family with train or test), the rephrased split, the hand-written split, and the
committed data files."""

from __future__ import annotations

import collections
import json
import re
import shlex
import subprocess
import sys
from pathlib import Path

import pytest

from dapo_nb import arithmetic
from dapo_nb.arithmetic import (GENDER, LEVELS, NAMES, PEOPLE, TEMPLATES, main, make_heldout, make_rephrased,
                                make_splits, to_record, unique_problems)
from dapo_nb.data import load_prompts

REPO = Path(__file__).resolve().parents[1]
PACKAGED = REPO / "dapo_nb" / "data_files" / "arithmetic"
GENERATED = ("train", "test", "test_rephrased", "test_heldout")  # what the data/README.md command writes
SPLIT_NAMES = (*GENERATED, "test_handwritten")

# ----------------------------------------------------------------------------
# Reading numbers and checking `steps`, written from the texts' wording rather than from the generator


WORD_NUMBERS = {"zero": 0, "one": 1, "two": 2, "three": 3, "four": 4, "five": 5, "six": 6, "seven": 7, "eight": 8,
                "nine": 9, "ten": 10, "eleven": 11, "twelve": 12, "thirteen": 13, "fourteen": 14, "fifteen": 15,
                "sixteen": 16, "seventeen": 17, "eighteen": 18, "nineteen": 19, "twenty": 20, "thirty": 30, "forty": 40,
                "fifty": 50, "sixty": 60, "seventy": 70, "eighty": 80, "ninety": 90}
# words that say a number without digits: "twice" as many, "half" of them, "a third", "doubled", "a dozen"
NUMBER_PHRASES = [(r"one hundred", 100), (r"half a dozen", 6), (r"a dozen", 12), (r"dozen", 12), (r"twice", 2),
                  (r"doubl\w*", 2), (r"tripl\w*", 3), (r"half", 2), (r"third", 3), (r"quarter", 4), (r"fifth", 5),
                  (r"sixth", 6), (r"seventh", 7), (r"eighth", 8), (r"ninth", 9),
                  (r"one (?:group|part|pile|share)", None)]  # "keeps one part": not a number of the problem


def numbers_in(text: str) -> list[int]:
    """Every number a text states, in digits, words or phrases, in order."""
    text = text.lower()
    for phrase, value in NUMBER_PHRASES:
        text = re.sub(rf"\b{phrase}\b", "" if value is None else f" {value} ", text)
    text = re.sub(r"\b(" + "|".join(WORD_NUMBERS) + r")\b", lambda m: str(WORD_NUMBERS[m[1]]), text)
    return [int(n) for n in re.findall(r"\d+", text)]


STEP = re.compile(r"^(\d+) ([-+*/]) (\d+) = (\d+)$")


def check_steps(record: dict, max_unused: int | None = 1) -> list[int]:
    """`steps` ("a + b = c; c * 2 = d") is exact arithmetic on whole numbers >= 0, ends at `ground_truth`, takes
    every operand from the prompt's numbers or an earlier result, and uses every earlier result; with `max_unused`,
    at most that many of the prompt's numbers go unused (an irrelevant sentence). Returns every result."""
    stated = numbers_in(record["prompt"])
    results, used = [], set()
    for step in record["steps"].split("; "):
        match = STEP.match(step)
        assert match, (step, record)
        a, op, b, c = int(match[1]), match[2], int(match[3]), int(match[4])
        exact = {"+": a + b, "-": a - b, "*": a * b, "/": a // b if b and a % b == 0 else None}[op]
        assert exact == c and c >= 0, (step, record)
        for operand in (a, b):
            assert operand in stated or operand in results, (operand, record)
            used.add(operand)
        results.append(c)
    assert str(results[-1]) == record["ground_truth"], record
    assert all(r in used for r in results[:-1]), ("a result nobody uses", record)
    if max_unused is not None:
        unused = [n for n in stated if n not in used]
        assert len(unused) <= max_unused, (unused, record)
    return results


def sentences_of(question: str) -> list[str]:
    return [s.strip() for s in re.findall(r"[^.?]+[.?]", question)]


# A sentence's skeleton: names and pronouns -> P, numbers -> N, items -> I, places -> L, a leading connective dropped.
ITEM_WORDS = sorted({w for t in (*arithmetic.OWN_ITEMS, *(p.thing for p in arithmetic.CONTAINERS + arithmetic.VENUES),
                                 arithmetic.DOLLAR) for w in (t.one, t.many)} | set(arithmetic.ITEMS)
                    | {i + "s" for i in arithmetic.ITEMS}, key=len, reverse=True)
PLACE_WORDS = sorted({p.place.split(" ", 1)[1] for p in arithmetic.CONTAINERS + arithmetic.VENUES}, key=len, reverse=True)
CONNECTIVE_WORDS = sorted({c.strip(" ,") for cs in arithmetic.CONNECTIVES.values() for c in cs if c}, key=len, reverse=True)


def skeleton(sentence: str) -> str:
    s = sentence.lower()
    s = re.sub(r"\$(\d+)", r"\1 dollars", s)
    s = re.sub(r"\b(half a dozen|a dozen)\b", "N", s)
    s = re.sub(r"\b(" + "|".join(WORD_NUMBERS) + r"|one hundred)\b", "N", s)
    s = re.sub(r"\d+", "N", s)
    s = re.sub(r"\b(" + "|".join(n.lower() for n in PEOPLE) + r")('s)?\b", "P", s)
    s = re.sub(r"\b(he|she|him|her|his|himself|herself)\b", "P", s)
    s = re.sub(r"\b(" + "|".join(ITEM_WORDS) + r")\b", "I", s)
    s = re.sub(r"\b(" + "|".join(PLACE_WORDS) + r")\b", "L", s)
    return re.sub(r"^(" + "|".join(c.lower() for c in CONNECTIVE_WORDS) + r"),? ", "", s)


def skeletons(records) -> set[str]:
    return {skeleton(s) for r in records for s in sentences_of(r["prompt"] if isinstance(r, dict) else r.question)}


EVENT_ROLES = {"add", "sub", "mul", "div", "add_group", "sub_group", "cmp_add", "cmp_sub", "cmp_mul", "cmp_div",
               "combo_add", "combo_sub"}


def role(family: str) -> str:
    return family.split(".")[1]


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


# ----------------------------------------------------------------------------
# The story generator: answers, wording, determinism


@pytest.mark.parametrize("style", ["plain", "heldout"])
def test_answers_are_exact_whole_in_range_and_follow_from_the_text(style):
    for level, spec in LEVELS.items():
        for index, problem in enumerate(unique_problems(level, 300, seed=3, style=style)):
            record = to_record(problem, index)
            results = check_steps(record)  # every number of the story is used, but for one irrelevant sentence
            assert all(0 <= r <= spec.max_value for r in results), record
            roles = [role(f) for f in problem.families]
            assert sum(r in EVENT_ROLES for r in roles) == spec.num_ops, (roles, record)  # the level's events
            groups = sum(r.endswith("_group") for r in roles)  # "3 packs of 4": one more step, "3 * 4 = 12"
            assert len(record["steps"].split("; ")) == spec.num_ops + groups, record
            assert groups == 0 or "mul" in spec.ops, record  # only levels that multiply
            ops = {s.split()[1] for s in record["steps"].split("; ")}
            assert ops <= {"+", "-", "*", "/"} and ({"*", "/"} & ops == set() or "mul" in spec.ops), record
            assert roles.count("question") == 1 and sum(r == "distractor" for r in roles) <= 1, roles


def test_levels_keep_their_operations():
    for level, spec in LEVELS.items():
        steps = [s for p in unique_problems(level, 400, seed=1) for s in p.steps.split("; ")]
        ops = {s.split()[1] for s in steps}
        allowed = {"add": "+", "sub": "-", "mul": "*", "div": "/"}
        assert ops == {allowed[op] for op in spec.ops}, (level, ops)  # "k groups of m" multiplies only where mul is


def test_nouns_agree_with_numbers():
    texts = " ".join(p.question for style in ("plain", "heldout") for level in (1, 2, 3)
                     for p in unique_problems(level, 400, seed=0, style=style))
    things = [*arithmetic.OWN_ITEMS, *(p.thing for p in arithmetic.CONTAINERS + arithmetic.VENUES)]
    plurals = "|".join(t.many for t in things if t.many != t.one)
    singulars = "|".join(t.one for t in things if t.many != t.one and t.one != "toy")  # "toy" begins "toy car"
    assert not re.search(rf"\b(1|one) (?:more |extra |new |additional )?({plurals})\b", texts), "found '1 <plural>'"
    many = r"\b(?:[02-9]|\d\d+|two|three|four|five|six|seven|eight|nine|ten|eleven|twelve|\w+teen|twenty|thirty|forty|fifty|sixty)"
    assert not re.search(rf"{many} (?:more |extra |new |additional )?({singulars})\b", texts), "found 'N <singular>'"
    assert re.search(r"\b1 \w+[^s]\b", texts) and re.search(r"\bone \w+[^s] ", texts)
    assert not re.search(r"\b(?:1|one) \w+ (?:leave|arrive|go|join|show|turn|move|are|were|get)\b", texts)
    assert not re.search(r"\b(\w+) \1\b", texts), "a word twice in a row"


def test_pronouns_agree_and_follow_a_named_person():
    for style in ("plain", "heldout"):
        for level in (1, 2, 3):
            for problem in unique_problems(level, 400, seed=2, style=style):
                sentences = sentences_of(problem.question)
                names = [n for n in PEOPLE if re.search(rf"\b{n}\b", problem.question)]
                for position, sentence in enumerate(sentences):
                    pronouns = re.findall(r"\b(he|she|him|her|his|himself|herself)\b", sentence, re.I)
                    if not pronouns:
                        continue
                    genders = {"she" if p.lower() in ("she", "her", "herself") else "he" for p in pronouns}
                    here = [n for n in names if re.search(rf"\b{n}\b", sentence)]
                    if len(names) > 1:  # two people: a pronoun only beside its name, in the same sentence
                        assert here and genders == {PEOPLE[here[0]]}, problem.question
                    else:  # one person, named in this sentence or an earlier statement
                        assert names and genders == {PEOPLE[names[0]]}, problem.question
                        assert here or any(names[0] in s for s in sentences[:position]), problem.question


def test_stories_vary_in_the_ways_the_task_promises():
    problems = [p for level in (1, 2, 3) for p in unique_problems(level, 400, seed=0)]
    texts = [p.question for p in problems]
    share = lambda found: sum(map(bool, found)) / len(problems)  # noqa: E731
    assert 0.1 < share(t.startswith(("How", "What", "Find")) for t in texts) < 0.35  # the question first
    assert 0.2 < share("distractor" in " ".join(p.families) for p in problems) < 0.4  # an irrelevant sentence
    assert 0.15 < share(re.search(r"\b(two|three|four|five|six|seven|eight|nine|ten|eleven|twelve|dozen)\b", t)
                        for t in texts)  # numbers as words
    assert 0.2 < share(re.search(r"\b(He|She|he|she|his|her)\b", t) for t in texts)  # pronouns
    assert 0.3 < share(re.search(r"\b(had|was|were|did)\b", t) for t in texts) < 0.7  # past tense
    assert {p.families[0].split(".")[0] for p in problems} == {"own", "money", "container", "venue"}
    assert any("$" in t for t in texts) and any(" dollars" in t for t in texts)
    roles = collections.Counter(role(f) for p in problems for f in p.families)
    assert all(roles[r] > 5 for r in EVENT_ROLES if not r.endswith("div")), roles  # cmp_div/div: level 3 only
    assert {f for p in problems for f in p.families} == {t.id for t in TEMPLATES if not t.heldout}  # all 140 in use


def test_same_seed_same_records_other_seed_differs():
    assert make_splits([1, 2], 40, 10, seed=5) == make_splits([1, 2], 40, 10, seed=5)
    assert make_splits([1, 2], 40, 10, seed=5)["test"] != make_splits([1, 2], 40, 10, seed=6)["test"]
    assert make_heldout([1, 2], 20, seed=5) == make_heldout([1, 2], 20, seed=5) != make_heldout([1, 2], 20, seed=6)


def test_splits_share_no_question_and_qids_are_unique():
    splits = make_splits([1, 2, 3], 300, 60, seed=0)
    train_texts = {r["prompt"] for r in splits["train"]}
    test_texts = {r["prompt"] for r in splits["test"]}
    assert len(train_texts) == 900 and len(test_texts) == 180
    assert not train_texts & test_texts
    qids = [r["qid"] for r in splits["train"] + splits["test"]]
    assert len(set(qids)) == len(qids)
    assert all(r["qid"].startswith(f"arith-L{r['level']}-") and r["data_source"] == "arithmetic" for r in splits["test"])


def test_test_split_and_each_level_are_stable_when_other_sizes_change():
    small = make_splits([1, 2], 20, 10, seed=0)
    large = make_splits([1, 2, 3], 200, 10, seed=0)
    assert large["test"][:20] == small["test"]  # levels 1 and 2 come first in the test file
    assert {r["qid"] for r in small["train"]} <= {r["qid"] for r in large["train"]}


def test_per_level_counts():
    splits = make_splits([1, 2, 3], [5, 3, 1], [2, 1, 0], seed=0)
    count = lambda records, level: sum(r["level"] == level for r in records)  # noqa: E731
    assert [count(splits["train"], level) for level in (1, 2, 3)] == [5, 3, 1]
    assert [count(splits["test"], level) for level in (1, 2, 3)] == [2, 1, 0]


def test_train_file_mixes_levels():
    train = make_splits([1, 2, 3], 100, 0, seed=0)["train"]
    assert {r["level"] for r in train[:30]} == {1, 2, 3}


# ----------------------------------------------------------------------------
# Held-out sentence families (the test_heldout split)


def test_every_role_has_train_and_held_out_families_and_they_are_disjoint():
    by_role = collections.defaultdict(lambda: [0, 0])
    for template in TEMPLATES:
        by_role[(template.domain, template.role)][template.heldout] += 1
        assert template.id.split(".")[2][0] == ("h" if template.heldout else "t")
    assert all(train >= 1 and held >= 1 for train, held in by_role.values()), dict(by_role)
    train_texts = {t.text for t in TEMPLATES if not t.heldout}
    assert not train_texts & {t.text for t in TEMPLATES if t.heldout}
    assert not set(arithmetic.CONNECTIVES["train"]) - {""} & set(arithmetic.CONNECTIVES["heldout"])


def test_heldout_stories_use_only_held_out_families_and_share_no_sentence_skeleton_with_train():
    plain = [p for level in LEVELS for p in unique_problems(level, 1500, seed=4)]
    held = [p for level in LEVELS for p in unique_problems(level, 1500, seed=4, style="heldout")]
    assert all(".t" in f for p in plain for f in p.families)
    assert all(".h" in f for p in held for f in p.families)
    plain_skeletons, held_skeletons = skeletons(plain), skeletons(held)
    assert not plain_skeletons & held_skeletons, sorted(plain_skeletons & held_skeletons)[:5]
    # the rephrased style's sentences are held-out families too: training never shows them either
    rephrased = skeletons(make_rephrased(sorted(LEVELS), 300, seed=4))
    assert rephrased <= held_skeletons and not rephrased & plain_skeletons
    assert len(plain_skeletons) > 300 and len(held_skeletons) > 150


def test_heldout_split_is_deterministic_level_by_level_and_leaves_the_others_unchanged():
    plain = make_splits([1, 2, 3], 300, 50, seed=0)
    rephrased = make_rephrased([1, 2, 3], 50, seed=0)
    held = make_heldout([1, 2, 3], 100, seed=0)
    assert [r["level"] for r in held] == [1] * 100 + [2] * 100 + [3] * 100
    assert all(r["qid"] == f"arith-heldout-L{r['level']}-{i % 100:06d}" for i, r in enumerate(held))
    assert make_heldout([1, 3], [20, 10], seed=0) == held[:20] + held[200:210]  # each level its own stream
    assert make_splits([1, 2, 3], 300, 50, seed=0) == plain and make_rephrased([1, 2, 3], 50, seed=0) == rephrased
    first = [r["prompt"] for r in make_heldout([1], 5, seed=0)]
    again = [r["prompt"] for r in make_heldout([1], 5, seed=0, exclude=[first[1]])]
    assert again[:4] == first[:1] + first[2:5] and first[1] not in again


# ----------------------------------------------------------------------------
# The rephrased style (test_rephrased, unchanged): read by its own patterns (solve_rephrased, above)


def test_rephrased_answers_follow_from_the_text_and_stay_whole_and_in_range():
    records = make_rephrased(sorted(LEVELS), per_level=150, seed=3)
    for record in records:
        spec = LEVELS[record["level"]]
        answer, num_events, amounts = solve_rephrased(record["prompt"])
        assert str(int(answer)) == record["ground_truth"], record
        assert num_events == spec.num_ops, record
        assert all(a == int(a) and 0 <= a <= spec.max_value for a in amounts), record
        assert record["qid"].startswith(f"arith-rephrased-L{record['level']}-") and record["data_source"] == "arithmetic"
        check_steps(record, max_unused=0)
    assert len({r["prompt"] for r in records}) == len(records) == 150 * len(LEVELS)
    # every operation occurs, with every wording of it
    events = [s for r in records for s in sentences_of(r["prompt"])[1:-1]]
    for pattern, _ in R_EVENTS:
        alternatives = {next(k for k, v in m.groupdict().items() if v is not None) for s in events if (m := pattern.match(s))}
        assert alternatives == {k for k in pattern.groupindex}, (pattern.pattern, alternatives)


def test_rephrased_pronouns_agree_and_nouns_agree_with_numbers():
    assert set(GENDER) == set(NAMES) and set(NAMES) <= set(PEOPLE)
    records = make_rephrased([1, 2, 3], 200, seed=0)
    for record in records:
        name = sentences_of(record["prompt"])[0].replace("At first, ", "").replace("In the morning, ", "").split()[0]
        wrong = r"\b(she|her|herself)\b" if GENDER[name] == "he" else r"\b(he|his|him|himself)\b"
        assert not re.search(wrong, record["prompt"], re.I), record["prompt"]
    texts = " ".join(r["prompt"] for r in records)
    assert not re.search(r"\b1 \w+s\b", texts), "found '1 <plural>'"
    assert not re.search(r"\b([02-9]|\d\d+) (apple|marble|sticker|book|pencil|coin|card|shell|cookie|stamp|balloon|bead)\b", texts)


def test_rephrased_split_is_deterministic_and_leaves_the_others_unchanged():
    plain = make_splits([1, 2, 3], 300, 50, seed=0)
    rephrased = make_rephrased([1, 2, 3], 100, seed=0)
    assert not skeletons(r for records in plain.values() for r in records) & skeletons(rephrased)
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


def test_bad_heldout_arguments_are_clear_errors():
    with pytest.raises(ValueError, match=r"heldout_per_level needs one count or one per level \(2\), got 3"):
        make_heldout([1, 2], [1, 2, 3])
    with pytest.raises(ValueError, match=r"unknown level\(s\) \[0\]"):
        make_heldout([0], 1)


# ----------------------------------------------------------------------------
# Command line and the committed files


def test_cli_writes_byte_identical_loadable_files(tmp_path):
    args = ["--levels", "1", "3", "--train-per-level", "25", "--test-per-level", "5", "--seed", "2"]
    main(["--out-dir", str(tmp_path / "a"), *args])
    main(["--out-dir", str(tmp_path / "b"), *args])
    for name in ("train.jsonl", "test.jsonl"):
        assert (tmp_path / "a" / name).read_bytes() == (tmp_path / "b" / name).read_bytes()
    for name in ("test_rephrased.jsonl", "test_heldout.jsonl"):
        assert not (tmp_path / "a" / name).exists()  # only with --rephrased-per-level / --heldout-per-level
    train = load_prompts(tmp_path / "a" / "train.jsonl")
    assert len(train) == 50 and {e.extra["level"] for e in train} == {1, 3}
    assert all(e.data_source == "arithmetic" and re.fullmatch(r"\d+", e.ground_truth) for e in train)


def test_cli_writes_the_held_out_splits_without_changing_the_others(tmp_path):
    args = ["--levels", "1", "2", "--train-per-level", "25", "--test-per-level", "5", "--seed", "2"]
    main(["--out-dir", str(tmp_path / "a"), *args])
    main(["--out-dir", str(tmp_path / "b"), *args, "--rephrased-per-level", "4", "3", "--heldout-per-level", "2", "5"])
    for name in ("train.jsonl", "test.jsonl"):
        assert (tmp_path / "a" / name).read_bytes() == (tmp_path / "b" / name).read_bytes()
    rephrased = load_prompts(tmp_path / "b" / "test_rephrased.jsonl")
    assert [e.extra["level"] for e in rephrased] == [1] * 4 + [2] * 3
    held = load_prompts(tmp_path / "b" / "test_heldout.jsonl")
    assert [e.extra["level"] for e in held] == [1] * 2 + [2] * 5


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
    assert sorted(p.stem for p in tmp_path.glob("*.jsonl")) == sorted(GENERATED)
    for name in GENERATED:
        packaged = PACKAGED / f"{name}.jsonl"
        assert (tmp_path / f"{name}.jsonl").read_bytes() == packaged.read_bytes(), f"{packaged} is stale; rerun the README command"


def read(split: str) -> list[dict]:
    return [json.loads(line) for line in (PACKAGED / f"{split}.jsonl").read_text(encoding="utf-8").splitlines()]


def test_committed_files_load_are_linked_from_data_and_share_no_question_or_qid():
    sizes = {"train": 1000, "test": 150, "test_rephrased": 150, "test_heldout": 150, "test_handwritten": 60}
    assert sorted(p.stem for p in PACKAGED.glob("*.jsonl")) == sorted(SPLIT_NAMES)
    prompts, qids = {}, {}
    for split in SPLIT_NAMES:
        examples = load_prompts(f"builtin:arithmetic/{split}")
        assert len(examples) == sizes[split], split
        assert (REPO / "data" / f"{split}.jsonl").read_bytes() == (PACKAGED / f"{split}.jsonl").read_bytes()  # the link
        prompts[split], qids[split] = {e.prompt for e in examples}, {e.qid for e in examples}
        assert len(prompts[split]) == len(qids[split]) == sizes[split], split
    for one in SPLIT_NAMES:
        for other in SPLIT_NAMES:
            if one < other:
                assert not prompts[one] & prompts[other] and not qids[one] & qids[other], (one, other)
    train = read("train")
    assert collections.Counter(r["level"] for r in train) == {1: 600, 2: 300, 3: 100}
    for split in ("test", "test_rephrased", "test_heldout"):
        assert [r["level"] for r in read(split)] == [1] * 50 + [2] * 50 + [3] * 50, split


def test_committed_generated_answers_are_exact():
    for split in GENERATED:
        for record in read(split):
            results = check_steps(record, max_unused=1)
            assert all(0 <= r <= LEVELS[record["level"]].max_value for r in results), record


def test_committed_heldout_split_shares_no_sentence_skeleton_with_train_or_test():
    seen = skeletons(read("train") + read("test"))
    held = skeletons(read("test_heldout"))
    assert not seen & held, sorted(seen & held)[:5]
    assert not seen & skeletons(read("test_rephrased"))
    # training sees many sentence families, not a handful of templates
    assert len(skeletons(read("train"))) > 350 and len(held) > 150  # the one-template train file had 10


def test_handwritten_split_is_right_and_unlike_the_generator():
    records = read("test_handwritten")
    assert [r["level"] for r in records] == [1] * 20 + [2] * 20 + [3] * 20
    assert all(r["data_source"] == "handwritten" and set(r) == {"qid", "prompt", "ground_truth", "data_source", "level",
                                                                  "steps"} for r in records)
    assert all(r["qid"] == f"arith-handwritten-L{r['level']}-{i % 20:06d}" for i, r in enumerate(records))
    for record in records:
        check_steps(record, max_unused=None)  # the answer, recomputed from `steps`; irrelevant numbers allowed
        assert len(record["steps"].split("; ")) == record["level"], record  # levels 1-3: 1-3 operations
    # none of its sentences is a sentence the generator writes, with any names, numbers and items
    generated = [p for style in ("plain", "heldout", "rephrased") for level in LEVELS
                 for p in unique_problems(level, 1000, seed=9, style=style)]
    generator = skeletons(generated) | skeletons(r for split in GENERATED for r in read(split))
    exact = {s for split in GENERATED for r in read(split) for s in sentences_of(r["prompt"])}
    for record in records:
        for sentence in sentences_of(record["prompt"]):
            assert sentence not in exact and skeleton(sentence) not in generator, sentence
