"""Reference computations the tests hold the toolkit's faster paths against.

Each computes a figure the straight way (one full pass per row, one side at a time)
that the library computes another way (resumed from a kept clean pass, both sides in
shared batches); they are references, not library API.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from jaxtyping import Float, Int
from torch import Tensor

from attribution.metrics import refusal_score
from circuits.knockout import Head, intervened_dla, knockouts
from patching.chat import ChatPrompt
from patching.executor import run
from patching.interventions import AblationKind, HeadIntervention
from patching.model import HookedModel


def scores_under(
    model: HookedModel,
    prompts: Sequence[ChatPrompt],
    refusal_ids: list[int],
    rows: Sequence[Sequence[HeadIntervention]] | None,
    batch_size: int = 16,
) -> Float[np.ndarray, " prompt"]:
    """Refusal score at the last prompt position of every prompt under ``rows[i]`` (full passes)."""
    logits = run(model, prompts, rows, batch_size=batch_size)[:, -1]
    return refusal_score(logits, refusal_ids).cpu().numpy()


def knockout_dla(
    model: HookedModel,
    prompts: Sequence[ChatPrompt],
    refusal_ids: list[int],
    answer_ids: Int[Tensor, " prompt"],
    heads: Sequence[Head],
    kind: AblationKind,
    reference: Sequence[dict[int, Tensor]] | None = None,
    seed: int = 0,
) -> Float[np.ndarray, "layer head"]:
    """Mean per-head DLA over one side's ``prompts`` with every head in ``heads`` knocked out.

    :func:`circuits.cascade.knockout_contrast` runs both sides in shared batches; this
    runs one side alone, with the same knockout rows.
    """
    rows = knockouts(heads, prompts, kind, reference, seed)
    dla, _ = intervened_dla(model, prompts, refusal_ids, answer_ids, rows)
    return dla.mean(axis=0)
