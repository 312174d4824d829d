"""The `dapo-nb` command line as a user runs it: real subprocesses, real model loading."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def dapo_nb(*args, cwd=ROOT, timeout=600):
    return subprocess.run([sys.executable, "-m", "dapo_nb.cli", *args], cwd=cwd, capture_output=True, text=True,
                          timeout=timeout)


def test_unknown_key_fails_with_a_suggestion_and_no_traceback():
    result = dapo_nb("train", "ppo.batchsz=2")
    assert result.returncode == 2
    assert "did you mean ppo.batch_size" in result.stderr and "Traceback" not in result.stderr


def test_missing_model_and_bad_data_fail_cleanly(tmp_path, tiny_model_dir):
    bad = tmp_path / "train.jsonl"
    bad.write_text('{"qid": "a", "prompt": "1+1?", "ground_truth": "2"}\n{"qid": "b", "prompt": ""}\n')
    result = dapo_nb("train", f"data.train_path={bad}", f"model.pretrained_model_name_or_path={tmp_path / 'nope'}")
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert "ModelNotFoundError" in result.stderr and "`default`" in result.stderr
    result = dapo_nb("train", f"data.train_path={bad}", f"model.pretrained_model_name_or_path={tiny_model_dir}")
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert f"{bad}:2" in result.stderr and "prompt" in result.stderr


def test_train_then_eval_a_checkpoint(tmp_path, tiny_model_dir):
    train = tmp_path / "train.jsonl"
    train.write_text("".join(json.dumps({"qid": f"q{i}", "prompt": f"{i}+1?", "ground_truth": str(i + 1)}) + "\n"
                             for i in range(4)))
    common = [f"model.pretrained_model_name_or_path={tiny_model_dir}", f"data.train_path={train}",
              f"data.test_path={train}", "sampling.max_new_tokens=4", "ppo.batch_size=2", "dapo.group_size=2"]
    result = dapo_nb("train", *common, "train.total_steps=1", "dapo.dynamic_sampling=false", "train.run_name=cli",
                     f"train.output_dir={tmp_path / 'run'}", f"train.checkpoint_dir={tmp_path / 'ckpt'}")
    assert result.returncode == 0, result.stderr[-2000:]
    assert "ppo:\n  batch_size: 2" in result.stdout  # the resolved config is printed
    summary = json.loads(result.stdout.strip().splitlines()[-1])
    assert summary["step"] == 1 and Path(summary["checkpoint"]).is_dir()
    result = dapo_nb("eval", *common[1:], f"model.pretrained_model_name_or_path={summary['checkpoint']}",
                     "eval.num_samples=2")
    assert result.returncode == 0, result.stderr[-2000:]
    report = json.loads(result.stdout.strip().splitlines()[-1])
    assert report["num_prompts"] == 4 and 0.0 <= report["pass@1"] <= 1.0 and "avg@2" in report
    assert "greedy/correctness/mean" in report
