"""The GPU benchmark (`make bench-gpu`, benchmarks/bench_gpu.py) cannot rot unseen: its tiny CPU mode runs here."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PHASES = {"generation", "reward", "other_scoring", "update"}


def test_tiny_cpu_mode_runs_end_to_end_and_prints_the_summary(embedded_dir, tmp_path):
    out = tmp_path / "summary.json"
    command = [sys.executable, "benchmarks/bench_gpu.py", "--device", "cpu", "--models", "tiny", "--threads", "1",
               "--steps", "1", "--only", "ours", "--tokenizer", str(embedded_dir), "--out", str(out)]
    proc = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, (proc.stdout + proc.stderr)[-4000:]
    summary = json.loads(proc.stdout.strip().splitlines()[-1])
    assert summary == json.loads(out.read_text())

    assert summary["device"] == "cpu" and summary["device_name"]
    assert set(summary["versions"]) == {"python", "torch", "transformers", "trl"}
    tiny = summary["models"]["tiny"]
    assert tiny["settings"]["contenders"] == ["ours"] and tiny["settings"]["reward"] == "text_hash"
    assert tiny["parameters"] > 0 and tiny["elapsed_s"] >= 0
    ours = tiny["ours"]
    assert ours["seconds_per_step"] > 0 and ours["completions_per_s"] > 0 and ours["generation_tokens_per_s"] > 0
    assert set(ours["seconds_per_step_by_phase"]) == PHASES == set(ours["time_share"])
    assert ours["peak_gpu_mib"] is None and ours["peak_rss_mib"] > 0  # no GPU memory on the CPU
    assert 0 < ours["mean_length"] <= 8
    assert summary["elapsed_s"] >= tiny["elapsed_s"]


def test_bench_gpu_target_installs_offline_without_the_venv():
    """On the GPU machine: the machine's python3, wheels from .gpu/ only, never a torch download or the .venv."""
    if shutil.which("make") is None:
        pytest.skip("make is not installed")
    recipe = subprocess.run(["make", "-n", "bench-gpu"], cwd=ROOT, capture_output=True, text=True, check=True).stdout
    assert "--no-index" in recipe and "--target" in recipe and "benchmarks/bench_gpu.py" in recipe
    assert ".venv" not in recipe and "torch" not in recipe
    sys.path.insert(0, str(ROOT / "benchmarks"))
    try:
        import gpu_prep
    finally:
        sys.path.remove(str(ROOT / "benchmarks"))
    assert "torch" not in gpu_prep.PACKAGES
    assert ".gpu/" in (ROOT / ".gitignore").read_text().splitlines()
