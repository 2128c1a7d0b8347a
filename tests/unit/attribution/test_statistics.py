"""Sign-flip permutation test, Benjamini-Hochberg, and the null audit."""

from __future__ import annotations

import itertools

import numpy as np
import pytest

from attribution.statistics import benjamini_hochberg, sign_flip_test


def test_exact_p_matches_enumeration() -> None:
    x = np.array([0.5, 1.2, -0.3, 0.8, 1.1])
    flips = np.array(list(itertools.product((1, -1), repeat=5)))
    expected = np.mean(np.abs(flips @ x) >= abs(x.sum()) - 1e-12)
    assert sign_flip_test(x[:, None])[0] == pytest.approx(expected)
    assert sign_flip_test(np.ones((6, 1)))[0] == pytest.approx(2 / 64)  # the smallest exact p


def test_monte_carlo_is_seeded_and_never_zero() -> None:
    x = np.random.default_rng(0).normal(5.0, 1.0, size=(20, 3))
    a, b = sign_flip_test(x, seed=1, n_perm=999), sign_flip_test(x, seed=1, n_perm=999)
    np.testing.assert_array_equal(a, b)
    assert np.all(a == pytest.approx(1 / 1000))


def test_nan_pairs_are_dropped_per_head() -> None:
    x = np.array([[1.0, 1.0], [2.0, np.nan], [1.5, 2.0]])
    p = sign_flip_test(x)
    assert p[0] == pytest.approx(2 / 8) and p[1] == pytest.approx(2 / 4)


def test_benjamini_hochberg_matches_reference() -> None:
    p = np.array([0.01, 0.04, 0.03, 0.2, np.nan])
    q = benjamini_hochberg(p)
    # Reference values (R: p.adjust(c(.01,.04,.03,.2), "BH")).
    np.testing.assert_allclose(q[:4], [0.04, 0.0533333, 0.0533333, 0.2], rtol=1e-5)
    assert np.isnan(q[4])


@pytest.mark.parametrize("n_pairs", [8, 16])
def test_null_audit_with_shuffled_labels_stays_at_nominal_rate(n_pairs: int) -> None:
    """Harmful/control labels shuffled within pairs: q < 0.05 for <= 5% of heads, any seed."""
    for seed in range(5):
        rng = np.random.default_rng(seed)
        # Per-pair harmful-minus-control values with real head structure (scale, skew,
        # a shared pair effect); shuffling labels flips each pair's sign at random.
        scale = rng.uniform(0.1, 3.0, size=(6, 8))
        harmful = rng.gamma(2.0, scale, size=(n_pairs, 6, 8)) + rng.normal(size=(n_pairs, 1, 1))
        control = rng.gamma(2.0, scale, size=(n_pairs, 6, 8)) + rng.normal(size=(n_pairs, 1, 1))
        swap = rng.random(n_pairs) < 0.5
        h = np.where(swap[:, None, None], control, harmful)
        c = np.where(swap[:, None, None], harmful, control)
        q = benjamini_hochberg(sign_flip_test(h - c, seed=seed, n_perm=2000))
        assert np.mean(q < 0.05) <= 0.05


@pytest.fixture(scope="module")
def organism_pairs():
    """The model organism and 12 of its equal-length (harmful, control) pairs, aligned."""
    from circuits.organism import organism_dir
    from patching.alignment import align_pair
    from patching.chat import format_chat
    from patching.loading import load_model
    from patching.prompts import read_pairs

    directory = organism_dir()
    model = load_model(directory)
    tok = model.tokenizer
    prompts = []
    for p in read_pairs(directory / "pairs.jsonl"):
        h, c = format_chat(tok, p.harmful), format_chat(tok, p.control)
        if len(h) == len(c):
            prompts.append((h, c))
    assert len(prompts) >= 12
    return (
        model,
        [align_pair(h, c) for h, c in prompts[:12]],
        [align_pair(c, h) for h, c in prompts[:12]],
    )


def _interchange_effect(run) -> np.ndarray:
    """e = [m(s) - m(s<-c)] + [m(c<-s) - m(c)] per pair and head (s: the 'harmful' side)."""
    s = run.clean_harmful.numpy()[:, None, None]
    c = run.clean_control.numpy()[:, None, None]
    return (s - run.patched["necessity"].numpy()) + (run.patched["sufficiency"].numpy() - c)


def test_null_audit_on_the_organism_with_labels_swapped_within_pairs(organism_pairs) -> None:
    """Real model, real pairs, harmful/control swapped at random within each pair.

    The per-pair effect is ``e = N + S`` with necessity drop ``N = m(s) - m(s<-c)``
    and sufficiency rise ``S = m(c<-s) - m(c)``. Swapping s and c turns N into -S
    and S into -N, so ``e -> -e``: it is *antisymmetric*, and with labels swapped
    by fair coins its per-pair sign is a coin flip whatever the model does, which
    is exactly the sign-flip test's null. (``N - S`` would be symmetric, and N
    alone is neither, so neither gives a valid label-shuffling null.) The patched
    runs are recomputed on the swapped pairs for every seed. The organism has a
    real refusal circuit; the unswapped pairs must find it (the audit has power),
    the swapped ones must not: share of heads with q < 0.05 <= 0.05 for every seed.
    """
    from attribution.metrics import RefusalScoreMetric
    from attribution.refusal_tokens import refusal_token_ids
    from patching.interchange import interchange

    model, pairs, swapped_pairs = organism_pairs
    metric = RefusalScoreMetric(refusal_token_ids(model.tokenizer))
    base = _interchange_effect(interchange(model, pairs, metric, progress=False))
    n = len(pairs)
    q_true = benjamini_hochberg(sign_flip_test(base.reshape(n, -1), n_perm=2000))
    assert np.nanmin(q_true) < 0.05  # a positive control: the circuit is found unswapped
    for seed in range(5):
        swap = np.random.default_rng(seed).random(n) < 0.5
        assert 0 < swap.sum() < n
        mixed = [swapped_pairs[i] if swap[i] else pairs[i] for i in range(n)]
        effect = _interchange_effect(interchange(model, mixed, metric, progress=False))
        # The antisymmetry holds on the model's own numbers, not just on paper.
        sign = np.where(swap, -1.0, 1.0)[:, None, None]
        np.testing.assert_allclose(effect, sign * base, atol=1e-4)
        q = benjamini_hochberg(sign_flip_test(effect.reshape(n, -1), seed=seed, n_perm=2000))
        assert np.mean(q < 0.05) <= 0.05, f"seed {seed}: {np.mean(q < 0.05):.3f} of heads"


def test_one_nan_policy_keeps_other_heads_numbers() -> None:
    """NaN is dropped per head; a missing head or pair never moves another head's numbers."""
    from attribution.statistics import bootstrap_mean_ci, effect_stats

    x = np.random.default_rng(3).normal(1.0, 1.0, size=(10, 2, 2))
    full = effect_stats(x, n_boot=200)
    holes = x.copy()
    holes[:, 1, 1] = np.nan  # an unpatched head
    partial = effect_stats(holes, n_boot=200)
    for name in ("effect", "ci_low", "ci_high", "p"):
        a, b = getattr(full, name), getattr(partial, name)
        np.testing.assert_array_equal(a.ravel()[:3], b.ravel()[:3])
        assert np.isnan(b[1, 1])
    rows = x.copy()
    rows[4] = np.nan  # an excluded pair = the statistics of the other pairs
    dropped = effect_stats(np.delete(x, 4, axis=0), n_boot=200)
    kept = effect_stats(rows, n_boot=200)
    np.testing.assert_array_equal(dropped.ci_low, kept.ci_low)
    np.testing.assert_array_equal(dropped.p, kept.p)
    assert kept.n == 9
    low, high = bootstrap_mean_ci(np.array([[1.0], [np.nan], [3.0]]), n_boot=100)
    assert 1.0 <= low[0] <= high[0] <= 3.0


def test_pooled_and_per_pair_scales() -> None:
    from attribution.statistics import pooled_scale, scaled_effects

    raw = np.array([[[1.0]], [[-2.0]]])
    gaps = np.array([2.0, -4.0])
    assert pooled_scale(gaps) == 3.0
    np.testing.assert_allclose(scaled_effects(raw, gaps, "pooled").ravel(), [1 / 3, -2 / 3])
    # Per pair, a label swap (gap and change both flip sign) leaves the effect positive.
    np.testing.assert_allclose(scaled_effects(raw, gaps, "per_pair").ravel(), [0.5, 0.5])


def test_effects_under_the_numerical_resolution_are_never_significant() -> None:
    from attribution.statistics import RESOLUTION_ULPS, effect_stats, resolution_floor

    gaps = np.array([3.0, -4.0, 5.0, 2.0] * 4)
    unit = float(np.abs(gaps).mean())
    floor = resolution_floor(gaps, unit)
    assert floor == pytest.approx(RESOLUTION_ULPS * np.finfo(np.float32).eps * 5.0 / unit)
    rng = np.random.default_rng(0)
    effects = np.zeros((16, 1, 3))
    effects[:, 0, 0] = 1e-7 * (1 + rng.random(16))  # rounding, all of one sign
    effects[:, 0, 1] = 0.03 + 0.01 * rng.standard_normal(16)  # 3% of the gap: real
    # exactly zero in column 2
    bare = effect_stats(effects, n_boot=50)
    assert bare.p[0, 0] < 0.001  # without the floor the sign-flip test calls rounding
    floored = effect_stats(effects, n_boot=50, floor=floor)
    assert floored.p[0, 0] == 1.0 and floored.effect[0, 0] == 0.0 and floored.q[0, 0] == 1.0
    assert floored.p[0, 2] == 1.0 and floored.p[0, 1] == bare.p[0, 1] < 0.001
    # The idle heads are outside the BH family: the real head's q is its p (one test).
    assert floored.q[0, 1] == floored.p[0, 1] and floored.q[0, 2] == 1.0
    # One floor per pair (per-pair scale): pair i's effect is rounding under its own floor.
    per_pair = resolution_floor(gaps, np.abs(gaps))
    assert effect_stats(effects, n_boot=50, floor=per_pair).p[0, 0] == 1.0


def test_bootstrap_ratio_ci_equals_a_hand_resampled_ratio_of_means() -> None:
    from attribution.statistics import bootstrap_ratio_ci

    rng = np.random.default_rng(5)
    num, den = rng.normal(1.0, 0.5, 12), rng.normal(2.0, 0.3, 12)
    low, high = bootstrap_ratio_ci(num, den, n_boot=500, level=0.9, seed=3)
    idx = np.random.default_rng(3).integers(0, 12, size=(500, 12))
    ratios = [num[i].mean() / den[i].mean() for i in idx]
    assert (low, high) == pytest.approx(tuple(np.quantile(ratios, [0.05, 0.95])))
    assert bootstrap_ratio_ci(2 * den, den) == pytest.approx((2.0, 2.0))
    assert np.isnan(bootstrap_ratio_ci(num, np.zeros(12))[0])


def test_ratio_of_means_drops_and_counts_resamples_below_the_floor() -> None:
    from attribution.statistics import ratio_of_means

    num = np.array([1.0, 1.0, 1.0, 1.0, 1.0, 1.0])
    den = np.array([2.0, -1.8, 2.0, -1.8, 2.0, 0.1])  # mean 0.417: sign-changing resamples
    r = ratio_of_means(num, den, n_boot=400, seed=1)
    idx = np.random.default_rng(1).integers(0, 6, size=(400, 6))
    bottom = den[idx].mean(axis=1)
    assert r.value == pytest.approx(1.0 / den.mean())
    assert r.dropped == int((bottom <= 0).sum()) > 0
    # More than one tail's share undefined: the interval is unbounded, so NaN.
    assert r.dropped > 0.025 * 400 and np.isnan(r.ci_low) and np.isnan(r.ci_high)
    # Below the floor the value itself is undefined.
    below = ratio_of_means(num, den, floor=0.5, n_boot=50)
    assert np.isnan(below.value) and below.dropped == 50
    clean = ratio_of_means(num, np.full(6, 2.0), n_boot=50)
    assert clean.dropped == 0 and clean.ci == pytest.approx((0.5, 0.5))
