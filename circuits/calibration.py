"""Refusal-rate calibration per category, verified by generation ("Refusal Tokens").

``docs/science.md#refusal-rate-calibration``. :func:`calibrate_refusal` runs every
prompt once to its first response position, sweeps a logit bias on the refusal
tokens (or a threshold on their probability, :mod:`attribution.calibration`), and
reports per category the refusal rate on the harmful prompts (TPR) and on their
harmless controls (FPR) along the sweep. For each category's target rate on its
harmful prompts it finds the setting that reaches it (interpolated on the sweep,
then refined to the middle of the step nearest the target), then *verifies* it by
generation: greedy continuations under the setting (:func:`calibrated_decode`,
the generation hook) judged by :mod:`circuits.behaviour`. Both rates are reported,
the first-token one and the judged one; they differ where a refusal token opens a
compliant reply ("I'd be glad to...") or a refusal starts with another token.

A *dedicated* refusal token (``dedicated_token="[refuse]"``, for models trained
with one) replaces the refusal token set by that one token; it must be a single
token of the vocabulary, and it is stripped from a continuation's start before the
judge reads it (a judge must read what the model says, not the control token).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from tqdm.auto import tqdm

from attribution import calibration as cal
from attribution.refusal_tokens import (
    REFUSAL_WORDS,
    dedicated_token_id,
    refusal_token_ids,
    token_strings,
)
from attribution.result import Result
from circuits.behaviour import Judge, classify
from patching.chat import ChatPrompt, format_chat
from patching.decoding import FirstTokenEdit, ForceAbove, LogitBias, greedy_decode
from patching.errors import OptionError, TooFewPairsError
from patching.executor import run
from patching.model import HookedModel
from patching.prompts import PromptPair

MIN_PROMPTS = 5  # per side and category: below it a rate moves in steps of 20 points or more
DEFAULT_GEN_TOKENS = 8
DEFAULT_CV_FOLDS = 5  # folds of pairs for the held-out TPR/FPR of a chosen setting
UNCATEGORISED = "uncategorised"

__all__ = [
    "MIN_PROMPTS",
    "CategoryCalibration",
    "RefusalCalibration",
    "by_category",
    "calibrate_refusal",
    "calibrated_decode",
    "heldout_rates",
]


@dataclass
class CategoryCalibration(Result):
    """One category's rate curves along the sweep, its setting, and its verification.

    Rates are shares of prompts in [0, 1]. ``harmful_rate`` (TPR) and ``harmless_rate``
    (FPR) are first-token rates, ``*_expected`` the mean refusal-token probability when
    sampling (:mod:`attribution.calibration`). ``setting`` is the bias (logits) or
    threshold (probability) chosen for ``target``; NaN without a target. ``*_at``
    are the first-token rates at ``setting``, ``*_generated`` the shares of greedy
    continuations judged refusals under it (NaN when not verified). ``*_at`` are
    in-sample (the setting was chosen on the same harmful prompts); ``*_heldout`` are the
    cross-validated first-token TPR/FPR: pairs in ``cv_folds`` seeded folds, each fold's
    prompts called at the setting chosen (the same way) on the other folds' harmful
    prompts, pooled over folds (NaN without a target).
    """

    category: str
    n_harmful: int
    n_harmless: int
    harmful_rate: np.ndarray
    harmless_rate: np.ndarray
    harmful_expected: np.ndarray
    harmless_expected: np.ndarray
    target: float
    setting_interpolated: float
    setting: float
    harmful_at: float
    harmless_at: float
    harmful_generated: float
    harmless_generated: float
    # Per prompt: the critical bias and refusal log-odds at the first response position,
    # and the judged class and text of each greedy continuation under the setting.
    harmful_critical: np.ndarray = field(metadata={"group": "per_prompt"})
    harmless_critical: np.ndarray = field(metadata={"group": "per_prompt"})
    harmful_score: np.ndarray = field(metadata={"group": "per_prompt"})
    harmless_score: np.ndarray = field(metadata={"group": "per_prompt"})
    harmful_class: list[str] = field(default_factory=list, metadata={"group": "per_prompt"})
    harmless_class: list[str] = field(default_factory=list, metadata={"group": "per_prompt"})
    harmful_text: list[str] = field(default_factory=list, metadata={"group": "per_prompt"})
    harmless_text: list[str] = field(default_factory=list, metadata={"group": "per_prompt"})
    # Held out: each fold of pairs called at the setting chosen on the other folds.
    harmful_heldout: float = math.nan
    harmless_heldout: float = math.nan
    cv_folds: int = 0

    def stats(self, side: str) -> cal.FirstTokenStats:
        """The first-token numbers of ``side`` (``"harmful"`` or ``"harmless"``)."""
        return cal.FirstTokenStats(
            critical=getattr(self, f"{side}_critical"), score=getattr(self, f"{side}_score")
        )


@dataclass
class RefusalCalibration(Result):
    """Per-category refusal calibration: the curves, the settings, their verification.

    ``mode`` is ``"bias"`` (``sweep`` and settings in logits added to the refusal
    tokens) or ``"threshold"`` (probabilities). ``biases`` maps each category with a
    target to its setting; :meth:`edits` gives the generation hook's per-prompt edits
    (:func:`calibrated_decode` applies them).
    """

    model: str
    mode: str
    refusal_ids: list[int]
    refusal_tokens: list[str]
    dedicated: str | None
    sweep: np.ndarray
    categories: list[CategoryCalibration]
    gen_tokens: int

    @property
    def biases(self) -> dict[str, float]:
        """Each targeted category's setting (a bias in logits, or a threshold)."""
        return {c.category: c.setting for c in self.categories if not math.isnan(c.setting)}

    def category(self, name: str) -> CategoryCalibration:
        for c in self.categories:
            if c.category == name:
                return c
        raise KeyError(f"no category {name!r}; the calibration has {self.names}")

    @property
    def names(self) -> list[str]:
        return [c.category for c in self.categories]

    def edit(self, category: str | None) -> FirstTokenEdit | None:
        """The first-token edit of one category (``None``: no setting, the model as is)."""
        setting = self.biases.get(category if category is not None else UNCATEGORISED)
        if setting is None:
            return None
        ids = tuple(self.refusal_ids)
        return LogitBias(ids, setting) if self.mode == "bias" else ForceAbove(ids, setting)

    def edits(self, categories: Sequence[str | None]) -> list[FirstTokenEdit | None]:
        """Per prompt, its category's edit: ``greedy_decode(..., first_token=edits)``."""
        return [self.edit(c) for c in categories]

    def derived(self) -> dict[str, Any]:
        return {
            "biases": self.biases,
            "summary": {
                c.category: {
                    "target": c.target,
                    "setting": c.setting,
                    "tpr_first_token": c.harmful_at,
                    "fpr_first_token": c.harmless_at,
                    "tpr_generated": c.harmful_generated,
                    "fpr_generated": c.harmless_generated,
                    "tpr_heldout": c.harmful_heldout,
                    "fpr_heldout": c.harmless_heldout,
                }
                for c in self.categories
            },
        }


def by_category(pairs: Sequence[PromptPair]) -> dict[str, list[PromptPair]]:
    """Pairs grouped by category, in order of first appearance (no category: ``uncategorised``)."""
    groups: dict[str, list[PromptPair]] = {}
    for pair in pairs:
        groups.setdefault(pair.category or UNCATEGORISED, []).append(pair)
    return groups


def check_targets(
    targets: float | Mapping[str, float] | None, categories: Sequence[str]
) -> dict[str, float]:
    """Each category's target rate; one number is every category's. Checked before any run."""
    if targets is None:
        return {}
    wanted = (
        {c: targets for c in categories} if isinstance(targets, (int, float)) else dict(targets)
    )
    unknown = sorted(set(wanted) - set(categories))
    if unknown:
        raise OptionError(
            f"target for unknown categor{'y' if len(unknown) == 1 else 'ies'} "
            f"{', '.join(unknown)}; the prompts' categories are {', '.join(categories)}"
        )
    for name, value in wanted.items():
        if not (isinstance(value, (int, float)) and 0.0 <= float(value) <= 1.0):
            raise OptionError(
                f"target {value!r} for {name} is not a refusal rate; pass a share of "
                f"prompts between 0 and 1 (e.g. 0.5)"
            )
    return {name: float(value) for name, value in wanted.items()}


def check_categories(prompts_by_category: Mapping[str, Sequence[PromptPair]]) -> None:
    if not prompts_by_category:
        raise TooFewPairsError("no prompts to calibrate on; pass at least one category of pairs")
    for name, pairs in prompts_by_category.items():
        if len(pairs) < MIN_PROMPTS:
            raise TooFewPairsError(
                f"category {name} has {len(pairs)} pair{'s' if len(pairs) != 1 else ''}; "
                f"calibration needs at least {MIN_PROMPTS} a category (a rate moves in "
                f"steps of 1/n); add pairs or leave the category out"
            )


def calibrate_refusal(
    model: HookedModel,
    prompts_by_category: Mapping[str, Sequence[PromptPair]],
    targets: float | Mapping[str, float] | None = 0.5,
    *,
    mode: cal.CalibrationMode = "bias",
    dedicated_token: str | None = None,
    refusal_words: Sequence[str] = REFUSAL_WORDS,
    sweep: Sequence[float] | np.ndarray | None = None,
    verify: bool = True,
    gen_tokens: int = DEFAULT_GEN_TOKENS,
    judge: Judge | None = None,
    batch_size: int = 16,
    progress: bool = False,
) -> RefusalCalibration:
    """The setting reaching each category's target refusal rate on its harmful prompts.

    Args:
        prompts_by_category: category -> pairs (harmful request, harmless control);
            :func:`by_category` groups a pair list.
        targets: one rate for every category, or ``{category: rate}`` (categories left
            out get curves only); rates are shares in [0, 1]; ``None``: curves only.
        mode: ``"bias"`` (logits added to the refusal tokens) or ``"threshold"`` (force a
            refusal token when their probability reaches it).
        dedicated_token: a model's own refusal token (e.g. ``"[refuse]"``), used instead
            of the refusal token set; it must be one token.
        sweep: the settings of the curves (default: spanning every prompt's step).
        verify: decode every prompt greedily under its category's setting and judge it.
    """
    if mode not in cal.MODES:
        raise OptionError(f"unknown calibration mode {mode!r}; use one of {', '.join(cal.MODES)}")
    check_categories(prompts_by_category)
    names = list(prompts_by_category)
    wanted = check_targets(targets, names)
    tok = model.tokenizer
    if dedicated_token is not None:
        refusal_ids = [dedicated_token_id(tok, dedicated_token)]
    else:
        refusal_ids = refusal_token_ids(tok, tuple(refusal_words))

    sides = {
        name: {
            "harmful": [format_chat(tok, p.harmful) for p in pairs],
            "harmless": [format_chat(tok, p.control) for p in pairs],
        }
        for name, pairs in prompts_by_category.items()
    }
    flat = [(n, s, p) for n in names for s in ("harmful", "harmless") for p in sides[n][s]]
    logits = run(model, [p for _, _, p in flat], readout=(-1,), batch_size=batch_size)[:, -1]
    stats_all = cal.first_token_stats(logits, refusal_ids)
    stats: dict[tuple[str, str], cal.FirstTokenStats] = {}
    start = 0
    for name in names:
        for side in ("harmful", "harmless"):
            end = start + len(sides[name][side])
            stats[name, side] = cal.FirstTokenStats(
                stats_all.critical[start:end], stats_all.score[start:end]
            )
            start = end
    grid = (
        np.asarray(sweep, dtype=np.float64)
        if sweep is not None
        else cal.default_sweep(stats_all.key(mode), mode)
    )
    if mode == "threshold" and not np.all((grid >= 0) & (grid <= 1)):
        raise OptionError("a threshold sweep is of probabilities; pass values between 0 and 1")

    categories = []
    for name in names:
        harmful, harmless = stats[name, "harmful"], stats[name, "harmless"]
        target = wanted.get(name, math.nan)
        rough = setting = tpr_cv = fpr_cv = math.nan
        n_folds = 0
        if not math.isnan(target):
            rough, setting = cal.setting_for_rate(harmful, mode, target, grid)
            tpr_cv, fpr_cv, n_folds = heldout_rates(harmful, harmless, mode, target, grid)
        categories.append(
            CategoryCalibration(
                category=name,
                n_harmful=len(harmful.critical),
                n_harmless=len(harmless.critical),
                harmful_rate=cal.rate(harmful, mode, grid),
                harmless_rate=cal.rate(harmless, mode, grid),
                harmful_expected=cal.expected_rate(harmful, mode, grid),
                harmless_expected=cal.expected_rate(harmless, mode, grid),
                target=target,
                setting_interpolated=rough,
                setting=setting,
                harmful_at=_at(harmful, mode, setting),
                harmless_at=_at(harmless, mode, setting),
                harmful_generated=math.nan,
                harmless_generated=math.nan,
                harmful_critical=harmful.critical,
                harmless_critical=harmless.critical,
                harmful_score=harmful.score,
                harmless_score=harmless.score,
                harmful_heldout=tpr_cv,
                harmless_heldout=fpr_cv,
                cv_folds=n_folds,
            )
        )
    result = RefusalCalibration(
        model=model.name,
        mode=mode,
        refusal_ids=refusal_ids,
        refusal_tokens=token_strings(tok, refusal_ids),
        dedicated=dedicated_token,
        sweep=grid,
        categories=categories,
        gen_tokens=gen_tokens,
    )
    if verify:
        _verify(model, result, sides, gen_tokens, judge, batch_size, progress)
    return result


def heldout_rates(
    harmful: cal.FirstTokenStats,
    harmless: cal.FirstTokenStats,
    mode: cal.CalibrationMode,
    target: float,
    grid: np.ndarray,
    *,
    folds: int = DEFAULT_CV_FOLDS,
    seed: int = 0,
) -> tuple[float, float, int]:
    """Cross-validated first-token (TPR, FPR) of the setting for ``target``, and the folds.

    Pair ``i`` (harmful ``i`` with its control ``i``) falls in one of ``min(folds, n)``
    seeded folds; each fold is called at the setting :func:`setting_for_rate
    <attribution.calibration.setting_for_rate>` picks on the other folds' harmful prompts.
    """
    n = len(harmful.critical)
    k = min(folds, n)
    fold = np.empty(n, dtype=np.int64)
    for j, part in enumerate(np.array_split(np.random.default_rng(seed).permutation(n), k)):
        fold[part] = j
    refused = {"harmful": 0.0, "harmless": 0.0}
    for j in range(k):
        fit, held = fold != j, fold == j
        _, setting = cal.setting_for_rate(
            cal.FirstTokenStats(harmful.critical[fit], harmful.score[fit]), mode, target, grid
        )
        for side, st in (("harmful", harmful), ("harmless", harmless)):
            sub = cal.FirstTokenStats(st.critical[held], st.score[held])
            refused[side] += float(cal.rate(sub, mode, setting)[0]) * int(held.sum())
    return refused["harmful"] / n, refused["harmless"] / n, k


def _at(stats: cal.FirstTokenStats, mode: cal.CalibrationMode, setting: float) -> float:
    return math.nan if math.isnan(setting) else float(cal.rate(stats, mode, setting)[0])


def _verify(
    model: HookedModel,
    result: RefusalCalibration,
    sides: dict[str, dict[str, list[ChatPrompt]]],
    gen_tokens: int,
    judge: Judge | None,
    batch_size: int,
    progress: bool,
) -> None:
    """Judge greedy continuations under each targeted category's setting (in place).

    Every targeted prompt decodes in one batched call, each under its own category's edit.
    """
    targeted = [c for c in result.categories if not math.isnan(c.setting)]
    groups = [(c, side) for c in targeted for side in ("harmful", "harmless")]
    prompts = [p for c, side in groups for p in sides[c.category][side]]
    categories = [c.category for c, side in groups for _ in sides[c.category][side]]
    texts: list[str] = []
    chunk = max(batch_size, 1) * 4  # progress in chunks; each chunk is still batched
    starts = range(0, len(prompts), chunk)
    for start in tqdm(starts, desc="verify by generation", unit="chunk", disable=not progress):
        texts += calibrated_continuations(
            model,
            prompts[start : start + chunk],
            categories[start : start + chunk],
            result,
            gen_tokens,
            batch_size,
        )
    labels = classify(texts, judge)
    start = 0
    for entry, side in groups:
        end = start + len(sides[entry.category][side])
        setattr(entry, f"{side}_class", labels[start:end])
        setattr(entry, f"{side}_text", texts[start:end])
        refused = sum(1 for x in labels[start:end] if x == "refusal") / (end - start)
        setattr(entry, f"{side}_generated", refused)
        start = end


def calibrated_decode(
    model: HookedModel,
    prompts: Sequence[ChatPrompt],
    categories: Sequence[str | None],
    calibration: RefusalCalibration,
    n_tokens: int = DEFAULT_GEN_TOKENS,
    batch_size: int = 16,
) -> list[list[int]]:
    """The generation hook: greedy token ids with each prompt's category's setting applied
    at the first response position only; a dedicated refusal token opening a continuation
    is stripped (categories without a setting decode as the model does)."""
    if len(categories) != len(prompts):
        raise ValueError(f"{len(categories)} categories for {len(prompts)} prompts")
    ids = greedy_decode(
        model, prompts, n_tokens, batch_size=batch_size, first_token=calibration.edits(categories)
    )
    if calibration.dedicated is None:
        return ids
    dedicated = calibration.refusal_ids[0]
    return [row[1:] if row and row[0] == dedicated else row for row in ids]


def calibrated_continuations(
    model: HookedModel,
    prompts: Sequence[ChatPrompt],
    categories: Sequence[str | None],
    calibration: RefusalCalibration,
    n_tokens: int = DEFAULT_GEN_TOKENS,
    batch_size: int = 16,
) -> list[str]:
    """:func:`calibrated_decode` as text (special tokens skipped), what a judge reads."""
    ids = calibrated_decode(model, prompts, categories, calibration, n_tokens, batch_size)
    tok = model.tokenizer
    return [str(tok.decode(row, skip_special_tokens=True)).strip() for row in ids]
