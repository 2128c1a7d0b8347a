"""The batching policy: prompts of any lengths share a pass, left-padded.

Every batched forward pass of the toolkit (clean runs, patched rows, knockouts,
scaling, steering, decoding, the residual decomposition of DLA) uses
:func:`left_padded`: shorter rows get leading padding that is masked out as keys,
and every row gets its own position ids, so each row's real positions compute
exactly what the prompt computes alone (tests hold this to 1e-5 on four
architectures: rotary, learned and soft-capped models). The last real token is
then the last column of every row, so "the last position" is one index for the
whole batch.

:func:`length_batches` chooses the batches: prompts sorted by length (stable),
cut into groups of ``batch_size``, so neighbours in a batch have similar lengths
and little padding is computed; results go back in the caller's order.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from jaxtyping import Int
from torch import Tensor


def left_padded(
    rows: Sequence[Int[Tensor, " _pos"]],
) -> tuple[Int[Tensor, "batch pos"], list[int], dict[str, Any]]:
    """Rows of different lengths as one left-padded batch: tokens, pads, model arguments.

    The model arguments (``attention_mask``, ``position_ids``) are empty when no row
    needs padding, so an equal-length batch is an ordinary pass. Padding repeats each
    row's first token (any id works: the mask hides it).
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


def length_batches(lengths: Sequence[int], batch_size: int) -> list[list[int]]:
    """Indices of ``lengths`` sorted by length (stable) and cut into batches of ``batch_size``."""
    if batch_size < 1:
        raise ValueError(f"batch_size must be at least 1, got {batch_size}")
    order = sorted(range(len(lengths)), key=lambda i: lengths[i])
    return [order[b : b + batch_size] for b in range(0, len(order), batch_size)]


def count_batches(n: int, batch_size: int) -> int:
    """How many batches :func:`length_batches` makes of ``n`` prompts (for progress bars)."""
    return -(-n // batch_size)
