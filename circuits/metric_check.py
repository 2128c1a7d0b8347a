"""The audit's interchange measured again with a second metric on its top heads.

The audit ranks heads by one interchange metric (``AuditConfig.metric``: the
refusal score by default, or the gate paper's teacher-forced NLL of the
control's greedy continuation). :class:`MetricCheck` holds the same test under
the *other* metric, run exactly on a few heads (the gate candidates and the top
heads by necessity), each metric on its own pooled gap; :meth:`MetricCheck.disagreements`
names the heads where the two tell different stories: opposite signs of the
necessity, or significant under one and not the other (``p < alpha``, the
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

    def disagreements(self) -> list[tuple[Head, str]]:
        """Each head whose necessity differs in sign or significance, with why."""
        out: list[tuple[Head, str]] = []
        for h, a, b in zip(self.heads, self.main_necessity, self.other_necessity, strict=True):
            if not (np.isfinite(a.value) and np.isfinite(b.value)):
                continue
            why = []
            if np.sign(a.value) != np.sign(b.value):
                why.append("sign")
            if (a.p < self.alpha) != (b.p < self.alpha):
                why.append("significance")
            if why:
                out.append((h, " and ".join(why)))
        return out

    def line(self) -> str:
        """One sentence: where the two metrics disagree, with both numbers."""
        diff = self.disagreements()
        if not diff:
            return (
                f"{self.other} beside {self.metric} on {len(self.heads)} top heads: necessity "
                f"agrees in sign and significance (p < {self.alpha:g}) on every one."
            )
        by_head = {h: (a, b) for h, a, b in zip(self.heads, self.main_necessity,
                                                  self.other_necessity, strict=True)}  # fmt: skip
        parts = [
            f"L{h[0]}H{h[1]} ({why}: {by_head[h][0].value:+.1%} p={by_head[h][0].p:.2g} vs "
            f"{by_head[h][1].value:+.1%} p={by_head[h][1].p:.2g})"
            for h, why in diff
        ]
        return (
            f"{self.other} beside {self.metric} on {len(self.heads)} top heads: necessity "
            f"disagrees on " + "; ".join(parts) + "."
        )

    def derived(self) -> dict[str, Any]:
        return {"disagreements": [[list(h), why] for h, why in self.disagreements()]}
