"""Head tracing: each head's output scaled (or ablated) and the change of the probe's log-odds at
the last position before the answer (docs/science.md#refusal-cliff).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np
import torch
from jaxtyping import Float
from torch import Tensor

from attribution.result import Result
from attribution.statistics import EffectStats, HeadStat, effect_stats
from circuits.cliff.probe import RefusalProbe, probe_hook
from circuits.cliff.traces import TraceTokens
from circuits.knockout import variant_runs
from patching.executor import DEFAULT_BATCH_SIZE, run_and_cache
from patching.interventions import Ablation, Intervention, Scale, z_hook
from patching.model import HookedModel

DEFAULT_ALPHA = 0.1
TRACE_ABLATIONS = ("scale", "zero", "mean")
TraceAblation = Literal["scale", "zero", "mean"]


@dataclass(frozen=True)
class HeadTrace(Result):
    """Per head: the change of the probe's log-odds of refusal at the last position before
    the answer when the head's output is scaled by ``alpha`` (``ablation="scale"``),
    zeroed or mean-ablated; > 0 means the head suppresses refusal. Heads at or after
    the probe layer cannot move it (NaN)."""

    ablation: str
    alpha: float
    probe_layer: int
    stats: EffectStats
    ranked: list[HeadStat]

    def derived(self) -> dict[str, Any]:
        return {"top": [h.label for h in self.ranked[:5]]}


def _head_rows(
    layer: int, head: int, ablation: str, alpha: float, means: Tensor | None
) -> Intervention:
    if ablation == "scale":
        return Scale(layer, head, "all", alpha)
    if ablation == "mean" and means is not None:
        return Ablation(layer, head, "all", "mean", means[layer, head])
    return Ablation(layer, head, "all")


def _one_row(iv: Intervention) -> Callable[[int], list[Intervention]]:
    return lambda _: [iv]


def head_means(
    model: HookedModel, tokens: Sequence[Tensor], *, batch_size: int = DEFAULT_BATCH_SIZE
) -> Float[Tensor, "layer head d_head"]:
    """Every head's output (``hook_z``) averaged over all positions of ``tokens``."""
    names = {str(layer): z_hook(layer) for layer in range(model.n_layers)}
    _, caches = run_and_cache(model, list(tokens), names=names, batch_size=batch_size, to_cpu=True)
    return torch.stack(
        [
            torch.cat([c[str(layer)].double() for c in caches]).mean(0)
            for layer in range(model.n_layers)
        ]
    ).float()


def trace_heads(
    model: HookedModel,
    probe: RefusalProbe,
    segments: Sequence[TraceTokens],
    *,
    ablation: TraceAblation = "scale",
    alpha: float = DEFAULT_ALPHA,
    seed: int = 0,
    batch_size: int = DEFAULT_BATCH_SIZE,
    progress: bool = False,
) -> HeadTrace:
    """Each head's effect on the probe at the last position before the answer.

    Each head's pass starts at its layer from its batch's kept clean pass and ends at the
    probe layer's input (:func:`circuits.knockout.variant_runs`): the numbers of one full
    pass per head, at the cost of the layers between (docs/science.md#refusal-cliff).
    """
    if ablation not in TRACE_ABLATIONS:
        raise ValueError(f"unknown ablation {ablation!r}; use one of {', '.join(TRACE_ABLATIONS)}")
    # The model is causal: nothing after the last position before the answer matters.
    tokens = [tt.tokens[: tt.answer] for tt in segments]
    means = head_means(model, tokens, batch_size=batch_size) if ablation == "mean" else None
    heads = [(a, b) for a in range(min(probe.layer, model.n_layers)) for b in range(model.n_heads)]
    variants = [_one_row(_head_rows(layer, head, ablation, alpha, means)) for layer, head in heads]
    clean = np.zeros(len(tokens))
    effects = np.full((len(tokens), model.n_layers, model.n_heads), np.nan)
    # Each head's pass resumes at its layer from its batch's kept clean pass and stops at
    # the probe's layer (its input is all the probe reads); the final residual needs them all.
    runs = variant_runs(
        model, tokens, variants, capture={"r": probe_hook(model, probe.layer)},
        at=[[len(t) - 1] for t in tokens],
        until=probe.layer if probe.layer < model.n_layers else None,
        batch_size=batch_size, progress=progress, desc="heads",
    )  # fmt: skip
    for v, idx, out in runs:
        assert out.cache is not None
        logits = np.array([probe.logit(c["r"].float().cpu().numpy())[0] for c in out.cache])
        if v is None:
            clean[idx] = logits
        else:
            layer, head = heads[v]
            effects[idx, layer, head] = logits - clean[idx]
    stats = effect_stats(effects, seed=seed)
    ranked = stats.top(len(heads))
    return HeadTrace(ablation, alpha if ablation == "scale" else 0.0, probe.layer, stats, ranked)
