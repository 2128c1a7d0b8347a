"""Are this install's numbers right on this model? The two identities every result rests on.

- **DLA identity**: per-head direct logit attribution plus every other component
  (MLPs, embeddings, biases) equals the refusal logit difference read off the
  model's own logits, per prompt (:mod:`attribution.dla`).
- **Engine parity**: the engine's fast paths (skipped layers, cached prefixes,
  batching) give the logits of a plain forward pass with the same intervention
  (:mod:`patching.self_check`).

:func:`check_model` measures both on a model and a few of the user's pairs; the
``check`` command prints them, and every output records them (``"checks"``).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np
import torch

from attribution.dla import direct_logit_attribution
from patching.compat import unverified_versions, versions
from patching.engine import check_engine
from patching.model import HookedModel
from patching.self_check import EngineCheck


@dataclass
class ModelChecks:
    """Both identities measured on one model, with the versions they ran under.

    Attributes:
        dla_identity_error: largest |heads + other components - logit diff| over the
            prompts, in logits.
        dla_tolerance: the bound the identity must meet (relative to the logit scale).
        engine: the engine's self-check on this model.
        unverified: installed versions outside the verified range (empty: none).
    """

    model: str
    dla_identity_error: float
    dla_tolerance: float
    n_prompts: int
    engine: EngineCheck
    versions: dict[str, str] = field(default_factory=versions)
    unverified: list[str] = field(default_factory=unverified_versions)

    @property
    def dla_passed(self) -> bool:
        return bool(self.dla_identity_error <= self.dla_tolerance)

    @property
    def passed(self) -> bool:
        return self.dla_passed and self.engine.passed

    def lines(self) -> list[str]:
        verdict = "pass" if self.dla_passed else "FAIL"
        return [
            f"DLA identity: {verdict}: max |heads + components - logit diff| "
            f"{self.dla_identity_error:.1e} logits over {self.n_prompts} prompts "
            f"(tolerance {self.dla_tolerance:.1e})",
            self.engine.line(),
        ]

    def to_dict(self) -> dict[str, Any]:
        out = asdict(self)
        out["engine"] = self.engine.to_dict()
        out["passed"] = self.passed
        return out


def _identity_tolerance(dtype: torch.dtype, scale: float) -> float:
    # float32 activations projected in float64: 1e-4 relative (tests/helpers/identities.py).
    return max(1e-4, 50 * torch.finfo(dtype).eps) * max(1.0, scale)


def check_model(model: HookedModel, pairs: Sequence[Any], *, fresh: bool = True) -> ModelChecks:
    """Measure the DLA identity and the engine parity on ``model`` with ``pairs``.

    ``fresh`` reruns the engine's self-check even if this process already ran it
    (the ``check`` command); otherwise the recorded check is reused when present.
    """
    from patching.chat import format_chat

    dla = direct_logit_attribution(model, pairs, n_boot=10, progress=False)
    errors, scales = [], []
    for side in ("harmful", "control"):
        heads = getattr(dla, f"{side}_heads").sum(axis=(1, 2))
        others = np.sum(list(getattr(dla, f"{side}_components").values()), axis=0)
        total = getattr(dla, f"{side}_logit_diff")
        errors.append(np.abs(heads + others - total).max())
        scales.append(np.abs(total).max())
    engine = model.engine_check
    if fresh or engine is None:
        engine = check_engine(model, format_chat(model.tokenizer, pairs[0].harmful).tokens)
    return ModelChecks(
        model=model.name,
        dla_identity_error=float(max(errors)),
        dla_tolerance=_identity_tolerance(model.dtype, float(max(scales))),
        n_prompts=2 * len(pairs),
        engine=engine,
    )
