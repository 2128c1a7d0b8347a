"""Dose-response: scale the gate's output and watch refusal and behaviour move.

A gate that routes refusal should act like a dial. Multiplying its output by
``alpha`` (0 silences it, 1 is the clean model, above 1 amplifies it) should
move the refusal score monotonically, and the greedy response should walk
through the behaviour classes (answer -> evasion -> refusal as alpha rises).
For every alpha this records the mean refusal score on the harmful prompts and
the share of each behaviour class among their greedy continuations.

Explained in ``docs/science.md#dose-response``.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from functools import partial
from typing import Any

from attribution.result import Result
from circuits.behaviour import BEHAVIOURS, Judge, class_shares, classify, greedy_continuations
from circuits.knockout import Head, variant_scores
from patching.chat import ChatPrompt
from patching.interventions import HeadIntervention, Scale
from patching.model import HookedModel

DEFAULT_ALPHAS: tuple[float, ...] = (0.0, 0.25, 0.5, 0.75, 1.0, 1.5, 2.0, 3.0)


@dataclass
class DoseResponse(Result):
    """Refusal score and behaviour shares along the scaling factor alpha."""

    heads: list[Head]
    alphas: list[float]
    score_mean: list[float] = field(metadata={"key": "refusal_score"})
    score_sd: list[float] = field(metadata={"key": "refusal_score_sd"})
    shares: list[dict[str, float]] = field(metadata={"key": "behaviour"})
    examples: list[str]
    n_prompts: int

    def dominant(self) -> list[str]:
        """The most common behaviour class at each alpha."""
        return [max(BEHAVIOURS, key=lambda b: s[b]) for s in self.shares]

    def derived(self) -> dict[str, Any]:
        return {"dominant": self.dominant()}


def _same_row(row: list[HeadIntervention], _prompt: int) -> list[HeadIntervention]:
    return row


def dose_response(
    model: HookedModel,
    prompts: Sequence[ChatPrompt],
    refusal_ids: list[int],
    heads: Sequence[Head],
    *,
    alphas: Sequence[float] = DEFAULT_ALPHAS,
    n_tokens: int = 8,
    judge: Judge | None = None,
    progress: bool = True,
) -> DoseResponse:
    """Scale every head in ``heads`` by each alpha; score and classify the responses."""
    means, sds, shares, examples = [], [], [], []
    dose_rows: list[list[HeadIntervention]] = [
        [Scale(lay, h, alpha=float(alpha)) for lay, h in heads] for alpha in alphas
    ]
    # Scores of every dose from one kept clean pass, each from the gate's layer on.
    _, all_scores = variant_scores(
        model,
        prompts,
        refusal_ids,
        [partial(_same_row, row) for row in dose_rows],
        progress=progress,
        desc="dose-response",
    )
    # Every dose's continuations in one decoding: a step costs little more for more rows.
    n = len(prompts)
    texts = greedy_continuations(
        model,
        [p for _ in dose_rows for p in prompts],
        n_tokens,
        [row for row in dose_rows for _ in prompts],
    )
    for d, scores in enumerate(all_scores):
        dose_texts = texts[d * n : (d + 1) * n]
        means.append(float(scores.mean()))
        sds.append(float(scores.std(ddof=1)) if len(scores) > 1 else 0.0)
        shares.append(class_shares(classify(dose_texts, judge)))
        examples.append(dose_texts[0] if dose_texts else "")
    return DoseResponse(
        heads=list(heads),
        alphas=[float(a) for a in alphas],
        score_mean=means,
        score_sd=sds,
        shares=shares,
        examples=examples,
        n_prompts=len(prompts),
    )
