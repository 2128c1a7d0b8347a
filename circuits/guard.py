"""Latent Guard evaluated on labelled prompts, beside what the model itself does.

:class:`attribution.latent_guard.LatentGuard` reads the harmfulness belief at
``t_inst``. This module measures it as a classifier (harmful = positive) on
labelled prompts, in groups: all prompts, each source file, each jailbreak
framing (a pair file's ``variant``), and XSTest's safe prompts that merely sound
harmful (``over-refusal``: only false positives are possible there). Beside the
guard, the same metrics for

- the **refusal belief**: the same cosine read at ``t_post_inst``, where the
  refusal is written (a :class:`LatentGuard` with ``position="t_post_inst"``,
  fitted on the same prompts);
- the **model's own behaviour**: a greedy continuation judged a refusal counts
  as "harmful" (:mod:`circuits.behaviour`), and its refusal score at the first
  response position (:func:`attribution.metrics.refusal_score`) as the score of
  its ROC curve.

:func:`cross_fit_guard` fits on part of a pair file and scores the rest (pairs
assigned to seeded folds; a pair's harmful and control prompts stay in one
fold), so every pair is scored by a guard that never saw it; jailbreak-framed
pairs are scored by the guard of the fold their index falls in (pair ``i`` of a
reframed file is the reframing of pair ``i``, as in the organism's files).
:func:`evaluate_guard` scores labelled prompts with a guard fitted elsewhere.
Both read each prompt's residuals in one pass (both positions), then fit and score
on those. Definitions: ``docs/science.md#latent-guard``.
"""

from __future__ import annotations

import csv
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from jaxtyping import Float
from torch import Tensor
from tqdm.auto import tqdm

from attribution.classification import (
    ClassifierMetrics,
    RocCurve,
    classifier_metrics,
    roc_auc,
    roc_curve,
)
from attribution.latent_guard import (
    LatentGuard,
    check_layers,
    default_layers,
    held_out,
    residuals_at,
)
from attribution.metrics import refusal_score
from attribution.refusal_tokens import refusal_token_ids
from attribution.result import Result
from circuits.behaviour import Judge, classify, greedy_continuations
from patching.chat import ChatPrompt, format_chat
from patching.errors import OptionError, PairError, PromptFileError, TooFewPairsError
from patching.executor import run
from patching.model import HookedModel
from patching.prompts import PromptPair, read_pairs
from patching.prompts.readers import read_prompts

__all__ = [
    "DEFAULT_FOLDS",
    "GroupMetrics",
    "GuardEvaluation",
    "LabelledPrompt",
    "align_framed",
    "cross_fit_guard",
    "evaluate_guard",
    "labelled_pairs",
    "read_labelled",
]

DEFAULT_FOLDS = 5
OVER_REFUSAL = "over-refusal"


@dataclass(frozen=True)
class LabelledPrompt:
    """A prompt with its label (``harmful``), its source and jailbreak framing.

    ``over_refusal`` marks a safe prompt written to sound harmful (XSTest's safe types).
    """

    text: str
    harmful: bool
    source: str
    framing: str | None = None
    category: str | None = None
    over_refusal: bool = False


def labelled_pairs(pairs: Sequence[PromptPair], source: str) -> list[LabelledPrompt]:
    """Each pair's harmful then control prompt, labelled, framed by the pair's ``variant``."""
    out = []
    for p in pairs:
        out.append(LabelledPrompt(p.harmful, True, source, p.variant, p.category))
        out.append(LabelledPrompt(p.control, False, source, p.variant, p.category))
    return out


def _csv_header(path: Path) -> list[str]:
    try:
        with path.open(encoding="utf-8", newline="") as f:
            return [c.strip() for c in next(csv.reader(f), [])]
    except (OSError, UnicodeDecodeError):
        return []  # the readers give the precise error


def read_labelled(path: str | Path) -> list[LabelledPrompt]:
    """Labelled prompts from a pair file (JSONL, or CSV with ``harmful,control``) or a public set.

    Public sets are read by :func:`patching.prompts.readers.read_prompts` (AdvBench,
    HarmBench, JailbreakBench: harmful; Alpaca: harmless; XSTest: both, its safe
    prompts marked ``over_refusal``). The source is the file's stem.

    Raises:
        PromptFileError: unreadable, or a prompt without a harmful/harmless label.
    """
    p = Path(path).expanduser()
    header = _csv_header(p) if p.suffix.lower() == ".csv" else []
    if p.suffix.lower() == ".jsonl" or {"harmful", "control"} <= set(header):
        return labelled_pairs(read_pairs(p), p.stem)
    xstest = {"prompt", "type"} <= set(header)
    out = []
    for prompt in read_prompts(p):
        if prompt.harmful is None:
            raise PromptFileError(
                f"{p}: {prompt.text[:40]!r} has no harmful/harmless label; use a labelled set"
            )
        over = xstest and not prompt.harmful
        out.append(LabelledPrompt(prompt.text, prompt.harmful, p.stem, None, prompt.category, over))
    return out


# --------------------------------------------------------------------------- results


@dataclass
class GroupMetrics(Result):
    """The three classifiers on one group of prompts (harmful = positive).

    ``kind`` is ``"all"``, ``"source"``, ``"framing"`` or ``"over-refusal"``.
    ``model`` counts a judged refusal as a positive and its AUC is the refusal
    score's; ``belief`` is the cosine read at ``t_post_inst``.
    """

    kind: str
    name: str
    guard: ClassifierMetrics
    belief: ClassifierMetrics | None = None
    model: ClassifierMetrics | None = None


@dataclass
class FoldMetrics(Result):
    """One cross-fitting fold: fitted on the other folds' pairs, scored on its own."""

    fold: int
    n_fit_pairs: int
    threshold: float
    guard: ClassifierMetrics
    belief: ClassifierMetrics


@dataclass
class GuardEvaluation(Result):
    """Latent Guard, the refusal belief and the model's behaviour on labelled prompts.

    ``groups[0]`` is the headline: the cross-fitted pairs (``mode="cross-fit"``) or
    every prompt. ``guard`` holds the guard's settings (:meth:`LatentGuard.metadata`;
    cross-fitted, the folds' shared settings, ``threshold`` ``None`` when fitted per
    fold). Per prompt (``per_prompt`` in JSON): text, label, source, framing, fold (-1:
    scored by a guard fitted on all pairs or loaded), the scores, the guard's call, the
    model's refusal score, judged behaviour and response. ``layer_auc``: per reading
    (``guard``, ``belief``), the headline prompts' ROC AUC of each layer's term of the
    score alone (a one-layer guard; out of fold when cross-fitted), in the order of
    ``guard["layers"]``.
    """

    model_name: str = field(metadata={"key": "model"})
    mode: str
    guard: dict[str, Any]
    groups: list[GroupMetrics]
    folds: list[FoldMetrics]
    roc: dict[str, RocCurve]
    text: list[str] = field(metadata={"group": "per_prompt"})
    harmful: list[bool] = field(metadata={"group": "per_prompt"})
    source: list[str] = field(metadata={"group": "per_prompt"})
    framing: list[str | None] = field(metadata={"group": "per_prompt"})
    fold: list[int] = field(metadata={"group": "per_prompt"})
    guard_score: list[float] = field(metadata={"group": "per_prompt"})
    guard_call: list[bool] = field(metadata={"group": "per_prompt"})
    belief_score: list[float] | None = field(default=None, metadata={"group": "per_prompt"})
    refusal_score: list[float] | None = field(default=None, metadata={"group": "per_prompt"})
    behaviour: list[str] | None = field(default=None, metadata={"group": "per_prompt"})
    response: list[str] | None = field(default=None, metadata={"group": "per_prompt"})
    layer_auc: dict[str, list[float]] = field(default_factory=dict)

    @property
    def headline(self) -> GroupMetrics:
        return self.groups[0]

    def group(self, kind: str, name: str) -> GroupMetrics:
        """The group ``(kind, name)``, e.g. ``("framing", "jailbreak")``."""
        for g in self.groups:
            if (g.kind, g.name) == (kind, name):
                return g
        have = ", ".join(f"{g.kind}:{g.name}" for g in self.groups)
        raise KeyError(f"no group {kind}:{name}; the groups are {have}")

    def derived(self) -> dict[str, Any]:
        head = self.headline
        out: dict[str, Any] = {
            "accuracy": head.guard.accuracy,
            "f1": head.guard.f1,
            "roc_auc": head.guard.auc,
        }
        if head.belief is not None:
            out["belief_roc_auc"] = head.belief.auc
        if head.model is not None:
            out["model_refusal_rate_harmful"] = head.model.recall
            out["model_refusal_rate_harmless"] = head.model.false_positive_rate
            out["model_refusal_score_roc_auc"] = head.model.auc
        return out


# --------------------------------------------------------------------------- the model's side


@dataclass
class Readings:
    """What one pass per prompt reads off the model (residuals at both positions, behaviour)."""

    t_inst: Float[Tensor, "prompt layer d_model"]
    t_post_inst: Float[Tensor, "prompt layer d_model"]
    refusal_score: np.ndarray | None
    behaviour: list[str] | None
    response: list[str] | None


def read_model(
    model: HookedModel,
    prompts: Sequence[LabelledPrompt],
    layers: Sequence[int],
    *,
    behaviour: bool = True,
    gen_tokens: int = 8,
    judge: Judge | None = None,
    batch_size: int = 16,
    progress: bool = False,
) -> Readings:
    """Residuals at ``t_inst`` and ``t_post_inst`` (one pass); with ``behaviour``, the refusal
    score (a second pass) and greedy responses, judged."""
    chats: list[ChatPrompt] = [format_chat(model.tokenizer, p.text) for p in prompts]
    acts = residuals_at(model, chats, ["t_inst", "t_post_inst"], layers, batch_size, progress)
    scores = classes = texts = None
    if behaviour:
        ids = refusal_token_ids(model.tokenizer)
        with torch.no_grad():
            logits = run(model, chats, batch_size=batch_size)[:, -1]
        scores = refusal_score(logits, ids).cpu().numpy()
        texts = greedy_continuations(model, chats, gen_tokens, batch_size=batch_size)
        classes = classify(texts, judge)
    return Readings(acts[:, 0], acts[:, 1], scores, classes, texts)


# --------------------------------------------------------------------------- evaluation


def _metrics(
    scores: np.ndarray, calls: np.ndarray, labels: np.ndarray, mask: np.ndarray
) -> ClassifierMetrics:
    return classifier_metrics(calls[mask], labels[mask], scores[mask])


def _groups(
    prompts: Sequence[LabelledPrompt],
    guard: tuple[np.ndarray, np.ndarray],
    belief: tuple[np.ndarray, np.ndarray] | None,
    model: tuple[np.ndarray, np.ndarray] | None,
    headline: str | None,
) -> list[GroupMetrics]:
    labels = np.array([p.harmful for p in prompts], dtype=bool)
    masks: list[tuple[str, str, np.ndarray]] = []
    if headline is not None:
        masks.append(("source", headline, np.array([p.source == headline for p in prompts])))
    masks.append(("all", "all", np.ones(len(prompts), dtype=bool)))
    for source in dict.fromkeys(p.source for p in prompts):
        if source != headline:
            masks.append(("source", source, np.array([p.source == source for p in prompts])))
    for framing in dict.fromkeys(p.framing for p in prompts if p.framing is not None):
        masks.append(("framing", framing, np.array([p.framing == framing for p in prompts])))
    over = np.array([p.over_refusal for p in prompts], dtype=bool)
    if over.any():
        masks.append((OVER_REFUSAL, "safe prompts that sound harmful", over))
    return [
        GroupMetrics(
            kind=kind,
            name=name,
            guard=_metrics(*guard, labels, mask),
            belief=_metrics(*belief, labels, mask) if belief is not None else None,
            model=_metrics(*model, labels, mask) if model is not None else None,
        )
        for kind, name, mask in masks
    ]


def _rocs(labels: np.ndarray, **scores: np.ndarray | None) -> dict[str, RocCurve]:
    if labels.all() or not labels.any():
        return {}
    return {name: roc_curve(s, labels) for name, s in scores.items() if s is not None}


def _assemble(
    model: HookedModel,
    mode: str,
    guard: dict[str, Any],
    prompts: Sequence[LabelledPrompt],
    reads: Readings,
    scores: tuple[np.ndarray, np.ndarray],
    belief: tuple[np.ndarray, np.ndarray] | None,
    folds: list[FoldMetrics],
    fold_of: Sequence[int],
    headline: str | None,
    terms: dict[str, np.ndarray],
) -> GuardEvaluation:
    refusal = None
    if reads.refusal_score is not None and reads.behaviour is not None:
        refused = np.array([b == "refusal" for b in reads.behaviour], dtype=bool)
        refusal = (reads.refusal_score, refused)
    labels = np.array([p.harmful for p in prompts], dtype=bool)
    head = np.array([headline is None or p.source == headline for p in prompts])
    both = bool(labels[head].any() and not labels[head].all())
    layer_auc = {
        name: [
            roc_auc(t[head, j], labels[head]) if both else float("nan") for j in range(t.shape[1])
        ]
        for name, t in terms.items()
    }
    return GuardEvaluation(
        model_name=model.name,
        mode=mode,
        guard=guard,
        groups=_groups(prompts, scores, belief, refusal, headline),
        folds=folds,
        roc=_rocs(
            labels[head],
            guard=scores[0][head],
            belief=belief[0][head] if belief is not None else None,
            refusal_score=reads.refusal_score[head] if reads.refusal_score is not None else None,
        ),
        text=[p.text for p in prompts],
        harmful=labels.tolist(),
        source=[p.source for p in prompts],
        framing=[p.framing for p in prompts],
        fold=list(fold_of),
        guard_score=scores[0].tolist(),
        guard_call=scores[1].tolist(),
        belief_score=belief[0].tolist() if belief is not None else None,
        refusal_score=reads.refusal_score.tolist() if reads.refusal_score is not None else None,
        behaviour=reads.behaviour,
        response=reads.response,
        layer_auc=layer_auc,
    )


def check_folds(
    n_pairs: int, folds: int, threshold: str = "zero", validation: float = 0.25
) -> None:
    """Refuse fold counts that leave a fold empty or a fit with too few prompts per class."""
    if folds < 2:
        raise OptionError(f"--folds {folds}: cross-fitting needs at least 2 folds; pass 2 or more")
    if n_pairs < folds:
        raise TooFewPairsError(
            f"{n_pairs} pairs cannot fill {folds} folds; add pairs or pass "
            f"--folds {max(2, n_pairs)}"
        )
    smallest_fit = n_pairs - -(-n_pairs // folds)  # pairs left when the largest fold is held out
    held_out(smallest_fit, smallest_fit, threshold, validation)


def fold_assignment(n_pairs: int, folds: int, seed: int) -> np.ndarray:
    """Each pair's fold: a seeded permutation cut into ``folds`` near-equal parts."""
    order = np.random.default_rng(seed).permutation(n_pairs)
    fold = np.empty(n_pairs, dtype=np.int64)
    for k, part in enumerate(np.array_split(order, folds)):
        fold[part] = k
    return fold


def _words(text: str) -> list[str]:
    return "".join(c.lower() if c.isalnum() else " " for c in text).split()


def align_framed(pairs: Sequence[PromptPair], framed: Sequence[PromptPair]) -> list[PromptPair]:
    """``framed`` reordered so that entry ``i`` reframes ``pairs[i]``'s request.

    Each plain pair is matched to the framed pair sharing the longest runs of words with
    it (harmful with harmful plus control with control; case and punctuation ignored).
    The harmful run must cover at least half the plain request's words; the best match
    must be unique (a tie that includes the same position keeps that position); and the
    matches must be one to one. Anything else is a :class:`~patching.errors.PairError`:
    a framed pair scored by the fold of a plain pair it does not reframe could leak that
    pair's fit.
    """
    from difflib import SequenceMatcher

    if len(framed) != len(pairs):
        raise PairError(
            f"{len(framed)} jailbreak-framed pairs for {len(pairs)} plain pairs; framed pair "
            f"i must reframe plain pair i: pass a framed file of the same requests (same --n)"
        )

    def run_length(a: list[str], b: list[str]) -> int:
        return SequenceMatcher(None, a, b, autojunk=False).find_longest_match().size

    framed_words = [(_words(p.harmful), _words(p.control)) for p in framed]
    order = []
    for i, pair in enumerate(pairs):
        harmful, control = _words(pair.harmful), _words(pair.control)
        runs = [(run_length(harmful, h), run_length(control, c)) for h, c in framed_words]
        totals = np.array([a + b for a, b in runs])
        tied = np.flatnonzero(totals == totals.max())
        best = i if i in tied else int(tied[0])
        if 2 * runs[best][0] < len(harmful) or (len(tied) > 1 and i not in tied):
            raise PairError(
                f"plain pair {i} ({pair.harmful!r}) has no unique jailbreak-framed twin; "
                f"pass a framed file that rewrites the same requests"
            )
        order.append(best)
    if len(set(order)) != len(order):
        raise PairError(
            "two plain pairs match the same jailbreak-framed pair; pass a framed file with "
            "one rewrite of each plain request"
        )
    return [framed[j] for j in order]


def cross_fit_guard(
    model: HookedModel,
    pairs: Sequence[PromptPair],
    *,
    jailbreak: Sequence[PromptPair] = (),
    folds: int = DEFAULT_FOLDS,
    layers: Sequence[int] | None = None,
    center: bool = False,
    threshold: str = "zero",
    validation: float = 0.25,
    seed: int = 0,
    source: str = "pairs",
    jailbreak_source: str = "jailbreak",
    behaviour: bool = True,
    gen_tokens: int = 8,
    judge: Judge | None = None,
    batch_size: int = 16,
    progress: bool = False,
) -> GuardEvaluation:
    """Fit on ``folds - 1`` folds of ``pairs``, score the held-out fold, for every fold.

    The guard (``t_inst``) and the refusal belief (``t_post_inst``) are fitted on the
    same prompts of each fold. ``jailbreak`` pairs are never fitted on; each is matched
    to the plain pair whose request it reframes (:func:`align_framed`) and scored by that
    pair's fold (module docstring).
    """
    check_folds(len(pairs), folds, threshold, validation)
    if jailbreak:
        jailbreak = align_framed(pairs, jailbreak)
    chosen = check_layers(
        default_layers(model.n_layers) if layers is None else layers, model.n_layers
    )
    prompts = labelled_pairs(pairs, source) + labelled_pairs(jailbreak, jailbreak_source)
    reads = read_model(
        model, prompts, chosen, behaviour=behaviour, gen_tokens=gen_tokens, judge=judge,
        batch_size=batch_size, progress=progress,
    )  # fmt: skip
    pair_fold = fold_assignment(len(pairs), folds, seed)
    n = len(pairs)
    fold_of = np.array(
        [pair_fold[i // 2] for i in range(2 * n)]
        + [pair_fold[j // 2] for j in range(2 * len(jailbreak))],
        dtype=np.int64,
    )
    labels = np.array([p.harmful for p in prompts], dtype=bool)
    fitted = np.arange(len(prompts)) < 2 * n
    g_score, g_call = np.zeros(len(prompts)), np.zeros(len(prompts), bool)
    b_score, b_call = np.zeros(len(prompts)), np.zeros(len(prompts), bool)
    terms = {name: np.zeros((len(prompts), len(chosen))) for name in ("guard", "belief")}
    rows = []
    record = {"name": model.name, "n_layers": model.n_layers, "d_model": model.d_model}
    for k in tqdm(range(folds), desc="cross-fit", unit="fold", disable=not progress):
        train = fitted & (fold_of != k)
        test = fold_of == k
        guards = []
        for acts, position in ((reads.t_inst, "t_inst"), (reads.t_post_inst, "t_post_inst")):
            g = LatentGuard.fit_activations(
                acts[train & labels], acts[train & ~labels], layers=chosen, position=position,
                center=center, threshold=threshold, validation=validation, seed=seed + k,
                model=record,
            )  # fmt: skip
            guards.append(g)
        for g, score, call, acts, term in (
            (guards[0], g_score, g_call, reads.t_inst, terms["guard"]),
            (guards[1], b_score, b_call, reads.t_post_inst, terms["belief"]),
        ):
            term[test] = g.layer_scores(acts[test])
            score[test] = term[test].mean(axis=1)
            call[test] = score[test] >= g.threshold
        own = test & fitted
        rows.append(
            FoldMetrics(
                fold=k,
                n_fit_pairs=int(train.sum()) // 2,
                threshold=guards[0].threshold,
                guard=classifier_metrics(g_call[own], labels[own], g_score[own]),
                belief=classifier_metrics(b_call[own], labels[own], b_score[own]),
            )
        )
    # One guard per fold: the settings they share (a fitted threshold is each fold's own).
    settings = {
        "kind": "latent_guard",
        "layers": chosen,
        "position": "t_inst",
        "center": center,
        "threshold_rule": threshold,
        "threshold": 0.0 if threshold == "zero" else None,
        "model": record,
    }
    return _assemble(
        model, "cross-fit", settings, prompts, reads, (g_score, g_call), (b_score, b_call), rows,
        fold_of.tolist(), source, terms,
    )  # fmt: skip


def evaluate_guard(
    model: HookedModel,
    guard: LatentGuard,
    prompts: Sequence[LabelledPrompt],
    *,
    belief: LatentGuard | None = None,
    behaviour: bool = True,
    gen_tokens: int = 8,
    judge: Judge | None = None,
    batch_size: int = 16,
    progress: bool = False,
    mode: str = "fitted",
) -> GuardEvaluation:
    """Score labelled ``prompts`` with a fitted ``guard`` (and ``belief`` at ``t_post_inst``).

    The guard must be fitted on ``model`` (:meth:`LatentGuard.attach` checks a loaded one).
    """
    if not prompts:
        raise PromptFileError("no labelled prompts to evaluate; give a pair or prompt file")
    if belief is not None and belief.position != "t_post_inst":
        raise OptionError("belief must be a guard read at t_post_inst (position='t_post_inst')")
    layers = guard.layers
    if belief is not None and belief.layers != layers:
        raise OptionError(f"belief layers {belief.layers} differ from the guard's {layers}")
    reads = read_model(
        model, prompts, layers, behaviour=behaviour, gen_tokens=gen_tokens, judge=judge,
        batch_size=batch_size, progress=progress,
    )  # fmt: skip
    at = {"t_inst": reads.t_inst, "t_post_inst": reads.t_post_inst}
    terms = {"guard": guard.layer_scores(at[guard.position])}
    score = terms["guard"].mean(axis=1)
    b = None
    if belief is not None:
        terms["belief"] = belief.layer_scores(reads.t_post_inst)
        b_score = terms["belief"].mean(axis=1)
        b = (b_score, b_score >= belief.threshold)
    return _assemble(
        model, mode, guard.metadata(), prompts, reads, (score, score >= guard.threshold), b, [],
        [-1] * len(prompts), None, terms,
    )  # fmt: skip
