"""Refusal rates at the first response position under a bias or a threshold.

``docs/science.md#refusal-rate-calibration``. Two settings move how often a model
refuses without retraining it, both acting on the logits of the first response
token only (applied in generation by :class:`patching.decoding.LogitBias` and
:class:`patching.decoding.ForceAbove`):

- ``"bias"``: add ``b`` logits to every refusal token. The greedy first token is a
  refusal token exactly when ``b > c``, where ``c = max_{t not in R} logit_t -
  max_{t in R} logit_t`` is the prompt's *critical bias*; the probability of a
  refusal token is ``sigmoid(s + b)`` with ``s`` the refusal log-odds
  (:func:`attribution.metrics.refusal_score`).
- ``"threshold"``: force the most likely refusal token when ``P(R) >= tau``, forbid
  the refusal tokens otherwise; the first token is a refusal exactly when
  ``sigmoid(s) >= tau``.

So two numbers per prompt (``c`` and ``s``, :func:`first_token_stats`) give the
whole sweep. The refusal *rate* of a prompt set at a setting is the share of its
prompts whose greedy first token is a refusal token (what greedy decoding does
next); the *expected rate* is the mean probability of a refusal token when the
edited logits are sampled at temperature 1 (for a threshold, 0 or 1 per prompt).

A target rate is reached in two steps (:func:`setting_for_rate`): the rate curve
of the sweep is interpolated linearly at the target, then refined exactly. The
rate is a step function of the setting with one step per prompt, so the refined
setting is the middle of the step whose rate is nearest the target (on a tie the
one nearest the interpolated setting): a setting in the middle of a step keeps its
rate when the logits move by float rounding, as they do between a batched pass and
a cached decoding.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal

import numpy as np
from jaxtyping import Float
from torch import Tensor

from attribution.metrics import _refusal_mask, refusal_score

CalibrationMode = Literal["bias", "threshold"]
MODES: tuple[CalibrationMode, ...] = ("bias", "threshold")
# Beyond the first or last step the rate no longer changes; the setting is put this
# many logits past that step (far enough that float rounding cannot undo it).
END_MARGIN = 2.0
SWEEP_POINTS = 121


@dataclass(frozen=True)
class FirstTokenStats:
    """Per prompt: the critical bias ``c`` and the refusal log-odds ``s`` (float64)."""

    critical: np.ndarray
    score: np.ndarray

    def key(self, mode: CalibrationMode) -> np.ndarray:
        """The prompt refuses at setting ``x`` exactly when ``key < x`` (``x`` from
        :func:`to_key`): the critical bias, or minus the refusal log-odds."""
        return self.critical if mode == "bias" else -self.score


def first_token_stats(
    logits: Float[Tensor, "prompt d_vocab"], refusal_ids: list[int]
) -> FirstTokenStats:
    """The two numbers per prompt that every bias and threshold rate is computed from."""
    logits = logits.double()
    mask = _refusal_mask(logits.shape[-1], refusal_ids, logits.device)
    inside = logits[:, mask].max(dim=-1).values
    outside = logits[:, ~mask].max(dim=-1).values
    return FirstTokenStats(
        critical=(outside - inside).cpu().numpy(),
        score=refusal_score(logits, refusal_ids).cpu().numpy(),
    )


def to_key(mode: CalibrationMode, setting: np.ndarray | float) -> np.ndarray:
    """A bias is its own key; a threshold ``tau`` is ``-logit(tau)``.

    A prompt refuses under ``tau`` exactly when ``s >= logit(tau)``, i.e. ``-s <= key``.
    """
    x = np.asarray(setting, dtype=np.float64)
    if mode == "bias":
        return x
    # Thresholds of exactly 0 or 1 are kept finite: refuse everything / nothing short of 1.
    x = np.clip(x, np.finfo(np.float64).tiny, 1.0 - np.finfo(np.float64).epsneg)
    return np.asarray(-(np.log(x) - np.log1p(-x)))


def from_key(mode: CalibrationMode, key: float) -> float:
    if mode == "bias":
        return float(key)
    return float(1.0 / (1.0 + math.exp(key)))  # sigmoid(-key)


def rate(stats: FirstTokenStats, mode: CalibrationMode, setting: np.ndarray | float) -> np.ndarray:
    """Share of prompts whose greedy first token is a refusal token at each setting."""
    keys = stats.key(mode)
    x = np.atleast_1d(to_key(mode, setting))
    if keys.size == 0:
        return np.full(x.shape, np.nan)
    # A threshold refuses at equality (p >= tau); a bias needs the refusal token strictly
    # above (argmax ties go to the lower id, a measure-zero case either way).
    refused = keys[None, :] <= x[:, None] if mode == "threshold" else keys[None, :] < x[:, None]
    return np.asarray(refused.mean(axis=1), dtype=np.float64)


def expected_rate(
    stats: FirstTokenStats, mode: CalibrationMode, setting: np.ndarray | float
) -> np.ndarray:
    """Mean probability of a refusal first token when sampling the edited logits."""
    if mode == "threshold":
        return rate(stats, mode, setting)
    b = np.atleast_1d(np.asarray(setting, dtype=np.float64))
    z = stats.score[None, :] + b[:, None]
    return np.asarray((0.5 * (1.0 + np.tanh(z / 2.0))).mean(axis=1), dtype=np.float64)


def default_sweep(keys: np.ndarray, mode: CalibrationMode, n: int = SWEEP_POINTS) -> np.ndarray:
    """Settings spanning every prompt's step plus a margin each side (increasing rate)."""
    low, high = float(np.min(keys)) - 3.0, float(np.max(keys)) + 3.0
    grid = np.linspace(low, high, n)
    if mode == "bias":
        return np.unique(np.append(grid, 0.0))
    return np.array([from_key(mode, k) for k in grid])


def interpolate(keys: np.ndarray, rates: np.ndarray, target: float) -> float:
    """The key where the sweep's rate curve crosses ``target``, linear between the last
    sweep point below the target and the first at or above it.

    Rates rise with the key; a target outside the curve's range gives the end of the
    sweep nearest it.
    """
    order = np.argsort(keys, kind="stable")
    k, r = keys[order], rates[order]
    if target <= r[0]:
        return float(k[0])
    if target >= r[-1]:
        return float(k[-1])
    j = int(np.searchsorted(r, target, side="left"))
    return float(k[j - 1] + (target - r[j - 1]) / (r[j] - r[j - 1]) * (k[j] - k[j - 1]))


def setting_for_rate(
    stats: FirstTokenStats,
    mode: CalibrationMode,
    target: float,
    sweep: np.ndarray,
) -> tuple[float, float]:
    """(interpolated, refined) setting whose first-token rate is nearest ``target``."""
    keys = np.sort(stats.key(mode))
    rough = interpolate(to_key(mode, sweep), rate(stats, mode, sweep), target)
    n = keys.size
    # Step k (k prompts refuse) is the key interval (keys[k-1], keys[k]); it exists
    # only where those differ (equal keys refuse together).
    bounds = np.concatenate([[keys[0] - 2 * END_MARGIN], keys, [keys[-1] + 2 * END_MARGIN]])
    steps = [k for k in range(n + 1) if bounds[k + 1] > bounds[k] or k in (0, n)]
    middles = {k: 0.5 * (bounds[k] + bounds[k + 1]) for k in steps}
    best = min(steps, key=lambda k: (abs(k / n - target), abs(middles[k] - rough)))
    return from_key(mode, rough), from_key(mode, middles[best])
