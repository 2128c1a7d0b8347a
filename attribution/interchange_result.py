"""The result of an interchange test: per-pair changes of every head, and their statistics.

``necessity_drop[i, l, h] = m(s_i) - m(s_i with head (l, h) from c_i)`` and
``sufficiency_rise[i, l, h] = m(c_i with head (l, h) from s_i) - m(c_i)`` are
stored in the metric's own units. Necessity and sufficiency are these as
fractions of the clean gap ``m(s) - m(c)`` on the result's ``scale``:

- ``"pooled"`` (the default, and the audit's): divided by the mean absolute
  clean gap over pairs (:func:`attribution.statistics.pooled_scale`; its module
  docstring says why the per-pair form fails the label-shuffle null);
- ``"per_pair"``: each pair divided by its own gap.

Either way 1 means "the head's patch moves the metric the whole clean gap" and
0 "no effect". Means, intervals, p and q come from
:func:`attribution.statistics.effect_stats` (one definition for the screen and
the audit).

Explained in ``docs/science.md#interchange``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np
from jaxtyping import Float

from attribution.result import Result
from attribution.statistics import (
    DEFAULT_CI_LEVEL,
    DEFAULT_N_BOOT,
    EffectStats,
    HeadStat,
    Scale,
    effect_stats,
    pooled_scale,
    resolution_floor,
    scaled_effects,
)
from patching.interventions import Positions

Which = Literal["necessity", "sufficiency"]
PER_PAIR = {"group": "per_pair"}


@dataclass
class PatchingResult(Result):
    """Per-pair interchange changes of every head, and their statistics.

    Changes are NaN where a pair was excluded (near-zero clean gap) or a head
    was not patched exactly (prescreen mode).
    """

    model: str
    metric: str
    positions: Positions
    mode: str
    necessity_drop: Float[np.ndarray, "pair layer head"] = field(metadata=PER_PAIR)
    sufficiency_rise: Float[np.ndarray, "pair layer head"] = field(metadata=PER_PAIR)
    clean_harmful: Float[np.ndarray, " pair"] = field(metadata=PER_PAIR)
    clean_control: Float[np.ndarray, " pair"] = field(metadata=PER_PAIR)
    truncated: list[int] = field(default_factory=list)
    excluded: list[int] = field(default_factory=list)
    forward_passes: int = 0
    seconds: float = 0.0
    seed: int = 0
    n_boot: int = DEFAULT_N_BOOT
    ci_level: float = DEFAULT_CI_LEVEL
    scale: Scale = "pooled"
    _stats: dict[str, EffectStats] = field(default_factory=dict, repr=False, compare=False)

    @property
    def n_pairs(self) -> int:
        return int(self.necessity_drop.shape[0])

    @property
    def n_layers(self) -> int:
        return int(self.necessity_drop.shape[1])

    @property
    def n_heads(self) -> int:
        return int(self.necessity_drop.shape[2])

    @property
    def n(self) -> int:
        """Pairs that enter the statistics (all minus the excluded ones)."""
        return self.n_pairs - len(self.excluded)

    @property
    def gap(self) -> Float[np.ndarray, " pair"]:
        """Each pair's clean gap ``m(s) - m(c)``."""
        return self.clean_harmful - self.clean_control

    @property
    def unit(self) -> float | Float[np.ndarray, " pair"]:
        """What the changes are divided by: the pooled gap, or each pair's own."""
        return pooled_scale(self.gap) if self.scale == "pooled" else self.gap

    def pairs_of(self, which: Which) -> Float[np.ndarray, "pair layer head"]:
        """Per-pair effects as fractions of the clean gap on :attr:`scale`."""
        raw = self.necessity_drop if which == "necessity" else self.sufficiency_rise
        return scaled_effects(raw, self.gap, self.scale)

    @property
    def necessity_pairs(self) -> Float[np.ndarray, "pair layer head"]:
        return self.pairs_of("necessity")

    @property
    def sufficiency_pairs(self) -> Float[np.ndarray, "pair layer head"]:
        return self.pairs_of("sufficiency")

    def stats(self, which: Which = "necessity") -> EffectStats:
        """Mean effect, CI, p and q per head (computed once, seeded)."""
        if which not in self._stats:
            self._stats[which] = effect_stats(
                self.pairs_of(which),
                seed=self.seed,
                n_boot=self.n_boot,
                level=self.ci_level,
                floor=resolution_floor(self.gap, self.unit),
            )
        return self._stats[which]

    @property
    def necessity(self) -> Float[np.ndarray, "layer head"]:
        return self.stats("necessity").effect

    @property
    def sufficiency(self) -> Float[np.ndarray, "layer head"]:
        return self.stats("sufficiency").effect

    def top(
        self, k: int = 10, *, which: Which = "necessity", by: Literal["value", "abs"] = "value"
    ) -> list[HeadStat]:
        """The ``k`` heads with the largest mean effect (or magnitude); unpatched heads last."""
        return self.stats(which).top(k, by=by)

    def significant(self, alpha: float = 0.05, *, which: Which = "necessity") -> list[HeadStat]:
        """Heads with ``q < alpha``, largest ``|effect|`` first."""
        return self.stats(which).significant(alpha)

    def to_dataframe(self) -> Any:
        """One row per head and direction: effect, CI, p, q, n."""
        import pandas as pd

        rows = [
            {"which": which, **self.stats(which).head(layer, head).__dict__, "metric": self.metric}
            for which in ("necessity", "sufficiency")
            for layer in range(self.n_layers)
            for head in range(self.n_heads)
        ]
        return pd.DataFrame(rows)

    def derived(self) -> dict[str, Any]:
        """Shape, pair counts, and each direction's effect, CI, p and q per head."""
        data: dict[str, Any] = {
            "n_layers": self.n_layers,
            "n_heads": self.n_heads,
            "n_pairs": self.n_pairs,
            "n": self.n,
            "pooled_gap": pooled_scale(self.gap),
        }
        for which in ("necessity", "sufficiency"):
            s = self.stats(which)  # type: ignore[arg-type]
            data[which] = s.effect
            for key in ("ci_low", "ci_high", "p", "q"):
                data[f"{which}_{key}"] = getattr(s, key)
        data["p"], data["q"] = data["necessity_p"], data["necessity_q"]
        return data
