"""The four notebooks: committed clean and documented for papermill, and executed headless on the embedded model.

The executions run papermill in-process with tiny parameters (2 prompts x G=2, 8-12 new tokens, 2 training
steps) in a temp working directory (its runs/ and checkpoints/ are thrown away); the executed copies go to
the git-ignored tests/output/notebooks/ for a person to open (never the user's notebooks/executed/). The kernel is `python3`, registered for these tests
in a temp JUPYTER_PATH so that it runs this interpreter (the repo's .venv), whatever kernels the machine has,
with one torch thread (on a busy 2-core machine two threads spin against each other: 3x slower, measured).
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import nbformat
import pytest

from dapo_nb.arithmetic import make_splits, write_jsonl

from tests.scoring_support import expected, plugin_entries, recorded, write_recorder

REPO = Path(__file__).resolve().parents[1]
NOTEBOOKS = REPO / "notebooks"
EXECUTED = REPO / "tests" / "output" / "notebooks"  # git-ignored; never the user's notebooks/executed/
NAMES = ["01_reward_design", "02_rollout_inspection", "03_training", "04_analysis", "05_studies"]
PARAMETER_LINE = re.compile(r"^(?P<name>\w+): (?P<type>str|int|float|bool|list|dict) = (?P<value>.+?)  # (?P<help>\S.*)$")


def load(name: str) -> nbformat.NotebookNode:
    return nbformat.read(NOTEBOOKS / f"{name}.ipynb", as_version=4)


def parameter_lines(nb) -> list[str]:
    cells = [c for c in nb.cells if "parameters" in c.metadata.get("tags", [])]
    assert len(cells) == 1, "exactly one cell tagged `parameters`"
    return [line for line in cells[0].source.splitlines() if line.strip()]


# ----------------------------------------------------------------------------
# As committed (fast)


@pytest.mark.parametrize("name", NAMES)
def test_committed_clean_with_title_purpose_and_checks(name):
    nb = load(name)
    nbformat.validate(nb)
    code = [c for c in nb.cells if c.cell_type == "code"]
    assert all(c.outputs == [] and c.execution_count is None for c in code), "strip outputs before committing"
    ids = [c.get("id") for c in nb.cells]  # without them papermill warns MissingIDFieldWarning on every run
    assert all(ids) and len(set(ids)) == len(ids), "every cell needs a unique id"
    assert nb.metadata["kernelspec"]["name"] == "python3"
    title, purpose = nb.cells[0].source.split("\n\n", 1)
    assert title.startswith("# ") and not title.startswith("##"), "first cell: an H1 title"
    assert len(purpose.strip().splitlines()) == 1, "then a one-line purpose"
    work = code[2:]  # after the setup and parameters cells
    assert work and all('print(f"check: ' in c.source or 'print("check: ' in c.source for c in work), \
        "every working cell ends in a printed check"


@pytest.mark.parametrize("name", NAMES)
def test_every_parameter_is_typed_and_commented_and_papermill_documents_it(name):
    lines = parameter_lines(load(name))
    parsed = [PARAMETER_LINE.match(line) for line in lines]
    assert all(parsed), [line for line, m in zip(lines, parsed) if not m]
    assert all(line.count("=") == 1 for line in lines), "papermill skips a parameter line with a second '='"
    result = subprocess.run([sys.executable, "-m", "papermill", "--help-notebook", str(NOTEBOOKS / f"{name}.ipynb")],
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert "Unable to parse" not in result.stdout + result.stderr
    text = " ".join(result.stdout.split())  # papermill wraps long help lines
    for m in parsed:
        assert f"{m['name']}: {m['type']} (default " in text
        assert " ".join(m["help"].split()) in text, f"help of {m['name']} missing"


# ----------------------------------------------------------------------------
# Headless execution (slow: loads the embedded model)


@pytest.fixture(scope="module")
def workdir(tmp_path_factory) -> Path:
    """Temp working dir with tiny train/test files, and a `python3` kernel spec that runs this interpreter."""
    root = tmp_path_factory.mktemp("notebooks")
    splits = make_splits([1, 2], train_per_level=16, test_per_level=4, seed=0)  # 03 keeps level 1 (data.where)
    for split, records in splits.items():
        write_jsonl(records, root / "data" / f"{split}.jsonl")
    spec = root / "jupyter" / "kernels" / "python3"
    spec.mkdir(parents=True)
    (spec / "kernel.json").write_text(json.dumps({
        "argv": [sys.executable, "-m", "ipykernel_launcher", "-f", "{connection_file}"],
        "display_name": "Python 3 (dapo-nb tests)", "language": "python",
        "env": {"OMP_NUM_THREADS": "1"}}))  # tiny batches gain little from a second thread
    saved = os.environ.get("JUPYTER_PATH")
    os.environ["JUPYTER_PATH"] = str(root / "jupyter")
    yield root
    if saved is None:
        os.environ.pop("JUPYTER_PATH", None)
    else:
        os.environ["JUPYTER_PATH"] = saved


def execute(name: str, workdir: Path, parameters: dict) -> nbformat.NotebookNode:
    """Run notebooks/<name>.ipynb with papermill; the executed copy is tests/output/notebooks/<name>.ipynb."""
    import papermill

    EXECUTED.mkdir(parents=True, exist_ok=True)
    out = EXECUTED / f"{name}.ipynb"
    papermill.execute_notebook(str(NOTEBOOKS / f"{name}.ipynb"), str(out), parameters=parameters, kernel_name="python3",
                               cwd=str(workdir), progress_bar=False, execution_timeout=600)
    return nbformat.read(out, as_version=4)


def checks(nb) -> list[str]:
    """The `check: ...` lines the executed cells printed, in order."""
    return [line for c in nb.cells if c.cell_type == "code" for o in c.outputs if o.output_type == "stream"
            for line in o.text.splitlines() if line.startswith("check:")]


def images(nb) -> int:
    return sum("image/png" in o.get("data", {}) for c in nb.cells if c.cell_type == "code" for o in c.outputs)


def work_cells(nb) -> list:
    tags = lambda c: c.metadata.get("tags", [])  # noqa: E731
    return [c for c in nb.cells if c.cell_type == "code" and not {"parameters", "injected-parameters"} & set(tags(c))]


TINY = {"max_new_tokens": 8, "group_size": 2}


ARITHMETIC_COLUMNS = ["level", "steps"]  # the shipped task's records' own columns


@pytest.mark.slow
def test_01_reward_design_headless(workdir):
    recorder, log = write_recorder(workdir)  # plugins record the call: the one training and evaluation make
    nb = execute("01_reward_design", workdir, {**TINY, "max_new_tokens": 12, "num_prompts": 2,
                                               "prompts_path": str(workdir / "data" / "train.jsonl"),
                                               "plugins": plugin_entries(recorder)})
    trl_keys, seed_keys = expected(ARITHMETIC_COLUMNS)
    got = recorded(log)
    assert trl_keys in got["trl"] and seed_keys in got["seed:test"]  # the sampled completions, scored as in eval
    # hand-written texts answer hand-made examples: no token ids and none of the file's columns, nothing else missing
    assert all(set(keys) <= set(trl_keys) and set(trl_keys) - set(keys) <= {"completion_ids", *ARITHMETIC_COLUMNS}
               for keys in got["trl"])
    found = checks(nb)
    assert "check: Example A = 0.9125 and Example B = 0.42, as in the seed" in found
    assert "check: 4 sampled completions scored" in found
    assert any(c.startswith("check: weighted sum picks only the ends") for c in found)
    assert len(found) == len(work_cells(nb)) and images(nb) >= 1


@pytest.mark.slow
def test_02_rollout_inspection_headless(workdir):
    recorder, log = write_recorder(workdir)
    nb = execute("02_rollout_inspection", workdir, {**TINY, "num_prompts": 2,
                                                    "prompts_path": str(workdir / "data" / "train.jsonl"),
                                                    "plugins": plugin_entries(recorder)})
    trl_keys, seed_keys = expected(ARITHMETIC_COLUMNS)
    got = recorded(log)  # sampled (as training) and greedy (as evaluation) completions: training's call both times
    assert got["trl"] == {trl_keys} and got["seed:train"] == {seed_keys} and got["seed:test"] == {seed_keys}
    found = checks(nb)
    assert "check: advantages sum to 0 within every group" in found
    assert any(re.match(r"check: \d of 2 groups would be kept, exactly those whose correctness varies", c) for c in found)
    assert any(re.match(r"check: completion 0 has [1-8] tokens", c) for c in found)
    assert len(found) == len(work_cells(nb)) and images(nb) >= 1


RUN = "nbtest"
TRAINING = {**TINY, "train_path": "data/train.jsonl", "test_path": "data/test.jsonl", "where": {"level": [1]},
            "run_name": RUN, "steps": 2,
            "batch_size": 2, "weights": {"correctness": 1.0, "format": 0.2}, "schedule": {2: {"format": 0.5}},
            "plot_every": 1, "eval_every": 2, "eval_prompts": 2, "eval_at_start": True,
            "overrides": ["dapo.max_gen_batches=1", "ppo.mini_batch_size=0"]}


@pytest.fixture(scope="module")
def training_run(workdir):
    """03_training executed headless: two steps, with a schedule that moves the format weight after the first,
    held-out evaluations before the first step and after the second (2 of the 4 test prompts, the first and last)."""
    return execute("03_training", workdir, TRAINING)


@pytest.mark.slow
def test_03_training_headless_saves_metrics_checkpoint_and_plots(workdir, training_run):
    metrics = [json.loads(line) for line in (workdir / "runs" / RUN / "metrics.jsonl").read_text().splitlines()]
    assert [m["step"] for m in metrics] == [0, 1, 2]  # step 0: the held-out evaluation before training (eval/* only)
    assert "reward" not in metrics[0] and metrics[0]["eval/num_prompts"] == 2 and "eval/pass@1" not in metrics[1]
    assert metrics[2]["eval/num_prompts"] == 2 and 0 <= metrics[2]["eval/pass@1"] <= 1
    assert [(m["weights/correctness"], m["weights/format"]) for m in metrics[1:]] == [(1.0, 0.2), (1.0, 0.5)]
    assert (workdir / "checkpoints" / RUN / "step-2" / "model.safetensors").is_file()
    plots = sorted(p.name for p in (workdir / "runs" / RUN / "plots").glob("*.png"))
    assert plots == ["dashboard.png", "dynamics.png", "objectives.png", "rewards.png", "weights.png"]
    found = checks(training_run)
    assert "check: final weights {'correctness': 1.0, 'format': 0.5}; changes made on the panel: none" in found
    # `where` keeps level 1 of both files (16 of 32 training prompts, 4 of 8 test prompts), as make demo does; then an
    # even spread over the test file (ordered by level), not its first N: here its first and last level-1 prompts
    assert any(c.startswith("check: 16 training prompts;") for c in found), found
    assert "check: held-out set: 2 of 4 test prompts, evenly spread (arith-L1-000000 ... arith-L1-000003), " \
           "every 2 steps and before the first" in found
    assert any(re.match(r"check: held-out pass@1 at steps \[0, 2\]: \[\d", c) for c in found)
    assert any(re.match(r"check: 2 steps trained \(\w+\) in \d+\.\d min", c) for c in found)
    assert found[-1].startswith("check: saved runs/nbtest/plots/dashboard.png")
    assert len(found) == len(work_cells(training_run)) and images(training_run) == 2


# the sweep's points train the recipe (the config defaults), shrunk here; the buffer fits 8 tokens should the recipe
# weight the overlong objective
SWEEP_TINY = ["ppo.batch_size=2", "ppo.mini_batch_size=0", "dapo.group_size=2", "dapo.max_gen_batches=1",
              "reward.overlong_buffer_len=4"]


@pytest.mark.slow
def test_04_analysis_headless_reads_the_run(workdir, training_run):
    nb = execute("04_analysis", workdir, {"run_name": RUN, "test_path": "data/test.jsonl", "eval_prompts": 2,
                                          "eval_samples": 0, "max_new_tokens": 8, "sweep_steps": 1,
                                          "sweep_overrides": SWEEP_TINY,
                                          "sweep_weights": [{"correctness": 1.0, "format": 0.0},
                                                            {"correctness": 0.1, "format": 1.0}]})
    found = checks(nb)
    assert any(c.startswith(f"check: 2 steps of '{RUN}'") for c in found)  # the step-0 evaluation line is no step
    assert any(re.match(r"check: steps 1 -> 2: correctness \d\.\d{3} -> \d\.\d{3}", c) for c in found), found  # not nan
    assert "check: 1 weight changes at steps [2]" in found
    assert any(re.match(r"check: pass@1 \d\.\d{3} -> \d\.\d{3} on 2 prompts", c) for c in found)
    assert any(re.match(r"check: hypervolume \d\.\d{4} above reference \[0\.0, 0\.0\]; [12] of 2 runs on the front", c)
               for c in found)
    assert any(re.match(r"check: 2 sweep points; each point trained 1/1 steps in \d+\.\d min on average and was "
                        r"evaluated on 2 held-out prompts in \d+\.\d min; the sweep took \d+\.\d min here", c) for c in found)
    assert len(found) == len(work_cells(nb)) and images(nb) >= 5


@pytest.mark.slow
def test_04_analysis_reads_a_trl_backend_run(workdir):
    """The same notebook on a run trained by backend=trl (TRL's GRPOTrainer): metrics, checkpoint-N, config.yaml."""
    from dapo_nb.config import load_config
    from dapo_nb.trl_backend import train_with_trl

    run = "nbtrl"
    train_with_trl(load_config(overrides=[
        "backend=trl", f"data.train_path={workdir / 'data/train.jsonl'}", f"train.output_dir={workdir / 'runs' / run}",
        f"train.checkpoint_dir={workdir / 'checkpoints'}", f"train.run_name={run}", "train.total_steps=2",
        "ppo.batch_size=2", "dapo.group_size=2", "sampling.max_new_tokens=8", "dapo.dynamic_sampling=false",
        "reward.schedule={2: {format: 0.5}}", "train.threads=1"]))
    nb = execute("04_analysis", workdir, {"run_name": run, "test_path": "data/test.jsonl", "eval_prompts": 2,
                                          "eval_samples": 0, "max_new_tokens": 8, "sweep_steps": 1,
                                          "sweep_runs": [run]})
    found = checks(nb)
    assert any(c.startswith(f"check: 2 steps of '{run}'") and "checkpoint-2" in c for c in found)
    assert "check: 1 weight changes at steps [2]" in found
    assert any(re.match(r"check: pass@1 \d\.\d{3} -> \d\.\d{3} on 2 prompts", c) for c in found)
    assert len(found) == len(work_cells(nb))


@pytest.mark.slow
def test_05_studies_headless_runs_a_tiny_study_and_draws_its_front(workdir, tiny_model_dir):
    """A 2 x 2 study with soups on the tiny random model, on a local Ray cluster started by the notebook's kernel."""
    import yaml

    study = workdir / "tiny_study.yaml"
    study.write_text(yaml.safe_dump({
        "base": {"model.pretrained_model_name_or_path": str(tiny_model_dir), "data.train_path": "data/train.jsonl",
                 "data.test_path": "data/test.jsonl", "sampling.max_new_tokens": 4, "ppo.batch_size": 2,
                 "dapo.group_size": 2, "dapo.dynamic_sampling": False, "train.total_steps": 1,
                 "reward.objectives": ["correctness", "format", "clarity"]},
        "grid": {"reward.weights": [{"correctness": 1.0}, {"clarity": 1.0}]}, "seeds": [0, 1],
        "eval": {"prompts": 2}, "front": ["correctness", "clarity"],
        "soups": {"objectives": ["correctness", "clarity"], "lambdas": [0.0, 0.5, 1.0]}}))
    out = workdir / "runs" / "studies" / "tiny"
    nb = execute("05_studies", workdir, {"study": str(study), "out_dir": str(out), "resamples": 200})
    found = checks(nb)
    assert "check: 11 rows in " + str(out) + "/results.csv: 4 trained trials done, 0 failed; 2 variations x 2 seeds" in found
    assert "check: 2 variations summarized over 2 seeds each" in found
    assert any(re.match(r"check: \d+ pairwise tests, \d+ significant at 5%", c) for c in found)
    assert any(re.match(r"check: front of correctness x clarity: [12] of 2 variations on it, hypervolume", c) for c in found)
    assert "check: the sweep trained 4 runs" in " ".join(found) and "the soups reuse 4 of them and add 2 evaluations of mixed weights" in " ".join(found)
    assert (out / "front.png").is_file() and len(found) == len(work_cells(nb)) and images(nb) >= 1
