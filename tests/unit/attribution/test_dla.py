"""Direct logit attribution: the identity, TransformerLens's reference, the result object."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from attribution.dla import DLAResult, attribute, direct_logit_attribution
from attribution.metrics import greedy_token, refusal_direction, refusal_logit_diff
from attribution.refusal_tokens import refusal_token_ids
from patching.chat import format_chat
from patching.components import decompose_residual
from patching.errors import RefusalCircuitsError
from patching.prompts import builtin_pairs
from tests.helpers.identities import assert_dla_identity

PAIRS = builtin_pairs(6)


@pytest.fixture(scope="module")
def results(tiny_dirs) -> dict[str, DLAResult]:
    from patching.loading import load_model

    return {
        arch: direct_logit_attribution(load_model(d), PAIRS, n_boot=200, progress=False)
        for arch, d in tiny_dirs.items()
    }


@pytest.mark.engine
def test_decomposition_sums_to_final_residual(tiny_model) -> None:
    prompt = format_chat(tiny_model.tokenizer, PAIRS[0].harmful)
    dec = decompose_residual(tiny_model, prompt.tokens[None])
    torch.testing.assert_close(dec.total(), dec.resid_final, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("arch", ["qwen2", "llama", "gpt2", "gemma2"])
@pytest.mark.engine
def test_components_sum_to_logit_difference(results, arch: str) -> None:
    """Per-head DLA + every other component == the logit diff read off the logits."""
    assert_dla_identity(results[arch])


@pytest.mark.engine
def test_logit_diff_matches_an_independent_forward(tiny_dirs) -> None:
    """The logit difference in the result equals one computed from a plain HF forward."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from patching.loading import load_model

    directory = tiny_dirs["qwen2"]
    r = direct_logit_attribution(load_model(directory), PAIRS[:2], n_boot=50, progress=False)
    hf = AutoModelForCausalLM.from_pretrained(str(directory)).eval()
    tok = AutoTokenizer.from_pretrained(str(directory))
    ids = refusal_token_ids(tok)
    for i, pair in enumerate(PAIRS[:2]):
        with torch.no_grad():
            control = hf(format_chat(tok, pair.control).tokens[None]).logits[:, -1]
            harmful = hf(format_chat(tok, pair.harmful).tokens[None]).logits[:, -1]
        answer = greedy_token(control)
        assert tok.convert_ids_to_tokens(int(answer)) == r.answer_tokens[i]
        assert float(refusal_logit_diff(harmful, ids, answer)) == pytest.approx(
            r.harmful_logit_diff[i], abs=1e-4
        )


@pytest.mark.parametrize("arch", ["qwen2", "llama", "gpt2", "gemma2"])
@pytest.mark.engine
def test_per_head_equals_transformer_lens_compatibility_mode(tiny_dirs, arch: str) -> None:
    """Our explicit-gain DLA equals TL's own logit_attrs on a weight-processed bridge."""
    from transformer_lens.model_bridge import TransformerBridge

    from patching.loading import load_model

    model = load_model(tiny_dirs[arch])
    ref = TransformerBridge.boot_transformers(str(tiny_dirs[arch]), device="cpu")
    ref.enable_compatibility_mode(disable_warnings=True)
    ref.set_use_attn_result(True)
    ids = refusal_token_ids(model.tokenizer)
    prompt = format_chat(model.tokenizer, PAIRS[1].harmful)
    tokens = prompt.tokens[None]
    dec = decompose_residual(model, tokens)
    answer = greedy_token(dec.logits)
    ours = attribute(model, dec, ids, answer).heads[0].flatten()

    _, cache = ref.run_with_cache(tokens)
    stack = cache.stack_head_results(layer=-1, pos_slice=-1)
    if arch == "gemma2":
        # TL's head results are taken before Gemma's post-attention norm; map each
        # through that norm (frozen scale, gain 1 + w) as the residual stream sees it.
        stack = stack.view(model.n_layers, model.n_heads, *stack.shape[1:])
        for layer in range(model.n_layers):
            scale = cache[f"blocks.{layer}.ln1_post.hook_scale"][:, -1]
            gain = 1.0 + ref.blocks[layer].ln1_post.weight
            stack[layer] = stack[layer] / scale * gain
        stack = stack.flatten(0, 1)
    # logit_attrs takes one token against one token; by linearity the mean over R
    # minus the answer is the mean of the per-token attributions.
    per_token = [
        cache.logit_attrs(stack, tokens=torch.tensor([t]), incorrect_tokens=answer, pos_slice=-1)
        for t in ids
    ]
    theirs = torch.stack(per_token).mean(0)[:, 0].double()
    torch.testing.assert_close(ours, theirs, atol=1e-4, rtol=1e-3)


def test_direction_is_mean_refusal_minus_answer(tiny_model) -> None:
    ids = refusal_token_ids(tiny_model.tokenizer)
    d = refusal_direction(tiny_model.W_U, ids, torch.tensor([7]))
    expected = tiny_model.W_U.double()[:, ids].mean(1) - tiny_model.W_U.double()[:, 7]
    torch.testing.assert_close(d[0], expected)


def test_result_round_trips_through_json(results, tmp_path) -> None:
    r = results["qwen2"]
    path = tmp_path / "dla.json"
    r.to_json(path)
    data = json.loads(path.read_text())
    for key in (
        "model",
        "n_layers",
        "n_heads",
        "n_pairs",
        "per_head",
        "per_head_ci_low",
        "per_head_ci_high",
        "components",
        "total_logit_diff",
        "remainder",
    ):
        assert key in data
    back = DLAResult.from_json(path)
    np.testing.assert_array_equal(back.per_head, r.per_head)
    np.testing.assert_array_equal(back.per_head_ci[0], r.per_head_ci[0])
    assert back.components == r.components
    assert back.answer_tokens == r.answer_tokens


def test_bootstrap_interval_brackets_mean_and_is_seeded(results) -> None:
    r = results["llama"]
    low, high = r.per_head_ci
    assert np.all(low <= r.per_head + 1e-12) and np.all(r.per_head <= high + 1e-12)
    again = DLAResult.from_dict(r.to_dict())
    np.testing.assert_array_equal(again.per_head_ci[1], high)


def test_top_is_sorted_and_labelled(results) -> None:
    r = results["gpt2"]
    top = r.top(5)
    values = [s.value for s in top]
    assert values == sorted(values, reverse=True)
    assert top[0].value == pytest.approx(r.per_head.max())
    assert r.per_head[top[0].layer, top[0].head] == top[0].value
    by_abs = r.top(3, by="abs")
    assert abs(by_abs[0].value) == pytest.approx(np.abs(r.per_head).max())
    frame = r.to_dataframe()
    assert len(frame) == r.n_layers * r.n_heads
    assert frame["diff"].max() == pytest.approx(r.per_head.max())


def test_gemma_result_says_it_is_approximate(results) -> None:
    assert results["gemma2"].exact is False
    assert "soft-caps" in results["gemma2"].note
    assert results["qwen2"].exact is True


def test_no_pairs_is_a_clear_error(tiny_dirs) -> None:
    from patching.loading import load_model

    with pytest.raises(RefusalCircuitsError, match="no prompt pairs"):
        direct_logit_attribution(load_model(tiny_dirs["qwen2"]), [], progress=False)


def test_decomposition_of_an_intervened_run(tiny_dirs) -> None:
    """Hooks passed as interventions change the run that is decomposed, identity intact."""
    from patching.loading import load_model

    model = load_model(tiny_dirs["qwen2"])
    tokens = format_chat(model.tokenizer, PAIRS[0].harmful).tokens[None]

    def zero_head(z: torch.Tensor, hook: object) -> torch.Tensor:
        z = z.clone()
        z[:, :, 1] = 0.0
        return z

    dec = decompose_residual(model, tokens, interventions=[("blocks.0.attn.hook_z", zero_head)])
    assert torch.count_nonzero(dec.heads[:, 0, 1]) == 0
    torch.testing.assert_close(dec.total(), dec.resid_final, atol=1e-5, rtol=1e-5)
    clean = decompose_residual(model, tokens)
    assert not torch.allclose(dec.resid_final, clean.resid_final)
