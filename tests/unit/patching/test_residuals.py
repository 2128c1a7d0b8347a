"""Residual capture at labelled positions equals each prompt's lone, unpadded run."""

from __future__ import annotations

import pytest
import torch

from patching.chat import format_chat
from patching.prompts import builtin_pairs
from patching.residuals import residual_stream, residual_streams

ARCHS = ["qwen2", "gpt2"]


@pytest.fixture(scope="module")
def models(tiny_dirs):
    from patching.loading import load_model

    return {arch: load_model(tiny_dirs[arch]) for arch in ARCHS}


def _prompts(model, n: int = 5):
    pairs = builtin_pairs()[:n]
    texts = [p.harmful for p in pairs[:3]] + [p.control for p in pairs[3:]]
    prompts = [format_chat(model.tokenizer, t) for t in texts]
    assert len({len(p) for p in prompts}) > 1  # the batch is padded
    return prompts


def _alone(model, prompt, position: int, layers: list[int]) -> torch.Tensor:
    """The plain route: one unpadded ``run_with_cache`` of the prompt alone."""
    _, cache = model.bridge.run_with_cache(prompt.tokens[None].to(model.device))
    last = model.n_layers - 1
    rows = [cache[f"blocks.{layer}.hook_resid_pre"][0, position] for layer in layers]
    rows.append(cache[f"blocks.{last}.hook_resid_post"][0, position])
    return torch.stack(rows).cpu()


@pytest.mark.parametrize("arch", ARCHS)
@pytest.mark.parametrize("position", ["t_inst", "t_post_inst", -3])
def test_residual_stream_equals_each_prompt_alone(models, arch, position) -> None:
    model = models[arch]
    prompts = _prompts(model)
    every = list(range(model.n_layers))
    got = residual_stream(model, prompts, position, batch_size=2)
    some = residual_stream(model, prompts, position, layers=[2, 0])
    assert got.shape == (len(prompts), model.n_layers + 1, model.d_model)
    for i, prompt in enumerate(prompts):
        at = prompt.position(position)
        torch.testing.assert_close(got[i], _alone(model, prompt, at, every), atol=1e-5, rtol=1e-5)
        torch.testing.assert_close(some[i], _alone(model, prompt, at, [2, 0]), atol=1e-5, rtol=1e-5)
    # t_inst and t_post_inst are different positions: the capture is not of one fixed column
    if position == "t_inst":
        post = residual_stream(model, prompts, "t_post_inst")
        assert (post[:, 1:] - got[:, 1:]).abs().max() > 1e-3


def test_residual_stream_bad_input(models) -> None:
    model = models["qwen2"]
    prompts = _prompts(model, 4)
    with pytest.raises(ValueError, match="outside this model"):
        residual_stream(model, prompts, "t_inst", layers=[model.n_layers])
    with pytest.raises(IndexError, match="outside a run"):
        residual_stream(model, prompts, 10_000)
    assert residual_stream(model, [], "t_inst").shape == (0, model.n_layers + 1, model.d_model)


def test_residual_streams_reads_several_positions_of_one_pass(models) -> None:
    model = models["qwen2"]
    prompts = _prompts(model)
    both = residual_streams(model, prompts, ["t_inst", "t_post_inst", -2], layers=[1])
    for k, position in enumerate(["t_inst", "t_post_inst", -2]):
        alone = residual_stream(model, prompts, position, layers=[1])
        torch.testing.assert_close(both[:, k], alone, atol=1e-5, rtol=1e-5)
