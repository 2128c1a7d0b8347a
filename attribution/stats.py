"""Statistics over prompt pairs: bootstrap confidence intervals.

Per-pair values (one number per pair and head) are the unit of resampling: a
pair's harmful and control prompts stay together, so the intervals are for the
paired difference. Everything is seeded; the same seed gives the same interval.
"""

from __future__ import annotations

import numpy as np
from jaxtyping import Float

from patching.errors import TooFewPairsError

DEFAULT_N_BOOT = 2000
#: A bootstrap interval over one pair has zero width: it would claim certainty.
MIN_PAIRS_FOR_CI = 2


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


def bootstrap_mean_ci(
    values: Float[np.ndarray, "n ..."],
    *,
    n_boot: int = DEFAULT_N_BOOT,
    level: float = 0.95,
    seed: int = 0,
) -> tuple[Float[np.ndarray, "..."], Float[np.ndarray, "..."]]:
    """Percentile bootstrap interval of the mean over the first axis.

    With a single value the interval collapses to that value (nothing to resample).
    """
    if not 0.0 < level < 1.0:
        raise ValueError(f"confidence level must be in (0, 1), got {level}")
    if n_boot < 1:
        raise ValueError(f"n_boot must be at least 1, got {n_boot}")
    values = np.asarray(values, dtype=np.float64)
    n = values.shape[0]
    if n == 0:
        raise ValueError("bootstrap needs at least one value")
    rng = np.random.default_rng(seed)
    idx = rng.integers(0, n, size=(n_boot, n))
    # Average resampled rows in chunks so memory stays n_boot x rest, not n_boot x n x rest.
    means = np.empty((n_boot, *values.shape[1:]), dtype=np.float64)
    chunk = max(1, 2_000_000 // max(1, values[0].size * n))
    for start in range(0, n_boot, chunk):
        means[start : start + chunk] = values[idx[start : start + chunk]].mean(axis=1)
    tail = (1.0 - level) / 2.0
    low, high = np.quantile(means, [tail, 1.0 - tail], axis=0)
    return low, high
