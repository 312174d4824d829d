"""A reward plugin that records what it is called with, to show that every scorer makes the same call.

`write_recorder(folder)` writes `recorder.py` with two plugins: `compute_score` (the seed's contract: it records the
split and the keys of `info`) and `record` (a TRL function: it records the names of its keyword arguments and
`trainer_state.global_step`). Each call appends a JSON line to `recorder.jsonl` beside the file, so the records of a
subprocess, a papermill kernel or a Ray worker come back too. Both return 0.0: they never change a reward.
"""

from __future__ import annotations

import json
from pathlib import Path

RECORDER = '''
import json
from pathlib import Path

LOG = Path(__file__).with_suffix(".jsonl")


def _write(record):
    with LOG.open("a", encoding="utf-8") as log:
        log.write(json.dumps(record) + "\\n")


def compute_score(split, solution_str, ground_truth, info):
    _write({"contract": "seed", "split": split, "keys": sorted(info)})
    return 0.0


def record(completions, **kwargs):
    _write({"contract": "trl", "keys": sorted(["completions", *kwargs]), "step": kwargs["trainer_state"].global_step})
    return [0.0] * len(completions)
'''

# what every scorer passes besides the record's own columns
TRL_KEYWORDS = {"completions", "prompts", "completion_ids", "trainer_state", "ground_truth", "qid", "data_source"}
SEED_INFO_KEYS = {"index", "split", "step", "prompt", "num_tokens", "group_id", "qid", "data_source"}


def write_recorder(folder: Path) -> tuple[Path, Path]:
    """recorder.py (plugins `recorder` and `record`) and the log it appends to."""
    path = Path(folder) / "recorder.py"
    path.write_text(RECORDER, encoding="utf-8")
    log = path.with_suffix(".jsonl")
    log.unlink(missing_ok=True)
    return path, log


def plugin_entries(path: Path) -> list[str]:
    return [str(path), f"{path}:record"]


def recorded(log: Path) -> dict[str, set]:
    """{"trl": {keyword sets}, "seed:<split>": {info key sets}, "steps": {global_step values}}, read from the log."""
    out: dict[str, set] = {}
    for line in log.read_text(encoding="utf-8").splitlines():
        record = json.loads(line)
        name = "trl" if record["contract"] == "trl" else f"seed:{record['split']}"
        out.setdefault(name, set()).add(tuple(record["keys"]))
        if "step" in record:
            out.setdefault("steps", set()).add(record["step"])
    return out


def expected(columns) -> tuple[tuple, tuple]:
    """The TRL keyword names and the seed info keys for data whose records have these extra columns."""
    return tuple(sorted(TRL_KEYWORDS | set(columns))), tuple(sorted(SEED_INFO_KEYS | set(columns)))
