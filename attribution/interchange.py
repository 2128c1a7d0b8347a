"""The interchange test: necessity and sufficiency of every head over prompt pairs.

:func:`interchange_test` runs the interchange test (``docs/science.md#interchange``) and
returns a :class:`~attribution.interchange_result.PatchingResult`. For pair i
and head h, with metric m:

    necessity_i(h)   = (m(s) - m(s with h from c)) / unit
    sufficiency_i(h) = (m(c with h from s) - m(c)) / unit

where ``unit`` is the pooled clean gap ``mean_i |m(s_i) - m(c_i)|`` (the default,
``scale="pooled"``, shared with the audit) or each pair's own gap ``m(s) - m(c)``
(``scale="per_pair"``). A pair whose clean gap is near zero carries no contrast:
pairs with ``|gap| < gap_tol * median |gap|`` are **excluded** on either scale
(their effects are NaN; a warning names them; ``result.excluded`` lists them).

Statistics per head: the mean effect over pairs, a percentile bootstrap
interval (pairs resampled), a two-sided sign-flip permutation p value and
Benjamini-Hochberg q values across all heads (:mod:`attribution.statistics`).

``mode`` picks how the patched values are obtained:

- ``"exact"``: one patched run per head and pair (batched, :mod:`patching.engine`);
- ``"attribution"``: the gradient estimate of every head (one forward and one
  backward pass per prompt);
- ``"prescreen"``: the estimate ranks heads by ``|mean necessity|`` (on the
  chosen scale), then the exact interchange runs on the top k only (others stay
  NaN), reusing the estimate's clean runs.
"""

from __future__ import annotations

import math
import time
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch
from jaxtyping import Float

from attribution.interchange_result import PatchingResult
from attribution.metrics import METRICS, LogitDiffMetric, NLLMetric, RefusalScoreMetric
from attribution.refusal_tokens import REFUSAL_WORDS, refusal_token_ids
from attribution.statistics import DEFAULT_N_BOOT, SCALES, Scale, scaled_effects
from patching.alignment import align_pair
from patching.batching import count_batches
from patching.chat import format_chat
from patching.decoding import greedy_decode
from patching.engine import DEFAULT_BUDGET_MB
from patching.errors import RefusalCircuitsError
from patching.executor import DEFAULT_BATCH_SIZE
from patching.gradient_estimate import attribution_estimate
from patching.interchange import InterchangeRun, PatchMetric, interchange
from patching.interventions import Positions
from patching.model import HookedModel

Mode = Literal["exact", "attribution", "prescreen"]
MODES: tuple[str, ...] = ("exact", "attribution", "prescreen")
DEFAULT_GAP_TOL = 1e-3


def effects_from_run(
    run: InterchangeRun, *, gap_tol: float = DEFAULT_GAP_TOL
) -> tuple[Float[np.ndarray, "pair layer head"], Float[np.ndarray, "pair layer head"], list[int]]:
    """Necessity drop and sufficiency rise per pair (metric units), and the excluded pairs.

    Excluded pairs (clean gap near 0) and heads not patched are NaN.
    """
    m_s = run.clean_harmful.numpy()
    m_c = run.clean_control.numpy()
    gap = m_s - m_c
    scale = float(np.median(np.abs(gap))) if len(gap) else 0.0
    excluded = [i for i, g in enumerate(gap) if abs(g) <= gap_tol * scale or abs(g) < 1e-12]
    if excluded:
        warnings.warn(
            f"pairs {excluded} have a clean gap m(s) - m(c) near 0 (under {gap_tol:g} x the "
            f"median gap); they carry no contrast and are excluded",
            stacklevel=2,
        )
    n_shape = (len(gap), *run.patched[next(iter(run.patched))].shape[1:])
    nec = run.patched.get("necessity", torch.full(n_shape, float("nan"))).numpy()
    suf = run.patched.get("sufficiency", torch.full(n_shape, float("nan"))).numpy()
    drop = m_s[:, None, None] - nec
    rise = suf - m_c[:, None, None]
    drop[excluded] = np.nan
    rise[excluded] = np.nan
    return drop, rise, excluded


def build_metric(
    model: HookedModel,
    control_tokens: Sequence[torch.Tensor],
    metric: str = "refusal_score",
    *,
    refusal_words: Sequence[str] = REFUSAL_WORDS,
    nll_tokens: int = 5,
) -> tuple[PatchMetric, int]:
    """The metric object for ``metric`` and the forward passes spent building it.

    The logit difference's answer token and the NLL's continuation come from
    each control prompt's own greedy decoding.
    """
    if metric not in METRICS:
        raise RefusalCircuitsError(f"unknown metric {metric!r}; use one of {', '.join(METRICS)}")
    refusal_ids = refusal_token_ids(model.tokenizer, tuple(refusal_words))
    if metric == "refusal_score":
        return RefusalScoreMetric(refusal_ids), 0
    steps = 1 if metric == "logit_diff" else nll_tokens
    greedy = greedy_decode(model, control_tokens, steps, stop_at_eos=False)
    passes = steps * count_batches(len(control_tokens), DEFAULT_BATCH_SIZE)
    if metric == "logit_diff":
        return LogitDiffMetric(refusal_ids, [g[0] for g in greedy]), passes
    return NLLMetric(greedy), passes


def interchange_test(
    model: HookedModel,
    pairs: Sequence[Any],
    *,
    metric: str = "refusal_score",
    positions: Positions = "all",
    mode: Mode = "exact",
    top_k: int | None = None,
    heads: Sequence[tuple[int, int]] | None = None,
    nll_tokens: int = 5,
    refusal_words: Sequence[str] = REFUSAL_WORDS,
    budget_mb: float = DEFAULT_BUDGET_MB,
    chunk_dir: str | Path | None = None,
    gap_tol: float = DEFAULT_GAP_TOL,
    n_boot: int = DEFAULT_N_BOOT,
    seed: int = 0,
    scale: Scale = "pooled",
    progress: bool = True,
) -> PatchingResult:
    """Interchange necessity and sufficiency of every head over prompt pairs.

    Args:
        pairs: objects with ``.harmful`` and ``.control`` texts (``PromptPair``).
        metric: ``"refusal_score"``, ``"logit_diff"`` or ``"nll"`` (of the control's
            first ``nll_tokens`` greedy tokens).
        positions: ``"all"``, a label (``t_inst``, ``t_post_inst``, ``last``) or indices.
        mode: ``"exact"``, ``"attribution"`` or ``"prescreen"`` (module docstring).
        top_k: heads run exactly in prescreen mode (default: 10% of all heads).
        heads: in exact mode, the ``(layer, head)`` pairs measured (the others NaN);
            every head when omitted.
        chunk_dir: finished chunks are saved there and reused by a rerun.
        scale: ``"pooled"`` (effects over the mean absolute clean gap, as the audit)
            or ``"per_pair"`` (each pair over its own gap); module docstring.
    """
    if not pairs:
        raise RefusalCircuitsError("no prompt pairs given; pass at least one pair")
    if mode not in MODES:
        raise RefusalCircuitsError(f"unknown mode {mode!r}; use one of {', '.join(MODES)}")
    if scale not in SCALES:
        raise RefusalCircuitsError(f"unknown scale {scale!r}; use one of {', '.join(SCALES)}")
    began = time.perf_counter()
    tok = model.tokenizer
    harmful = [format_chat(tok, p.harmful) for p in pairs]
    control = [format_chat(tok, p.control) for p in pairs]
    patch_metric, passes = build_metric(
        model,
        [c.tokens for c in control],
        metric,
        refusal_words=refusal_words,
        nll_tokens=nll_tokens,
    )
    aligned = [
        align_pair(h, c, patch_metric.continuation(i))
        for i, (h, c) in enumerate(zip(harmful, control, strict=True))
    ]
    if mode == "exact":
        run = interchange(
            model,
            aligned,
            patch_metric,
            positions=positions,
            heads=heads,
            budget_mb=budget_mb,
            chunk_dir=chunk_dir,
            progress=progress,
        )
    else:
        run = attribution_estimate(
            model,
            aligned,
            patch_metric,
            positions=positions,
            keep_runs=mode == "prescreen",
            budget_mb=budget_mb,
            progress=progress,
        )
    if mode == "prescreen":
        drop, _, _ = effects_from_run(run, gap_tol=gap_tol)
        gaps = (run.clean_harmful - run.clean_control).numpy()
        estimate = scaled_effects(drop, gaps, scale)
        k = top_k or max(1, math.ceil(0.1 * model.n_layers * model.n_heads))
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)
            score = np.nan_to_num(np.abs(np.nanmean(estimate, axis=0)), nan=-1.0)
        chosen = np.argsort(-score, axis=None, kind="stable")[:k]
        heads = [(int(i) // model.n_heads, int(i) % model.n_heads) for i in chosen]
        screened = run
        run = interchange(
            model,
            aligned,
            patch_metric,
            positions=positions,
            heads=heads,
            budget_mb=budget_mb,
            chunk_dir=chunk_dir,
            runs=screened.runs,
            progress=progress,
        )
        run.stats.forward_passes += screened.stats.forward_passes
    drop, rise, excluded = effects_from_run(run, gap_tol=gap_tol)
    return PatchingResult(
        model=model.name,
        metric=patch_metric.name,
        positions=positions,
        mode=mode,
        necessity_drop=drop,
        sufficiency_rise=rise,
        clean_harmful=run.clean_harmful.numpy(),
        clean_control=run.clean_control.numpy(),
        truncated=run.truncated,
        excluded=excluded,
        forward_passes=run.stats.forward_passes + passes,
        seconds=time.perf_counter() - began,
        seed=seed,
        n_boot=n_boot,
        scale=scale,
    )
