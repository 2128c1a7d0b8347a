"""The knockout cascade: what the gate's knockout does to every later head.

If a gate routes the refusal decision, knocking it out (zero, mean or resample
ablation of its output at every position) should make the heads that *write*
refusal fall silent. The cascade measures exactly that, as the published
cascade does: the gate is knocked out on the harmful *and* the control prompt
of every pair, every head's refusal DLA is recomputed in the knocked-out runs
(the final norm's scale frozen from that same run, so each decomposition stays
exact), and each head's harmful-minus-control DLA (its *contrast*) is compared
with the clean contrast. On a real model a head that writes refusal can have a
negative DLA on harmful prompts alone (the model answers many of them) and a
large positive contrast; the contrast is what the circuit adds for harmful input.

A fall alone proves little: knocking out *any* head might perturb the stream.
So the same measurement is repeated for random heads from the gate's depth band
(not the gate, not the amplifiers), and the amplifiers' summed contrast change
under the gate's knockout is set against that null: effect (in % of their clean
summed contrast, and in units of the pooled DLA gap), null mean, sd, largest null
drop, z, and the empirical one-sided p ``(1 + #{null <= effect}) / (1 + n)``,
whose smallest value ``1 / (1 + n)`` the result states.

Explained in ``docs/science.md#knockout-cascade``.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
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
    """Mean harmful-minus-control DLA per head, clean and with the gate knocked out, vs a null.

    ``effect`` and ``null_effects`` are % changes of the amplifiers' summed contrast;
    ``gap`` is the pooled DLA gap (logits) that :attr:`effect_gap` is in units of.
    """

    gate: list[Head]
    kind: str
    clean: Float[np.ndarray, "layer head"]
    knocked: Float[np.ndarray, "layer head"]
    amplifiers: list[Head]
    effect: float
    null_heads: list[Head] = field(metadata={"group": "null", "key": "heads"})
    null_effects: list[float] = field(metadata={"group": "null", "key": "effects"})
    gap: float = float("nan")

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
    def z(self) -> float:
        """The effect's distance from the null mean in null sds (negative: a larger fall)."""
        sd = self.null_sd
        return (self.effect - self.null_mean) / sd if sd > 0 else float("nan")

    @property
    def p(self) -> float:
        """Empirical one-sided p of the gate's effect against the random-head null."""
        below = sum(1 for e in self.null_effects if e <= self.effect)
        return (1 + below) / (1 + len(self.null_effects))

    @property
    def min_p(self) -> float:
        """The smallest p this many null heads can give."""
        return 1.0 / (1 + len(self.null_effects))

    @property
    def clean_sum(self) -> float:
        """The amplifiers' summed clean contrast (logits)."""
        return float(sum(float(self.clean[h]) for h in self.amplifiers))

    def in_gap(self, percent: float) -> float:
        """A % change of the amplifiers' summed contrast in units of the pooled DLA gap."""
        return percent / 100.0 * self.clean_sum / self.gap

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
            "effect_gap": self.in_gap(self.effect),
            "null_gap": {
                "mean": self.in_gap(self.null_mean),
                "sd": abs(self.in_gap(self.null_sd)),
                "max_drop": abs(self.in_gap(self.null_max)),
            },
            "z": self.z,
            "p": self.p,
            "min_p": self.min_p,
        }


def knockout_contrast(
    model: HookedModel,
    harmful: Sequence[ChatPrompt],
    control: Sequence[ChatPrompt],
    refusal_ids: list[int],
    answer_ids: Int[Tensor, " pair"],
    heads: Sequence[Head],
    kind: AblationKind,
    reference: Sequence[dict[int, Tensor]] | None = None,
    seed: int = 0,
) -> tuple[Float[np.ndarray, "layer head"], Float[np.ndarray, "layer head"]]:
    """Mean per-head DLA of the harmful and of the control prompts under the knockout.

    Each side's knockout rows are drawn as for that side alone, but the two sides
    share their length batches: 48 prompts run in 3 batches of 16, not 2 x (16 + 8).
    """
    rows = [
        *knockouts(heads, harmful, kind, reference, seed),
        *knockouts(heads, control, kind, reference, seed),
    ]
    answers = torch.cat([answer_ids, answer_ids])
    dla, _ = intervened_dla(model, [*harmful, *control], refusal_ids, answers, rows)
    return dla[: len(harmful)].mean(axis=0), dla[len(harmful) :].mean(axis=0)


def null_heads(
    band_layers: Sequence[int], n_heads: int, exclude: Sequence[Head], n_null: int, seed: int
) -> list[Head]:
    """Up to ``n_null`` distinct random heads of the band, none of ``exclude`` (seeded).

    The band is shuffled once per seed and the excluded heads skipped, so null sets
    drawn with different exclusions (each gate candidate's, the cascade's) share
    their heads and their stored knockouts.
    """
    pool = [(layer, head) for layer in band_layers for head in range(n_heads)]
    rng = np.random.default_rng(seed)
    skip = set(exclude)
    picks = [pool[int(i)] for i in rng.permutation(len(pool)) if pool[int(i)] not in skip]
    return sorted(picks[:n_null])


def amplifier_change(
    clean: Float[np.ndarray, "layer head"],
    knocked: Float[np.ndarray, "layer head"],
    amplifiers: Sequence[Head],
) -> float:
    """Percentage change of the amplifiers' summed DLA (their contrast, in the audit)."""
    if not amplifiers:
        return float("nan")
    before = sum(float(clean[h]) for h in amplifiers)
    after = sum(float(knocked[h]) for h in amplifiers)
    return float(percent_change(np.array(before), np.array(after)))
