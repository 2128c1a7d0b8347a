"""Patched rows: many variants of one prompt, each from its own first patched layer.

Given a prompt's :class:`~patching.clean_run.CleanRun`, :func:`run_rows` returns
the read-out logits of one patched run per *row*, a row being a list of
:mod:`patching.interventions` objects (typically: each row patches a different
head). All rows of a chunk share one forward pass that this module drives
itself, block by block:

- a row whose first intervention is in layer ``l`` equals the clean run below
  ``l``, so it *joins* the batch at block ``l`` with the clean input of that
  block (rows sorted by first layer, so a chunk starts as late as it can);
- positions before the clean run's ``start`` are not recomputed: attention reads
  their keys and values from the cached prefix;
- only the read-out positions go through the last block's MLP, the final norm
  and the unembedding (:func:`patching.hooks.readout_hooks`).

:func:`rows_per_chunk` sizes chunks to a memory budget. :func:`run_rows_full`
runs the same hooks through one plain full forward pass: the reference the fast
paths are tested against (1e-5), and what :func:`run_rows` falls back on when
the model's self-check (:mod:`patching.self_check`) turned the fast paths off.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import torch
from jaxtyping import Float, Int
from torch import Tensor

from patching import compat
from patching.clean_run import CleanRun, RunStats
from patching.hooks import Rows, intervention_hooks, readout_hooks
from patching.interventions import (
    AddVector,
    HeadIntervention,
    Intervention,
    first_layer,
    resolve_positions,
)
from patching.model import HookedModel

DEFAULT_BUDGET_MB = 512.0
# On CPU a batched run is fastest per row while its activations stay near the caches:
# past ~64 MB the elementwise ops (GELU's temporaries) go to main memory, and a full
# 144-row grid chunk of the benchmark model ran 25% slower than 20-row chunks
# (benchmarks/README.md). The user's budget still caps it from above.
CPU_CHUNK_MB = 64.0


def fast_paths(model: HookedModel) -> bool:
    """Whether the fast paths are on for ``model`` (on until its self-check fails)."""
    return model.engine_check is None or model.engine_check.fast_paths


def check_rows(model: HookedModel, rows: Rows) -> None:
    """Refuse interventions on heads or layers the model does not have."""
    for row in rows:
        for iv in row:
            if isinstance(iv, HeadIntervention):
                model.check_head(iv.layer, iv.head)
            elif isinstance(iv, AddVector):
                model.check_head(iv.layer, 0)


def rows_per_chunk(model: HookedModel, n_pos: int, budget_mb: float = DEFAULT_BUDGET_MB) -> int:
    """How many patched rows of ``n_pos`` positions fit in ``budget_mb`` of activations.

    A row of one block holds the residual, q/k/v/z, the MLP hidden state and the
    attention scores; the estimate counts those with a 2x margin for temporaries.
    On CPU the budget is at most :data:`CPU_CHUNK_MB` (larger batches run slower).
    """
    if model.device.type == "cpu":
        budget_mb = min(budget_mb, CPU_CHUNK_MB)
    d = model.d_model
    per_row = n_pos * (12 * d + 4 * model.n_heads * model.d_head) + 2 * model.n_heads * n_pos**2
    per_row_bytes = 2 * per_row * torch.finfo(model.dtype).bits // 8
    return max(1, int(budget_mb * 2**20 // max(1, per_row_bytes)))


def final_logits(model: HookedModel, resid: Tensor, columns: Sequence[int] | None = None) -> Tensor:
    """The model's logits from its final residual; with ``columns``, those tokens' only.

    The other entries are then NaN: a knockout that reads a few logits skips the
    whole vocabulary's unembedding (a tenth of a late knockout on a 151k-token model),
    and anything that reads another token fails loudly instead of silently.
    """
    bridge = model.bridge
    normed = bridge.ln_final(resid)
    if columns is None:
        logits = bridge.unembed(normed)
    else:
        index = torch.tensor(list(columns), dtype=torch.long, device=normed.device)
        read = bridge.unembed.hook_in(normed)  # the read-out hooks select positions there
        some = read @ model.W_U[:, index]
        if model.b_U is not None:
            some = some + model.b_U[index]
        logits = some.new_full((*some.shape[:-1], model.W_U.shape[1]), float("nan"))
        logits[..., index] = some
    return _soft_capped(model, logits)


# The hook whose output is the unembedding's input (what :func:`unembed` takes).
FINAL_NORMED = "ln_final.hook_out"

# Rows unembedded together: reading a 151k x 896 unembedding costs about as much for 16
# rows as for 64 on a CPU, so passes that read whole-vocabulary logits (a hundred
# variants' refusal scores) keep their normalised residuals and unembed them in chunks.
UNEMBED_ROWS = 128


def unembed(
    model: HookedModel, normed: Float[Tensor, "row d_model"]
) -> Float[Tensor, "row d_vocab"]:
    """The logits of final-normalised residuals (captured at :data:`FINAL_NORMED`):
    what :func:`final_logits` computes after the final norm."""
    logits = normed.to(model.W_U.dtype) @ model.W_U
    return _soft_capped(model, logits + model.b_U if model.b_U is not None else logits)


def _soft_capped(model: HookedModel, logits: Tensor) -> Tensor:
    cap = model.logit_soft_cap
    return cap * torch.tanh(logits / cap) if cap is not None else logits


def _run_chunk(
    model: HookedModel, clean: CleanRun, rows: Sequence[Sequence[Intervention]]
) -> Tensor:
    """One batched run of ``rows`` (sorted by first layer): each row joins at its own layer.

    A row whose first intervention is in layer ``l`` is identical to the clean run
    below ``l``, so it enters the batch there with the clean run's block input;
    rows keep their batch index once in, so the hooks' row indices stay valid.
    """
    entry = [first_layer([row]) for row in rows]
    read = [p - clean.start for p in clean.readout]
    hooks = intervention_hooks(rows, clean.n_pos, clean.labels, start=clean.start)
    last = model.n_layers - 1
    if not any(isinstance(iv, AddVector) and iv.layer == last for row in rows for iv in row):
        hooks += readout_hooks(model.n_layers, read, unembed=False)
    cache = clean.cache
    if clean.prefix is not None:
        # Reset every layer to the clean prefix, one copy per row in the batch at that
        # layer; attention appends the recomputed positions to it.
        active = [max(1, sum(1 for e in entry if e <= layer)) for layer in range(model.n_layers)]
        compat.reset_cache(cache, clean.prefix, active)
    hidden: Tensor | None = None
    bridge = model.bridge
    with bridge.hooks(fwd_hooks=hooks):
        for layer in range(entry[0], model.n_layers):
            joining = sum(1 for e in entry if e == layer)
            if joining:
                new = clean.block_inputs[layer].expand(joining, -1, -1)
                hidden = new.contiguous() if hidden is None else torch.cat([hidden, new])
            assert hidden is not None  # the first row joins at entry[0]
            args, kwargs = clean.block_calls[layer]
            out = bridge.blocks[layer](
                hidden,
                *compat.substitute_cache(args, cache),
                **compat.substitute_cache(kwargs, cache),
            )
            hidden = out[0] if isinstance(out, tuple) else out
    assert hidden is not None
    return final_logits(model, hidden[:, read])


def run_rows(
    model: HookedModel,
    clean: CleanRun,
    rows: Sequence[Sequence[Intervention]],
    *,
    budget_mb: float = DEFAULT_BUDGET_MB,
    stats: RunStats | None = None,
) -> Float[Tensor, "batch readout d_vocab"]:
    """Logits at ``clean.readout`` of one patched run per row, by the fast paths.

    Each row's interventions apply to that row only; a row's layers before its
    first patched layer and positions before ``clean.start`` come from ``clean``.
    Rows run sorted by first layer, so each chunk enters the model as late as its
    rows allow; the logits come back in the order of ``rows``. When the model's
    self-check turned the fast paths off, plain forward passes give the same logits.
    """
    check_rows(model, rows)
    if fast_paths(model):
        return run_rows_fast(model, clean, rows, budget_mb=budget_mb, stats=stats)
    chunk = rows_per_chunk(model, clean.n_pos, budget_mb)
    out = []
    for begin in range(0, len(rows), chunk):
        part = rows[begin : begin + chunk]
        out.append(
            run_rows_full(model, clean.tokens, part, readout=clean.readout, labels=clean.labels)
        )
        if stats is not None:
            stats.forward_passes += 1
            stats.rows += len(part)
            stats.block_rows += model.n_layers * len(part)
    return torch.cat(out)


def run_rows_fast(
    model: HookedModel,
    clean: CleanRun,
    rows: Sequence[Sequence[Intervention]],
    *,
    budget_mb: float = DEFAULT_BUDGET_MB,
    stats: RunStats | None = None,
) -> Tensor:
    """:func:`run_rows` by the fast paths, whatever the self-check said (the check itself)."""
    chunk = rows_per_chunk(model, clean.n_pos - clean.start, budget_mb)
    order = sorted(range(len(rows)), key=lambda r: first_layer([rows[r]]))
    ordered = [rows[r] for r in order]
    out = []
    with torch.no_grad():
        for begin in range(0, len(ordered), chunk):
            part = ordered[begin : begin + chunk]
            out.append(_run_chunk(model, clean, part))
            if stats is not None:
                stats.forward_passes += 1
                stats.rows += len(part)
                stats.block_rows += sum(model.n_layers - first_layer([row]) for row in part)
    logits = torch.cat(out)
    unsorted = torch.empty_like(logits)
    unsorted[order] = logits
    return unsorted


def run_rows_full(
    model: HookedModel,
    tokens: Int[Tensor, " pos"],
    rows: Sequence[Sequence[Intervention]],
    *,
    readout: Sequence[int] = (-1,),
    labels: Mapping[str, int] | None = None,
) -> Float[Tensor, "batch readout d_vocab"]:
    """The reference: one plain full forward pass of every row with the same hooks."""
    check_rows(model, rows)
    n_pos = int(tokens.shape[0])
    all_labels = dict(labels or {})
    all_labels.setdefault("last", n_pos - 1)
    hooks = intervention_hooks(rows, n_pos, all_labels)
    batch = tokens[None].expand(len(rows), -1)
    logits = model.run_with_hooks(batch, hooks)
    return logits[:, resolve_positions(list(readout), n_pos, {})]
