"""Per-head ablation against interchange: two rankings of the same heads.

Ablation asks "does the model need this head's output at all?"; interchange
asks "does this head carry what makes the harmful prompt different?". They
disagree exactly where it matters: a gate whose output on a control prompt is
as large as on a harmful one (only *what* it writes differs) looks harmless to
some ablations and essential to interchange, and a head that writes a constant
offset looks essential to zero-ablation and irrelevant to interchange. This
module ranks every head by both (each with sign-flip p and BH q), reports the
Spearman rank correlation, and lists the heads each method finds that the
other misses.

Explained in ``docs/science.md#ablation-vs-interchange``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

from attribution.result import Result
from attribution.statistics import EffectStats
from circuits.knockout import Head


def spearman(a: np.ndarray, b: np.ndarray) -> float:
    """Spearman rank correlation of two arrays (average ranks for ties; NaN pairs dropped)."""
    x, y = np.ravel(a), np.ravel(b)
    keep = np.isfinite(x) & np.isfinite(y)
    if keep.sum() < 3:
        return float("nan")
    rx = pd.Series(x[keep]).rank().to_numpy()
    ry = pd.Series(y[keep]).rank().to_numpy()
    if rx.std() == 0 or ry.std() == 0:
        return float("nan")
    return float(np.corrcoef(rx, ry)[0, 1])


def _found(stats: EffectStats, alpha: float, min_effect: float) -> set[Head]:
    n_heads = stats.effect.shape[1]
    hits = (np.nan_to_num(stats.q, nan=1.0) < alpha) & (np.abs(stats.effect) >= min_effect)
    return {(int(i) // n_heads, int(i) % n_heads) for i in np.flatnonzero(hits)}


@dataclass
class AblationComparison(Result):
    """Both rankings, their rank correlation, and what each finds alone."""

    kind: str
    ablation: EffectStats
    interchange: EffectStats
    alpha: float = 0.05
    min_effect: float = 0.05

    @property
    def rank_correlation(self) -> float:
        return spearman(self.ablation.effect, self.interchange.effect)

    @property
    def found_by_ablation(self) -> set[Head]:
        return _found(self.ablation, self.alpha, self.min_effect)

    @property
    def found_by_interchange(self) -> set[Head]:
        return _found(self.interchange, self.alpha, self.min_effect)

    def table(self, k: int | None = None) -> list[dict[str, Any]]:
        """One row per head: both effects and ranks, ordered by interchange necessity."""
        n_heads = self.ablation.effect.shape[1]
        ranks = {
            name: pd.Series(-np.nan_to_num(s.effect.ravel(), nan=-np.inf)).rank(method="min")
            for name, s in (("ablation", self.ablation), ("interchange", self.interchange))
        }
        rows = [
            {
                "layer": i // n_heads,
                "head": i % n_heads,
                "interchange": float(self.interchange.effect.flat[i]),
                "interchange_q": float(self.interchange.q.flat[i]),
                "interchange_rank": int(ranks["interchange"][i]),
                "ablation": float(self.ablation.effect.flat[i]),
                "ablation_q": float(self.ablation.q.flat[i]),
                "ablation_rank": int(ranks["ablation"][i]),
            }
            for i in range(self.ablation.effect.size)
        ]
        rows.sort(key=lambda r: r["interchange_rank"])
        return rows[:k] if k is not None else rows

    def derived(self) -> dict[str, Any]:
        """The correlation, what each method finds (alone and together) and the table."""
        both = self.found_by_ablation & self.found_by_interchange
        return {
            "rank_correlation": self.rank_correlation,
            "found_by_both": sorted(both),
            "interchange_only": sorted(self.found_by_interchange - both),
            "ablation_only": sorted(self.found_by_ablation - both),
            "table": self.table(),
        }
