"""Bias and threshold sweeps equal a softmax computed by hand; settings reach their targets."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from attribution import calibration as cal
from attribution.refusal_tokens import dedicated_token_id
from patching.errors import RefusalCircuitsError

REFUSAL = [3, 7, 11, 40]


def _logits(n: int = 30, vocab: int = 60, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    logits = torch.randn(n, vocab, generator=g) * 3.0
    # Spread the prompts' refusal margins so the rate walks through every step.
    logits[:, REFUSAL] += torch.linspace(-6.0, 6.0, n)[:, None]
    return logits


def _by_hand(logits: torch.Tensor, bias: float) -> tuple[float, float]:
    """(share of prompts whose argmax is a refusal token, mean refusal probability)."""
    x = logits.double().numpy().copy()
    x[:, REFUSAL] += bias
    e = np.exp(x - x.max(axis=1, keepdims=True))
    p = e / e.sum(axis=1, keepdims=True)
    greedy = np.mean([int(row.argmax()) in REFUSAL for row in x])
    return float(greedy), float(p[:, REFUSAL].sum(axis=1).mean())


def test_bias_sweep_equals_the_softmax_by_hand() -> None:
    logits = _logits()
    stats = cal.first_token_stats(logits, REFUSAL)
    sweep = np.linspace(-12, 12, 49)
    rate = cal.rate(stats, "bias", sweep)
    expected = cal.expected_rate(stats, "bias", sweep)
    for b, r, e in zip(sweep, rate, expected, strict=True):
        greedy, prob = _by_hand(logits, float(b))
        assert r == pytest.approx(greedy, abs=1e-12)
        assert e == pytest.approx(prob, abs=1e-9)
    assert rate[0] < 0.2 and rate[-1] > 0.8  # the sweep does move the rate


def test_threshold_sweep_equals_the_probability_by_hand() -> None:
    logits = _logits(seed=1)
    stats = cal.first_token_stats(logits, REFUSAL)
    p = torch.softmax(logits.double(), dim=-1)[:, REFUSAL].sum(dim=-1).numpy()
    for tau in (1e-6, 0.01, 0.2, 0.5, 0.8, 0.999):
        got = cal.rate(stats, "threshold", tau)[0]
        assert got == pytest.approx(float(np.mean(p >= tau)), abs=1e-12)
        assert cal.expected_rate(stats, "threshold", tau)[0] == got


@pytest.mark.parametrize("mode", cal.MODES)
@pytest.mark.parametrize("target", [0.0, 0.1, 0.25, 0.5, 0.77, 1.0])
def test_setting_reaches_the_nearest_rate(mode: cal.CalibrationMode, target: float) -> None:
    logits = _logits()
    stats = cal.first_token_stats(logits, REFUSAL)
    n = logits.shape[0]
    sweep = cal.default_sweep(stats.key(mode), mode)
    rough, setting = cal.setting_for_rate(stats, mode, target, sweep)
    got = cal.rate(stats, mode, setting)[0]
    assert abs(got - target) <= 0.5 / n + 1e-12
    # The setting sits inside its step: nudging it by a small amount keeps the rate.
    key = cal.to_key(mode, setting)
    for nudge in (-1e-4, 1e-4):
        assert cal.rate(stats, mode, cal.from_key(mode, float(key) + nudge))[0] == got
    if mode == "bias":
        assert cal.rate(stats, mode, rough)[0] == pytest.approx(target, abs=2 / n)
        greedy, _ = _by_hand(logits, setting)
        assert greedy == got


def test_interpolation_is_linear_between_the_points_that_bracket_the_target() -> None:
    keys = np.array([0.0, 1.0, 2.0, 3.0])
    rates = np.array([0.0, 0.0, 1.0, 1.0])
    assert cal.interpolate(keys, rates, 0.25) == pytest.approx(1.25)
    assert cal.interpolate(keys, rates, -1.0) == 0.0
    assert cal.interpolate(keys, rates, 2.0) == 3.0


def test_dedicated_token_must_be_one_token(tiny_dirs) -> None:
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(tiny_dirs["qwen2"])
    with pytest.raises(RefusalCircuitsError, match=r"'\[refuse\]' is [2-9] tokens.*not one token"):
        dedicated_token_id(tok, "[refuse]")
    # A model trained with refusal tokens has it as one added entry of its vocabulary.
    tok.add_special_tokens({"additional_special_tokens": ["[refuse]"]})
    assert dedicated_token_id(tok, "[refuse]") == tok.convert_tokens_to_ids("[refuse]")
    assert tok.decode([dedicated_token_id(tok, "[refuse]")]) == "[refuse]"
