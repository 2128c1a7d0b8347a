#!/usr/bin/env bash
# Set up (if needed) and run the main job on the built-in model organism.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
export OMP_WAIT_POLICY=PASSIVE
.venv/bin/refusal-circuits dla --out out/organism "$@"
echo "open out/organism/dla.html in a browser"
