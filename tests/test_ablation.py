"""benchmarks/ablation.py on hand-made learn.py output folders: no model, no training, about 3 s.

The summary.json files are built with learn.py's own dataclasses (Score, Paired, Training, SeedResult) and the
keys its main() writes, so a change to learn.py's format shows here. Two arms: "recipe" with 3 seeds, "no-ds" with
2 (the table must say it has fewer); 20 held-out problems, the base model right on 4 of them.
"""

from __future__ import annotations

import dataclasses
import importlib.util
import json
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
N = 20  # held-out problems
BASE_RIGHT = 4  # the base model gets q0..q3 right


def load(name: str):
    spec = importlib.util.spec_from_file_location(f"bench_{name}", ROOT / "benchmarks" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up
    spec.loader.exec_module(module)
    return module


learn = load("learn")
ablation = load("ablation")


def score(right: int, data: str):
    """A greedy evaluation that gets problems q0..q{right-1} right."""
    return learn.Score(model="m", data=data, num_prompts=N, pass1=right / N, pass1_ci95=(0.0, 1.0), format1=1.0,
                       seconds=1.0, per_problem={f"q{i}": i < right for i in range(N)})


def make_arm(folder: Path, after_right: dict[int, int], entropy: dict[int, float], overrides: list[str]) -> None:
    """A learn.py --out folder: summary.json and per seed metrics.jsonl (5 steps, correctness 0.1 .. 0.5)."""
    base = {split: score(BASE_RIGHT, data) for split, data in learn.SPLITS.items()}
    results = []
    for seed, right in after_right.items():
        splits = {split: learn.Paired.of(base[split], score(right, data)) for split, data in learn.SPLITS.items()}
        training = learn.Training(steps=5, updated_steps=5, checkpoint="ckpt", entropy_end=entropy[seed],
                                  step_minutes=0.5, wall_minutes=1.0)
        results.append(learn.SeedResult(seed, training, splits))
        run = folder / f"s{seed}"
        run.mkdir(parents=True)
        lines = [json.dumps({"step": 0, "eval/pass@1": 0.2})]  # the eval-only step-0 line: skipped
        lines += [json.dumps({"step": s, "step_time": 6.0, "entropy": entropy[seed] + 0.01 * (5 - s),
                              "rewards/correctness/mean": s / 10, "completions/mean_length": 20.0 + s + seed,
                              "dynamic/num_gen_batches": 2}) for s in range(1, 6)]
        (run / "metrics.jsonl").write_text("\n".join(lines) + "\n{\"step\": 6, \"step_ti")  # a torn last line
    diffs = [r.splits["test"].diff for r in results]
    summary = {"command": ["learn.py"], "seeds": list(after_right), "minutes": 10.0, "overrides": overrides,
               "base_model": "m", "base": {k: dataclasses.asdict(v) for k, v in base.items()},
               "results": [dataclasses.asdict(r) for r in results], "test_diff_mean": sum(diffs) / len(diffs),
               "test_diff_sd": None}
    (folder / "summary.json").write_text(json.dumps(summary, indent=1) + "\n")


@pytest.fixture
def arms(tmp_path):
    recipe, no_ds = tmp_path / "learn", tmp_path / "no-ds"
    # recipe: 14, 12, 13 of 20 right after (from 4): +50, +40, +45 points, McNemar b = 10, 8, 9, c = 0: all p < 0.05
    make_arm(recipe, {0: 14, 1: 12, 2: 13}, {0: 0.40, 1: 0.50, 2: 0.60}, [])
    # no-ds: 2 seeds, 8 and 10 right: +20, +30 points; b = 4 (p 0.125) and 6 (p 0.031)
    make_arm(no_ds, {0: 8, 1: 10}, {0: 0.20, 1: 0.30}, ["dapo.dynamic_sampling=false"])
    return recipe, no_ds


def row(text: str, arm: str) -> list[str]:
    line = next(line for line in text.splitlines() if line.startswith(f"| {arm} |"))
    return [cell.strip() for cell in line.strip("|").split("|")]


def test_table_figure_and_comparison(arms, tmp_path, capsys):
    recipe, no_ds = arms
    png, md = tmp_path / "fig" / "ablation.png", tmp_path / "ablation.md"
    code = ablation.main(["--arm", f"recipe={recipe}", "--arm", f"no-ds={no_ds}", "--png", str(png), "--md", str(md)])
    out = capsys.readouterr().out
    assert code == 0
    text = md.read_text()
    assert text.strip() in out

    # arm | seeds | steps | test after | diff | significant | rephrased, heldout, handwritten diffs | entropy |
    # correctness, last 3 steps (every split of the fixture has the same per-problem results)
    assert row(text, "recipe") == ["recipe", "3 (0, 1, 2)", "5.0 (5.0)", "65.0 +- 5.0", "+45.0 +- 5.0", "3/3",
                                   *["+45.0 +- 5.0"] * 3, "0.500 +- 0.100", "0.400"]
    assert row(text, "no-ds") == ["no-ds", "2 (0, 1): fewer than 3", "5.0 (5.0)", "45.0 +- 7.1", "+25.0 +- 7.1", "1/2",
                                  *["+25.0 +- 7.1"] * 3, "0.250 +- 0.071", "0.400"]
    comparison = next(line for line in text.splitlines() if line.startswith("- **no-ds** vs **recipe**"))
    assert "45.0% vs 65.0% (2 vs 3 seeds): -20.0 points" in comparison
    # Welch: se = sqrt(0.05^2/3 + 0.0707^2/2) = 5.77 points, t = -3.46 on 1.7 df -> the df-1 critical value 12.71
    assert "t = -3.46 on 1.7 df, |t| > 12.71 needed: not significant at 5%" in comparison
    assert "beyond about 73.4 points" in comparison
    assert "heldout gain +25.0 vs +45.0 points (Welch t = -3.46 on 1.7 df, not significant at 5%)" in comparison
    assert "--set dapo.dynamic_sampling=false" in text and "2.00 generation batches per step" in text
    assert "note:" not in text  # same base model, minutes and held-out evaluation
    assert png.is_file() and png.stat().st_size > 10_000

    png2 = tmp_path / "minutes.png"  # the equal-wall-clock axis
    assert ablation.main(["--arm", f"recipe={recipe}", "--arm", f"no-ds={no_ds}", "--png", str(png2), "--x", "minutes"]) == 0
    assert png2.is_file()


def test_missing_files_give_one_line_errors(arms, tmp_path, capsys):
    recipe, no_ds = arms
    empty = tmp_path / "not-run"
    empty.mkdir()
    code = ablation.main(["--arm", f"recipe={recipe}", "--arm", f"x={empty}", "--no-png"])
    err = capsys.readouterr().err.strip()
    assert code == 1 and "\n" not in err
    assert err.startswith("ablation.py: arm 'x': no ") and str(empty / "summary.json") in err

    (no_ds / "s1" / "metrics.jsonl").unlink()
    code = ablation.main(["--arm", f"recipe={recipe}", "--arm", f"no-ds={no_ds}", "--no-png"])
    err = capsys.readouterr().err.strip()
    assert code == 1 and "\n" not in err and str(no_ds / "s1" / "metrics.jsonl") in err

    with pytest.raises(SystemExit) as exit_info:
        ablation.main(["--arm", f"{recipe}"])  # no NAME=
    assert exit_info.value.code == 2


def test_summaries_from_before_the_heldout_splits(arms, tmp_path):
    """A learn.py summary with only test and rephrased (written before heldout / handwritten existed) still reads;
    the table then has the rephrased column only, and the comparison no heldout line."""
    recipe, no_ds = arms
    for folder in arms:
        path = folder / "summary.json"
        summary = json.loads(path.read_text())
        for result in summary["results"]:
            for split in ("heldout", "handwritten"):
                del result["splits"][split]
        path.write_text(json.dumps(summary))
    md = tmp_path / "old.md"
    assert ablation.main(["--arm", f"recipe={recipe}", "--arm", f"no-ds={no_ds}", "--no-png", "--md", str(md)]) == 0
    text = md.read_text()
    assert "rephrased diff" in text and "heldout diff" not in text and "heldout gain" not in text
    assert row(text, "recipe")[6:] == ["+45.0 +- 5.0", "0.500 +- 0.100", "0.400"]
