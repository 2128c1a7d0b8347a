"""Attribution patching: one forward + backward; exact where the model is linear in z."""

from __future__ import annotations

import pytest
import torch

from attribution.interchange import interchange_test
from attribution.metrics import LogitDiffMetric
from attribution.refusal_tokens import refusal_token_ids
from patching.alignment import align_pair
from patching.chat import format_chat
from patching.gradient_estimate import attribution_estimate
from patching.interchange import interchange
from patching.prompts import builtin_pairs


@pytest.mark.parametrize("arch", ["qwen2", "gpt2"])
@pytest.mark.engine
def test_last_layer_estimate_equals_exact_patching(tiny_dirs, arch) -> None:
    """Random prompts; the last layer reaches the logits linearly up to the final norm.

    The control is the harmful prompt with one token changed, so the patch is small and
    the final norm's curvature (the only nonlinearity left) is second order.
    """
    from patching.loading import load_model

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


def _plain_estimate(model, pair, metric, index, base, source):
    """The estimate from scratch: full-length runs, one prompt each, plain autograd."""
    from patching.interventions import z_hook

    def run(tokens, grad):
        zs = []

        def keep(z, hook):
            if grad:
                z.retain_grad()
            zs.append(z)
            return z

        def leaf(x, hook):
            return x.detach().requires_grad_(grad)  # the parameters are frozen

        hooks = [("hook_embed", leaf)] + [(z_hook(layer), keep) for layer in range(model.n_layers)]
        with torch.set_grad_enabled(grad):
            logits = model.bridge.run_with_hooks(tokens[None], fwd_hooks=hooks)
            value = metric(logits[:, -1:], index)[0]
            if grad:
                value.backward()
        return value.detach().double(), zs

    value, z_base = run(getattr(pair, base), True)
    _, z_source = run(getattr(pair, source), False)
    n = pair.overlap
    estimate = torch.zeros(model.n_layers, model.n_heads, dtype=torch.float64)
    for layer in range(model.n_layers):
        delta = z_source[layer][0, -n:] - z_base[layer][0, -n:]
        estimate[layer] = torch.einsum("phd,phd->h", delta, z_base[layer].grad[0, -n:]).double()
    return value + estimate


@pytest.mark.parametrize("case", ["same-length", "longer-control", "two-pairs"])
@pytest.mark.engine
def test_estimate_equals_plain_autograd(tiny_dirs, case) -> None:
    """Batched prompts, cached shared opening and layer-0 leaf give the plain estimate.

    Same length: both prompts in one pass from the first differing token. A control
    one token longer (a token repeated at the start): right-aligned, the harmful
    prompt left-padded in the same pass. Two pairs of one length with different
    shared openings: four rows in one pass.
    """
    from patching.loading import load_model

    model = load_model(tiny_dirs["qwen2"])
    tok = model.tokenizer
    p = builtin_pairs(1)[0]
    h, c = format_chat(tok, p.harmful), format_chat(tok, p.control)
    n = min(len(h), len(c))
    tokens = torch.cat([h.tokens[: len(h) - n], c.tokens[len(c) - n :]])
    if case == "longer-control":
        tokens = torch.cat([tokens[:2], tokens[1:]])
    shift = len(tokens) - len(h)
    c = type(c)(c.instruction, c.text, tokens, h.t_inst + shift, h.t_post_inst + shift)
    pairs = [align_pair(h, c)]
    if case == "two-pairs":
        late = h.tokens.clone()
        late[h.t_inst] = (late[h.t_inst] + 7) % 400 + 10
        pairs.append(align_pair(h, type(c)(c.instruction, c.text, late, h.t_inst, h.t_post_inst)))
        assert pairs[1].shared > pairs[0].shared
    assert (pairs[0].shared > 1) == (case != "longer-control")
    metric = LogitDiffMetric(refusal_token_ids(tok), [5, 9])
    estimate = attribution_estimate(model, pairs, metric, progress=False)
    assert estimate.stats.forward_passes == 1
    for i, pair in enumerate(pairs):
        for direction, base, source in (
            ("necessity", "harmful", "control"),
            ("sufficiency", "control", "harmful"),
        ):
            torch.testing.assert_close(
                estimate.patched[direction][i],
                _plain_estimate(model, pair, metric, i, base, source),
                atol=1e-5,
                rtol=1e-5,
            )


def test_prescreen_runs_exact_top_k_only(tiny_dirs) -> None:
    from patching.loading import load_model

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


@pytest.mark.parametrize("arch", ["qwen2", "gpt2"])
@pytest.mark.engine
def test_output_attribution_is_the_derivative_of_scaling(tiny_dirs, arch) -> None:
    """``z . dm/dz`` per head == d m(alpha z_h) / d alpha at 1, by central differences.

    In float64 on equal-length prompts (the derivative); in float32 (the
    audit's dtype) a left-padded batch equals each prompt alone: padding adds nothing.
    """
    from attribution.metrics import refusal_score
    from patching.executor import run
    from patching.gradient_estimate import output_attribution
    from patching.interventions import Scale
    from patching.loading import load_model

    ids = [3, 4, 5]

    def score_of(logits: torch.Tensor) -> torch.Tensor:
        return refusal_score(logits, ids)

    g = torch.Generator().manual_seed(2)
    model = load_model(tiny_dirs[arch], dtype="float64")
    prompts = [torch.randint(10, 400, (9,), generator=g) for _ in range(3)]
    got = output_attribution(model, prompts, score_of)
    # The tiny models' float64 runs still round at ~1e-7 in the score, so the central
    # difference needs a step where that noise stays under 1e-3; the effects are O(1).
    eps = 1e-3
    for layer, head in [(0, 1), (model.n_layers // 2, 0), (model.n_layers - 1, 2)]:

        def score(alpha: float, layer: int = layer, head: int = head) -> torch.Tensor:
            rows = [[Scale(layer, head, alpha=alpha)] for _ in prompts]
            return score_of(run(model, prompts, rows)[:, -1])

        slope = (score(1 + eps) - score(1 - eps)) / (2 * eps)
        torch.testing.assert_close(got[:, layer, head], slope.double(), atol=2e-3, rtol=0.0)
    assert got.abs().max() > 1e-3  # the heads do move the score
    model = load_model(tiny_dirs[arch])
    padded = [torch.randint(10, 400, (k,), generator=g) for k in (7, 12, 9)]
    batched = output_attribution(model, padded, score_of)
    alone = torch.cat([output_attribution(model, [p], score_of) for p in padded])
    torch.testing.assert_close(batched, alone, atol=1e-5, rtol=1e-4)
