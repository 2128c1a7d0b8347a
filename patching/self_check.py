"""The engine's self-check: its fast paths against a plain forward, on the user's own model.

The fast paths (:mod:`patching.engine`: skipped layers, cached prefixes, left
padding, staggered batches) depend on library internals (:mod:`patching.compat`).
Tests hold them to a plain forward pass on four tiny architectures, but a user's
model and installed versions may differ. So before the first clean run of a
process on each model, the engine checks every fast path on the user's first
prompt, whatever that call itself uses: the prompt and a copy one token shorter
run as one left-padded pass with a cached prefix up to each row's last position,
and each row's clean logits and three patched variants (a head zero-ablated in
the first, a middle and the last layer, rows joining at their own layer) must
equal plain forward passes of the same variants on that row alone, within a
tolerance set by the dtype; so must the knockouts' path (a middle-layer head
zeroed in the prompt and a copy one token shorter, resumed at its layer from a
kept clean pass, their shared prefix run once under the knockout). On a mismatch,
or if the fast path raises, the engine warns once, naming the installed versions,
and uses plain forward passes for the rest of the process (same numbers, slower).
The result is kept on the model (``HookedModel.engine_check``) and every output
records it.

Cost, per model per process: one clean pass of two rows, six patched rows of one
position, two plain forward passes of four rows, and for the knockout path a clean
and a resumed pass of two rows and two plain passes of one.

Explained in ``docs/dependencies.md#three-defences-against-a-silent-change``.
"""

from __future__ import annotations

import warnings
from dataclasses import asdict, dataclass, field
from typing import Any

import torch

from patching.compat import unverified_versions, versions


class EngineMismatchWarning(UserWarning):
    """The engine's fast paths disagreed with a plain forward; plain passes are used."""


def tolerance(dtype: torch.dtype, scale: float) -> float:
    """The largest logit difference a correct fast path can show at ``dtype``.

    Batched and unbatched matrix products round differently: measured below 1e-5
    logits in float32 on the tiny models, so a few hundred units in the last place
    of the logits' scale is generous for a correct path and far below the errors
    of a broken one (0.3 to 8 logits under transformers 5.24 before the fix).
    """
    eps = torch.finfo(dtype).eps
    factor = 200.0 if dtype in (torch.float32, torch.float64) else 8.0
    return float(factor * eps * max(1.0, scale))


@dataclass
class EngineCheck:
    """The fast paths compared with a plain forward pass on one model.

    Attributes:
        passed: every compared logit within ``tolerance``.
        max_error: largest absolute logit difference, fast minus plain.
        tolerance: the bound, from the dtype and the logits' scale.
        variants: runs compared (the clean run and the patched variants).
        n_tokens: length of the prompt used.
        fast_paths: whether the engine's fast paths are on for this model.
        versions: the installed versions the check ran under.
        detail: why the fast paths are off, or where the check ran.
    """

    passed: bool
    max_error: float
    tolerance: float
    variants: int
    n_tokens: int
    fast_paths: bool
    versions: dict[str, str] = field(default_factory=versions)
    detail: str = ""

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def line(self) -> str:
        verdict = "pass" if self.passed else "FAIL"
        return (
            f"engine parity: {verdict}: fast paths vs plain forward, max |diff| "
            f"{self.max_error:.1e} logits (tolerance {self.tolerance:.1e}, {self.variants} runs "
            f"of a {self.n_tokens}-token prompt)"
            + ("" if self.fast_paths else f"; fast paths off: {self.detail}")
        )


def disabled(reason: str) -> EngineCheck:
    """The record of a model whose fast paths were never tried (missing internals)."""
    _warn(reason)
    return EngineCheck(False, float("nan"), float("nan"), 0, 0, False, detail=reason)


def crashed(error: str, plain: torch.Tensor, *, n_tokens: int) -> EngineCheck:
    """The record of fast paths that raised during the check (turned off, with a warning)."""
    reason = f"the fast path raised {error}"
    _warn(reason)
    bound = tolerance(plain.dtype, float(plain.abs().max()))
    return EngineCheck(
        False, float("inf"), bound, int(plain.shape[0]), n_tokens, False, detail=reason
    )


def _warn(reason: str) -> None:
    warnings.warn(
        f"refusal-circuits: the engine's fast paths failed their check on this model: {reason}, "
        f"under {_installed()}. Using plain forward passes for the rest of this process (same "
        f"numbers, slower). Run `refusal-circuits check --model ...` and report the output.",
        EngineMismatchWarning,
        stacklevel=4,
    )


def compare(fast: torch.Tensor, plain: torch.Tensor, *, n_tokens: int, where: str) -> EngineCheck:
    """Judge fast against plain logits; warn once and turn fast paths off on a mismatch."""
    bound = tolerance(plain.dtype, float(plain.abs().max()))
    error = float((fast.double() - plain.double()).abs().max())
    passed = bool(error <= bound)
    check = EngineCheck(passed, error, bound, int(plain.shape[0]), n_tokens, passed, detail=where)
    if not passed:
        check.detail = f"mismatch of {error:.3g} logits (tolerance {bound:.1e}) {where}"
        _warn(check.detail)
    return check


def _installed() -> str:
    have = versions()
    text = ", ".join(f"{k} {have[k]}" for k in ("transformers", "transformer-lens", "torch"))
    outside = unverified_versions(have)
    return text + (f" (outside the verified range: {'; '.join(outside)})" if outside else "")
