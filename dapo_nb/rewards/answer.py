r"""Final-answer extraction and equivalence: exactly what counts as a correct answer.

This module uses only the standard library plus, when installed, Hugging Face's `math-verify`
(imported lazily). `verl_export` copies it verbatim into the standalone verl reward module, so
keep it free of package imports.

Extraction: the *last* marked answer in the completion wins; markers, by priority:

1. `\boxed{...}` (or `\fbox{...}`), braces balanced, nesting allowed: the last one; also MATH's
   brace-less `\boxed 5` (the text after it up to `$` or the end of the line).
2. An answer line: `Answer: ...`, `Final answer: ...`, `**Answer:** ...` (any case, `:` or `：`),
   or `the (final) answer is ...`: the text after the last such marker, up to the end of its line.
3. A GSM8K line `#### ...`: the last one, up to the end of its line.
4. Otherwise, as a fallback, the last number in the text (`... so we get 42.`). Only markers 1-3
   make `has_final_answer` true (the `format` objective); the fallback only feeds `is_correct`.

Marked answers only: `is_correct(..., marked_only=True)` ignores the fallback, so a completion
without marker 1-3 is never correct. The reward's `correctness` objective uses it by default
(`reward.marked_answer_only`): a policy that rambles to the token budget must not be rewarded for a
number it happened to end on; the answer must be stated. Evaluation's pass@1 keeps the fallback
(the lenient judge, independent of the training reward).

The ground truth goes through the same extraction when it carries a marker (GSM8K solutions end in
`#### 72`), else it is taken whole.

Cleaning the extracted text: Unicode NFKC (full-width digits become ASCII), the Unicode minus `−`
becomes `-`, then surrounding `$`, `\(...\)`, `\[...\]`, `**`, whitespace, a leading `:` and
trailing `.` `,` `;` `:` `!` are stripped.

Equivalence, tried in order:

a. Plain numbers (fast path, exact): an optional sign, digits with optional thousands separators
   in groups of three (`1,234,567`), an optional decimal part, an optional exponent (`1e3`),
   optionally followed by up to three unit words (`540 apples`). Compared as exact decimals:
   `540` = `540.0` = `540,` = `+540`; `1,234` = `1234`; `-3` = `−3`; `1e3` = `1000`;
   huge numbers compare exactly (no float rounding).
b. Anything else goes to `math-verify` (`parse` of `$text$`, then of the bare text, and
   `verify` with its defaults): `\frac{1}{2}` = `1/2` = `0.5`, `\dfrac12`, `\sqrt{2}`, `2\pi`,
   sets `\{1,2\}` = `\{2,1\}`, intervals, `x = 3` = `3`, `10\%` = `10`; numeric comparisons are
   rounded to 6 decimals by math-verify, so `1.41421356` = `\sqrt{2}`.
c. Last, also when math-verify is not installed: texts equal after lower-casing and collapsing
   whitespace are equivalent, so multiple-choice letters (`B`) and words (`yes`) work.

Never correct: an empty completion; an answer hedged with "or" (`540 or 541`); prose in place of
an answer (`Answer: I don't know`: no digit, and two or more words of 3+ letters outside LaTeX
commands); a span over 500 characters.

Departure from open-r1 / verl: they hand the whole completion to math-verify; we extract the span
first (cheaper, and a bounded input for a parser that runs without a timeout in worker threads).
math-verify's timeouts use `signal.alarm`, which works only in the main thread, so off the main
thread we call it with timeouts disabled instead of failing.
"""

from __future__ import annotations

import re
import threading
import unicodedata
from decimal import Decimal, InvalidOperation
from typing import NamedTuple

# ----------------------------------------------------------------------------
# Patterns

_BOXED_OPEN = re.compile(r"\\(?:boxed|fbox)(?![A-Za-z])\s*")
_BRACELESS_END = re.compile(r"[$\n]")
_ANSWER_LINE = re.compile(
    r"(?:\*\*|__)?\b(?:final\s+answer|answer)\b(?:\*\*|__)?\s*[:：]"
    r"|\bthe\s+(?:final\s+)?answer\s+is\b",
    re.IGNORECASE,
)
_GSM8K_LINE = re.compile(r"####")
_NUMBER_BODY = r"[-+]?(?:\d{1,3}(?:,\d{3})+|\d+)(?:\.\d+)?(?:[eE][-+]?\d+)?|[-+]?\.\d+"
_PLAIN_NUMBER = re.compile(rf"(?:{_NUMBER_BODY})")
_NUMBER_WITH_UNIT = re.compile(rf"({_NUMBER_BODY})(?:\s+[A-Za-z]+){{1,3}}")
_SENTENCE_END = re.compile(r"(?<=\S)\.\s+(?=[A-Z])")
_LAST_NUMBER = re.compile(rf"(?:{_NUMBER_BODY})(?:/\d+)?")
_HEDGE = re.compile(r"\bor\b", re.IGNORECASE)
_LATEX_COMMAND = re.compile(r"\\[A-Za-z]+")
_WORD = re.compile(r"[A-Za-z']{3,}")
_MAX_SPAN_CHARS = 500  # longer "answers" are prose, not answers; also bounds parser time


class FinalAnswer(NamedTuple):
    """An answer span found in a text, and how it was found."""

    text: str  # cleaned span
    marker: str  # "boxed" | "answer_line" | "gsm8k" | "last_number" | "whole"


# ----------------------------------------------------------------------------
# Extraction


def last_boxed(text: str) -> str | None:
    """Content of the last `\\boxed{...}` / `\\fbox{...}` (braces balanced, nesting allowed) or `\\boxed 5`, else None.

    The brace-less form takes the text after `\\boxed` up to the next `$` or the end of the line, as
    the MATH dataset's reference code does (`$\\boxed 5$`); an unclosed `\\boxed{` counts as none."""
    found = None
    for match in _BOXED_OPEN.finditer(text):
        start = match.end()
        if start < len(text) and text[start] == "{":
            depth = 1
            for position in range(start + 1, len(text)):
                if text[position] == "{":
                    depth += 1
                elif text[position] == "}":
                    depth -= 1
                    if depth == 0:
                        found = text[start + 1 : position]
                        break
        else:
            end = _BRACELESS_END.search(text, start)
            span = text[start : end.start() if end else len(text)].strip()
            if span:
                found = span
    return found


def _rest_of_line_after_last(pattern: re.Pattern[str], text: str) -> str | None:
    """Text after the last match of `pattern`, up to the end of that line, or None."""
    matches = list(pattern.finditer(text))
    if not matches:
        return None
    return text[matches[-1].end() :].split("\n", 1)[0]


def clean_answer(span: str) -> str:
    """Normalize an answer span: NFKC, Unicode minus, strip `$`, `\\(..\\)`, `**`, spaces, edge punctuation."""
    text = unicodedata.normalize("NFKC", span).replace("\u2212", "-")
    previous = None
    while previous != text:
        previous = text
        text = text.strip().strip("$").strip("*").strip("_").strip()
        text = text.rstrip(".,;:!").lstrip(":").strip()
        for opener, closer in (("\\(", "\\)"), ("\\[", "\\]")):  # LaTeX math delimiters
            if text.startswith(opener) and text.endswith(closer):
                text = text[2:-2]
    return text


def extract_final_answer(text: str) -> FinalAnswer | None:
    """The final answer of a completion (last `\\boxed`, answer line, `####`, else last number)."""
    for marker, finder in (
        ("boxed", last_boxed),
        ("answer_line", lambda t: _rest_of_line_after_last(_ANSWER_LINE, t)),
        ("gsm8k", lambda t: _rest_of_line_after_last(_GSM8K_LINE, t)),
    ):
        span = finder(text)
        if span is not None:
            if marker != "boxed":  # "Answer: 540. Let me check: ..." keeps "540"
                span = _SENTENCE_END.split(span, 1)[0]
            return FinalAnswer(clean_answer(span), marker)
    numbers = _LAST_NUMBER.findall(unicodedata.normalize("NFKC", text).replace("\u2212", "-"))
    if numbers:
        return FinalAnswer(clean_answer(numbers[-1]), "last_number")
    return None


def reference_answer(ground_truth: str) -> str:
    """The answer inside a ground truth: its marked answer if it has one, else the whole text."""
    found = extract_final_answer(ground_truth)
    if found is not None and found.marker != "last_number":
        return found.text
    return clean_answer(ground_truth)


# ----------------------------------------------------------------------------
# Parsing one answer


def plain_number(text: str) -> Decimal | None:
    """The exact value of a plain number (`1,234.5`, `-3`, `1e3`, `540 apples`), else None."""
    match = _PLAIN_NUMBER.fullmatch(text) or _NUMBER_WITH_UNIT.fullmatch(text)
    if match is None or _HEDGE.search(text):
        return None
    body = match.group(1) if match.re is _NUMBER_WITH_UNIT else match.group(0)
    try:
        return Decimal(body.replace(",", ""))
    except InvalidOperation:
        return None


def is_prose(text: str) -> bool:
    """True for words in place of an answer: no digit, and 2+ words of 3+ letters outside LaTeX commands."""
    return not any(c.isdigit() for c in text) and len(_WORD.findall(_LATEX_COMMAND.sub(" ", text))) >= 2


def _math_verify_timeout() -> int | None:
    """math-verify's signal-based timeout works only in the main thread; elsewhere disable it."""
    return 5 if threading.current_thread() is threading.main_thread() else None


def math_parse(text: str) -> list | None:
    """math-verify's parse of `$text$` (or of the bare text), None if unavailable or unparseable."""
    try:
        from math_verify import parse
    except ImportError:
        return None
    timeout = _math_verify_timeout()
    for candidate in (f"${text}$", text):
        parsed = parse(candidate, parsing_timeout=timeout)
        if parsed and not isinstance(parsed[0], str):
            return parsed
    return None


def is_parseable(text: str) -> bool:
    """True when the span is a plain number or a math expression math-verify can parse."""
    if not text or len(text) > _MAX_SPAN_CHARS or _HEDGE.search(text) or is_prose(text):
        return False
    return plain_number(text) is not None or math_parse(text) is not None


# ----------------------------------------------------------------------------
# Equivalence


def _collapse(text: str) -> str:
    return " ".join(text.lower().split())


def answers_equivalent(predicted: str, reference: str) -> bool:
    """True when two cleaned answer spans mean the same value (see the module docstring)."""
    if not predicted or not reference or len(predicted) > _MAX_SPAN_CHARS:
        return False
    if _HEDGE.search(predicted) and not _HEDGE.search(reference):
        return False
    if is_prose(predicted) and not is_prose(reference):
        return False
    predicted_number, reference_number = plain_number(predicted), plain_number(reference)
    if predicted_number is not None and reference_number is not None:
        return predicted_number == reference_number
    predicted_parsed, reference_parsed = math_parse(predicted), math_parse(reference)
    if predicted_parsed is not None and reference_parsed is not None:
        from math_verify import verify

        if verify(reference_parsed, predicted_parsed, timeout_seconds=_math_verify_timeout()):
            return True
    return _collapse(predicted) == _collapse(reference)


def is_correct(completion: str, ground_truth: str, *, marked_only: bool = False) -> bool:
    """True when the completion's final answer is equivalent to the ground truth's; with `marked_only`, only a
    marked answer (`\\boxed`, answer line, `####`) counts, not the last-number fallback."""
    found = extract_final_answer(completion)
    if found is None or (marked_only and found.marker == "last_number"):
        return False
    return answers_equivalent(found.text, reference_answer(ground_truth))


def has_final_answer(completion: str) -> bool:
    """True when the completion marks a final answer (`\\boxed`, answer line, `####`) that parses."""
    found = extract_final_answer(completion)
    return found is not None and found.marker != "last_number" and is_parseable(found.text)
