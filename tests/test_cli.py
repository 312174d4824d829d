"""The `dapo-nb` command line as a user runs it: real subprocesses, real model loading."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from dapo_nb.config import Config, all_keys, key_docs, load_config, to_dict

ROOT = Path(__file__).resolve().parents[1]


def dapo_nb(*args, cwd=ROOT, timeout=600):
    return subprocess.run([sys.executable, "-m", "dapo_nb.cli", *args], cwd=cwd, capture_output=True, text=True,
                          timeout=timeout)


def test_unknown_key_fails_with_a_suggestion_and_no_traceback():
    result = dapo_nb("train", "ppo.batchsz=2")
    assert result.returncode == 2
    assert "did you mean ppo.batch_size" in result.stderr and "Traceback" not in result.stderr


def test_missing_model_and_bad_data_fail_cleanly(tmp_path, tiny_model_dir):
    result = dapo_nb("train", f"model.pretrained_model_name_or_path={tmp_path / 'nope'}")
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert "ModelNotFoundError" in result.stderr and "`default`" in result.stderr
    bad = tmp_path / "train.jsonl"
    bad.write_text('{"qid": "a", "prompt": "1+1?", "ground_truth": "2"}\n{"qid": "b", "prompt": ""}\n')
    result = dapo_nb("train", f"data.train_path={bad}", f"model.pretrained_model_name_or_path={tiny_model_dir}")
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert f"{bad}:2" in result.stderr and "prompt" in result.stderr


def test_train_then_eval_a_checkpoint(tmp_path, tiny_model_dir):
    """From a directory outside the repository: training reads the packaged task by default; the run, the
    checkpoint and the relative paths given to eval all live in the working directory."""
    (tmp_path / "test.jsonl").write_text("".join(
        json.dumps({"qid": f"q{i}", "prompt": f"{i}+1?", "ground_truth": str(i + 1)}) + "\n" for i in range(4)))
    common = ["sampling.max_new_tokens=4", "ppo.batch_size=2", "dapo.group_size=2"]
    result = dapo_nb("train", f"model.pretrained_model_name_or_path={tiny_model_dir}", *common, "train.total_steps=1",
                     "dapo.dynamic_sampling=false", "train.run_name=cli", cwd=tmp_path)
    assert result.returncode == 0, result.stderr[-2000:]
    assert "ppo:\n  batch_size: 2" in result.stdout  # the resolved config is printed
    assert "train_path: builtin:arithmetic/train" in result.stdout
    summary = json.loads(result.stdout.strip().splitlines()[-1])
    assert summary["step"] == 1 and summary["checkpoint"] == str(Path("checkpoints") / "cli" / "step-1")
    assert (tmp_path / summary["checkpoint"]).is_dir() and (tmp_path / "runs" / "cli" / "metrics.jsonl").is_file()
    result = dapo_nb("eval", *common, f"model.pretrained_model_name_or_path=./{summary['checkpoint']}",
                     "data.test_path=test.jsonl", "eval.num_samples=2", cwd=tmp_path)
    assert result.returncode == 0, result.stderr[-2000:]
    report = json.loads(result.stdout.strip().splitlines()[-1])
    assert report["num_prompts"] == 4 and 0.0 <= report["pass@1"] <= 1.0 and "avg@2" in report
    assert "rewards/correctness/mean" in report and "reward" in report  # named as in training's metrics


# ----------------------------------------------------------------------------
# A command line that explains itself


@pytest.mark.parametrize("command", ["train", "eval", "sweep", "smoke", "export", "keys"])
@pytest.mark.parametrize("flag", ["--help", "-h"])
def test_each_command_has_help(command, flag, tmp_path):
    args = [command, "verl", flag] if command == "export" and flag == "-h" else [command, flag]
    result = dapo_nb(*args, "ppo.batch_size=2", cwd=tmp_path)  # help wins over everything else
    assert result.returncode == 0 and not result.stderr, result.stderr
    assert result.stdout.startswith(f"usage: dapo-nb {command}")
    assert "--debug" in result.stdout and "example" in result.stdout


def test_top_level_help_lists_the_commands():
    result = dapo_nb("--help")
    assert result.returncode == 0
    for command in ("train", "eval", "sweep STUDY.yaml", "smoke", "export verl", "keys [PATTERN]", "--debug",
                    "builtin:arithmetic/train"):
        assert command in result.stdout


def test_every_key_is_documented_in_config_py():
    docs = key_docs()
    assert list(docs) == all_keys()
    assert not [k for k, doc in docs.items() if not doc], "every dataclass field in config.py needs a `# ...` comment"
    # one line of comment, and a field whose comment continues on comment-only lines below it
    assert docs["ppo.batch_size"].startswith("seed key: prompt groups per training step")
    assert docs["model.autocast"].startswith("auto | none | bf16: rollouts and update forward passes")
    assert docs["model.autocast"].endswith("auto = bf16 for a float32 model on a CPU with native bf16, else none")
    assert "#" not in docs["model.autocast"] and "  " not in docs["model.autocast"]
    assert docs["data.train_where"].endswith("{} = train on all data.where keeps")  # a class's last field continues too


def test_keys_prints_default_type_and_documentation():
    result = dapo_nb("keys")
    assert result.returncode == 0, result.stderr
    heads = [line for line in result.stdout.splitlines() if not line.startswith(" ")]
    assert [h.split("=", 1)[0] for h in heads] == all_keys()
    text = result.stdout
    assert "ppo.batch_size=4  (int)\n    seed key: prompt groups per training step" in text
    assert "data.train_path=builtin:arithmetic/train  (str)\n" in text
    assert "model.device_map=null  (str | None)\n" in text
    assert "reward.weights={correctness: 1.0, format: 0.1}  (dict[str, float])\n" in text
    autocast = text.split("model.autocast=auto  (str)\n", 1)[1].split("\nmodel.", 1)[0]
    assert "stay in their dtype" in " ".join(autocast.split())  # the continuation line of its comment
    # a printed default is the override that sets it: feeding every line back gives the default config
    overrides = [h.split("  (", 1)[0] for h in heads]
    assert to_dict(load_config(overrides=overrides)) == to_dict(Config())


@pytest.mark.parametrize("pattern, expected", [
    ("batch_size", ["ppo.batch_size", "ppo.mini_batch_size", "ppo.micro_batch_size", "dapo.gen_batch_size"]),
    ("BATCH_SIZE", ["ppo.batch_size", "ppo.mini_batch_size", "ppo.micro_batch_size", "dapo.gen_batch_size"]),
    ("dapo.eps_*", ["dapo.eps_low", "dapo.eps_high"]),
    ("*.lora.?", ["model.lora.r"]),
])
def test_keys_filters_by_substring_or_glob(pattern, expected):
    result = dapo_nb("keys", pattern)
    assert result.returncode == 0, result.stderr
    heads = [line.split("=", 1)[0] for line in result.stdout.splitlines() if not line.startswith(" ")]
    assert heads == [k for k in all_keys() if k in expected]


def test_keys_and_help_import_no_torch(tmp_path):
    code = ("import contextlib, io, sys\n"
            "from dapo_nb.cli import main\n"
            "with contextlib.redirect_stdout(io.StringIO()):\n"
            "    codes = [main(['keys']), main(['keys', 'ppo.*']), main(['train', '--help']), main(['--help'])]\n"
            "print(codes, sorted(m for m in ('torch', 'transformers', 'trl') if m in sys.modules))\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=tmp_path, timeout=120)
    assert out.stdout.strip().splitlines()[-1] == "[0, 0, 0, 0] []", out.stderr[-2000:]
