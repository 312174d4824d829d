"""Deterministic arithmetic word problems with difficulty levels: the default training task.

Each problem is a short story with one starting amount and a chain of events, e.g.

    Tom has 12 apples. Then Tom buys 7 more apples. How many apples does Tom have now?

and its `ground_truth` is the final amount as an integer string ("19"). Levels set how many
events the story has and how big the numbers are (see `LEVELS`). Every intermediate amount is
a whole number >= 0: subtractions never go below zero and divisions are exact, so the answer
is never ambiguous.

Determinism: level L with seed S draws from its own `random.Random(S * 1000 + L)`, so the same
seed gives byte-identical files, and adding a level or changing another level's size leaves a
level's problems unchanged. Each level's stream is deduplicated by question text; its first
`test_per_level` problems go to the test split and the next `train_per_level` to train, so the
two splits never share a question, and the test split stays the same when train grows.

A second held-out split, `test_rephrased`, asks the same kind of arithmetic (the same levels, operations and
number ranges) in another phrasing style: past tense, pronouns, other verbs and other questions, e.g.

    Ravi had 12 marbles. He bought 7 more. How many marbles did Ravi end up with?

None of its sentences is a sentence the train split uses (train stories open with "<name> has", these with other
words), so it measures whether what training taught carries over to wording it never saw. Its problems come from
their own streams, `random.Random(S * 1000 + 100 + L)`, so adding it changes no train or test problem.

The committed files are package data, `dapo_nb/data_files/arithmetic/{train,test,test_rephrased}.jsonl`, named
`builtin:arithmetic/train`, `builtin:arithmetic/test` and `builtin:arithmetic/test_rephrased` in configs (`data/` in
a clone links to them). One command regenerates all three (data/README.md has it; a test checks the files match it):

    python -m dapo_nb.arithmetic --out-dir dapo_nb/data_files/arithmetic --seed 0 --levels 1 2 3 \
        --train-per-level 600 300 100 --test-per-level 50 --rephrased-per-level 50

Without --out-dir the files go to ./data, e.g. for a task of your own levels and sizes.

Departure from the paper: DAPO trains on DAPO-Math-17k (competition problems with integer
answers). This task keeps the integer-answer contract but is sized for a 135M-parameter model on
a CPU, so that reinforcement learning can show a change within minutes.
"""

from __future__ import annotations

import argparse
import json
import random
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Sequence

DATA_SOURCE = "arithmetic"
MAX_PER_LEVEL = 20_000  # the smallest level has a few hundred thousand distinct stories

# ----------------------------------------------------------------------------
# Difficulty levels


@dataclass(frozen=True)
class LevelSpec:
    """How hard one level is: number of events, operations allowed, number ranges."""

    level: int
    num_ops: int  # events after the opening sentence
    ops: tuple[str, ...]  # subset of "add", "sub", "mul", "div"
    max_start: int  # opening amount is drawn from [2, max_start]
    max_operand: int  # amounts added or removed are drawn from [1, max_operand]
    max_factor: int  # "k times as many" / "k equal groups" use k in [2, max_factor]
    max_value: int  # no intermediate amount may exceed this


LEVELS: dict[int, LevelSpec] = {
    1: LevelSpec(1, num_ops=1, ops=("add", "sub"), max_start=20, max_operand=20, max_factor=2, max_value=40),
    2: LevelSpec(2, num_ops=2, ops=("add", "sub", "mul"), max_start=30, max_operand=30, max_factor=3, max_value=200),
    3: LevelSpec(3, num_ops=3, ops=("add", "sub", "mul", "div"), max_start=60, max_operand=60, max_factor=5, max_value=500),
    4: LevelSpec(4, num_ops=4, ops=("add", "sub", "mul", "div"), max_start=200, max_operand=200, max_factor=9, max_value=2000),
}

# ----------------------------------------------------------------------------
# Story pieces

NAMES = ("Tom", "Mia", "Ravi", "Lena", "Omar", "Sara", "Ken", "Ana", "Ben", "Zoe", "Ivan", "Maya", "Leo", "Nora", "Sam", "Aiko")
ITEMS = ("apple", "marble", "sticker", "book", "pencil", "coin", "card", "shell", "cookie", "stamp", "balloon", "bead")
# {noun} agrees with {n} ("1 apple", "7 apples"); {items} is always plural
ADD_TEXTS = ("Then {name} buys {n} more {noun}.", "Then {name} finds {n} more {noun}.", "Then a friend gives {name} {n} more {noun}.")
SUB_TEXTS = ("Then {name} gives away {n} {noun}.", "Then {name} loses {n} {noun}.", "Then {name} sells {n} {noun}.")
MUL_TEXTS = ("Then {name} gets enough {items} to have {n} times as many as before.",)
DIV_TEXTS = ("Then {name} splits the {items} into {n} equal groups and keeps only one group.",)
OP_SYMBOL = {"add": "+", "sub": "-", "mul": "*", "div": "/"}

# The rephrased style (the test_rephrased split): past tense, pronouns, other verbs and questions. No sentence here
# is one the plain style can produce. Besides {name}, {n}, {noun} and {items}: {he} {He} {his} {His} {him} {himself}.
PRONOUNS = {
    "he": {"he": "he", "He": "He", "his": "his", "His": "His", "him": "him", "himself": "himself"},
    "she": {"he": "she", "He": "She", "his": "her", "His": "Her", "him": "her", "himself": "herself"},
}
GENDER = {"Tom": "he", "Mia": "she", "Ravi": "he", "Lena": "she", "Omar": "he", "Sara": "she", "Ken": "he", "Ana": "she",
          "Ben": "he", "Zoe": "she", "Ivan": "he", "Maya": "she", "Leo": "he", "Nora": "she", "Sam": "he", "Aiko": "she"}
REPHRASED_OPENINGS = ("{name} had {n} {noun}.", "At first, {name} owned {n} {noun}.",
                      "{name} started the week with {n} {noun}.", "In the morning, {name} counted {n} {noun} in {his} bag.")
REPHRASED_TEXTS = {
    "add": ("{He} bought {n} more.", "{His} aunt gave {him} {n} extra {noun}.", "{He} won {n} {noun} in a game.",
            "After that, {he} collected {n} new {noun}."),
    "sub": ("{He} gave {n} {noun} to a classmate.", "On the way home, {he} dropped {n} {noun}.",
            "{He} traded away {n} {noun}.", "After giving away {n} {noun}, {he} took a short break."),
    "mul": ("Next, the number of {items} {he} had was multiplied by {n}.",
            "{His} collection of {items} then grew to {n} times its earlier size."),
    "div": ("{He} divided the {items} into {n} equal piles and kept just one pile.",
            "{He} shared the {items} equally among {n} children, {himself} included, and kept {his} share.",
            "{He} packed the {items} into {n} boxes with the same number in each and kept a single box."),
}
REPHRASED_QUESTIONS = ("How many {items} does {name} have in total?", "How many {items} did {name} end up with?",
                       "What number of {items} does {name} own at the end?", "How many {items} does {name} own now?")
STYLE_SEED_OFFSET = {"plain": 0, "rephrased": 100}  # level L of style s with seed S draws from S * 1000 + offset + L


@dataclass(frozen=True)
class Problem:
    """One generated word problem."""

    level: int
    question: str
    answer: int
    steps: str  # the worked chain, e.g. "12 + 7 = 19; 19 * 3 = 57"


# ----------------------------------------------------------------------------
# Generation


def _noun(count: int, item: str) -> str:
    """The item's noun agreeing with `count`: 'apple' for 1, else 'apples'."""
    return item if count == 1 else item + "s"


def _possible_ops(spec: LevelSpec, value: int) -> list[str]:
    """Operations that keep the next amount a whole number in [0, max_value]."""
    possible = []
    for op in spec.ops:
        if op == "add" and value + 1 <= spec.max_value:
            possible.append(op)
        elif op == "sub" and value >= 1:
            possible.append(op)
        elif op == "mul" and value * 2 <= spec.max_value and value >= 1:
            possible.append(op)
        elif op == "div" and any(value % k == 0 for k in range(2, spec.max_factor + 1)) and value >= 2:
            possible.append(op)
    return possible


def _draw_operand(rng: random.Random, spec: LevelSpec, op: str, value: int) -> int:
    """Draw the number an event uses so the result stays in range and exact."""
    if op == "add":
        return rng.randint(1, min(spec.max_operand, spec.max_value - value))
    if op == "sub":
        return rng.randint(1, min(spec.max_operand, value))
    if op == "mul":
        return rng.randint(2, max(2, min(spec.max_factor, spec.max_value // value)))
    return rng.choice([k for k in range(2, spec.max_factor + 1) if value % k == 0])  # div


def _apply(op: str, value: int, operand: int) -> int:
    """Apply one event to the amount."""
    return {"add": value + operand, "sub": value - operand, "mul": value * operand, "div": value // operand}[op]


def _draw_event(rng: random.Random, spec: LevelSpec, value: int) -> tuple[str, int, int]:
    """Draw the next event: (operation, operand, the amount after it)."""
    op = rng.choice(_possible_ops(spec, value))
    operand = _draw_operand(rng, spec, op, value)
    return op, operand, _apply(op, value, operand)


def generate_problem(rng: random.Random, spec: LevelSpec) -> Problem:
    """Draw one problem of the given level from `rng`, in the plain style (the train and test splits)."""
    name, item = rng.choice(NAMES), rng.choice(ITEMS)
    value = rng.randint(2, spec.max_start)
    sentences = [f"{name} has {value} {_noun(value, item)}."]
    steps = []
    templates = {"add": ADD_TEXTS, "sub": SUB_TEXTS, "mul": MUL_TEXTS, "div": DIV_TEXTS}
    for _ in range(spec.num_ops):
        op, operand, result = _draw_event(rng, spec, value)
        text = rng.choice(templates[op])
        sentences.append(text.format(name=name, n=operand, noun=_noun(operand, item), items=item + "s"))
        steps.append(f"{value} {OP_SYMBOL[op]} {operand} = {result}")
        value = result
    sentences.append(f"How many {item}s does {name} have now?")
    return Problem(spec.level, " ".join(sentences), value, "; ".join(steps))


def generate_rephrased_problem(rng: random.Random, spec: LevelSpec) -> Problem:
    """Draw one problem of the given level from `rng`, in the rephrased style (the test_rephrased split): the same
    arithmetic as `generate_problem`, other sentences."""
    name, item = rng.choice(NAMES), rng.choice(ITEMS)
    words = {"name": name, "items": item + "s", **PRONOUNS[GENDER[name]]}
    value = rng.randint(2, spec.max_start)
    sentences = [rng.choice(REPHRASED_OPENINGS).format(n=value, noun=_noun(value, item), **words)]
    steps = []
    for _ in range(spec.num_ops):
        op, operand, result = _draw_event(rng, spec, value)
        sentences.append(rng.choice(REPHRASED_TEXTS[op]).format(n=operand, noun=_noun(operand, item), **words))
        steps.append(f"{value} {OP_SYMBOL[op]} {operand} = {result}")
        value = result
    sentences.append(rng.choice(REPHRASED_QUESTIONS).format(**words))
    return Problem(spec.level, " ".join(sentences), value, "; ".join(steps))


def unique_problems(level: int, count: int, seed: int, style: str = "plain", exclude: Iterable[str] = ()) -> list[Problem]:
    """The first `count` distinct problems of a level's seeded stream in a phrasing style, skipping `exclude`d texts."""
    if count > MAX_PER_LEVEL:
        raise ValueError(f"level {level} cannot supply {count} distinct problems; ask for at most {MAX_PER_LEVEL}")
    spec = LEVELS[level]
    rng = random.Random(seed * 1000 + STYLE_SEED_OFFSET[style] + level)
    generate = generate_rephrased_problem if style == "rephrased" else generate_problem
    seen: set[str] = set(exclude)
    problems: list[Problem] = []
    attempts = 0
    while len(problems) < count:
        attempts += 1
        if attempts > 20 * count + 1000:  # far more repeats than the level's problem space should give
            raise ValueError(f"level {level} gives too many repeated problems for {count} distinct ones; ask for fewer")
        problem = generate(rng, spec)
        if problem.question not in seen:
            seen.add(problem.question)
            problems.append(problem)
    return problems


# ----------------------------------------------------------------------------
# Splits and files


def to_record(problem: Problem, index: int, qid_prefix: str = "arith") -> dict:
    """A jsonl record in the seed schema plus the extra keys `data_source`, `level`, `steps`."""
    return {
        "qid": f"{qid_prefix}-L{problem.level}-{index:06d}",
        "prompt": problem.question,
        "ground_truth": str(problem.answer),
        "data_source": DATA_SOURCE,
        "level": problem.level,
        "steps": problem.steps,
    }


def _per_level(counts: int | Sequence[int], levels: list[int], what: str) -> list[int]:
    """One count per level: a single number applies to every level."""
    counts = [counts] if isinstance(counts, int) else list(counts)
    if len(counts) == 1:
        counts = counts * len(levels)
    if len(counts) != len(levels):
        raise ValueError(f"{what} needs one count or one per level ({len(levels)}), got {len(counts)}")
    if any(count < 0 for count in counts):
        raise ValueError(f"{what} counts must be >= 0, got {counts}")
    return counts


def _check_levels(levels: list[int]) -> None:
    unknown = [level for level in levels if level not in LEVELS]
    if unknown:
        raise ValueError(f"unknown level(s) {unknown}; choose from {sorted(LEVELS)}")
    if len(set(levels)) != len(levels):
        raise ValueError(f"levels must not repeat, got {levels}")


def make_splits(
    levels: list[int], train_per_level: int | Sequence[int], test_per_level: int | Sequence[int], seed: int = 0
) -> dict[str, list[dict]]:
    """Build {"train": records, "test": records}; the splits share no question text."""
    _check_levels(levels)
    train_counts = _per_level(train_per_level, levels, "train_per_level")
    test_counts = _per_level(test_per_level, levels, "test_per_level")
    splits: dict[str, list[dict]] = {"train": [], "test": []}
    for level, n_train, n_test in zip(levels, train_counts, test_counts):
        problems = unique_problems(level, n_test + n_train, seed)
        records = [to_record(problem, index) for index, problem in enumerate(problems)]
        splits["test"] += records[:n_test]
        splits["train"] += records[n_test:]
    # interleave levels in a seeded order so any prefix of the train file mixes difficulties
    random.Random(seed).shuffle(splits["train"])
    return splits


def make_rephrased(levels: list[int], per_level: int | Sequence[int], seed: int = 0, exclude: Iterable[str] = ()) -> list[dict]:
    """The `test_rephrased` split: `per_level` problems of each level in the rephrased style, in level order, qids
    `arith-rephrased-L<level>-<index>`, none of them with a question text in `exclude` (e.g. train and test)."""
    _check_levels(levels)
    exclude = set(exclude)
    records = []
    for level, count in zip(levels, _per_level(per_level, levels, "rephrased_per_level")):
        problems = unique_problems(level, count, seed, style="rephrased", exclude=exclude)
        records += [to_record(problem, index, "arith-rephrased") for index, problem in enumerate(problems)]
    return records


def write_jsonl(records: list[dict], path: Path) -> None:
    """Write one JSON object per line, UTF-8, '\\n' line ends (byte-stable across platforms)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", encoding="utf-8", newline="\n") as handle:
        for record in records:
            handle.write(json.dumps(record, ensure_ascii=False) + "\n")


def main(argv: list[str] | None = None) -> None:
    """Command line: write train.jsonl and test.jsonl (and with --rephrased-per-level, test_rephrased.jsonl) into --out-dir."""
    parser = argparse.ArgumentParser(prog="python -m dapo_nb.arithmetic", description=__doc__.split("\n\n")[0])
    parser.add_argument("--out-dir", type=Path, default=Path("data"), help="folder for train.jsonl and test.jsonl")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--levels", type=int, nargs="+", default=[1, 2, 3], help=f"levels to include, from {sorted(LEVELS)}")
    parser.add_argument("--train-per-level", type=int, nargs="+", default=[400], help="one count, or one per level")
    parser.add_argument("--test-per-level", type=int, nargs="+", default=[50], help="one count, or one per level")
    parser.add_argument("--rephrased-per-level", type=int, nargs="+", default=[0],
                        help="also write test_rephrased.jsonl, held-out problems in another phrasing style: one count, "
                             "or one per level (0 = no such file)")
    args = parser.parse_args(argv)
    try:
        splits = make_splits(args.levels, args.train_per_level, args.test_per_level, args.seed)
        if any(args.rephrased_per_level):
            seen = [record["prompt"] for records in splits.values() for record in records]
            splits["test_rephrased"] = make_rephrased(args.levels, args.rephrased_per_level, args.seed, exclude=seen)
    except ValueError as error:
        parser.error(str(error))
    for split, records in splits.items():
        write_jsonl(records, args.out_dir / f"{split}.jsonl")
        print(f"wrote {len(records)} problems to {args.out_dir / f'{split}.jsonl'}")


if __name__ == "__main__":
    main()
