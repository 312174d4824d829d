"""Studies on a local Ray cluster (dapo_nb/sweep.py): a tiny study fills the table, a rerun trains nothing, failures
are rows with their error, Ctrl-C keeps what finished, a notebook can be the trial, a bad study file gets one line.

Every trial here is a real `dapo-nb train` + `dapo-nb eval` (or papermill) on the tiny random model, 1 step."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from dapo_nb.sweep import RESULT_COLUMNS, load_study, plan, run_sweep

from tests.scoring_support import expected, recorded, write_recorder

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def ray_cluster():
    """One local Ray cluster for the in-process studies of this module (run_sweep joins it, and leaves it running)."""
    import ray

    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False, configure_logging=False)
    yield
    ray.shutdown()


@pytest.fixture()
def data_file(tmp_path):
    rows = [{"qid": f"q{i}", "prompt": f"What is {i} + {i}?", "ground_truth": str(2 * i), "level": i % 2}
            for i in range(8)]
    path = tmp_path / "data.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def tiny_study(tmp_path, model_dir, data_file, **extra) -> Path:
    study = {
        "base": {"model.pretrained_model_name_or_path": str(model_dir), "data.train_path": str(data_file),
                 "data.test_path": str(data_file), "sampling.max_new_tokens": 4, "ppo.batch_size": 2,
                 "dapo.group_size": 2, "dapo.dynamic_sampling": False, "train.total_steps": 1,
                 "reward.objectives": ["correctness", "format", "clarity"]},
        "grid": {"reward.weights.clarity": [0.0, 1.0]},
        "seeds": [0, 1],
        "eval": {"prompts": 3},
        "front": ["correctness", "clarity"],
    }
    for key, value in extra.items():  # base and eval are extended, anything else replaced
        study[key] = {**study[key], **value} if key in ("base", "eval") else value
    path = tmp_path / "study.yaml"
    path.write_text(yaml.safe_dump(study))
    return path


def documented(column: str) -> bool:
    return column in RESULT_COLUMNS or column.startswith(("eval/rewards/", "eval/avg@")) or "." in column


def test_a_tiny_study_fills_the_table_and_a_rerun_trains_nothing(tmp_path, model_dir, data_file, ray_cluster):
    recorder, log = write_recorder(tmp_path)  # counts the trainings, and shows the call the trials' scoring makes
    study = tiny_study(tmp_path, model_dir, data_file)
    out = tmp_path / "study"
    with_recorder = [f"base.reward.plugins=[{recorder}:record, {recorder}]"]
    table = run_sweep(study, out, with_recorder)
    trained = table[table["kind"] == "train"]
    assert len(trained) == 4 and (table["status"] == "done").all(), table[["trial", "error"]]
    assert sorted(trained["reward.weights.clarity"]) == [0.0, 0.0, 1.0, 1.0] and sorted(trained["seed"]) == [0, 0, 1, 1]
    assert (trained["steps"] == 1).all() and (trained["minutes"] > 0).all()
    assert (table["eval/num_prompts"] == 3).all() and table["eval/pass@1"].between(0, 1).all()
    for name in ("correctness", "format", "clarity", "record"):  # the study's reward, plugins included
        assert table[f"eval/rewards/{name}/mean"].notna().all(), name
    assert table["eval/pass@1_ci95_low"].le(table["eval/pass@1"]).all()
    assert set(table[table["kind"] == "base"]["trial"]) == {"base"}
    assert all(documented(c) for c in table.columns), [c for c in table.columns if not documented(c)]
    assert (out / "results.parquet").is_file() and all(Path(p, "metrics.jsonl").is_file() for p in trained["run_dir"])
    assert (trained["checkpoint"] == "").all()  # keep.weights=none: judged, then removed

    got = recorded(log)  # a study's trials score through the same call as training and evaluation
    trl_keys, seed_keys = expected(["level"])
    assert got["trl"] == {trl_keys} and got["seed:train"] == {seed_keys} and got["seed:test"] == {seed_keys}
    trainings = len([line for line in log.read_text().splitlines() if '"split": "train"' in line])
    assert trainings == 4 * 2 * 2  # 4 trials x 2 prompts x G=2

    again = run_sweep(study, out, with_recorder)
    assert len([line for line in log.read_text().splitlines() if '"split": "train"' in line]) == trainings
    assert again.drop(columns=["disk_mb"]).equals(table.drop(columns=["disk_mb"]))


FAILING = '''
import os, signal

def boom(completions, **kwargs):
    raise RuntimeError("reward server down")

def die(completions, **kwargs):
    os.kill(os.getpid(), signal.SIGKILL)
'''


def test_a_trial_that_raises_or_is_killed_is_a_row_with_its_error(tmp_path, model_dir, data_file, ray_cluster):
    bad = tmp_path / "bad_rewards.py"
    bad.write_text(FAILING)
    study = tiny_study(tmp_path, model_dir, data_file, grid={}, seeds=[0],
                       variants=[{}, {"reward.plugins": [f"{bad}:boom"]}, {"reward.plugins": [f"{bad}:die"]}])
    table = run_sweep(study, tmp_path / "study", ["sweep.retry_failed=false"]).set_index("variation")
    assert table.loc["base", "status"] == "done" and table.loc["base model", "status"] == "done"
    raised = table.loc[f'reward.plugins=["{bad}:boom"]']
    assert raised["status"] == "failed" and "reward server down" in raised["error"]
    killed = table.loc[f'reward.plugins=["{bad}:die"]']
    assert killed["status"] == "failed" and killed["error"] == "killed by signal 9 (SIGKILL)"
    again = run_sweep(study, tmp_path / "study", ["sweep.retry_failed=false"])  # failures stay, nothing reruns
    assert (again["status"] == "failed").sum() == 2


def test_a_notebook_as_the_trial_keeps_its_executed_copy(tmp_path, model_dir, data_file, ray_cluster):
    study = tiny_study(tmp_path, model_dir, data_file, grid={}, seeds=[0], trial="notebook",
                       notebook=str(ROOT / "notebooks" / "03_training.ipynb"))
    table = run_sweep(study, tmp_path / "study")
    row = table[table["kind"] == "train"].iloc[0]
    assert row["status"] == "done", row["error"]
    assert row["steps"] == 1 and 0 <= row["eval/pass@1"] <= 1
    executed = Path(row["run_dir"]).parent / "03_training.ipynb"
    assert executed.is_file() and '"check: ' in executed.read_text()


@pytest.mark.parametrize("stop", [signal.SIGINT, signal.SIGTERM], ids=["ctrl-c", "sigterm"])
def test_ctrl_c_stops_the_running_trials_and_a_rerun_continues(tmp_path, model_dir, data_file, stop):
    """Ctrl-C, and SIGTERM (`kill`, a scheduler, a study under nohup whose SIGINT is ignored), stop it the same way."""
    study = tiny_study(tmp_path, model_dir, data_file, grid={"reward.weights.clarity": [0.0, 0.5, 1.0]}, seeds=[0])
    out = tmp_path / "study"
    command = [sys.executable, "-m", "dapo_nb.cli", "sweep", str(study), f"out_dir={out}", "sweep.max_concurrent=1"]
    # SIGINT as a terminal's Ctrl-C delivers it, even when this test runs in a background job that ignores SIGINT
    process = subprocess.Popen(command, cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                               preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    deadline = time.monotonic() + 240
    while time.monotonic() < deadline and len(list(out.glob("trials/*/result.json"))) < 1:
        time.sleep(0.5)
    assert process.poll() is None, process.communicate()
    time.sleep(3)  # the next trial is training now
    process.send_signal(stop)
    _, stderr = process.communicate(timeout=120)
    assert process.returncode == 130, stderr[-2000:]
    assert "dapo-nb sweep: interrupted" in stderr
    finished = {p.parent.name for p in out.glob("trials/*/result.json")}
    assert 1 <= len(finished) < 4
    leftovers = subprocess.run(["pgrep", "-f", f"train.output_dir.*{out}"], capture_output=True, text=True).stdout
    assert not leftovers.strip(), f"a trial's training process outlived Ctrl-C: {leftovers}"
    rerun = subprocess.run(command, cwd=tmp_path, capture_output=True, text=True, timeout=600)
    assert rerun.returncode == 0, rerun.stderr[-2000:]
    assert f"{len(finished)} trials finished in an earlier run (not rerun)" in rerun.stderr + rerun.stdout
    rows = [json.loads(p.read_text()) for p in out.glob("trials/*/result.json")]
    assert len(rows) == 4 and all(r["status"] == "done" for r in rows)


@pytest.mark.parametrize("study, override, message", [
    ({"grid": {"reward.scalarizr": ["tchebycheff"]}}, None, "unknown config key 'reward.scalarizr'; did you mean reward.scalarizer"),
    ({"seeds": "zero"}, None, "seeds[0]='zero' has the wrong type: expected int"),
    ({"sweeps": {"address": "auto"}}, None, "unknown key 'sweeps'; did you mean sweep"),
    ({"grid": {"ppo.batch_size": []}}, None, "grid.ppo.batch_size must be a non-empty list of values"),
    ({"keep": {"weights": "all"}}, None, "keep.weights='all' is not valid; choose one of: none, final"),
    ({}, "sweep.cpus_per_trial=0", "sweep.cpus_per_trial must be > 0"),
    ({"soups": {"objectives": ["correctness"]}}, None, "soups.objectives=['correctness'] must name two objectives"),
])
def test_a_bad_study_file_gets_one_line_naming_the_key(tmp_path, study, override, message):
    path = tmp_path / "bad.yaml"
    path.write_text(yaml.safe_dump(study))
    args = [sys.executable, "-m", "dapo_nb.cli", "sweep", str(path), f"out_dir={tmp_path / 'out'}", *([override] if override else [])]
    result = subprocess.run(args, capture_output=True, text=True, timeout=120)
    assert result.returncode == 2, result.stderr
    assert len(result.stderr.strip().splitlines()) == 1 and message in result.stderr, result.stderr
    assert not (tmp_path / "out").exists()  # nothing started


def test_the_plan_crosses_variants_with_the_grid_and_adds_soup_ingredients(tmp_path):
    path = tmp_path / "s.yaml"
    path.write_text(yaml.safe_dump({
        "grid": {"reward.scalarizer": ["weighted_sum", "tchebycheff"]}, "variants": [{}, {"ppo.learning_rate": 2e-5}],
        "seeds": [0, 1], "base": {"reward.objectives": ["correctness", "clarity"]},
        "soups": {"objectives": ["correctness", "clarity"], "lambdas": [0.0, 1.0]}}))
    trials = plan(load_study(path), tmp_path / "out")
    trained = [t for t in trials if t.kind == "train"]
    assert len(trained) == (2 * 2 + 2) * 2  # 4 variations + one policy per soup objective, x 2 seeds
    assert len({t.name for t in trials}) == len(trials) and len({t.key for t in trials}) == len(trials)
    assert sum(t.kind == "soup" for t in trials) == 2 * 2 and sum(t.kind == "base" for t in trials) == 1
    again = plan(load_study(path), tmp_path / "out")
    assert [t.key for t in again] == [t.key for t in trials]  # what a rerun recognises


def test_every_results_column_is_documented_in_the_readme():
    readme = (ROOT / "README.md").read_text()
    missing = [column for column in RESULT_COLUMNS if f"| `{column}` |" not in readme]
    assert not missing, f"README's Studies table lacks {missing}"
