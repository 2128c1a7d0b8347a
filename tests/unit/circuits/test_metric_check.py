"""The NLL interchange on pairs of unequal length, and the cross-check of two metrics."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from attribution.interchange import build_metric
from attribution.metrics import NLLMetric, teacher_forced_nll
from attribution.statistics import EffectStats
from circuits.metric_check import MetricCheck
from patching.alignment import align_pair
from patching.chat import format_chat
from patching.interchange import interchange
from patching.interventions import z_hook
from patching.prompts import builtin_pairs


@pytest.fixture(scope="module")
def qwen2(tiny_dirs):
    from patching.loading import load_model

    return load_model(tiny_dirs["qwen2"])


def _unequal_pairs(model, n=3):
    tok = model.tokenizer
    out = []
    for p in builtin_pairs(40):
        h, c = format_chat(tok, p.harmful), format_chat(tok, p.control)
        if len(h) != len(c):
            out.append((h, c))
    assert len(out) >= n
    return out[:n]


def test_nll_interchange_is_right_aligned_on_unequal_lengths(qwen2) -> None:
    """Clean and patched NLLs of pairs of different lengths, batched, equal a lone
    reference run: the continuation appended to both prompts, the head's output
    copied position for position counted from the end, the NLL read at the last k."""
    model = qwen2
    prompts = _unequal_pairs(model)
    metric, _ = build_metric(model, [c.tokens for _, c in prompts], "nll", nll_tokens=3)
    assert isinstance(metric, NLLMetric) and all(len(t) == 3 for t in metric.continuations)
    pairs = [align_pair(h, c, metric.continuation(i)) for i, (h, c) in enumerate(prompts)]
    heads = [(0, 1), (model.n_layers - 1, 2)]
    with pytest.warns(UserWarning, match="differ in length"):
        run = interchange(model, pairs, metric, heads=heads, progress=False)

    def nll(tokens: torch.Tensor, i: int, hooks=()) -> float:
        logits = model.run_with_hooks(tokens[None], list(hooks))
        target = torch.tensor(metric.continuations[i])
        return float(teacher_forced_nll(logits[:, -len(target) :], target)[0])

    for i, (h, c) in enumerate(prompts):
        cont = torch.tensor(metric.continuations[i][:-1], dtype=torch.long)
        harmful, control = torch.cat([h.tokens, cont]), torch.cat([c.tokens, cont])
        assert run.clean_harmful[i] == pytest.approx(nll(harmful, i), abs=1e-5)
        assert run.clean_control[i] == pytest.approx(nll(control, i), abs=1e-5)
        _, cache = model.bridge.run_with_cache(control[None])
        overlap = min(len(harmful), len(control))
        for layer, head in heads:
            source = cache[z_hook(layer)][0]

            def patch(z, hook, head=head, source=source, overlap=overlap):
                z = z.clone()
                z[0, -overlap:, head] = source[-overlap:, head]  # aligned from the end
                return z

            want = nll(harmful, i, [(z_hook(layer), patch)])
            assert float(run.patched["necessity"][i, layer, head]) == pytest.approx(want, abs=1e-4)
        unpatched = np.isnan(run.patched["necessity"][i].numpy())
        assert unpatched.sum() == model.n_layers * model.n_heads - len(heads)


def _stats(values: dict[tuple[int, int], tuple[float, float]]) -> EffectStats:
    effect = np.full((2, 2), np.nan)
    p = np.full((2, 2), np.nan)
    for h, (e, pv) in values.items():
        effect[h], p[h] = e, pv
    return EffectStats(effect, effect, effect, p, p, 10)


def test_disagreements_name_sign_and_significance() -> None:
    heads = [(0, 0), (0, 1), (1, 0), (1, 1)]
    main = _stats({(0, 0): (0.1, 0.001), (0, 1): (0.05, 0.001), (1, 0): (0.02, 0.3),
                   (1, 1): (0.2, 0.01)})  # fmt: skip
    other = _stats({(0, 0): (0.3, 0.002), (0, 1): (-0.01, 0.6), (1, 0): (0.04, 0.01)})
    flat = _stats({h: (0.001, 0.5) for h in heads})  # sufficiency: none significant
    check = MetricCheck.of(heads, "refusal_score", "nll", 0.05, (main, main), (other, flat))
    assert check.disagreements() == [
        ((0, 1), "necessity: sign and significance"),
        ((1, 0), "necessity: significance"),
        ((0, 0), "sufficiency: significance"),
        ((0, 1), "sufficiency: significance"),
        ((1, 1), "sufficiency: significance"),
    ]
    line = check.line()
    assert "L0H1 necessity: sign and significance (+5.0% p=0.001 vs -1.0% p=0.6)" in line
    assert "L1H1 sufficiency: significance (+20.0% p=0.01 vs +0.1% p=0.5)" in line
    assert "L1H1 necessity" not in line  # not measured under nll
    noise = _stats({(0, 0): (-0.001, 0.9)})  # opposite sign, neither side significant
    quiet = MetricCheck.of(heads[:1], "refusal_score", "nll", 0.05, (flat, flat), (noise, noise))
    assert quiet.disagreements() == []
    same = MetricCheck.of(heads[:1], "refusal_score", "nll", 0.05, (main, main), (other, main))
    assert same.disagreements() == [] and "agree" in same.line()
    back = MetricCheck.from_dict(check.to_dict())
    assert back.to_dict() == check.to_dict() and back.heads == heads
