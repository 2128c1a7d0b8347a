"""Attribution patching: every head's interchange effect from one forward and one backward.

Exact interchange needs one patched run per head. Attribution patching replaces
it by its first-order Taylor expansion around the base run: for base run b,
source run s and head h at positions P,

    m(b with h from s) - m(b)  ~=  sum_{p in P} (z_s[p, h] - z_b[p, h]) . dm/dz_b[p, h]

where ``z`` is ``blocks.L.attn.hook_z`` and the gradient is the *total*
derivative of the metric through every later layer. One forward and one
backward pass on the base prompt give the gradient for all heads at once; the
source's ``z`` comes from its own forward pass.

The estimate is exact when the metric is linear in ``z`` along the patch: the
last layer's heads reach the logits only through ``W_O`` and the final norm,
so tests hold the identity there on random inputs (up to the norm's curvature,
which a small patch makes negligible). Earlier heads pass through attention
and MLP nonlinearities, so the estimate is a screen: rank heads by it, then run
the exact interchange on the top k (``mode="prescreen"``).

Gradients: the parameters are frozen (``HookedModel`` sets ``requires_grad``
off), so the residual stream entering block 0 is detached and marked
``requires_grad``; every later ``z`` then carries a gradient (``retain_grad``).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from jaxtyping import Float
from torch import Tensor
from tqdm.auto import tqdm

from patching.engine import Hook, RunStats
from patching.interchange import (
    DIRECTIONS,
    AlignedPair,
    Direction,
    InterchangeRun,
    PatchMetric,
    aligned_positions,
)
from patching.interventions import Positions, z_hook
from patching.model import HookedModel


def _grad_run(
    model: HookedModel,
    tokens: Tensor,
    metric: PatchMetric,
    index: int,
    n_readout: int,
    backward: bool = True,
) -> tuple[float, Tensor, Tensor | None]:
    """Metric, every layer's ``z`` and ``dm/dz`` (both [layer, pos, head, d_head]).

    With ``backward=False`` (a prompt that is only ever a source) no gradient is taken.
    """
    if not backward:
        zs_only: list[Tensor] = [torch.empty(0)] * model.n_layers

        def keep_only(layer: int) -> Any:
            def hook(z: Tensor, hook: Any) -> Tensor:
                zs_only[layer] = z.detach()
                return z

            return hook

        with torch.no_grad():
            logits = model.bridge.run_with_hooks(
                tokens[None].to(model.device),
                fwd_hooks=[(z_hook(layer), keep_only(layer)) for layer in range(model.n_layers)],
            )
            value = metric(logits[:, -n_readout:], index).sum()
        return float(value), torch.stack([t[0] for t in zs_only]).double(), None
    zs: list[Tensor] = [torch.empty(0)] * model.n_layers

    def leaf(x: Tensor, hook: Any) -> Tensor:
        return x.detach().requires_grad_(True)

    def keep(layer: int) -> Any:
        def hook(z: Tensor, hook: Any) -> Tensor:
            z.retain_grad()
            zs[layer] = z
            return z

        return hook

    hooks: list[Hook] = [("blocks.0.hook_resid_pre", leaf)]
    hooks += [(z_hook(layer), keep(layer)) for layer in range(model.n_layers)]
    with torch.enable_grad():
        logits = model.bridge.run_with_hooks(tokens[None].to(model.device), fwd_hooks=hooks)
        value = metric(logits[:, -n_readout:], index).sum()
        value.backward()
    z = torch.stack([t.detach()[0] for t in zs])
    grad = torch.stack([t.grad[0] if t.grad is not None else torch.zeros_like(t[0]) for t in zs])
    return float(value.detach()), z.double(), grad.double()


def attribution_estimate(
    model: HookedModel,
    pairs: Sequence[AlignedPair],
    metric: PatchMetric,
    *,
    positions: Positions = "all",
    directions: Sequence[Direction] = DIRECTIONS,
    progress: bool = True,
) -> InterchangeRun:
    """Estimated patched metric values, shaped like :func:`patching.interchange.interchange`.

    ``patched[d][i, l, h]`` is ``m(base) + (z_source - z_base) . dm/dz_base`` summed
    over the patched positions: the first-order estimate of the exact value.
    """
    n, shape = len(pairs), (model.n_layers, model.n_heads)
    result = InterchangeRun(
        metric=metric.name,
        positions=positions,
        clean_harmful=torch.zeros(n, dtype=torch.float64),
        clean_control=torch.zeros(n, dtype=torch.float64),
        patched={d: torch.zeros((n, *shape), dtype=torch.float64) for d in directions},
        truncated=[p.truncated for p in pairs],
        stats=RunStats(),
    )
    for i, pair in enumerate(tqdm(pairs, desc="attribution", unit="pair", disable=not progress)):
        aligned = aligned_positions(pair, positions)
        runs = {}
        bases = {"harmful" if d == "necessity" else "control" for d in directions}
        for side in ("harmful", "control"):
            tokens = pair.harmful if side == "harmful" else pair.control
            runs[side] = _grad_run(model, tokens, metric, i, pair.n_readout, backward=side in bases)
            result.stats.forward_passes += 1
        result.clean_harmful[i] = runs["harmful"][0]
        result.clean_control[i] = runs["control"][0]
        for direction in directions:
            base, source = (
                ("harmful", "control") if direction == "necessity" else ("control", "harmful")
            )
            off_b, off_s = pair.offset(base), pair.offset(source)
            pb = [p + off_b for p in aligned]
            ps = [p + off_s for p in aligned]
            value, z_base, grad = runs[base]
            assert grad is not None  # every base side ran backward
            z_source = runs[source][1]
            delta: Float[Tensor, "layer pos head d_head"] = z_source[:, ps] - z_base[:, pb]
            estimate = torch.einsum("lphd,lphd->lh", delta, grad[:, pb])
            result.patched[direction][i] = value + estimate
    return result
