"""The audit's interchange measured again with a second metric on its top heads.

The audit ranks heads by one interchange metric (``AuditConfig.metric``: the
refusal score by default, or the gate paper's teacher-forced NLL of the
control's greedy continuation). :class:`MetricCheck` holds the same test under
the *other* metric, run exactly on a few heads (the gate candidates and the top
heads by necessity), each metric on its own pooled gap; :meth:`MetricCheck.disagreements`
names the heads where the two tell different stories: opposite signs of the
necessity or the sufficiency, or significant under one and not the other (``p < alpha``, the
per-head sign-flip test: the second metric's heads are too few for a
Benjamini-Hochberg family comparable to the first's). ``docs/science.md#metric-cross-check``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from attribution.result import Result
from attribution.statistics import EffectStats, HeadStat
from circuits.knockout import Head

OTHER_METRIC = {"refusal_score": "nll", "nll": "refusal_score", "logit_diff": "nll"}


@dataclass
class MetricCheck(Result):
    """Necessity and sufficiency of ``heads`` under ``metric`` and under ``other``.

    ``main_*`` are the audit's own numbers (metric ``metric``) for ``heads``;
    ``other_*`` the interchange under ``other`` on the same pairs, heads and
    positions, on ``other``'s pooled gap. Effects are fractions of each metric's gap.
    """

    metric: str
    other: str
    alpha: float
    heads: list[Head]
    main_necessity: list[HeadStat]
    main_sufficiency: list[HeadStat]
    other_necessity: list[HeadStat]
    other_sufficiency: list[HeadStat]

    @classmethod
    def of(
        cls,
        heads: list[Head],
        metric: str,
        other: str,
        alpha: float,
        main: tuple[EffectStats, EffectStats],
        measured: tuple[EffectStats, EffectStats],
    ) -> MetricCheck:
        """The check of ``heads`` from each metric's (necessity, sufficiency) statistics."""

        def pick(stats: EffectStats) -> list[HeadStat]:
            return [stats.head(*h) for h in heads]

        return cls(
            metric=metric,
            other=other,
            alpha=alpha,
            heads=list(heads),
            main_necessity=pick(main[0]),
            main_sufficiency=pick(main[1]),
            other_necessity=pick(measured[0]),
            other_sufficiency=pick(measured[1]),
        )

    def _pairs(self, which: str) -> list[tuple[Head, HeadStat, HeadStat]]:
        main, other = getattr(self, f"main_{which}"), getattr(self, f"other_{which}")
        return list(zip(self.heads, main, other, strict=True))

    def disagreements(self) -> list[tuple[Head, str]]:
        """Each head and effect that differ in sign or significance, with why.

        A sign counts only where at least one metric calls the effect significant.

        ``"necessity: sign"``, ``"sufficiency: significance"``, ...; heads not measured
        under either metric (NaN) are left out.
        """
        out: list[tuple[Head, str]] = []
        for which in ("necessity", "sufficiency"):
            for h, a, b in self._pairs(which):
                if not (np.isfinite(a.value) and np.isfinite(b.value)):
                    continue
                why = []
                # The sign of an effect neither metric calls significant is rounding noise.
                significant = a.p < self.alpha or b.p < self.alpha
                if significant and np.sign(a.value) != np.sign(b.value):
                    why.append("sign")
                if (a.p < self.alpha) != (b.p < self.alpha):
                    why.append("significance")
                if why:
                    out.append((h, f"{which}: {' and '.join(why)}"))
        return out

    def line(self) -> str:
        """One sentence: where the two metrics disagree, with both numbers."""
        head = f"{self.other} beside {self.metric} on {len(self.heads)} top heads:"
        diff = self.disagreements()
        if not diff:
            return (
                f"{head} necessity and sufficiency agree in sign and significance "
                f"(p < {self.alpha:g}) on every one."
            )
        stats = {
            (h, which): (a, b)
            for which in ("necessity", "sufficiency")
            for h, a, b in self._pairs(which)
        }
        parts = []
        for h, why in diff:
            a, b = stats[h, why.split(":")[0]]
            parts.append(
                f"L{h[0]}H{h[1]} {why} ({a.value:+.1%} p={a.p:.2g} vs {b.value:+.1%} p={b.p:.2g})"
            )
        return f"{head} they disagree on " + "; ".join(parts) + "."

    def derived(self) -> dict[str, Any]:
        return {"disagreements": [[list(h), why] for h, why in self.disagreements()]}
