"""Head interventions applied to whole batches, and DLA of intervened runs.

The engine (:mod:`patching.engine`) runs *many variants of one prompt*; the
audit's later steps need the opposite: *one intervention on many prompts*
(knock the gate out on every harmful prompt, scale it on every prompt of a
dose). :func:`head_hooks` turns per-row lists of
:mod:`patching.interventions` objects into TransformerLens hooks for a batch,
and :func:`intervened_dla` decomposes such runs and projects every head onto the
refusal direction (:func:`attribution.dla.attribute`), which is what a knockout
cascade compares with the clean DLA.

References for mean and resample ablation come from the *control* prompts: the
mean is the head's output averaged over every control prompt and position (what
the head writes when nothing harmful is present), and resampling takes the
head's output on another pair's control prompt, aligned from the end (positions
with no counterpart get the mean).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import torch
from jaxtyping import Float, Int
from torch import Tensor

from attribution.dla import attribute
from patching.batching import batches_by_length
from patching.chat import ChatPrompt
from patching.components import decompose_residual
from patching.interventions import (
    Ablation,
    AblationKind,
    HeadIntervention,
    resolve_positions,
    z_hook,
)
from patching.model import HookedModel

Head = tuple[int, int]
Hook = tuple[str | Callable[..., Any], Callable[..., Any]]
RowInterventions = Sequence[Sequence[HeadIntervention]]


def head_hooks(rows: RowInterventions) -> list[Hook]:
    """Hooks that apply ``rows[r]`` to batch row r (positions resolved per call)."""
    by_hook: dict[str, list[tuple[int, HeadIntervention]]] = {}
    for r, row in enumerate(rows):
        for iv in row:
            by_hook.setdefault(iv.hook, []).append((r, iv))

    def make(items: list[tuple[int, HeadIntervention]]) -> Callable[..., Tensor]:
        # Bound per hook name: inside a hook, hook.name is the canonical alias.
        def hook(z: Tensor, hook: Any) -> Tensor:
            z = z.clone()
            n_pos = z.shape[1]
            # A batch shares one length, so only the end-of-prompt labels are known here.
            labels = {"last": n_pos - 1, "t_post_inst": n_pos - 1}
            for r, iv in items:
                pos = resolve_positions(iv.positions, n_pos, labels)
                z[r, pos, iv.head] = iv.apply(z[r, pos, iv.head], pos)
            return z

        return hook

    return [(name, make(items)) for name, items in by_hook.items()]


def capture_z(
    model: HookedModel, prompts: Sequence[ChatPrompt], layers: Sequence[int], batch_size: int = 16
) -> list[dict[int, Float[Tensor, "pos head d_head"]]]:
    """Every head's output in ``layers`` at every position of each prompt."""
    out: list[dict[int, Tensor]] = [{} for _ in prompts]
    for rows, tokens in batches_by_length(prompts, batch_size):
        store: dict[int, Tensor] = {}

        def keep(layer: int, store: dict[int, Tensor] = store) -> Callable[..., Tensor]:
            def hook(z: Tensor, hook: Any) -> Tensor:
                store[layer] = z.detach().cpu()
                return z

            return hook

        model.run_with_hooks(tokens, [(z_hook(layer), keep(layer)) for layer in layers])
        for j, i in enumerate(rows):
            out[i] = {layer: store[layer][j] for layer in layers}
    return out


def knockouts(
    heads: Sequence[Head],
    prompts: Sequence[ChatPrompt],
    kind: AblationKind,
    reference: Sequence[dict[int, Tensor]] | None = None,
    seed: int = 0,
) -> list[list[HeadIntervention]]:
    """One row of :class:`Ablation` per prompt knocking out every head in ``heads``.

    ``reference`` is :func:`capture_z` of the control prompts (needed for mean and
    resample); resampling pairs prompt i with a seeded other control prompt.
    """
    if kind == "zero":
        row: list[HeadIntervention] = [Ablation(layer, head, kind="zero") for layer, head in heads]
        return [row for _ in prompts]
    if reference is None:
        raise ValueError(f"a {kind} knockout needs the control prompts' head outputs")
    means = {
        (layer, head): torch.cat([r[layer][:, head] for r in reference]).mean(dim=0)
        for layer, head in heads
    }
    if kind == "mean":
        row = [
            Ablation(layer, head, kind="mean", reference=means[layer, head])
            for layer, head in heads
        ]
        return [row for _ in prompts]
    rng = np.random.default_rng(seed)
    n_ref = len(reference)
    rows = []
    for i, prompt in enumerate(prompts):
        j = int(rng.integers(0, n_ref - 1)) if n_ref > 1 else 0
        j = j + 1 if n_ref > 1 and j >= i % n_ref else j  # another prompt than its own pair's
        row = []
        for layer, head in heads:
            src = reference[j][layer][:, head]
            filled = means[layer, head].expand(len(prompt), -1).clone()
            k = min(len(prompt), src.shape[0])
            filled[len(prompt) - k :] = src[src.shape[0] - k :]
            row.append(Ablation(layer, head, kind="resample", reference=filled))
        rows.append(row)
    return rows


def intervened_dla(
    model: HookedModel,
    prompts: Sequence[ChatPrompt],
    refusal_ids: list[int],
    answer_ids: Int[Tensor, " prompt"],
    rows: RowInterventions | None = None,
    batch_size: int = 16,
) -> tuple[Float[np.ndarray, "prompt layer head"], Float[np.ndarray, " prompt"]]:
    """Per-head DLA and refusal logit difference of every prompt, under ``rows[i]``."""
    heads = np.zeros((len(prompts), model.n_layers, model.n_heads))
    diff = np.zeros(len(prompts))
    for idx, tokens in batches_by_length(prompts, batch_size):
        hooks = head_hooks([rows[i] for i in idx]) if rows is not None else []
        dec = decompose_residual(model, tokens, interventions=hooks)
        dla = attribute(model, dec, refusal_ids, answer_ids[idx])
        heads[idx] = dla.heads.cpu().numpy()
        diff[idx] = dla.logit_diff.cpu().numpy()
    return heads, diff
