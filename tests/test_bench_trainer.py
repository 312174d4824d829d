"""benchmarks/bench_trainer.py's `--bf16`: the precision reaches our trainer, and the summary says what it cost."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_bf16_flag_reaches_our_trainer(embedded_dir, tmp_path):
    out = tmp_path / "summary.json"
    command = [sys.executable, "benchmarks/bench_trainer.py", "--model", "tiny", "--tokenizer", str(embedded_dir),
               "--reward", "text_hash", "--only", "ours", "--rounds", "1", "--steps", "1", "--threads", "1",
               "--max-new-tokens", "8", "--bf16", "--out", str(out)]
    proc = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, (proc.stdout + proc.stderr)[-4000:]
    summary = json.loads(out.read_text())
    assert summary["settings"]["bf16"] is True
    assert "bf16 mixed precision" in proc.stdout
    # float32 gives the same log-probs in the rollout and the update (< 1e-4, tests/test_trainer.py); bf16 does not
    assert 1e-4 < summary["ours"]["rollout_update_logprob_gap"] < 1.0
