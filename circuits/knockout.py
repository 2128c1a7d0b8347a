"""Knockouts of heads on many prompts, and the DLA of the knocked-out runs.

The audit's later steps knock heads out *on every prompt of a set* (the gate
on every harmful prompt). :func:`knockouts` writes those knockouts as
:class:`~patching.interventions.Ablation` rows, one per prompt; the executor
(:mod:`patching.executor`) runs them, and :func:`intervened_dla` decomposes the
knocked-out runs and projects every head onto the refusal direction
(:func:`attribution.dla.attribute`), which is what a knockout cascade compares
with the clean DLA. Nothing here builds hooks: :mod:`patching.hooks` does.

References for mean and resample ablation come from the *control* prompts: the
mean is the head's output averaged over every control prompt and position (what
the head writes when nothing harmful is present), and resampling takes the
head's output on another pair's control prompt, aligned from the end (positions
with no counterpart get the mean).

Explained in ``docs/science.md#knockout-cascade``.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping, Sequence

import numpy as np
import torch
from jaxtyping import Float, Int
from torch import Tensor
from tqdm.auto import tqdm

from attribution.dla import attribute
from attribution.metrics import refusal_score
from patching.batching import length_batches
from patching.chat import ChatPrompt
from patching.components import decompose_residual
from patching.executor import (
    BatchOutput,
    BlockInputs,
    Prompt,
    forward_batch,
    prompt_labels,
    run_and_cache,
)
from patching.fingerprint import digest
from patching.interventions import (
    Ablation,
    AblationKind,
    HeadIntervention,
    Intervention,
    z_hook,
)
from patching.model import HookedModel
from patching.rows import FINAL_NORMED, UNEMBED_ROWS, unembed

Head = tuple[int, int]
RowInterventions = Sequence[Sequence[HeadIntervention]]


def capture_z(
    model: HookedModel, prompts: Sequence[ChatPrompt], layers: Sequence[int], batch_size: int = 16
) -> list[dict[int, Float[Tensor, "pos head d_head"]]]:
    """Every head's output in ``layers`` at every position of each prompt (on the CPU)."""
    names = {str(layer): z_hook(layer) for layer in layers}
    _, caches = run_and_cache(model, prompts, names=names, batch_size=batch_size, to_cpu=True)
    return [{layer: cache[str(layer)] for layer in layers} for cache in caches]


def knockouts(
    heads: Sequence[Head],
    prompts: Sequence[Prompt],
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


# Clean passes kept per model for knockouts (a cascade knocks out ~100 heads on the same
# prompts); each holds every block's input, ~60 MB for a batch of 16 prompts of a 0.5B
# model. A budget in bytes, not a count: the knockouts of n pairs cycle through all of
# their batches, and a count smaller than that recomputed every clean pass (5-8x slower).
KEPT_CLEAN_BYTES = 2 * 2**30


def _nbytes(blocks: BlockInputs) -> int:
    return sum(t.numel() * t.element_size() for t in blocks.inputs)


def _clean_blocks(model: HookedModel, prompts: Sequence[Prompt]) -> BlockInputs:
    """The clean decomposition pass of ``prompts``, run once and kept on the model."""
    key = digest([prompt_labels(p)[0].tolist() for p in prompts])
    kept = model.clean_blocks
    if key not in kept:
        blocks = decompose_residual(model, prompts, keep_blocks=True).blocks
        assert blocks is not None
        while kept and sum(map(_nbytes, kept.values())) + _nbytes(blocks) > KEPT_CLEAN_BYTES:
            kept.pop(next(iter(kept)))  # the oldest
        kept[key] = blocks
    return kept[key]


def variant_runs(
    model: HookedModel,
    tokens: Sequence[Tensor],
    variants: Sequence[Callable[[int], Sequence[Intervention]]],
    *,
    capture: Mapping[str, str] | None = None,
    at: Sequence[Sequence[int]] | None = None,
    until: int | None = None,
    logit_columns: Sequence[int] | None = None,
    batch_size: int = 16,
    progress: bool = False,
    desc: str = "variants",
) -> Iterator[tuple[int | None, list[int], BatchOutput]]:
    """Every batch of ``tokens`` run clean, then under each variant: ``(v, idx, output)``
    with ``v`` ``None`` for the clean pass, ``idx`` the batch's indices into ``tokens``.

    ``variants[v](i)`` are sequence i's interventions in variant v (a head scaled, knocked
    out...). Each batch of sequences of similar length runs clean once, kept, and then once
    per variant from the variant's first intervened layer, the sequences' shared
    chat-template prefix once per variant (:func:`patching.executor.forward_batch` with
    ``resume``). ``capture``, ``at`` (each sequence's absolute positions), ``until`` and
    ``logit_columns`` are :func:`~patching.executor.forward_batch`'s.
    """
    batches = length_batches([len(t) for t in tokens], batch_size)
    bar = tqdm(total=len(batches) * len(variants), desc=desc, unit="run", disable=not progress)
    with bar:
        for idx in batches:
            batch = [tokens[i] for i in idx]
            where = [at[i] for i in idx] if at is not None else None
            # The clean pass runs to the end whatever ``until``: the variants' shared-prefix
            # passes take every later block's call arguments from it.
            base = forward_batch(
                model, batch, capture=capture, at=where, keep_blocks=bool(variants),
                logit_columns=logit_columns,
            )  # fmt: skip
            yield None, idx, base
            for v, variant in enumerate(variants):
                rows = [list(variant(i)) for i in idx]
                yield v, idx, forward_batch(
                    model, batch, rows, capture=capture, at=where, until=until,
                    resume=base.blocks, logit_columns=logit_columns,
                )  # fmt: skip
                bar.update(1)


def variant_scores(
    model: HookedModel,
    prompts: Sequence[ChatPrompt],
    refusal_ids: list[int],
    variants: Sequence[Callable[[int], Sequence[HeadIntervention]]],
    *,
    batch_size: int = 16,
    progress: bool = False,
    desc: str = "variants",
) -> tuple[Float[np.ndarray, " prompt"], Float[np.ndarray, "variant prompt"]]:
    """Clean refusal score of every prompt, and its score under each variant's interventions
    (run by :func:`variant_runs`): the per-head and per-dose measurements of the audit.

    The passes keep each prompt's final-normalised residual and the scores unembed them
    all at the end, :data:`~patching.rows.UNEMBED_ROWS` rows at a time (a pass unembedding
    its own 16 rows read the whole unembedding each time: a tenth of the step).
    """
    tokens = [p.tokens for p in prompts]
    normed = torch.zeros(len(variants) + 1, len(prompts), model.d_model, dtype=model.dtype)
    runs = variant_runs(
        model, tokens, variants,
        capture={"normed": FINAL_NORMED}, at=[[len(t) - 1] for t in tokens], logit_columns=(),
        batch_size=batch_size, progress=progress, desc=desc,
    )  # fmt: skip
    for v, idx, got in runs:
        assert got.cache is not None
        normed[0 if v is None else v + 1, idx] = torch.cat([c["normed"] for c in got.cache]).cpu()
    flat = normed.flatten(0, 1)
    scores = torch.cat(
        [
            refusal_score(unembed(model, c.to(model.device)), refusal_ids).cpu()
            for c in flat.split(UNEMBED_ROWS)
        ]
    ).view(len(variants) + 1, len(prompts))
    return scores[0].numpy(), scores[1:].numpy()


def intervened_dla(
    model: HookedModel,
    prompts: Sequence[Prompt],
    refusal_ids: list[int],
    answer_ids: Int[Tensor, " prompt"],
    rows: RowInterventions | None = None,
    batch_size: int = 16,
) -> tuple[Float[np.ndarray, "prompt layer head"], Float[np.ndarray, " prompt"]]:
    """Per-head DLA and refusal logit difference of every prompt, under ``rows[i]``.

    Under ``rows``, each batch starts at its first intervened layer from the batch's
    clean pass (run once per model and prompts, and kept): the layers below it are
    the clean run's, so a knockout of a head at depth L recomputes only L and later.
    Zero and mean knockouts also run the prompts' shared chat-template prefix once
    and only each prompt's later tokens per row (``docs/science.md#knockout-cascade``).
    """
    heads = np.zeros((len(prompts), model.n_layers, model.n_heads))
    diff = np.zeros(len(prompts))
    for idx in length_batches([len(p) for p in prompts], batch_size):
        batch = [prompts[i] for i in idx]
        batch_rows = [rows[i] for i in idx] if rows is not None else None
        resume = _clean_blocks(model, batch) if batch_rows is not None and any(batch_rows) else None
        # The refusal logit difference reads the refusal and answer tokens' logits only.
        columns = sorted({*refusal_ids, *answer_ids[idx].tolist()})
        dec = decompose_residual(
            model, batch, rows=batch_rows, resume=resume, logit_columns=columns
        )
        dla = attribute(model, dec, refusal_ids, answer_ids[idx])
        heads[idx] = dla.heads.cpu().numpy()
        diff[idx] = dla.logit_diff.cpu().numpy()
    return heads, diff
