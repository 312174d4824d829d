r"""Prompt datasets: load and validate jsonl / parquet / Hugging Face data, and render chat prompts.

`load_prompts(path_or_name, split, *, prompt_key, answer_key, answer_format, id_key, subset,
skip_unparsed)` returns a list of `PromptExample`; `load_prompts_from_config(cfg.data, "train" |
"test")` takes all of those from the `data.*` config keys and keeps the records `data.where` selects
(`keep_where`, e.g. {level: [1]}: one difficulty level of the shipped task), for training also those
`data.train_where` selects. Sources:

- a `.jsonl` file, one JSON object per line; blank lines and a UTF-8 BOM are fine;
- a `.parquet` file, in any column layout, verl's included (`prompt` = `[{"role", "content"}]`,
  `reward_model.ground_truth`, `data_source`, `extra_info`);
- a `.json` file holding one array of objects (or JSON lines);
- `builtin:<task>/<split>`: a jsonl file shipped in the package (`dapo_nb.data_files`, e.g.
  `builtin:arithmetic/train`, the default `data.train_path`);
- through `datasets`: a folder written by `datasets.save_to_disk`, a folder of data files
  (`train.jsonl` + `test.jsonl`, or the hub layout `data/train-00000-of-00001.parquet`, or a
  downloaded hub repository whose README lists its configs), or a Hugging Face hub id (needs a
  network). `split` picks the split (slices as in `datasets`: `train[:100]`, `train[10%:]`),
  `subset` the hub config (`main` for `openai/gsm8k`).

Single files are read by us, not by `datasets`: its type inference can change a column's type
(a `ground_truth` column mixing "2" and 4 comes back as integers), hiding the bad line.

Fields (defaults: the seed's schema `{"qid", "prompt", "ground_truth"}`):

- `prompt_key` (`data.prompt_key`, default `prompt`): the question, a non-empty string or a list
  of chat messages `{"role", "content"}` with at least one non-empty user message.
- `answer_key` (`data.answer_key`, default `ground_truth`, which also finds verl's
  `reward_model.ground_truth`; a dotted key reads a nested field): the reference answer, read
  according to `answer_format` (`data.answer_format`):
  `plain` the field is the answer (a non-empty string, kept as is);
  `gsm8k` the text after the last `####` up to the end of its line (GSM8K's `answer` column
  ends in `#### 72`), cleaned like a completion's answer, thousands separators dropped
  (`#### 1,234` -> "1234");
  `boxed` the content of the last `\boxed{...}` / `\fbox{...}` (nested braces fine) or `\boxed 5`
  (MATH's `solution` column), found by `rewards.answer.last_boxed`, the same code that reads
  completions.
  In every format a number (int, float, decimal) is the answer itself, written as its exact
  decimal text: 5 -> "5", 2.5 -> "2.5", 3.0 -> "3", 1e21 -> "1000000000000000000000" (a float is
  read as its shortest round-trip repr, so 0.1 -> "0.1"); bool, NaN and infinity are rejected.
  A text the format finds no answer in is an error naming the record, unless `skip_unparsed`
  (`data.skip_unparsed=true`): such records are then dropped and counted in one warning.
- `id_key` (`data.id_key`, default None = `qid` when a record has one): a string or an integer
  (kept as text), unique. Without one a record gets `"<data_source>-<row>"` (row: the line number
  in jsonl, the row from 1 in tables; verl's files carry `extra_info.index` instead). A named
  `id_key` must be in every record.
- `data_source`: a string naming the record's source; default the file stem or dataset name.
- every other field goes to `PromptExample.extra` (e.g. MATH's `level` and `type`), which reaches
  reward objectives and plugins as `info` and TRL reward functions as columns; so do the prompt and
  answer fields when they have other names (MATH's `problem` and `solution`, GSM8K's `question` and
  `answer`: a function written for the dataset finds them by name), the answer field whole, as the
  record has it, while `ground_truth` holds the answer `answer_format` extracted.

Every record is validated; a bad one raises `DataValidationError` naming `file:line` (or the row)
and the field, with a hint how to fix it. A missing field names the config key to set, the fields
that exist and, when one looks right, a suggestion (`data.prompt_key=question`); a table (parquet,
`datasets`) missing a column fails once, before any row, naming the column list.

`render_prompts(tokenizer, examples, system_prompt)` turns examples into model input text with
the tokenizer's own chat template (`add_generation_prompt=True`), as the seed did for
Qwen-Instruct. Departure from the seed, which sent the bare question: `system_prompt=None` (the
config default) means `DEFAULT_SYSTEM_PROMPT`, which asks for a final `Answer: <number>` line the
rewards can check; `""` sends no system message (the template may then add its own default).
"""

from __future__ import annotations

import json
import re
import warnings
from dataclasses import dataclass, field
from decimal import Decimal
from pathlib import Path
from typing import Any, Iterable, Iterator

from .data_files import resolve as resolve_builtin
from .rewards.answer import clean_answer, last_boxed

# A worked format example works better on small models than a described one: on the embedded
# SmolLM2-135M-Instruct it gets an "Answer:" line in about half of greedy replies (see data/README.md).
DEFAULT_SYSTEM_PROMPT = "Reply with the calculation and the final answer, like this:\n12 + 7 = 19\nAnswer: 19"

# A minimal template for tokenizers that have none (base models): "System/User/Assistant:" turns.
PLAIN_CHAT_TEMPLATE = (
    "{% for message in messages %}{{ message['role'] | capitalize }}: {{ message['content'] }}\n\n{% endfor %}"
    "{% if add_generation_prompt %}Assistant:{% endif %}"
)

CHAT_ROLES = ("system", "user", "assistant", "tool")
ANSWER_FORMATS = ("plain", "gsm8k", "boxed")  # data.answer_format
# Field names common in public datasets, offered as suggestions when a configured key is missing.
_GUESSES = {
    "prompt_key": ("prompt", "question", "problem", "query", "instruction", "input"),
    "answer_key": ("ground_truth", "answer", "solution", "final_answer", "target", "output"),
    "id_key": ("qid", "id", "unique_id", "problem_id", "idx"),
}
_WHAT = {
    "prompt_key": "the question text or chat messages",
    "answer_key": "the reference answer",
    "id_key": "the record id",
}
_THOUSANDS = re.compile(r"[-+]?\d{1,3}(?:,\d{3})+(?:\.\d+)?")
_MISSING = object()
_SPLIT_SLICE = re.compile(r"([^\[\]]+)\[(-?\d+%?)?:(-?\d+%?)?\]")  # train[:100], train[10%:]
_SKIPPED_SHOWN = 5  # skipped records named in the data.skip_unparsed warning


class DataValidationError(ValueError):
    """A prompt dataset record is malformed; the message names the file, line or row, and field."""


@dataclass
class PromptExample:
    """One prompt with its reference answer."""

    qid: str
    prompt: str | list[dict]  # plain text, or chat messages [{"role", "content"}, ...]
    ground_truth: str
    data_source: str = ""  # file stem or dataset name unless the record names its own
    extra: dict = field(default_factory=dict)  # every other key of the record (e.g. "level")


@dataclass(frozen=True)
class Schema:
    """Which fields hold the prompt, the answer and the id, and how the answer is read (the `data.*` keys)."""

    prompt_key: str = "prompt"
    answer_key: str = "ground_truth"
    answer_format: str = "plain"
    id_key: str | None = None
    skip_unparsed: bool = False

    def __post_init__(self) -> None:
        if self.answer_format not in ANSWER_FORMATS:
            raise ValueError(f"answer_format={self.answer_format!r} is not valid; choose one of: {', '.join(ANSWER_FORMATS)}")
        for name in ("prompt_key", "answer_key", "id_key"):
            value = getattr(self, name)
            if not (value is None and name == "id_key") and (not isinstance(value, str) or not value.strip()):
                raise ValueError(f"{name} must be a non-empty field name, got {value!r}")


class _Unparsed(Exception):
    """The answer format found no answer in a record (skipped with data.skip_unparsed=true)."""


# ----------------------------------------------------------------------------
# Answers


def canonical_number(value: int | float | Decimal) -> str:
    """Exact decimal text of a number: 5 -> "5", 2.5 -> "2.5", 3.0 -> "3", 1e21 -> "1000...0", 1e-7 -> "0.0000001".

    A float is read as its shortest round-trip repr (0.1 -> "0.1", not 0.1000000000000000055...).
    Raises ValueError for bool, NaN and infinity."""
    if isinstance(value, bool):
        raise ValueError(f"{value!r} is a boolean, not a number")
    if isinstance(value, int):
        return str(value)
    number = Decimal(repr(value)) if isinstance(value, float) else Decimal(value)
    if not number.is_finite():
        raise ValueError(f"{value!r} is not a finite number")
    text = format(number, "f")
    if "." in text:
        text = text.rstrip("0").rstrip(".")
    return "0" if text in ("-0", "") else text


def extract_answer(text: str, answer_format: str) -> str | None:
    r"""The reference answer inside a dataset's answer text, or None when the format finds none.

    `plain`: the text, stripped. `gsm8k`: after the last `####`, to the end of its line, cleaned
    (`clean_answer`) with thousands separators dropped. `boxed`: the last `\boxed{...}`,
    `\fbox{...}` or `\boxed 5` (`rewards.answer.last_boxed`), stripped."""
    if answer_format == "plain":
        answer = text.strip()
    elif answer_format == "gsm8k":
        if "####" not in text:
            return None
        answer = clean_answer(text.rsplit("####", 1)[1].split("\n", 1)[0])
        if _THOUSANDS.fullmatch(answer):
            answer = answer.replace(",", "")
    elif answer_format == "boxed":
        answer = (last_boxed(text) or "").strip()
    else:
        raise ValueError(f"answer_format={answer_format!r} is not valid; choose one of: {', '.join(ANSWER_FORMATS)}")
    return answer or None


def _unparsed_message(where: str, field_name: str, text: str, answer_format: str) -> str:
    marker = "'#### <answer>' line" if answer_format == "gsm8k" else "\\boxed{...} answer"
    tail = " ".join(text.split())
    tail = tail if len(tail) <= 80 else "..." + tail[-77:]
    return (
        f"{where}: no {marker} in field {field_name!r} (data.answer_format={answer_format}); it ends: {tail!r}. "
        f"Fix the record, choose the data.answer_format that fits ({' | '.join(ANSWER_FORMATS)}), or set "
        "data.skip_unparsed=true to drop such records with a warning"
    )


# ----------------------------------------------------------------------------
# Validating one record


def _type_name(value: Any) -> str:
    return type(value).__name__


def _lookup(record: dict, key: str) -> Any:
    """record[key], else a dotted path into nested objects (`reward_model.ground_truth`), else _MISSING."""
    if key in record:
        return record[key]
    node: Any = record
    for part in key.split("."):
        if not isinstance(node, dict) or part not in node:
            return _MISSING
        node = node[part]
    return node


def _suggestion(config_key: str, missing: str, available: Iterable[str]) -> str:
    available = list(available)
    guess = next((name for name in _GUESSES[config_key] if name in available and name != missing), None)
    return f", e.g. data.{config_key}={guess}" if guess else ""


def _missing_field(where: str, config_key: str, key: str, record: dict, value: Any) -> DataValidationError:
    """A record lacks the field `key` (or it is null): name the config key, the fields there are, a guess."""
    if value is None:
        return DataValidationError(f"{where}: missing field {key!r} (it is null; data.{config_key}: {_WHAT[config_key]})")
    verl = " (or verl's 'reward_model.ground_truth')" if config_key == "answer_key" and key == "ground_truth" else ""
    return DataValidationError(
        f"{where}: missing field {key!r}{verl} (data.{config_key}: {_WHAT[config_key]}); the record has fields "
        f"{sorted(record)}. Fix the record, or set data.{config_key} to the field that holds it{_suggestion(config_key, key, record)}"
    )


def _check_columns(columns: list[str], origin: str, schema: Schema) -> None:
    """A table (parquet, `datasets`) must have the configured columns; one error before any row."""
    wanted = [("prompt_key", schema.prompt_key), ("answer_key", schema.answer_key)]
    if schema.id_key is not None:
        wanted.append(("id_key", schema.id_key))
    for config_key, key in wanted:
        if key in columns or key.split(".", 1)[0] in columns:
            continue
        if config_key == "answer_key" and key == "ground_truth" and "reward_model" in columns:
            continue  # verl's schema
        raise DataValidationError(
            f"{origin}: no column {key!r} (data.{config_key}: {_WHAT[config_key]}); its columns are {list(columns)}. "
            f"Set data.{config_key} to the column that holds it{_suggestion(config_key, key, columns)}"
        )


def _check_messages(messages: list, where: str, key: str) -> list[dict]:
    """Validate a chat-message list and return it as plain dicts."""
    if not messages:
        raise DataValidationError(f"{where}: field {key!r} is an empty message list; give at least one user message")
    checked = []
    for index, message in enumerate(messages):
        at = f"{where}: field '{key}[{index}]'"
        if not isinstance(message, dict):
            raise DataValidationError(f"{at} must be an object {{\"role\", \"content\"}}, got {_type_name(message)}")
        role, content = message.get("role"), message.get("content")
        if role not in CHAT_ROLES:
            raise DataValidationError(f"{at}: 'role' must be one of {list(CHAT_ROLES)}, got {role!r}")
        if not isinstance(content, str):
            raise DataValidationError(f"{at}: 'content' must be a string, got {_type_name(content)}")
        checked.append({"role": role, "content": content})
    if not any(m["role"] == "user" and m["content"].strip() for m in checked):
        raise DataValidationError(f"{where}: field {key!r} has no non-empty user message")
    return checked


def _check_prompt(record: dict, where: str, key: str) -> str | list[dict]:
    """A prompt is a non-empty string or a list of chat messages."""
    value = _lookup(record, key)
    if value is _MISSING or value is None:
        raise _missing_field(where, "prompt_key", key, record, value)
    if isinstance(value, str):
        if not value.strip():
            raise DataValidationError(f"{where}: field {key!r} is empty")
        return value
    if isinstance(value, (list, tuple)):
        return _check_messages(list(value), where, key)
    raise DataValidationError(
        f"{where}: field {key!r} must be a string or a list of {{\"role\", \"content\"}} messages, got {_type_name(value)}"
    )


def _check_ground_truth(record: dict, where: str, schema: Schema) -> str:
    """The answer field (or verl's `reward_model.ground_truth`), read by the answer format; numbers become text."""
    key = schema.answer_key
    value, field_name = _lookup(record, key), key
    reward_model = record.get("reward_model")
    if key == "ground_truth" and value in (_MISSING, None) and isinstance(reward_model, dict) and "ground_truth" in reward_model:
        value, field_name = reward_model["ground_truth"], "reward_model.ground_truth"
    if value is _MISSING or value is None:
        raise _missing_field(where, "answer_key", key, record, value)
    if isinstance(value, (int, float, Decimal)) and not isinstance(value, bool):
        try:
            return canonical_number(value)
        except ValueError:
            raise DataValidationError(f"{where}: field {field_name!r} is {value!r}, not a finite number; give the answer") from None
    if not isinstance(value, str):
        raise DataValidationError(f"{where}: field {field_name!r} must be a string or a number, got {_type_name(value)} {value!r}")
    if not value.strip():
        raise DataValidationError(f"{where}: field {field_name!r} is empty")
    if schema.answer_format == "plain":
        return value
    answer = extract_answer(value, schema.answer_format)
    if answer is None:
        raise _Unparsed(_unparsed_message(where, field_name, value, schema.answer_format))
    return answer


def _check_qid(record: dict, where: str, data_source: str, row: int, id_key: str | None) -> str:
    """A string or integer id; records without one get '<data_source>-<row>' unless data.id_key names a field."""
    key = id_key or "qid"
    value = _lookup(record, key)
    if value is _MISSING or value is None:
        if id_key is None:
            return f"{data_source}-{row}"
        raise _missing_field(where, "id_key", key, record, value)
    if isinstance(value, int) and not isinstance(value, bool):
        return str(value)
    if not isinstance(value, str):
        raise DataValidationError(f"{where}: field {key!r} must be a string or an integer, got {_type_name(value)} {value!r}")
    if not value.strip():
        raise DataValidationError(f"{where}: field {key!r} is empty; remove it to get an automatic id, or give a name")
    return value


def example_from_record(record: Any, where: str, default_source: str, row: int, schema: Schema | None = None) -> PromptExample:
    """Validate one record (our schema, verl's, or the one `schema` names) and build a `PromptExample`.

    Raises DataValidationError; an answer the format cannot find raises it too (`load_prompts` may skip those)."""
    try:
        return _example(record, where, default_source, row, schema or Schema())
    except _Unparsed as error:
        raise DataValidationError(str(error)) from None


def _example(record: Any, where: str, default_source: str, row: int, schema: Schema) -> PromptExample:
    if not isinstance(record, dict):
        raise DataValidationError(f"{where}: each record must be a JSON object, got {_type_name(record)}")
    source = record.get("data_source")
    if source is not None and not isinstance(source, str):
        raise DataValidationError(f"{where}: field 'data_source' must be a string, got {_type_name(source)}")
    source = source or default_source
    # the record's columns stay, under their own names, for reward plugins (TRL passes every column): all but the
    # id and those that become `prompt`, `ground_truth` and `data_source` under these very names
    consumed = {schema.id_key or "qid", "prompt", "ground_truth", "data_source"}
    return PromptExample(
        qid=_check_qid(record, where, source, row, schema.id_key),
        prompt=_check_prompt(record, where, schema.prompt_key),
        ground_truth=_check_ground_truth(record, where, schema),
        data_source=source,
        extra={key: value for key, value in record.items() if key not in consumed},
    )


def _validate_all(records: Iterable[tuple[str, int, Any]], default_source: str, origin: str, schema: Schema) -> list[PromptExample]:
    """Validate (where, row, record) triples, skip or reject unparsed answers, reject duplicate qids and no data."""
    examples: list[PromptExample] = []
    first_seen: dict[str, str] = {}
    skipped: list[str] = []
    for where, row, record in records:
        try:
            example = _example(record, where, default_source, row, schema)
        except _Unparsed as error:
            if not schema.skip_unparsed:
                raise DataValidationError(str(error)) from None
            skipped.append(where)
            continue
        if example.qid in first_seen:
            raise DataValidationError(
                f"{where}: duplicate qid {example.qid!r} (first at {first_seen[example.qid]}); qids must be unique"
            )
        first_seen[example.qid] = where
        examples.append(example)
    if skipped:
        shown = ", ".join(skipped[:_SKIPPED_SHOWN]) + (", ..." if len(skipped) > _SKIPPED_SHOWN else "")
        message = (f"{origin}: skipped {len(skipped)} of {len(skipped) + len(examples)} records with no answer for "
                   f"data.answer_format={schema.answer_format} (data.skip_unparsed=true): {shown}")
        if not examples:
            raise DataValidationError(f"{message}; no examples left. Check data.answer_key and data.answer_format")
        warnings.warn(message, stacklevel=3)
    if not examples:
        raise DataValidationError(f"{origin}: no examples (the data is empty or only blank lines)")
    return examples


# ----------------------------------------------------------------------------
# Readers


def _jsonl_records(path: Path) -> Iterator[tuple[str, int, Any]]:
    """Yield (file:line, line number, parsed object) for each non-blank line."""
    raw = path.read_bytes()
    if raw.startswith(b"\xef\xbb\xbf"):
        raw = raw[3:]
    for line_number, line in enumerate(raw.split(b"\n"), start=1):
        where = f"{path}:{line_number}"
        try:
            text = line.decode("utf-8")
        except UnicodeDecodeError as error:
            raise DataValidationError(f"{where}: not valid UTF-8 ({error.reason} at byte {error.start}); save the file as UTF-8") from None
        if not text.strip():
            continue
        try:
            record = json.loads(text)
        except json.JSONDecodeError as error:
            raise DataValidationError(f"{where}: invalid JSON ({error.msg} at column {error.colno}); each line must be one JSON object") from None
        yield where, line_number, record


def _json_records(path: Path) -> Iterator[tuple[str, int, Any]]:
    """A .json file holding one array of objects (items count from 1), or JSON lines."""
    try:
        parsed = json.loads(path.read_text(encoding="utf-8-sig"))
    except (json.JSONDecodeError, UnicodeDecodeError):
        yield from _jsonl_records(path)  # JSON lines saved as .json; errors then name the line
        return
    if not isinstance(parsed, list):
        raise DataValidationError(f"{path}: expected a JSON array of objects (or one object per line), got {_type_name(parsed)}")
    for item, record in enumerate(parsed, start=1):
        yield f"{path}:item {item}", item, record


def _parquet_records(path: Path, schema: Schema) -> Iterator[tuple[str, int, Any]]:
    """Yield (file:row N, row, record) for each parquet row (rows count from 1, like lines)."""
    import pyarrow.parquet as pq

    try:
        table = pq.read_table(path)
    except Exception as error:  # pyarrow raises several types for corrupt files
        raise DataValidationError(f"{path}: cannot read as parquet ({error})") from None
    _check_columns(table.column_names, str(path), schema)
    for row, record in enumerate(table.to_pylist(), start=1):
        yield f"{path}:row {row}", row, record


def _dataset_records(dataset: Any, origin: str, schema: Schema) -> Iterator[tuple[str, int, Any]]:
    """Yield (origin row N, row, record) for a `datasets.Dataset`."""
    _check_columns(list(dataset.column_names), origin, schema)
    for row, record in enumerate(dataset, start=1):
        yield f"{origin} row {row}", row, record


def _load_hf(path_or_name: str, split: str, subset: str | None) -> tuple[Any, str]:
    """Load a `datasets` split from a save_to_disk folder, a data file/folder, or the hub."""
    import datasets

    path = Path(path_or_name)
    name = f"{path_or_name}:{subset}" if subset else str(path_or_name)
    try:
        if path.is_dir() and ((path / "dataset_dict.json").is_file() or (path / "state.json").is_file()):
            loaded = datasets.load_from_disk(str(path))
            sliced = _SPLIT_SLICE.fullmatch(split)
            name = sliced.group(1) if sliced else split
            if isinstance(loaded, datasets.DatasetDict):
                if name not in loaded:
                    raise DataValidationError(f"{path}: no split {name!r}; available: {sorted(loaded)}")
                loaded = loaded[name]
            if sliced:  # `train[:100]`, `train[10%:]`, as load_dataset reads them
                bounds = [_slice_bound(text, len(loaded)) for text in sliced.group(2, 3)]
                loaded = loaded.select(range(len(loaded))[slice(*bounds)])
            return loaded, f"{path}[{split}]"
        if path.is_file():
            raise DataValidationError(f"{path}: unsupported file type {path.suffix!r}; use .jsonl, .json or .parquet")
        return datasets.load_dataset(str(path_or_name), subset, split=split), f"{name}[{split}]"
    except DataValidationError:
        raise
    except Exception as error:
        text = " ".join(f"{type(error).__name__}: {error}".split()).rstrip(".")  # one line
        lowered = text.lower()
        if "config name is missing" in lowered or "builderconfig" in lowered:
            hint = "Set data.subset to one of the dataset's configs (e.g. data.subset=main for openai/gsm8k)."
        elif "unknown split" in lowered:
            hint = "Set data.train_split / data.test_split to one of its splits."
        else:
            hint = ("Check the path or dataset name; hub datasets need network access (or a local copy saved with "
                    "`Dataset.save_to_disk`, or a downloaded copy of the hub repository).")
        raise DataValidationError(
            f"could not load {path_or_name!r} (split {split!r}" + (f", subset {subset!r}" if subset else "")
            + f") with Hugging Face datasets: {text}. {hint}"
        ) from None


def _slice_bound(text: str | None, size: int) -> int | None:
    """One bound of a split slice: `100`, `-5` or `10%` (of `size`); None when absent."""
    if not text:
        return None
    return round(size * int(text[:-1]) / 100) if text.endswith("%") else int(text)


def _looks_like_path(text: str) -> bool:
    """True when a string is meant as a local path rather than a hub dataset name."""
    return text.startswith((".", "/", "~")) or "\\" in text or Path(text).suffix.lower() in (".jsonl", ".json", ".parquet")


# ----------------------------------------------------------------------------
# Public API


def load_prompts(
    path_or_name: str | Path,
    split: str = "train",
    *,
    prompt_key: str = "prompt",
    answer_key: str = "ground_truth",
    answer_format: str = "plain",
    id_key: str | None = None,
    subset: str | None = None,
    skip_unparsed: bool = False,
) -> list[PromptExample]:
    """Load and validate prompts from a jsonl/json/parquet file, a datasets folder, or a hub dataset name.

    The keyword arguments are the `data.*` config keys of the same names (see the module docstring);
    `split` and `subset` matter only for what `datasets` reads."""
    schema = Schema(prompt_key, answer_key, answer_format, id_key, skip_unparsed)
    path_or_name = resolve_builtin(path_or_name)  # builtin:<task>/<split> -> the file shipped in the package
    path = Path(path_or_name).expanduser()
    if not path.exists() and (isinstance(path_or_name, Path) or _looks_like_path(str(path_or_name))):
        raise FileNotFoundError(f"prompt file {str(path_or_name)!r} does not exist (resolved to {path.resolve()})")
    if path.is_file() and path.suffix.lower() == ".jsonl":
        return _validate_all(_jsonl_records(path), path.stem, str(path), schema)
    if path.is_file() and path.suffix.lower() == ".json":
        return _validate_all(_json_records(path), path.stem, str(path), schema)
    if path.is_file() and path.suffix.lower() == ".parquet":
        return _validate_all(_parquet_records(path, schema), path.stem, str(path), schema)
    dataset, origin = _load_hf(str(path) if path.exists() else str(path_or_name), split, subset)
    default_source = path.stem if path.exists() else str(path_or_name)
    return _validate_all(_dataset_records(dataset, origin, schema), default_source, origin, schema)


def load_prompts_from_config(data: Any, which: str = "train") -> list[PromptExample]:
    """`load_prompts` of `data.train_path` (which="train") or `data.test_path` (which="test") with every `data.*` key,
    then `keep_where(..., data.where)` and, for training, `keep_where(..., data.train_where)`.

    `data` is a `config.DataConfig` (`cfg.data`)."""
    if which not in ("train", "test"):
        raise ValueError(f"which={which!r} must be 'train' or 'test'")
    path = data.train_path if which == "train" else data.test_path
    examples = load_prompts(
        path,
        data.train_split if which == "train" else data.test_split,
        prompt_key=data.prompt_key,
        answer_key=data.answer_key,
        answer_format=data.answer_format,
        id_key=data.id_key,
        subset=data.subset,
        skip_unparsed=data.skip_unparsed,
    )
    examples = keep_where(examples, data.where, str(path))
    if which == "train":
        examples = keep_where(examples, data.train_where, str(path), key="data.train_where")
    return examples


def keep_where(examples: list[PromptExample], where: dict, origin: str, key: str = "data.where") -> list[PromptExample]:
    """The examples whose fields have the values `where` asks for (`key`: {field: value or [values]}), in order.

    A field is looked up in the record's other fields (`extra`, e.g. `level`) or `data_source`; a value matches when
    equal or equal as text (`level: 1` matches 1 and "1"). A record without the field, or nothing left, is an error
    naming `origin`, the field and what there is, not a silently smaller run."""
    for name, wanted in where.items():
        allowed = {str(value) for value in (wanted if isinstance(wanted, list) else [wanted])}
        kept, seen = [], set()
        for example in examples:
            value = example.data_source if name == "data_source" else example.extra.get(name, _MISSING)
            if value is _MISSING:
                fields = ", ".join(sorted(example.extra)) or "none"
                raise DataValidationError(f"{origin}: qid {example.qid!r} has no field {name!r} for {key} (its other "
                                          f"fields: {fields}); fix {key} or the data")
            seen.add(str(value))
            if str(value) in allowed:
                kept.append(example)
        if not kept:
            raise DataValidationError(f"{origin}: {key} {name}={wanted!r} keeps none of its {len(examples)} records; "
                                      f"{name} there is one of: {', '.join(sorted(seen)[:20])}")
        examples = kept
    return examples


def resolve_system_prompt(system_prompt: str | None) -> str | None:
    """None means `DEFAULT_SYSTEM_PROMPT`; "" means no system message; any other text is used as is."""
    if system_prompt is None:
        return DEFAULT_SYSTEM_PROMPT
    return system_prompt or None


def to_chat_messages(example: PromptExample, system_prompt: str | None = None) -> list[dict]:
    """The example as chat messages, the system prompt first unless the example has its own."""
    system_prompt = resolve_system_prompt(system_prompt)
    if isinstance(example.prompt, str):
        messages = [{"role": "user", "content": example.prompt}]
    else:
        messages = [dict(message) for message in example.prompt]
    if system_prompt and messages[0]["role"] != "system":
        messages.insert(0, {"role": "system", "content": system_prompt})
    return messages


def render_prompts(tokenizer: Any, examples: Iterable[PromptExample], system_prompt: str | None = None) -> list[str]:
    """Model input text for each example via `tokenizer.apply_chat_template(..., add_generation_prompt=True)`."""
    if not getattr(tokenizer, "chat_template", None):
        name = getattr(tokenizer, "name_or_path", "") or type(tokenizer).__name__
        raise ValueError(
            f"tokenizer {name!r} has no chat template (a base model?). Use an instruct model such as the embedded "
            "SmolLM2-135M-Instruct or Qwen/Qwen2.5-1.5B-Instruct, or give it a plain 'User: ... Assistant:' format "
            "(best with system_prompt=''): `tokenizer.chat_template = dapo_nb.data.PLAIN_CHAT_TEMPLATE`."
        )
    rendered = []
    for example in examples:
        try:
            text = tokenizer.apply_chat_template(to_chat_messages(example, system_prompt), tokenize=False, add_generation_prompt=True)
        except Exception as error:  # jinja raises TemplateError, e.g. "System role not supported"
            hint = " (this template may not accept a system message; try system_prompt='')" if system_prompt != "" else ""
            raise ValueError(f"chat template failed on qid {example.qid!r}: {error}{hint}") from error
        rendered.append(text)
    return rendered


def question_text(example) -> str:
    """The user's text of a prompt (the last user message of a chat prompt)."""
    if isinstance(example.prompt, str):
        return example.prompt
    return next((m["content"] for m in reversed(example.prompt) if m.get("role") == "user"), "")


def evenly_spread(examples: list, count: int) -> list:
    """`count` examples spread evenly over the list, first and last included (all of them when count is 0 or more
    than there are). Held-out files are often ordered by difficulty (the shipped test split: 50 each of levels 1, 2,
    3), so a capped evaluation takes a spread, not the first `count`."""
    if not count or count >= len(examples):
        return list(examples)
    if count == 1:
        return [examples[0]]
    last = len(examples) - 1
    return [examples[round(i * last / (count - 1))] for i in range(count)]
