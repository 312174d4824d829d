"""benchmarks/steer.py (weight steering, headless) end to end on a tiny random model: 2 steps before the switch, 2 from it.

The tiny model (hidden 32, 2 layers, the embedded tokenizer) learns nothing; the test checks the mechanics: both runs
write metrics, the steered run's `weights/<objective>` is 0 before the switch step and the given weight from it, the
control's stays 0, the objective is scored in both, and the figure and summary are written where asked.
About 10 s on the 2-core machine (the embedded tokenizer is cached; the model has 0.6 M parameters).
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_steer_tiny_run_applies_the_schedule_and_draws_the_figure(tiny_model_dir, tmp_path):
    out, png = tmp_path / "steer", tmp_path / "figures" / "steering.png"
    tiny = ["model.pretrained_model_name_or_path=" + str(tiny_model_dir), "sampling.max_new_tokens=8",
            "ppo.batch_size=2", "ppo.mini_batch_size=0", "dapo.group_size=2", "dapo.dynamic_sampling=false", "train.threads=1",
            "reward.overlong_buffer_len=4"]  # fits the 8 tokens should the recipe weight the overlong objective
    command = [sys.executable, "benchmarks/steer.py", "--steps", "4", "--switch-step", "3", "--objective", "length",
               "--weight", "0.5", "--out", str(out), "--png", str(png), *(a for o in tiny for a in ("--set", o))]
    start = time.perf_counter()
    proc = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=300)
    seconds = time.perf_counter() - start
    assert proc.returncode == 0, (proc.stdout + proc.stderr)[-4000:]
    assert seconds < 120, f"took {seconds:.0f} s"

    metrics = {name: [json.loads(line) for line in (out / name / "metrics.jsonl").read_text().splitlines()]
               for name in ("control", "steered")}
    for rows in metrics.values():
        assert [m["step"] for m in rows] == [1, 2, 3, 4]
        assert all(-1.0 <= m["rewards/length/mean"] <= 0.0 for m in rows)  # scored in both runs, weight 0 or not
    assert [m["weights/length"] for m in metrics["steered"]] == [0.0, 0.0, 0.5, 0.5]
    assert [m["weights/length"] for m in metrics["control"]] == [0.0, 0.0, 0.0, 0.0]
    assert [m["weights/correctness"] for m in metrics["steered"]] == [m["weights/correctness"] for m in metrics["control"]]

    summary = json.loads(proc.stdout.strip().splitlines()[-1])
    assert summary == json.loads((out / "summary.json").read_text())
    assert summary["schedule_took_effect"] is True and summary["switch_step"] == 3 and summary["steps"] == 4
    assert summary["steered"]["weights_before"] == [0.0] and summary["steered"]["weights_after"] == [0.5]
    assert set(summary["rolling_gap"]) == {"3", "4"}  # JSON keys
    assert summary["first_steered_step"] in (None, 3, 4)
    assert png.is_file() and png.stat().st_size > 10_000 and summary["figure"] == str(png)
    assert "schedule took effect (weights/length): yes" in proc.stdout
    assert "first steered step:" in proc.stdout and "same run before the switch:" in proc.stdout
