"""`dapo-nb export verl`: files, refusals, and the exported run checked by verl 0.9.1's own code."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from dapo_nb.cli import main as cli_main
from dapo_nb.config import ConfigError, load_config
from dapo_nb.models import embedded_model_dir, load_tokenizer
from dapo_nb.rewards import MultiObjectiveReward
from dapo_nb.rewards.verl_export import VerlExportError
from dapo_nb.verl_recipe import export_verl

ROOT = Path(__file__).resolve().parents[1]
VERL_SITE = Path(sys.prefix) / "verl-site"  # `make install`: pip install --no-deps --target .venv/verl-site
DAPO_REWARD = ["reward.objectives=[correctness,format,overlong]", "reward.weights={correctness: 1, format: 0.5, overlong: 1}",
               "reward.overlong_buffer_len=32", "sampling.max_new_tokens=64"]


def test_cli_writes_data_reward_and_script(tmp_path, capsys):
    out = tmp_path / "verl"
    assert cli_main(["export", "verl", f"out_dir={out}", *DAPO_REWARD, "ppo.batch_size=8", "dapo.group_size=16"]) == 0
    assert sorted(p.name for p in out.iterdir()) == ["reward.py", "run_verl_dapo.sh", "test.parquet", "train.parquet"]
    script = (out / "run_verl_dapo.sh").read_text()
    for setting in ("clip_ratio_low=0.2", "clip_ratio_high=0.28", "loss_agg_mode=token-mean",
                    "algorithm.filter_groups.enable=True", "algorithm.filter_groups.metric=acc",
                    "overlong_buffer_cfg.len=32", "overlong_buffer_cfg.penalty_factor=1.0", "max_resp_len=64",
                    "algorithm.use_kl_in_reward=False", "actor_rollout_ref.actor.use_kl_loss=False",
                    "actor_rollout_ref.rollout.n=16", "data.train_batch_size=8"):
        assert setting in script, setting
    assert os.access(out / "run_verl_dapo.sh", os.X_OK)
    assert "bash " in capsys.readouterr().out
    # overlong went to verl's reward manager, not into reward.py
    module = (out / "reward.py").read_text()
    assert '"overlong"' not in module.split("OBJECTIVE_FUNCTIONS =")[1]


@pytest.mark.parametrize("overrides, error, match", [
    (["dapo.std_scale=batch"], ConfigError, "std_scale=batch"),
    ([*DAPO_REWARD, "reward.scalarizer=tchebycheff"], ConfigError, "overlong"),
    (["reward.objectives=[correctness,length]", "reward.weights={correctness: 1, length: 0.1}"], VerlExportError,
     "token counts"),
])
def test_what_cannot_travel_is_refused_before_writing(tmp_path, overrides, error, match):
    with pytest.raises(error, match=match):
        export_verl(load_config(overrides=overrides), tmp_path / "out")
    assert not (tmp_path / "out").exists()


def test_export_loads_neither_torch_nor_transformers(tmp_path):
    """Exporting only writes files: a fresh interpreter running it must not import the training stack."""
    code = (
        "import sys\n"
        "from dapo_nb.cli import main\n"
        f"rc = main(['export', 'verl', 'out_dir={tmp_path / 'v'}', 'model.pretrained_model_name_or_path=Qwen/Qwen2.5-1.5B-Instruct',"
        f" 'data.train_path={ROOT / 'data' / 'train.jsonl'}', 'data.test_path={ROOT / 'data' / 'test.jsonl'}'])\n"
        "print(rc, sorted(m for m in ('torch', 'transformers', 'trl') if m in sys.modules))\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=tmp_path, timeout=120)
    assert out.stdout.strip().splitlines()[-1] == "0 []", out.stderr[-2000:]
    assert (tmp_path / "v" / "run_verl_dapo.sh").is_file()


def test_cli_needs_out_dir(capsys):
    assert cli_main(["export", "verl", "ppo.batch_size=2"]) == 2
    assert "out_dir" in capsys.readouterr().err


def test_exported_run_through_verl(tmp_path):
    """verl composes the script's overrides, loads reward.py with its loader, reads the parquet, and its DAPO
    reward manager (overlong buffer included) gives exactly our reward with the `overlong` objective."""
    if not (VERL_SITE / "verl").is_dir():
        if os.environ.get("CI"):
            pytest.fail(f"{VERL_SITE} is missing: `make install` puts verl's modules there")
        pytest.skip(f"verl is not installed in {VERL_SITE} (make install does it)")
    cfg = load_config(overrides=DAPO_REWARD)
    out = tmp_path / "verl"
    export_verl(cfg, out)
    tokenizer_dir = embedded_model_dir()
    tokenizer = load_tokenizer(str(tokenizer_dir))
    long_answer = "Let me think. " + "We add the numbers one by one and check each step carefully. " * 4 + "\nAnswer: 19"
    cases = [["12 + 7 = 19\nAnswer: 19", "19"], ["I think it is 20", "19"], [long_answer, "19"]]
    env = {**os.environ, "PYTHONPATH": str(VERL_SITE), "HF_HUB_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false"}
    proc = subprocess.run([sys.executable, str(ROOT / "tests/verl_support/check_export.py"), str(out),
                           str(tokenizer_dir), json.dumps(cases)], capture_output=True, text=True, env=env,
                          cwd=tmp_path, timeout=600)
    lines = [l for l in proc.stdout.splitlines() if l.startswith("VERL_CHECK ")]
    assert proc.returncode == 0 and lines, proc.stdout[-3000:] + proc.stderr[-3000:]
    verl = json.loads(lines[0][len("VERL_CHECK "):])

    assert verl["verl"] == "0.9.1"
    assert verl["filter_groups"] == {"enable": True, "metric": "acc"}
    assert verl["use_kl_in_reward"] is False
    assert verl["actor"] == {"clip_ratio_low": 0.2, "clip_ratio_high": 0.28, "loss_agg_mode": "token-mean",
                             "use_kl_loss": False}
    assert verl["reward_manager"] == "dapo" and verl["max_resp_len"] == 64
    assert verl["overlong_buffer_cfg"] == {"enable": True, "len": 32, "penalty_factor": 1.0, "log": False}
    assert verl["dataset_rows"] == 1000
    assert verl["first_raw_prompt"][0]["role"] == "system"  # our system prompt travelled inside the parquet

    lengths = [r["num_tokens"] for r in verl["results"]]
    assert lengths == [len(tokenizer.encode(text, add_special_tokens=False)) for text, _ in cases]
    assert 32 < lengths[2] <= 64, "the long case must fall inside the overlong buffer"
    ours = MultiObjectiveReward(["correctness", "format", "overlong"], {"correctness": 1, "format": 0.5, "overlong": 1},
                                overlong_max_len=64, overlong_buffer_len=32)
    expected = ours.score([t for t, _ in cases], [g for _, g in cases], num_tokens=lengths)
    assert [r["reward"] for r in verl["results"]] == pytest.approx(expected.scores, abs=1e-6)
    assert expected.objectives["overlong"][2] < 0  # the penalty really was exercised
    assert [r["info"]["acc"] for r in verl["results"]] == expected.objectives["correctness"]
