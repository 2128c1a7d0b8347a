"""Knockouts resumed from a kept clean pass equal full passes (the cascade's speed path)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from attribution.dla import attribute
from circuits.cascade import knockout_contrast
from circuits.knockout import capture_z, intervened_dla, knockouts
from patching.chat import ChatPrompt
from patching.components import decompose_residual
from patching.interventions import Ablation, Scale
from tests.helpers.references import knockout_dla

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


def test_knockout_contrast_equals_two_sides_apart(models) -> None:
    """Harmful and control knocked out in shared batches == each side's own knockout_dla."""
    model = models["qwen2"]
    prompts = [ChatPrompt("", "", t, t_inst=len(t) - 2, t_post_inst=len(t) - 1) for t in _prompts()]
    harmful, control = prompts[:3], prompts[2:]
    answers = torch.tensor([7, 8, 9])
    ref = capture_z(model, control, range(model.n_layers))
    for kind in ("zero", "resample"):
        got = knockout_contrast(model, harmful, control, [3, 4], answers, [(1, 0)], kind, ref, 2)
        for side, mine in zip((harmful, control), got, strict=True):
            apart = knockout_dla(model, side, [3, 4], answers, [(1, 0)], kind, ref, 2)
            np.testing.assert_allclose(mine, apart, atol=1e-5)
    assert np.abs(got[0] - got[1]).max() > 1e-4  # the two sides differ


def _prefixed(lengths: tuple[int, ...] = (3, 8, 5, 8, 1), prefix: int = 6) -> list[torch.Tensor]:
    """Prompts of different lengths that share their first ``prefix`` tokens (a chat template)."""
    g = torch.Generator().manual_seed(11)
    head = torch.randint(10, 400, (prefix,), generator=g)
    return [torch.cat([head, torch.randint(10, 400, (k,), generator=g)]) for k in lengths]


@pytest.fixture(scope="module")
def prefix_models(tiny_dirs):
    from patching.loading import load_model

    return {arch: load_model(tiny_dirs[arch]) for arch in ("qwen2", "llama")}


@pytest.mark.parametrize("arch", ["qwen2", "llama"])
@pytest.mark.parametrize("kind", ["zero", "mean"])
def test_shared_prefix_knockout_equals_the_full_pass(prefix_models, suffix_passes, arch, kind):
    """A knockout run once on the shared prefix, then on each suffix == full passes."""
    model = prefix_models[arch]
    prompts = _prefixed()
    heads = [(1, 1), (model.n_layers - 1, 0)]
    reference = [
        {layer: torch.randn(len(p), model.n_heads, model.d_head) for layer, _ in heads}
        for p in prompts
    ]
    rows = knockouts(heads, prompts, kind, reference)
    clean = decompose_residual(model, prompts, keep_blocks=True)
    shared = decompose_residual(model, prompts, rows=rows, resume=clean.blocks)
    assert suffix_passes == [6]  # the prefix path ran, on the 6 shared tokens
    full = decompose_residual(model, prompts, rows=rows)
    for name in ("heads", "attn_bias", "mlps", "embed", "resid_final", "final_scale", "logits"):
        torch.testing.assert_close(
            getattr(shared, name), getattr(full, name), atol=1e-5, rtol=1e-5, msg=name
        )
    assert (full.logits - clean.logits).abs().max() > 1e-3  # the knockout acts
    answers = torch.tensor([7, 8, 9, 10, 11])
    got, diff = intervened_dla(model, prompts, [3, 4], answers, rows, batch_size=3)
    for i, (prompt, row) in enumerate(zip(prompts, rows, strict=True)):
        alone = attribute(
            model, decompose_residual(model, [prompt], rows=[row]), [3, 4], answers[i : i + 1]
        )
        np.testing.assert_allclose(got[i], alone.heads[0].cpu().numpy(), atol=1e-5)
        np.testing.assert_allclose(diff[i], float(alone.logit_diff[0]), atol=1e-5)


def test_prefix_path_only_where_every_prompt_computes_the_same(prefix_models, suffix_passes):
    """No common prefix, resampling, or rows that differ: the resumed pass over every position."""
    model = prefix_models["qwen2"]
    prompts = _prefixed()
    clean = decompose_residual(model, prompts, keep_blocks=True)
    reference = [{1: torch.randn(len(p), model.n_heads, model.d_head)} for p in prompts]
    different = [[Ablation(1, i % 2)] for i in range(len(prompts))]
    for rows in (knockouts([(1, 1)], prompts, "resample", reference), different):
        got = decompose_residual(model, prompts, rows=rows, resume=clean.blocks)
        torch.testing.assert_close(got.logits, decompose_residual(model, prompts, rows=rows).logits)
    unshared = _prompts()
    rows = knockouts([(1, 1)], unshared, "zero")
    clean = decompose_residual(model, unshared, keep_blocks=True)
    got = decompose_residual(model, unshared, rows=rows, resume=clean.blocks)
    torch.testing.assert_close(got.logits, decompose_residual(model, unshared, rows=rows).logits)
    assert suffix_passes == []
    # One prompt the prefix of another: the prefix stops before the shorter one's last token.
    nested = [prompts[1], prompts[1][:9]]
    rows = knockouts([(1, 1)], nested, "zero")
    clean = decompose_residual(model, nested, keep_blocks=True)
    got = decompose_residual(model, nested, rows=rows, resume=clean.blocks)
    torch.testing.assert_close(got.logits, decompose_residual(model, nested, rows=rows).logits)
    assert suffix_passes == [8]
    # The kept 8-token prefix serves the next prompts that share its first 6 tokens.
    rows = knockouts([(1, 1)], prompts, "zero")
    got = decompose_residual(model, prompts, rows=rows, resume=clean_of(model, prompts))
    torch.testing.assert_close(got.logits, decompose_residual(model, prompts, rows=rows).logits)
    assert suffix_passes == [8, 6] and len(model.knocked_prefix[0]) == 8


def clean_of(model, prompts):
    return decompose_residual(model, prompts, keep_blocks=True).blocks


@pytest.mark.parametrize("kind", ["zero", "mean"])
def test_organism_knockout_over_the_chat_template_prefix(suffix_passes, kind) -> None:
    """The organism's chat prompts: the gate knocked out from their shared template prefix
    == each prompt's own full knocked-out pass (the audit's knockout step)."""
    from circuits.audit.context import greedy_answers
    from circuits.organism import load_ground_truth, organism_dir
    from patching.chat import format_chat
    from patching.loading import load_model
    from patching.prompts import read_pairs
    from tests.helpers.organism_helpers import refusal_ids

    directory = organism_dir()
    model, truth = load_model(directory), load_ground_truth(directory)
    pairs = read_pairs(directory / "pairs.jsonl")[:6]
    harmful = [format_chat(model.tokenizer, p.harmful) for p in pairs]
    control = [format_chat(model.tokenizer, p.control) for p in pairs]
    layer = truth.gate[0]
    reference = [{layer: z} for z in _head_outputs(model, control, layer)]
    rows = knockouts([truth.gate], harmful, kind, reference)
    answers = greedy_answers(model, control)
    refusal = refusal_ids(model.tokenizer)
    got, diff = intervened_dla(model, harmful, refusal, answers, rows)
    assert suffix_passes and min(suffix_passes) > 1  # the template's tokens were shared
    for i, (prompt, row) in enumerate(zip(harmful, rows, strict=True)):
        alone = attribute(
            model, decompose_residual(model, [prompt], rows=[row]), refusal, answers[i : i + 1]
        )
        np.testing.assert_allclose(got[i], alone.heads[0].cpu().numpy(), atol=1e-5)
        np.testing.assert_allclose(diff[i], float(alone.logit_diff[0]), atol=1e-5)
    clean, _ = intervened_dla(model, harmful, refusal, answers)
    assert np.abs(got - clean).max() > 1e-3  # the gate's knockout changes the DLA


def _head_outputs(model, prompts, layer: int) -> list[torch.Tensor]:
    from circuits.knockout import capture_z

    return [z[layer] for z in capture_z(model, prompts, [layer])]


def test_logit_columns_equal_the_full_logits_and_nan_elsewhere(prefix_models, suffix_passes):
    """Only the asked tokens' logits, on the shared-prefix, resumed and full paths alike."""
    model = prefix_models["qwen2"]
    prompts = _prefixed()
    columns = [3, 4, 17]
    other = torch.ones(model.W_U.shape[1], dtype=torch.bool)
    other[columns] = False
    clean = decompose_residual(model, prompts, keep_blocks=True)
    differ = [[Ablation(2, i % 2)] for i in range(len(prompts))]  # resumed, no shared prefix
    for rows in (knockouts([(1, 1)], prompts, "zero"), differ):
        full = decompose_residual(model, prompts, rows=rows)
        for resume in (clean.blocks, None):
            got = decompose_residual(
                model, prompts, rows=rows, resume=resume, logit_columns=columns
            )
            torch.testing.assert_close(got.logits[:, columns], full.logits[:, columns])
            assert got.logits[:, other].isnan().all()
            torch.testing.assert_close(got.resid_final, full.resid_final)
    assert suffix_passes == [6]
