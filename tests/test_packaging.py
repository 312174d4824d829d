"""The install story: environment.yml agrees with pyproject.toml, CI runs the README's test command."""

from __future__ import annotations

import os
import re
import shlex
import subprocess
import sys
import tomllib
from importlib.metadata import distributions
from pathlib import Path

import yaml
from packaging.requirements import Requirement

ROOT = Path(__file__).resolve().parents[1]


def test_environment_yml_lists_the_same_dependencies_as_pyproject():
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    wanted = set(project["dependencies"]) | set(project["optional-dependencies"]["dev"])
    env = yaml.safe_load((ROOT / "environment.yml").read_text())
    pip_lists = [d["pip"] for d in env["dependencies"] if isinstance(d, dict) and "pip" in d]
    assert len(pip_lists) == 1, "environment.yml needs exactly one pip: section"
    listed = {d for d in pip_lists[0] if not d.startswith("-e")}
    assert listed == wanted, f"only in environment.yml: {sorted(listed - wanted)}; only in pyproject: {sorted(wanted - listed)}"


def test_ci_runs_the_readme_test_command():
    readme = (ROOT / "README.md").read_text()
    match = re.search(r"<!-- test-command -->\s*```(?:bash|sh)?\n(.+?)\n```", readme, re.S)
    assert match, "README.md must show the test command in a ```bash block right after <!-- test-command -->"
    command = match.group(1).strip()
    assert command in (ROOT / ".ci" / "run").read_text()


def pip_installs(dry_run: str) -> list[list[str]]:
    """The arguments after `pip install` of each pip command in `make -n` output, in order."""
    commands = []
    for line in dry_run.splitlines():
        words = shlex.split(line, comments=True)
        for i in range(len(words) - 2):
            if words[i : i + 3] == ["-m", "pip", "install"]:
                commands.append(words[i + 3 :])
    return commands


def requirement_names(args: list[str]) -> list[str]:
    """Names of the packages a pip command's arguments ask for (options and their values skipped)."""
    names, skip = [], False
    for arg in args:
        if skip:
            skip = False
        elif arg in ("-r", "--requirement", "--target", "-t", "-i", "--index-url", "--extra-index-url", "-f",
                     "--find-links", "-c", "--constraint", "-e", "--editable"):
            skip = True
        elif not arg.startswith("-"):
            names.append(Requirement(arg).name.lower())
    return names


def test_ci_never_installs_a_cuda_torch(tmp_path):
    # what CI runs (.ci/run: `make test` on a clean clone), as a dry run: a venv that does not exist yet, so make
    # prints every install command without running any; no TORCH_SPEC from the environment, as on CI
    env = {k: v for k, v in os.environ.items() if k not in ("TORCH_SPEC", "MAKEFLAGS", "MFLAGS")}
    assert "make test" in (ROOT / ".ci" / "run").read_text()
    dry_run = subprocess.run(["make", "-n", "test", f"VENV={tmp_path / 'venv'}"], cwd=ROOT, env=env,
                             capture_output=True, text=True, check=True).stdout
    installs = pip_installs(dry_run)
    assert installs, dry_run
    # no pip command points at a CUDA wheel index or asks for NVIDIA's CUDA libraries
    assert not re.search(r"index-url|download\.pytorch\.org|/whl/cu|\+cu\d", dry_run), dry_run
    requirement_files = [ROOT / args[args.index("-r") + 1] for args in installs if "-r" in args]
    for path in requirement_files:
        listed = [line.split("#")[0].strip() for line in path.read_text().splitlines()]
        names = [Requirement(line).name.lower() for line in listed if line]
        assert not [n for n in names if n == "torch" or n.startswith("nvidia-")], path
    assert not [n for args in installs for n in requirement_names(args) if n.startswith("nvidia-")]
    browser_install = (ROOT / "tests" / "browser_support" / "install.sh").read_text()
    assert "bash tests/browser_support/install.sh" in dry_run
    assert not re.search(r"torch|nvidia|index-url", browser_install)
    # exactly one command installs torch: the plain CPU pin, before the package (whose torch range then keeps it;
    # a torch that range rejected would be replaced by PyPI's default Linux wheel, a CUDA build)
    torch_installs = [i for i, args in enumerate(installs) if "torch" in requirement_names(args)]
    assert len(torch_installs) == 1, installs
    assert installs[torch_installs[0]] == ["-q", "torch==2.13.0"]
    package = next(i for i, args in enumerate(installs) if "-e" in args)
    assert torch_installs[0] < package
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    torch_ranges = [Requirement(r).specifier for r in project["dependencies"] + project["optional-dependencies"]["dev"]
                    if Requirement(r).name == "torch"]
    assert torch_ranges and all(spec.contains("2.13.0") for spec in torch_ranges)
    # and the torch this suite runs on, where `make test` built the venv on a machine without a GPU (CI's), is the
    # CPU build with no NVIDIA libraries beside it
    import torch

    in_make_venv = Path(sys.prefix).resolve() == (ROOT / ".venv").resolve()
    if os.environ.get("CI") or (in_make_venv and not torch.cuda.is_available()):
        assert torch.version.cuda is None, torch.__version__
        nvidia = sorted(d.metadata["Name"] for d in distributions() if d.metadata["Name"].lower().startswith("nvidia-"))
        assert not nvidia, nvidia
