"""Deterministic arithmetic word problems with difficulty levels: the default training task.

Each problem is a short story with one starting amount and a chain of events, and its `ground_truth` is the final
amount as an integer string. Levels set how many events the story has, which operations they use and how big the
numbers are (see `LEVELS`). Every intermediate amount is a whole number >= 0: subtractions never go below zero and
divisions are exact, so the answer is never ambiguous. `steps` is the worked chain, e.g. "12 + 7 = 19; 19 * 3 = 57";
an event told as groups ("buys 3 packs of 4 stickers", only at levels that multiply) adds its product first:
"3 * 4 = 12; 19 + 12 = 31".

Stories are told in many ways, so that what a policy learns is the arithmetic and not a template. A story is drawn
as: a situation (a person's belongings, money, a container such as a jar or shelf, a place such as a pond or bus,
with 40 names and 49 kinds of items), a tense (present or past), then the arithmetic, then one sentence family per sentence
role (opening amount; each operation's event; the opening and first event in one sentence; another person who has
"7 more" / "twice as many" / "half as many"; k groups of m; the question), each with its own verbs and word order.
On top: pronouns once a person is named, connectives ("Then", "Later,"), numbers up to 20 often as words ("seven",
"a dozen"), "twice" / "half" / "a third" for factors, the question first in about one story in five, and in about
three in ten one irrelevant sentence with a number ("Tom is 9 years old.") that must be ignored, e.g.

    How many cars are in the parking lot at the end? There are 20 cars in the parking lot. Next, 13 more cars arrive.
    Mei has $12 in her wallet. Later, she spends all but a third of her money. How much money does Mei have left?

Held-out sentence families. Every sentence family (a `Template`, see `TABLE`) belongs to one of two disjoint sets:
the train families, which the train and test splits use, and the held-out families (other verbs, other sentence
shapes, other questions, other connectives, other irrelevant sentences), which only the `test_heldout` split uses.
So no sentence of test_heldout is, after its names, numbers and items are filled in, a sentence that training ever
shows; the same levels, operations, situations and number ranges are asked. It measures whether what training
taught carries over to wording it never saw, e.g.

    The toy chest had 8 toys before Tom put in 12 more. Soon after, 8 toys went missing from the toy chest.
    When Tom was done, how many toys were in the toy chest?

`test_rephrased`, the earlier held-out split, is kept byte for byte: one phrasing style (past tense, pronouns,
"Zoe started the week with 8 shells. She traded away 2 shells. How many shells did Zoe end up with?") whose
sentences are part of the held-out family set, so the train split shares no sentence with it either. Its stories
are narrower than test_heldout's (one situation, 12 items, no distractors).

`test_handwritten` (dapo_nb/data_files/arithmetic/test_handwritten.jsonl) is not made here: 60 problems at the
difficulty of levels 1-3 written by hand in wording unlike the generator's (recipes, money, time, distances, ...,
irrelevant numbers), with `data_source` "handwritten"; tests check every answer from its `steps` and that none of
its sentences is a generator sentence.

Determinism: level L with seed S draws from its own `random.Random(S * 1000 + L)`, so the same seed gives
byte-identical files, and adding a level or changing another level's size leaves a level's problems unchanged.
Each level's stream is deduplicated by question text; its first `test_per_level` problems go to the test split and
the next `train_per_level` to train, so the two splits never share a question, and the test split stays the same
when train grows. test_rephrased draws from `random.Random(S * 1000 + 100 + L)` and test_heldout from
`random.Random(S * 1000 + 200 + L)`, so adding either changes no other problem.

The committed files are package data, `dapo_nb/data_files/arithmetic/<split>.jsonl`, named `builtin:arithmetic/train`,
`builtin:arithmetic/test`, `builtin:arithmetic/test_heldout`, `builtin:arithmetic/test_rephrased` and
`builtin:arithmetic/test_handwritten` in configs (`data/` in a clone links to them). One command regenerates all but
the hand-written one (data/README.md has it; a test checks the files match it):

    python -m dapo_nb.arithmetic --out-dir dapo_nb/data_files/arithmetic --seed 0 --levels 1 2 3 \
        --train-per-level 600 300 100 --test-per-level 50 --rephrased-per-level 50 --heldout-per-level 50

Without --out-dir the files go to ./data, e.g. for a task of your own levels and sizes.

Departure from the paper: DAPO trains on DAPO-Math-17k (competition problems with integer
answers). This task keeps the integer-answer contract but is sized for a 135M-parameter model on
a CPU, so that reinforcement learning can show a change within minutes.
"""

from __future__ import annotations

import argparse
import json
import random
import re
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
# The rephrased style (the test_rephrased split), unchanged since that split was made so its file stays the same

NAMES = ("Tom", "Mia", "Ravi", "Lena", "Omar", "Sara", "Ken", "Ana", "Ben", "Zoe", "Ivan", "Maya", "Leo", "Nora", "Sam", "Aiko")
ITEMS = ("apple", "marble", "sticker", "book", "pencil", "coin", "card", "shell", "cookie", "stamp", "balloon", "bead")
OP_SYMBOL = {"add": "+", "sub": "-", "mul": "*", "div": "/"}

# Past tense, pronouns, other verbs and questions; every sentence here is also a held-out family in TABLE below.
# Slots: {name}, {n}, {noun} (agrees with {n}), {items} (plural) and {he} {He} {his} {His} {him} {himself}.
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
# level L of style s with seed S draws from random.Random(S * 1000 + offset + L)
STYLE_SEED_OFFSET = {"plain": 0, "rephrased": 100, "heldout": 200}


@dataclass(frozen=True)
class Problem:
    """One generated word problem."""

    level: int
    question: str
    answer: int
    steps: str  # the worked chain, e.g. "12 + 7 = 19; 19 * 3 = 57"; "3 * 4 = 12; 5 + 12 = 17" for 3 packs of 4
    families: tuple[str, ...] = ()  # the Template ids its sentences came from (not written to files)


# ----------------------------------------------------------------------------
# Arithmetic (shared) and the rephrased style's generator


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


def generate_rephrased_problem(rng: random.Random, spec: LevelSpec) -> Problem:
    """Draw one problem of the given level from `rng`, in the rephrased style (the test_rephrased split): one
    situation (a person's items), past tense, pronouns."""
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


# ----------------------------------------------------------------------------
# The story generator (train, test and test_heldout): vocabulary

# 40 people; the gender picks the pronouns ({sub} {obj} {pos} {refl}). The first 16 are the rephrased style's NAMES.
PEOPLE: dict[str, str] = {
    **GENDER,
    "Priya": "she", "Diego": "he", "Hana": "she", "Kofi": "he", "Elena": "she", "Yusuf": "he", "Grace": "she",
    "Mateo": "he", "Chloe": "she", "Arjun": "he", "Fatima": "she", "Noah": "he", "Lucy": "she", "Hugo": "he",
    "Amara": "she", "Felix": "he", "Alma": "she", "Jamal": "he", "Rosa": "she", "Oscar": "he", "Mei": "she",
    "Pablo": "he", "Keiko": "she", "Liam": "he",
}
PERSON_WORDS = {"he": {"sub": "he", "obj": "him", "pos": "his", "refl": "himself"},
                "she": {"sub": "she", "obj": "her", "pos": "her", "refl": "herself"}}


@dataclass(frozen=True)
class Thing:
    """A countable item: singular, plural, kinds (which verbs suit it: 'food', 'fruit', 'baked', 'thing')."""

    one: str
    many: str
    kinds: frozenset[str]


def _things(kinds: str, *words: str) -> list[Thing]:
    """Things of the given kinds; a word 'cherry/cherries' names an irregular plural, else plural = word + 's'."""
    out = []
    for word in words:
        one, _, many = word.partition("/")
        out.append(Thing(one, many or one + "s", frozenset(kinds.split())))
    return out


# "own": a person's belongings
OWN_ITEMS = (_things("food fruit", "apple", "orange", "pear", "plum", "cherry/cherries", "peach/peaches")
             + _things("food baked", "cookie", "cupcake", "muffin", "cracker")
             + _things("thing", "marble", "sticker", "book", "pencil", "coin", "card", "shell", "stamp", "balloon", "bead",
                       "crayon", "button", "pebble", "toy car", "comic book", "postcard", "feather", "ribbon", "eraser"))


@dataclass(frozen=True)
class Place:
    """Where a 'container' or 'venue' story's items are: 'the jar', 'in the jar', 'out of the jar', the item."""

    place: str
    in_place: str
    from_place: str
    thing: Thing


CONTAINERS = tuple(Place(p, i, f, t) for (p, i, f), t in zip(
    [("the jar", "in the jar", "out of the jar"), ("the basket", "in the basket", "out of the basket"),
     ("the box", "in the box", "out of the box"), ("the bowl", "in the bowl", "out of the bowl"),
     ("the vase", "in the vase", "out of the vase"), ("the drawer", "in the drawer", "out of the drawer"),
     ("the shelf", "on the shelf", "off the shelf"), ("the fridge", "in the fridge", "out of the fridge"),
     ("the toy chest", "in the toy chest", "out of the toy chest"), ("the tray", "on the tray", "off the tray"),
     ("the sack", "in the sack", "out of the sack"), ("the pencil case", "in the pencil case", "out of the pencil case"),
     ("the tank", "in the tank", "out of the tank")],
    _things("food baked", "cookie") + _things("food fruit", "apple") + _things("thing", "crayon")
    + _things("food fruit", "strawberry/strawberries") + _things("thing", "flower", "sock", "book") + _things("food", "egg")
    + _things("thing", "toy") + _things("food baked", "muffin") + _things("food", "potato/potatoes")
    + _things("thing", "pen", "goldfish/goldfish")))
VENUES = tuple(Place(p, i, "", t) for (p, i), t in zip(
    [("the bus", "on the bus"), ("the pond", "at the pond"), ("the parking lot", "in the parking lot"),
     ("the park", "in the park"), ("the tree", "in the tree"), ("the classroom", "in the classroom"),
     ("the field", "in the field"), ("the shop", "in the shop"), ("the beach", "on the beach"),
     ("the library", "in the library"), ("the harbor", "in the harbor"), ("the barn", "in the barn")],
    _things("thing", "passenger", "duck", "car", "child/children", "bird", "student", "cow", "customer", "surfer",
            "visitor", "boat", "horse")))
DOLLAR = Thing("dollar", "dollars", frozenset({"money"}))

NUMBER_WORDS = {0: "zero", 1: "one", 2: "two", 3: "three", 4: "four", 5: "five", 6: "six", 7: "seven", 8: "eight",
                9: "nine", 10: "ten", 11: "eleven", 12: "twelve", 13: "thirteen", 14: "fourteen", 15: "fifteen",
                16: "sixteen", 17: "seventeen", 18: "eighteen", 19: "nineteen", 20: "twenty", 30: "thirty",
                40: "forty", 50: "fifty", 60: "sixty", 70: "seventy", 80: "eighty", 90: "ninety", 100: "one hundred"}
FRACTIONS = {2: "half", 3: "a third", 4: "a quarter", 5: "a fifth", 6: "a sixth", 7: "a seventh", 8: "an eighth",
             9: "a ninth"}
# Words that start an event sentence ("Then he ..."), per family set; "" = none.
CONNECTIVES = {"train": ("Then ", "Next, ", "Later, ", "After this, ", "", ""),
               "heldout": ("Afterwards, ", "Soon after, ", "A little later, ", "", "")}

# ----------------------------------------------------------------------------
# The story generator: sentence templates
#
# Slots: {name} the person (always the name); {sub} {obj} {pos} {refl} the same person as a name ("Tom", "Tom's") or a
# pronoun ("he", "his"), {other} a second person; {n} the event's number, {noun} its item agreeing with it, {n_items}
# both ("7 apples", "$7", "seven dollars", "a dozen eggs"); {n0_items} the opening amount in a combined sentence; {k}
# a factor, {times} "twice" / "three times", {frac} "half" / "a third"; {m} {m_items} the size of each of {k} groups;
# {items} the plural noun; {place} {in_place} {from_place} a container or venue; {d} {d_items} an irrelevant number;
# {then} a connective (CONNECTIVES). [present|past] picks the story's tense; [present plural|present singular|past
# plural|past singular] also agrees with {n} (or {d}). The first letter of a sentence is capitalized when rendered.


@dataclass(frozen=True)
class Template:
    """One sentence family: a text with slots, the role it plays, and when it may be used."""

    id: str  # "<domain>.<role>.<t|h><index>", t = train family set, h = held-out
    domain: str
    role: str
    text: str
    heldout: bool
    past_only: bool = False  # a past-tense-only text (the rephrased style's sentences)
    kind: str | None = None  # the item must have this kind (e.g. 'food' for eating)
    factors: tuple[int, ...] | None = None  # the factors its words can say ('doubles': (2,)); None = any
    front: bool = False  # question: reads well before the story
    loss: bool = False  # question ("... left?"): only after a final event that removes


def T(text: str, **options) -> tuple[str, dict]:
    """A template's text and its `Template` options, as TABLE lists them."""
    return text, options


PAST = dict(past_only=True)
# TABLE[domain][role] = (train families, held-out families)
TABLE: dict[str, dict[str, tuple[list, list]]] = {
    "own": {
        "open": ([
            T("{name} [has|had] {n_items}[| at first]."),
            T("{name} [owns|owned] {n_items}."),
            T("{name} [starts|started] with {n_items}."),
            T("There [are|were] {n_items} in {name}'s bag."),
            T("{name} [keeps|kept] {n_items} in a box."),
            T("{name} [has|had] a collection of {n_items}.", kind="thing"),
            T("To begin with, {name} [has|had] {n_items}."),
            T("{name}'s backpack [holds|held] {n_items}.", kind="thing"),
            T("{name} [picks|picked] {n_items} in the morning.", kind="fruit"),
            T("{name} [bakes|baked] {n_items} for a party.", kind="baked"),
        ], [
            T("{name} had {n_items}.", **PAST),
            T("At first, {name} owned {n_items}.", **PAST),
            T("{name} started the week with {n_items}.", **PAST),
            T("In the morning, {name} counted {n_items} in {pos} bag.", **PAST),
            T("{name} [brings|brought] {n_items} to school."),
            T("At the beginning, {name} [possesses|possessed] {n_items}."),
            T("{name}'s drawer [contains|contained] {n_items}."),
            T("{name} [lines|lined] up {n_items} on {pos} desk."),
        ]),
        "add": ([
            T("{then}{sub} [buys|bought] {n} more {noun}."),
            T("{then}{sub} [finds|found] {n} more {noun}."),
            T("{then}a friend [gives|gave] {obj} {n} more {noun}."),
            T("{then}{sub} [gets|got] {n_items} as a present."),
            T("{then}{sub} [wins|won] {n_items} at the fair."),
            T("{then}{pos} grandmother [sends|sent] {obj} {n_items}."),
            T("{then}{sub} [receives|received] {n} extra {noun} from a neighbor."),
            T("{then}{sub} [adds|added] {n_items} to {pos} pile."),
            T("{then}{sub} [gets|got] {n_items} from {pos} brother."),
            T("{then}{sub} [picks|picked] {n} more {noun}.", kind="fruit"),
            T("{then}{sub} [bakes|baked] another batch of {n_items}.", kind="baked"),
            T("{then}{sub} [trades|traded] a toy for {n_items}.", kind="thing"),
        ], [
            T("{sub} bought {n} more.", **PAST),
            T("{pos} aunt gave {obj} {n} extra {noun}.", **PAST),
            T("{sub} won {n_items} in a game.", **PAST),
            T("After that, {sub} collected {n} new {noun}.", **PAST),
            T("{then}{sub} [comes|came] home with {n} additional {noun}."),
            T("{then}{n_items} [are|is|were|was] added to {pos} stash."),
            T("{then}{pos} cousin [hands|handed] {obj} {n_items}."),
            T("{then}{sub} [earns|earned] {n_items} as a prize."),
        ]),
        "sub": ([
            T("{then}{sub} [gives|gave] away {n_items}."),
            T("{then}{sub} [loses|lost] {n_items}."),
            T("{then}{sub} [sells|sold] {n_items}."),
            T("{then}{sub} [gives|gave] {n_items} to {pos} sister."),
            T("{then}{n_items} [go|goes|went|went] missing."),
            T("{then}{sub} [shares|shared] {n_items} with a friend."),
            T("{then}{sub} [drops|dropped] {n_items} in the park."),
            T("{then}{sub} [eats|ate] {n_items}.", kind="food"),
            T("{then}{sub} [uses|used] {n_items} for a school project.", kind="thing"),
        ], [
            T("{sub} gave {n_items} to a classmate.", **PAST),
            T("On the way home, {sub} dropped {n_items}.", **PAST),
            T("{sub} traded away {n_items}.", **PAST),
            T("After giving away {n_items}, {sub} took a short break.", **PAST),
            T("{then}{sub} [misplaces|misplaced] {n_items}."),
            T("{then}{sub} [donates|donated] {n_items} to charity."),
            T("{then}{pos} little brother [takes|took] {n_items} from {obj}."),
            T("{then}{sub} [finishes|finished] off {n_items}.", kind="food"),
        ]),
        "mul": ([
            T("{then}{sub} [gets|got] enough {items} to have {k} times as many as before."),
            T("{then}{sub} [doubles|doubled] {pos} {items}.", factors=(2,)),
            T("{then}{sub} [triples|tripled] {pos} supply of {items}.", factors=(3,)),
            T("{then}{sub} [ends|ended] up with {times} as many {items} as before."),
        ], [
            T("Next, the number of {items} {sub} had was multiplied by {k}.", **PAST),
            T("{pos} collection of {items} then grew to {k} times its earlier size.", **PAST),
            T("{then}{sub} [multiplies|multiplied] {pos} pile of {items} by {k}."),
            T("{then}{sub} [makes|made] {pos} number of {items} {times} what it [is|was]."),
        ]),
        "div": ([
            T("{then}{sub} [splits|split] the {items} into {k} equal groups and [keeps|kept] only one group."),
            T("{then}{sub} [gives|gave] away half of {pos} {items}.", factors=(2,)),
            T("{then}{sub} [keeps|kept] only {frac} of {pos} {items} and [gives|gave] the rest away."),
            T("{then}{sub} [sells|sold] all but {frac} of {pos} {items}."),
        ], [
            T("{sub} divided the {items} into {k} equal piles and kept just one pile.", **PAST),
            T("{sub} shared the {items} equally among {k} children, {refl} included, and kept {pos} share.", **PAST),
            T("{sub} packed the {items} into {k} boxes with the same number in each and kept a single box.", **PAST),
            T("{then}{sub} [loses|lost] half of {pos} {items}.", factors=(2,)),
            T("{then}only {frac} of {pos} {items} [remain|remained] after {sub} [hands|handed] the rest out."),
        ]),
        "add_group": ([
            T("{then}{sub} [buys|bought] {k} packs of {m} {items}."),
            T("{then}{sub} [gets|got] {k} bags with {m} {items} in each."),
        ], [
            T("{then}{sub} [receives|received] {k} boxes, each holding {m} {items}."),
        ]),
        "sub_group": ([
            T("{then}{sub} [gives|gave] {k} friends {m} {items} each."),
        ], [
            T("{then}{sub} [hands|handed] {m} {items} to each of {k} classmates."),
        ]),
        "combo_add": ([
            T("{name} [has|had] {n0_items} and [buys|bought] {n} more."),
            T("{name} [starts|started] the day with {n0_items}, then [finds|found] {n} more."),
        ], [
            T("{name} [begins|began] with {n0_items} and [picks|picked] up {n} more along the way."),
        ]),
        "combo_sub": ([
            T("{name} [has|had] {n0_items} but [loses|lost] {n} of them."),
            T("{name} [owns|owned] {n0_items} and [gives|gave] {n} away."),
        ], [
            T("Of the {n0_items} {name} [has|had], {n} [go|goes|went|went] missing."),
        ]),
        "cmp_add": ([T("{other} [has|had] {n} more {noun} than {name}.")],
                    [T("{other} [owns|owned] {n} {noun} more than {name} [does|did].")]),
        "cmp_sub": ([T("{other} [has|had] {n} fewer {noun} than {name}.")],
                    [T("{other} [owns|owned] {n} {noun} less than {name} [does|did].")]),
        "cmp_mul": ([T("{other} [has|had] {times} as many {items} as {name}.")],
                    [T("{other} [owns|owned] {k} times the number of {items} that {name} [owns|owned].")]),
        "cmp_div": ([T("{other} [has|had] {frac} as many {items} as {name}.")],
                    [T("{other} [owns|owned] only {frac} of the number of {items} that {name} [owns|owned].")]),
        "question": ([
            T("How many {items} does {name} have now?"),
            T("How many {items} [does|did] {name} have at the end?", front=True),
            T("What is the number of {items} {name} [has|had] at the end?", front=True),
            T("How many {items} [does|did] {name} have left?", loss=True),
            T("How many {items} [does|did] {name} have in the end?", front=True),
            T("Find the number of {items} {name} [has|ended up with].", front=True),
        ], [
            T("How many {items} does {name} have in total?"),
            T("How many {items} did {name} end up with?", **PAST, front=True),
            T("What number of {items} does {name} own at the end?", front=True),
            T("How many {items} does {name} own now?"),
            T("After all this, how many {items} [does|did] {name} have?"),
            T("Can you work out how many {items} {name} [has|had] at the finish?", front=True),
            T("{name} [counts|counted] {pos} {items} at the end. How many [are|were] there?"),
        ]),
    },
    "money": {
        "open": ([
            T("{name} [has|had] {n_items} in {pos} wallet."),
            T("{name} [has|had] saved {n_items}."),
            T("There [is|was] {n_items} in {name}'s piggy bank."),
            T("{name} [gets|got] {n_items} of pocket money at the start of the month."),
            T("{name}'s purse [holds|held] {n_items}."),
        ], [
            T("{name} [carries|carried] {n_items} to the market."),
            T("At the start, {name}'s savings [come|came] to {n_items}."),
            T("{name} [keeps|kept] {n_items} in a tin under {pos} bed."),
        ]),
        "add": ([
            T("{then}{sub} [earns|earned] {n_items} washing cars."),
            T("{then}{pos} uncle [gives|gave] {obj} {n_items}."),
            T("{then}{sub} [finds|found] {n_items} on the sidewalk."),
            T("{then}{sub} [sells|sold] an old toy for {n_items}."),
            T("{then}{sub} [gets|got] {n_items} more for helping a neighbor."),
        ], [
            T("{then}{sub} [is|was] paid {n_items} for walking a dog."),
            T("{then}{sub} [wins|won] {n_items} in a contest."),
            T("{then}{n_items} [arrives|arrived] as a birthday gift."),
        ]),
        "sub": ([
            T("{then}{sub} [spends|spent] {n_items} on a book."),
            T("{then}{sub} [pays|paid] {n_items} for lunch."),
            T("{then}{sub} [buys a toy that costs|bought a toy that cost] {n_items}."),
            T("{then}{sub} [lends|lent] {n_items} to a friend."),
            T("{then}{sub} [loses|lost] {n_items} on the way home."),
        ], [
            T("{then}{sub} [gives|gave] {n_items} to charity."),
            T("{then}a movie ticket [costs|cost] {obj} {n_items}."),
            T("{then}{sub} [puts|put] {n_items} toward a new game."),
        ]),
        "mul": ([
            T("{then}{pos} savings [double|doubled].", factors=(2,)),
            T("{then}{sub} [ends|ended] up with {times} as much money as before."),
        ], [
            T("{then}{pos} money [triples|tripled] after a good week of sales.", factors=(3,)),
            T("{then}a bonus [multiplies|multiplied] {pos} money by {k}."),
        ]),
        "div": ([
            T("{then}{sub} [spends|spent] half of {pos} money.", factors=(2,)),
            T("{then}{sub} [spends|spent] all but {frac} of {pos} money."),
        ], [
            T("{then}{sub} [splits|split] {pos} money into {k} equal parts and [keeps|kept] one part."),
            T("{then}only {frac} of {pos} money [is|was] left after shopping."),
        ]),
        "add_group": ([
            T("{then}{sub} [earns|earned] {m_items} a day for {k} days."),
            T("{then}{sub} [finds|found] {k} bills worth {m_items} each."),
        ], [
            T("{then}{sub} [collects|collected] {m_items} from each of {k} neighbors."),
        ]),
        "sub_group": ([
            T("{then}{sub} [buys|bought] {k} tickets at {m_items} each."),
        ], [
            T("{then}{sub} [pays|paid] for {k} sandwiches costing {m_items} apiece."),
        ]),
        "combo_add": ([T("{name} [has|had] {n0_items} and [earns|earned] {n_items} more.")],
                      [T("Starting with {n0_items}, {name} [receives|received] another {n_items}.")]),
        "combo_sub": ([T("{name} [has|had] {n0_items} but [spends|spent] {n_items} of it.")],
                      [T("{name} [takes|took] {n0_items} to the fair and [spends|spent] {n_items} there.")]),
        "cmp_add": ([T("{other} [has|had] {n_items} more than {name}.")],
                    [T("{other}'s savings [are|were] {n_items} bigger than {name}'s.")]),
        "cmp_sub": ([T("{other} [has|had] {n_items} less than {name}.")],
                    [T("{other}'s savings [are|were] {n_items} smaller than {name}'s.")]),
        "cmp_mul": ([T("{other} [has|had] {times} as much money as {name}.")],
                    [T("{other}'s savings [are|were] {k} times {name}'s.")]),
        "cmp_div": ([T("{other} [has|had] {frac} as much money as {name}.")],
                    [T("{other}'s savings [are|were] only {frac} of {name}'s.")]),
        "question": ([
            T("How much money does {name} have now?"),
            T("How many dollars [does|did] {name} have at the end?", front=True),
            T("How much money [does|did] {name} have left?", loss=True),
            T("What is {name}'s total in dollars at the end?", front=True),
        ], [
            T("How much money [remains|remained] with {name}?"),
            T("In the end, how many dollars [does|did] {name} hold?", front=True),
            T("How much [is|was] {name} left with, in dollars?", loss=True),
        ]),
    },
    "container": {
        "open": ([
            T("There [are|were] {n_items} {in_place}."),
            T("{place} [holds|held] {n_items}."),
            T("{name} [counts|counted] {n_items} {in_place}."),
            T("{in_place} there [are|were] {n_items}."),
        ], [
            T("{place} [contains|contained] {n_items}."),
            T("{name} [sees|saw] that {place} [has|had] {n_items} in it."),
        ]),
        "add": ([
            T("{then}{sub} [puts|put] {n} more {noun} {in_place}."),
            T("{then}{sub} [adds|added] {n_items} to {place}."),
            T("{then}{n} more {noun} [are|is|were|was] put {in_place}."),
            T("{then}{pos} mother [places|placed] {n_items} {in_place}."),
        ], [
            T("{then}{sub} [tosses|tossed] {n} extra {noun} {in_place}."),
            T("{then}{n_items} [get|gets|got|got] added to {place}."),
        ]),
        "sub": ([
            T("{then}{sub} [takes|took] {n_items} {from_place}."),
            T("{then}{sub} [removes|removed] {n_items} from {place}."),
            T("{then}{n_items} [are|is|were|was] taken {from_place}."),
            T("{then}{pos} friend [borrows|borrowed] {n_items} from {place}.", kind="thing"),
            T("{then}{sub} [eats|ate] {n} of the {items}.", kind="food"),
        ], [
            T("{then}{sub} [grabs|grabbed] {n_items} {from_place}."),
            T("{then}{n_items} [go|goes|went|went] missing from {place}."),
        ]),
        "mul": ([
            T("{then}{sub} [fills|filled] {place} until it [holds|held] {times} as many {items} as before."),
            T("{then}the number of {items} {in_place} [doubles|doubled].", factors=(2,)),
        ], [
            T("{then}{sub} [restocks|restocked] {place} so that it [has|had] {k} times as many {items}."),
        ]),
        "div": ([
            T("{then}{sub} [takes|took] out all but {frac} of the {items}."),
            T("{then}{sub} [moves|moved] half of the {items} somewhere else.", factors=(2,)),
        ], [
            T("{then}only {frac} of the {items} [stay|stayed] {in_place}; {sub} [takes|took] the rest away."),
        ]),
        "add_group": ([T("{then}{sub} [adds|added] {k} bags of {m} {items} to {place}.")],
                      [T("{then}{sub} [puts|put] in {k} handfuls of {m} {items}.")]),
        "sub_group": ([T("{then}{sub} [fills|filled] {k} lunch boxes with {m} {items} each from {place}.")],
                      [T("{then}{k} people [take|took] {m} {items} each {from_place}.")]),
        "combo_add": ([T("There [are|were] {n0_items} {in_place}, and {name} [adds|added] {n} more.")],
                      [T("{place} [has|had] {n0_items} before {name} [puts|put] in {n} more.")]),
        "combo_sub": ([T("There [are|were] {n0_items} {in_place} until {name} [takes|took] {n} of them.")],
                      [T("Of the {n0_items} {in_place}, {name} [hands|handed] out {n}.")]),
        "question": ([
            T("How many {items} are {in_place} now?"),
            T("How many {items} [are|were] left {in_place}?", loss=True),
            T("How many {items} [does|did] {place} hold at the end?", front=True),
            T("What is the number of {items} {in_place} at the end?", front=True),
        ], [
            T("How many {items} [remain|remained] {in_place}?"),
            T("When {name} [is|was] done, how many {items} [are|were] {in_place}?", front=True),
            T("Count the {items} {in_place} at the end: how many are there?", front=True),
        ]),
    },
    "venue": {
        "open": ([
            T("There [are|were] {n_items} {in_place}."),
            T("{n_items} [are|were] {in_place}."),
            T("{name} [sees|saw] {n_items} {in_place}."),
        ], [
            T("{in_place}, {name} [spots|spotted] {n_items}."),
            T("{n_items} [wait|waited] {in_place}."),
        ]),
        "add": ([
            T("{then}{n} more {noun} [arrive|arrives|arrived|arrived]."),
            T("{then}{n_items} [join|joins|joined|joined] them."),
            T("{then}{n_items} [show|shows|showed|showed] up."),
        ], [
            T("{then}{n_items} [turn|turns|turned|turned] up {in_place} as well."),
            T("{then}{sub} [notices|noticed] {n} new {noun} arriving."),
        ]),
        "sub": ([
            T("{then}{n_items} [leave|leaves|left|left]."),
            T("{then}{n_items} [go|goes|went|went] home."),
            T("{then}{n} of the {items} [leave|leaves|left|left] {place}."),
        ], [
            T("{then}{n_items} [head|heads|headed|headed] off."),
            T("{then}{sub} [watches|watched] {n_items} depart."),
        ]),
        "mul": ([
            T("{then}the number of {items} {in_place} [doubles|doubled].", factors=(2,)),
            T("{then}so many [arrive|arrived] that there [are|were] {times} as many {items} as before."),
        ], [
            T("{then}the crowd of {items} [grows|grew] to {k} times its size."),
        ]),
        "div": ([
            T("{then}all but {frac} of the {items} [leave|left]."),
            T("{then}half of the {items} [go|went] away.", factors=(2,)),
        ], [
            T("{then}only {frac} of the {items} [stay|stayed] behind."),
        ]),
        "add_group": ([T("{then}{k} groups of {m} {items} [arrive|arrived].")],
                      [T("{then}{k} more groups [come|came], each with {m} {items}.")]),
        "sub_group": ([T("{then}{k} groups of {m} {items} [leave|left].")],
                      [T("{then}{m} {items} [drive|drove] off in each of {k} vans.")]),
        "combo_add": ([T("{n0_items} [are|were] {in_place} when {n} more [arrive|arrives|arrived|arrived].")],
                      [T("{in_place} {n0_items} [wait|waited], and then {n} more [turn|turns|turned|turned] up.")]),
        "combo_sub": ([T("{n0_items} [are|were] {in_place} until {n} of them [leave|leaves|left|left].")],
                      [T("Out of {n0_items} {in_place}, {n} [move|moves|moved|moved] away.")]),
        "question": ([
            T("How many {items} are {in_place} now?"),
            T("How many {items} [are|were] {in_place} at the end?", front=True),
            T("How many {items} [are|were] left {in_place}?", loss=True),
        ], [
            T("How many {items} [remain|remained] {in_place}?"),
            T("At the end, what is the count of {items} {in_place}?", front=True),
        ]),
    },
    # an irrelevant sentence with a number, in any story ('own' stories may also name another person's items)
    "any": {
        "distractor": ([
            T("{name} is {d} years old."),
            T("{pos} best friend lives {d} blocks away."),
            T("The shop closes at {d} o'clock."),
            T("{name} has {d} cousins."),
            T("It is {d} degrees warmer than yesterday."),
            T("The walk home takes {d} minutes."),
        ], [
            T("{name}'s sister is {d} years older than {obj}."),
            T("There are {d} days until the holidays."),
            T("{name}'s house number is {d}."),
            T("The bus ride to school takes {d} minutes."),
        ]),
    },
    "own_other": {
        "distractor": ([T("{other}, a neighbor, [has|had] {d_items}.")],
                       [T("Meanwhile, {other} [keeps|kept] {d_items} at home.")]),
    },
}


def _build_templates() -> tuple[Template, ...]:
    out = []
    for domain, roles in TABLE.items():
        for role, (train, heldout) in roles.items():
            for held, texts in ((False, train), (True, heldout)):
                for index, (text, options) in enumerate(texts):
                    out.append(Template(f"{domain}.{role}.{'h' if held else 't'}{index}", domain, role, text, held, **options))
    return tuple(out)


TEMPLATES = _build_templates()
DOMAIN_WEIGHTS = {"own": 4, "money": 2, "container": 2, "venue": 2}


# ----------------------------------------------------------------------------
# The story generator: drawing and rendering a story


@dataclass
class _Event:
    """One event of a story: its operation and number (or k groups of m), the amount after it, its sentence form."""

    op: str
    operand: int
    result: int
    form: str = "plain"  # "plain", "group" (k groups of m: add or sub), "cmp" (another person has more/fewer/...)
    k: int = 0
    m: int = 0


class _Story:
    """What a story's sentences share: domain, tense, people, item, number style, and the template family set."""

    def __init__(self, rng: random.Random, heldout: bool):
        self.rng = rng
        self.heldout = heldout
        self.domain = _weighted_choice(rng, DOMAIN_WEIGHTS)
        self.past = rng.random() < 0.5
        self.person = rng.choice(sorted(PEOPLE))
        self.place: Place | None = None
        if self.domain == "own":
            self.thing = rng.choice(OWN_ITEMS)
        elif self.domain == "money":
            self.thing = DOLLAR
        else:
            self.place = rng.choice(CONTAINERS if self.domain == "container" else VENUES)
            self.thing = self.place.thing
        self.words = rng.random() < 0.35  # small numbers often written as words
        self.dollar_sign = rng.random() < 0.6  # "$12" rather than "12 dollars"
        self.pronouns = rng.random() < 0.7  # may refer to the person as he / she once named
        self.named: set[str] = set()  # people named so far
        self.families: list[str] = []

    # -- choosing a sentence family

    def template(self, domain: str, role: str, *, factor: int | None = None, front: bool = False,
                 loss: bool = False) -> Template:
        pool = [t for t in TEMPLATES if t.domain == domain and t.role == role and t.heldout == self.heldout
                and not (t.past_only and not self.past) and (t.kind is None or t.kind in self.thing.kinds)
                and (t.factors is None or factor in t.factors) and (t.front or not front) and (loss or not t.loss)]
        if len(pool) > 1 and self.families:  # not the same sentence family twice in a row
            pool = [t for t in pool if t.id != self.families[-1]]
        chosen = self.rng.choice(pool)
        self.families.append(chosen.id)
        return chosen

    # -- numbers

    def number(self, n: int, dozen: bool = False) -> str:
        """n as digits, or (in a story with number words) often as a word: 'seven', 'a dozen', 'half a dozen'."""
        if self.words and self.rng.random() < 0.6:
            if dozen and n in (6, 12) and self.rng.random() < 0.4:
                return "half a dozen" if n == 6 else "a dozen"
            if n in NUMBER_WORDS:
                return NUMBER_WORDS[n]
        return str(n)

    def amount(self, n: int) -> str:
        """n with the story's item: '7 apples', 'one apple', 'a dozen eggs', '$7', 'seven dollars'."""
        if self.thing is DOLLAR and self.dollar_sign:
            return f"${n}"
        return f"{self.number(n, dozen=self.thing is not DOLLAR)} {self.noun(n)}"

    def noun(self, n: int) -> str:
        return self.thing.one if n == 1 else self.thing.many

    def times(self, k: int) -> str:
        return "twice" if k == 2 else f"{self.number(k)} times"

    # -- rendering

    def render(self, template: Template, who: str, count: int | None = None, **values) -> str:
        """One sentence: the template's slots filled, its tense and agreement chosen, its first letter capitalized.
        `who` is the person {sub} {obj} {pos} {refl} refer to; `count` what a 4-way [..] agrees with."""
        words = PERSON_WORDS[PEOPLE[who]]
        first = [True]

        def person(slot: str) -> str:
            if first[0]:  # the sentence's first mention: the name, unless a pronoun is clear and chosen
                first[0] = False
                if not (self.pronouns and who in self.named and self.rng.random() < 0.6):
                    return {"sub": who, "obj": who, "pos": f"{who}'s", "refl": words["refl"]}[slot]
            return words[slot]

        def fill(match: re.Match) -> str:
            slot = match[1]
            if slot in ("sub", "obj", "pos", "refl"):
                return person(slot)
            if slot == "name":
                first[0] = False
                return who
            if slot == "then":
                return self.rng.choice(CONNECTIVES["heldout" if self.heldout else "train"])
            return values[slot]

        def tense(match: re.Match) -> str:
            forms = match[1].split("|")
            if len(forms) == 2:
                return forms[self.past]
            return forms[2 * self.past + (count == 1)]

        text = re.sub(r"\[([^\[\]]*)\]", tense, template.text)
        text = re.sub(r"\{(\w+)\}", fill, text)
        if not first[0]:  # the sentence mentioned the person: later ones may say he / she
            self.named.add(who)
        return text[0].upper() + text[1:]

    def place_values(self) -> dict[str, str]:
        if self.place is None:
            return {"items": self.thing.many}
        return {"items": self.thing.many, "place": self.place.place, "in_place": self.place.in_place,
                "from_place": self.place.from_place}


def _weighted_choice(rng: random.Random, weights: dict[str, int]) -> str:
    return rng.choice([key for key, weight in weights.items() for _ in range(weight)])


def _draw_events(rng: random.Random, spec: LevelSpec, start: int, compare_at: int | None) -> list[_Event]:
    """The story's arithmetic: `spec.num_ops` events from `start`, each amount a whole number in [0, max_value]. Where
    the level multiplies, an add or subtract event may come as k groups of m (k in [2, max_factor])."""
    events, value = [], start
    for index in range(spec.num_ops):
        op, operand, result = _draw_event(rng, spec, value)
        event = _Event(op, operand, result)
        if index == compare_at:
            event.form = "cmp"
        elif op in ("add", "sub") and "mul" in spec.ops and rng.random() < 0.25:
            factors = [k for k in range(2, spec.max_factor + 1) if operand % k == 0 and operand // k >= 2]
            if factors:
                event.form, event.k = "group", rng.choice(factors)
                event.m = operand // event.k
        events.append(event)
        value = result
    return events


def _story_problem(rng: random.Random, spec: LevelSpec, heldout: bool) -> Problem:
    """One story of the given level from `rng`, every sentence from the train family set (or, with `heldout`, from
    the held-out set): domain, tense, people, item and wording are drawn, then the arithmetic, then the sentences."""
    story = _Story(rng, heldout)
    start = rng.randint(2, spec.max_start)
    compare_at = rng.randrange(spec.num_ops) if story.domain in ("own", "money") and rng.random() < 0.2 else None
    events = _draw_events(rng, spec, start, compare_at)
    other = rng.choice([p for p in sorted(PEOPLE) if p != story.person])
    combo = events[0].form == "plain" and events[0].op in ("add", "sub") and rng.random() < 0.2
    distractor = rng.random() < 0.3
    distractor_other = distractor and story.domain == "own" and compare_at is None and rng.random() < 0.3
    if compare_at is not None or distractor_other:
        story.pronouns = False  # two people in the story: names only
    # the statements in order: the opening (alone or with the first event), the events, perhaps an irrelevant one
    plan: list[tuple[str, int]] = [("combo", 0)] if combo else [("open", -1)]
    plan += [("event", index) for index in range(1 if combo else 0, len(events))]
    if distractor:
        plan.insert(rng.randint(1, len(plan)), ("distractor", -1))
    front = rng.random() < 0.2
    last = events[-1]
    loss = last.op in ("sub", "div") and last.form != "cmp"

    domain, base = story.domain, story.place_values()
    statements: list[str] = []
    who = story.person  # whose amount the story follows (a comparison hands it to `other`)
    for what, index in plan:
        if what == "open":
            template = story.template(domain, "open")
            statements.append(story.render(template, who, count=start, n_items=story.amount(start), **base))
        elif what == "combo":
            event = events[0]
            template = story.template(domain, f"combo_{event.op}")
            statements.append(story.render(template, who, count=event.operand, n0_items=story.amount(start),
                                           **_event_values(story, event), **base))
        elif what == "distractor":
            d = rng.randint(2, 12)
            if distractor_other:
                template = story.template("own_other", "distractor")
                statements.append(story.render(template, who, count=d, other=other, d_items=story.amount(d), **base))
            else:
                template = story.template("any", "distractor")
                statements.append(story.render(template, who, count=d, d=story.number(d), **base))
        else:
            event = events[index]
            factor = event.operand if event.op in ("mul", "div") else None
            if event.form == "cmp":
                template = story.template(domain, f"cmp_{event.op}", factor=factor)
                statements.append(story.render(template, who, count=event.operand, other=other,
                                               **_event_values(story, event), **base))
                who = other
            elif event.form == "group":
                template = story.template(domain, f"{event.op}_group")
                statements.append(story.render(template, who, count=event.m, k=story.number(event.k),
                                               m=story.number(event.m), m_items=story.amount(event.m), **base))
            else:
                template = story.template(domain, event.op, factor=factor)
                statements.append(story.render(template, who, count=event.operand, **_event_values(story, event),
                                               **base))
    holder = other if compare_at is not None else story.person  # the question asks about the last holder
    question = story.render(story.template(domain, "question", front=front, loss=loss), holder, **base)
    steps, value = [], start
    for event in events:
        if event.form == "group":
            steps.append(f"{event.k} * {event.m} = {event.operand}")
        steps.append(f"{value} {OP_SYMBOL[event.op]} {event.operand} = {event.result}")
        value = event.result
    sentences = [question, *statements] if front else [*statements, question]
    return Problem(spec.level, " ".join(sentences), value, "; ".join(steps), tuple(story.families))


def _event_values(story: _Story, event: _Event) -> dict[str, str]:
    """The slots of a plain or comparison event: its number, noun and amount; for mul/div its factor as k, times, frac."""
    n = event.operand
    values = {"n": story.number(n, dozen=story.thing is not DOLLAR), "noun": story.noun(n), "n_items": story.amount(n)}
    if event.op in ("mul", "div"):
        values.update(k=story.number(n), times=story.times(n), frac=FRACTIONS[n])
    return values


def generate_problem(rng: random.Random, spec: LevelSpec, heldout: bool = False) -> Problem:
    """Draw one problem of the given level from `rng`: a story from the train family set (the train and test splits),
    or with `heldout` from the held-out family set (the test_heldout split)."""
    return _story_problem(rng, spec, heldout)


def unique_problems(level: int, count: int, seed: int, style: str = "plain", exclude: Iterable[str] = ()) -> list[Problem]:
    """The first `count` distinct problems of a level's seeded stream in a style ("plain": train families,
    "heldout": held-out families, "rephrased": the rephrased style), skipping `exclude`d texts."""
    if count > MAX_PER_LEVEL:
        raise ValueError(f"level {level} cannot supply {count} distinct problems; ask for at most {MAX_PER_LEVEL}")
    spec = LEVELS[level]
    rng = random.Random(seed * 1000 + STYLE_SEED_OFFSET[style] + level)
    if style == "rephrased":
        generate = generate_rephrased_problem
    else:
        heldout = style == "heldout"
        generate = lambda rng, spec: generate_problem(rng, spec, heldout)  # noqa: E731
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


def _held_out(style: str, levels: list[int], per_level: int | Sequence[int], seed: int, exclude: Iterable[str]) -> list[dict]:
    _check_levels(levels)
    exclude = set(exclude)
    records = []
    for level, count in zip(levels, _per_level(per_level, levels, f"{style}_per_level")):
        problems = unique_problems(level, count, seed, style=style, exclude=exclude)
        records += [to_record(problem, index, f"arith-{style}") for index, problem in enumerate(problems)]
    return records


def make_rephrased(levels: list[int], per_level: int | Sequence[int], seed: int = 0, exclude: Iterable[str] = ()) -> list[dict]:
    """The `test_rephrased` split: `per_level` problems of each level in the rephrased style, in level order, qids
    `arith-rephrased-L<level>-<index>`, none of them with a question text in `exclude` (e.g. train and test)."""
    return _held_out("rephrased", levels, per_level, seed, exclude)


def make_heldout(levels: list[int], per_level: int | Sequence[int], seed: int = 0, exclude: Iterable[str] = ()) -> list[dict]:
    """The `test_heldout` split: `per_level` stories of each level told only with held-out families (no sentence
    template of it is one train or test use), in level order, qids `arith-heldout-L<level>-<index>`, none of them
    with a question text in `exclude`."""
    return _held_out("heldout", levels, per_level, seed, exclude)


def write_jsonl(records: list[dict], path: Path) -> None:
    """Write one JSON object per line, UTF-8, '\\n' line ends (byte-stable across platforms)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", encoding="utf-8", newline="\n") as handle:
        for record in records:
            handle.write(json.dumps(record, ensure_ascii=False) + "\n")


def main(argv: list[str] | None = None) -> None:
    """Command line: write train.jsonl and test.jsonl (and with --heldout-per-level / --rephrased-per-level,
    test_heldout.jsonl / test_rephrased.jsonl) into --out-dir."""
    parser = argparse.ArgumentParser(prog="python -m dapo_nb.arithmetic", description=__doc__.split("\n\n")[0])
    parser.add_argument("--out-dir", type=Path, default=Path("data"), help="folder for train.jsonl and test.jsonl")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--levels", type=int, nargs="+", default=[1, 2, 3], help=f"levels to include, from {sorted(LEVELS)}")
    parser.add_argument("--train-per-level", type=int, nargs="+", default=[400], help="one count, or one per level")
    parser.add_argument("--test-per-level", type=int, nargs="+", default=[50], help="one count, or one per level")
    parser.add_argument("--rephrased-per-level", type=int, nargs="+", default=[0],
                        help="also write test_rephrased.jsonl, held-out problems in another phrasing style: one count, "
                             "or one per level (0 = no such file)")
    parser.add_argument("--heldout-per-level", type=int, nargs="+", default=[0],
                        help="also write test_heldout.jsonl, held-out problems told only with sentence families that "
                             "train and test never use: one count, or one per level (0 = no such file)")
    args = parser.parse_args(argv)
    try:
        splits = make_splits(args.levels, args.train_per_level, args.test_per_level, args.seed)
        seen = [record["prompt"] for records in splits.values() for record in records]
        if any(args.rephrased_per_level):
            splits["test_rephrased"] = make_rephrased(args.levels, args.rephrased_per_level, args.seed, exclude=seen)
        if any(args.heldout_per_level):
            splits["test_heldout"] = make_heldout(args.levels, args.heldout_per_level, args.seed, exclude=seen)
    except ValueError as error:
        parser.error(str(error))
    for split, records in splits.items():
        write_jsonl(records, args.out_dir / f"{split}.jsonl")
        print(f"wrote {len(records)} problems to {args.out_dir / f'{split}.jsonl'}")


if __name__ == "__main__":
    main()
