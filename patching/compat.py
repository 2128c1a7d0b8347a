"""Everything the engine relies on inside ``transformers`` and TransformerLens, in one place.

The engine's fast paths (:mod:`patching.engine`) replay the blocks of a model
themselves and reset its key/value cache to a prompt's prefix. That touches
internals no public API promises: the keyword under which a decoder layer
passes its cache, the cache classes and their ``keys``/``values`` tensors, and
how TransformerLens's attention bridge finds the cache. A release that changes
any of them can make patched logits wrong *without an error* (transformers 5.24
renamed the cache keyword from ``past_key_values`` to ``cache``; TransformerLens
4.3's attention bridge reads only the old name, so the cache stayed empty and
patched runs attended to their own positions alone). So every such access is
here, and this module says which versions it was verified on.

Three defences, from cheapest to strongest:

1. :func:`unverified_versions` names installed versions outside :data:`VERIFIED`
   (the package metadata caps users at the same range); loading such a model
   warns.
2. :func:`missing_internals` checks that the internals exist in the expected
   shape; if not, the fast paths are off for the process (plain forward passes
   give the same numbers, slower).
3. :mod:`patching.self_check` runs the fast path once per model against a plain
   forward on the user's own prompt and falls back on any mismatch.

Verified on: transformers 5.9.0 and 5.24.0 (the range leg of CI runs the engine
tests at both ends), transformer-lens 4.3.0, torch 2.13.0.
``docs/dependencies.md`` says how to raise the range.
"""

from __future__ import annotations

import inspect
import platform
from collections.abc import Callable, Sequence
from importlib import metadata
from typing import Any

import torch
from torch import Tensor

# (lowest verified, first unverified) release of each package the fast paths depend on.
# Keep equal to the caps in pyproject.toml; raise both only after CI's range leg passes.
VERIFIED: dict[str, tuple[str, str]] = {
    "transformers": ("5.9.0", "5.25"),
    "transformer-lens": ("4.3.0", "4.4"),
}

# transformers renamed the decoder layers' cache keyword in 5.24; a shim maps the old name
# on the model's forward (until 5.40) but layers pass the new one to attention.
CACHE_KEYWORDS = ("cache", "past_key_values")


def versions() -> dict[str, str]:
    """Versions of Python and of every package the toolkit's numbers depend on."""
    out = {"python": platform.python_version()}
    for package in ("torch", "transformers", "transformer-lens", "refusal-circuits"):
        try:
            out[package] = metadata.version(package)
        except metadata.PackageNotFoundError:
            out[package] = "not installed"
    return out


def _release(version: str) -> tuple[int, ...]:
    parts = []
    for piece in version.split("+")[0].split("."):
        digits = "".join(ch for ch in piece if ch.isdigit())
        if not digits:
            break
        parts.append(int(digits))
    return tuple(parts)


def unverified_versions(installed: dict[str, str] | None = None) -> list[str]:
    """``"package X (verified A to <B)"`` for each installed version outside :data:`VERIFIED`."""
    installed = installed or versions()
    out = []
    for package, (low, high) in VERIFIED.items():
        have = installed.get(package, "not installed")
        release = _release(have)
        if not release or not _release(low) <= release < _release(high):
            out.append(f"{package} {have} (verified {low} to <{high})")
    return out


def _hf_model(bridge: Any) -> Any:
    return getattr(bridge, "original_model", None)


def cache_keyword(bridge: Any) -> str | None:
    """The keyword the model's forward takes its key/value cache under (``None``: unknown)."""
    hf = _hf_model(bridge)
    if hf is None:
        return None
    params = inspect.signature(hf.forward).parameters
    return next((k for k in CACHE_KEYWORDS if k in params), None)


def missing_internals(bridge: Any) -> list[str]:
    """The internals the fast paths need that this install lacks (empty: all present)."""
    missing = []
    try:
        from transformers.cache_utils import Cache, DynamicCache, DynamicLayer
    except ImportError:
        return ["transformers.cache_utils.Cache/DynamicCache/DynamicLayer"]
    if not all(hasattr(cls, "update") for cls in (Cache, DynamicCache, DynamicLayer)):
        missing.append("Cache.update")
    if cache_keyword(bridge) is None:
        missing.append(f"a cache keyword ({' or '.join(CACHE_KEYWORDS)}) on the model's forward")
    blocks = getattr(bridge, "blocks", None)
    if not blocks or not hasattr(blocks[0], "attn"):
        missing.append("TransformerLens blocks[i].attn")
    return missing


def route_cache_to_attention(bridge: Any) -> None:
    """Hand the decoder layer's ``cache`` to TransformerLens's attention as ``past_key_values``.

    From transformers 5.24 a decoder layer calls its attention with ``cache=``;
    TransformerLens 4.3's attention bridge looks only for ``past_key_values`` (or
    ``layer_past``) and otherwise skips the cache update, so a cached run would
    silently attend to its new positions only. Idempotent; a no-op on models whose
    forward still takes ``past_key_values``.
    """
    if cache_keyword(bridge) != "cache" or getattr(bridge, "_rc_cache_routed", False):
        return

    def pre_hook(module: Any, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
        if kwargs.get("cache") is not None and kwargs.get("past_key_values") is None:
            return args, {**kwargs, "past_key_values": kwargs["cache"]}
        return None

    for block in bridge.blocks:
        block.attn.register_forward_pre_hook(pre_hook, with_kwargs=True)
    bridge._rc_cache_routed = True


def new_cache() -> Any:
    """An empty dynamic key/value cache."""
    from transformers import DynamicCache

    return DynamicCache()


def cache_kwargs(bridge: Any, cache: Any) -> dict[str, Any]:
    """The forward keywords that make a run fill ``cache`` (under this version's name)."""
    keyword = cache_keyword(bridge)
    if keyword is None:
        raise RuntimeError("the model's forward takes no key/value cache (missing_internals)")
    return {keyword: cache, "use_cache": True}


def is_cache(value: Any) -> bool:
    from transformers.cache_utils import Cache

    return isinstance(value, Cache)


def substitute_cache(values: Any, cache: Any) -> Any:
    """A captured block call's arguments with any cache object replaced by ``cache``."""
    if isinstance(values, dict):
        return {k: (cache if is_cache(v) else v) for k, v in values.items()}
    return tuple(cache if is_cache(v) else v for v in values)


def prefix_supported(cache: Any, first_layer: int = 0) -> bool:
    """Whether every layer of ``cache`` from ``first_layer`` on can be reset to a prefix.

    Resetting assigns the layers' key and value tensors: sliding-window and
    quantised layers keep state beyond them; only plain dynamic layers that the run
    filled qualify. A run that starts at block ``first_layer`` fills no layer below it.
    """
    from transformers.cache_utils import DynamicLayer

    layers = list(getattr(cache, "layers", None) or [])[first_layer:]
    return bool(layers) and all(
        type(layer) is DynamicLayer and getattr(layer, "is_initialized", False) for layer in layers
    )


def cache_prefixes(
    cache: Any, starts: Sequence[int], pads: Sequence[int], first_layer: int = 0
) -> list[list[tuple[Tensor, Tensor]]]:
    """Each row's keys and values of positions ``pad .. pad + start`` in every layer from
    ``first_layer`` on (copies)."""
    return [
        [
            (
                layer.keys[r : r + 1, :, pad : pad + s].clone(),
                layer.values[r : r + 1, :, pad : pad + s].clone(),
            )
            for layer in cache.layers[first_layer:]
        ]
        for r, (s, pad) in enumerate(zip(starts, pads, strict=True))
    ]


def reset_cache(
    cache: Any, prefix: Sequence[tuple[Tensor, Tensor]], rows: Sequence[int], first_layer: int = 0
) -> None:
    """Set layer ``first_layer + l`` of ``cache`` to ``prefix[l]``, repeated ``rows[l]`` times."""
    for layer, (keys, values), n in zip(cache.layers[first_layer:], prefix, rows, strict=True):
        layer.keys = keys.expand(n, -1, -1, -1)
        layer.values = values.expand(n, -1, -1, -1)


def select_cache_rows(cache: Any, index: Tensor) -> None:
    """Make row ``i`` of every layer of ``cache`` its row ``index[i]`` (a prefix run once per
    distinct row of interventions, handed to every prompt that carries that row)."""
    for layer in cache.layers:
        layer.keys = layer.keys.index_select(0, index)
        layer.values = layer.values.index_select(0, index)


def suffix_call(
    call: tuple[tuple[Any, ...], dict[str, Any]], prefix: int, pads: Sequence[int], cache: Any
) -> tuple[tuple[Any, ...], dict[str, Any]] | None:
    """A padded pass's block call for its rows' positions from ``prefix`` on, after a shared prefix.

    The rows of a left-padded pass (row ``r`` at columns ``pads[r]..n``) share their
    first ``prefix`` tokens, whose keys and values ``cache`` holds once (unpadded).
    The suffix pass keeps the padded columns ``prefix..n``: row ``r``'s suffix then
    starts at column ``pads[r]`` again. Position ids and rotary tables lose their
    first ``prefix`` columns; the attention mask ``[batch, 1, query, key]`` keeps
    those queries, and its keys become the row's prefix (columns ``pad..pad+prefix``)
    followed by the suffix columns, where those before ``pad`` (the row's own prefix
    or padding in the full pass) take the value of its column 0, a padding column
    (masked for every real query).
    ``None`` when the call has no such mask or cache keyword, or a tensor of unknown
    layout (the caller then runs the full pass).
    """

    def mask_suffix(mask: Tensor) -> Tensor:
        rows = []
        for r, pad in enumerate(pads):
            m = mask[r : r + 1, :, prefix:]
            after = m[..., prefix:].clone()
            after[..., :pad] = m[..., :1]
            rows.append(torch.cat([m[..., pad : pad + prefix], after], dim=-1))
        return torch.cat(rows)

    return _cut_call(call, len(pads), cache, mask_suffix, lambda value, batch: value[:, prefix:])


def prefix_call(
    call: tuple[tuple[Any, ...], dict[str, Any]], row: int, prefix: int, cache: Any
) -> tuple[tuple[Any, ...], dict[str, Any]] | None:
    """A padded pass's block call for row ``row``'s first ``prefix`` positions alone.

    ``row`` must be unpadded (the batch's longest prompt): its first ``prefix``
    columns are then the prefix at positions ``0..prefix``, and a block run with this
    call fills ``cache`` with the prefix's keys and values in that block's layer.
    ``None`` in the same cases as :func:`suffix_call`.
    """

    def rows_of(value: Tensor, batch: int) -> Tensor:
        # Rotary tables may be shared by the batch (first dimension 1).
        return (value[row : row + 1] if value.shape[0] == batch else value)[:, :prefix]

    def mask_prefix(mask: Tensor) -> Tensor:
        return mask[row : row + 1, :, :prefix, :prefix]

    return _cut_call(call, None, cache, mask_prefix, rows_of)


def _cut_call(
    call: tuple[tuple[Any, ...], dict[str, Any]],
    batch: int | None,
    cache: Any,
    cut_mask: Callable[[Tensor], Tensor],
    cut_rows: Callable[[Tensor, int], Tensor],
) -> tuple[tuple[Any, ...], dict[str, Any]] | None:
    """``call`` with its mask cut by ``cut_mask``, its per-position tensors by ``cut_rows``
    and its cache replaced by ``cache``; ``None`` on a layout this does not know."""
    args, kwargs = call
    masks = [v for v in (*args, *kwargs.values()) if isinstance(v, Tensor) and v.ndim == 4]
    if len(masks) != 1 or masks[0].shape[2] != masks[0].shape[3]:
        return None
    n_batch, n_pos = int(masks[0].shape[0]), int(masks[0].shape[2])
    if (batch is not None and n_batch != batch) or not any(k in kwargs for k in CACHE_KEYWORDS):
        return None

    def convert(value: Any) -> Any:
        if isinstance(value, Tensor):
            if value.ndim == 4:
                return cut_mask(value)
            if value.ndim in (2, 3) and value.shape[1] == n_pos:
                return cut_rows(value, n_batch)
            raise _UnknownLayout
        if isinstance(value, tuple | list):
            return type(value)(convert(v) for v in value)
        if isinstance(value, dict):
            return {k: convert(v) for k, v in value.items()}
        return value

    try:
        new_args = tuple(convert(a) for a in args)
        new_kwargs = {k: cache if k in CACHE_KEYWORDS else convert(v) for k, v in kwargs.items()}
    except _UnknownLayout:
        return None
    return new_args, new_kwargs


class _UnknownLayout(Exception):
    """A block call argument :func:`suffix_call` does not know how to cut."""
