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

The committed files are package data, `dapo_nb/data_files/arithmetic/{train,test}.jsonl`, named
`builtin:arithmetic/train` / `builtin:arithmetic/test` in configs (`data/` in a clone links to them).
Regenerate them (see data/README.md for the exact command):

    python -m dapo_nb.arithmetic --out-dir dapo_nb/data_files/arithmetic --seed 0 --levels 1 2 3 ...

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
from typing import Sequence

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


def generate_problem(rng: random.Random, spec: LevelSpec) -> Problem:
    """Draw one problem of the given level from `rng`."""
    name, item = rng.choice(NAMES), rng.choice(ITEMS)
    value = rng.randint(2, spec.max_start)
    sentences = [f"{name} has {value} {_noun(value, item)}."]
    steps = []
    templates = {"add": ADD_TEXTS, "sub": SUB_TEXTS, "mul": MUL_TEXTS, "div": DIV_TEXTS}
    for _ in range(spec.num_ops):
        op = rng.choice(_possible_ops(spec, value))
        operand = _draw_operand(rng, spec, op, value)
        result = _apply(op, value, operand)
        text = rng.choice(templates[op])
        sentences.append(text.format(name=name, n=operand, noun=_noun(operand, item), items=item + "s"))
        steps.append(f"{value} {OP_SYMBOL[op]} {operand} = {result}")
        value = result
    sentences.append(f"How many {item}s does {name} have now?")
    return Problem(spec.level, " ".join(sentences), value, "; ".join(steps))


def unique_problems(level: int, count: int, seed: int) -> list[Problem]:
    """The first `count` distinct problems of a level's seeded stream."""
    if count > MAX_PER_LEVEL:
        raise ValueError(f"level {level} cannot supply {count} distinct problems; ask for at most {MAX_PER_LEVEL}")
    spec = LEVELS[level]
    rng = random.Random(seed * 1000 + level)
    seen: set[str] = set()
    problems: list[Problem] = []
    attempts = 0
    while len(problems) < count:
        attempts += 1
        if attempts > 20 * count + 1000:  # far more repeats than the level's problem space should give
            raise ValueError(f"level {level} gives too many repeated problems for {count} distinct ones; ask for fewer")
        problem = generate_problem(rng, spec)
        if problem.question not in seen:
            seen.add(problem.question)
            problems.append(problem)
    return problems


# ----------------------------------------------------------------------------
# Splits and files


def to_record(problem: Problem, index: int) -> dict:
    """A jsonl record in the seed schema plus the extra keys `data_source`, `level`, `steps`."""
    return {
        "qid": f"arith-L{problem.level}-{index:06d}",
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


def make_splits(
    levels: list[int], train_per_level: int | Sequence[int], test_per_level: int | Sequence[int], seed: int = 0
) -> dict[str, list[dict]]:
    """Build {"train": records, "test": records}; the splits share no question text."""
    unknown = [level for level in levels if level not in LEVELS]
    if unknown:
        raise ValueError(f"unknown level(s) {unknown}; choose from {sorted(LEVELS)}")
    if len(set(levels)) != len(levels):
        raise ValueError(f"levels must not repeat, got {levels}")
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


def write_jsonl(records: list[dict], path: Path) -> None:
    """Write one JSON object per line, UTF-8, '\\n' line ends (byte-stable across platforms)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", encoding="utf-8", newline="\n") as handle:
        for record in records:
            handle.write(json.dumps(record, ensure_ascii=False) + "\n")


def main(argv: list[str] | None = None) -> None:
    """Command line: write train.jsonl and test.jsonl into --out-dir."""
    parser = argparse.ArgumentParser(prog="python -m dapo_nb.arithmetic", description=__doc__.split("\n\n")[0])
    parser.add_argument("--out-dir", type=Path, default=Path("data"), help="folder for train.jsonl and test.jsonl")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--levels", type=int, nargs="+", default=[1, 2, 3], help=f"levels to include, from {sorted(LEVELS)}")
    parser.add_argument("--train-per-level", type=int, nargs="+", default=[400], help="one count, or one per level")
    parser.add_argument("--test-per-level", type=int, nargs="+", default=[50], help="one count, or one per level")
    args = parser.parse_args(argv)
    try:
        splits = make_splits(args.levels, args.train_per_level, args.test_per_level, args.seed)
    except ValueError as error:
        parser.error(str(error))
    for split, records in splits.items():
        write_jsonl(records, args.out_dir / f"{split}.jsonl")
        print(f"wrote {len(records)} problems to {args.out_dir / f'{split}.jsonl'}")


if __name__ == "__main__":
    main()
