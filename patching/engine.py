"""Running interventions fast and exactly: batched rows, skipped layers, cached prefixes.

A patched run differs from its clean run only *downstream* of the patch. This
engine recomputes nothing else:

1. **Skipped layers.** Layers before the first patched layer ``L`` see exactly
   the clean run's residual stream. :func:`clean_run` records the input of every
   block (and the arguments the model passed to it: rotary cos/sin, attention
   mask, position ids), and :func:`run_rows` calls the bridge's blocks ``L..n-1``
   itself on that cached input. TransformerLens's ``start_at_layer`` gives the
   same numbers but still runs every layer (DESIGN.md section 3), so the engine
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
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
from jaxtyping import Float, Int
from torch import Tensor

from patching import compat, self_check
from patching.interventions import (
    AddVector,
    HeadIntervention,
    Intervention,
    Scale,
    first_layer,
    resolve_positions,
    z_hook,
)
from patching.model import HookedModel

DEFAULT_BUDGET_MB = 512.0
# On CPU a batched run is fastest per row while its activations stay near the caches:
# past ~64 MB the elementwise ops (GELU's temporaries) go to main memory, and a full
# 144-row grid chunk of the benchmark model ran 25% slower than 20-row chunks
# (benchmarks/README.md). The user's budget still caps it from above.
CPU_CHUNK_MB = 64.0
Hook = tuple[str | Callable[..., Any], Callable[..., Any]]


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


def readout_hooks(
    model: HookedModel, readout: Sequence[int], *, unembed: bool = True
) -> list[Hook]:
    """Hooks that run the last block's MLP (and the unembedding) at ``readout`` only.

    Nothing after the last block reads its other positions, so their MLP output is
    never used: the MLP sees the read-out rows of its input and its output is
    scattered back into zeros (the residual addition needs the full shape). On the
    benchmark model this is 2/3 of the last block. ``readout`` indexes the positions
    the pass computes; with ``unembed`` the model's logits are those positions' only.
    """
    last, keep = model.n_layers - 1, list(readout)
    n_pos: list[int] = []

    def take(x: Tensor, hook: Any) -> Tensor:
        n_pos[:] = [x.shape[1]]
        return x[:, keep]

    def scatter(x: Tensor, hook: Any) -> Tensor:
        full = x.new_zeros(x.shape[0], n_pos[0], *x.shape[2:])
        full[:, keep] = x
        return full

    def take_read(x: Tensor, hook: Any) -> Tensor:
        return x[:, keep]

    hooks: list[Hook] = [
        (f"blocks.{last}.ln2.hook_in", take),
        (f"blocks.{last}.mlp.hook_out", scatter),
    ]
    return [*hooks, ("unembed.hook_in", take_read)] if unembed else hooks


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


def _left_padded(rows: Sequence[Tensor]) -> tuple[Tensor, list[int], dict[str, Any]]:
    """Rows of different lengths as one left-padded batch: tokens, pads, model arguments.

    Padding positions are masked out as keys and every row keeps its own position
    ids, so each row's real positions compute exactly what they compute alone.
    """
    n_pos = max(len(row) for row in rows)
    pads = [n_pos - len(row) for row in rows]
    tokens = torch.stack(
        [torch.cat([row[:1].expand(pad), row]) for row, pad in zip(rows, pads, strict=True)]
    )
    if not any(pads):
        return tokens, pads, {}
    mask = torch.ones_like(tokens)
    for r, pad in enumerate(pads):
        mask[r, :pad] = 0
    positions = (mask.cumsum(-1) - 1).clamp(min=0)
    return tokens, pads, {"attention_mask": mask, "position_ids": positions}


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
    (:mod:`patching.attribution_patching`).

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
        _install_check(model)
    if _fast(model):
        runs, logits = _clean_pass(model, rows, starts, reads, row_labels, fwd_hooks)
        if model.engine_check is None:
            model.engine_check = _self_check(model, runs)
        if _fast(model):
            return runs, logits
    if fwd_hooks:  # the hooks see one batched pass: keep it, without the cache
        return _clean_pass(model, rows, [0] * batch, reads, row_labels, fwd_hooks)
    alone = [
        _clean_pass(model, [row], [0], [read], [lab], ())
        for row, read, lab in zip(rows, reads, row_labels, strict=True)
    ]
    return [run for made, _ in alone for run in made], torch.cat([lg for _, lg in alone])


def _fast(model: HookedModel) -> bool:
    """Whether the fast paths are on for ``model`` (on until its self-check fails)."""
    return model.engine_check is None or model.engine_check.fast_paths


def _install_check(model: HookedModel) -> None:
    """Before the first run: turn the fast paths off if this install lacks their internals."""
    missing = compat.missing_internals(model.bridge)
    if missing:
        model.engine_check = self_check.disabled("missing " + ", ".join(missing))


def _self_check(model: HookedModel, runs: Sequence[CleanRun]) -> self_check.EngineCheck:
    """The fast paths against one plain forward pass, on the most sliced run of the batch.

    Compares the clean logits and three patched variants (a head zero-ablated in the
    first, a middle and the last layer at the last read-out position).
    """
    run = max(runs, key=lambda r: (r.start, -r.n_pos))
    last, heads = run.readout[-1], model.n_heads
    probe: list[list[Intervention]] = [
        [Scale(layer, head, [last], alpha=0.0)]
        for layer, head in (
            (0, 0),
            (model.n_layers // 2, heads // 2),
            (model.n_layers - 1, heads - 1),
        )
    ]
    where = f"on {model.name}, a {run.n_pos}-token prompt from position {run.start}"
    with torch.no_grad():
        plain = run_rows_full(model, run.tokens, [[], *probe], readout=run.readout)
        try:
            fast = torch.cat([run.logits[None], _run_rows_fast(model, run, probe)])
        except Exception as exc:  # internals changed shape: a crash is a failed check too
            return self_check.crashed(f"{type(exc).__name__}: {exc}", plain, n_tokens=run.n_pos)
    return self_check.compare(fast, plain, n_tokens=run.n_pos, where=where)


def _clean_pass(
    model: HookedModel,
    rows: Sequence[Tensor],
    starts: Sequence[int],
    reads: Sequence[list[int]],
    row_labels: Sequence[dict[str, int]],
    fwd_hooks: Sequence[Hook],
) -> tuple[list[CleanRun], Tensor]:
    """One batched clean pass (the body of :func:`clean_runs`, arguments checked)."""
    batch = len(rows)
    lengths = [len(row) for row in rows]
    padded, pads, extra = _left_padded(rows)
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
                *fwd_hooks,
                *((z_hook(layer), keep_z(layer)) for layer in range(n)),
                *readout_hooks(model, [n_pos - lengths[0] + p for p in reads[0]]),
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


def _hooks_for_rows(
    rows: Sequence[Sequence[Intervention]], n_pos: int, start: int, labels: Mapping[str, int]
) -> list[Hook]:
    """TransformerLens hooks that apply each row's interventions to that row only."""
    by_hook: dict[str, list[tuple[int, Intervention, list[int]]]] = {}
    for r, row in enumerate(rows):
        for iv in row:
            absolute = resolve_positions(iv.positions, n_pos, labels)
            if absolute and absolute[0] < start:
                raise ValueError(
                    f"an intervention patches position {absolute[0]}, before the cached prefix "
                    f"ends at {start}; run the clean run with start <= {absolute[0]}"
                )
            by_hook.setdefault(iv.hook, []).append((r, iv, absolute))

    def make(items: list[tuple[int, Intervention, list[int]]]) -> Callable[..., Tensor]:
        # Bound per hook name: inside a hook, hook.name is the canonical alias, not hook_z.
        def hook(x: Tensor, hook: Any) -> Tensor:
            x = x.clone()
            for r, iv, absolute in items:
                rel = [p - start for p in absolute]
                if isinstance(iv, HeadIntervention):
                    x[r, rel, iv.head] = iv.apply(x[r, rel, iv.head], absolute)
                else:
                    x[r, rel] = iv.apply(x[r, rel], absolute)
            return x

        return hook

    return [(name, make(items)) for name, items in by_hook.items()]


def _check_rows(model: HookedModel, rows: Sequence[Sequence[Intervention]]) -> None:
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


def _final_logits(model: HookedModel, resid: Tensor) -> Tensor:
    bridge = model.bridge
    logits = bridge.unembed(bridge.ln_final(resid))
    cap = model.logit_soft_cap
    if cap is not None:
        logits = cap * torch.tanh(logits / cap)
    return logits


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
    hooks = _hooks_for_rows(rows, clean.n_pos, clean.start, clean.labels)
    last = model.n_layers - 1
    if not any(isinstance(iv, AddVector) and iv.layer == last for row in rows for iv in row):
        hooks += readout_hooks(model, read, unembed=False)
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
    return _final_logits(model, hidden[:, read])


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
    _check_rows(model, rows)
    if _fast(model):
        return _run_rows_fast(model, clean, rows, budget_mb=budget_mb, stats=stats)
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


def _run_rows_fast(
    model: HookedModel,
    clean: CleanRun,
    rows: Sequence[Sequence[Intervention]],
    *,
    budget_mb: float = DEFAULT_BUDGET_MB,
    stats: RunStats | None = None,
) -> Tensor:
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
    _check_rows(model, rows)
    n_pos = int(tokens.shape[0])
    all_labels = dict(labels or {})
    all_labels.setdefault("last", n_pos - 1)
    hooks = _hooks_for_rows(rows, n_pos, 0, all_labels)
    batch = tokens[None].expand(len(rows), -1)
    logits = model.run_with_hooks(batch, hooks)
    return logits[:, resolve_positions(list(readout), n_pos, {})]
