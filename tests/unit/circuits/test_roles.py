"""The role rules on synthetic arrays whose answer is known (docs/science.md#roles)."""

from __future__ import annotations

import numpy as np
import pytest

from attribution.statistics import EffectStats
from circuits.cascade import CascadeResult, null_heads
from circuits.roles import (
    DropTest,
    amplifier_tests,
    gate_candidates,
    gate_checks,
    published_gate,
    select_amplifiers,
)

GAP = 2.0  # the pooled DLA gap, in logits


def _stats(effect: np.ndarray, q: np.ndarray) -> EffectStats:
    return EffectStats(effect, effect, effect, q, q, 24)


def _realistic() -> tuple[np.ndarray, np.ndarray, dict, list]:
    """Five amplifiers falling 10-25% of their contrast; a distractor louder than all of them.

    Every head's contrast moves by noise (sd 0.2% of the gap) under each of 15 random
    upstream knockouts; the gate's knockout adds the amplifiers' falls on top, and
    moves a direct refusal head (L11H1, the largest contrast) by 1.5% of itself.
    """
    rng = np.random.default_rng(0)
    contrast = np.zeros((12, 4))
    amps = [(7, 0), (8, 1), (9, 2), (10, 0), (11, 3)]
    falls = [0.1, 0.12, 0.15, 0.2, 0.25]
    for h, share in zip(amps, (0.12, 0.1, 0.15, 0.08, 0.1), strict=True):
        contrast[h] = share * GAP
    contrast[8, 3] = 0.4 * GAP  # distractor: large contrast, does not read the gate
    contrast[9, 0] = 0.005 * GAP  # too small to test
    contrast[11, 1] = 0.5 * GAP  # a direct refusal head, outside the gate's circuit
    noise = 0.002 * GAP
    nulls = {(layer, head): contrast + rng.normal(0, noise, contrast.shape)
             for layer in (3, 4, 5, 6) for head in range(4) if (layer, head) != (4, 1)}  # fmt: skip
    knocked = contrast + rng.normal(0, noise, contrast.shape)
    for h, fall in zip(amps, falls, strict=True):
        knocked[h] -= fall * contrast[h]
    knocked[11, 1] = contrast[11, 1] * (1 - 0.015)  # beyond the noise, but 1.5% of itself
    return contrast, knocked, nulls, amps


def test_amplifiers_fall_beyond_the_null_in_units_of_the_gap() -> None:
    contrast, knocked, nulls, amps = _realistic()
    tests = amplifier_tests(contrast, knocked, nulls, after_layer=4, gap=GAP, min_contrast=0.01)
    tested = {(t.layer, t.head) for t in tests}
    assert tested == {*amps, (8, 3), (11, 1)}  # (9, 0) carries 0.5% of the gap: not tested
    assert sorted(select_amplifiers(tests, alpha=0.05)) == amps
    # The direct head's fall is beyond the null; only the minimum fall keeps it out.
    direct = next(t for t in tests if (t.layer, t.head) == (11, 1))
    assert direct.p < 0.1 and direct.fall == pytest.approx(0.015)
    assert (11, 1) in select_amplifiers(tests, alpha=0.1, min_fall=0.01)
    t = next(t for t in tests if (t.layer, t.head) == (7, 0))
    # Independent: drop and null drops in gap units; only null heads before layer 7.
    assert t.contrast == pytest.approx(0.12) and t.drop == pytest.approx(
        (contrast[7, 0] - knocked[7, 0]) / GAP
    )
    upstream = [(contrast[7, 0] - k[7, 0]) / GAP for h, k in nulls.items() if h[0] < 7]
    assert t.n_null == len(upstream) == 15
    assert t.null_mean == pytest.approx(np.mean(upstream))
    assert t.z == pytest.approx((t.drop - np.mean(upstream)) / np.std(upstream, ddof=1))
    assert t.p == (1 + sum(d >= t.drop for d in upstream)) / (1 + len(upstream))


def test_a_drop_no_larger_than_the_nulls_is_no_amplifier() -> None:
    contrast, knocked, nulls, _ = _realistic()
    # The gate's knockout moves (7, 0) exactly as the third null head does.
    third = list(nulls)[2]
    knocked[7, 0] = nulls[third][7, 0]
    tests = amplifier_tests(contrast, knocked, nulls, after_layer=4, gap=GAP)
    assert (7, 0) not in select_amplifiers(tests, alpha=0.05)
    # A small null: p cannot reach alpha, so the drop must lie beyond every null drop.
    small = DropTest(layer=7, head=0, contrast=0.1, drop=0.03, null_drops=[0.0, 0.01, 0.03])
    assert small.p == pytest.approx(2 / 4) and not small.falls(0.05)
    beyond = DropTest(layer=7, head=0, contrast=0.1, drop=0.031, null_drops=[0.0, 0.01, 0.03])
    assert beyond.p == pytest.approx(1 / 4) and beyond.falls(0.05)
    assert not beyond.falls(0.05, floor=0.05)  # under the numerical floor
    assert not DropTest(layer=7, head=0, contrast=0.1, drop=0.5).falls(0.05)  # no null


def test_gate_at_a_few_percent_of_the_gap_is_found_above_the_minimum_effect() -> None:
    effect, q = np.zeros((8, 4)), np.ones((8, 4))
    effect[3, 2], q[3, 2] = 0.03, 0.0008  # 3% of the gap, significant
    effect[4, 0], q[4, 0] = 0.2, 0.5  # large but not significant
    effect[2, 1], q[2, 1] = np.nan, np.nan  # not measured
    shares = np.zeros((8, 4))
    necessity = _stats(effect, q)
    band = [2, 3, 4, 5]
    assert gate_candidates(necessity, shares, band, min_effect=0.01) == [(3, 2)]
    assert gate_candidates(necessity, shares, band, min_effect=0.05) == []
    shares[3, 2] = 0.02
    assert gate_candidates(necessity, shares, band, min_effect=0.01) == []


def test_gate_checks_say_which_criterion_each_head_failed() -> None:
    effect, q = np.zeros((8, 4)), np.ones((8, 4))
    effect[3, 2], q[3, 2] = 0.03, 0.001
    effect[4, 0], q[4, 0] = 0.2, 0.5
    effect[5, 1], q[5, 1] = 0.005, 0.001
    effect[2, 3], q[2, 3] = 0.1, 0.001
    effect[2, 1] = np.nan
    shares = np.zeros((8, 4))
    shares[2, 3] = 0.3
    nec = _stats(effect, q)
    checks = gate_checks(nec, nec, shares, [2, 3, 4, 5], {(3, 2): 0}, min_effect=0.01, k=4)
    failed = {c.label: c.failed for c in checks}
    assert failed == {
        "L4H0": ["significance"],
        "L2H3": ["DLA-dark"],
        "L3H2": ["amplifiers"],
        "L5H1": ["min effect"],
    }
    assert [c.label for c in checks] == ["L4H0", "L2H3", "L3H2", "L5H1"]  # by necessity
    again = gate_checks(nec, nec, shares, [2, 3, 4, 5], {(3, 2): 2}, [(3, 2)], min_effect=0.01)
    assert next(c for c in again if c.label == "L3H2").failed == []
    untried = gate_checks(nec, nec, shares, [2, 3, 4, 5], {}, min_effect=0.01)
    assert next(c for c in untried if c.label == "L3H2").failed == ["not tried"]


def test_published_gate_is_the_largest_necessity_plus_sufficiency() -> None:
    nec, suf = np.zeros((8, 4)), np.zeros((8, 4))
    nec[3, 2], suf[3, 2] = 0.08, 0.01  # largest necessity
    nec[4, 1], suf[4, 1] = 0.05, 0.06  # largest sum
    nec[5, 0], suf[5, 0] = 0.5, 0.5  # DLA-bright
    nec[2, 0], suf[2, 0] = 1.0, np.nan  # sufficiency not measured
    shares = np.zeros((8, 4))
    shares[5, 0] = 0.1
    q = np.zeros((8, 4))
    assert published_gate(_stats(nec, q), _stats(suf, q), shares, [2, 3, 4, 5]) == (4, 1)
    assert published_gate(_stats(nec * np.nan, q), _stats(suf, q), shares, [2]) is None
    assert published_gate(_stats(nec, q), _stats(suf, q), shares, [7]) is None  # all zero


def test_null_heads_share_their_draws_across_exclusions() -> None:
    band = [2, 3, 4, 5]
    one = null_heads(band, 4, [(3, 2)], 99, seed=0)
    assert len(one) == 15 and (3, 2) not in one  # the band has fewer than 99: all of them
    a = null_heads(band, 4, [(3, 2)], 6, seed=0)
    b = null_heads(band, 4, [(3, 2), *a[:2]], 6, seed=0)
    assert len(set(a) & set(b)) == 4  # the two excluded heads are replaced, the rest kept


def test_cascade_against_its_null_in_percent_and_in_gap_units() -> None:
    clean = np.zeros((4, 2))
    clean[3, 0], clean[3, 1] = 0.3, 0.1  # the amplifiers: 0.4 logits together
    r = CascadeResult(
        gate=[(1, 0)], kind="zero", clean=clean, knocked=clean * 0.8, amplifiers=[(3, 0), (3, 1)],
        effect=-20.0, null_heads=[(1, 1), (2, 0), (2, 1)], null_effects=[-1.0, 0.0, 1.0], gap=2.0,
    )  # fmt: skip
    assert r.p == 0.25 == r.min_p
    assert r.z == pytest.approx(-20.0)  # null mean 0, sd 1
    assert r.in_gap(r.effect) == pytest.approx(-0.2 * 0.4 / 2.0)
    data = r.to_dict()
    assert data["effect_gap"] == pytest.approx(-0.04) and data["min_p"] == 0.25
