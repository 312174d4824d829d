r"""Datasets researchers use: GSM8K's and MATH's schemas from jsonl, parquet and `datasets` folders, through the
`data.*` config keys (prompt_key, answer_key, answer_format, id_key, subset, train_split / test_split,
skip_unparsed); numeric ground truths; every error message; and that the reward compares what the loader extracts.

Everything is built in tmp_path; the hub is never contacted (offline flags set for each test)."""

from __future__ import annotations

import json
import warnings
from decimal import Decimal
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from dapo_nb.config import ConfigError, load_config
from dapo_nb.data import (
    DataValidationError,
    PromptExample,
    canonical_number,
    extract_answer,
    load_prompts,
    load_prompts_from_config,
)
from dapo_nb.rewards.answer import extract_final_answer, has_final_answer, is_correct, last_boxed

GSM8K_ROWS = [
    {"question": "Natalia sold clips to 48 friends in April, and half as many in May. How many in all?",
     "answer": "In May she sold 48/2 = <<48/2=24>>24 clips.\nIn total 48+24 = <<48+24=72>>72.\n#### 72"},
    {"question": "A shop sells 1,000 pens a day for 1.234 days. How many?",
     "answer": "It sells 1,000 * 1.234 = 1,234 pens.\n#### 1,234"},
    {"question": "How far below zero?", "answer": "The value is 3 - 8 = -5.\n#### -5"},
]
MATH_ROWS = [
    {"problem": "What is $\\frac{1}{2} + \\frac{1}{4}$?", "solution": "We get $\\boxed{\\frac{3}{4}}$.",
     "level": "Level 1", "type": "Prealgebra"},
    {"problem": "Simplify $\\sqrt{8}$.", "solution": "First \\boxed{2}, no: $\\sqrt{8} = \\boxed{2\\sqrt{2}}$.",
     "level": "Level 2", "type": "Algebra"},
    {"problem": "Compute $2 + 3$.", "solution": "So the answer is $\\boxed 5$.", "level": "Level 1", "type": "Prealgebra"},
    {"problem": "Find the set.", "solution": "The set is $\\fbox{\\{1, {2}\\}}$.", "level": "Level 3", "type": "Algebra"},
]
GSM8K_KEYS = ["data.prompt_key=question", "data.answer_key=answer", "data.answer_format=gsm8k"]
MATH_KEYS = ["data.prompt_key=problem", "data.answer_key=solution", "data.answer_format=boxed"]


@pytest.fixture(autouse=True)
def offline(monkeypatch, tmp_path):
    """No network (the flags as `datasets` and `huggingface_hub` read them after import), `datasets`' cache in tmp_path."""
    import datasets
    import huggingface_hub.constants

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")
    monkeypatch.setattr(datasets.config, "HF_HUB_OFFLINE", True)
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)
    monkeypatch.setattr(datasets.config, "HF_DATASETS_CACHE", tmp_path / "hf-cache")


def write_jsonl(path: Path, rows: list, raw_lines: dict[int, str] | None = None) -> Path:
    """rows as JSON lines; raw_lines replaces line N (from 1) by a literal text."""
    lines = [json.dumps(row) for row in rows]
    for number, text in (raw_lines or {}).items():
        lines[number - 1] = text
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def write_parquet(path: Path, rows: list[dict]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    pq.write_table(pa.Table.from_pylist(rows), path)
    return path


def from_config(overrides: list[str], which: str = "train") -> list[PromptExample]:
    return load_prompts_from_config(load_config(None, overrides).data, which)


def assert_gsm8k(examples: list[PromptExample], source: str) -> None:
    assert [e.ground_truth for e in examples] == ["72", "1234", "-5"]
    assert [e.qid for e in examples] == [f"{source}-1", f"{source}-2", f"{source}-3"]
    assert examples[0].prompt == GSM8K_ROWS[0]["question"] and examples[0].data_source == source
    # the question and the full solution stay, under their names, for reward plugins
    assert examples[1].extra == {"question": GSM8K_ROWS[1]["question"], "answer": GSM8K_ROWS[1]["answer"]}


def assert_math(examples: list[PromptExample]) -> None:
    assert [e.ground_truth for e in examples] == ["\\frac{3}{4}", "2\\sqrt{2}", "5", "\\{1, {2}\\}"]
    assert examples[1].prompt == "Simplify $\\sqrt{8}$."
    assert examples[1].extra == {"problem": MATH_ROWS[1]["problem"], "level": "Level 2", "type": "Algebra",
                                 "solution": MATH_ROWS[1]["solution"]}


# ----------------------------------------------------------------------------
# GSM8K's and MATH's schemas in every container, through the config keys


def test_gsm8k_jsonl_and_parquet(tmp_path):
    jsonl = write_jsonl(tmp_path / "gsm8k.jsonl", GSM8K_ROWS)
    assert_gsm8k(from_config([f"data.train_path={jsonl}", *GSM8K_KEYS]), "gsm8k")
    parquet = write_parquet(tmp_path / "gsm8k_train.parquet", GSM8K_ROWS)
    assert_gsm8k(from_config([f"data.train_path={parquet}", *GSM8K_KEYS]), "gsm8k_train")


def test_math_jsonl_and_parquet_keep_level_and_type(tmp_path):
    jsonl = write_jsonl(tmp_path / "math.jsonl", MATH_ROWS)
    assert_math(from_config([f"data.train_path={jsonl}", *MATH_KEYS]))
    parquet = write_parquet(tmp_path / "math.parquet", MATH_ROWS)
    assert_math(from_config([f"data.train_path={parquet}", *MATH_KEYS]))


def test_save_to_disk_folder_with_train_and_test_splits(tmp_path):
    import datasets

    folder = tmp_path / "gsm8k_local"
    datasets.DatasetDict({
        "train": datasets.Dataset.from_list(GSM8K_ROWS),
        "test": datasets.Dataset.from_list(GSM8K_ROWS[:1]),
    }).save_to_disk(folder)
    keys = [f"data.train_path={folder}", f"data.test_path={folder}", *GSM8K_KEYS]
    assert_gsm8k(from_config(keys), "gsm8k_local")
    (test,) = from_config(keys, "test")  # data.test_split=test is the default for test_path
    assert test.ground_truth == "72"
    assert [e.ground_truth for e in from_config([*keys, "data.train_split=train[1:]"])] == ["1234", "-5"]
    assert [e.ground_truth for e in from_config([*keys, "data.train_split=train[:-2]"])] == ["72"]
    with pytest.raises(DataValidationError, match=r"no split 'validation'; available: \['test', 'train'\]"):
        from_config([*keys, "data.test_split=validation"], "test")
    single = tmp_path / "math_single"
    datasets.Dataset.from_list(MATH_ROWS).save_to_disk(single)  # one Dataset, no splits
    assert_math(from_config([f"data.train_path={single}", *MATH_KEYS]))


def test_folder_in_hub_layout_with_configs(tmp_path):
    """A downloaded copy of openai/gsm8k: main/ and socratic/ configs listed in the README's YAML header."""
    repo = tmp_path / "gsm8k"
    write_parquet(repo / "main" / "train-00000-of-00001.parquet", GSM8K_ROWS)
    write_parquet(repo / "main" / "test-00000-of-00001.parquet", GSM8K_ROWS[2:])
    write_parquet(repo / "socratic" / "train-00000-of-00001.parquet", GSM8K_ROWS[:1])
    write_parquet(repo / "socratic" / "test-00000-of-00001.parquet", GSM8K_ROWS[:1])
    configs = "".join(
        f"- config_name: {name}\n  data_files:\n  - split: train\n    path: {name}/train-*\n  - split: test\n    path: {name}/test-*\n"
        for name in ("main", "socratic")
    )
    (repo / "README.md").write_text(f"---\nconfigs:\n{configs}---\n# GSM8K\n")
    keys = [f"data.train_path={repo}", f"data.test_path={repo}", "data.subset=main", *GSM8K_KEYS]
    assert_gsm8k(from_config(keys), "gsm8k")
    assert [e.ground_truth for e in from_config(keys, "test")] == ["-5"]
    assert [e.qid for e in from_config([*keys[:2], "data.subset=socratic", *GSM8K_KEYS])] == ["gsm8k-1"]
    with pytest.raises(DataValidationError, match=r"Config name is missing.*Set data\.subset to one of the dataset's configs"):
        from_config([*keys[:2], *GSM8K_KEYS])
    with pytest.raises(DataValidationError, match=r"subset 'nope'.*Set data\.subset"):
        from_config([*keys[:2], "data.subset=nope", *GSM8K_KEYS])
    with pytest.raises(DataValidationError, match=r"split 'dev'.*Set data\.train_split / data\.test_split"):
        from_config([*keys, "data.train_split=dev"])


def test_plain_data_folder_in_hub_layout(tmp_path):
    """push_to_hub's default layout, data/<split>-00000-of-00001.parquet, needs no README."""
    repo = tmp_path / "math_repo"
    write_parquet(repo / "data" / "train-00000-of-00001.parquet", MATH_ROWS)
    write_parquet(repo / "data" / "test-00000-of-00001.parquet", MATH_ROWS[:2])
    keys = [f"data.train_path={repo}", f"data.test_path={repo}", *MATH_KEYS]
    assert_math(from_config(keys))
    assert len(from_config(keys, "test")) == 2


def test_defaults_keep_the_seed_schema(tmp_path):
    cfg = load_config(None, [])
    assert (cfg.data.prompt_key, cfg.data.answer_key, cfg.data.answer_format, cfg.data.id_key) == ("prompt", "ground_truth", "plain", None)
    train = load_prompts_from_config(cfg.data)
    assert len(train) == 1000 and train[0].qid.startswith("arith-") and "ground_truth" not in train[0].extra
    path = write_jsonl(tmp_path / "seed.jsonl", [{"qid": "a", "prompt": "1 + 1?", "ground_truth": "2", "level": 1}])
    assert from_config([f"data.train_path={path}"]) == [PromptExample("a", "1 + 1?", "2", "seed", {"level": 1})]


def test_id_key_names_the_id_field_and_qids_are_generated_otherwise(tmp_path):
    rows = [{"id": f"p{i}", **row} for i, row in enumerate(MATH_ROWS)]
    path = write_jsonl(tmp_path / "with_ids.jsonl", rows)
    examples = from_config([f"data.train_path={path}", "data.id_key=id", *MATH_KEYS])
    assert [e.qid for e in examples] == ["p0", "p1", "p2", "p3"] and "id" not in examples[0].extra
    examples = from_config([f"data.train_path={path}", *MATH_KEYS])  # no id_key: <source>-<line>, `id` kept as extra
    assert examples[0].qid == "with_ids-1" and examples[0].extra["id"] == "p0"
    with pytest.raises(DataValidationError, match=r"with_ids\.jsonl:1: missing field 'uid' \(data\.id_key: the record id\).*e\.g\. data\.id_key=id"):
        from_config([f"data.train_path={path}", "data.id_key=uid", *MATH_KEYS])
    dup = write_jsonl(tmp_path / "dup.jsonl", [rows[0], rows[1], rows[0]])
    with pytest.raises(DataValidationError, match=r"dup\.jsonl:3: duplicate qid 'p0'"):
        from_config([f"data.train_path={dup}", "data.id_key=id", *MATH_KEYS])


def test_dotted_answer_key_reads_a_nested_field(tmp_path):
    path = write_parquet(tmp_path / "nested.parquet", [{"question": "2 + 2?", "meta": {"answer": "4", "source": "toy"}}])
    (example,) = from_config([f"data.train_path={path}", "data.prompt_key=question", "data.answer_key=meta.answer"])
    assert example.ground_truth == "4" and example.extra == {"question": "2 + 2?", "meta": {"answer": "4", "source": "toy"}}


# ----------------------------------------------------------------------------
# Numeric ground truths


@pytest.mark.parametrize(
    "value, text",
    [(5, "5"), (-12, "-12"), (2.5, "2.5"), (3.0, "3"), (0.1, "0.1"), (-0.0, "0"), (1e21, "1000000000000000000000"),
     (1e-7, "0.0000001"), (123456789012345678901234567890, "123456789012345678901234567890"),
     (Decimal("1.50"), "1.5"), (Decimal("1E+3"), "1000")],
)
def test_canonical_number(value, text):
    assert canonical_number(value) == text


@pytest.mark.parametrize("value", [True, float("nan"), float("inf"), Decimal("NaN")])
def test_canonical_number_rejects_bool_nan_and_infinity(value):
    with pytest.raises(ValueError):
        canonical_number(value)


def test_numeric_ground_truths_in_jsonl_parquet_and_datasets(tmp_path):
    import datasets

    rows = [{"qid": "a", "prompt": "5?", "ground_truth": 5}, {"qid": "b", "prompt": "2.5?", "ground_truth": 2.5},
            {"qid": "c", "prompt": "1e21?", "ground_truth": 1e21}]
    expected = ["5", "2.5", "1000000000000000000000"]
    assert [e.ground_truth for e in load_prompts(write_jsonl(tmp_path / "n.jsonl", rows))] == expected
    # parquet: one column has one type, so ints and floats live in separate files here
    assert [e.ground_truth for e in load_prompts(write_parquet(tmp_path / "i.parquet", rows[:1]))] == ["5"]
    assert [e.ground_truth for e in load_prompts(write_parquet(tmp_path / "f.parquet", rows[1:]))] == expected[1:]
    decimal_table = pa.table({"prompt": ["x?"], "ground_truth": pa.array([Decimal("12.50")], pa.decimal128(6, 2))})
    pq.write_table(decimal_table, tmp_path / "d.parquet")
    assert load_prompts(tmp_path / "d.parquet")[0].ground_truth == "12.5"
    datasets.Dataset.from_list([{"question": "How many?", "answer": 1234}]).save_to_disk(tmp_path / "ds")
    (example,) = from_config([f"data.train_path={tmp_path / 'ds'}", *GSM8K_KEYS])  # a number needs no '####'
    assert example.ground_truth == "1234"


@pytest.mark.parametrize(
    "raw, message",
    [('{"prompt": "x?", "ground_truth": true}', "field 'ground_truth' must be a string or a number, got bool True"),
     ('{"prompt": "x?", "ground_truth": NaN}', "field 'ground_truth' is nan, not a finite number"),
     ('{"prompt": "x?", "ground_truth": -Infinity}', "field 'ground_truth' is -inf, not a finite number"),
     ('{"question": "x?", "answer": false}', "field 'answer' must be a string or a number, got bool False")],
)
def test_bad_numeric_ground_truth_names_file_and_line(tmp_path, raw, message):
    keys = GSM8K_KEYS if "question" in raw else []
    good = {"question": "1?", "answer": "#### 1"} if keys else {"prompt": "1?", "ground_truth": 1}
    path = write_jsonl(tmp_path / "numbers.jsonl", [good, good, good], raw_lines={2: raw})
    with pytest.raises(DataValidationError) as caught:
        from_config([f"data.train_path={path}", *keys])
    assert f"{path}:2: {message}" in str(caught.value)


# ----------------------------------------------------------------------------
# Error messages


def test_missing_column_in_a_table_names_dataset_key_columns_and_config_key(tmp_path):
    import datasets

    parquet = write_parquet(tmp_path / "math.parquet", MATH_ROWS)
    with pytest.raises(DataValidationError) as caught:
        from_config([f"data.train_path={parquet}"])  # defaults: prompt / ground_truth
    assert str(caught.value) == (
        f"{parquet}: no column 'prompt' (data.prompt_key: the question text or chat messages); its columns are "
        "['problem', 'solution', 'level', 'type']. Set data.prompt_key to the column that holds it, e.g. data.prompt_key=problem"
    )
    with pytest.raises(DataValidationError, match=r"no column 'ground_truth' \(data\.answer_key: the reference answer\); its "
                                                  r"columns are \['problem', 'solution', 'level', 'type'\]\. Set data\.answer_key "
                                                  r"to the column that holds it, e\.g\. data\.answer_key=solution"):
        from_config([f"data.train_path={parquet}", "data.prompt_key=problem"])
    datasets.Dataset.from_list(GSM8K_ROWS).save_to_disk(tmp_path / "ds")
    with pytest.raises(DataValidationError) as caught:
        from_config([f"data.train_path={tmp_path / 'ds'}", "data.prompt_key=query", "data.answer_key=answer"])
    assert str(caught.value).startswith(f"{tmp_path / 'ds'}[train]: no column 'query' (data.prompt_key")
    assert "its columns are ['question', 'answer']" in str(caught.value) and "e.g. data.prompt_key=question" in str(caught.value)


def test_missing_field_in_jsonl_names_line_fields_and_config_key(tmp_path):
    path = write_jsonl(tmp_path / "gsm8k.jsonl", GSM8K_ROWS)
    with pytest.raises(DataValidationError) as caught:
        from_config([f"data.train_path={path}"])
    assert str(caught.value) == (
        f"{path}:1: missing field 'prompt' (data.prompt_key: the question text or chat messages); the record has fields "
        "['answer', 'question']. Fix the record, or set data.prompt_key to the field that holds it, e.g. data.prompt_key=question"
    )
    with pytest.raises(DataValidationError, match=r"gsm8k\.jsonl:1: missing field 'ground_truth' \(or verl's 'reward_model\.ground_truth'\) "
                                                  r"\(data\.answer_key: the reference answer\).*e\.g\. data\.answer_key=answer"):
        from_config([f"data.train_path={path}", "data.prompt_key=question"])
    null = write_parquet(tmp_path / "null.parquet", [GSM8K_ROWS[0], {"question": "q?", "answer": None}])
    with pytest.raises(DataValidationError, match=r"null\.parquet:row 2: missing field 'answer' \(it is null; data\.answer_key"):
        from_config([f"data.train_path={null}", *GSM8K_KEYS])


@pytest.mark.parametrize(
    "keys, rows, message",
    [(GSM8K_KEYS, [GSM8K_ROWS[0], {"question": "q?", "answer": "It is 7."}],
      "no '#### <answer>' line in field 'answer' (data.answer_format=gsm8k); it ends: 'It is 7.'"),
     (GSM8K_KEYS, [GSM8K_ROWS[0], {"question": "q?", "answer": "It is 7.\n####   "}], "no '#### <answer>' line in field 'answer'"),
     (MATH_KEYS, [MATH_ROWS[0], {"problem": "p?", "solution": "So it is 7."}],
      "no \\boxed{...} answer in field 'solution' (data.answer_format=boxed); it ends: 'So it is 7.'"),
     (MATH_KEYS, [MATH_ROWS[0], {"problem": "p?", "solution": "So $\\boxed{\\frac{1}{2}$ unbalanced"}], "no \\boxed{...} answer"),
     (MATH_KEYS, [MATH_ROWS[0], {"problem": "p?", "solution": "Empty \\boxed{}"}], "no \\boxed{...} answer")],
)
def test_unparsed_answer_names_the_record_and_the_fix(tmp_path, keys, rows, message):
    path = write_jsonl(tmp_path / "rows.jsonl", rows)
    with pytest.raises(DataValidationError) as caught:
        from_config([f"data.train_path={path}", *keys])
    assert str(caught.value).startswith(f"{path}:2: {message}")
    assert "choose the data.answer_format that fits (plain | gsm8k | boxed), or set data.skip_unparsed=true" in str(caught.value)


def test_skip_unparsed_drops_counts_and_warns(tmp_path):
    rows = [MATH_ROWS[0], *[{"problem": f"p{i}?", "solution": "no box"} for i in range(6)], MATH_ROWS[2]]
    path = write_jsonl(tmp_path / "mixed.jsonl", rows)
    with pytest.warns(UserWarning) as caught:
        examples = from_config([f"data.train_path={path}", "data.skip_unparsed=true", *MATH_KEYS])
    assert [e.qid for e in examples] == ["mixed-1", "mixed-8"] and [e.ground_truth for e in examples] == ["\\frac{3}{4}", "5"]
    (warning,) = caught
    assert str(warning.message) == (
        f"{path}: skipped 6 of 8 records with no answer for data.answer_format=boxed (data.skip_unparsed=true): "
        f"{path}:2, {path}:3, {path}:4, {path}:5, {path}:6, ..."
    )
    none_left = write_jsonl(tmp_path / "none.jsonl", rows[1:3])
    with pytest.raises(DataValidationError, match=r"skipped 2 of 2 records .*; no examples left\. Check data\.answer_key and data\.answer_format"):
        from_config([f"data.train_path={none_left}", "data.skip_unparsed=true", *MATH_KEYS])
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # nothing skipped, nothing said
        assert len(from_config([f"data.train_path={write_jsonl(tmp_path / 'ok.jsonl', MATH_ROWS)}", "data.skip_unparsed=true", *MATH_KEYS])) == 4


def test_config_validates_the_new_keys():
    with pytest.raises(ConfigError, match=r"data\.answer_format='latex' is not valid; choose one of: plain, gsm8k, boxed"):
        load_config(None, ["data.answer_format=latex"])
    with pytest.raises(ConfigError, match=r"data\.prompt_key='' must not be empty"):
        load_config(None, ["data.prompt_key="])
    with pytest.raises(ConfigError, match=r"data\.id_key='' must not be empty; use null for none"):
        load_config(None, ["data.id_key="])
    cfg = load_config(None, ["data.id_key=problem_id", "data.subset=main", "data.train_split=train[:100]"])
    assert (cfg.data.id_key, cfg.data.subset, cfg.data.train_split, cfg.data.test_split) == ("problem_id", "main", "train[:100]", "test")


# ----------------------------------------------------------------------------
# Extraction, and the reward reading what the loader extracted


@pytest.mark.parametrize(
    "text, answer_format, answer",
    [("steps\n#### 72", "gsm8k", "72"), ("#### 1,234", "gsm8k", "1234"), ("#### 1,234,567.5\n", "gsm8k", "1234567.5"),
     ("#### 3 ####  -4 ", "gsm8k", "-4"), ("#### $18.", "gsm8k", "18"), ("#### 1, 2", "gsm8k", "1, 2"),
     ("no marker", "gsm8k", None),
     ("$\\boxed{\\frac{a}{\\sqrt{b^{2}}}}$", "boxed", "\\frac{a}{\\sqrt{b^{2}}}"), ("$\\boxed 5$.", "boxed", "5"),
     ("\\boxed{1} then \\boxed 2", "boxed", "2"), ("\\boxed 2 then \\fbox{3}", "boxed", "3"), ("\\boxed {7}", "boxed", "7"),
     ("\\boxed{3!}", "boxed", "3!"), ("\\boxed{unclosed", "boxed", None), ("\\boxedfoo{1}", "boxed", None),
     ("  42 ", "plain", "42")],
)
def test_extract_answer(text, answer_format, answer):
    assert extract_answer(text, answer_format) == answer


def test_last_boxed_is_shared_with_the_reward():
    assert last_boxed("so $\\boxed 12$ apples") == "12"
    assert extract_final_answer("Therefore $\\boxed 12$.") == ("12", "boxed")
    assert has_final_answer("Therefore $\\boxed 12$.")
    assert last_boxed("\\boxed") is None and last_boxed("\\boxed $x$") is None


@pytest.mark.parametrize(
    "completion, ground_truth, correct",
    [("48 + 24 = 72\nAnswer: 72", "72", True), ("Answer: 42", "42", True), ("Answer: 41", "42", False),
     ("Answer: 1,234", "1234", True), ("Answer: 1234 pens", "1234", True), ("The answer is 1234.", "1234", True),
     ("Answer: 2.5", "2.5", True), ("Answer: 2.50", "2.5", True), ("Answer: 5/2", "2.5", True), ("Answer: 2.05", "2.5", False),
     ("Answer: 1000000000000000000000", "1000000000000000000000", True), ("Answer: 1e21", "1000000000000000000000", True),
     ("Answer: 1000000000000000000001", "1000000000000000000000", False), ("Answer: -5", "-5", True),
     ("Answer: 0.1", "0.1", True), ("\\boxed{\\frac{3}{4}}", "\\frac{3}{4}", True), ("Answer: 0.75", "\\frac{3}{4}", True),
     ("\\boxed{2\\sqrt{2}}", "2\\sqrt{2}", True), ("Answer: 5", "5", True)],
)
def test_reward_compares_extracted_ground_truths(completion, ground_truth, correct):
    assert is_correct(completion, ground_truth) is correct


def test_reward_on_loaded_gsm8k_and_math(tmp_path):
    gsm8k = load_prompts(write_jsonl(tmp_path / "g.jsonl", GSM8K_ROWS), prompt_key="question", answer_key="answer", answer_format="gsm8k")
    assert [is_correct(f"Working...\nAnswer: {answer}", e.ground_truth) for e, answer in zip(gsm8k, ["72", "1,234", "-5"])] == [True] * 3
    math = load_prompts(write_jsonl(tmp_path / "m.jsonl", MATH_ROWS), prompt_key="problem", answer_key="solution", answer_format="boxed")
    completions = ["$\\boxed{\\frac{3}{4}}$", "$\\boxed{2\\sqrt 2}$", "Answer: 5", "\\boxed{\\{2, 1\\}}"]
    assert [is_correct(c, e.ground_truth) for c, e in zip(completions, math)] == [True] * 4


def test_evenly_spread_takes_every_part_of_an_ordered_file():
    from dapo_nb.data import evenly_spread

    levels = [1] * 50 + [2] * 50 + [3] * 50  # the shipped test split's order
    picked = evenly_spread(list(range(150)), 48)
    assert len(picked) == len(set(picked)) == 48 and picked[0] == 0 and picked[-1] == 149
    assert [sum(levels[i] == level for i in picked) for level in (1, 2, 3)] == [16, 16, 16]
    assert evenly_spread([1, 2, 3], 0) == evenly_spread([1, 2, 3], 5) == [1, 2, 3]
    assert evenly_spread([1, 2, 3], 1) == [1]


# ----------------------------------------------------------------------------
# data.where: one difficulty level (make demo), or any field's values


def test_where_keeps_one_level_of_the_shipped_task_in_train_and_test():
    train = from_config(["data.where={level: [1]}"], "train")
    test = from_config(["data.where={level: 1}"], "test")  # a single value is a one-item list
    everything = from_config([], "train")
    assert {e.extra["level"] for e in train} == {1} and {e.extra["level"] for e in test} == {1}
    assert len(train) == sum(e.extra["level"] == 1 for e in everything) < len(everything)
    assert len(test) == 50  # the shipped test split: 50 problems per level
    assert [e.qid for e in train] == [e.qid for e in everything if e.extra["level"] == 1]  # file order kept
    two = from_config(["data.where={level: [1, 3]}"], "test")
    assert len(two) == 100 and {e.extra["level"] for e in two} == {1, 3}


def test_where_matches_text_values_and_several_fields(tmp_path):
    path = write_jsonl(tmp_path / "math.jsonl", MATH_ROWS)
    keys = [f"data.train_path={path}", *MATH_KEYS]
    assert [e.ground_truth for e in from_config([*keys, "data.where={level: Level 1}"])] == ["\\frac{3}{4}", "5"]
    both = from_config([*keys, "data.where={level: [Level 1, Level 3], type: Algebra}"])
    assert [e.ground_truth for e in both] == ["\\{1, {2}\\}"]
    entry = from_config([*keys, "data.where.type=Prealgebra"])  # one entry, as with reward.weights.<name>
    assert len(entry) == 2


def test_where_errors_name_the_file_the_field_and_what_there_is(tmp_path):
    path = write_jsonl(tmp_path / "math.jsonl", MATH_ROWS)
    keys = [f"data.train_path={path}", *MATH_KEYS]
    with pytest.raises(DataValidationError) as caught:
        from_config([*keys, "data.where={level: Level 9}"])
    assert str(caught.value) == (f"{path}: data.where level='Level 9' keeps none of its 4 records; "
                                 "level there is one of: Level 1, Level 2, Level 3")
    with pytest.raises(DataValidationError) as caught:
        from_config([*keys, "data.where={difficulty: 1}"])
    assert str(caught.value) == (f"{path}: qid 'math-1' has no field 'difficulty' for data.where (its other fields: "
                                 "level, problem, solution, type); fix data.where or the data")
    for bad in ["data.where={level: []}", "data.where={level: null}", "data.where={level: {a: 1}}"]:
        with pytest.raises(ConfigError, match=r"data.where=.*each entry is a field name and a value or a non-empty list"):
            load_config(None, [bad])


def test_train_where_filters_training_only_after_where(tmp_path):
    train = from_config(["data.train_where={level: [1]}"], "train")
    test = from_config(["data.train_where={level: [1]}"], "test")
    assert [e.qid for e in train] == [e.qid for e in from_config(["data.where={level: [1]}"], "train")]
    assert len(test) == 150 and {e.extra["level"] for e in test} == {1, 2, 3}  # evaluation keeps every level
    both = from_config(["data.where={level: [1, 2]}", "data.train_where={level: [2, 3]}"], "train")
    assert {e.extra["level"] for e in both} == {2}  # data.where first, then data.train_where
    path = write_jsonl(tmp_path / "math.jsonl", MATH_ROWS)
    with pytest.raises(DataValidationError) as caught:
        from_config([f"data.train_path={path}", *MATH_KEYS, "data.train_where={difficulty: 1}"])
    assert str(caught.value) == (f"{path}: qid 'math-1' has no field 'difficulty' for data.train_where (its other "
                                 "fields: level, problem, solution, type); fix data.train_where or the data")
    with pytest.raises(ConfigError, match=r"data.train_where=.*each entry is a field name and a value or a non-empty"):
        load_config(None, ["data.train_where={level: []}"])


def test_where_from_a_yaml_file_replaces_the_default(tmp_path):
    config_file = tmp_path / "run.yaml"
    config_file.write_text("data:\n  where:\n    level: [2]\n", encoding="utf-8")
    cfg = load_config(config_file, [])
    assert cfg.data.where == {"level": [2]}
    assert {e.extra["level"] for e in load_prompts_from_config(cfg.data, "test")} == {2}
