"""Screen every head with a first-order estimate, then measure the top ones exactly.

On a real model an exact per-head measurement of every head costs an hour
(336 heads x 2 directions x 24 pairs on a 0.5B model). The audit therefore
ranks every head by a cheap gradient estimate (:mod:`patching.gradient_estimate`:
one forward and one backward pass per prompt gives every head's estimate at
once) and runs the exact measurement only on the heads the estimate puts at the
top, plus the heads of the gate's depth band. Heads left out are NaN in the
exact statistics, so the Benjamini-Hochberg correction runs over the measured
heads only.

The estimate is a screen, not a measurement: :class:`ScreenCheck` reports how
well it ranked the heads that were measured (the Spearman correlation between
estimate and exact value on them, and how many of the exact top 5 the screen's
top k held). Models with few heads (the organism's 32) are measured exactly
everywhere: the screen saves little there, and their answers stay those of the
exact test.

Explained in ``docs/science.md#screening``.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
from jaxtyping import Float

from attribution.result import Result
from attribution.statistics import top_heads
from circuits.ablation_compare import spearman
from circuits.knockout import Head

# How many of the exact top heads the recall check looks for in the screen's top k.
RECALL_TOP = 5


def top_of(
    score: Float[np.ndarray, "layer head"], k: int, layers: Sequence[int] | None = None
) -> list[Head]:
    """The ``k`` heads of largest ``score`` (NaN last), among ``layers`` when given."""
    if layers is not None:
        masked = np.full_like(score, np.nan)
        masked[list(layers)] = score[list(layers)]
        score = masked
    return [h for h in top_heads(score, k) if np.isfinite(score[h])]


def every_head(shape: tuple[int, int]) -> list[Head]:
    return [(layer, head) for layer in range(shape[0]) for head in range(shape[1])]


@dataclass
class ScreenCheck(Result):
    """Which heads one measurement took exactly, and how well the screen ranked them.

    ``screened`` is ``False`` when every head was measured exactly (then the rest is
    empty or NaN). ``spearman`` compares estimate and exact value over the measured
    heads; ``recall`` is the share of the exact top :data:`RECALL_TOP` heads (by
    ``ranked_by``) that the screen's own top ``k`` held.
    """

    measurement: str
    screened: bool
    measured: list[Head]
    k: int
    ranked_by: str
    spearman: float = float("nan")
    exact_top: list[Head] | None = None
    recall: float = float("nan")
    reason: str = ""

    def line(self) -> str:
        """One sentence for the report."""
        if not self.screened:
            return f"{self.measurement}: every head measured exactly ({self.reason})."
        top = len(self.exact_top or [])
        return (
            f"{self.measurement}: {len(self.measured)} heads measured exactly after screening "
            f"(estimate vs exact Spearman {self.spearman:.2f}; exact top {top} by "
            f"{self.ranked_by} inside the screen's top {self.k}: {self.recall:.0%})."
        )


def check(
    measurement: str,
    estimate: Float[np.ndarray, "layer head"],
    exact: Float[np.ndarray, "layer head"],
    measured: Sequence[Head],
    k: int,
    ranked_by: str,
    by_abs: bool = True,
) -> ScreenCheck:
    """The recall check of a screen: ``estimate`` (every head) against ``exact`` (measured)."""
    mask = np.zeros(estimate.shape, dtype=bool)
    for h in measured:
        mask[h] = True
    est = np.where(mask, estimate, np.nan)
    key = np.abs if by_abs else (lambda x: x)
    screen_top = set(top_of(key(estimate), k))
    exact_top = top_of(key(np.where(mask, exact, np.nan)), RECALL_TOP)
    inside = sum(1 for h in exact_top if h in screen_top)
    return ScreenCheck(
        measurement=measurement,
        screened=True,
        measured=sorted(measured),
        k=k,
        ranked_by=ranked_by,
        spearman=spearman(est, np.where(mask, exact, np.nan)),
        exact_top=exact_top,
        recall=inside / len(exact_top) if exact_top else float("nan"),
    )


def not_screened(measurement: str, shape: tuple[int, int], reason: str) -> ScreenCheck:
    return ScreenCheck(
        measurement=measurement,
        screened=False,
        measured=every_head(shape),
        k=shape[0] * shape[1],
        ranked_by="",
        reason=reason,
    )


def screen_all(n_heads_total: int, exact: str, min_heads: int) -> str | None:
    """Why every head is measured exactly (``None``: screen first)."""
    if exact == "all":
        return 'exact="all"'
    if n_heads_total <= min_heads:
        return f"{n_heads_total} heads, at most screen_min_heads={min_heads}"
    return None


def to_json(heads: Sequence[Head]) -> list[list[int]]:
    return [list(h) for h in heads]


def from_json(data: Any) -> list[Head]:
    return [(int(a), int(b)) for a, b in data]
