"""Export to verl: a standalone reward module, and our jsonl prompts as verl's parquet.

`write_verl_reward_module(path, objectives, weights, ...)` (or `reward_to_verl_module(reward, path)`)
writes one `.py` file exposing verl's
`compute_score(data_source, solution_str, ground_truth, extra_info=None) -> dict` with `score`
(the same scalarization as ours), `acc` (correctness, what verl's DAPO dynamic sampling should
filter on: `algorithm.filter_groups.metric=acc`) and one key per objective. It carries copies of
`answer.py`, the built-in objective functions and the per-sample scalarizers, so it needs only the
standard library plus, optionally, `math-verify` (without it, non-numeric answers are compared as
text). Its `correctness` (and so `acc`) applies our marked-answer rule (`MARKED_ANSWER_ONLY`, from
`reward.marked_answer_only`). Point verl (0.9.1) at it with `reward.custom_reward_function.path=<file>`
and `reward.custom_reward_function.name=compute_score`, as `dapo-nb export verl` does.

What cannot travel, and why (each raises a clear error): `overlong` / `length` (verl's
compute_score never sees token counts; use verl's DAPO overlong buffer,
`reward.reward_kwargs.overlong_buffer_cfg`, which `dapo-nb export verl` sets from
the `overlong` weight, instead), `group_zscore` (compute_score sees one sample,
not its group), plugins and user-registered objectives (their code may depend on anything).

`jsonl_to_verl_parquet(src, dst)` reads our jsonl through `dapo_nb.data.load_prompts` and writes
verl's schema: `data_source`, `prompt` (chat messages), `ability`,
`reward_model: {style: "rule", ground_truth}`, `extra_info: {split, index, qid}`.
"""

from __future__ import annotations

import ast
import datetime
import inspect
import json
from pathlib import Path
from typing import TYPE_CHECKING, Mapping, Sequence

from . import answer
from .objectives import BUILTIN_OBJECTIVES, correctness, get_objective
from .scalarize import check_choice, smooth_tchebycheff, tchebycheff, weighted_sum
from .weights import validate_weights

if TYPE_CHECKING:
    from .reward import MultiObjectiveReward


class VerlExportError(ValueError):
    """The reward cannot be exported to a standalone verl module as configured."""


# ----------------------------------------------------------------------------
# Standalone reward module


def _module_body(module) -> str:
    """A module's source without its docstring and `from __future__` line."""
    source = Path(module.__file__).read_text(encoding="utf-8")
    tree = ast.parse(source)
    lines = source.splitlines()
    drop: set[int] = set()
    for node in tree.body:
        is_docstring = (
            isinstance(node, ast.Expr)
            and isinstance(getattr(node, "value", None), ast.Constant)
            and node is tree.body[0]
        )
        if is_docstring or (isinstance(node, ast.ImportFrom) and node.module == "__future__"):
            drop.update(range(node.lineno - 1, node.end_lineno))
    return "\n".join(line for i, line in enumerate(lines) if i not in drop).strip() + "\n"


_COMPUTE_SCORE = '''
def compute_score(data_source, solution_str, ground_truth, extra_info=None, **kwargs):
    """verl's reward hook: score, acc (correctness) and one key per objective."""
    info = dict(extra_info or {})
    context = dict(info=info, marked_answer_only=MARKED_ANSWER_ONLY)
    values = {name: float(fn(solution_str, ground_truth, **context)) for name, fn in OBJECTIVE_FUNCTIONS.items()}
    if SCALARIZER == "weighted_sum":
        score = weighted_sum(values, WEIGHTS)
    elif SCALARIZER == "tchebycheff":
        score = tchebycheff(values, WEIGHTS, IDEAL)
    else:
        score = smooth_tchebycheff(values, WEIGHTS, IDEAL, MU)
    acc = values["correctness"] if "correctness" in values else correctness(solution_str, ground_truth, **context)
    return {"score": score, "acc": acc, **values}
'''


def write_verl_reward_module(
    path: str | Path,
    objectives: Sequence[str],
    weights: Mapping[str, float],
    scalarizer: str = "weighted_sum",
    ideal: Mapping[str, float] | None = None,
    mu: float = 0.1,
    marked_answer_only: bool = True,
) -> Path:
    """Write a standalone verl reward module computing the same objectives and scalar as ours; `marked_answer_only`
    as in `MultiObjectiveReward` (`correctness` needs a marked final answer)."""
    check_choice(scalarizer, "none", mu)
    if not isinstance(marked_answer_only, bool):
        raise VerlExportError(f"marked_answer_only must be True or False, got {marked_answer_only!r}")
    objectives = list(objectives)
    for name in objectives:
        objective = get_objective(name)
        if name not in BUILTIN_OBJECTIVES:
            raise VerlExportError(
                f"objective {name!r} is user-defined; the standalone module carries only built-ins ({', '.join(BUILTIN_OBJECTIVES)})"
            )
        if "num_tokens" in objective.needs:
            raise VerlExportError(
                f"objective {name!r} needs token counts, which verl's compute_score does not receive; drop it and use verl's "
                "DAPO overlong buffer (`dapo-nb export verl` turns an `overlong` weight into "
                "reward.reward_kwargs.overlong_buffer_cfg; `length` has no verl equivalent)"
            )
    checked = validate_weights(weights, objectives)
    if not any(value > 0 for value in checked.values()):
        raise VerlExportError(f"at least one weight must be > 0, got {checked}")
    full_weights = {name: checked.get(name, 0.0) for name in objectives}
    full_ideal = {name: float((ideal or {}).get(name, get_objective(name).high)) for name in objectives}

    functions = [get_objective(name).fn for name in objectives]
    if correctness not in functions:
        functions.append(correctness)  # for `acc`
    table = {name: get_objective(name).fn.__name__ for name in objectives}
    header = (
        f'r"""Standalone verl reward module written by dapo_nb.rewards.verl_export on {datetime.date.today()}.\n\n'
        "verl: reward.custom_reward_function.path=<this file> reward.custom_reward_function.name=compute_score\n"
        "DAPO dynamic sampling: algorithm.filter_groups.enable=True algorithm.filter_groups.metric=acc\n\n"
        "Requires: Python >= 3.10 standard library; optional math-verify==0.9.0 (without it, non-numeric\n"
        "answers are compared as text).\n\n"
        f"Objectives: {', '.join(objectives)}; scalarizer: {scalarizer}; weights: {json.dumps(full_weights)}.\n"
        f"Marked answers only (MARKED_ANSWER_ONLY): {marked_answer_only}"
        f"{'' if marked_answer_only else ' (the last number of a completion counts too)'}.\n\n"
        "What counts as a correct answer (copied from dapo_nb.rewards.answer):\n"
        f"{inspect.getdoc(answer)}\n"
        '"""\n\nfrom __future__ import annotations\n\nimport math\nfrom typing import Any, Mapping\n\n'
    )
    parts = [
        header,
        "# " + "-" * 76 + "\n# Answer extraction and equivalence (dapo_nb.rewards.answer)\n\n",
        _module_body(answer),
        "\n\n# " + "-" * 76 + "\n# Objectives (dapo_nb.rewards.objectives)\n\n",
        "\n\n".join(inspect.getsource(fn) for fn in functions),
        "\n\n# " + "-" * 76 + "\n# Scalarizers (dapo_nb.rewards.scalarize)\n\n",
        "\n\n".join(inspect.getsource(fn) for fn in (weighted_sum, tchebycheff, smooth_tchebycheff)),
        "\n\n# " + "-" * 76 + "\n# Configuration and verl's entry point\n\n",
        f"OBJECTIVE_FUNCTIONS = {{{', '.join(f'{name!r}: {fn}' for name, fn in table.items())}}}\n",
        f"WEIGHTS = {json.dumps(full_weights)}\n",
        f"IDEAL = {json.dumps(full_ideal)}\n",
        f"SCALARIZER = {scalarizer!r}\nMU = {float(mu)!r}\n",
        f"MARKED_ANSWER_ONLY = {marked_answer_only!r}  # correctness needs a marked final answer (see above)\n",
        _COMPUTE_SCORE,
    ]
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    text = "".join(parts)
    compile(text, str(path), "exec")  # a syntax error here is our bug, not the user's: fail before writing
    path.write_text(text, encoding="utf-8")
    return path


def reward_to_verl_module(reward: MultiObjectiveReward, path: str | Path) -> Path:
    """Write `reward`'s objectives, current weights, scalarizer and marked-answer rule as a standalone verl module."""
    if reward.plugin is not None:
        raise VerlExportError(
            f"{reward.plugin.label} cannot be embedded; verl can call a verl-contract plugin file directly"
        )
    if reward.normalization != "none":
        raise VerlExportError(
            "normalization='group_zscore' needs the whole prompt group, and verl's compute_score sees one sample; "
            "export with normalization='none'"
        )
    weights = {name: value for name, value in reward.weights.get().items() if name in reward.objectives}
    return write_verl_reward_module(path, list(reward.objectives), weights, reward.scalarizer, reward.ideal, reward.mu,
                                    reward.marked_answer_only)


# ----------------------------------------------------------------------------
# Data: our jsonl -> verl parquet


def verl_schema():
    """The pyarrow schema of verl's RL parquet files."""
    import pyarrow as pa

    message = pa.struct([("role", pa.string()), ("content", pa.string())])
    return pa.schema(
        [
            ("data_source", pa.string()),
            ("prompt", pa.list_(message)),
            ("ability", pa.string()),
            ("reward_model", pa.struct([("style", pa.string()), ("ground_truth", pa.string())])),
            ("extra_info", pa.struct([("split", pa.string()), ("index", pa.int64()), ("qid", pa.string())])),
        ]
    )


def jsonl_to_verl_parquet(
    source: str | Path | list,
    destination: str | Path,
    *,
    split: str = "train",
    ability: str = "math",
    system_prompt: str | None = None,
    data_source: str | None = None,
) -> int:
    """Convert a prompt file (read by dapo_nb.data.load_prompts), or a list of PromptExample already loaded (e.g. with
    `load_prompts_from_config`, for datasets with other column names), to verl's parquet; returns the row count."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    from ..data import load_prompts, to_chat_messages

    rows = []
    for index, example in enumerate(source if isinstance(source, list) else load_prompts(source)):
        messages = [
            {"role": str(m["role"]), "content": str(m["content"])} for m in to_chat_messages(example, system_prompt)
        ]
        rows.append(
            {
                "data_source": data_source or example.data_source or "dapo_nb",
                "prompt": messages,
                "ability": ability,
                "reward_model": {"style": "rule", "ground_truth": example.ground_truth},
                "extra_info": {"split": split, "index": index, "qid": example.qid},
            }
        )
    destination = Path(destination)
    destination.parent.mkdir(parents=True, exist_ok=True)
    pq.write_table(pa.Table.from_pylist(rows, schema=verl_schema()), destination)
    return len(rows)
