"""Clean runs: one batched pass that caches everything a patched run reuses.

A patched run (:mod:`patching.rows`) differs from its clean run only downstream
of its first patch, so the clean pass keeps, per prompt:

- the *input of every block* and the arguments the model passed to it (rotary
  cos/sin, attention mask, position ids), so a patched run can call blocks
  ``L..n-1`` itself on the cached input of block ``L``;
- every head's output (``hook_z``) at the recomputed positions, the source of
  interchange patches;
- with ``start = p``, the keys and values of positions ``< p`` (a *prefix*): a
  patched run then computes only positions ``>= p`` against them, through the
  model's own key/value cache (:mod:`patching.compat` holds every access to it).

Several prompts share one pass, left-padded (:mod:`patching.batching`); each
row's cache is sliced out of the batch, from its own start, by
:func:`_row_slice` and :func:`_query_slice`. Entry point:
:func:`patching.engine.clean_runs`, which also runs the self-check.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
from jaxtyping import Float, Int
from torch import Tensor

from patching import compat
from patching.batching import left_padded
from patching.hooks import Hook, padding_hooks, readout_hooks
from patching.interventions import z_hook
from patching.model import HookedModel


@dataclass
class RunStats:
    """What the engine did: batched forward passes, patched variants, block evaluations."""

    forward_passes: int = 0
    rows: int = 0
    block_rows: int = 0

    def add(self, other: RunStats) -> None:
        self.forward_passes += other.forward_passes
        self.rows += other.rows
        self.block_rows += other.block_rows


@dataclass
class CleanRun:
    """One prompt's clean run, cached so patched runs can start anywhere.

    Attributes:
        tokens: the run's tokens.
        start: the first position patched runs recompute (earlier ones come from ``prefix``).
        labels: named positions (``t_inst``, ``t_post_inst``, ``last``) as absolute indices.
        readout: absolute positions whose logits patched runs return.
        logits: the clean logits at ``readout``.
        z: every layer's head outputs at positions ``>= start``.
    """

    tokens: Int[Tensor, " pos"]
    start: int
    labels: dict[str, int]
    readout: list[int]
    logits: Float[Tensor, "readout d_vocab"]
    z: list[Float[Tensor, "computed head d_head"]]
    block_inputs: list[Float[Tensor, "1 computed d_model"]] = field(repr=False)
    block_calls: list[tuple[tuple[Any, ...], dict[str, Any]]] = field(repr=False)
    prefix: list[tuple[Tensor, Tensor]] | None = field(default=None, repr=False)
    cache: Any = field(default=None, repr=False)

    @property
    def n_pos(self) -> int:
        return int(self.tokens.shape[0])

    @property
    def nbytes(self) -> int:
        """Memory held by the cached block inputs, head outputs and prefix keys/values."""
        tensors = [*self.block_inputs, *self.z]
        tensors += [t for pair in self.prefix or [] for t in pair]
        return sum(t.numel() * t.element_size() for t in tensors)

    def head_output(self, layer: int, head: int) -> Float[Tensor, "pos d_head"]:
        """Head ``(layer, head)``'s output at every position (NaN before ``start``)."""
        z = self.z[layer][:, head]
        out = torch.full((self.n_pos, z.shape[-1]), float("nan"), dtype=z.dtype, device=z.device)
        out[self.start :] = z
        return out


def _row_slice(value: Any, row: int, batch: int) -> Any:
    """One row's share of a batched block call: batch-shaped tensors sliced, the rest shared.

    Masks come batch-shaped ([batch, 1, q, k]); rotary tables and position ids come
    as [1, ...] and broadcast, so only leading dimensions equal to ``batch`` are sliced.
    """
    if isinstance(value, Tensor):
        if batch > 1 and value.ndim >= 2 and value.shape[0] == batch:
            return value[row : row + 1]
        return value
    if isinstance(value, tuple):
        return tuple(_row_slice(v, row, batch) for v in value)
    if isinstance(value, list):
        return [_row_slice(v, row, batch) for v in value]
    if isinstance(value, dict):
        return {k: _row_slice(v, row, batch) for k, v in value.items()}
    return value


def _query_slice(value: Any, skip: int, pad: int, n_query: int) -> Any:
    """A block call's arguments for a row that starts ``skip`` positions into the pass.

    Tensors along the query axis lose their first ``skip`` entries: the attention mask
    ([batch, 1, query, key], dim 2), position ids ([batch, query]) and rotary tables
    ([batch, query, dim]) on dim 1. The mask's key axis loses the row's ``pad``
    leading padding positions only: the row's prefix cache holds the keys and values
    of the others.
    """
    if skip == 0:
        return value
    if isinstance(value, Tensor):
        if value.ndim == 4 and value.shape[2] == n_query:
            return value[:, :, skip:, pad:]
        if value.ndim in (2, 3) and value.shape[1] == n_query:
            return value[:, skip:]
        return value
    if isinstance(value, tuple):
        return tuple(_query_slice(v, skip, pad, n_query) for v in value)
    if isinstance(value, list):
        return [_query_slice(v, skip, pad, n_query) for v in value]
    if isinstance(value, dict):
        return {k: _query_slice(v, skip, pad, n_query) for k, v in value.items()}
    return value


def clean_pass(
    model: HookedModel,
    rows: Sequence[Tensor],
    starts: Sequence[int],
    reads: Sequence[list[int]],
    row_labels: Sequence[dict[str, int]],
    fwd_hooks: Sequence[Hook],
) -> tuple[list[CleanRun], Tensor]:
    """One batched clean pass: the body of :func:`patching.engine.clean_runs`, arguments checked."""
    batch = len(rows)
    lengths = [len(row) for row in rows]
    padded, pads, extra = left_padded(rows)
    n_pos = int(padded.shape[1])
    bridge = model.bridge
    # One pass from the first token: a separate pass for the prefix would stream the
    # weights once more, which costs more than the prefix's positions on CPU.
    cache: Any = compat.new_cache() if max(starts) > 0 else None
    n = model.n_layers
    inputs: list[Tensor] = [torch.empty(0)] * n
    calls: list[tuple[tuple[Any, ...], dict[str, Any]]] = [((), {})] * n
    zs: list[Tensor] = [torch.empty(0)] * n

    def pre_hook(layer: int) -> Callable[..., None]:
        def hook(module: Any, args: tuple[Any, ...], kwargs: dict[str, Any]) -> None:
            inputs[layer] = args[0].detach()
            calls[layer] = (tuple(args[1:]), dict(kwargs))

        return hook

    def keep_z(layer: int) -> Callable[..., Tensor]:
        def hook(z: Tensor, hook: Any) -> Tensor:
            zs[layer] = z.detach().clone()
            return z

        return hook

    handles = [
        bridge.blocks[layer].register_forward_pre_hook(pre_hook(layer), with_kwargs=True)
        for layer in range(n)
    ]
    try:
        if cache is not None:
            extra |= compat.cache_kwargs(bridge, cache)
        logits = bridge.run_with_hooks(
            padded,
            fwd_hooks=[
                *(padding_hooks(n) if any(pads) else []),
                *fwd_hooks,
                *((z_hook(layer), keep_z(layer)) for layer in range(n)),
                *readout_hooks(n, [n_pos - lengths[0] + p for p in reads[0]]),
            ],
            **extra,
        )
    finally:
        for handle in handles:
            handle.remove()
    # Each row's prefix: the keys and values of the positions before its start (copied,
    # so the pass's full cache can go); patched runs reset the cache to it.
    prefixes: list[list[tuple[Tensor, Tensor]] | None] = [None] * batch
    if cache is not None and compat.prefix_supported(cache):
        kept = compat.cache_prefixes(cache, starts, pads)
        compat.reset_cache(cache, kept[0], [1] * n)
        prefixes = list(kept)
    else:  # no cache to start from: patched runs recompute every position, without one
        cache, starts = None, [0] * batch
    runs = []
    for r in range(batch):
        labels = dict(row_labels[r])
        labels.setdefault("last", lengths[r] - 1)
        skip = pads[r] + starts[r]  # where the row's run starts, in the padded pass
        runs.append(
            CleanRun(
                tokens=rows[r],
                start=starts[r],
                labels=labels,
                readout=reads[r],
                logits=logits[r].detach(),  # readout_hooks: the read-out positions only
                z=[z[r, skip:] for z in zs],
                block_inputs=[x[r : r + 1, skip:] for x in inputs],
                block_calls=[
                    _query_slice(_row_slice(call, r, batch), skip, pads[r], n_pos) for call in calls
                ],
                prefix=prefixes[r],
                cache=cache,
            )
        )
    return runs, logits
