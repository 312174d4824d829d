"""verl export: the standalone reward module matches ours and imports alone; jsonl -> parquet round-trips."""

from __future__ import annotations

import importlib.util
import json
import subprocess
import sys
from pathlib import Path

import pytest

from dapo_nb.rewards import OBJECTIVES, MultiObjectiveReward, register_objective
from dapo_nb.rewards.verl_export import (
    VerlExportError,
    jsonl_to_verl_parquet,
    reward_to_verl_module,
    write_verl_reward_module,
)

TEXTS = [
    ("Step 1\nStep 2\nAnswer: 540", "540"),
    ("\\boxed{\\frac{1}{2}}", "0.5"),
    ("Alternative approach:\n#### 1,234", "1234"),
    ("Answer: 540 or 541", "540"),
    ("", "540"),
    ("Ответ: −3 🙂\nAnswer: −3", "-3"),
    ("Answer: 123456789012345678901234567891", "123456789012345678901234567890"),
    ("\\boxed{1+x^2}", "x^2+1"),
    ("é" * 1500 + "\nthe result is 7", "7"),
]
OBJECTIVE_NAMES = ["correctness", "format", "clarity", "detail", "creativity"]

# Run in a fresh interpreter: block every import outside the standard library and what the module declares.
ISOLATED_RUNNER = r"""
import importlib.abc, importlib.util, json, sys
at_start = set(sys.modules)  # interpreter start-up (site, .pth hooks) ran before us
allowed = set(sys.stdlib_module_names) | set(sys.argv[3].split(",")) - {""}
class Blocker(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path, target=None):
        if name.split(".")[0] not in allowed:
            raise ImportError(f"blocked import of {name}")
        return None
sys.meta_path.insert(0, Blocker())
spec = importlib.util.spec_from_file_location("verl_reward_under_test", sys.argv[1])
module = importlib.util.module_from_spec(spec)
spec.loader.exec_module(module)
cases = json.loads(open(sys.argv[2], encoding="utf-8").read())
results = [module.compute_score("dapo_nb", text, truth, {"split": "test", "index": i}) for i, (text, truth) in enumerate(cases)]
loaded = sorted({m.split(".")[0] for m in set(sys.modules) - at_start} - set(sys.stdlib_module_names))
print(json.dumps({"results": results, "loaded": loaded}))
"""
MATH_VERIFY_STACK = "math_verify,latex2sympy2_extended,sympy,mpmath,antlr4"


def load_module(path: Path):
    spec = importlib.util.spec_from_file_location(f"verl_reward_{path.stem}", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def run_isolated(module_path: Path, tmp_path: Path, allowed: str) -> dict:
    cases = tmp_path / "cases.json"
    cases.write_text(json.dumps(TEXTS), encoding="utf-8")
    runner = tmp_path / "runner.py"
    runner.write_text(ISOLATED_RUNNER, encoding="utf-8")
    done = subprocess.run(
        [sys.executable, "-I", str(runner), str(module_path), str(cases), allowed],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=tmp_path,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    return json.loads(done.stdout.strip().splitlines()[-1])


# ----------------------------------------------------------------------------
# The standalone module


@pytest.mark.parametrize("scalarizer", ["weighted_sum", "tchebycheff", "smooth_tchebycheff"])
def test_module_matches_our_reward(tmp_path, scalarizer):
    weights = {"correctness": 1.0, "format": 0.2, "clarity": 0.1, "detail": 0.05, "creativity": 0.3}
    reward = MultiObjectiveReward(objectives=OBJECTIVE_NAMES, weights=weights, scalarizer=scalarizer, mu=0.2)
    module = load_module(reward_to_verl_module(reward, tmp_path / "verl_reward.py"))
    ours = reward.score([t for t, _ in TEXTS], [g for _, g in TEXTS])
    for i, (text, truth) in enumerate(TEXTS):
        result = module.compute_score("dapo_nb", text, truth, extra_info={"split": "train", "index": i})
        assert result["score"] == ours.scores[i]
        assert result["acc"] == ours.objectives["correctness"][i]
        assert {name: result[name] for name in OBJECTIVE_NAMES} == {
            name: ours.objectives[name][i] for name in OBJECTIVE_NAMES
        }


def test_acc_is_reported_even_without_a_correctness_objective(tmp_path):
    module = load_module(write_verl_reward_module(tmp_path / "m.py", ["format"], {"format": 1.0}))
    assert module.compute_score("d", "Answer: 7", "7") == {"score": 1.0, "acc": 1.0, "format": 1.0}
    assert module.compute_score("d", "Answer: 8", "7")["acc"] == 0.0


def test_module_imports_with_only_what_it_declares(tmp_path):
    path = write_verl_reward_module(tmp_path / "verl_reward.py", OBJECTIVE_NAMES, {"correctness": 1.0, "format": 0.5})
    isolated = run_isolated(path, tmp_path, MATH_VERIFY_STACK)
    assert set(isolated["loaded"]) <= set(MATH_VERIFY_STACK.split(","))
    assert not {"torch", "transformers", "dapo_nb", "numpy", "pandas"} & set(isolated["loaded"])
    module = load_module(path)
    expected = [module.compute_score("dapo_nb", t, g, {"split": "test", "index": i}) for i, (t, g) in enumerate(TEXTS)]
    assert isolated["results"] == json.loads(json.dumps(expected))


def test_module_without_math_verify_still_scores_plain_numbers(tmp_path):
    path = write_verl_reward_module(tmp_path / "verl_reward.py", ["correctness"], {"correctness": 1.0})
    isolated = run_isolated(path, tmp_path, "")
    assert isolated["loaded"] == []
    acc = [r["acc"] for r in isolated["results"]]
    assert acc[0] == 1.0 and acc[2] == 1.0 and acc[5] == 1.0  # plain numbers: exact fast path
    assert acc[8] == 0.0  # "the result is 7" marks no answer: its last number does not count (MARKED_ANSWER_ONLY)
    assert acc[1] == 0.0  # \frac{1}{2} vs 0.5 needs math-verify; without it the texts differ


def test_what_cannot_be_exported(tmp_path):
    target = tmp_path / "m.py"
    with pytest.raises(VerlExportError, match="overlong_buffer"):
        write_verl_reward_module(target, ["correctness", "overlong"], {"correctness": 1.0})
    grouped = MultiObjectiveReward(objectives=["correctness"], normalization="group_zscore")
    with pytest.raises(VerlExportError, match="sees one sample"):
        reward_to_verl_module(grouped, target)
    plugged = MultiObjectiveReward(plugin=lambda completions, **kw: [1.0] * len(completions))
    with pytest.raises(VerlExportError, match="cannot be embedded"):
        reward_to_verl_module(plugged, target)
    register_objective(lambda completion, ground_truth, **_: 1.0, name="custom_for_export")
    try:
        with pytest.raises(VerlExportError, match="user-defined"):
            write_verl_reward_module(target, ["custom_for_export"], {"custom_for_export": 1.0})
    finally:
        del OBJECTIVES["custom_for_export"]
    with pytest.raises(ValueError, match="unknown objective 'clarity'"):
        write_verl_reward_module(target, ["correctness"], {"clarity": 1.0})
    assert not target.exists()


# ----------------------------------------------------------------------------
# jsonl -> verl parquet


def test_jsonl_to_parquet_round_trip(tmp_path):
    pq = pytest.importorskip("pyarrow.parquet")
    pd = pytest.importorskip("pandas")
    from dapo_nb.data import load_prompts

    records = [
        {"qid": "aime24_001", "prompt": "Solve ... (math problem) ...", "ground_truth": "540"},
        {
            "qid": "chat_2",
            "prompt": [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "1+1?"}],
            "ground_truth": "2",
        },
        {"qid": "uni_3", "prompt": "Combien font ½ + ½ ? 🙂", "ground_truth": "\\frac{2}{2}", "level": 3},
    ]
    source = tmp_path / "train.jsonl"
    source.write_text("\n".join(json.dumps(r, ensure_ascii=False) for r in records) + "\n", encoding="utf-8")
    target = tmp_path / "verl" / "train.parquet"
    assert jsonl_to_verl_parquet(source, target, split="train", system_prompt="Answer with 'Answer: <n>'.") == 3

    rows = pq.read_table(target).to_pylist()
    assert rows[0] == {
        "data_source": "train",
        "prompt": [
            {"role": "system", "content": "Answer with 'Answer: <n>'."},
            {"role": "user", "content": "Solve ... (math problem) ..."},
        ],
        "ability": "math",
        "reward_model": {"style": "rule", "ground_truth": "540"},
        "extra_info": {"split": "train", "index": 0, "qid": "aime24_001"},
    }
    assert rows[1]["prompt"] == records[1]["prompt"]  # an existing system prompt is kept
    assert rows[2]["prompt"][-1]["content"] == "Combien font ½ + ½ ? 🙂"
    assert [r["extra_info"]["index"] for r in rows] == [0, 1, 2]

    frame = pd.read_parquet(target)
    assert list(frame.columns) == ["data_source", "prompt", "ability", "reward_model", "extra_info"]
    assert frame["reward_model"].iloc[2] == {"style": "rule", "ground_truth": "\\frac{2}{2}"}

    back = load_prompts(target)  # our loader reads verl's schema too
    assert [e.ground_truth for e in back] == ["540", "2", "\\frac{2}{2}"]
    assert [e.prompt[-1]["content"] if isinstance(e.prompt, list) else e.prompt for e in back] == [
        "Solve ... (math problem) ...",
        "1+1?",
        "Combien font ½ + ½ ? 🙂",
    ]


def test_the_import_guard_itself_blocks(tmp_path):
    """The isolation above means something: a module importing numpy fails under the same guard."""
    bad = tmp_path / "needs_numpy.py"
    bad.write_text(
        "import numpy\ndef compute_score(data_source, solution_str, ground_truth, extra_info=None):\n    return 0.0\n"
    )
    with pytest.raises(AssertionError, match="blocked import of numpy"):
        run_isolated(bad, tmp_path, MATH_VERIFY_STACK)
