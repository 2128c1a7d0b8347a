"""The DLA identity, checked the same way on every model."""

from __future__ import annotations

import numpy as np
import pytest

from attribution.dla import DLAResult


def assert_dla_identity(r: DLAResult) -> None:
    """Per-head DLA + every other component == the logit diff read off the logits.

    Within 1e-4 relative per prompt (float32 activations, float64 projection).
    """
    for side in ("harmful", "control"):
        heads = getattr(r, f"{side}_heads").sum(axis=(1, 2))
        others = np.sum(list(getattr(r, f"{side}_components").values()), axis=0)
        total = getattr(r, f"{side}_logit_diff")
        np.testing.assert_allclose(
            heads + others, total, rtol=1e-4, atol=1e-4 * np.abs(total).max()
        )
    assert abs(r.residual_error) <= 1e-4 * max(1.0, abs(r.total_logit_diff))
    assert r.remainder == pytest.approx(r.total_logit_diff - r.per_head.sum())
