"""Running interventions fast and exactly: batched rows, skipped layers, cached prefixes.

A patched run differs from its clean run only *downstream* of the patch. This
engine recomputes nothing else:

1. **Skipped layers.** Layers before the first patched layer ``L`` see exactly
   the clean run's residual stream. :func:`clean_run` records the input of every
   block (and the arguments the model passed to it: rotary cos/sin, attention
   mask, position ids), and :func:`run_rows` calls the bridge's blocks ``L..n-1``
   itself on that cached input. TransformerLens's ``start_at_layer`` gives the
   same numbers but still runs every layer
   (``docs/dependencies.md#layers-batching-gradients``), so the engine
   has its own loop.
2. **Cached prefix.** When every patch is at positions ``>= p`` (e.g. the last
   position), positions ``< p`` are identical to the clean run in *every* layer.
   :func:`clean_run` with ``start=p`` keeps the clean keys and values of
   positions ``< p``, and patched runs process only positions ``>= p`` against
   them (the model's own ``past_key_values`` mechanism).
3. **Batched rows, staggered entry.** Each row of one forward pass carries its
   own list of interventions (typically: each row patches a different head), so
   many heads are patched in one pass. A row joins the batch at its own first
   patched layer (with the clean input of that block), so no row recomputes a
   layer its patch cannot change. :func:`rows_per_chunk` sizes the batches to a
   memory budget.
4. **Batched clean runs.** :func:`clean_runs` runs several prompts (a pair's
   harmful and control prompt, or several pairs; left-padded when their lengths
   differ) in one pass and splits its cache per row, each row from its own start.

Only the read-out positions (by default the last one) go through the last
block's MLP, the final norm and the unembedding: nothing reads the others.
:func:`run_rows_full` runs the same hooks through a plain full forward pass: the
reference every speed path is tested against (1e-5).

Where the code is: this module holds :func:`clean_runs` (with the self-check of
:mod:`patching.self_check` on a model's first run) and re-exports the rest;
:mod:`patching.clean_run` is the cached clean pass, :mod:`patching.rows` the
patched rows, :mod:`patching.hooks` every hook they install. Runs of *one* set of
interventions over *many* prompts (knockouts, steering, decoding) are the
executor's (:mod:`patching.executor`).

Explained in ``docs/design.md#two-shapes-of-intervened-run``.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import torch
from jaxtyping import Float, Int
from torch import Tensor

from patching import compat, self_check
from patching.clean_run import CleanRun, RunStats, clean_pass
from patching.hooks import Hook
from patching.interventions import Ablation, Intervention, Scale, resolve_positions
from patching.model import HookedModel
from patching.rows import (
    CPU_CHUNK_MB,
    DEFAULT_BUDGET_MB,
    fast_paths,
    rows_per_chunk,
    run_rows,
    run_rows_fast,
    run_rows_full,
)

__all__ = [
    "CPU_CHUNK_MB",
    "DEFAULT_BUDGET_MB",
    "CleanRun",
    "Hook",
    "RunStats",
    "check_engine",
    "clean_run",
    "clean_runs",
    "rows_per_chunk",
    "run_rows",
    "run_rows_full",
]


def clean_runs(
    model: HookedModel,
    tokens: Int[Tensor, "batch pos"] | Sequence[Int[Tensor, " _pos"]],
    *,
    start: int | Sequence[int] = 0,
    readout: Sequence[int] = (-1,),
    labels: Sequence[Mapping[str, int]] | None = None,
    fwd_hooks: Sequence[Hook] = (),
) -> tuple[list[CleanRun], Float[Tensor, "batch readout d_vocab"]]:
    """Clean runs of several sequences in one batched forward pass.

    Returns each row's :class:`CleanRun` and the batch's read-out logits. Sequences of
    different lengths are left-padded (masked, with their own position ids), and the
    read-out positions must then count from the end. The pass computes every
    position and follows torch's grad mode: under ``torch.enable_grad()`` the logits
    keep their graph, and ``fwd_hooks`` (extra TransformerLens hooks) can retain
    intermediate tensors, padded, for a backward pass
    (:mod:`patching.gradient_estimate`).

    The first call on a model runs the self-check (:mod:`patching.self_check`); if the
    fast paths fail it, this and every later call use plain passes (start 0, and each
    row alone unless ``fwd_hooks`` need the batch), with the same numbers.

    Args:
        start: one start, or one per row: patched runs of that row recompute only the
            positions from it on, against the keys and values the pass left in its
            cache for the earlier ones; patches must be at positions ``>= start``.
            Falls back to 0 (with the same results) on caches that cannot be reset
            to a prefix.
        readout: positions whose logits patched runs return (negative: from the end).
        labels: each row's named positions; ``last`` defaults to the final token.
    """
    rows = [row.to(model.device) for row in tokens]
    batch = len(rows)
    lengths = [len(row) for row in rows]
    if len(set(lengths)) > 1 and any(p >= 0 for p in readout):
        raise ValueError(
            f"sequences of different lengths ({min(lengths)}-{max(lengths)} tokens) read out "
            f"positions from the end; give negative read-out indices instead of {list(readout)}"
        )
    reads = [resolve_positions(list(readout), n, {}) for n in lengths]
    starts = [start] * batch if isinstance(start, int) else list(start)
    if len(starts) != batch:
        raise ValueError(f"{len(starts)} starts given for {batch} rows")
    if not all(0 <= s <= min(read) for s, read in zip(starts, reads, strict=True)):
        raise ValueError(f"starts {starts} must be between 0 and the first read-out position")
    row_labels = [dict(labels[r]) if labels is not None else {} for r in range(batch)]
    if model.engine_check is None:
        check_engine(model, rows[0])
    if fast_paths(model):
        return clean_pass(model, rows, starts, reads, row_labels, fwd_hooks)
    if fwd_hooks:  # the hooks see one batched pass: keep it, without the cache
        return clean_pass(model, rows, [0] * batch, reads, row_labels, fwd_hooks)
    alone = [
        clean_pass(model, [row], [0], [read], [lab], ())
        for row, read, lab in zip(rows, reads, row_labels, strict=True)
    ]
    return [run for made, _ in alone for run in made], torch.cat([lg for _, lg in alone])


def check_engine(model: HookedModel, prompt: Tensor) -> self_check.EngineCheck:
    """Run the self-check on ``model`` with ``prompt`` now, and keep its result on the model.

    :func:`clean_runs` calls it before a model's first run; call it yourself to check
    again (the ``check`` command does). Missing internals turn the fast paths off
    without trying them.
    """
    missing = compat.missing_internals(model.bridge)
    if missing:
        model.engine_check = self_check.disabled("missing " + ", ".join(missing))
    else:
        model.engine_check = _self_check(model, prompt.to(model.device))
    return model.engine_check


def _self_check(model: HookedModel, prompt: Tensor) -> self_check.EngineCheck:
    """The fast paths against plain forward passes, on the user's first prompt.

    Whatever the caller asked for, the check exercises every fast path: the prompt
    and a copy one token shorter run as one left-padded pass, each from its last
    position (a cached prefix, per-row starts); each row's clean logits and three
    patched variants (a head zero-ablated in the first, a middle and the last layer,
    rows joining at their own layer) must equal a plain forward pass of the same
    variants on that row alone. The knockout path too: the prompt and a copy one token
    shorter (sharing all but their last two tokens), a middle-layer head zeroed at every
    position, resumed at its layer with the shared prefix run once (:mod:`patching.executor`).
    """
    prompts = [prompt, prompt[1:]] if len(prompt) > 2 else [prompt]
    heads = model.n_heads
    probe: list[list[Intervention]] = [
        [Scale(layer, head, "last", alpha=0.0)]
        for layer, head in (
            (0, 0),
            (model.n_layers // 2, heads // 2),
            (model.n_layers - 1, heads - 1),
        )
    ]
    where = f"on {model.name}, a {len(prompt)}-token prompt and a padded shorter copy"
    nested = [prompt, prompt[:-1]] if len(prompt) > 2 else []
    knockout: list[Intervention] = [Ablation(model.n_layers // 2, 0, kind="zero")]
    with torch.no_grad():
        plain = torch.cat(
            [run_rows_full(model, p, [[], *probe], readout=[len(p) - 1]) for p in prompts]
            + [run_rows_full(model, p, [knockout], readout=[len(p) - 1]) for p in nested]
        )
        try:
            starts = [len(p) - 1 for p in prompts]
            reads = [[len(p) - 1] for p in prompts]
            runs, _ = clean_pass(model, prompts, starts, reads, [{} for _ in prompts], ())
            fast = torch.cat(
                [torch.cat([run.logits[None], run_rows_fast(model, run, probe)]) for run in runs]
                + ([_knocked_out(model, nested, knockout)] if nested else [])
            )
        except Exception as exc:  # internals changed shape: a crash is a failed check too
            return self_check.crashed(f"{type(exc).__name__}: {exc}", plain, n_tokens=len(prompt))
        finally:
            model.knocked_prefix = None
    return self_check.compare(fast, plain, n_tokens=len(prompt), where=where)


def _knocked_out(
    model: HookedModel, prompts: list[Tensor], knockout: list[Intervention]
) -> Float[Tensor, "batch 1 d_vocab"]:
    """The knockout path (:mod:`patching.executor`): resumed at the head's layer from a
    kept clean pass, the prompts' shared prefix run once under the knockout."""
    from patching.executor import forward_batch

    last = {"resid": f"blocks.{model.n_layers - 1}.hook_resid_post"}
    at = [[len(p) - 1] for p in prompts]
    clean = forward_batch(model, prompts, capture=last, at=at, readout=at, keep_blocks=True)
    rows = [knockout for _ in prompts]
    out = forward_batch(model, prompts, rows, capture=last, at=at, readout=at, resume=clean.blocks)
    return out.logits


def clean_run(
    model: HookedModel,
    tokens: Int[Tensor, " pos"],
    *,
    start: int = 0,
    readout: Sequence[int] = (-1,),
    labels: Mapping[str, int] | None = None,
) -> CleanRun:
    """Run ``tokens`` once and cache what patched runs reuse (see :func:`clean_runs`)."""
    with torch.no_grad():
        runs, _ = clean_runs(
            model, tokens[None], start=start, readout=readout, labels=[labels or {}]
        )
    return runs[0]
