"""Knockouts resumed from a kept clean pass equal full passes (the cascade's speed path)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from attribution.dla import attribute
from circuits.knockout import intervened_dla, knockouts
from patching.components import decompose_residual
from patching.interventions import Ablation, Scale

pytestmark = pytest.mark.engine

ARCHS = ["qwen2", "gpt2", "gemma2"]


@pytest.fixture(scope="module")
def models(tiny_dirs):
    from patching.loading import load_model

    return {arch: load_model(tiny_dirs[arch]) for arch in ARCHS}


def _prompts(n: tuple[int, ...] = (9, 14, 11, 14, 6), seed: int = 5) -> list[torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return [torch.randint(10, 400, (k,), generator=g) for k in n]


@pytest.mark.parametrize("arch", ARCHS)
def test_resumed_decomposition_equals_the_full_pass(models, arch) -> None:
    """Every term of a decomposition started at the first knocked layer == a full pass."""
    model = models[arch]
    prompts = _prompts()
    layer = model.n_layers - 1  # the latest start: every earlier layer comes from the clean pass
    rows = [[Ablation(layer, 1)], [Scale(layer, 0, alpha=0.1)], [], [Ablation(layer, 0)], []]
    clean = decompose_residual(model, prompts, keep_blocks=True)
    resumed = decompose_residual(model, prompts, rows=rows, resume=clean.blocks)
    full = decompose_residual(model, prompts, rows=rows)
    for name in ("heads", "attn_bias", "mlps", "embed", "resid_final", "final_scale", "logits"):
        torch.testing.assert_close(
            getattr(resumed, name), getattr(full, name), atol=1e-5, rtol=1e-5, msg=name
        )
    assert (full.logits[0] - clean.logits[0]).abs().max() > 1e-4  # the knockout acts


@pytest.mark.parametrize("arch", ARCHS[:2])
def test_knockout_dla_equals_each_prompt_alone(models, arch) -> None:
    """intervened_dla (kept clean pass, batched) == each prompt's own full knocked-out pass."""
    model = models[arch]
    prompts = _prompts()
    answers = torch.tensor([7, 8, 9, 10, 11])
    refusal = [3, 4]
    for heads in ([(1, 0)], [(model.n_layers - 1, 2), (1, 1)]):
        rows = knockouts(heads, prompts, "zero")
        got, diff = intervened_dla(model, prompts, refusal, answers, rows, batch_size=3)
        again, _ = intervened_dla(model, prompts, refusal, answers, rows, batch_size=3)
        np.testing.assert_array_equal(got, again)  # the kept clean pass is not changed
        for i, (prompt, row) in enumerate(zip(prompts, rows, strict=True)):
            dec = decompose_residual(model, [prompt], rows=[row])
            alone = attribute(model, dec, refusal, answers[i : i + 1])
            np.testing.assert_allclose(got[i], alone.heads[0].cpu().numpy(), atol=1e-5)
            np.testing.assert_allclose(diff[i], float(alone.logit_diff[0]), atol=1e-5)
    assert model.clean_blocks  # the clean passes were kept for the next knockout
