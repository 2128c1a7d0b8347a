"""Interchange necessity and sufficiency of every head over prompt pairs.

The interchange test (DESIGN.md section 5) asks what one head carries. For a
pair (harmful s, control c) and head h:

- *necessity*: run s with h's output taken from c. If the refusal metric falls
  toward m(c), h carries something refusal needs.
- *sufficiency*: run c with h's output taken from s. If the metric rises toward
  m(s), h alone carries enough to push toward refusal.

This module returns the *patched metric values* ``m(s with h from c)`` and
``m(c with h from s)`` per pair and head, plus the clean ``m(s)`` and ``m(c)``;
:mod:`attribution.patching_result` turns them into effects and statistics.

Alignment
---------
Patching copies activations position by position, so the two prompts are
aligned **from the end** (right-aligned): both share the chat template's tail,
so the last tokens, ``t_post_inst`` and (when it lies in the overlap) ``t_inst``
line up. When one prompt is longer, its leading positions with no counterpart
are *not patched* (the runs themselves keep every token; nothing is cut from
the prompts). ``AlignedPair.truncated`` counts those positions and a warning
says so. A labelled position that falls outside the overlap raises
:class:`~patching.errors.PairAlignmentError`.

Speed
-----
Each pair's heads are patched in a few batched runs (one row per head), each
starting at its lowest patched layer from the cached clean run (rows of later
heads pass through the earlier layers unpatched) and recomputing only positions
from the first patched one on (:mod:`patching.engine`). :func:`group_layers`
picks the runs: about one per layer for a full grid, a single run for the few
heads a prescreen keeps. Results
are saved per pair and direction under ``chunk_dir`` so an interrupted run
picks up where it stopped.
"""

from __future__ import annotations

import hashlib
import json
import warnings
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal, Protocol, runtime_checkable

import torch
from jaxtyping import Float, Int
from torch import Tensor
from tqdm.auto import tqdm

from patching.chat import ChatPrompt
from patching.engine import DEFAULT_BUDGET_MB, CleanRun, RunStats, clean_run, run_rows
from patching.errors import PairAlignmentError
from patching.interventions import Interchange, Positions, resolve_positions
from patching.model import HookedModel

Direction = Literal["necessity", "sufficiency"]
DIRECTIONS: tuple[Direction, ...] = ("necessity", "sufficiency")


@runtime_checkable
class PatchMetric(Protocol):
    """A metric of a patched run's read-out logits, one value per row.

    ``continuation(pair)`` gives tokens scored by teacher forcing (empty for
    next-token metrics such as the refusal score); the run then appends all but
    the last of them and reads the logits at the last ``len(continuation)``
    positions (or at the last one when there is none).
    """

    @property
    def name(self) -> str: ...

    @property
    def key(self) -> str: ...

    def continuation(self, pair: int) -> list[int]: ...

    def __call__(
        self, logits: Float[Tensor, "batch readout d_vocab"], pair: int
    ) -> Float[Tensor, " batch"]: ...


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


@dataclass
class InterchangeRun:
    """Patched and clean metric values for every pair and head.

    ``patched[direction][i, l, h]`` is the metric of pair i's base run (harmful
    for necessity, control for sufficiency) with head (l, h) from the other
    prompt; NaN for heads that were not patched.
    """

    metric: str
    positions: Positions
    clean_harmful: Float[Tensor, " pair"]
    clean_control: Float[Tensor, " pair"]
    patched: dict[str, Float[Tensor, "pair layer head"]]
    truncated: list[int]
    stats: RunStats = field(default_factory=RunStats)


def _aligned_source(base: CleanRun, base_off: int, source: CleanRun, source_off: int) -> Tensor:
    """Every head's output in ``source``, indexed by ``base``'s positions (NaN where none)."""
    z = torch.stack(source.z)  # [layer, pos - start, head, d_head]
    full = torch.full((z.shape[0], source.n_pos, *z.shape[2:]), float("nan"), dtype=z.dtype)
    full[:, source.start :] = z.to(full.device)
    out = torch.full((z.shape[0], base.n_pos, *z.shape[2:]), float("nan"), dtype=z.dtype)
    out[:, base_off:] = full[:, source_off:]
    return out


def _chunk_key(
    model: HookedModel,
    pairs: Sequence[AlignedPair],
    metric: PatchMetric,
    positions: Positions,
    heads: Sequence[tuple[int, int]],
) -> str:
    spec = {
        "model": model.name,
        "shape": [model.n_layers, model.n_heads],
        "pairs": [[p.harmful.tolist(), p.control.tolist()] for p in pairs],
        "metric": [metric.name, metric.key],
        "positions": positions,
        "heads": [list(h) for h in heads],
    }
    return hashlib.sha256(json.dumps(spec, sort_keys=True).encode()).hexdigest()[:16]


# Cost model of a batched run: every block evaluated costs a fixed overhead (module
# calls, hooks, cache bookkeeping) worth about this many recomputed token positions,
# plus its rows' work (one unit per row and recomputed position).
BLOCK_OVERHEAD_TOKENS = 64.0


def group_layers(
    heads: Sequence[tuple[int, int]], n_layers: int, overhead: float = BLOCK_OVERHEAD_TOKENS
) -> list[list[int]]:
    """Partition the patched layers into batched runs that minimise the cost model.

    ``overhead`` is a block call's fixed cost in rows (:data:`BLOCK_OVERHEAD_TOKENS`
    divided by the positions each row recomputes). A run starting at layer ``l``
    with ``r`` rows costs ``(n_layers - l) * (overhead + r)``:
    one run per layer avoids recomputing early layers for late heads, one run for all
    saves the per-call overhead. Groups are contiguous in depth; dynamic programming
    over the sorted layers finds the cheapest split (patched at the last position,
    every head shares one run from the lowest chosen layer; at all positions of a
    long prompt, a full grid stays at one run per layer).
    """
    counts: dict[int, int] = {}
    for layer, _ in heads:
        counts[layer] = counts.get(layer, 0) + 1
    layers = sorted(counts)
    best = [0.0] + [float("inf")] * len(layers)
    cut = [0] * (len(layers) + 1)
    for end in range(1, len(layers) + 1):
        rows = 0
        for begin in range(end - 1, -1, -1):
            rows += counts[layers[begin]]
            cost = best[begin] + (n_layers - layers[begin]) * (overhead + rows)
            if cost < best[end]:
                best[end], cut[end] = cost, begin
    groups: list[list[int]] = []
    end = len(layers)
    while end > 0:
        groups.append(layers[cut[end] : end])
        end = cut[end]
    return groups[::-1]


def _patch_pair(
    model: HookedModel,
    base: CleanRun,
    source_z: Tensor,
    heads: Sequence[tuple[int, int]],
    positions: list[int],
    budget_mb: float,
    stats: RunStats,
) -> tuple[list[tuple[int, int]], Tensor]:
    """Every head's patched logits, in as few batched runs as the cost model says.

    Rows whose head lies in a later layer than their run's first one pass through
    the earlier layers unpatched (the engine applies each row's hooks to that row).
    Returns the heads in the order of the logits' rows.
    """
    order: list[tuple[int, int]] = []
    out: list[Tensor] = []
    overhead = BLOCK_OVERHEAD_TOKENS / max(1, base.n_pos - base.start)
    for group in group_layers(heads, model.n_layers, overhead):
        members = set(group)
        chosen = sorted((lh for lh in heads if lh[0] in members), key=lambda lh: lh[0])
        rows = [
            [Interchange(layer, head, positions, source=source_z[layer, :, head])]
            for layer, head in chosen
        ]
        out.append(run_rows(model, base, rows, budget_mb=budget_mb, stats=stats))
        order += chosen
    return order, torch.cat(out)


def all_heads(model: HookedModel) -> list[tuple[int, int]]:
    return [(layer, head) for layer in range(model.n_layers) for head in range(model.n_heads)]


def interchange(
    model: HookedModel,
    pairs: Sequence[AlignedPair],
    metric: PatchMetric,
    *,
    positions: Positions = "all",
    heads: Sequence[tuple[int, int]] | None = None,
    directions: Sequence[Direction] = DIRECTIONS,
    budget_mb: float = DEFAULT_BUDGET_MB,
    chunk_dir: str | Path | None = None,
    progress: bool = True,
) -> InterchangeRun:
    """Patched metric values of every head (or ``heads``) in both directions, per pair.

    Args:
        pairs: aligned pairs (:func:`align_pair`); pair i's metric is ``metric(.., i)``.
        positions: ``"all"``, indices into the harmful prompt, or a label.
        heads: ``(layer, head)`` pairs to patch; all heads when omitted.
        budget_mb: activation memory a batched run may use (sets rows per pass).
        chunk_dir: where finished (pair, direction) chunks are saved; a rerun with the
            same model, pairs and settings loads them instead of recomputing.
    """
    heads = list(heads) if heads is not None else all_heads(model)
    for layer, head in heads:
        model.check_head(layer, head)
    n, shape = len(pairs), (model.n_layers, model.n_heads)
    truncated = [p.truncated for p in pairs]
    if any(truncated):
        warnings.warn(
            f"{sum(1 for t in truncated if t)} of {n} pairs differ in length; aligned from the "
            f"end, {sum(truncated)} leading positions in all have no counterpart and are not "
            f"patched",
            stacklevel=2,
        )
    folder: Path | None = None
    if chunk_dir is not None:
        folder = Path(chunk_dir) / _chunk_key(model, pairs, metric, positions, heads)
        folder.mkdir(parents=True, exist_ok=True)
    result = InterchangeRun(
        metric=metric.name,
        positions=positions,
        clean_harmful=torch.full((n,), float("nan"), dtype=torch.float64),
        clean_control=torch.full((n,), float("nan"), dtype=torch.float64),
        patched={d: torch.full((n, *shape), float("nan"), dtype=torch.float64) for d in directions},
        truncated=truncated,
    )
    with tqdm(total=n, desc="interchange", unit="pair", disable=not progress) as bar:
        for i, pair in enumerate(pairs):
            saved = folder / f"pair{i}.pt" if folder is not None else None
            if saved is not None and saved.exists():
                chunk = torch.load(saved)
            else:
                chunk = _run_pair(model, pair, i, metric, positions, heads, directions, budget_mb)
                stats = chunk.pop("stats")
                assert isinstance(stats, RunStats)
                result.stats.add(stats)
                if saved is not None:
                    torch.save(chunk, saved.with_suffix(".tmp"))
                    saved.with_suffix(".tmp").replace(saved)  # never a half-written chunk
            result.clean_harmful[i] = chunk["clean_harmful"]
            result.clean_control[i] = chunk["clean_control"]
            for d in directions:
                result.patched[d][i] = chunk[d]
            bar.update(1)
    return result


def _run_pair(
    model: HookedModel,
    pair: AlignedPair,
    index: int,
    metric: PatchMetric,
    positions: Positions,
    heads: Sequence[tuple[int, int]],
    directions: Sequence[Direction],
    budget_mb: float,
) -> dict[str, object]:
    stats = RunStats()
    aligned = aligned_positions(pair, positions)
    readout = list(range(-pair.n_readout, 0))
    runs: dict[str, CleanRun] = {}
    for side, tokens, labels in (
        ("harmful", pair.harmful, pair.harmful_labels),
        ("control", pair.control, pair.control_labels),
    ):
        off = pair.offset(side)  # type: ignore[arg-type]
        n_pos = len(tokens)
        start = min(min(aligned) + off, n_pos - pair.n_readout)
        runs[side] = clean_run(model, tokens, start=start, readout=readout, labels=labels)
        stats.forward_passes += 1
    chunk: dict[str, object] = {
        "clean_harmful": float(metric(runs["harmful"].logits[None], index)[0]),
        "clean_control": float(metric(runs["control"].logits[None], index)[0]),
    }
    for direction in directions:
        base_side, source_side = (
            ("harmful", "control") if direction == "necessity" else ("control", "harmful")
        )
        base, base_off = runs[base_side], pair.offset(base_side)  # type: ignore[arg-type]
        source_z = _aligned_source(base, base_off, runs[source_side], pair.offset(source_side))  # type: ignore[arg-type]
        patched_positions = [p + base_off for p in aligned]
        values = torch.full((model.n_layers, model.n_heads), float("nan"), dtype=torch.float64)
        order, logits = _patch_pair(
            model, base, source_z, heads, patched_positions, budget_mb, stats
        )
        scores = metric(logits, index).double().cpu()
        for (layer, head), score in zip(order, scores, strict=True):
            values[layer, head] = score
        chunk[direction] = values
    chunk["stats"] = stats
    return chunk
