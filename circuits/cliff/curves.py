"""The probe along traces: per-position probabilities averaged aligned on the end of thinking and
at relative position, and each trace's cliff score (docs/science.md#refusal-cliff).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from jaxtyping import Float, Int

from attribution.result import Result
from attribution.statistics import bootstrap_mean_ci
from circuits.cliff.probe import RefusalProbe, probe_positions
from circuits.cliff.traces import TraceTokens
from patching.executor import DEFAULT_BATCH_SIZE
from patching.model import HookedModel

DEFAULT_BINS = 10  # relative-position bins per segment (prompt, thinking, answer)


@dataclass(frozen=True)
class CliffCurves(Result):
    """The probe's refusal probability along traces, averaged two ways.

    ``offsets``: positions relative to the last position before the answer (0; the
    thinking segment and prompt before, the answer opening after); ``mean``/``ci_*``
    over the traces that have that position (``count``), never padded. ``bins``:
    relative position, ``[-1, 0)`` the prompt, ``[0, 1)`` the thinking segment *and the
    close marker* (positions ``think .. answer - 1``: open marker, reasoning, close marker,
    so the last position before the answer falls in the last bin of ``[0, 1)``),
    ``[1, 2)`` the answer opening; each trace's positions in a bin are averaged first.
    ``cliff_scores``: per trace, the maximum over the thinking segment minus the value
    at the last position before the answer (probability units).
    """

    offsets: Int[np.ndarray, " offset"]
    mean: Float[np.ndarray, " offset"]
    ci_low: Float[np.ndarray, " offset"]
    ci_high: Float[np.ndarray, " offset"]
    count: Int[np.ndarray, " offset"]
    bins: Float[np.ndarray, " bin"]
    bin_mean: Float[np.ndarray, " bin"]
    bin_low: Float[np.ndarray, " bin"]
    bin_high: Float[np.ndarray, " bin"]
    bin_count: Int[np.ndarray, " bin"]
    cliff_scores: Float[np.ndarray, " trace"]
    per_trace: list[list[float]] = field(metadata={"group": "per_trace"})
    segments: list[list[int]] = field(metadata={"group": "per_trace"})

    def derived(self) -> dict[str, Any]:
        return {"mean_cliff_score": float(np.mean(self.cliff_scores))}


def cliff_score(probability: Float[np.ndarray, " pos"], tt: TraceTokens) -> float:
    """Max over the thinking segment minus the value at the last position before the answer."""
    return float(np.max(probability[tt.think : tt.close]) - probability[tt.last_before_answer])


def _mean_band(values: np.ndarray, seed: int) -> tuple[np.ndarray, ...]:
    count = np.isfinite(values).sum(axis=0)
    with np.errstate(invalid="ignore"):
        mean = np.nansum(values, axis=0) / np.where(count > 0, count, np.nan)
    low, high = bootstrap_mean_ci(values, seed=seed) if len(values) else (mean, mean)
    return mean, low, high, count


def cliff_curves(
    probabilities: Sequence[np.ndarray],
    segments: Sequence[TraceTokens],
    *,
    n_bins: int = DEFAULT_BINS,
    seed: int = 0,
) -> CliffCurves:
    """Average per-position probe probabilities of traces (see :class:`CliffCurves`)."""
    if not probabilities:
        raise ValueError("no traces to average; pass at least one complete trace")
    before = max(tt.last_before_answer for tt in segments)
    after = max(len(tt.tokens) - tt.answer for tt in segments)
    offsets = np.arange(-before, after + 1)
    aligned = np.full((len(probabilities), len(offsets)), np.nan)
    binned = np.full((len(probabilities), 3 * n_bins), np.nan)
    for i, (p, tt) in enumerate(zip(probabilities, segments, strict=True)):
        aligned[i, before - tt.last_before_answer : before - tt.last_before_answer + len(p)] = p
        # [0, 1) runs to the answer, close marker included: the cliff is read at its end.
        for s, (lo, hi) in enumerate(((0, tt.think), (tt.think, tt.answer), (tt.answer, len(p)))):
            if hi <= lo:
                continue
            which = s * n_bins + np.minimum((np.arange(hi - lo) * n_bins) // (hi - lo), n_bins - 1)
            for b in np.unique(which):
                binned[i, b] = float(np.mean(p[lo:hi][which == b]))
    mean, low, high, count = _mean_band(aligned, seed)
    bmean, blow, bhigh, bcount = _mean_band(binned, seed)
    return CliffCurves(
        offsets=offsets,
        mean=mean,
        ci_low=low,
        ci_high=high,
        count=count,
        bins=(np.arange(3 * n_bins) + 0.5) / n_bins - 1.0,
        bin_mean=bmean,
        bin_low=blow,
        bin_high=bhigh,
        bin_count=bcount,
        cliff_scores=np.array(
            [cliff_score(p, tt) for p, tt in zip(probabilities, segments, strict=True)]
        ),
        per_trace=[[float(v) for v in p] for p in probabilities],
        segments=[[tt.think, tt.close, tt.answer] for tt in segments],
    )


def trace_probabilities(
    model: HookedModel,
    probe: RefusalProbe,
    segments: Sequence[TraceTokens],
    *,
    batch_size: int = DEFAULT_BATCH_SIZE,
) -> list[np.ndarray]:
    """The probe's refusal probability at every position of every trace."""
    logits = probe_positions(model, probe, [tt.tokens for tt in segments], batch_size=batch_size)
    return [1.0 / (1.0 + np.exp(-x)) for x in logits]
