"""Negative refusal heads: the heads that push *against* refusal.

Jailbreak framings and long reasoning traces work partly by recruiting heads
whose output lowers the refusal logits. Two measurements name them:

1. **Down-scaling.** Each head's output is multiplied by 0.1 on every harmful
   prompt (plain and jailbreak-framed); a negative head's removal *raises* the
   refusal score. Per-prompt raises, on the pooled scale of the interchange gap,
   get a sign-flip test and Benjamini-Hochberg q.
2. **Direct effect.** The head's refusal DLA on those prompts is negative.

The check that matters to a red-teamer is behavioural: ablate the top ``k``
percent of heads by raise (among heads with negative DLA) and measure the
**attack success rate**, the share of harmful prompts the model *answers*
(greedy response judged "answer"), before and after.

Explained in ``docs/science.md#negative-heads``.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from jaxtyping import Float
from tqdm.auto import tqdm

from attribution.metrics import refusal_score
from attribution.result import Result
from attribution.statistics import EffectStats, HeadStat
from circuits.behaviour import Judge, classify, greedy_continuations
from circuits.knockout import Head
from patching.batching import length_batches
from patching.chat import ChatPrompt
from patching.executor import forward_batch
from patching.interventions import Ablation, HeadIntervention, Scale
from patching.model import HookedModel


@dataclass
class NegativeHeadsResult(Result):
    """Down-scaling raises, DLA, the heads named, and attack success before/after."""

    scale: float
    raises: EffectStats
    harmful_dla: Float[np.ndarray, "layer head"]
    heads: list[Head]
    ablated: list[Head]
    top_pct: float
    asr_before: dict[str, float]
    asr_after: dict[str, float]

    def top(self, k: int = 10) -> list[HeadStat]:
        """The ``k`` heads whose down-scaling raises refusal most (``value``: the raise).

        A head's direct effect is ``harmful_dla[h.layer, h.head]``.
        """
        return self.raises.top(k)


def per_head_scores(
    model: HookedModel,
    prompts: Sequence[ChatPrompt],
    refusal_ids: list[int],
    row_of: Any,
    progress: bool = True,
    desc: str = "per-head",
    heads: Sequence[Head] | None = None,
    batch_size: int = 16,
) -> tuple[np.ndarray, np.ndarray]:
    """Clean score per prompt and score with each head intervened: ``[prompt, layer, head]``.

    ``row_of(layer, head, prompt_index)`` gives that head's intervention; only
    ``heads`` are run when given (the others NaN). Each batch of prompts of similar
    length runs clean once, kept, and then once per head from that head's layer
    (:func:`patching.executor.forward_batch` with ``resume``), the prompts' shared
    chat-template prefix once per head: 3.5x faster than a batch of heads per prompt
    on a 0.5B model (``docs/science.md#negative-heads``).
    """
    every = [(lay, h) for lay in range(model.n_layers) for h in range(model.n_heads)]
    heads = every if heads is None else list(heads)
    clean = np.zeros(len(prompts))
    out = np.full((len(prompts), model.n_layers, model.n_heads), np.nan)
    batches = length_batches([len(p) for p in prompts], batch_size)
    bar = tqdm(total=len(batches) * len(heads), desc=desc, unit="head", disable=not progress)
    with torch.no_grad(), bar:
        for idx in batches:
            tokens = [prompts[i].tokens for i in idx]
            base = forward_batch(model, tokens, keep_blocks=bool(heads))
            clean[idx] = refusal_score(base.logits[:, -1], refusal_ids).cpu().numpy()
            for lay, h in heads:
                rows = [[row_of(lay, h, i)] for i in idx]
                logits = forward_batch(model, tokens, rows, resume=base.blocks).logits[:, -1]
                out[idx, lay, h] = refusal_score(logits, refusal_ids).cpu().numpy()
                bar.update(1)
    return clean, out


def downscale_raises(
    model: HookedModel,
    prompts: Sequence[ChatPrompt],
    refusal_ids: list[int],
    scale: float = 0.1,
    progress: bool = True,
    heads: Sequence[Head] | None = None,
) -> np.ndarray:
    """Per-prompt rise of the refusal score when each head (of ``heads``) is scaled by ``scale``."""
    clean, scaled = per_head_scores(
        model,
        prompts,
        refusal_ids,
        lambda lay, h, i: Scale(lay, h, alpha=scale),
        progress,
        "down-scaling",
        heads,
    )
    return scaled - clean[:, None, None]


def top_percent(raises: EffectStats, harmful_dla: np.ndarray, pct: float) -> list[Head]:
    """The top ``pct`` percent of all heads by raise, among heads with negative DLA."""
    n_heads = raises.effect.shape[1]
    k = max(1, math.ceil(pct / 100.0 * raises.effect.size))
    eligible = [
        (float(raises.effect.flat[i]), (i // n_heads, i % n_heads))
        for i in range(raises.effect.size)
        if harmful_dla.flat[i] < 0 and raises.effect.flat[i] > 0
    ]
    return sorted(h for _, h in sorted(eligible, key=lambda e: -e[0])[:k])


def attack_success(
    model: HookedModel,
    prompt_sets: Mapping[str, Sequence[ChatPrompt]],
    ablate: Sequence[Head],
    n_tokens: int = 8,
    judge: Judge | None = None,
) -> tuple[dict[str, float], dict[str, float]]:
    """Share of each set's harmful prompts answered, clean and with ``ablate`` zeroed."""
    before, after = {}, {}
    row: list[HeadIntervention] = [Ablation(lay, h, kind="zero") for lay, h in ablate]
    for name, prompts in prompt_sets.items():
        if not prompts:
            continue
        clean = classify(greedy_continuations(model, prompts, n_tokens), judge)
        knocked = classify(
            greedy_continuations(model, prompts, n_tokens, [row for _ in prompts] if row else None),
            judge,
        )
        before[name] = sum(c == "answer" for c in clean) / len(prompts)
        after[name] = sum(c == "answer" for c in knocked) / len(prompts)
    return before, after
