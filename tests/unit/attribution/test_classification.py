"""ROC, AUC, thresholds and confusion metrics, each against an independent computation."""

from __future__ import annotations

import itertools

import numpy as np
import pytest

from attribution.classification import (
    best_threshold,
    classifier_metrics,
    roc_auc,
    roc_curve,
)


def mann_whitney_auc(scores: np.ndarray, labels: np.ndarray) -> float:
    """P(positive > negative) + P(tie) / 2 over every positive-negative pair (U / (n+ n-))."""
    pos, neg = scores[labels], scores[~labels]
    u = sum(1.0 if p > n else 0.5 if p == n else 0.0 for p in pos for n in neg)
    return u / (len(pos) * len(neg))


CASES = [
    # hand-made: perfect, inverted, all tied, ties across classes, chance-like
    ([0.9, 0.8, 0.3, 0.1], [1, 1, 0, 0], 1.0),
    ([0.1, 0.3, 0.8, 0.9], [1, 1, 0, 0], 0.0),
    ([0.5, 0.5, 0.5, 0.5], [1, 0, 1, 0], 0.5),
    ([0.9, 0.5, 0.5, 0.1], [1, 1, 0, 0], 0.875),  # one tied pair counts 1/2 of 4 pairs
    ([0.2, 0.7, 0.4, 0.7, 0.1, 0.4], [1, 0, 1, 1, 0, 0], None),
]


@pytest.mark.parametrize(("scores", "labels", "expected"), CASES)
def test_auc_equals_mann_whitney_u(scores, labels, expected) -> None:
    s, y = np.array(scores, float), np.array(labels, bool)
    reference = mann_whitney_auc(s, y)
    if expected is not None:
        assert reference == pytest.approx(expected)
    assert roc_auc(s, y) == pytest.approx(reference, abs=1e-12)


def test_auc_on_random_scores_with_many_ties() -> None:
    rng = np.random.default_rng(3)
    for _ in range(20):
        n = int(rng.integers(4, 40))
        s = rng.integers(0, 5, n).astype(float)  # heavy ties
        y = rng.random(n) < 0.4
        y[0], y[1] = True, False
        assert roc_auc(s, y) == pytest.approx(mann_whitney_auc(s, y), abs=1e-12)


def test_roc_points_are_the_rates_at_each_threshold() -> None:
    s = np.array([0.2, 0.7, 0.4, 0.7, 0.1, 0.4])
    y = np.array([1, 0, 1, 1, 0, 0], bool)
    curve = roc_curve(s, y)
    assert curve.fpr[0] == curve.tpr[0] == 0.0 and curve.fpr[-1] == curve.tpr[-1] == 1.0
    for fpr, tpr, t in zip(curve.fpr[1:], curve.tpr[1:], curve.thresholds[1:], strict=True):
        called = s >= t
        assert tpr == pytest.approx((called & y).sum() / y.sum())
        assert fpr == pytest.approx((called & ~y).sum() / (~y).sum())
    assert curve.thresholds[1:] == sorted(set(s.tolist()), reverse=True)


def test_auc_undefined_with_one_class_and_curve_refused() -> None:
    assert np.isnan(roc_auc(np.array([0.1, 0.2]), np.array([True, True])))
    with pytest.raises(ValueError, match="both classes"):
        roc_curve(np.array([0.1, 0.2]), np.array([False, False]))
    with pytest.raises(ValueError, match="NaN"):
        roc_auc(np.array([np.nan, 0.2]), np.array([True, False]))


def test_best_threshold_maximises_youden_j_by_brute_force() -> None:
    rng = np.random.default_rng(0)
    for _ in range(30):
        n = int(rng.integers(4, 25))
        s = np.round(rng.normal(size=n), 1)
        y = rng.random(n) < 0.5
        y[0], y[1] = True, False
        t = best_threshold(s, y)
        assert t not in set(s.tolist())

        def j(th: float, s: np.ndarray = s, y: np.ndarray = y) -> float:
            called = s >= th
            return called[y].mean() - called[~y].mean()

        candidates = [*s.tolist(), np.inf]
        assert j(t) == pytest.approx(max(j(c) for c in candidates))


def test_best_threshold_separates_separable_scores_at_the_gap_midpoint() -> None:
    s = np.array([-0.4, -0.2, 0.1, 0.5])
    y = np.array([False, False, True, True])
    assert best_threshold(s, y) == pytest.approx(-0.05)


def test_confusion_metrics_against_hand_counts() -> None:
    pred = np.array([1, 1, 0, 0, 1, 0, 1], bool)
    y = np.array([1, 0, 0, 1, 1, 0, 1], bool)
    m = classifier_metrics(pred, y)
    # tp: idx 0, 4, 6; fp: 1; tn: 2, 5; fn: 3
    assert (m.tp, m.fp, m.tn, m.fn) == (3, 1, 2, 1)
    assert m.accuracy == pytest.approx(5 / 7)
    assert m.precision == pytest.approx(3 / 4)
    assert m.recall == pytest.approx(3 / 4)
    assert m.f1 == pytest.approx(2 * (3 / 4) * (3 / 4) / (3 / 4 + 3 / 4))
    assert m.false_positive_rate == pytest.approx(1 / 3)
    assert m.positive_rate == pytest.approx(4 / 7)
    assert np.isnan(m.auc)


def test_f1_is_harmonic_mean_over_every_small_case() -> None:
    for bits in itertools.product([0, 1], repeat=6):
        pred = np.array(bits[:3], bool)
        y = np.array(bits[3:], bool)
        m = classifier_metrics(pred, y)
        tp = int((pred & y).sum())
        if tp:
            p, r = tp / pred.sum(), tp / y.sum()
            assert m.f1 == pytest.approx(2 * p * r / (p + r))
            assert m.f1 == pytest.approx(2 * tp / (pred.sum() + y.sum()))
        elif y.any():
            assert m.f1 == 0.0
        else:
            # No positives: recall, and so F1, undefined (a harmless-only group).
            assert np.isnan(m.f1) and np.isnan(m.recall)


def test_metrics_round_trip_through_json() -> None:
    m = classifier_metrics(
        np.array([1, 0, 1], bool), np.array([1, 0, 0], bool), np.array([0.9, 0.1, 0.6])
    )
    again = type(m).from_dict(m.to_dict())
    assert again.to_dict() == m.to_dict()
    assert m.to_dict()["f1"] == pytest.approx(2 / 3)
    assert m.auc == pytest.approx(1.0)


def test_f1_is_nan_for_a_group_without_positives() -> None:
    """A harmless-only group with false alarms: recall has no positives to find."""
    m = classifier_metrics(np.array([True, False, True]), np.array([False, False, False]))
    assert np.isnan(m.recall) and np.isnan(m.f1)
    assert m.false_positive_rate == pytest.approx(2 / 3)
    assert m.to_dict()["f1"] is None  # JSON: null, never 0
