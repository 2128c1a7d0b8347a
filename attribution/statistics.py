"""Statistics of per-pair effects: bootstrap intervals, sign-flip tests, BH q values.

Every statistic the toolkit reports is defined here once. The unit is the
prompt pair: each pair gives one number per head (a DLA difference, an
interchange effect, a knockout drop), and a pair's harmful and control
prompts always stay together, so every interval and test is *paired*.
Everything is seeded; the same seed gives the same numbers.

Bootstrap confidence intervals
------------------------------
:func:`bootstrap_mean_ci` resamples pairs with replacement ``n_boot`` times
(:data:`DEFAULT_N_BOOT`, the one default of every command) and reports the
percentile interval of the mean. A bootstrap over one pair resamples nothing,
so fewer than :data:`MIN_PAIRS_FOR_CI` pairs are refused up front.

The sign-flip permutation test
------------------------------
Under the null hypothesis that a head's effect is symmetric around zero (the
head does nothing systematic), each pair's effect is as likely to have come
out with the opposite sign, so the distribution of the mean under H0 is the set
of means over all ``2^n`` sign flips. The two-sided p value is the share of
flips whose ``|mean|`` is at least the observed one:

- **exact** when ``2^n <= max_exact`` (every flip enumerated; the smallest
  possible p is ``2 / 2^n`` since the identity and full flip tie);
- **Monte Carlo** otherwise: ``B`` seeded random flips and
  ``p = (b + 1) / (B + 1)``, which is never 0 and keeps the test valid.

No normality is assumed; with n pairs the smallest attainable p bounds what any
number of heads can show, which is why n is reported beside every p, and why
:func:`check_enough_pairs` refuses an n whose smallest p cannot reach the level.

Benjamini-Hochberg
------------------
Testing hundreds of heads at 0.05 would call about 5% of null heads
significant. :func:`benjamini_hochberg` turns p values into q values (the
smallest false discovery rate at which each head would be called), so
``q < 0.05`` controls the expected share of false discoveries among heads called.

Effects on a pooled scale
-------------------------
Interchange effects (and every other effect measured against the clean gap
``m(s_i) - m(c_i)``) are divided by one number, :func:`pooled_scale`, the mean
absolute clean gap ``mean_i |m(s_i) - m(c_i)|``, not by each pair's own gap.
Dividing by a pair's own gap makes necessity invariant to which prompt is
called harmful (swapping the labels turns necessity into sufficiency, still
positive), so a label-shuffled null could never come out null. On the pooled
scale a pair whose labels are swapped contributes an effect of the opposite
sign, and the sign-flip test sees exactly the symmetry its null assumes. The
per-pair form is available where asked for explicitly (``scale="per_pair"``).

NaN policy
----------
NaN marks a measurement that does not exist: a pair excluded for a near-zero
clean gap, a head not patched exactly. Every function here drops NaN **per
head**: a head's mean, interval and p use the pairs finite for that head; a
head with no finite pair gets NaN throughout, and Benjamini-Hochberg ranks only
the finite p values (NaN stays NaN). Heads with the same pattern of finite
pairs are resampled and flipped together with the same seeded draws, so a
missing head never changes another head's numbers. In JSON, NaN is ``null``
(:mod:`attribution.result`).

Numerical resolution
--------------------
A patched run and a clean run differ by float32 rounding even where the patch
changes nothing (another batch, another summation order): a head that does
nothing shows per-pair effects of up to ~3e-4 of the gap, often of one sign, and
a sign-flip test calls that significant. :func:`resolution_floor` is the size
below which a change is rounding: :data:`RESOLUTION_ULPS` float32 ulps of the
largest clean gap (the metric's own scale). :func:`effect_stats` with ``floor``
treats per-pair effects within it as exactly zero, so a head whose effects are
all rounding gets p = 1 and is never significant; such a head moved nothing, so,
like a head not measured, it is left out of the Benjamini-Hochberg family (q = 1).

Explained in ``docs/science.md#significance``.
"""

from __future__ import annotations

import itertools
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal

import numpy as np
from jaxtyping import Float

from attribution.result import Result
from patching.errors import TooFewPairsError

#: Bootstrap resamples of every interval (the ``dla`` and ``audit`` commands alike).
DEFAULT_N_BOOT = 2000
DEFAULT_CI_LEVEL = 0.95
#: A bootstrap interval over one pair has zero width: it would claim certainty.
MIN_PAIRS_FOR_CI = 2
DEFAULT_MAX_EXACT = 20_000
DEFAULT_N_PERM = 10_000
DEFAULT_LEVEL = 0.05
#: float32 ulps of the metric's scale under which a change is rounding (4.9e-4 of the
#: largest clean gap). A forward pass sums hundreds of float32 terms per layer over
#: tens of layers; on the organism, heads that do nothing show per-pair interchange
#: effects up to 2.8e-4 of its largest gap, and published gates carry 1% or more.
RESOLUTION_ULPS = 4096

Scale = Literal["pooled", "per_pair"]
SCALES: tuple[str, ...] = ("pooled", "per_pair")


# -- pair-count checks ------------------------------------------------------------
def check_enough_pairs_for_ci(n: int) -> None:
    """Refuse fewer than :data:`MIN_PAIRS_FOR_CI` pairs for a bootstrap interval.

    Raises:
        TooFewPairsError: the interval would be a single point, not an interval.
    """
    if n < MIN_PAIRS_FOR_CI:
        raise TooFewPairsError(
            f"{n} pair{'s' if n != 1 else ''} give a zero-width confidence interval (a bootstrap "
            f"over one value resamples nothing); use at least {MIN_PAIRS_FOR_CI} pairs "
            f"(raise --n or give a larger pair file)"
        )


def min_attainable_p(
    n: int, *, max_exact: int = DEFAULT_MAX_EXACT, n_perm: int = DEFAULT_N_PERM
) -> float:
    """The smallest p value :func:`sign_flip_test` can return with ``n`` pairs.

    Exact enumeration (``2^n <= max_exact``): ``2 / 2^n``, since the identity and the
    full flip always tie with the observed mean. Monte Carlo: ``1 / (n_perm + 1)``.
    """
    if n < 1:
        return 1.0
    if 2**n <= max_exact:
        return 2.0 / 2**n
    return 1.0 / (n_perm + 1)


def min_pairs_for(
    level: float = DEFAULT_LEVEL,
    *,
    max_exact: int = DEFAULT_MAX_EXACT,
    n_perm: int = DEFAULT_N_PERM,
) -> int:
    """The fewest pairs with which a p value can reach ``level`` (6 at 0.05)."""
    if not 0.0 < level < 1.0:
        raise ValueError(f"significance level must be in (0, 1), got {level}")
    for n in range(1, 200):
        if min_attainable_p(n, max_exact=max_exact, n_perm=n_perm) <= level:
            return n
    raise ValueError(f"no number of pairs reaches level {level} with {n_perm} permutations")


def check_enough_pairs(
    n: int,
    level: float = DEFAULT_LEVEL,
    *,
    max_exact: int = DEFAULT_MAX_EXACT,
    n_perm: int = DEFAULT_N_PERM,
) -> None:
    """Refuse ``n`` pairs when no p value of the sign-flip test could reach ``level``.

    The audit and the screen both call this before any model work: with too few
    pairs "no head is significant" would be a property of n, not of the model.

    Raises:
        TooFewPairsError: naming the smallest attainable p and the pairs needed.
    """
    floor = min_attainable_p(n, max_exact=max_exact, n_perm=n_perm)
    if floor > level:
        need = min_pairs_for(level, max_exact=max_exact, n_perm=n_perm)
        raise TooFewPairsError(
            f"{n} pair{'s' if n != 1 else ''} cannot show a significant head: the sign-flip "
            f"test's smallest attainable p is {floor:.3g}, above the level {level:g}; use at "
            f"least {need} pairs (raise --n or give a larger pair file)"
        )


# -- the NaN policy ---------------------------------------------------------------
def _per_head(
    values: Float[np.ndarray, "n ..."],
    each: Callable[[Float[np.ndarray, "k heads"]], tuple[np.ndarray, ...]],
    outputs: int,
) -> tuple[np.ndarray, ...]:
    """Apply ``each`` to groups of heads sharing one pattern of finite pairs.

    ``each`` gets the finite pairs x heads of a group and returns ``outputs``
    arrays of one value per head; heads with no finite pair stay NaN.
    """
    flat = values.reshape(values.shape[0], -1)
    out = [np.full(flat.shape[1], np.nan) for _ in range(outputs)]
    groups: dict[tuple[bool, ...], list[int]] = {}
    for j in range(flat.shape[1]):
        groups.setdefault(tuple(np.isfinite(flat[:, j])), []).append(j)
    for mask, cols in groups.items():
        keep = np.array(mask)
        if not keep.any():
            continue
        for target, result in zip(out, each(flat[keep][:, cols]), strict=True):
            target[cols] = result
    return tuple(o.reshape(values.shape[1:]) for o in out)


# -- bootstrap --------------------------------------------------------------------
def bootstrap_mean_ci(
    values: Float[np.ndarray, "n ..."],
    *,
    n_boot: int = DEFAULT_N_BOOT,
    level: float = DEFAULT_CI_LEVEL,
    seed: int = 0,
) -> tuple[Float[np.ndarray, "..."], Float[np.ndarray, "..."]]:
    """Percentile bootstrap interval of the mean over the first axis (NaN per head).

    With a single value the interval collapses to that value (nothing to resample).
    """
    if not 0.0 < level < 1.0:
        raise ValueError(f"confidence level must be in (0, 1), got {level}")
    if n_boot < 1:
        raise ValueError(f"n_boot must be at least 1, got {n_boot}")
    values = np.asarray(values, dtype=np.float64)
    if values.shape[0] == 0:
        raise ValueError("bootstrap needs at least one value")
    tail = (1.0 - level) / 2.0

    def interval(block: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        n = block.shape[0]
        rng = np.random.default_rng(seed)
        idx = rng.integers(0, n, size=(n_boot, n))
        # Average resampled rows in chunks so memory stays n_boot x heads, not x n too.
        means = np.empty((n_boot, block.shape[1]), dtype=np.float64)
        chunk = max(1, 2_000_000 // max(1, block.shape[1] * n))
        for start in range(0, n_boot, chunk):
            means[start : start + chunk] = block[idx[start : start + chunk]].mean(axis=1)
        low, high = np.quantile(means, [tail, 1.0 - tail], axis=0)
        return low, high

    low, high = _per_head(values, interval, 2)
    return low, high


@dataclass(frozen=True)
class RatioEstimate(Result):
    """``mean(numerator) / mean(denominator)`` with its paired percentile bootstrap interval.

    ``dropped``: resamples whose denominator mean was at or below the floor (counted, not
    hidden); NaN value when the full-sample denominator is, NaN interval when the value is
    NaN or more than one tail's share of resamples was dropped (the interval would then be
    unbounded on one side).
    """

    value: float
    ci_low: float
    ci_high: float
    dropped: int
    n_boot: int

    @property
    def ci(self) -> tuple[float, float]:
        return self.ci_low, self.ci_high


def ratio_of_means(
    numerator: Float[np.ndarray, " n"],
    denominator: Float[np.ndarray, " n"],
    *,
    floor: float = 0.0,
    n_boot: int = DEFAULT_N_BOOT,
    level: float = DEFAULT_CI_LEVEL,
    seed: int = 0,
) -> RatioEstimate:
    """``mean(numerator) / mean(denominator)``, defined only when ``mean(denominator) >
    floor`` (a positive denominator above its noise floor), with a paired percentile
    bootstrap interval over the resamples whose denominator is too (:class:`RatioEstimate`).
    """
    if not 0.0 < level < 1.0:
        raise ValueError(f"confidence level must be in (0, 1), got {level}")
    num = np.asarray(numerator, dtype=np.float64)
    den = np.asarray(denominator, dtype=np.float64)
    if num.shape != den.shape or num.ndim != 1 or num.size == 0:
        raise ValueError("a ratio of means needs two equal-length, non-empty 1-D arrays")
    nan = float("nan")
    if not den.mean() > floor:
        return RatioEstimate(nan, nan, nan, n_boot, n_boot)
    value = float(num.mean() / den.mean())
    idx = np.random.default_rng(seed).integers(0, num.size, size=(n_boot, num.size))
    top, bottom = num[idx].mean(axis=1), den[idx].mean(axis=1)
    ok = bottom > floor
    dropped = int(n_boot - ok.sum())
    tail = (1.0 - level) / 2.0
    if dropped > tail * n_boot:
        return RatioEstimate(value, nan, nan, dropped, n_boot)
    low, high = np.quantile(top[ok] / bottom[ok], [tail, 1.0 - tail])
    return RatioEstimate(value, float(low), float(high), dropped, n_boot)


def bootstrap_ratio_ci(
    numerator: Float[np.ndarray, " n"],
    denominator: Float[np.ndarray, " n"],
    *,
    floor: float = 0.0,
    n_boot: int = DEFAULT_N_BOOT,
    level: float = DEFAULT_CI_LEVEL,
    seed: int = 0,
) -> tuple[float, float]:
    """Percentile bootstrap interval of ``mean(numerator) / mean(denominator)``
    (:func:`ratio_of_means`: NaN unless the denominator mean is above ``floor``)."""
    return ratio_of_means(
        numerator, denominator, floor=floor, n_boot=n_boot, level=level, seed=seed
    ).ci


# -- sign-flip test ---------------------------------------------------------------
def _flip_signs(n: int, max_exact: int, n_perm: int, seed: int) -> tuple[np.ndarray, bool]:
    if 2**n <= max_exact:
        return np.array(list(itertools.product((1.0, -1.0), repeat=n))), True
    rng = np.random.default_rng(seed)
    return rng.choice((1.0, -1.0), size=(n_perm, n)), False


def sign_flip_test(
    effects: Float[np.ndarray, "n ..."],
    *,
    max_exact: int = DEFAULT_MAX_EXACT,
    n_perm: int = DEFAULT_N_PERM,
    seed: int = 0,
) -> Float[np.ndarray, "..."]:
    """Two-sided paired sign-flip permutation p values over the first axis (NaN per head).

    Exact enumeration when ``2^n <= max_exact``, else ``n_perm`` seeded flips with
    ``p = (b + 1) / (n_perm + 1)``.
    """
    effects = np.asarray(effects, dtype=np.float64)
    if effects.shape[0] == 0:
        raise ValueError("a permutation test needs at least one effect")

    def test(block: np.ndarray) -> tuple[np.ndarray]:
        n = block.shape[0]
        signs, exact = _flip_signs(n, max_exact, n_perm, seed)
        observed = np.abs(block.mean(axis=0))
        null = np.abs(signs @ block / n)  # [flips, heads]
        # A relative tolerance so ties with the observed mean count despite float rounding.
        hits = (null >= observed * (1 - 1e-12) - 1e-15).sum(axis=0)
        return (hits / len(signs) if exact else (hits + 1) / (len(signs) + 1),)

    (p,) = _per_head(effects, test, 1)
    return p


# -- Benjamini-Hochberg -----------------------------------------------------------
def benjamini_hochberg(p: Float[np.ndarray, "..."]) -> Float[np.ndarray, "..."]:
    """Benjamini-Hochberg q values of ``p`` over all its entries (NaN stays NaN)."""
    p = np.asarray(p, dtype=np.float64)
    flat = p.ravel()
    finite = np.isfinite(flat)
    values = flat[finite]
    m = values.size
    q = np.full(flat.shape, np.nan)
    if m == 0:
        return q.reshape(p.shape)
    order = np.argsort(values)
    ranked = values[order] * m / np.arange(1, m + 1)
    # q_(i) = min over j >= i of p_(j) m / j: a running minimum from the largest p down.
    ranked = np.minimum.accumulate(ranked[::-1])[::-1]
    result = np.empty(m)
    result[order] = np.minimum(ranked, 1.0)
    q[finite] = result
    return q.reshape(p.shape)


# -- scales -----------------------------------------------------------------------
def pooled_scale(gaps: Float[np.ndarray, " pair"]) -> float:
    """The mean absolute clean gap, the unit of pooled effects (see the module docstring)."""
    finite = np.abs(gaps[np.isfinite(gaps)])
    scale = float(finite.mean()) if finite.size else 0.0
    return scale if scale > 0 else 1.0


def scaled_effects(
    raw: Float[np.ndarray, "pair ..."], gaps: Float[np.ndarray, " pair"], scale: Scale = "pooled"
) -> Float[np.ndarray, "pair ..."]:
    """Raw per-pair changes in metric units as fractions of the clean gap.

    ``"pooled"`` divides by :func:`pooled_scale` of all gaps, ``"per_pair"`` by
    each pair's own gap.
    """
    if scale == "pooled":
        return raw / pooled_scale(gaps)
    if scale == "per_pair":
        return raw / gaps.reshape(-1, *([1] * (raw.ndim - 1)))
    raise ValueError(f"unknown scale {scale!r}; use one of {', '.join(SCALES)}")


def resolution_floor(
    gaps: Float[np.ndarray, " pair"], unit: float | Float[np.ndarray, " pair"] = 1.0
) -> float | Float[np.ndarray, " pair"]:
    """Changes of the metric under this size (in ``unit`` s) are float32 rounding.

    :data:`RESOLUTION_ULPS` float32 ulps of the largest clean gap ``|m(s) - m(c)|``,
    divided by ``unit`` (the pooled scale, or each pair's own gap) so it is on the
    effects' scale.
    """
    finite = np.abs(np.asarray(gaps, dtype=np.float64))
    finite = finite[np.isfinite(finite)]
    scale = float(finite.max()) if finite.size else 0.0
    floor = RESOLUTION_ULPS * float(np.finfo(np.float32).eps) * scale
    return floor / np.abs(unit)


# -- per-head statistics ----------------------------------------------------------
@dataclass(frozen=True)
class HeadStat(Result):
    """One head's value with its interval, test and pair count: the per-head record.

    Every ``.top(k)`` returns a list of these. ``p`` and ``q`` are NaN where no test
    was made (DLA reports intervals only).
    """

    layer: int
    head: int
    value: float
    ci_low: float = float("nan")
    ci_high: float = float("nan")
    p: float = float("nan")
    q: float = float("nan")
    n: int = 0

    @property
    def label(self) -> str:
        return f"L{self.layer}H{self.head}"


@dataclass(frozen=True)
class EffectStats(Result):
    """Mean effect per head over pairs, with bootstrap CI, sign-flip p and BH q.

    ``n`` is the number of pairs with a finite effect for at least one head.
    """

    effect: Float[np.ndarray, "layer head"]
    ci_low: Float[np.ndarray, "layer head"]
    ci_high: Float[np.ndarray, "layer head"]
    p: Float[np.ndarray, "layer head"]
    q: Float[np.ndarray, "layer head"]
    n: int

    def head(self, layer: int, head: int) -> HeadStat:
        """The per-head record of ``(layer, head)``."""
        h = (layer, head)
        return HeadStat(
            layer=layer,
            head=head,
            value=float(self.effect[h]),
            ci_low=float(self.ci_low[h]),
            ci_high=float(self.ci_high[h]),
            p=float(self.p[h]),
            q=float(self.q[h]),
            n=self.n,
        )

    def top(self, k: int = 10, *, by: Literal["value", "abs"] = "value") -> list[HeadStat]:
        """The ``k`` heads with the largest mean effect (or magnitude); NaN heads last."""
        return [self.head(*h) for h in top_heads(self.effect, k, by=by)]

    def significant(self, alpha: float = DEFAULT_LEVEL) -> list[HeadStat]:
        """Heads with ``q < alpha``, largest ``|effect|`` first."""
        hits = np.argwhere(np.nan_to_num(self.q, nan=1.0) < alpha)
        found = [self.head(int(a), int(b)) for a, b in hits]
        return sorted(found, key=lambda h: abs(h.value), reverse=True)


def top_heads(
    values: Float[np.ndarray, "layer head"], k: int, *, by: Literal["value", "abs"] = "value"
) -> list[tuple[int, int]]:
    """``(layer, head)`` of the ``k`` largest values (or magnitudes); NaN last, ties stable."""
    key = np.abs(values) if by == "abs" else values
    key = np.where(np.isnan(key), -np.inf, key)
    order = np.argsort(-key, axis=None, kind="stable")[:k]
    n_heads = values.shape[1]
    return [(int(i) // n_heads, int(i) % n_heads) for i in order]


def effect_stats(
    per_pair: Float[np.ndarray, "pair layer head"],
    *,
    seed: int = 0,
    n_boot: int = DEFAULT_N_BOOT,
    level: float = DEFAULT_CI_LEVEL,
    floor: float | Float[np.ndarray, " pair"] = 0.0,
) -> EffectStats:
    """Mean, bootstrap CI, sign-flip p and BH q of per-pair effects (NaN per head).

    Per-pair effects within ``floor`` (:func:`resolution_floor`; one number, or one
    per pair) are rounding and count as exactly zero: a head whose effects all are
    gets mean 0, p = 1 and q = 1, outside the BH family of the other heads.
    """
    per_pair = np.asarray(per_pair, dtype=np.float64)
    bound = np.reshape(floor, (-1, *([1] * (per_pair.ndim - 1)))) if np.ndim(floor) else floor
    per_pair = np.where(np.abs(per_pair) <= bound, 0.0, per_pair)
    finite = np.isfinite(per_pair)
    n = int(finite.reshape(len(per_pair), -1).any(axis=1).sum()) if len(per_pair) else 0
    if n == 0:
        nan = np.full(per_pair.shape[1:], np.nan)
        return EffectStats(nan, nan.copy(), nan.copy(), nan.copy(), nan.copy(), 0)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # heads without a finite pair
        mean = np.nanmean(per_pair, axis=0)
    low, high = bootstrap_mean_ci(per_pair, n_boot=n_boot, level=level, seed=seed)
    p = sign_flip_test(per_pair, seed=seed)
    # A head that moved nothing above the floor on any pair is no hypothesis (like a
    # head not measured): p = q = 1, outside the BH family.
    idle = (np.nan_to_num(per_pair, nan=0.0) == 0).all(axis=0) & finite.any(axis=0)
    q = benjamini_hochberg(np.where(idle, np.nan, p))
    return EffectStats(mean, low, high, p, np.where(idle, 1.0, q), n)
