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
have ``z_source == z_base``, so they add nothing and are left out of the sum.
Pairs share one batched pass (up to ``GROUP_PAIRS`` pairs, left-padded to the
longest prompt), so the weights are read once for all of them: on CPU a small
forward pass costs about as much in streaming the weights as in arithmetic.

The passes are the clean runs the exact interchange needs; with ``keep_runs``
they are returned (within the memory budget) so a prescreen's exact step does
not run them again.

The same gradient screens *scalings* of a head's output: multiplying head h's
output by ``alpha`` at every position changes ``z`` by ``(alpha - 1) z``, so

    m(alpha z_h) - m  ~=  (alpha - 1) sum_p z[p, h] . dm/dz[p, h]

:func:`output_attribution` returns that sum for every head of every prompt
(one forward and one backward pass per batch of prompts): the screen of the
negative-head step's down-scaling (``alpha = 0.1``) and of zero ablation
(``alpha = 0``).

Explained in ``docs/science.md#interchange``.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import torch
from jaxtyping import Float
from torch import Tensor
from tqdm.auto import tqdm

from patching.alignment import AlignedPair, patched_positions
from patching.batching import length_batches
from patching.engine import DEFAULT_BUDGET_MB, Hook, RunStats, clean_runs
from patching.interchange import (
    DIRECTIONS,
    Direction,
    InterchangeRun,
    PairRuns,
    PatchMetric,
    group_runs,
)
from patching.interventions import Positions, z_hook
from patching.model import HookedModel

# Pairs estimated in one batched pass, at most this many: larger batches hold more
# activations for the backward pass and gain little more.
GROUP_PAIRS = 8
# A pass left-pads its prompts to the longest; a pair joins a group only while the
# padding stays under this share of the pass's positions.
MAX_PADDING = 0.25


def _groups(pairs: Sequence[AlignedPair]) -> list[list[int]]:
    """Pairs batched by length, up to ``GROUP_PAIRS`` a pass and ``MAX_PADDING`` padded."""
    order = sorted(range(len(pairs)), key=lambda i: (pairs[i].n_readout, len(pairs[i].harmful)))
    groups: list[list[int]] = []
    for i in order:
        trial = [*groups[-1], i] if groups else [i]
        lengths = [len(p) for j in trial for p in (pairs[j].harmful, pairs[j].control)]
        padded = len(lengths) * max(lengths)
        fits = (
            len(trial) <= GROUP_PAIRS
            and len({pairs[j].n_readout for j in trial}) == 1
            and padded - sum(lengths) <= MAX_PADDING * padded
        )
        if groups and fits:
            groups[-1] = trial
        else:
            groups.append([i])
    return groups


def _estimate_group(
    model: HookedModel,
    pairs: Sequence[AlignedPair],
    indices: Sequence[int],
    metric: PatchMetric,
    positions: Positions,
    directions: Sequence[Direction],
) -> tuple[list[dict[str, float]], list[dict[str, Tensor]], list[PairRuns], int]:
    """Per pair of ``indices``: clean values, estimates per direction, clean runs; passes run."""
    group = [pairs[i] for i in indices]
    aligned = [patched_positions(pair, positions) for pair in group]
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
    bases = ["harmful" if d == "necessity" else "control" for d in directions]
    with torch.enable_grad():
        runs, passes = group_runs(model, group, aligned, fwd_hooks=hooks if any(aligned) else ())
        where: dict[tuple[int, str], tuple[int, int]] = {
            key: (p, r) for p, run in enumerate(passes) for r, key in enumerate(run.rows)
        }
        value = {
            (j, side): metric(passes[p].logits[r : r + 1], indices[j])[0]
            for (j, side), (p, r) in where.items()
        }
        wanted = [value[j, side] for j in range(len(group)) if aligned[j] for side in set(bases)]
        if wanted:
            torch.stack(wanted).sum().backward()
    cleans, estimates = [], []
    for j, pair in enumerate(group):
        clean = {side: float(value[j, side].detach()) for side in ("harmful", "control")}
        patched: dict[str, Tensor] = {}
        for direction, base in zip(directions, bases, strict=True):
            if not aligned[j]:  # every chosen position lies in the shared opening: no change
                patched[direction] = torch.full(
                    (model.n_layers, model.n_heads), clean[base], dtype=torch.float64
                )
                continue
            source = "control" if base == "harmful" else "harmful"
            pb, rb = where[j, base]
            run_b = runs[j][0 if base == "harmful" else 1]
            run_s = runs[j][0 if source == "harmful" else 1]
            at_b = [p + pair.offset(base) for p in aligned[j]]  # type: ignore[arg-type]
            at_s = [p + pair.offset(source) for p in aligned[j]]  # type: ignore[arg-type]
            z_base = torch.stack([z[[p - run_b.start for p in at_b]] for z in run_b.z]).double()
            z_source = torch.stack([z[[p - run_s.start for p in at_s]] for z in run_s.z]).double()
            # The captured tensors (and their gradients) span the whole pass, whose
            # shorter prompts are left-padded to its width.
            pad = captured[pb][0].shape[1] - run_b.n_pos
            in_pass = [p + pad for p in at_b]
            grad = torch.stack(
                [
                    z.grad[rb, in_pass] if z.grad is not None else torch.zeros_like(z[rb, in_pass])
                    for z in captured[pb]
                ]
            ).double()
            delta: Float[Tensor, "layer pos head d_head"] = z_source - z_base
            patched[direction] = clean[base] + torch.einsum("lphd,lphd->lh", delta, grad).cpu()
        cleans.append(clean)
        estimates.append(patched)
    return cleans, estimates, runs, len(passes)


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
    kept: dict[int, PairRuns] | None = {} if keep_runs else None
    kept_mb = 0.0
    with tqdm(total=n, desc="attribution", unit="pair", disable=not progress) as bar:
        for indices in _groups(pairs):
            cleans, estimates, runs, passes = _estimate_group(
                model, pairs, indices, metric, positions, directions
            )
            result.stats.forward_passes += passes
            for i, clean, patched, both in zip(indices, cleans, estimates, runs, strict=True):
                result.clean_harmful[i] = clean["harmful"]
                result.clean_control[i] = clean["control"]
                for direction in directions:
                    result.patched[direction][i] = patched[direction]
                if kept is not None:
                    kept_mb += sum(run.nbytes for run in both) / 2**20
                    if kept_mb > budget_mb:
                        kept = None  # too large to hold: the exact step runs its own
                    else:
                        kept[i] = both
            bar.update(len(indices))
    result.runs = [kept[i] for i in range(n)] if kept is not None else None
    return result


def _grad_hooks(n_layers: int, captured: list[Tensor]) -> list[Hook]:
    """Hooks keeping every layer's ``z`` with its gradient (layer 0's detached: a leaf)."""

    def keep(layer: int) -> Any:
        def hook(z: Tensor, hook: Any) -> Tensor:
            if layer == 0:
                z = z.detach().requires_grad_(True)
            else:
                z.retain_grad()
            captured.append(z)
            return z

        return hook

    return [(z_hook(layer), keep(layer)) for layer in range(n_layers)]


def output_attribution(
    model: HookedModel,
    prompts: Sequence[Tensor],
    score: Callable[[Float[Tensor, "batch d_vocab"]], Float[Tensor, " batch"]],
    *,
    batch_size: int = GROUP_PAIRS,
) -> Float[Tensor, "prompt layer head"]:
    """``sum_p z[p, h] . d score / dz[p, h]`` for every head, per prompt (last-token score).

    Scaling a head's output by ``alpha`` at every position changes the score by about
    ``(alpha - 1)`` times this (module docstring). Prompts are batched by length,
    left-padded; padding positions add nothing (their gradient is zero, and they are
    masked out of the sum besides).
    """
    out = torch.zeros(len(prompts), model.n_layers, model.n_heads, dtype=torch.float64)
    for idx in length_batches([len(p) for p in prompts], batch_size):
        captured: list[Tensor] = []
        hooks = _grad_hooks(model.n_layers, captured)
        batch = [prompts[i] for i in idx]
        with torch.enable_grad():
            _, logits = clean_runs(model, batch, readout=[-1], fwd_hooks=hooks)
            score(logits[:, -1]).sum().backward()
        width = captured[0].shape[1]
        real = torch.zeros(len(batch), width, dtype=torch.bool)
        for r, prompt in enumerate(batch):
            real[r, width - len(prompt) :] = True  # left-padded: the real tokens come last
        for layer, z in enumerate(captured):
            if z.grad is None:  # a layer the score does not depend on
                continue
            prod = (z.detach().double() * z.grad.double()).sum(dim=-1)  # [batch, pos, head]
            keep = real[..., None].to(prod.device)
            out[idx, layer] = torch.where(keep, prod, 0.0).sum(dim=1).cpu()
    return out
