"""Naming the circuit's roles from measurements: gate, amplifiers, negative heads.

The rules (``docs/science.md#roles``) read measurements the audit has already made:

- **Gate**: a head in the middle band of depth (default 25-65% of the layers)
  that interchange necessity calls significant (Benjamini-Hochberg q under
  ``alpha``), whose direct logit attribution is a tiny share of all heads'
  (it *routes* the decision, it does not write it), and whose knockout lowers
  the amplifiers. Among candidates that pass, the one with the largest
  necessity is the gate; significant candidates in adjacent layers with at
  least ``band_ratio`` of its necessity form the gate *band* (large models
  spread the gate over several heads).
- **Amplifiers**: heads after the gate with the largest positive refusal DLA
  whose DLA falls by at least ``min_drop`` when the gate is knocked out.
- **Negative heads**: heads whose down-scaling raises the refusal score on
  harmful prompts (significantly, and by a non-trivial share of the clean gap)
  and whose refusal DLA on those prompts is negative.

Interchange, down-scaling and ablation effects are read on the pooled scale
and tested per head by :mod:`attribution.statistics` (``EffectStats``), which
explains why.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from jaxtyping import Float

from attribution.statistics import EffectStats

Head = tuple[int, int]


def depth_band(n_layers: int, band: tuple[float, float]) -> list[int]:
    """Layers whose depth ``layer / n_layers`` lies in ``band`` (fractions, inclusive)."""
    low, high = band
    if not 0.0 <= low <= high <= 1.0:
        raise ValueError(f"depth band {band} must be two fractions 0 <= low <= high <= 1")
    layers = [layer for layer in range(n_layers) if low <= layer / n_layers <= high + 1e-9]
    if not layers:
        raise ValueError(f"no layer of {n_layers} lies in the depth band {band}; widen it")
    return layers


def dla_shares(dla: Float[np.ndarray, "layer head"]) -> Float[np.ndarray, "layer head"]:
    """Each head's |DLA| as a share of the sum of all heads' |DLA|."""
    total = float(np.abs(dla).sum())
    return np.abs(dla) / total if total > 0 else np.zeros_like(dla)


def gate_candidates(
    necessity: EffectStats,
    shares: Float[np.ndarray, "layer head"],
    band_layers: Sequence[int],
    *,
    alpha: float = 0.05,
    max_dla_share: float = 0.01,
    min_necessity: float = 0.1,
) -> list[Head]:
    """Significant, DLA-dark heads of the band, largest necessity first."""
    heads = [
        (layer, head)
        for layer in band_layers
        for head in range(shares.shape[1])
        if necessity.q[layer, head] < alpha
        and necessity.effect[layer, head] >= min_necessity
        and shares[layer, head] < max_dla_share
    ]
    return sorted(heads, key=lambda h: (-necessity.effect[h], h))


def gate_band(
    gate: Head, candidates: Sequence[Head], necessity: EffectStats, band_ratio: float = 0.5
) -> list[Head]:
    """The gate plus candidates in adjacent layers with ``band_ratio`` of its necessity."""
    floor = band_ratio * float(necessity.effect[gate])
    strong = {h for h in candidates if necessity.effect[h] >= floor} | {gate}
    band = {gate}
    grew = True
    while grew:  # grow layer by layer: a band is contiguous in depth
        layers = {layer for layer, _ in band}
        more = {h for h in strong if h not in band and any(abs(h[0] - x) <= 1 for x in layers)}
        band |= more
        grew = bool(more)
    return sorted(band)


def select_amplifiers(
    harmful_dla: Float[np.ndarray, "layer head"],
    knockout_change: Float[np.ndarray, "layer head"],
    after_layer: int,
    *,
    min_share: float = 0.05,
    min_drop: float = 0.2,
) -> list[Head]:
    """Heads after ``after_layer`` with a large positive DLA that falls under the knockout.

    ``knockout_change`` is the fractional change of each head's mean DLA (-0.5 = halved).
    """
    positive = np.clip(harmful_dla, 0.0, None)
    total = float(positive.sum())
    if total <= 0:
        return []
    heads = [
        (layer, head)
        for layer in range(after_layer + 1, harmful_dla.shape[0])
        for head in range(harmful_dla.shape[1])
        if positive[layer, head] / total >= min_share and knockout_change[layer, head] <= -min_drop
    ]
    return sorted(heads, key=lambda h: (-harmful_dla[h], h))


def select_negatives(
    raise_stats: EffectStats,
    harmful_dla: Float[np.ndarray, "layer head"],
    *,
    alpha: float = 0.05,
    min_raise: float = 0.05,
    min_dla_share: float = 0.01,
) -> list[Head]:
    """Heads whose down-scaling significantly raises refusal and whose DLA is negative."""
    shares = dla_shares(harmful_dla)
    heads = [
        (layer, head)
        for layer in range(harmful_dla.shape[0])
        for head in range(harmful_dla.shape[1])
        if raise_stats.q[layer, head] < alpha
        and raise_stats.effect[layer, head] >= min_raise
        and harmful_dla[layer, head] < 0
        and shares[layer, head] >= min_dla_share
    ]
    return sorted(heads, key=lambda h: (-raise_stats.effect[h], h))


def precision_recall(found: Sequence[Head], truth: Sequence[Head]) -> tuple[float, float]:
    """Precision and recall of ``found`` against ``truth`` (1.0 for empty vs empty)."""
    hit = len(set(found) & set(truth))
    precision = hit / len(set(found)) if found else float(not truth)
    recall = hit / len(set(truth)) if truth else 1.0
    return precision, recall
