#!/usr/bin/env bash
# Set up (if needed) and audit the built-in model organism (the main job).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
export OMP_WAIT_POLICY=PASSIVE
.venv/bin/refusal-circuits audit --out out/organism "$@"
echo "open out/organism/report.html in a browser"
