"""Paired significance tests per head, and false-discovery control across heads.

The sign-flip permutation test
------------------------------
Each pair gives one effect per head. Under the null hypothesis that the effect
is symmetric around zero (the head does nothing systematic), each pair's effect
is as likely to have come out with the opposite sign, so the distribution of the
mean under H0 is the set of means over all ``2^n`` sign flips. The two-sided p
value is the share of flips whose ``|mean|`` is at least the observed one:

- **exact** when ``2^n <= max_exact`` (every flip enumerated; the smallest
  possible p is ``2 / 2^n`` since the identity and full flip tie);
- **Monte Carlo** otherwise: ``B`` seeded random flips and
  ``p = (b + 1) / (B + 1)``, which is never 0 and keeps the test valid.

No normality is assumed; with n pairs the smallest attainable p bounds what any
number of heads can show, which is why n is reported beside every p.

Benjamini-Hochberg
------------------
Testing hundreds of heads at 0.05 would call about 5% of null heads
significant. :func:`benjamini_hochberg` turns p values into q values (the
smallest false discovery rate at which each head would be called), so
``q < 0.05`` controls the expected share of false discoveries among heads called.
"""

from __future__ import annotations

import itertools

import numpy as np
from jaxtyping import Float

from patching.errors import TooFewPairsError

DEFAULT_MAX_EXACT = 20_000
DEFAULT_N_PERM = 10_000
DEFAULT_LEVEL = 0.05


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
    """Two-sided paired sign-flip permutation p values over the first axis.

    Exact enumeration when ``2^n <= max_exact``, else ``n_perm`` seeded flips with
    ``p = (b + 1) / (n_perm + 1)``. NaN effects (excluded pairs) are dropped per head.
    """
    effects = np.asarray(effects, dtype=np.float64)
    if effects.shape[0] == 0:
        raise ValueError("a permutation test needs at least one effect")
    flat = effects.reshape(effects.shape[0], -1)
    out = np.full(flat.shape[1], np.nan)
    groups: dict[tuple[bool, ...], list[int]] = {}
    for j in range(flat.shape[1]):
        groups.setdefault(tuple(np.isfinite(flat[:, j])), []).append(j)
    for mask, cols in groups.items():
        keep = np.array(mask)
        n = int(keep.sum())
        if n == 0:
            continue
        values = flat[keep][:, cols]  # [n, heads]
        signs, exact = _flip_signs(n, max_exact, n_perm, seed)
        observed = np.abs(values.mean(axis=0))
        null = np.abs(signs @ values / n)  # [flips, heads]
        # A relative tolerance so ties with the observed mean count despite float rounding.
        hits = (null >= observed * (1 - 1e-12) - 1e-15).sum(axis=0)
        out[cols] = hits / len(signs) if exact else (hits + 1) / (len(signs) + 1)
    return out.reshape(effects.shape[1:])


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
