"""Naming the circuit's roles from measurements: gate, amplifiers, negative heads.

The rules (``docs/science.md#roles``) read measurements the audit has already
made, on the harmful-minus-control contrast and against nulls; the only sizes
they take are minimum effects in units of the refusal gap:

- **Gate**: a head in the middle band of depth (default 25-65% of the layers)
  whose interchange necessity is significant against the label-shuffle null
  (the sign-flip test on the pooled scale is that null; Benjamini-Hochberg q
  under ``alpha``), at least ``min_effect`` of the refusal gap, whose direct
  logit attribution is a tiny share of all heads' (it *routes* the decision, it
  does not write it), and whose knockout makes amplifiers fall. Among
  candidates that pass, the one with the largest necessity is the gate;
  significant candidates in adjacent layers with at least ``band_ratio`` of its
  necessity form the gate *band* (large models spread the gate over several heads).
- **Amplifiers**: heads after the gate whose harmful-minus-control DLA
  (contrast) is at least ``min_contrast`` of the DLA gap and whose contrast falls
  under the gate's knockout by more than knocking out random upstream heads of
  the band makes it fall (:func:`amplifier_tests`), and by at least ``min_fall``
  of its own clean contrast (a head that writes refusal by another route moves a
  little under any knockout upstream). Drops are tested in units of the pooled
  DLA gap; the fall is a share of a contrast that is positive and at least
  ``min_contrast`` of the gap, never of a tiny or sign-changing value.
- **Negative heads**: heads whose down-scaling raises the refusal score on
  harmful prompts (significantly, and by a non-trivial share of the clean gap)
  and whose refusal DLA on those prompts is negative.
- **Published gate** (Wollschläger et al., "How Alignment Routes"): the
  DLA-dark band head with the largest necessity + sufficiency, reported beside
  the audit's own gate (:func:`published_gate`).

NaN necessity or sufficiency means "not measured" (a head left out by a
prescreen): such a head is never a candidate. Interchange, down-scaling and
ablation effects are read on the pooled scale and tested per head by
:mod:`attribution.statistics` (``EffectStats``), which explains why.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np
from jaxtyping import Float

from attribution.result import Result
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
    min_effect: float = 0.01,
) -> list[Head]:
    """Significant, DLA-dark band heads necessary for ``min_effect`` of the gap or more.

    Largest necessity first; a head whose necessity was not measured (NaN) is none.
    """
    heads = [
        (layer, head)
        for layer in band_layers
        for head in range(shares.shape[1])
        if not _failed_gate_tests(
            (layer, head), necessity, shares, alpha, max_dla_share, min_effect
        )
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


@dataclass(frozen=True)
class DropTest(Result):
    """One head's contrast and its fall under a knockout, against the random-head null.

    ``contrast`` is the head's clean harmful-minus-control DLA and ``drop`` its fall
    under the knockout (clean minus knocked contrast), both in units of the pooled
    DLA gap (0.05 = 5% of the gap). ``null_drops`` are its falls under the knockouts
    of the null heads upstream of it; ``p`` is the empirical one-sided
    ``(1 + #{null >= drop}) / (1 + n)``, ``z`` the drop's distance from the null mean
    in null sds (NaN for a null of fewer than two heads, or of zero spread).
    """

    layer: int
    head: int
    contrast: float
    drop: float
    null_drops: list[float] = field(default_factory=list)

    @property
    def label(self) -> str:
        return f"L{self.layer}H{self.head}"

    @property
    def n_null(self) -> int:
        return len(self.null_drops)

    @property
    def null_mean(self) -> float:
        return float(np.mean(self.null_drops)) if self.null_drops else float("nan")

    @property
    def null_sd(self) -> float:
        return float(np.std(self.null_drops, ddof=1)) if self.n_null > 1 else float("nan")

    @property
    def null_max(self) -> float:
        return float(max(self.null_drops)) if self.null_drops else float("nan")

    @property
    def fall(self) -> float:
        """The drop as a share of the head's own clean contrast (0.1: it lost a tenth)."""
        return self.drop / self.contrast

    @property
    def z(self) -> float:
        sd = self.null_sd
        return (self.drop - self.null_mean) / sd if sd > 0 else float("nan")

    @property
    def p(self) -> float:
        above = sum(1 for d in self.null_drops if d >= self.drop)
        return (1 + above) / (1 + self.n_null)

    def falls(self, alpha: float, floor: float = 0.0, min_fall: float = 0.0) -> bool:
        """Whether the head falls: beyond chance, above ``floor``, by ``min_fall`` of itself.

        Beyond chance is ``p <= alpha``, or, when the null has too few heads for p to
        reach ``alpha``, a drop beyond every null drop (p at its smallest).
        """
        if self.n_null == 0 or not np.isfinite(self.drop) or self.drop <= floor:
            return False
        if not self.fall >= min_fall:
            return False
        return self.p <= max(alpha, 1.0 / (1 + self.n_null))

    def derived(self) -> dict[str, float]:
        return {
            "fall": self.fall,
            "null_mean": self.null_mean,
            "null_sd": self.null_sd,
            "null_max": self.null_max,
            "z": self.z,
            "p": self.p,
        }


def amplifier_tests(
    contrast: Float[np.ndarray, "layer head"],
    knocked: Float[np.ndarray, "layer head"],
    null_knocked: Mapping[Head, Float[np.ndarray, "layer head"]],
    after_layer: int,
    gap: float,
    *,
    min_contrast: float = 0.01,
) -> list[DropTest]:
    """The drop test of every head after ``after_layer`` whose contrast is large enough.

    ``contrast`` is the clean harmful-minus-control DLA per head, ``knocked`` the same
    with the gate knocked out on both prompts of every pair, ``null_knocked`` the same
    with each null head knocked out instead, all in logits; ``gap`` is the pooled DLA
    gap they are divided by. A head's null is the null heads in layers before its own
    (a head knocked out later than it cannot change what it writes). Largest
    contrast first.
    """
    tests = []
    for layer in range(after_layer + 1, contrast.shape[0]):
        for head in range(contrast.shape[1]):
            c = float(contrast[layer, head]) / gap
            if not c >= min_contrast:
                continue
            nulls = [
                (float(contrast[layer, head]) - float(k[layer, head])) / gap
                for h, k in null_knocked.items()
                if h[0] < layer
            ]
            drop = (float(contrast[layer, head]) - float(knocked[layer, head])) / gap
            tests.append(DropTest(layer=layer, head=head, contrast=c, drop=drop, null_drops=nulls))
    return sorted(tests, key=lambda t: (-t.contrast, t.layer, t.head))


def select_amplifiers(
    tests: Sequence[DropTest], *, alpha: float = 0.05, floor: float = 0.0, min_fall: float = 0.05
) -> list[Head]:
    """The tested heads whose contrast falls beyond chance and enough (:meth:`DropTest.falls`)."""
    return [(t.layer, t.head) for t in tests if t.falls(alpha, floor, min_fall)]


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


def published_gate(
    necessity: EffectStats,
    sufficiency: EffectStats,
    shares: Float[np.ndarray, "layer head"],
    band_layers: Sequence[int],
    *,
    max_dla_share: float = 0.01,
) -> Head | None:
    """The published rule: the DLA-dark band head with the largest necessity + sufficiency.

    Wollschläger et al. ("How Alignment Routes") name the gate this way (a gate is
    necessary *and* sufficient; amplifiers are necessary only). Heads with either
    effect unmeasured (NaN) and heads whose sum is not positive are left out;
    ``None`` when none is left.
    """
    both = necessity.effect + sufficiency.effect
    heads = [
        (layer, head)
        for layer in band_layers
        for head in range(shares.shape[1])
        if both[layer, head] > 0 and shares[layer, head] < max_dla_share
    ]
    return max(heads, key=lambda h: (float(both[h]), -h[0], -h[1])) if heads else None


@dataclass(frozen=True)
class GateCheck(Result):
    """Why a band head is, or is not, the gate: its numbers and the criteria it failed.

    ``failed`` names each failed criterion: ``"significance"`` (q >= alpha),
    ``"min effect"`` (necessity under the minimum), ``"DLA-dark"`` (DLA share at or
    over the maximum), ``"amplifiers"`` (its knockout made no head fall beyond the
    null) or ``"not tried"`` (it passed the rest but was beyond ``max_gate_tries``).
    Empty for the gate.
    """

    layer: int
    head: int
    necessity: float
    q: float
    sufficiency: float
    dla_share: float
    amplifiers: int | None = None  # heads that fell under its knockout; None: not knocked out
    failed: list[str] = field(default_factory=list)

    @property
    def label(self) -> str:
        return f"L{self.layer}H{self.head}"


def _failed_gate_tests(
    h: Head,
    necessity: EffectStats,
    shares: Float[np.ndarray, "layer head"],
    alpha: float,
    max_dla_share: float,
    min_effect: float,
) -> list[str]:
    failed = []  # NaN (not measured) fails every comparison, so it is never a candidate
    if not necessity.q[h] < alpha:
        failed.append("significance")
    if not necessity.effect[h] >= min_effect:
        failed.append("min effect")
    if not shares[h] < max_dla_share:
        failed.append("DLA-dark")
    return failed


def gate_checks(
    necessity: EffectStats,
    sufficiency: EffectStats,
    shares: Float[np.ndarray, "layer head"],
    band_layers: Sequence[int],
    tried: Mapping[Head, int],
    gate: Sequence[Head] = (),
    *,
    alpha: float = 0.05,
    max_dla_share: float = 0.01,
    min_effect: float = 0.01,
    k: int = 5,
) -> list[GateCheck]:
    """The ``k`` band heads of largest positive necessity, each with what it failed.

    ``tried`` maps each candidate whose knockout was tested to the number of heads
    that fell under it; heads of ``gate`` (the gate band) failed nothing.
    """
    band = [
        (layer, head)
        for layer in band_layers
        for head in range(shares.shape[1])
        if necessity.effect[layer, head] > 0
    ]
    top = sorted(band, key=lambda h: (-float(necessity.effect[h]), h))[:k]
    checks = []
    for h in top:
        failed = _failed_gate_tests(h, necessity, shares, alpha, max_dla_share, min_effect)
        if not failed and h not in gate:
            failed = ["not tried"] if h not in tried else ([] if tried[h] else ["amplifiers"])
        checks.append(
            GateCheck(
                layer=h[0],
                head=h[1],
                necessity=float(necessity.effect[h]),
                q=float(necessity.q[h]),
                sufficiency=float(sufficiency.effect[h]),
                dla_share=float(shares[h]),
                amplifiers=tried.get(h),
                failed=failed,
            )
        )
    return checks


def precision_recall(found: Sequence[Head], truth: Sequence[Head]) -> tuple[float, float]:
    """Precision and recall of ``found`` against ``truth`` (1.0 for empty vs empty)."""
    hit = len(set(found) & set(truth))
    precision = hit / len(set(found)) if found else float(not truth)
    recall = hit / len(set(truth)) if truth else 1.0
    return precision, recall
