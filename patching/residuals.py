"""The residual stream of many prompts at one labelled position, every layer at once.

Directions (:mod:`attribution.directions`) and the Latent Guard read the same thing:
each prompt's residual stream at ``t_inst`` (where harmfulness is read) or
``t_post_inst`` (where the refusal decision is written), at the input of every
block. :func:`residual_stream` captures it in one padded batched pass per batch
through the executor (:func:`patching.executor.forward_batch`), keeping only the
chosen position of each row, so memory does not grow with the prompts' length.

Entry ``l`` of the layer axis is block ``layers[l]``'s input
(``blocks.L.hook_resid_pre``); one extra last entry is the final residual (the last
block's ``hook_resid_post``, before the final norm). ``docs/science.md#directions-and-steering``.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Literal

import torch
from jaxtyping import Float
from torch import Tensor
from tqdm.auto import tqdm

from patching.batching import length_batches
from patching.chat import ChatPrompt
from patching.executor import DEFAULT_BATCH_SIZE, forward_batch, prompt_labels
from patching.interventions import resolve_positions
from patching.model import HookedModel

ResidualPosition = Literal["t_inst", "t_post_inst"] | int

__all__ = ["ResidualPosition", "residual_hooks", "residual_stream", "residual_streams"]


def residual_hooks(model: HookedModel, layers: Sequence[int] | None = None) -> list[str]:
    """The hooks :func:`residual_stream` reads, in its layer order (the final residual last).

    Raises:
        ValueError: a layer outside ``0..n_layers-1``, or none given.
    """
    n = model.n_layers
    chosen = list(range(n)) if layers is None else [int(layer) for layer in layers]
    bad = [layer for layer in chosen if not 0 <= layer < n]
    if bad:
        raise ValueError(f"layer(s) {bad} outside this model's 0..{n - 1}; pick layers in range")
    if layers is not None and not chosen:
        raise ValueError("no layers given; pass None for every layer")
    return [f"blocks.{layer}.hook_resid_pre" for layer in chosen] + [
        f"blocks.{n - 1}.hook_resid_post"
    ]


def residual_stream(
    model: HookedModel,
    prompts: Sequence[ChatPrompt],
    position: ResidualPosition,
    layers: Sequence[int] | None = None,
    batch_size: int = DEFAULT_BATCH_SIZE,
    progress: bool = False,
) -> Float[Tensor, "prompt layer d_model"]:
    """Each prompt's residual stream at ``position``: every chosen block's input, then the final.

    Args:
        prompts: chat prompts (their ``t_inst``/``t_post_inst`` labels resolve per prompt).
        position: ``"t_inst"``, ``"t_post_inst"`` or an index into each prompt's own
            tokens (``-1`` its last, whatever the padding).
        layers: the blocks whose input (``blocks.L.hook_resid_pre``) to read; every
            block by default. The last entry of the layer axis is always the final
            residual (the last block's ``hook_resid_post``).
        batch_size: prompts per padded pass.
        progress: show a progress bar over batches.

    Returns:
        ``[prompt, len(layers) + 1, d_model]`` on the CPU, in the model's dtype.
    """
    streams = residual_streams(model, prompts, [position], layers, batch_size, progress)
    return streams[:, 0]


def residual_streams(
    model: HookedModel,
    prompts: Sequence[ChatPrompt],
    positions: Sequence[ResidualPosition],
    layers: Sequence[int] | None = None,
    batch_size: int = DEFAULT_BATCH_SIZE,
    progress: bool = False,
) -> Float[Tensor, "prompt position layer d_model"]:
    """:func:`residual_stream` at several positions from the same pass (harmfulness and
    refusal directions read ``t_inst`` and ``t_post_inst`` of one run of each prompt)."""
    hooks = residual_hooks(model, layers)
    if not positions:
        raise ValueError("no positions given; pass t_inst, t_post_inst or an index")
    if not prompts:
        dtype = model.bridge.cfg.dtype
        return torch.empty(0, len(positions), len(hooks), model.d_model, dtype=dtype)
    pairs = [prompt_labels(p) for p in prompts]
    where = [
        [
            resolve_positions(pos if isinstance(pos, str) else [pos], len(t), lab)[0]
            for pos in positions
        ]
        for t, lab in pairs
    ]
    capture = {str(k): name for k, name in enumerate(hooks)}
    out: list[Tensor] = [torch.empty(0)] * len(prompts)
    batches = length_batches([len(t) for t, _ in pairs], batch_size)
    for idx in tqdm(batches, desc="residuals", unit="batch", disable=not progress):
        got = forward_batch(
            model,
            [pairs[i][0] for i in idx],
            labels=[pairs[i][1] for i in idx],
            capture=capture,
            at=[where[i] for i in idx],
        )
        for j, i in enumerate(idx):
            row = got.cache[j] if got.cache is not None else {}
            # [position, layer, d_model]: each hook's capture holds the row's positions in order
            out[i] = torch.stack([row[k] for k in capture], dim=1).cpu()
    return torch.stack(out)
