"""Attribution patching: one forward + backward; exact where the model is linear in z."""

from __future__ import annotations

import pytest
import torch

from attribution.nll import LogitDiffMetric
from attribution.patching_result import interchange_test
from attribution.refusal_tokens import refusal_token_ids
from patching.attribution_patching import attribution_estimate
from patching.chat import format_chat
from patching.interchange import align_pair, interchange
from patching.pairs import builtin_pairs


@pytest.mark.parametrize("arch", ["qwen2", "gpt2"])
def test_last_layer_estimate_equals_exact_patching(tiny_dirs, arch) -> None:
    """Random prompts; the last layer reaches the logits linearly up to the final norm.

    The control is the harmful prompt with one token changed, so the patch is small and
    the final norm's curvature (the only nonlinearity left) is second order.
    """
    from patching.model import load_model

    model = load_model(tiny_dirs[arch])
    tok = model.tokenizer
    h = format_chat(tok, builtin_pairs(1)[0].harmful)
    tokens = h.tokens.clone()
    tokens[h.t_inst] = (tokens[h.t_inst] + 7) % 400 + 10
    c = type(h)(h.instruction, h.text, tokens, h.t_inst, h.t_post_inst)
    pairs = [align_pair(h, c)]
    metric = LogitDiffMetric(refusal_token_ids(tok), [5])
    exact = interchange(model, pairs, metric, progress=False)
    estimate = attribution_estimate(model, pairs, metric, progress=False)
    last = model.n_layers - 1
    for d in ("necessity", "sufficiency"):
        delta_exact = exact.patched[d][0, last] - (
            exact.clean_harmful if d == "necessity" else exact.clean_control
        )
        delta_est = estimate.patched[d][0, last] - (
            estimate.clean_harmful if d == "necessity" else estimate.clean_control
        )
        torch.testing.assert_close(delta_est, delta_exact, atol=2e-3, rtol=2e-2)
    torch.testing.assert_close(estimate.clean_harmful, exact.clean_harmful, atol=1e-4, rtol=0)


def test_prescreen_runs_exact_top_k_only(tiny_dirs) -> None:
    from patching.model import load_model

    model = load_model(tiny_dirs["qwen2"])
    result = interchange_test(
        model,
        builtin_pairs(3),
        mode="prescreen",
        top_k=4,
        positions="last",
        n_boot=50,
        progress=False,
    )
    assert int((~torch.isnan(torch.tensor(result.necessity))).sum()) == 4
    attribution = interchange_test(
        model, builtin_pairs(3), mode="attribution", n_boot=50, progress=False
    )
    assert not torch.isnan(torch.tensor(attribution.necessity)).any()
