"""The executor: every intervened run over many prompts goes through here.

The engine (:mod:`patching.rows`) runs *many variants of one prompt* from a
cached clean run. Most other work is the opposite shape: *one set of
interventions on many prompts* (knock a gate out on every harmful prompt, scale
it by alpha, add a steering vector, decode under it). This module runs that:

- :func:`run`: the logits at the read-out positions of every prompt, each under
  its own list of :mod:`patching.interventions` objects (``rows[i]`` for
  prompt i; ``None`` for clean runs).
- :func:`run_and_cache`: the same run, also returning activations captured at
  named hooks *after* the interventions acted (a knocked-out run's ``hook_z``,
  residual streams...), at every position or at chosen ones.
- :func:`forward_batch`: one batched pass of the above (what
  :func:`patching.components.decompose_residual` and
  :func:`patching.decoding.greedy_decode` build on). With ``keep_blocks`` it
  also returns the pass's :class:`BlockInputs` (every block's input and call
  arguments, and what it captured); given back as ``resume`` to a later pass of
  the same prompts whose interventions all sit in layer ``L`` or later, that
  pass starts at block ``L`` from the clean input instead of recomputing layers
  below it (the layers a knockout of a mid-depth head cannot change), and takes
  the captures of those layers from the clean pass. When every row carries the same
  position-independent interventions (a zero or ``[d_head]`` mean ablation, a
  scaling, at every position), the prompts' common token prefix runs once into a
  key/value cache and the rows compute only their later positions
  (``docs/science.md#knockout-cascade``).

Prompts are :class:`~patching.chat.ChatPrompt` objects (their ``t_inst`` and
``t_post_inst`` labels then resolve) or 1-D token tensors. They are batched by
the one batching policy (:mod:`patching.batching`): sorted by length, left-padded
and masked, each row with its own position ids, so every prompt computes what it
computes alone (to float rounding, tested at 1e-5). Positions of an intervention
count within the prompt's own tokens (``-1`` is its last token whatever the
padding). Runs are under ``torch.no_grad()``.

Explained in ``docs/design.md#two-shapes-of-intervened-run``.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import torch
from jaxtyping import Float
from torch import Tensor

from patching import compat
from patching.batching import left_padded, length_batches
from patching.chat import ChatPrompt
from patching.hooks import (
    Hook,
    Rows,
    capture_hooks,
    intervention_hooks,
    padding_hooks,
    readout_hooks,
)
from patching.interventions import (
    AddVector,
    Intervention,
    Positions,
    acts_alike_everywhere,
    first_layer,
    resolve_positions,
    same_interventions,
)
from patching.model import HookedModel
from patching.rows import check_rows, fast_paths, final_logits

Prompt = ChatPrompt | Tensor
DEFAULT_BATCH_SIZE = 16

__all__ = [
    "DEFAULT_BATCH_SIZE",
    "BatchOutput",
    "BlockInputs",
    "Prompt",
    "forward_batch",
    "prompt_labels",
    "run",
    "run_and_cache",
]


def prompt_labels(prompt: Prompt) -> tuple[Tensor, dict[str, int]]:
    """A prompt's tokens and named positions (``last``; a chat prompt's two labels too)."""
    if isinstance(prompt, ChatPrompt):
        n = len(prompt)
        labels = {"t_inst": prompt.t_inst, "t_post_inst": prompt.t_post_inst, "last": n - 1}
        return prompt.tokens, labels
    return prompt, {"last": int(prompt.shape[0]) - 1}


@dataclass
class BlockInputs:
    """A clean batched pass kept for passes that start late (see the module docstring).

    ``inputs[l]`` and ``calls[l]`` are block ``l``'s padded input and call arguments;
    ``store`` what the pass captured (before splitting per row); ``tokens`` identify
    the prompts, which a resumed pass must share.
    """

    tokens: list[Tensor]
    inputs: list[Tensor]
    calls: list[tuple[tuple[Any, ...], dict[str, Any]]]
    store: dict[str, Tensor]

    def matches(self, tokens: Sequence[Tensor]) -> bool:
        return len(tokens) == len(self.tokens) and all(
            torch.equal(a.cpu(), b.cpu()) for a, b in zip(tokens, self.tokens, strict=True)
        )


@dataclass
class BatchOutput:
    """What one batched pass returns, row by row in the order given.

    Attributes:
        logits: the logits at each row's read-out positions ``[batch, readout, d_vocab]``.
        cache: per row, each captured key's activation at that row's capture positions
            (``[positions, ...]``), or ``None`` when nothing was captured.
    """

    logits: Float[Tensor, "batch readout d_vocab"]
    cache: list[dict[str, Tensor]] | None
    blocks: BlockInputs | None = None


def forward_batch(
    model: HookedModel,
    tokens: Sequence[Tensor],
    rows: Rows | None = None,
    labels: Sequence[Mapping[str, int]] | None = None,
    *,
    readout: Sequence[Sequence[int]] | None = None,
    capture: Mapping[str, str] | None = None,
    at: Sequence[Sequence[int]] | None = None,
    intervene_lengths: Sequence[int] | None = None,
    extra_hooks: Sequence[Hook] = (),
    keep_blocks: bool = False,
    resume: BlockInputs | None = None,
    logit_columns: Sequence[int] | None = None,
    until: int | None = None,
) -> BatchOutput:
    """One left-padded forward pass of ``tokens`` with ``rows[r]`` applied to row ``r``.

    Args:
        readout: each row's absolute read-out positions (the same count per row);
            its last position by default.
        capture: ``{key: hook_name}`` activations to keep, after the interventions.
        at: each row's absolute capture positions; every position when omitted.
        intervene_lengths: the length each row's intervention positions resolve
            against (``"all"``, negative indices): the row's own length by default; a
            shorter one confines them to a prefix (a prompt, during decoding).
        extra_hooks: hooks run after the interventions and before the captures.
        keep_blocks: return the pass's :class:`BlockInputs` in ``.blocks``.
        resume: the ``keep_blocks`` output of a clean pass of the same tokens with the
            same ``capture`` and ``at``: this pass starts at its rows' first intervened
            layer (same numbers; a full pass when the fast paths are off).
        logit_columns: compute these tokens' logits only; the others are NaN
            (:func:`patching.rows.final_logits`).
        until: stop at block ``until``'s input (``blocks.{until}.hook_resid_pre``): the
            captures there and before it are made, no later block runs nor the
            unembedding, and ``.logits`` is empty (``[batch, 0, d_vocab]``). A probe read
            at layer ``until`` needs nothing more. Not with ``keep_blocks``.
    """
    rows = rows if rows is not None else [[] for _ in tokens]
    check_rows(model, rows)
    if until is not None and not 0 <= until < model.n_layers:
        raise ValueError(f"until={until}: pass a block in 0..{model.n_layers - 1}")
    if until is not None and keep_blocks:
        raise ValueError(
            "keep_blocks with until: a resumed pass needs every block's call; keep a whole pass"
        )
    lengths = [len(t) for t in tokens]
    row_labels = list(labels) if labels is not None else [{"last": n - 1} for n in lengths]
    reads = list(readout) if readout is not None else [[n - 1] for n in lengths]
    padded, pads, extra = left_padded([t.to(model.device) for t in tokens])
    model.check_tokens(padded)
    n_pos, batch = int(padded.shape[1]), len(tokens)
    start = _resume_layer(model, rows, tokens, resume)
    shared_prefix = None
    if resume is not None and start > 0 and not extra_hooks and intervene_lengths is None:
        captured = at if capture else []  # nothing captured: only the read-outs bound the cut
        shared_prefix = _shared_prefix(model, tokens, rows, reads, captured, pads, resume, start)
    # With a shared prefix the pass computes columns ``cut..n_pos`` of the padded batch only.
    cut = shared_prefix[0] if shared_prefix is not None else 0
    columns = [[pad + p - cut for p in read] for pad, read in zip(pads, reads, strict=True)]
    hooks: list[Hook] = padding_hooks(model.n_layers) if any(pads) else []
    hooks += intervention_hooks(
        rows, intervene_lengths or [n - cut for n in lengths], row_labels, pads=pads
    )
    hooks += extra_hooks
    shared = all(c == columns[0] for c in columns)
    store: dict[str, Tensor] = {}
    where = (
        [list(range(pad, n_pos - cut)) for pad in pads]
        if at is None
        else [[pad + p - cut for p in pos] for pad, pos in zip(pads, at, strict=True)]
    )
    read: list[Hook] = []
    if shared:  # one set of columns: the unembedding (and maybe the last MLP) at those only
        mlp = _last_mlp_at_readout(model, rows, capture, where, columns[0], extra_hooks)
        read = readout_hooks(model.n_layers, columns[0], mlp=mlp)
    # The MLP output is scattered back to every position before a capture reads it; the
    # MLP input is cut to the read-out positions after a capture there has read it.
    scatter = f"blocks.{model.n_layers - 1}.mlp.hook_out"
    hooks += [h for h in read if h[0] == scatter]
    if capture:
        select = None
        if at is not None:  # keep the chosen positions only: memory does not grow with length
            row_index = torch.tensor([r for r in range(batch) for _ in where[r]])
            col_index = torch.tensor([c for cols in where for c in cols])

            def select(x: Tensor) -> Tensor:
                return x[row_index.to(x.device), col_index.to(x.device)]

        hooks += capture_hooks(capture, store, select)
    if until is not None:  # after the captures: they run first on the same hook
        hooks.append((f"blocks.{until}.hook_resid_pre", _stop))
    hooks += [h for h in read if h[0] != scatter]
    with torch.no_grad():
        if resume is not None and start > 0:
            store.update(resume.store)  # layers below ``start``: the clean pass's captures
            if shared_prefix is not None:
                logits = _suffix_from(model, resume, start, shared_prefix, hooks, logit_columns)
            else:
                logits = _blocks_from(model, resume, start, hooks, logit_columns)
        else:
            logits, blocks = _full_pass(model, padded, hooks, extra, keep_blocks)
            if logit_columns is not None and logits is not None:  # the same NaNs whichever path ran
                keep = torch.zeros(logits.shape[-1], dtype=torch.bool, device=logits.device)
                keep[list(logit_columns)] = True
                logits = logits.masked_fill(~keep, float("nan"))
    if logits is None:
        logits = torch.empty(batch, 0, model.d_vocab, device=model.device)
    elif not shared:
        index = torch.tensor(columns, device=logits.device)
        logits = logits.gather(1, index[..., None].expand(-1, -1, logits.shape[-1]))
    cache: list[dict[str, Tensor]] | None = None
    if capture and at is None:
        cache = [{key: value[r, where[r]] for key, value in store.items()} for r in range(batch)]
    elif capture:
        sizes = [len(cols) for cols in where]
        split = {key: value.split(sizes) for key, value in store.items()}
        cache = [{key: parts[r] for key, parts in split.items()} for r in range(batch)]
    kept = None
    if keep_blocks and blocks is not None:
        kept = BlockInputs([t.cpu() for t in tokens], blocks[0], blocks[1], dict(store))
    return BatchOutput(logits=logits, cache=cache, blocks=kept)


def _last_mlp_at_readout(
    model: HookedModel,
    rows: Rows,
    capture: Mapping[str, str] | None,
    where: Sequence[Sequence[int]],
    readout: Sequence[int],
    extra_hooks: Sequence[Hook],
) -> bool:
    """Whether the last block's MLP can run at the read-out positions only.

    Nothing after the last block reads its other positions unless a capture does (at
    a position that is not read out, or inside that MLP, which then sees fewer
    positions), a raw hook might, or a steering vector acts in that block. A knockout's
    DLA captures at its read-out position alone: its last MLP is then 1/14 of the pass.
    """
    last = model.n_layers - 1
    if extra_hooks or any(
        isinstance(iv, AddVector) and iv.layer == last for row in rows for iv in row
    ):
        return False
    if not capture:
        return True
    keep = set(readout)
    if any(not keep.issuperset(cols) for cols in where):
        return False
    inside = (f"blocks.{last}.ln2.", f"blocks.{last}.mlp.", f"blocks.{last}.hook_mlp_in")
    allowed = (f"blocks.{last}.ln2.hook_in", f"blocks.{last}.mlp.hook_out")
    return not any(n.startswith(inside) and n not in allowed for n in capture.values())


class _Stopped(Exception):
    """Raised by the hook that ends a pass at ``until`` (caught by :func:`_stopping`)."""


def _stop(x: Tensor, hook: Any) -> Tensor:
    raise _Stopped


def _stopping(compute: Callable[[], Tensor]) -> Tensor | None:
    """``compute()``, or ``None`` when a pass's ``until`` hook ended it."""
    try:
        return compute()
    except _Stopped:
        return None


def _resume_layer(
    model: HookedModel, rows: Rows, tokens: Sequence[Tensor], resume: BlockInputs | None
) -> int:
    """The block a pass can start at from ``resume`` (0: from the embeddings)."""
    if resume is None or not fast_paths(model) or not any(rows):
        return 0
    if not resume.matches(tokens):
        raise ValueError("resume holds a clean pass of other prompts")
    return first_layer(rows)


def _full_pass(
    model: HookedModel, padded: Tensor, hooks: list[Hook], extra: dict[str, Any], keep: bool
) -> tuple[Tensor | None, tuple[list[Tensor], list[tuple[tuple[Any, ...], dict[str, Any]]]] | None]:
    """One pass of the whole model (``None``: stopped early); with ``keep``, every block's
    input and call arguments (those it reached)."""
    bridge, n = model.bridge, model.n_layers
    if not keep:
        return _stopping(lambda: bridge.run_with_hooks(padded, fwd_hooks=hooks, **extra)), None
    inputs: list[Tensor] = [torch.empty(0)] * n
    calls: list[tuple[tuple[Any, ...], dict[str, Any]]] = [((), {})] * n

    def pre_hook(layer: int) -> Any:
        def hook(module: Any, args: tuple[Any, ...], kwargs: dict[str, Any]) -> None:
            inputs[layer] = args[0].detach()
            calls[layer] = (
                compat.substitute_cache(tuple(args[1:]), None),
                compat.substitute_cache(dict(kwargs), None),
            )

        return hook

    handles = [
        bridge.blocks[layer].register_forward_pre_hook(pre_hook(layer), with_kwargs=True)
        for layer in range(n)
    ]
    try:
        logits = _stopping(lambda: bridge.run_with_hooks(padded, fwd_hooks=hooks, **extra))
    finally:
        for handle in handles:
            handle.remove()
    return logits, (inputs, calls)


def _blocks_from(
    model: HookedModel,
    resume: BlockInputs,
    start: int,
    hooks: list[Hook],
    columns: Sequence[int] | None = None,
) -> Tensor | None:
    """Blocks ``start..n-1`` on the clean input of block ``start``, then the unembedding
    (``None``: stopped early)."""
    bridge = model.bridge

    def blocks() -> Tensor:
        hidden = resume.inputs[start]
        for layer in range(start, model.n_layers):
            args, kwargs = resume.calls[layer]
            out = bridge.blocks[layer](hidden, *args, **kwargs)
            hidden = out[0] if isinstance(out, tuple) else out
        return final_logits(model, hidden, columns)

    with bridge.hooks(fwd_hooks=hooks):
        return _stopping(blocks)


SharedPrefix = tuple[int, list[tuple[tuple[Any, ...], dict[str, Any]]]]


def _shared_prefix(
    model: HookedModel,
    tokens: Sequence[Tensor],
    rows: Rows,
    reads: Sequence[Sequence[int]],
    at: Sequence[Sequence[int]] | None,
    pads: Sequence[int],
    resume: BlockInputs,
    start: int,
) -> SharedPrefix | None:
    """The rows' common token prefix run once under their interventions, for a suffix pass.

    When every row carries the same interventions and none depends on the position
    or the prompt (a zero, a ``[d_head]`` mean or a scaling at every position), the
    first ``cut`` tokens the prompts share compute the same activations in every
    row: one pass of that prefix fills a key/value cache, and the batch then runs
    only its later positions against it (``docs/science.md#knockout-cascade``).
    ``cut`` stops before the first read-out or captured position (``at``: the captured
    positions; ``None`` when every position is captured, which leaves no prefix). Returns ``cut``
    and the suffix pass's block calls from ``start`` on, or ``None`` when the
    interventions, positions or the model's block calls do not allow it.
    """
    if at is None or not _same_everywhere(rows):
        return None
    first = tokens[0]
    cut = min([len(t) for t in tokens] + [min(p) for p in (*reads, *at) if p])
    for t in tokens[1:]:
        differ = (t[:cut] != first[:cut]).nonzero()
        cut = int(differ[0, 0]) if len(differ) else cut
    if cut < 1:
        return None
    kept = _kept_prefix(model, first[:cut], rows[0], start)
    cache = kept[0] if kept is not None else compat.new_cache()
    calls = [
        compat.suffix_call(resume.calls[layer], cut, pads, cache)
        for layer in range(start, model.n_layers)
    ]
    if any(call is None for call in calls):
        return None
    if kept is None:
        kept = _knocked_prefix(model, resume, rows[0], cut, pads.index(0), start, cache)
        if kept is None:
            return None
        model.knocked_prefix = (first[:cut].cpu(), list(rows[0]), *kept)
    cache, keys = kept[0], kept[1][start - kept[2] :]
    keys = [(k[:, :, :cut], v[:, :, :cut]) for k, v in keys]
    compat.reset_cache(cache, keys, [len(tokens)] * len(keys), first_layer=start)
    return cut, [call for call in calls if call is not None]


def _knocked_prefix(
    model: HookedModel,
    resume: BlockInputs,
    row: Sequence[Intervention],
    cut: int,
    longest: int,
    start: int,
    cache: Any,
) -> tuple[Any, list[tuple[Tensor, Tensor]], int] | None:
    """The prefix's keys and values in blocks ``start..n-1`` under ``row``, filled into ``cache``.

    Below ``start`` the intervened run is the clean one, so the prefix's input to
    block ``start`` is the clean pass's: read from its ``longest`` (unpadded) row,
    whose first ``cut`` columns are the prefix. Only the blocks from ``start`` on run,
    and nothing is unembedded (the suffix pass needs the keys and values alone).
    """
    bridge, n = model.bridge, model.n_layers
    calls = [
        compat.prefix_call(resume.calls[layer], longest, cut, cache) for layer in range(start, n)
    ]
    if any(call is None for call in calls):
        return None
    hidden = resume.inputs[start][longest : longest + 1, :cut]
    with bridge.hooks(fwd_hooks=intervention_hooks([row], cut, {"last": cut - 1})):
        for layer, call in zip(range(start, n), calls, strict=True):
            assert call is not None
            out = bridge.blocks[layer](hidden, *call[0], **call[1])
            hidden = out[0] if isinstance(out, tuple) else out
    if not compat.prefix_supported(cache, start):
        return None
    return cache, compat.cache_prefixes(cache, [cut], [0], start)[0], start


def _kept_prefix(
    model: HookedModel, prefix: Tensor, row: Sequence[Intervention], start: int
) -> tuple[Any, list[tuple[Tensor, Tensor]], int] | None:
    """The cache, keys/values (from its first layer) and first layer of a kept prefix
    run under ``row`` that starts with ``prefix``.

    The harmful and the control prompts of a set, and every batch of them, share the
    chat template: the knockout's prefix is run once for all of them. A causal
    model's keys and values of a prefix's first ``k`` tokens are those of the
    ``k``-token prefix, so a longer kept prefix serves a shorter one.
    """
    if model.knocked_prefix is None:
        return None
    tokens, kept_row, cache, keys, first_layer = model.knocked_prefix
    n = len(prefix)
    same_row = same_interventions(kept_row, row)
    if not same_row or first_layer > start or len(tokens) < n:
        return None
    if not torch.equal(tokens[:n], prefix.cpu()):
        return None
    return cache, keys, first_layer


def _same_everywhere(rows: Rows) -> bool:
    """Whether every row holds the same interventions, each acting alike at every position."""
    first = rows[0]
    if not first:
        return False
    if not all(acts_alike_everywhere(iv) for iv in first):
        return False
    return all(same_interventions(row, first) for row in rows)


def _suffix_from(
    model: HookedModel,
    resume: BlockInputs,
    start: int,
    prefix: SharedPrefix,
    hooks: list[Hook],
    columns: Sequence[int] | None = None,
) -> Tensor | None:
    """Blocks ``start..n-1`` on the clean input of block ``start`` after the shared prefix
    (``None``: stopped early)."""
    cut, calls = prefix
    bridge = model.bridge

    def blocks() -> Tensor:
        hidden = resume.inputs[start][:, cut:]
        for layer, (args, kwargs) in zip(range(start, model.n_layers), calls, strict=True):
            out = bridge.blocks[layer](hidden, *args, **kwargs)
            hidden = out[0] if isinstance(out, tuple) else out
        return final_logits(model, hidden, columns)

    with bridge.hooks(fwd_hooks=hooks):
        return _stopping(blocks)


def _positions(positions: Positions | Sequence[int]) -> Positions:
    return positions if isinstance(positions, str) else [int(p) for p in positions]


def _prepare(
    prompts: Sequence[Prompt], readout: Positions | Sequence[int]
) -> tuple[list[Tensor], list[dict[str, int]], list[list[int]]]:
    pairs = [prompt_labels(p) for p in prompts]
    tokens, labels = [t for t, _ in pairs], [lab for _, lab in pairs]
    reads = [
        resolve_positions(_positions(readout), len(t), lab)
        for t, lab in zip(tokens, labels, strict=True)
    ]
    if len({len(r) for r in reads}) > 1:
        raise ValueError(f"read-out {readout!r} gives different numbers of positions per prompt")
    return tokens, labels, reads


def run(
    model: HookedModel,
    prompts: Sequence[Prompt],
    rows: Rows | None = None,
    *,
    readout: Positions | Sequence[int] = (-1,),
    batch_size: int = DEFAULT_BATCH_SIZE,
) -> Float[Tensor, "prompt readout d_vocab"]:
    """Logits at ``readout`` of every prompt, prompt ``i`` under ``rows[i]``.

    ``readout`` is resolved per prompt (``[-1]``: its last token; a label; ``"all"``
    only when every prompt has the same length).
    """
    logits, _ = run_and_cache(model, prompts, rows, readout=readout, batch_size=batch_size)
    return logits


def run_and_cache(
    model: HookedModel,
    prompts: Sequence[Prompt],
    rows: Rows | None = None,
    *,
    names: Mapping[str, str] | Sequence[str] = (),
    at: Positions | Sequence[int] = "all",
    readout: Positions | Sequence[int] = (-1,),
    batch_size: int = DEFAULT_BATCH_SIZE,
    to_cpu: bool = False,
) -> tuple[Float[Tensor, "prompt readout d_vocab"], list[dict[str, Tensor]]]:
    """:func:`run`, plus every prompt's activations at ``names`` under its interventions.

    Args:
        names: hook names to capture (or ``{key: hook_name}``); each prompt's cache maps
            the key to the activation at positions ``at`` of that prompt, ``[pos, ...]``.
        at: ``"all"`` of the prompt's own positions, a label or indices (resolved per prompt).
        to_cpu: move captured activations to the CPU as each batch finishes.
    """
    if rows is not None and len(rows) != len(prompts):
        raise ValueError(f"{len(rows)} rows of interventions for {len(prompts)} prompts")
    tokens, labels, reads = _prepare(prompts, readout)
    capture = dict(names) if isinstance(names, Mapping) else {n: n for n in names}
    logits: list[Tensor] = [torch.empty(0)] * len(prompts)
    caches: list[dict[str, Tensor]] = [{} for _ in prompts]
    for idx in length_batches([len(t) for t in tokens], batch_size):
        out = forward_batch(
            model,
            [tokens[i] for i in idx],
            [rows[i] for i in idx] if rows is not None else None,
            [labels[i] for i in idx],
            readout=[reads[i] for i in idx],
            capture=capture,
            at=None
            if at == "all"
            else [resolve_positions(_positions(at), len(tokens[i]), labels[i]) for i in idx],
        )
        for j, i in enumerate(idx):
            logits[i] = out.logits[j]
            if out.cache is not None:
                caches[i] = {k: v.cpu() if to_cpu else v for k, v in out.cache[j].items()}
    if not prompts:
        return torch.empty(0, len(reads), model.d_vocab), caches
    return torch.stack(logits), caches
