"""`dapo-nb` as an installed command run from any directory: the shipped data travels with the package, and every
user error ends in one line on stderr and a non-zero exit (a traceback only with --debug).

Each test runs the installed `dapo-nb` entry point (next to this interpreter) in a subprocess whose working
directory is a fresh temporary folder, so nothing resolves against the repository."""

from __future__ import annotations

import importlib.resources
import json
import os
import subprocess
import sys
import tomllib
from fnmatch import fnmatch
from pathlib import Path

import pytest

from dapo_nb import cli
from dapo_nb.config import Config, load_config
from dapo_nb.data import load_prompts

ROOT = Path(__file__).resolve().parents[1]
DAPO_NB = Path(sys.executable).with_name("dapo-nb")  # the console script pip installed with the package
BUILTIN = {"builtin:arithmetic/train": ("arithmetic/train.jsonl", 1000), "builtin:arithmetic/test": ("arithmetic/test.jsonl", 150),
           "builtin:arithmetic/test_rephrased": ("arithmetic/test_rephrased.jsonl", 150),
           "builtin:arithmetic/test_heldout": ("arithmetic/test_heldout.jsonl", 150),
           "builtin:arithmetic/test_handwritten": ("arithmetic/test_handwritten.jsonl", 60)}


def dapo_nb(*args, cwd: Path, env: dict | None = None, timeout: int = 600) -> subprocess.CompletedProcess:
    assert DAPO_NB.is_file(), f"{DAPO_NB} is missing: install the package (pip install -e .)"
    base = {k: v for k, v in os.environ.items() if k != "DAPO_NB_DEBUG"}
    return subprocess.run([str(DAPO_NB), *args], cwd=cwd, env={**base, **(env or {})}, capture_output=True, text=True,
                          timeout=timeout)


def assert_one_line_error(result: subprocess.CompletedProcess, code: int, *names: str) -> str:
    """Exit code `code`, exactly one line on stderr naming each of `names`, no traceback anywhere."""
    output = result.stdout + result.stderr
    assert result.returncode == code, output[-3000:]
    assert "Traceback" not in output, output[-3000:]
    lines = result.stderr.splitlines()
    assert len(lines) == 1, result.stderr
    for name in names:
        assert name in lines[0], lines[0]
    return lines[0]


# ----------------------------------------------------------------------------
# The shipped data is package data


def test_shipped_data_is_package_data_and_the_default():
    root = importlib.resources.files("dapo_nb") / "data_files"
    declared = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]["package-data"]
    cfg = Config()
    assert (cfg.data.train_path, cfg.data.test_path) == tuple(BUILTIN)[:2]
    for name, (relative, rows) in BUILTIN.items():
        assert (root / relative).is_file(), f"{relative} is missing from the installed package"
        # what a wheel carries: pyproject's package-data for dapo_nb.data_files covers the file
        assert any(fnmatch(relative, pattern) for pattern in declared["dapo_nb.data_files"]), declared
        assert len(load_prompts(name)) == rows
        # the clone's data/ folder links to the same files, for paths written before the move
        assert (ROOT / "data" / Path(relative).name).read_bytes() == (root / relative).read_bytes()
    with pytest.raises(FileNotFoundError, match="builtin:arithmetic/train"):
        load_prompts("builtin:arithmetic/nope")


def test_export_verl_from_another_directory_uses_the_packaged_data(tmp_path, embedded_dir):
    result = dapo_nb("export", "verl", "out_dir=verl_run", cwd=tmp_path)
    assert result.returncode == 0 and "Traceback" not in result.stderr, result.stderr[-3000:]
    import pyarrow.parquet as pq

    assert pq.read_table(tmp_path / "verl_run" / "train.parquet").num_rows == 1000
    assert pq.read_table(tmp_path / "verl_run" / "test.parquet").num_rows == 150
    assert (tmp_path / "verl_run" / "run_verl_dapo.sh").is_file()


def test_smoke_from_another_directory(tmp_path, tiny_model_dir):
    result = dapo_nb("smoke", f"model.pretrained_model_name_or_path={tiny_model_dir}", "ppo.batch_size=2",
                     "dapo.group_size=2", "sampling.max_new_tokens=4", cwd=tmp_path)
    assert result.returncode == 0 and "Traceback" not in result.stderr, result.stderr[-3000:]
    assert "train_path: builtin:arithmetic/train" in result.stdout
    assert "--- arith-L" in result.stdout and "4 completions" in result.stdout


# ----------------------------------------------------------------------------
# User errors: one line, exit 2


def _bad_jsonl(tmp_path: Path) -> str:
    (tmp_path / "bad.jsonl").write_text('{"qid": "a", "prompt": "1+1?", "ground_truth": "2"}\n{"qid": "b", "prompt": ""}\n')
    return "bad.jsonl"


def _broken_plugin(tmp_path: Path) -> str:
    (tmp_path / "broken_reward.py").write_text("def compute_score(:\n")
    return "broken_reward.py"


def _bad_yaml(tmp_path: Path) -> str:
    (tmp_path / "bad.yaml").write_text("ppo: [\n")
    return "bad.yaml"


def _bad_checkpoint(tmp_path: Path) -> str:
    (tmp_path / "ckpt" / "step-1").mkdir(parents=True)
    (tmp_path / "ckpt" / "step-1" / "config.json").write_text("{}")
    return "ckpt/step-1"


@pytest.mark.parametrize("args, names", [
    (["train", "data.train_path=missing.jsonl"], ["data.train_path", "missing.jsonl", "FileNotFoundError"]),
    (["eval", "data.test_path=builtin:arithmetic/nope"], ["data.test_path", "builtin:arithmetic/nope", "builtin:arithmetic/test"]),
    (["train", "ppo.batch_size=abc"], ["ppo.batch_size", "expected int"]),
    (["smoke", "sampling.top_p=2"], ["sampling.top_p"]),
    (["train", "ppo.batchsz=2"], ["ppo.batchsz", "did you mean ppo.batch_size"]),
    (["eval", "missing.yaml"], ["missing.yaml", "does not exist"]),
    (["train", "{bad_yaml}", "ppo.batch_size=2"], ["config file bad.yaml", "line 2"]),
    (["train", "data.train_path={bad_jsonl}"], ["data.train_path", "bad.jsonl:2", "prompt"]),
    (["smoke", "data.train_path={bad_jsonl}"], ["data.train_path", "bad.jsonl:2"]),
    (["train", "reward.plugin={broken_plugin}"], ["PluginError", "broken_reward.py", "SyntaxError"]),
    (["export", "verl", "out_dir=out", "reward.plugin={broken_plugin}"], ["PluginError", "broken_reward.py"]),
    (["export", "verl", "out_dir=out", "data.train_path=missing.jsonl"], ["missing.jsonl"]),
    (["export", "verl"], ["out_dir"]),
    (["eval", "model.pretrained_model_name_or_path=checkpoints/dapo/step-50"],
     ["model.pretrained_model_name_or_path", "checkpoints/dapo/step-50"]),
    (["eval", "model.pretrained_model_name_or_path={tmp}/checkpoints/dapo/step-50"],
     ["ModelNotFoundError", "checkpoints/dapo/step-50", "config.json"]),
    (["eval", "model.pretrained_model_name_or_path={bad_checkpoint}"], ["model.pretrained_model_name_or_path=ckpt/step-1"]),
    (["keys", "no_such_key"], ["no_such_key"]),
])
def test_user_errors_are_one_line_and_exit_2(tmp_path, args, names):
    makers = {"bad_jsonl": _bad_jsonl, "broken_plugin": _broken_plugin, "bad_yaml": _bad_yaml,
              "bad_checkpoint": _bad_checkpoint}
    values = {"tmp": tmp_path, **{key: "" for key in makers}}
    text = " ".join(args)
    for key, make in makers.items():
        if "{" + key + "}" in text:
            values[key] = make(tmp_path)
    result = dapo_nb(*[a.format(**values) for a in args], cwd=tmp_path)
    line = assert_one_line_error(result, 2, *names)
    assert line.startswith(f"dapo-nb {args[0]}: ")
    assert not (tmp_path / "out").exists()  # a failed export writes nothing


def test_unknown_command_is_one_line(tmp_path):
    assert_one_line_error(dapo_nb("trian", cwd=tmp_path), 2, "trian", "train")


def test_errors_fail_before_loading_the_model(tmp_path):
    """A missing data file or a broken plugin is found before the (slow) model load: the model path is never read."""
    result = dapo_nb("train", "data.train_path=missing.jsonl", "model.pretrained_model_name_or_path=./no-model",
                     cwd=tmp_path)
    assert_one_line_error(result, 2, "missing.jsonl")


# ----------------------------------------------------------------------------
# --debug, and bugs


@pytest.mark.parametrize("how", ["flag-last", "flag-first", "env"])
def test_debug_shows_the_traceback(tmp_path, how):
    args = ["train", "data.train_path=missing.jsonl"]
    args = {"flag-last": [*args, "--debug"], "flag-first": ["--debug", *args], "env": args}[how]
    result = dapo_nb(*args, cwd=tmp_path, env={"DAPO_NB_DEBUG": "1"} if how == "env" else None)
    assert result.returncode != 0
    assert "Traceback (most recent call last)" in result.stderr
    assert "FileNotFoundError: prompt file 'missing.jsonl' does not exist" in result.stderr


def test_a_bug_is_one_line_with_a_hint_and_exit_1(monkeypatch, capsys):
    def broken(_args):
        raise AttributeError("'NoneType' object has no attribute 'step'")

    monkeypatch.setitem(cli.COMMANDS, "train", broken)
    monkeypatch.delenv("DAPO_NB_DEBUG", raising=False)
    assert cli.main(["train"]) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "AttributeError" in err and "'step'" in err and "--debug" in err
    with pytest.raises(AttributeError):
        cli.main(["train", "--debug"])


def test_a_package_error_during_the_run_is_a_user_error(monkeypatch, capsys):
    """UnfilledBatchError (dapo.on_unfilled=error) is raised mid-run: still the user's setting, exit 2."""
    from dapo_nb.runs import UnfilledBatchError

    def unfilled(_args):
        raise UnfilledBatchError("step 3: 1 of 4 groups had signal after 4 generation batches\n(dapo.on_unfilled=error)")

    monkeypatch.setitem(cli.COMMANDS, "train", unfilled)
    assert cli.main(["train"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "UnfilledBatchError" in err and "dapo.on_unfilled=error" in err


def test_a_value_error_outside_input_reading_is_a_bug(monkeypatch, capsys):
    def buggy(_args):
        load_config(overrides=["ppo.batch_size=2"])
        raise ValueError("shapes (3,) and (4,) do not match")

    monkeypatch.setitem(cli.COMMANDS, "train", buggy)
    assert cli.main(["train"]) == 1
    assert "--debug" in capsys.readouterr().err


def test_user_paths_resolve_against_the_working_directory(tmp_path, tiny_model_dir):
    """The relative paths a user types resolve against the working directory."""
    (tmp_path / "mine.jsonl").write_text("".join(
        json.dumps({"qid": f"q{i}", "prompt": f"{i}+1?", "ground_truth": str(i + 1)}) + "\n" for i in range(2)))
    result = dapo_nb("eval", f"model.pretrained_model_name_or_path={tiny_model_dir}", "data.test_path=mine.jsonl",
                     "eval.num_samples=0", "sampling.max_new_tokens=2", cwd=tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    report = json.loads(result.stdout.strip().splitlines()[-1])
    assert report["data"] == "mine.jsonl" and report["num_prompts"] == 2
