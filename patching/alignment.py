"""Prompt pairs aligned token by token, from the end, for interchange patching.

Patching copies activations position by position, so the two prompts are
aligned **from the end** (right-aligned): both share the chat template's tail,
so the last tokens, ``t_post_inst`` and (when it lies in the overlap) ``t_inst``
line up. When one prompt is longer, its leading positions with no counterpart
are *not patched* (the runs themselves keep every token; nothing is cut from
the prompts). ``AlignedPair.truncated`` counts those positions and a warning
says so. A labelled position that falls outside the overlap raises
:class:`~patching.errors.PairAlignmentError`.

Explained in ``docs/science.md#interchange``.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

import torch
from jaxtyping import Int
from torch import Tensor

from patching.chat import ChatPrompt
from patching.errors import PairAlignmentError
from patching.interventions import Positions, resolve_positions


@dataclass(frozen=True)
class AlignedPair:
    """A harmful prompt and its control, right-aligned, with the continuation appended."""

    harmful: Int[Tensor, " harmful_pos"]
    control: Int[Tensor, " control_pos"]
    harmful_labels: dict[str, int]
    control_labels: dict[str, int]
    n_readout: int

    @property
    def overlap(self) -> int:
        return min(len(self.harmful), len(self.control))

    @property
    def truncated(self) -> int:
        """Leading positions of the longer prompt that have no counterpart (left unpatched)."""
        return abs(len(self.harmful) - len(self.control))

    def offset(self, side: Literal["harmful", "control"]) -> int:
        return len(getattr(self, side)) - self.overlap

    @property
    def shared(self) -> int:
        """Leading positions where both prompts hold the same tokens at the same places.

        A causal model computes identical activations there in both runs, so an
        interchange at those positions is a no-op (0 when the lengths differ).
        """
        if len(self.harmful) != len(self.control):
            return 0
        differ = torch.nonzero(self.harmful != self.control)
        return int(differ[0, 0]) if len(differ) else len(self.harmful)


def align_pair(
    harmful: ChatPrompt, control: ChatPrompt, continuation: Sequence[int] = ()
) -> AlignedPair:
    """Right-align a pair (see the module docstring) and append the teacher-forced tokens."""
    extra = torch.tensor(list(continuation)[:-1], dtype=torch.long)

    def labels(prompt: ChatPrompt) -> dict[str, int]:
        return {"t_inst": prompt.t_inst, "t_post_inst": prompt.t_post_inst}

    pair = AlignedPair(
        harmful=torch.cat([harmful.tokens, extra]),
        control=torch.cat([control.tokens, extra]),
        harmful_labels={**labels(harmful), "last": harmful.t_post_inst},
        control_labels={**labels(control), "last": control.t_post_inst},
        n_readout=max(1, len(continuation)),
    )
    for label in ("t_inst", "t_post_inst"):
        h = pair.harmful_labels[label] - pair.offset("harmful")
        c = pair.control_labels[label] - pair.offset("control")
        if h < 0 or c < 0 or h != c:
            raise PairAlignmentError(
                f"{label} cannot be aligned: aligned from the end of the chat template, the "
                f"harmful prompt ({len(harmful)} tokens) puts it at {h - pair.overlap} and the "
                f"control ({len(control)} tokens) at {c - pair.overlap} from the end. Make the "
                f"control's instruction closer in length to the harmful one, or patch 'last'."
            )
    return pair


def aligned_positions(pair: AlignedPair, positions: Positions) -> list[int]:
    """Patched positions in aligned coordinates (0 = first position of the overlap)."""
    n = len(pair.harmful)
    off = pair.offset("harmful")
    absolute = resolve_positions(positions, n, pair.harmful_labels)
    inside = [p - off for p in absolute if p >= off]
    if not inside:
        raise PairAlignmentError(
            f"none of the positions {positions!r} lies in the {pair.overlap} aligned tokens"
        )
    return inside


def patched_positions(pair: AlignedPair, positions: Positions) -> list[int]:
    """The aligned positions an interchange can change: those past the shared opening."""
    return [p for p in aligned_positions(pair, positions) if p >= pair.shared]
