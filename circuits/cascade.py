"""The knockout cascade: what the gate's knockout does to every later head.

If a gate routes the refusal decision, knocking it out (zero, mean or resample
ablation of its output at every position) should make the heads that *write*
refusal fall silent. The cascade measures exactly that: every head's refusal
DLA on the harmful prompts is recomputed in the knocked-out run (the final
norm's scale frozen from that same run, so each decomposition stays exact) and
compared with the clean DLA, as a percentage change per head.

A fall alone proves little: knocking out *any* head might perturb the stream.
So the same measurement is repeated for random heads from the gate's depth band
(not the gate, not the amplifiers), and the amplifiers' total DLA change under
the gate's knockout is set against that null: effect, null mean, sd, largest
null drop, and the empirical one-sided p ``(1 + #{null <= effect}) / (1 + n)``.

Explained in ``docs/science.md#knockout-cascade``.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from jaxtyping import Float, Int
from torch import Tensor

from attribution.result import Result
from attribution.statistics import HeadStat
from circuits.knockout import Head, intervened_dla, knockouts
from patching.chat import ChatPrompt
from patching.interventions import AblationKind
from patching.model import HookedModel


def percent_change(
    clean: Float[np.ndarray, "..."], knocked: Float[np.ndarray, "..."], floor: float = 1e-6
) -> Float[np.ndarray, "..."]:
    """``100 (knocked - clean) / |clean|``; NaN where the clean value is ~0."""
    with np.errstate(divide="ignore", invalid="ignore"):
        out = 100.0 * (knocked - clean) / np.abs(clean)
    return np.where(np.abs(clean) > floor, out, np.nan)


@dataclass
class CascadeResult(Result):
    """Mean harmful-prompt DLA per head, clean and with the gate knocked out, vs a null."""

    gate: list[Head]
    kind: str
    clean: Float[np.ndarray, "layer head"]
    knocked: Float[np.ndarray, "layer head"]
    amplifiers: list[Head]
    effect: float
    null_heads: list[Head] = field(metadata={"group": "null", "key": "heads"})
    null_effects: list[float] = field(metadata={"group": "null", "key": "effects"})

    @property
    def change(self) -> Float[np.ndarray, "layer head"]:
        """Percentage change of every head's mean DLA under the knockout."""
        return percent_change(self.clean, self.knocked)

    @property
    def null_mean(self) -> float:
        return float(np.mean(self.null_effects)) if self.null_effects else float("nan")

    @property
    def null_sd(self) -> float:
        return float(np.std(self.null_effects, ddof=1)) if len(self.null_effects) > 1 else 0.0

    @property
    def null_max(self) -> float:
        """The largest null *drop* (most negative change), as a positive percentage."""
        return float(-min(self.null_effects)) if self.null_effects else float("nan")

    @property
    def p(self) -> float:
        """Empirical one-sided p of the gate's effect against the random-head null."""
        below = sum(1 for e in self.null_effects if e <= self.effect)
        return (1 + below) / (1 + len(self.null_effects))

    def per_amplifier(self) -> dict[str, float]:
        return {f"L{lay}H{h}": float(self.change[lay, h]) for lay, h in self.amplifiers}

    def top(self, k: int = 10) -> list[HeadStat]:
        """The ``k`` heads after the gate whose DLA fell most (``value``: percent change)."""
        after = max(layer for layer, _ in self.gate) if self.gate else -1
        change = self.change
        rows = [
            HeadStat(layer=lay, head=h, value=float(change[lay, h]))
            for lay in range(after + 1, self.clean.shape[0])
            for h in range(self.clean.shape[1])
            if np.isfinite(change[lay, h])
        ]
        return sorted(rows, key=lambda r: r.value)[:k]

    # -- serialisation: the fields, with the change and the null's summary beside them
    def derived(self) -> dict[str, Any]:
        return {
            "change_percent": self.change,
            "per_amplifier_percent": self.per_amplifier(),
            "null": {"mean": self.null_mean, "sd": self.null_sd, "max_drop": self.null_max},
            "p": self.p,
        }


def knockout_dla(
    model: HookedModel,
    prompts: Sequence[ChatPrompt],
    refusal_ids: list[int],
    answer_ids: Int[Tensor, " prompt"],
    heads: Sequence[Head],
    kind: AblationKind,
    reference: Sequence[dict[int, Tensor]] | None = None,
    seed: int = 0,
) -> Float[np.ndarray, "layer head"]:
    """Mean per-head DLA over ``prompts`` with every head in ``heads`` knocked out."""
    rows = knockouts(heads, prompts, kind, reference, seed)
    dla, _ = intervened_dla(model, prompts, refusal_ids, answer_ids, rows)
    return dla.mean(axis=0)


def null_heads(
    band_layers: Sequence[int], n_heads: int, exclude: Sequence[Head], n_null: int, seed: int
) -> list[Head]:
    """Up to ``n_null`` distinct random heads of the band, none of ``exclude`` (seeded)."""
    pool = [
        (layer, head)
        for layer in band_layers
        for head in range(n_heads)
        if (layer, head) not in set(exclude)
    ]
    rng = np.random.default_rng(seed)
    picks = rng.permutation(len(pool))[: min(n_null, len(pool))]
    return sorted(pool[int(i)] for i in picks)


def amplifier_change(
    clean: Float[np.ndarray, "layer head"],
    knocked: Float[np.ndarray, "layer head"],
    amplifiers: Sequence[Head],
) -> float:
    """Percentage change of the amplifiers' summed DLA."""
    if not amplifiers:
        return float("nan")
    before = sum(float(clean[h]) for h in amplifiers)
    after = sum(float(knocked[h]) for h in amplifiers)
    return float(percent_change(np.array(before), np.array(after)))
