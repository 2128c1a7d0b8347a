"""Per-head and per-dose scores (resumed from a kept clean pass) equal plain passes."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from attribution.metrics import refusal_score
from circuits.dose_response import dose_response
from circuits.negative_heads import per_head_scores
from patching.chat import ChatPrompt
from patching.engine import run_rows_full
from patching.interventions import Ablation, Scale
from tests.helpers.references import scores_under

pytestmark = pytest.mark.engine


@pytest.fixture(scope="module")
def model(tiny_dirs):
    from patching.loading import load_model

    return load_model(tiny_dirs["qwen2"])


def _prompts() -> list[ChatPrompt]:
    # A shared 6-token prefix (the chat template's, in real prompts) and tails of
    # different lengths: the batched path runs the prefix once per head and pads.
    g = torch.Generator().manual_seed(5)
    prefix = torch.randint(10, 400, (6,), generator=g)
    tails = [torch.randint(10, 400, (k,), generator=g) for k in (3, 7, 5, 7, 4)]
    tokens = [torch.cat([prefix, t]) for t in tails]
    return [ChatPrompt("", "", t, t_inst=len(t) - 2, t_post_inst=len(t) - 1) for t in tokens]


@pytest.mark.parametrize("kind", ["scale", "zero"])
def test_per_head_scores_equal_lone_passes(model, kind, suffix_passes) -> None:
    prompts, ids = _prompts(), [3, 17, 42]
    heads = [(0, 1), (1, 0), (model.n_layers - 1, 2)]

    def row_of(layer: int, head: int, i: int):
        return Scale(layer, head, alpha=0.1) if kind == "scale" else Ablation(layer, head)

    clean, out = per_head_scores(model, prompts, ids, row_of, False, heads=heads, batch_size=2)
    for i, p in enumerate(prompts):
        rows = [[], *[[row_of(lay, h, i)] for lay, h in heads]]
        alone = refusal_score(run_rows_full(model, p.tokens, rows)[:, -1], ids).numpy()
        np.testing.assert_allclose(clean[i], alone[0], atol=1e-5)
        for k, (lay, h) in enumerate(heads):
            np.testing.assert_allclose(out[i, lay, h], alone[k + 1], atol=1e-5)
    measured = np.zeros(out.shape[1:], dtype=bool)
    measured[tuple(np.array(heads).T)] = True
    assert np.isnan(out[:, ~measured]).all() and np.isfinite(out[:, measured]).all()
    assert np.abs(out[:, 0, 1] - clean).max() > 1e-4  # the intervention does act
    # The heads past layer 0 ran from the shared prefix, batch by batch: two batches of
    # two prompts share 6 tokens, the last batch's lone prompt all 12 before its read-out.
    # A layer-0 head has no clean layers to resume from: it runs whole.
    assert suffix_passes == [6, 6, 6, 6, 12, 12]


def test_dose_scores_equal_full_passes(model, suffix_passes) -> None:
    """The dose-response's scores (resumed from a kept clean pass) == a full pass per dose."""
    prompts, ids = _prompts(), [3, 17, 42]
    heads = [(1, 0), (1, 2)]
    dose = dose_response(model, prompts, ids, heads, alphas=(0.0, 1.0, 3.0), n_tokens=2)
    for alpha, mean, sd in zip(dose.alphas, dose.score_mean, dose.score_sd, strict=True):
        row = [Scale(lay, h, alpha=alpha) for lay, h in heads]
        full = scores_under(model, prompts, ids, [row for _ in prompts])
        np.testing.assert_allclose([mean, sd], [full.mean(), full.std(ddof=1)], atol=1e-5)
    assert abs(dose.score_mean[0] - dose.score_mean[2]) > 1e-4  # the doses do differ
    assert suffix_passes and set(suffix_passes) <= {6, 12}  # from the shared prefix
