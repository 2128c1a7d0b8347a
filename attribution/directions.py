"""Harmfulness and refusal directions: differences of means of the residual stream.

Two readings of each prompt's residual stream (:func:`patching.residuals.residual_streams`,
every block's input plus the final residual, one batched pass per batch):

- at ``t_inst`` (the last token of the user's instruction), the **harmfulness**
  direction: mean over harmful prompts minus mean over harmless ones;
- at ``t_post_inst`` (the last prompt token, where the first response token is
  predicted), the **refusal** direction.

That is the *two-set* form (:func:`extract_directions`: harmful minus harmless at
both positions). The *four-cluster* form splits the prompts by the model's own
behaviour (:mod:`circuits.directions` judges greedy continuations): harmfulness is
harmful minus harmless whatever the model did, refusal is refused minus complied
whatever the request was (:func:`directions_from_streams` with ``refused``). Each
direction is computed only from groups of at least ``min_per_cluster`` prompts.

Directions are kept unnormalised (their norm is the separation of the two means, in
residual-stream units); :meth:`Directions.cosine` and the norms per layer are the
comparison. :func:`project` reads a prompt's score along a direction (its
residual's component along the unit direction). Definitions in
``docs/science.md#directions-and-steering``.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np
import torch
from jaxtyping import Bool, Float
from torch import Tensor

from attribution.result import Result
from patching.chat import ChatPrompt
from patching.errors import TooFewPairsError
from patching.executor import DEFAULT_BATCH_SIZE
from patching.model import HookedModel
from patching.residuals import residual_streams

Which = Literal["harmfulness", "refusal"]
WHICH: tuple[Which, ...] = ("harmfulness", "refusal")
Form = Literal["two_set", "four_cluster"]
DEFAULT_MIN_PER_CLUSTER = 4
"""The fewest prompts a mean of a direction is taken over (``min_per_cluster``)."""

__all__ = [
    "DEFAULT_MIN_PER_CLUSTER",
    "WHICH",
    "Directions",
    "LayerStat",
    "check_groups",
    "cluster_sizes",
    "cosine_per_layer",
    "directions_from_streams",
    "extract_directions",
    "mean_difference",
    "project",
]


def mean_difference(
    positive: Float[Tensor, "n layer d_model"], negative: Float[Tensor, "m layer d_model"]
) -> Float[Tensor, "layer d_model"]:
    """Mean of ``positive`` minus mean of ``negative`` over prompts, per layer, in float64."""
    return positive.double().mean(dim=0) - negative.double().mean(dim=0)


def cosine_per_layer(
    a: Float[Tensor, "layer d_model"], b: Float[Tensor, "layer d_model"]
) -> Float[np.ndarray, " layer"]:
    """Cosine similarity of ``a[l]`` and ``b[l]`` for every layer (NaN where one is zero)."""
    a, b = a.double(), b.double()
    norms = a.norm(dim=-1) * b.norm(dim=-1)
    cos = (a * b).sum(dim=-1) / norms
    return np.asarray(torch.where(norms > 0, cos, torch.nan).numpy())


def project(
    streams: Float[Tensor, "n layer d_model"],
    directions: Float[Tensor, "layer d_model"],
    layers: Sequence[int] | None = None,
) -> Float[np.ndarray, "n layer"]:
    """Each prompt's component along each layer's unit direction (residual units).

    ``layers``: the model layer of each entry (named in the error; default: the index).

    Raises:
        ValueError: a layer's direction is zero (no unit direction to project on).
    """
    norms = directions.double().norm(dim=-1, keepdim=True)
    zero = [int(i) for i in torch.nonzero(norms[:, 0] == 0).flatten()]
    if zero:
        name = layers[zero[0]] if layers is not None else zero[0]
        raise ValueError(
            f"the direction at layer {name} is zero (its two means coincide there): "
            f"project at another layer"
        )
    unit = directions.double() / norms
    return np.asarray(torch.einsum("nld,ld->nl", streams.double(), unit).numpy())


def cluster_sizes(
    harmful: Bool[np.ndarray, " n"], refused: Bool[np.ndarray, " n"]
) -> dict[str, int]:
    """How many prompts fall in each of the four behaviour clusters."""
    h, r = np.asarray(harmful, bool), np.asarray(refused, bool)
    return {
        "refused_harmful": int((h & r).sum()),
        "complied_harmful": int((h & ~r).sum()),
        "refused_harmless": int((~h & r).sum()),
        "complied_harmless": int((~h & ~r).sum()),
    }


def _check_group(n: int, group: str, direction: str, minimum: int, sizes: dict[str, int]) -> None:
    if n < minimum:
        shown = ", ".join(f"{k} {v}" for k, v in sizes.items())
        raise TooFewPairsError(
            f"the {direction} direction needs at least {minimum} {group} prompts, got {n} "
            f"(clusters: {shown}); add prompts or lower min_per_cluster (--min-per-cluster)"
        )


def check_groups(
    harmful: Bool[np.ndarray, " n"],
    refused: Bool[np.ndarray, " n"] | None,
    min_per_cluster: int = DEFAULT_MIN_PER_CLUSTER,
) -> dict[str, int]:
    """The cluster sizes, once every group a direction is a mean over has enough prompts.

    Two-set form (``refused`` is ``None``): harmful and harmless. Four-cluster form:
    harmful and harmless (harmfulness), refused and complied (refusal), each pooled
    over the other label. Raises :class:`~patching.errors.TooFewPairsError` naming the
    group, the four cluster sizes and the fix.
    """
    h = np.asarray(harmful, dtype=bool)
    if min_per_cluster < 1:
        raise ValueError(f"min_per_cluster must be at least 1, got {min_per_cluster}")
    if refused is None:
        sizes = {"harmful": int(h.sum()), "harmless": int((~h).sum())}
    else:
        r = np.asarray(refused, dtype=bool)
        if len(r) != len(h):
            raise ValueError(f"{len(r)} refusal labels for {len(h)} prompts")
        sizes = cluster_sizes(h, r)
    _check_group(int(h.sum()), "harmful", "harmfulness", min_per_cluster, sizes)
    _check_group(int((~h).sum()), "harmless", "harmfulness", min_per_cluster, sizes)
    if refused is not None:
        _check_group(int(r.sum()), "refused", "refusal", min_per_cluster, sizes)
        _check_group(int((~r).sum()), "complied", "refusal", min_per_cluster, sizes)
    return sizes


@dataclass(frozen=True)
class LayerStat:
    """One layer's row of :meth:`Directions.top`."""

    label: str
    layer: int
    value: float
    cosine: float
    harmfulness_norm: float
    refusal_norm: float


@dataclass
class Directions(Result):
    """Per-layer harmfulness (``t_inst``) and refusal (``t_post_inst``) directions.

    Attributes:
        layers: the block whose input each entry reads; the last entry, ``n_layers``,
            is the final residual (the last block's output).
        harmfulness, refusal: ``[layer, d_model]`` unnormalised differences of means.
        resid_norm_t_inst, resid_norm_t_post_inst: the mean residual norm of all prompts
            at each position, per layer (the scale a direction's norm is read against).
        form: ``"two_set"`` (harmful minus harmless at both positions) or
            ``"four_cluster"`` (refusal = refused minus complied, by behaviour).
        cluster_sizes: prompts per behaviour cluster (four-cluster form), or the
            harmful/harmless counts (two-set form).
    """

    model: str
    n_layers: int
    layers: list[int]
    harmfulness: Float[Tensor, "layer d_model"] = field(metadata={"group": "vectors"})
    refusal: Float[Tensor, "layer d_model"] = field(metadata={"group": "vectors"})
    resid_norm_t_inst: Float[np.ndarray, " layer"]
    resid_norm_t_post_inst: Float[np.ndarray, " layer"]
    form: str = "two_set"
    cluster_sizes: dict[str, int] = field(default_factory=dict)
    min_per_cluster: int = DEFAULT_MIN_PER_CLUSTER

    @property
    def labels(self) -> list[str]:
        """``L0`` ... for block inputs, ``final`` for the final residual."""
        return ["final" if layer == self.n_layers else f"L{layer}" for layer in self.layers]

    def vectors(self, which: Which) -> Float[Tensor, "layer d_model"]:
        if which not in WHICH:
            raise ValueError(f"unknown direction {which!r}; use one of {', '.join(WHICH)}")
        return self.harmfulness if which == "harmfulness" else self.refusal

    def at(self, which: Which, layer: int) -> Float[Tensor, " d_model"]:
        """The ``which`` direction read at block ``layer``'s input (``n_layers``: final)."""
        if layer not in self.layers:
            raise ValueError(
                f"layer {layer} has no direction; choose one of {self.layers} "
                f"({self.n_layers} is the final residual)"
            )
        return self.vectors(which)[self.layers.index(layer)]

    def cosine(self) -> Float[np.ndarray, " layer"]:
        """Cosine between the harmfulness and the refusal direction, per layer."""
        return cosine_per_layer(self.harmfulness, self.refusal)

    def norm(self, which: Which) -> Float[np.ndarray, " layer"]:
        """The direction's norm per layer (the two means' separation, residual units)."""
        return np.asarray(self.vectors(which).double().norm(dim=-1).numpy())

    def relative_norm(self, which: Which) -> Float[np.ndarray, " layer"]:
        """The norm over the mean residual norm at the direction's position."""
        resid = self.resid_norm_t_inst if which == "harmfulness" else self.resid_norm_t_post_inst
        return self.norm(which) / np.asarray(resid, dtype=np.float64)

    def top(self, k: int = 5, which: Which = "refusal") -> list[LayerStat]:
        """The ``k`` layers where ``which`` stands out most (relative norm, descending)."""
        rel, cos = self.relative_norm(which), self.cosine()
        h, r = self.norm("harmfulness"), self.norm("refusal")
        order = np.argsort(-np.nan_to_num(rel, nan=-np.inf), kind="stable")[:k]
        return [
            LayerStat(self.labels[i], self.layers[i], float(rel[i]), float(cos[i]), float(h[i]),
                      float(r[i]))
            for i in order
        ]  # fmt: skip

    def derived(self) -> dict[str, Any]:
        return {
            "labels": self.labels,
            "cosine": self.cosine(),
            "harmfulness_norm": self.norm("harmfulness"),
            "refusal_norm": self.norm("refusal"),
        }


def directions_from_streams(
    streams: Float[Tensor, "n position layer d_model"],
    harmful: Bool[np.ndarray, " n"],
    *,
    refused: Bool[np.ndarray, " n"] | None = None,
    layers: Sequence[int],
    n_layers: int,
    model: str = "",
    min_per_cluster: int = DEFAULT_MIN_PER_CLUSTER,
) -> Directions:
    """Directions from residual streams read at ``(t_inst, t_post_inst)`` (position axis).

    Without ``refused`` (the two-set form) both directions are harmful minus harmless.
    With it (the four-cluster form) refusal is refused minus complied at ``t_post_inst``
    whatever the request; harmfulness stays harmful minus harmless at ``t_inst``
    whatever the model did. ``layers`` are the block indices of the layer axis without
    the final entry. Raises :class:`~patching.errors.TooFewPairsError` when a group a
    direction is a mean over has fewer than ``min_per_cluster`` prompts.
    """
    h = np.asarray(harmful, dtype=bool)
    if streams.shape[1] != 2:
        raise ValueError("streams must hold the t_inst and t_post_inst readings (position axis 2)")
    if len(h) != streams.shape[0]:
        raise ValueError(f"{len(h)} harmful labels for {streams.shape[0]} prompts")
    sizes = check_groups(h, refused, min_per_cluster)
    t_inst, t_post = streams[:, 0], streams[:, 1]
    harm_mask = torch.from_numpy(h)
    harmfulness = mean_difference(t_inst[harm_mask], t_inst[~harm_mask])
    if refused is None:
        refusal = mean_difference(t_post[harm_mask], t_post[~harm_mask])
    else:
        ref_mask = torch.from_numpy(np.asarray(refused, dtype=bool))
        refusal = mean_difference(t_post[ref_mask], t_post[~ref_mask])
    return Directions(
        model=model,
        n_layers=n_layers,
        layers=[*layers, n_layers],
        harmfulness=harmfulness,
        refusal=refusal,
        resid_norm_t_inst=np.asarray(t_inst.double().norm(dim=-1).mean(dim=0).numpy()),
        resid_norm_t_post_inst=np.asarray(t_post.double().norm(dim=-1).mean(dim=0).numpy()),
        form="two_set" if refused is None else "four_cluster",
        cluster_sizes=sizes,
        min_per_cluster=min_per_cluster,
    )


def read_streams(
    model: HookedModel,
    prompts: Sequence[ChatPrompt],
    layers: Sequence[int] | None = None,
    *,
    batch_size: int = DEFAULT_BATCH_SIZE,
    progress: bool = False,
) -> Float[Tensor, "n position layer d_model"]:
    """Every prompt's residual streams at ``t_inst`` and ``t_post_inst``, one pass each."""
    return residual_streams(model, prompts, ["t_inst", "t_post_inst"], layers, batch_size, progress)


def extract_directions(
    model: HookedModel,
    harmful: Sequence[ChatPrompt],
    harmless: Sequence[ChatPrompt],
    layers: Sequence[int] | None = None,
    *,
    min_per_cluster: int = DEFAULT_MIN_PER_CLUSTER,
    batch_size: int = DEFAULT_BATCH_SIZE,
    progress: bool = False,
) -> Directions:
    """The two-set directions: harmful minus harmless at ``t_inst`` and at ``t_post_inst``.

    ``layers``: the blocks whose input is read (every block by default); the final
    residual is always added as the last entry.
    """
    labels = np.array([True] * len(harmful) + [False] * len(harmless))
    check_groups(labels, None, min_per_cluster)
    chosen = list(range(model.n_layers)) if layers is None else [int(x) for x in layers]
    streams = read_streams(
        model, [*harmful, *harmless], chosen, batch_size=batch_size, progress=progress
    )
    return directions_from_streams(
        streams,
        labels,
        layers=chosen,
        n_layers=model.n_layers,
        model=model.name,
        min_per_cluster=min_per_cluster,
    )
