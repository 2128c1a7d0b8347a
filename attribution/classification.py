"""Binary classification metrics: confusion counts, F1, the ROC curve and its area.

Harmful is the positive class everywhere in the toolkit. A classifier gives each
prompt a *score* (higher means more harmful) and a *prediction* (score at or
above a threshold). :func:`classifier_metrics` reports accuracy, precision,
recall and F1 of the predictions and the ROC AUC of the scores
(``docs/science.md#latent-guard``).

The ROC curve (:func:`roc_curve`) is computed from the sorted scores: one point
per distinct score, tied scores moving the curve diagonally, so its trapezoidal
area (:func:`roc_auc`) equals the probability that a random positive scores above
a random negative, ties counting one half (the Mann-Whitney U statistic divided
by ``n_pos * n_neg``). :func:`best_threshold` picks the threshold that maximises
TPR - FPR (Youden's J, balanced accuracy), robust to unequal class sizes.

A metric that does not exist for the data (precision with no positive
prediction, AUC with one class) is NaN, never 0 or 1.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
from jaxtyping import Bool, Float

from attribution.result import Result

__all__ = [
    "ClassifierMetrics",
    "RocCurve",
    "best_threshold",
    "classifier_metrics",
    "roc_auc",
    "roc_curve",
]


def _check(scores: np.ndarray, labels: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    s = np.asarray(scores, dtype=np.float64).reshape(-1)
    y = np.asarray(labels).reshape(-1)
    if s.shape != y.shape:
        raise ValueError(f"{s.size} scores for {y.size} labels; give one label per score")
    if not np.isfinite(s).all():
        raise ValueError("scores contain NaN or infinity; every prompt needs a finite score")
    return s, y.astype(bool)


@dataclass
class RocCurve(Result):
    """False- and true-positive rates at each threshold (descending), from (0, 0) to (1, 1).

    ``thresholds[i]`` is the score at or above which prompts are called positive to
    reach point ``i``; the first point's threshold is ``+inf`` (stored as ``null``).
    """

    fpr: list[float]
    tpr: list[float]
    thresholds: list[float]


def roc_curve(scores: Float[np.ndarray, " n"], labels: Bool[np.ndarray, " n"]) -> RocCurve:
    """The ROC curve of ``scores`` for ``labels`` (True = positive): one point per distinct score.

    Needs at least one positive and one negative.
    """
    s, y = _check(scores, labels)
    n_pos, n_neg = int(y.sum()), int((~y).sum())
    if n_pos == 0 or n_neg == 0:
        raise ValueError(
            f"a ROC curve needs both classes; got {n_pos} positive and {n_neg} negative prompts"
        )
    order = np.argsort(-s, kind="mergesort")
    s, y = s[order], y[order]
    # The last index of each run of equal scores: tied prompts cross the threshold together.
    ends = np.r_[np.nonzero(np.diff(s))[0], s.size - 1]
    tp = np.cumsum(y)[ends]
    fp = np.cumsum(~y)[ends]
    return RocCurve(
        fpr=[0.0, *(fp / n_neg).tolist()],
        tpr=[0.0, *(tp / n_pos).tolist()],
        thresholds=[float("inf"), *s[ends].tolist()],
    )


def roc_auc(scores: Float[np.ndarray, " n"], labels: Bool[np.ndarray, " n"]) -> float:
    """Area under the ROC curve (trapezoids); NaN when one class is missing."""
    s, y = _check(scores, labels)
    if y.all() or not y.any():
        return float("nan")
    curve = roc_curve(s, y)
    fpr, tpr = np.asarray(curve.fpr), np.asarray(curve.tpr)
    return float(np.sum(np.diff(fpr) * (tpr[1:] + tpr[:-1]) / 2))


def best_threshold(scores: Float[np.ndarray, " n"], labels: Bool[np.ndarray, " n"]) -> float:
    """The threshold with the largest TPR - FPR (predict positive at ``score >= threshold``).

    Among the distinct scores the best cut lies between two neighbours; the
    threshold is their midpoint (the lowest score minus 1 when every prompt is best
    called positive, the highest plus 1 when none is), so a score equal to one seen
    in fitting is never on the boundary. Ties in J go to the cut nearest the middle
    of the tied range.
    """
    s, y = _check(scores, labels)
    curve = roc_curve(s, y)
    j = np.asarray(curve.tpr) - np.asarray(curve.fpr)
    best = np.flatnonzero(j == j.max())
    k = int(best[len(best) // 2])
    cuts = np.unique(s)[::-1]  # descending; point k calls the top k distinct scores positive
    if k == 0:
        return float(cuts[0] + 1.0)
    if k == len(cuts):
        return float(cuts[-1] - 1.0)
    return float((cuts[k - 1] + cuts[k]) / 2)


def _ratio(num: int, den: int) -> float:
    return num / den if den else float("nan")


@dataclass
class ClassifierMetrics(Result):
    """One classifier on one set of prompts (harmful = positive).

    ``auc`` is the ROC AUC of the scores (NaN with one class, or when the
    classifier has predictions only, like the model's own refusals judged from
    text); the rest describe the predictions.
    """

    n: int
    n_positive: int
    tp: int
    fp: int
    tn: int
    fn: int
    auc: float

    @property
    def accuracy(self) -> float:
        return _ratio(self.tp + self.tn, self.n)

    @property
    def precision(self) -> float:
        return _ratio(self.tp, self.tp + self.fp)

    @property
    def recall(self) -> float:
        return _ratio(self.tp, self.tp + self.fn)

    @property
    def false_positive_rate(self) -> float:
        return _ratio(self.fp, self.fp + self.tn)

    @property
    def positive_rate(self) -> float:
        """Share of prompts called positive (for the model: its refusal rate)."""
        return _ratio(self.tp + self.fp, self.n)

    @property
    def f1(self) -> float:
        """Harmonic mean of precision and recall: NaN without positives (recall undefined,
        e.g. a group of harmless prompts only), 0 when positives exist but none is found."""
        if self.tp + self.fn == 0:
            return float("nan")
        if self.tp == 0:
            return 0.0
        p, r = self.precision, self.recall
        return 2 * p * r / (p + r)

    def derived(self) -> dict[str, Any]:
        return {
            "accuracy": self.accuracy,
            "precision": self.precision,
            "recall": self.recall,
            "f1": self.f1,
            "false_positive_rate": self.false_positive_rate,
            "positive_rate": self.positive_rate,
        }


def classifier_metrics(
    predictions: Bool[np.ndarray, " n"],
    labels: Bool[np.ndarray, " n"],
    scores: Float[np.ndarray, " n"] | None = None,
) -> ClassifierMetrics:
    """Confusion counts of ``predictions`` against ``labels``, and the AUC of ``scores``."""
    p = np.asarray(predictions, dtype=bool).reshape(-1)
    y = np.asarray(labels, dtype=bool).reshape(-1)
    if p.shape != y.shape:
        raise ValueError(f"{p.size} predictions for {y.size} labels; give one label per prompt")
    auc = roc_auc(scores, y) if scores is not None and y.size else float("nan")
    return ClassifierMetrics(
        n=int(y.size),
        n_positive=int(y.sum()),
        tp=int((p & y).sum()),
        fp=int((p & ~y).sum()),
        tn=int((~p & ~y).sum()),
        fn=int((~p & y).sum()),
        auc=auc,
    )
