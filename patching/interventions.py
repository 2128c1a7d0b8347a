"""Interventions on attention heads: one small vocabulary for every patched run.

An intervention says *where* (a layer, a head, some positions) and *what*
(replace, zero, scale, add). Every head intervention acts on the head's output
before the output projection, ``blocks.L.attn.hook_z[:, pos, h, :]``: on GQA
models that is the output of *query* head ``h`` (keys and values are shared
between query heads, the output is not), so patching ``z`` per query head is
exactly "patching head h's output".

- :class:`Interchange`: take head h's output from another prompt's run (the
  source, aligned to this prompt's positions).
- :class:`Ablation`: ``kind="zero"`` (0), ``"mean"`` (a mean over a reference
  set) or ``"resample"`` (the output on another prompt).
- :class:`Scale`: multiply the head's output by ``alpha``.
- :class:`Clamp`: hold the head's output at one vector from a position on.
- :class:`AddVector`: add a vector at any hook (a residual-stream hook for
  steering, or ``hook_z`` of one head).

Positions are ``"all"``, a list of indices (negative ones count from the end),
or a label: ``"t_inst"``, ``"t_post_inst"`` or ``"last"``. Interventions compose:
a row of a patched run carries a list of them, applied in order at their hooks
(:mod:`patching.engine` runs many such rows in one forward pass).
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, fields
from typing import Literal

import torch
from jaxtyping import Float
from torch import Tensor

from patching.chat import POSITION_LABELS

Positions = Literal["all", "t_inst", "t_post_inst", "last"] | list[int]
AblationKind = Literal["zero", "mean", "resample"]


def z_hook(layer: int) -> str:
    """The hook of every head's output before ``W_O`` in ``layer``."""
    return f"blocks.{layer}.attn.hook_z"


def resolve_positions(positions: Positions, n_pos: int, labels: Mapping[str, int]) -> list[int]:
    """Absolute, sorted, de-duplicated indices of ``positions`` in a run of ``n_pos`` tokens."""
    if positions == "all":
        return list(range(n_pos))
    if isinstance(positions, str):
        if positions not in POSITION_LABELS:
            raise ValueError(f"unknown position label {positions!r}; use one of {POSITION_LABELS}")
        if positions not in labels:
            raise ValueError(f"this run has no position labelled {positions!r}")
        return [labels[positions]]
    out = set()
    for p in positions:
        if not -n_pos <= p < n_pos:
            raise IndexError(f"position {p} is outside a run of {n_pos} tokens")
        out.add(p % n_pos)
    return sorted(out)


@dataclass(frozen=True)
class HeadIntervention:
    """Base of the interventions on one head's output (``hook_z``)."""

    layer: int
    head: int
    positions: Positions = "all"

    @property
    def hook(self) -> str:
        return z_hook(self.layer)

    def apply(
        self, z: Float[Tensor, "pos d_head"], positions: list[int]
    ) -> Float[Tensor, "pos d_head"]:
        """The new output of the head at ``positions`` (absolute indices), given its old one."""
        raise NotImplementedError


def _at(values: Tensor, positions: list[int], like: Tensor) -> Tensor:
    """``values`` [pos, d] at ``positions``, or a single [d] vector broadcast over them."""
    values = values.to(device=like.device, dtype=like.dtype)
    if values.dim() == 1:
        return values.expand_as(like)
    return values[positions]


@dataclass(frozen=True)
class Interchange(HeadIntervention):
    """Replace the head's output with its output on another prompt.

    ``source`` is the head's output on the source prompt, aligned to this run's
    positions: ``[pos, d_head]`` indexed by this run's absolute positions.
    """

    source: Tensor | None = None

    def apply(self, z: Tensor, positions: list[int]) -> Tensor:
        if self.source is None:
            raise ValueError(f"Interchange at L{self.layer}H{self.head} has no source activation")
        return _at(self.source, positions, z)


@dataclass(frozen=True)
class Ablation(HeadIntervention):
    """Knock the head out: zero, a reference mean, or its output on another prompt.

    ``reference`` is a ``[d_head]`` or ``[pos, d_head]`` mean for ``"mean"``, and the
    other prompt's aligned ``[pos, d_head]`` output for ``"resample"``.
    """

    kind: AblationKind = "zero"
    reference: Tensor | None = None

    def __post_init__(self) -> None:
        if self.kind not in ("zero", "mean", "resample"):
            raise ValueError(f"unknown ablation {self.kind!r}; use zero, mean or resample")
        if self.kind != "zero" and self.reference is None:
            raise ValueError(f"a {self.kind} ablation needs its reference activation")

    def apply(self, z: Tensor, positions: list[int]) -> Tensor:
        if self.kind == "zero" or self.reference is None:
            return torch.zeros_like(z)
        return _at(self.reference, positions, z)


@dataclass(frozen=True)
class Clamp(HeadIntervention):
    """Hold the head's output at one ``[d_head]`` vector from position ``start`` on.

    With ``positions="all"`` in :func:`patching.decoding.greedy_decode`, ``start`` the
    prompt's last index: under ``intervene="prompt"`` only the prompt's last position is
    clamped; under ``"every_step"`` that position and every generated one are (each step's
    positions resolve against the grown sequence). Cipher contrast's gate injection
    (``docs/science.md#cipher-contrast``).
    """

    value: Tensor | None = None
    start: int = 0

    def apply(self, z: Tensor, positions: list[int]) -> Tensor:
        if self.value is None:
            raise ValueError(f"Clamp at L{self.layer}H{self.head} has no value")
        held = torch.tensor([p >= self.start for p in positions], device=z.device)
        return torch.where(held[:, None], _at(self.value, positions, z), z)


@dataclass(frozen=True)
class Scale(HeadIntervention):
    """Multiply the head's output by ``alpha`` (0.1 down-scales, 0 zero-ablates)."""

    alpha: float = 1.0

    def apply(self, z: Tensor, positions: list[int]) -> Tensor:
        return z * self.alpha


@dataclass(frozen=True)
class AddVector:
    """Add ``vector`` at ``hook`` (any hook inside a block, e.g. steering the residual).

    The vector has the hook's trailing shape (``[d_model]`` for residual hooks,
    ``[head, d_head]`` for ``hook_z``), broadcast over the chosen positions.
    """

    hook: str
    vector: Tensor
    positions: Positions = "all"

    @property
    def layer(self) -> int:
        match = re.match(r"blocks\.(\d+)\.", self.hook)
        if match is None:
            raise ValueError(
                f"AddVector hook {self.hook!r} is not inside a block; use a blocks.L.* hook "
                f"(e.g. blocks.L.hook_resid_pre)"
            )
        return int(match.group(1))

    def apply(self, x: Tensor, positions: list[int]) -> Tensor:
        return x + self.vector.to(device=x.device, dtype=x.dtype)


Intervention = HeadIntervention | AddVector


def first_layer(rows: Sequence[Sequence[Intervention]]) -> int:
    """The earliest layer any intervention touches (what a patched run must recompute from)."""
    layers = [iv.layer for row in rows for iv in row]
    if not layers:
        raise ValueError("no interventions given")
    return min(layers)


def acts_alike_everywhere(iv: Intervention) -> bool:
    """Whether ``iv`` acts at every position and writes the same thing at each, whatever
    the prompt (a scaling, a zero or ``[d_head]`` mean ablation): a prompt prefix then
    computes the same activations under it in every row that shares the prefix.

    Resampling and ``[pos, d_head]`` means write each prompt's own values.
    """
    if iv.positions != "all":
        return False
    if isinstance(iv, Scale):
        return True
    if not isinstance(iv, Ablation):
        return False
    one_mean = iv.kind == "mean" and iv.reference is not None and iv.reference.dim() == 1
    return iv.kind == "zero" or one_mean


def same_interventions(a: Sequence[Intervention], b: Sequence[Intervention]) -> bool:
    """Two rows of interventions with equal fields, in order (tensors compared by value)."""
    return len(a) == len(b) and all(map(_same, a, b))


def _same(a: Intervention, b: Intervention) -> bool:
    if type(a) is not type(b):
        return False
    for f in fields(a):
        x, y = getattr(a, f.name), getattr(b, f.name)
        if isinstance(x, Tensor) or isinstance(y, Tensor):
            if not (isinstance(x, Tensor) and isinstance(y, Tensor)):
                return False
            if x.shape != y.shape or not torch.equal(x, y):
                return False
        elif x != y:
            return False
    return True
