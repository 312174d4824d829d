"""Prompt files shipped inside the package, named `builtin:<task>/<split>` wherever a data path goes.

    builtin:arithmetic/train   1000 arithmetic word problems (dapo_nb/arithmetic.py; data/README.md)
    builtin:arithmetic/test    150 held-out problems of the same task (the same sentence families as train)
    builtin:arithmetic/test_heldout    150 held-out problems told with sentence families training never uses
    builtin:arithmetic/test_rephrased  150 held-out problems in an older held-out style (now part of those families)
    builtin:arithmetic/test_handwritten  60 problems written by hand, in situations and wording of their own

They are the defaults of `data.train_path` and `data.test_path`, so `dapo-nb train|eval|smoke|export verl` work from
any directory with an installed package. Anything that is not a `builtin:` name is a user path (or a Hugging Face
dataset name) and resolves against the working directory as usual: `resolve` passes it through unchanged.
In a clone, the files of `data/` (`train.jsonl`, `test.jsonl`, ...) are links to these files.

No torch and no third-party imports here: `dapo-nb export verl` and `dapo-nb keys` stay light.
"""

from __future__ import annotations

from pathlib import Path

PREFIX = "builtin:"
ROOT = Path(__file__).resolve().parent


def names() -> list[str]:
    """Every shipped data set's `builtin:` name, sorted."""
    return sorted(f"{PREFIX}{p.parent.name}/{p.stem}" for p in ROOT.glob("*/*.jsonl"))


def resolve(path_or_name):
    """The installed file of a `builtin:<task>/<split>` name; anything else is returned unchanged."""
    if not (isinstance(path_or_name, str) and path_or_name.startswith(PREFIX)):
        return path_or_name
    relative = path_or_name[len(PREFIX):].strip().strip("/")
    path = ROOT / f"{relative}.jsonl"
    if ".." in Path(relative).parts or not path.is_file():
        raise FileNotFoundError(f"no built-in data set {path_or_name!r}; the package ships {', '.join(names()) or 'none'}")
    return path
