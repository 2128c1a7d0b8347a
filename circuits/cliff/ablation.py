"""Top-k% ablation: attack success with thinking with the top traced heads ablated, against as
many random traced heads (docs/science.md#refusal-cliff).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

import circuits.cliff as package
from attribution.result import Result
from circuits.behaviour import Judge, classify
from circuits.cliff.traces import Trace
from circuits.cliff.tracing import HeadTrace
from patching.executor import DEFAULT_BATCH_SIZE
from patching.interventions import Ablation, Intervention, Scale
from patching.model import HookedModel

DEFAULT_TOP_PERCENT = (1.5, 3.0, 10.0)
DEFAULT_RANDOM_DRAWS = 99  # random head sets per k: p resolves down to 0.01


def attack_success(
    model: HookedModel,
    harmful: Sequence[str],
    n_tokens: int,
    heads: Sequence[tuple[int, int]] = (),
    *,
    renormalise: bool = False,
    judge: Judge | None = None,
    batch_size: int = DEFAULT_BATCH_SIZE,
) -> tuple[float, int]:
    """Share of harmful prompts answered with thinking, ``heads`` zero-ablated at every
    step, and how many traces never closed (counted as not answered).

    ``renormalise``: the other heads of each touched layer are scaled by
    ``n_heads / (n_heads - k)`` (the paper's code; boosts them).
    """
    ivs: list[Intervention] = [Ablation(a, b, "all") for a, b in heads]
    if renormalise:
        for layer in sorted({a for a, _ in heads}):
            gone = {b for a, b in heads if a == layer}
            if len(gone) < model.n_heads:
                boost = model.n_heads / (model.n_heads - len(gone))
                ivs += [
                    Scale(layer, b, "all", boost) for b in range(model.n_heads) if b not in gone
                ]
    rows = [ivs] * len(harmful) if ivs else None
    # Looked up on the package at call time, like every cross-call here: its names are the
    # ones a caller replaces (a stub generator, a cheaper attack success).
    traces = package.generate_traces(model, harmful, n_tokens, rows, batch_size=batch_size)
    return answered_share(traces, judge)


def answered_share(traces: Sequence[Trace | None], judge: Judge | None = None) -> tuple[float, int]:
    """Share of ``traces`` whose response the behaviour classifier calls an answer (a trace
    that never closed thinking, ``None``, counts as not answered), and how many never closed."""
    done = [t for t in traces if t is not None]
    labels = classify([t.response for t in done], judge) if done else []
    return sum(1 for x in labels if x == "answer") / len(traces), len(traces) - len(done)


@dataclass(frozen=True)
class TopKAblation(Result):
    """Attack success with the top ``percent``% refusal-suppressing heads ablated, and
    with as many random heads drawn from the same candidates (``random_attack_success``,
    one per draw).

    ``k_requested`` is ``percent`` of all heads; only the ``n_candidates`` heads before
    the probe layer are traced, so ``len(heads)`` is ``k_requested`` capped at
    ``n_candidates`` (``capped``). ``p_value``: the empirical one-sided p that the top
    heads lower attack success more than random candidates do (ablating heads that
    suppress refusal restores it, so fewer harmful prompts are answered),
    ``(1 + #{random <= top}) / (1 + draws)`` (NaN without draws; never below
    ``1 / (1 + draws)``)."""

    percent: float
    heads: list[list[int]]
    attack_success: float
    random_heads: list[list[list[int]]]
    random_attack_success: list[float]
    renormalised: bool
    k_requested: int
    n_candidates: int

    @property
    def p_value(self) -> float:
        rates = np.asarray(self.random_attack_success, dtype=np.float64)
        if not len(rates):
            return float("nan")
        return float((1 + np.sum(rates <= self.attack_success)) / (1 + len(rates)))

    def derived(self) -> dict[str, Any]:
        rates = self.random_attack_success
        return {
            "n_heads": len(self.heads),
            "capped": len(self.heads) < self.k_requested,
            "random_mean": float(np.mean(rates)) if rates else float("nan"),
            "p_value": self.p_value,
        }


def ablate_top_heads(
    model: HookedModel,
    trace: HeadTrace,
    harmful: Sequence[str],
    n_tokens: int,
    *,
    percents: Sequence[float] = DEFAULT_TOP_PERCENT,
    random_draws: int = DEFAULT_RANDOM_DRAWS,
    renormalise: bool = False,
    seed: int = 0,
    judge: Judge | None = None,
    batch_size: int = DEFAULT_BATCH_SIZE,
) -> list[TopKAblation]:
    """For each k in ``percents``: ablate the top k% of all heads (at least one, at most
    the traced candidates), measure attack success, and the same for ``random_draws``
    sets of as many heads drawn from the same candidates (:class:`TopKAblation`).

    Cost: ``len(percents) * (1 + random_draws)`` generations over ``harmful``.
    """
    total = model.n_layers * model.n_heads
    # The traced heads (those before the probe layer) are the only candidates: a random
    # head at or after it could not have been ranked, so drawing it would be unfair.
    candidates = [(h.layer, h.head) for h in trace.ranked if np.isfinite(h.value)]
    if not candidates:
        raise ValueError(
            f"no traced heads before probe layer {trace.probe_layer}: pick a later --layer"
        )
    rng = np.random.default_rng(seed)
    out = []
    for pct in percents:
        if not 0.0 < pct <= 100.0:
            raise ValueError(f"top {pct}% of heads: pass percentages in (0, 100]")
        wanted = max(1, round(pct / 100.0 * total))
        k = min(wanted, len(candidates))
        top = candidates[:k]
        asr, _ = package.attack_success(
            model, harmful, n_tokens, top, renormalise=renormalise, judge=judge,
            batch_size=batch_size,
        )  # fmt: skip
        draws, rates = [], []
        for _ in range(random_draws):
            pick = rng.choice(len(candidates), size=k, replace=False)
            heads = [candidates[int(i)] for i in pick]
            rate, _ = package.attack_success(
                model, harmful, n_tokens, heads, renormalise=renormalise, judge=judge,
                batch_size=batch_size,
            )  # fmt: skip
            draws.append([list(h) for h in heads])
            rates.append(rate)
        heads_top = [list(h) for h in top]
        out.append(
            TopKAblation(pct, heads_top, asr, draws, rates, renormalise, wanted, len(candidates))
        )
    return out
