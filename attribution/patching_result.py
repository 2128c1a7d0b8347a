"""Interchange necessity and sufficiency per head, with per-pair statistics.

:func:`interchange_test` runs the interchange test of DESIGN.md section 5 and
returns a :class:`PatchingResult`. For pair i and head h, with metric m:

    necessity_i(h)   = (m(s) - m(s with h from c)) / (m(s) - m(c))
    sufficiency_i(h) = (m(c with h from s) - m(c)) / (m(s) - m(c))

so 1 means "the head's patch moves the metric the whole clean gap" and 0 means
"no effect". A pair whose clean gap is near zero has no scale to express an
effect in: pairs with ``|gap| < gap_tol * median |gap|`` are **excluded** (their
effects are NaN; a warning names them; ``result.excluded`` lists them).

Statistics per head: the mean effect over pairs, a percentile bootstrap
interval (pairs resampled), a two-sided sign-flip permutation p value and
Benjamini-Hochberg q values across all heads (:mod:`attribution.significance`).

``mode`` picks how the patched values are obtained:

- ``"exact"``: one patched run per head and pair (batched, :mod:`patching.engine`);
- ``"attribution"``: the gradient estimate of every head (one forward and one
  backward pass per prompt);
- ``"prescreen"``: the estimate ranks heads by ``|mean necessity|``, then the
  exact interchange runs on the top k only (others stay NaN), reusing the
  estimate's clean runs.
"""

from __future__ import annotations

import json
import math
import time
import warnings
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch
from jaxtyping import Float

from attribution.nll import METRICS, LogitDiffMetric, NLLMetric, RefusalScoreMetric
from attribution.refusal_tokens import REFUSAL_WORDS, refusal_token_ids
from attribution.significance import benjamini_hochberg, sign_flip_test
from attribution.stats import DEFAULT_N_BOOT, bootstrap_mean_ci
from patching.attribution_patching import attribution_estimate
from patching.batching import count_batches
from patching.chat import format_chat
from patching.decoding import greedy_decode
from patching.engine import DEFAULT_BUDGET_MB
from patching.errors import RefusalCircuitsError
from patching.executor import DEFAULT_BATCH_SIZE
from patching.interchange import InterchangeRun, PatchMetric, align_pair, interchange
from patching.interventions import Positions
from patching.model import HookedModel

Which = Literal["necessity", "sufficiency"]
Mode = Literal["exact", "attribution", "prescreen"]
MODES: tuple[str, ...] = ("exact", "attribution", "prescreen")
DEFAULT_GAP_TOL = 1e-3


@dataclass(frozen=True)
class HeadEffect:
    """One head's mean effect with its interval and test."""

    layer: int
    head: int
    effect: float
    ci_low: float
    ci_high: float
    p: float
    q: float

    @property
    def label(self) -> str:
        return f"L{self.layer}H{self.head}"


def _nan_to_none(values: np.ndarray) -> Any:
    """Nested lists with NaN as ``None`` (JSON has no NaN)."""
    out = np.asarray(values, dtype=np.float64).astype(object)
    out[np.isnan(values)] = None
    return out.tolist()


def _from_json(values: Any) -> np.ndarray:
    return np.asarray(
        np.vectorize(lambda v: np.nan if v is None else v, otypes=[float])(
            np.asarray(values, dtype=object)
        ),
        dtype=np.float64,
    )


@dataclass
class PatchingResult:
    """Per-pair interchange effects of every head, and their statistics.

    ``necessity_pairs[i, l, h]`` and ``sufficiency_pairs[i, l, h]`` are pair i's
    effects (fractions of the clean gap); NaN where a pair was excluded or a head
    was not patched exactly.
    """

    model: str
    metric: str
    positions: Positions
    mode: str
    necessity_pairs: Float[np.ndarray, "pair layer head"]
    sufficiency_pairs: Float[np.ndarray, "pair layer head"]
    clean_harmful: Float[np.ndarray, " pair"]
    clean_control: Float[np.ndarray, " pair"]
    truncated: list[int] = field(default_factory=list)
    excluded: list[int] = field(default_factory=list)
    forward_passes: int = 0
    seconds: float = 0.0
    seed: int = 0
    n_boot: int = DEFAULT_N_BOOT
    ci_level: float = 0.95
    _stats: dict[str, dict[str, np.ndarray]] = field(default_factory=dict, repr=False)

    @property
    def n_pairs(self) -> int:
        return int(self.necessity_pairs.shape[0])

    @property
    def n_layers(self) -> int:
        return int(self.necessity_pairs.shape[1])

    @property
    def n_heads(self) -> int:
        return int(self.necessity_pairs.shape[2])

    @property
    def n(self) -> int:
        """Pairs that enter the statistics (all minus the excluded ones)."""
        return self.n_pairs - len(self.excluded)

    def pairs_of(self, which: Which) -> Float[np.ndarray, "pair layer head"]:
        return self.necessity_pairs if which == "necessity" else self.sufficiency_pairs

    def stats(self, which: Which = "necessity") -> dict[str, np.ndarray]:
        """Mean effect, CI, p and q per head (computed once, seeded)."""
        if which not in self._stats:
            values = self.pairs_of(which)
            kept = values[[i for i in range(self.n_pairs) if i not in self.excluded]]
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", RuntimeWarning)  # all-NaN heads stay NaN
                mean = np.nanmean(kept, axis=0) if len(kept) else np.full(values.shape[1:], np.nan)
                if len(kept):
                    low, high = bootstrap_mean_ci(
                        kept, n_boot=self.n_boot, level=self.ci_level, seed=self.seed
                    )
                else:
                    low = high = np.full(values.shape[1:], np.nan)
            p = sign_flip_test(kept, seed=self.seed) if len(kept) else np.full_like(mean, np.nan)
            self._stats[which] = {
                "effect": mean,
                "ci_low": low,
                "ci_high": high,
                "p": p,
                "q": benjamini_hochberg(p),
            }
        return self._stats[which]

    @property
    def necessity(self) -> Float[np.ndarray, "layer head"]:
        return self.stats("necessity")["effect"]

    @property
    def sufficiency(self) -> Float[np.ndarray, "layer head"]:
        return self.stats("sufficiency")["effect"]

    def _head(self, which: Which, flat: int) -> HeadEffect:
        s = self.stats(which)
        return HeadEffect(
            layer=flat // self.n_heads,
            head=flat % self.n_heads,
            **{k: float(v.flat[flat]) for k, v in s.items()},
        )

    def top(
        self, k: int = 10, *, which: Which = "necessity", by: Literal["value", "abs"] = "value"
    ) -> list[HeadEffect]:
        """The ``k`` heads with the largest mean effect (or magnitude); unpatched heads last."""
        effect = self.stats(which)["effect"]
        key = np.abs(effect) if by == "abs" else effect
        key = np.where(np.isnan(key), -np.inf, key)
        order = np.argsort(-key, axis=None, kind="stable")[:k]
        return [self._head(which, int(i)) for i in order]

    def significant(self, alpha: float = 0.05, *, which: Which = "necessity") -> list[HeadEffect]:
        """Heads with ``q < alpha``, largest effect first."""
        q = self.stats(which)["q"]
        hits = [int(i) for i in np.flatnonzero(np.nan_to_num(q, nan=1.0) < alpha)]
        return sorted(
            (self._head(which, i) for i in hits), key=lambda h: abs(h.effect), reverse=True
        )

    def to_dataframe(self) -> Any:
        """One row per head and direction: effect, CI, p, q."""
        import pandas as pd

        rows = []
        for which in ("necessity", "sufficiency"):
            for i in range(self.n_layers * self.n_heads):
                h = self._head(which, i)  # type: ignore[arg-type]
                rows.append({"which": which, **h.__dict__, "n": self.n, "metric": self.metric})
        return pd.DataFrame(rows)

    def to_dict(self) -> dict[str, Any]:
        data: dict[str, Any] = {
            "model": self.model,
            "metric": self.metric,
            "positions": self.positions,
            "mode": self.mode,
            "n_layers": self.n_layers,
            "n_heads": self.n_heads,
            "n_pairs": self.n_pairs,
            "n": self.n,
            "forward_passes": self.forward_passes,
            "seconds": self.seconds,
            "seed": self.seed,
            "n_boot": self.n_boot,
            "ci_level": self.ci_level,
            "truncated": self.truncated,
            "excluded": self.excluded,
        }
        for which in ("necessity", "sufficiency"):
            s = self.stats(which)  # type: ignore[arg-type]
            data[which] = _nan_to_none(s["effect"])
            for key in ("ci_low", "ci_high", "p", "q"):
                data[f"{which}_{key}"] = _nan_to_none(s[key])
        data["p"], data["q"] = data["necessity_p"], data["necessity_q"]
        data["per_pair"] = {
            "necessity": _nan_to_none(self.necessity_pairs),
            "sufficiency": _nan_to_none(self.sufficiency_pairs),
            "clean_harmful": _nan_to_none(self.clean_harmful),
            "clean_control": _nan_to_none(self.clean_control),
        }
        return data

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> PatchingResult:
        pp = data["per_pair"]
        return cls(
            model=data["model"],
            metric=data["metric"],
            positions=data["positions"],
            mode=data["mode"],
            necessity_pairs=_from_json(pp["necessity"]),
            sufficiency_pairs=_from_json(pp["sufficiency"]),
            clean_harmful=_from_json(pp["clean_harmful"]),
            clean_control=_from_json(pp["clean_control"]),
            truncated=list(data["truncated"]),
            excluded=list(data["excluded"]),
            forward_passes=int(data["forward_passes"]),
            seconds=float(data["seconds"]),
            seed=int(data["seed"]),
            n_boot=int(data["n_boot"]),
            ci_level=float(data["ci_level"]),
        )

    def to_json(self, path: str | Path) -> Path:
        out = Path(path)
        out.write_text(json.dumps(self.to_dict(), indent=1))
        return out

    @classmethod
    def from_json(cls, path: str | Path) -> PatchingResult:
        return cls.from_dict(json.loads(Path(path).read_text()))


def effects_from_run(
    run: InterchangeRun, *, gap_tol: float = DEFAULT_GAP_TOL
) -> tuple[np.ndarray, np.ndarray, list[int]]:
    """Necessity and sufficiency per pair from patched values, and the excluded pairs."""
    m_s = run.clean_harmful.numpy()
    m_c = run.clean_control.numpy()
    gap = m_s - m_c
    scale = float(np.median(np.abs(gap))) if len(gap) else 0.0
    excluded = [i for i, g in enumerate(gap) if abs(g) <= gap_tol * scale or abs(g) < 1e-12]
    if excluded:
        warnings.warn(
            f"pairs {excluded} have a clean gap m(s) - m(c) near 0 (under {gap_tol:g} x the "
            f"median gap); their effects are undefined and they are excluded",
            stacklevel=2,
        )
    safe = np.where(np.isin(np.arange(len(gap)), excluded), np.nan, gap)[:, None, None]
    n_shape = (len(gap), *run.patched[next(iter(run.patched))].shape[1:])
    nec = run.patched.get("necessity", torch.full(n_shape, float("nan"))).numpy()
    suf = run.patched.get("sufficiency", torch.full(n_shape, float("nan"))).numpy()
    return (m_s[:, None, None] - nec) / safe, (suf - m_c[:, None, None]) / safe, excluded


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
    nll_tokens: int = 5,
    refusal_words: Sequence[str] = REFUSAL_WORDS,
    budget_mb: float = DEFAULT_BUDGET_MB,
    chunk_dir: str | Path | None = None,
    gap_tol: float = DEFAULT_GAP_TOL,
    n_boot: int = DEFAULT_N_BOOT,
    seed: int = 0,
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
        chunk_dir: finished chunks are saved there and reused by a rerun.
    """
    if not pairs:
        raise RefusalCircuitsError("no prompt pairs given; pass at least one pair")
    if mode not in MODES:
        raise RefusalCircuitsError(f"unknown mode {mode!r}; use one of {', '.join(MODES)}")
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
        estimate, _, _ = effects_from_run(run, gap_tol=gap_tol)
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
    necessity, sufficiency, excluded = effects_from_run(run, gap_tol=gap_tol)
    return PatchingResult(
        model=model.name,
        metric=patch_metric.name,
        positions=positions,
        mode=mode,
        necessity_pairs=necessity,
        sufficiency_pairs=sufficiency,
        clean_harmful=run.clean_harmful.numpy(),
        clean_control=run.clean_control.numpy(),
        truncated=run.truncated,
        excluded=excluded,
        forward_passes=run.stats.forward_passes + passes,
        seconds=time.perf_counter() - began,
        seed=seed,
        n_boot=n_boot,
    )
