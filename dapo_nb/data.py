"""Prompt datasets: load and validate jsonl / parquet / Hugging Face data, and render chat prompts.

`load_prompts(path_or_name)` returns a list of `PromptExample` from any of

- a `.jsonl` file in the seed's schema, one `{"qid", "prompt", "ground_truth"}` object per line
  (other keys are kept in `PromptExample.extra`); blank lines and a UTF-8 BOM are fine;
- a `.parquet` file in the same schema or in verl's (`prompt` = `[{"role", "content"}]`,
  `reward_model.ground_truth`, `data_source`, `extra_info`);
- a `.json` file holding one array of such objects (or JSON lines);
- a folder written by `datasets.save_to_disk`, a folder of data files (e.g. `train.jsonl` and
  `test.jsonl`), or a Hugging Face dataset name, read through `datasets` (`split` picks the split).

Single files are read by us, not by `datasets`: its type inference can change a column's type
(a `ground_truth` column mixing "2" and 4 comes back as integers), hiding the bad line.

Every record is validated; a bad one raises `DataValidationError` naming `file:line` (or the row)
and the field, with a hint how to fix it. Rules: `prompt` is a non-empty string or a list of chat
messages `{"role", "content"}` with at least one non-empty user message; `ground_truth` is a
non-empty string, top-level or verl's `reward_model.ground_truth` (numbers are rejected, not
converted: `str()` of a float turns 1e21 into "1e+21" and 3.0 into "3.0", silently changing the
answer a reward compares against, so the file must spell the answer out); `qid` is a string
or an integer (kept as text) and unique; when a record has no `qid`, it gets
`"<data_source>-<row>"` (verl's files have none, they carry `extra_info.index` instead).

`render_prompts(tokenizer, examples, system_prompt)` turns examples into model input text with
the tokenizer's own chat template (`add_generation_prompt=True`), as the seed did for
Qwen-Instruct. Departure from the seed, which sent the bare question: `system_prompt=None` (the
config default) means `DEFAULT_SYSTEM_PROMPT`, which asks for a final `Answer: <number>` line the
rewards can check; `""` sends no system message (the template may then add its own default).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, Iterator

# A worked format example works better on small models than a described one: on the embedded
# SmolLM2-135M-Instruct it gets an "Answer:" line in about half of greedy replies (see data/README.md).
DEFAULT_SYSTEM_PROMPT = "Reply with the calculation and the final answer, like this:\n12 + 7 = 19\nAnswer: 19"

# A minimal template for tokenizers that have none (base models): "System/User/Assistant:" turns.
PLAIN_CHAT_TEMPLATE = (
    "{% for message in messages %}{{ message['role'] | capitalize }}: {{ message['content'] }}\n\n{% endfor %}"
    "{% if add_generation_prompt %}Assistant:{% endif %}"
)

CHAT_ROLES = ("system", "user", "assistant", "tool")
RESERVED_KEYS = ("qid", "prompt", "ground_truth", "data_source")


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


# ----------------------------------------------------------------------------
# Validating one record


def _type_name(value: Any) -> str:
    return type(value).__name__


def _check_messages(messages: list, where: str) -> list[dict]:
    """Validate a chat-message list and return it as plain dicts."""
    if not messages:
        raise DataValidationError(f"{where}: field 'prompt' is an empty message list; give at least one user message")
    checked = []
    for index, message in enumerate(messages):
        at = f"{where}: field 'prompt[{index}]'"
        if not isinstance(message, dict):
            raise DataValidationError(f"{at} must be an object {{\"role\", \"content\"}}, got {_type_name(message)}")
        role, content = message.get("role"), message.get("content")
        if role not in CHAT_ROLES:
            raise DataValidationError(f"{at}: 'role' must be one of {list(CHAT_ROLES)}, got {role!r}")
        if not isinstance(content, str):
            raise DataValidationError(f"{at}: 'content' must be a string, got {_type_name(content)}")
        checked.append({"role": role, "content": content})
    if not any(m["role"] == "user" and m["content"].strip() for m in checked):
        raise DataValidationError(f"{where}: field 'prompt' has no non-empty user message")
    return checked


def _check_prompt(value: Any, where: str) -> str | list[dict]:
    """A prompt is a non-empty string or a list of chat messages."""
    if value is None:
        raise DataValidationError(f"{where}: missing field 'prompt' (the question text, or a list of chat messages)")
    if isinstance(value, str):
        if not value.strip():
            raise DataValidationError(f"{where}: field 'prompt' is empty")
        return value
    if isinstance(value, (list, tuple)):
        return _check_messages(list(value), where)
    raise DataValidationError(
        f"{where}: field 'prompt' must be a string or a list of {{\"role\", \"content\"}} messages, got {_type_name(value)}"
    )


def _check_ground_truth(record: dict, where: str) -> str:
    """Take `ground_truth`, or verl's `reward_model.ground_truth`; it must be a non-empty string."""
    value = record.get("ground_truth")
    reward_model = record.get("reward_model")
    if value is None and isinstance(reward_model, dict):
        value, field_name = reward_model.get("ground_truth"), "reward_model.ground_truth"
    else:
        field_name = "ground_truth"
    if value is None:
        raise DataValidationError(f"{where}: missing field 'ground_truth' (or verl's 'reward_model.ground_truth')")
    if isinstance(value, bool) or not isinstance(value, str):
        hint = f'; write it as a string, e.g. "{value}"' if isinstance(value, (int, float)) and not isinstance(value, bool) else ""
        raise DataValidationError(f"{where}: field '{field_name}' must be a string, got {_type_name(value)} {value!r}{hint}")
    if not value.strip():
        raise DataValidationError(f"{where}: field '{field_name}' is empty")
    return value


def _check_qid(record: dict, where: str, data_source: str, row: int) -> str:
    """A string or integer id; records without one get '<data_source>-<row>'."""
    value = record.get("qid")
    if value is None:
        return f"{data_source}-{row}"
    if isinstance(value, int) and not isinstance(value, bool):
        return str(value)
    if not isinstance(value, str):
        raise DataValidationError(f"{where}: field 'qid' must be a string or an integer, got {_type_name(value)} {value!r}")
    if not value.strip():
        raise DataValidationError(f"{where}: field 'qid' is empty; remove it to get an automatic id, or give a name")
    return value


def example_from_record(record: Any, where: str, default_source: str, row: int) -> PromptExample:
    """Validate one record (our schema or verl's) and build a `PromptExample`."""
    if not isinstance(record, dict):
        raise DataValidationError(f"{where}: each record must be a JSON object, got {_type_name(record)}")
    source = record.get("data_source")
    if source is not None and not isinstance(source, str):
        raise DataValidationError(f"{where}: field 'data_source' must be a string, got {_type_name(source)}")
    source = source or default_source
    return PromptExample(
        qid=_check_qid(record, where, source, row),
        prompt=_check_prompt(record.get("prompt"), where),
        ground_truth=_check_ground_truth(record, where),
        data_source=source,
        extra={key: value for key, value in record.items() if key not in RESERVED_KEYS},
    )


def _validate_all(records: Iterable[tuple[str, int, Any]], default_source: str, origin: str) -> list[PromptExample]:
    """Validate (where, row, record) triples, reject duplicate qids and an empty dataset."""
    examples: list[PromptExample] = []
    first_seen: dict[str, str] = {}
    for where, row, record in records:
        example = example_from_record(record, where, default_source, row)
        if example.qid in first_seen:
            raise DataValidationError(
                f"{where}: duplicate qid {example.qid!r} (first at {first_seen[example.qid]}); qids must be unique"
            )
        first_seen[example.qid] = where
        examples.append(example)
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


def _parquet_records(path: Path) -> Iterator[tuple[str, int, Any]]:
    """Yield (file:row N, row, record) for each parquet row (rows count from 1, like lines)."""
    import pyarrow.parquet as pq

    try:
        table = pq.read_table(path)
    except Exception as error:  # pyarrow raises several types for corrupt files
        raise DataValidationError(f"{path}: cannot read as parquet ({error})") from None
    for row, record in enumerate(table.to_pylist(), start=1):
        yield f"{path}:row {row}", row, record


def _dataset_records(dataset: Any, origin: str) -> Iterator[tuple[str, int, Any]]:
    """Yield (origin row N, row, record) for a `datasets.Dataset`."""
    for row, record in enumerate(dataset, start=1):
        yield f"{origin} row {row}", row, record


def _load_hf(path_or_name: str, split: str) -> tuple[Any, str]:
    """Load a `datasets` split from a save_to_disk folder, a data file/folder, or the hub."""
    import datasets

    path = Path(path_or_name)
    try:
        if path.is_dir() and ((path / "dataset_dict.json").is_file() or (path / "state.json").is_file()):
            loaded = datasets.load_from_disk(str(path))
            if isinstance(loaded, datasets.DatasetDict):
                if split not in loaded:
                    raise DataValidationError(f"{path}: no split {split!r}; available: {sorted(loaded)}")
                loaded = loaded[split]
            return loaded, f"{path}[{split}]"
        if path.is_file():
            raise DataValidationError(f"{path}: unsupported file type {path.suffix!r}; use .jsonl, .json or .parquet")
        return datasets.load_dataset(str(path_or_name), split=split), f"{path_or_name}[{split}]"
    except DataValidationError:
        raise
    except Exception as error:
        raise DataValidationError(
            f"could not load {path_or_name!r} (split {split!r}) with Hugging Face datasets: {type(error).__name__}: {error}. "
            "Check the path or dataset name; hub datasets need network access (or a local copy saved with "
            "`Dataset.save_to_disk`)."
        ) from None


def _looks_like_path(text: str) -> bool:
    """True when a string is meant as a local path rather than a hub dataset name."""
    return text.startswith((".", "/", "~")) or "\\" in text or Path(text).suffix.lower() in (".jsonl", ".json", ".parquet")


# ----------------------------------------------------------------------------
# Public API


def load_prompts(path_or_name: str | Path, split: str = "train") -> list[PromptExample]:
    """Load and validate prompts from a jsonl/json/parquet file, a datasets folder, or a hub dataset name."""
    path = Path(path_or_name).expanduser()
    if not path.exists() and (isinstance(path_or_name, Path) or _looks_like_path(str(path_or_name))):
        raise FileNotFoundError(f"prompt file {str(path_or_name)!r} does not exist (resolved to {path.resolve()})")
    if path.is_file() and path.suffix.lower() == ".jsonl":
        return _validate_all(_jsonl_records(path), path.stem, str(path))
    if path.is_file() and path.suffix.lower() == ".json":
        return _validate_all(_json_records(path), path.stem, str(path))
    if path.is_file() and path.suffix.lower() == ".parquet":
        return _validate_all(_parquet_records(path), path.stem, str(path))
    dataset, origin = _load_hf(str(path) if path.exists() else str(path_or_name), split)
    default_source = path.stem if path.exists() else str(path_or_name)
    return _validate_all(_dataset_records(dataset, origin), default_source, origin)


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
