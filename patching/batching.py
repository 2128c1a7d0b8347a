"""Batches of equal-length prompts, so no row needs padding.

Padding changes rotary positions and attention masks in ways that differ per
architecture; grouping prompts by token length avoids it altogether and costs
nothing for matched pairs (which usually share a length).
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterator, Sequence

import torch
from jaxtyping import Int
from torch import Tensor

from patching.chat import ChatPrompt


def batches_by_length(
    prompts: Sequence[ChatPrompt], batch_size: int
) -> Iterator[tuple[list[int], Int[Tensor, "batch pos"]]]:
    """Yield ``(indices, tokens)`` for groups of equal-length prompts, in a stable order."""
    if batch_size < 1:
        raise ValueError(f"batch_size must be at least 1, got {batch_size}")
    groups: dict[int, list[int]] = defaultdict(list)
    for i, prompt in enumerate(prompts):
        groups[len(prompt)].append(i)
    for length in sorted(groups):
        members = groups[length]
        for start in range(0, len(members), batch_size):
            chunk = members[start : start + batch_size]
            yield chunk, torch.stack([prompts[i].tokens for i in chunk])


def count_batches(prompts: Sequence[ChatPrompt], batch_size: int) -> int:
    """How many batches :func:`batches_by_length` yields (for progress bars)."""
    lengths: dict[int, int] = defaultdict(int)
    for prompt in prompts:
        lengths[len(prompt)] += 1
    return sum(-(-count // batch_size) for count in lengths.values())
