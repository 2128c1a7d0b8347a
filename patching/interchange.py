"""Interchange necessity and sufficiency of every head over prompt pairs.

The interchange test (``docs/science.md#interchange``) asks what one head carries. For a
pair (harmful s, control c) and head h:

- *necessity*: run s with h's output taken from c. If the refusal metric falls
  toward m(c), h carries something refusal needs.
- *sufficiency*: run c with h's output taken from s. If the metric rises toward
  m(s), h alone carries enough to push toward refusal.

This module returns the *patched metric values* ``m(s with h from c)`` and
``m(c with h from s)`` per pair and head, plus the clean ``m(s)`` and ``m(c)``;
:mod:`attribution.interchange` turns them into effects and statistics.

Pairs are aligned from the end (:mod:`patching.alignment`).

Speed
-----
Positions where the two prompts agree token for token from the start (equal
lengths, a shared opening such as the chat template's) have identical
activations in both runs, so interchanging a head there changes nothing:
they are neither patched nor recomputed (``AlignedPair.shared``; the cached
prefix of :mod:`patching.engine`). The clean runs of a group of :data:`CLEAN_PAIRS`
pairs run as one batch (left-padded when their lengths differ). Each pair's heads are
then patched in one batched run (one row per head, chunked to the memory budget), every
row joining at its own layer from the cached clean run. Results are saved per pair and
direction under ``chunk_dir`` so an interrupted run picks up where it stopped; the chunks' folder
is keyed on the model's fingerprint (:mod:`patching.fingerprint`: weights,
tokenizer, dtype...), the pairs and the settings, and records them in
``deps.json``. An unreadable chunk is set aside as ``pairN.pt.corrupt`` and
recomputed.
"""

from __future__ import annotations

import json
import warnings
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, Protocol, runtime_checkable

import torch
from jaxtyping import Float
from torch import Tensor
from tqdm.auto import tqdm

from patching.alignment import AlignedPair, patched_positions
from patching.engine import DEFAULT_BUDGET_MB, CleanRun, Hook, RunStats, clean_runs, run_rows
from patching.fingerprint import digest, fingerprint, set_aside
from patching.interventions import Interchange, Positions
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


PairRuns = tuple[CleanRun, CleanRun]


Side = Literal["harmful", "control"]


@dataclass(frozen=True)
class Pass:
    """One batched clean pass: which (pair, side) each row holds, and its read-out logits."""

    rows: list[tuple[int, Side]]
    logits: Float[Tensor, "batch readout d_vocab"]


def group_runs(
    model: HookedModel,
    pairs: Sequence[AlignedPair],
    positions: Sequence[Sequence[int]],
    fwd_hooks: Sequence[Hook] = (),
) -> tuple[list[PairRuns], list[Pass]]:
    """Clean runs of every prompt of ``pairs`` in one batched pass (left-padded).

    Prompts are batched by their number of read-out positions: one pass when all
    pairs share a metric. Each prompt's run starts at its pair's first patched
    position (``positions[i]``, aligned): its patched runs recompute nothing before
    it. Returns each pair's (harmful, control) runs and the passes, in the order
    ``fwd_hooks`` saw them.
    """
    buckets: dict[int, list[tuple[int, Side]]] = {}
    for i, pair in enumerate(pairs):
        for side in ("harmful", "control"):
            buckets.setdefault(pair.n_readout, []).append((i, side))  # type: ignore[arg-type]
    runs: dict[tuple[int, Side], CleanRun] = {}
    passes = []
    for n_readout, rows in buckets.items():
        prompts = [getattr(pairs[i], side) for i, side in rows]
        starts = []
        for (i, side), prompt in zip(rows, prompts, strict=True):
            first = min(positions[i]) if positions[i] else pairs[i].overlap
            starts.append(min(first + pairs[i].offset(side), len(prompt) - n_readout))
        made, logits = clean_runs(
            model,
            prompts,
            start=starts,
            readout=list(range(-n_readout, 0)),
            labels=[getattr(pairs[i], f"{side}_labels") for i, side in rows],
            fwd_hooks=fwd_hooks,
        )
        runs.update(zip(rows, made, strict=True))
        passes.append(Pass(rows, logits))
    return [(runs[i, "harmful"], runs[i, "control"]) for i in range(len(pairs))], passes


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
    runs: list[PairRuns] | None = field(default=None, repr=False)
    """Each pair's clean runs, when kept (a prescreen's exact step reuses them)."""


def _aligned_source(base: CleanRun, base_off: int, source: CleanRun, source_off: int) -> Tensor:
    """Every head's output in ``source``, indexed by ``base``'s positions (NaN where none)."""
    z = torch.stack(source.z)  # [layer, pos - start, head, d_head]
    full = torch.full((z.shape[0], source.n_pos, *z.shape[2:]), float("nan"), dtype=z.dtype)
    full[:, source.start :] = z.to(full.device)
    out = torch.full((z.shape[0], base.n_pos, *z.shape[2:]), float("nan"), dtype=z.dtype)
    out[:, base_off:] = full[:, source_off:]
    return out


def _chunk_deps(
    model: HookedModel,
    pairs: Sequence[AlignedPair],
    metric: PatchMetric,
    positions: Positions,
    heads: Sequence[tuple[int, int]],
    directions: Sequence[Direction],
) -> dict[str, object]:
    """What a run's chunks depend on: the model's fingerprint, the pairs and settings."""
    return {
        "model": model.name,
        "fingerprint": fingerprint(model),
        "shape": [model.n_layers, model.n_heads],
        # The tokens and how they align (offsets, labels): both decide what a chunk holds.
        "pairs": digest(
            [
                [p.harmful.tolist(), p.control.tolist(), p.harmful_labels, p.control_labels]
                for p in pairs
            ]
        ),
        "metric": [metric.name, metric.key],
        "positions": positions,
        "heads": [list(h) for h in heads],
        "directions": sorted(directions),
    }


def _chunk_folder(chunk_dir: str | Path, deps: dict[str, object]) -> Path:
    """The folder of one run's chunks, named by the hash of its deps and recording them."""
    folder = Path(chunk_dir) / digest(deps)
    folder.mkdir(parents=True, exist_ok=True)
    record = folder / "deps.json"
    if not record.is_file():
        record.with_suffix(".tmp").write_text(json.dumps(deps, indent=1, default=str))
        record.with_suffix(".tmp").replace(record)
    return folder


def _load_chunk(
    saved: Path, directions: Sequence[Direction], shape: tuple[int, int]
) -> dict[str, Any] | None:
    """A stored chunk, or ``None`` (the file set aside with a warning) if it is unusable."""
    try:
        chunk = torch.load(saved, weights_only=True)
    except Exception as exc:  # a truncated file fails in many ways inside torch
        set_aside(saved, f"unreadable: {type(exc).__name__}: {exc}")
        return None
    wanted = ("clean_harmful", "clean_control", *directions)
    if (
        not isinstance(chunk, dict)
        or any(k not in chunk for k in wanted)
        or any(
            not isinstance(chunk[d], Tensor) or tuple(chunk[d].shape) != shape for d in directions
        )
    ):
        set_aside(saved, "it does not hold this run's values")
        return None
    return chunk


def _patch_pair(
    model: HookedModel,
    base: CleanRun,
    source_z: Tensor,
    heads: Sequence[tuple[int, int]],
    positions: list[int],
    budget_mb: float,
    stats: RunStats,
) -> Tensor:
    """Every head's patched logits (rows in the order of ``heads``), batched by the engine."""
    rows = [
        [Interchange(layer, head, positions, source=source_z[layer, :, head])]
        for layer, head in heads
    ]
    return run_rows(model, base, rows, budget_mb=budget_mb, stats=stats)


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
    runs: Sequence[PairRuns] | None = None,
    progress: bool = True,
) -> InterchangeRun:
    """Patched metric values of every head (or ``heads``) in both directions, per pair.

    Args:
        pairs: aligned pairs (:func:`align_pair`); pair i's metric is ``metric(.., i)``.
        positions: ``"all"``, indices into the harmful prompt, or a label.
        heads: ``(layer, head)`` pairs to patch; all heads when omitted.
        budget_mb: activation memory a batched run may use (sets rows per pass).
        chunk_dir: where finished (pair, direction) chunks are saved; a rerun with the
            same model (same fingerprint: weights, tokenizer, dtype...), pairs and
            settings loads them instead of recomputing.
        runs: each pair's clean runs from an earlier step with the same ``positions``
            (the attribution estimate's, in a prescreen), used instead of running them.
    """
    heads = list(heads) if heads is not None else all_heads(model)
    if runs is not None and len(runs) != len(pairs):
        raise ValueError(f"{len(runs)} clean runs given for {len(pairs)} pairs")
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
        folder = _chunk_folder(
            chunk_dir, _chunk_deps(model, pairs, metric, positions, heads, directions)
        )
    result = InterchangeRun(
        metric=metric.name,
        positions=positions,
        clean_harmful=torch.full((n,), float("nan"), dtype=torch.float64),
        clean_control=torch.full((n,), float("nan"), dtype=torch.float64),
        patched={d: torch.full((n, *shape), float("nan"), dtype=torch.float64) for d in directions},
        truncated=truncated,
    )
    clean: dict[int, PairRuns] = {}  # the clean runs of the pairs of the current group
    with tqdm(total=n, desc="interchange", unit="pair", disable=not progress) as bar:
        for i, pair in enumerate(pairs):
            saved = folder / f"pair{i}.pt" if folder is not None else None
            chunk: dict[str, Any] | None = None
            if saved is not None and saved.exists():
                chunk = _load_chunk(saved, directions, shape)
            if chunk is None:
                if runs is None and i not in clean:
                    clean, passes = _clean_runs_from(model, pairs, i, positions)
                    result.stats.forward_passes += passes
                given = runs[i] if runs is not None else clean.pop(i)
                chunk = _run_pair(
                    model, pair, i, metric, positions, heads, directions, budget_mb, given
                )
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


# Pairs whose clean runs share one batched pass: a pass of two prompts reads every weight
# for ~100 positions, and a pair's clean pass was 40% of the metric check's time. The groups
# are fixed (pairs 0-7, 8-15...): a pair recomputed on resuming gets the same numbers.
CLEAN_PAIRS = 8


def _clean_runs_from(
    model: HookedModel, pairs: Sequence[AlignedPair], pair: int, positions: Positions
) -> tuple[dict[int, PairRuns], int]:
    """The clean runs of ``pair``'s group of :data:`CLEAN_PAIRS` pairs, in one batched pass;
    and the passes it took."""
    first = pair - pair % CLEAN_PAIRS
    group = range(first, min(len(pairs), first + CLEAN_PAIRS))
    made, passes = group_runs(
        model, [pairs[i] for i in group], [patched_positions(pairs[i], positions) for i in group]
    )
    return dict(zip(group, made, strict=True)), len(passes)


def _run_pair(
    model: HookedModel,
    pair: AlignedPair,
    index: int,
    metric: PatchMetric,
    positions: Positions,
    heads: Sequence[tuple[int, int]],
    directions: Sequence[Direction],
    budget_mb: float,
    given: PairRuns,
) -> dict[str, Any]:
    stats = RunStats()
    aligned = patched_positions(pair, positions)
    harmful, control = given
    if not (
        torch.equal(harmful.tokens.cpu(), pair.harmful)
        and torch.equal(control.tokens.cpu(), pair.control)
    ):
        raise ValueError(f"the clean runs given for pair {index} are of other prompts")
    runs = {"harmful": harmful, "control": control}
    clean_values = {
        "harmful": float(metric(harmful.logits[None], index)[0]),
        "control": float(metric(control.logits[None], index)[0]),
    }
    chunk: dict[str, Any] = {
        "clean_harmful": clean_values["harmful"],
        "clean_control": clean_values["control"],
    }
    for direction in directions:
        base_side, source_side = (
            ("harmful", "control") if direction == "necessity" else ("control", "harmful")
        )
        values = torch.full((model.n_layers, model.n_heads), float("nan"), dtype=torch.float64)
        if not aligned:  # every chosen position lies in the shared opening: nothing changes
            for layer, head in heads:
                values[layer, head] = clean_values[base_side]
            chunk[direction] = values
            continue
        base, base_off = runs[base_side], pair.offset(base_side)  # type: ignore[arg-type]
        source_z = _aligned_source(base, base_off, runs[source_side], pair.offset(source_side))  # type: ignore[arg-type]
        logits = _patch_pair(
            model, base, source_z, heads, [p + base_off for p in aligned], budget_mb, stats
        )
        scores = metric(logits, index).double().cpu()
        for (layer, head), score in zip(heads, scores, strict=True):
            values[layer, head] = score
        chunk[direction] = values
    chunk["stats"] = stats
    return chunk
