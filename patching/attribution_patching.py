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
off), so layer 0's ``z`` is detached and marked ``requires_grad``: every later
``z`` then carries a gradient (``retain_grad``) and the backward pass stops at
the first heads. Positions in the pair's shared opening (``AlignedPair.shared``)
have ``z_source == z_base``, so they come from a cached prefix without gradients.
A pair's two prompts share one batched pass when their lengths agree.

The passes are the clean runs the exact interchange needs; with ``keep_runs``
they are returned (within the memory budget) so a prescreen's exact step does
not run them again.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from jaxtyping import Float
from torch import Tensor
from tqdm.auto import tqdm

from patching.engine import DEFAULT_BUDGET_MB, Hook, RunStats
from patching.interchange import (
    DIRECTIONS,
    AlignedPair,
    Direction,
    InterchangeRun,
    PairRuns,
    PatchMetric,
    pair_runs,
    patched_positions,
)
from patching.interventions import Positions, z_hook
from patching.model import HookedModel


def _estimate_pair(
    model: HookedModel,
    pair: AlignedPair,
    index: int,
    metric: PatchMetric,
    positions: Positions,
    directions: Sequence[Direction],
) -> tuple[dict[str, float], dict[str, Tensor], PairRuns, int]:
    """Clean values, estimated patched values per direction, the clean runs, passes run."""
    aligned = patched_positions(pair, positions)
    captured: list[list[Tensor]] = []

    def keep(layer: int) -> Any:
        def hook(z: Tensor, hook: Any) -> Tensor:
            if layer == 0:
                captured.append([])
                z = z.detach().requires_grad_(True)
            else:
                z.retain_grad()
            captured[-1].append(z)
            return z

        return hook

    hooks: list[Hook] = [(z_hook(layer), keep(layer)) for layer in range(model.n_layers)]
    with torch.enable_grad():
        runs, logits = pair_runs(model, pair, aligned, fwd_hooks=hooks if aligned else ())
        # Where each side's row sits: one batched pass, or one pass per side.
        where = {"harmful": (0, 0), "control": (0, 1) if len(logits) == 1 else (1, 0)}
        value = {side: metric(logits[p][r : r + 1], index)[0] for side, (p, r) in where.items()}
        bases = ["harmful" if d == "necessity" else "control" for d in directions]
        if aligned:
            torch.stack([value[side] for side in set(bases)]).sum().backward()
    clean = {side: float(v.detach()) for side, v in value.items()}
    patched: dict[str, Tensor] = {}
    for direction, base in zip(directions, bases, strict=True):
        if not aligned:  # every chosen position lies in the shared opening: nothing changes
            patched[direction] = torch.full(
                (model.n_layers, model.n_heads), clean[base], dtype=torch.float64
            )
            continue
        source = "control" if base == "harmful" else "harmful"
        (pb, rb), (ps, rs) = where[base], where[source]
        start_b = runs[0 if base == "harmful" else 1].start
        start_s = runs[0 if source == "harmful" else 1].start
        at_b = [p + pair.offset(base) - start_b for p in aligned]  # type: ignore[arg-type]
        at_s = [p + pair.offset(source) - start_s for p in aligned]  # type: ignore[arg-type]
        z_base = torch.stack([z[rb, at_b].detach() for z in captured[pb]]).double()
        z_source = torch.stack([z[rs, at_s].detach() for z in captured[ps]]).double()
        grad = torch.stack(
            [
                z.grad[rb, at_b] if z.grad is not None else torch.zeros_like(z[rb, at_b])
                for z in captured[pb]
            ]
        ).double()
        delta: Float[Tensor, "layer pos head d_head"] = z_source - z_base
        estimate = torch.einsum("lphd,lphd->lh", delta, grad).cpu()
        patched[direction] = clean[base] + estimate
    return clean, patched, runs, len(logits)


def attribution_estimate(
    model: HookedModel,
    pairs: Sequence[AlignedPair],
    metric: PatchMetric,
    *,
    positions: Positions = "all",
    directions: Sequence[Direction] = DIRECTIONS,
    keep_runs: bool = False,
    budget_mb: float = DEFAULT_BUDGET_MB,
    progress: bool = True,
) -> InterchangeRun:
    """Estimated patched metric values, shaped like :func:`patching.interchange.interchange`.

    ``patched[d][i, l, h]`` is ``m(base) + (z_source - z_base) . dm/dz_base`` summed
    over the patched positions: the first-order estimate of the exact value.

    Args:
        keep_runs: return every pair's clean runs in ``.runs`` for an exact step on
            the same pairs and positions, unless together they exceed ``budget_mb``
            (then ``.runs`` is None and the exact step runs its own).
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
    kept: list[PairRuns] | None = [] if keep_runs else None
    kept_mb = 0.0
    for i, pair in enumerate(tqdm(pairs, desc="attribution", unit="pair", disable=not progress)):
        clean, patched, runs, passes = _estimate_pair(model, pair, i, metric, positions, directions)
        result.stats.forward_passes += passes
        result.clean_harmful[i] = clean["harmful"]
        result.clean_control[i] = clean["control"]
        for direction in directions:
            result.patched[direction][i] = patched[direction]
        if kept is not None:
            kept_mb += sum(run.nbytes for run in runs) / 2**20
            if kept_mb > budget_mb:
                kept = None  # too large to hold: the exact step runs its own
            else:
                kept.append(runs)
    result.runs = kept
    return result
