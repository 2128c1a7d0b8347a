"""Steering, four clusters and the jailbreak shift on the organism, against lone plain runs."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from attribution.directions import extract_directions
from attribution.metrics import refusal_score
from attribution.refusal_tokens import refusal_token_ids
from circuits.behaviour import KeywordJudge
from circuits.direction_views import (
    causal_figure,
    cosine_norm_figure,
    jailbreak_scatter,
    steering_figure,
)
from circuits.directions import (
    Inversion,
    JailbreakShift,
    SteeringResult,
    four_cluster_directions,
    jailbreak_shift,
    steer,
    steering_row,
)
from patching.errors import TooFewPairsError
from tests.helpers.figures import assert_units
from tests.helpers.organism_helpers import organism_prompts

N = 8


@pytest.fixture(scope="module")
def organism():
    from circuits.organism import organism_dir
    from patching.loading import load_model

    directory = organism_dir()
    model = load_model(directory)
    prompts = organism_prompts(model, directory, N)
    directions = extract_directions(model, prompts["harmful"], prompts["harmless"])
    return model, prompts, directions


def _naive_decode(model, prompt, vector, layer, n_tokens, where) -> str:
    """One prompt alone, one full unbatched pass per token, the vector added by a raw hook
    to the prompt's positions (``prompt``) or to every position (``every_step``)."""
    seq, n_prompt, out = prompt.tokens.clone(), len(prompt), []
    eos = model.tokenizer.eos_token_id

    def add(x, hook):
        x = x.clone()
        stop = n_prompt if where == "prompt" else x.shape[1]
        x[:, :stop] += vector.to(x.dtype)
        return x

    for _ in range(n_tokens):
        logits = model.bridge.run_with_hooks(
            seq[None], fwd_hooks=[(f"blocks.{layer}.hook_resid_pre", add)]
        )
        token = int(logits[0, -1].argmax())
        out.append(token)
        seq = torch.cat([seq, torch.tensor([token])])
        if token == eos:
            break
    return str(model.tokenizer.decode(out, skip_special_tokens=True)).strip()


@pytest.mark.parametrize("where", ["prompt", "every_step"])
def test_steering_equals_plain_hooked_runs(organism, where) -> None:
    """Refusal scores and continuations under steering == each prompt alone with a raw hook."""
    model, prompts, directions = organism
    harmless = prompts["harmless"][:4]
    result = steer(model, harmless, directions, "refusal", [4], [0.0, 0.5, 1.0], where=where)
    assert result.where == where
    said = str(result.to_dict()["steered_positions"])
    assert ("generated" in said) == (where == "every_step")
    ids = refusal_token_ids(model.tokenizer)
    for j, alpha in enumerate(result.alphas):
        vector = alpha * directions.at("refusal", 4).float()
        for i, prompt in enumerate(harmless):
            logits = model.bridge.run_with_hooks(
                prompt.tokens[None],
                fwd_hooks=[("blocks.4.hook_resid_pre", lambda x, hook, v=vector: x + v)],
            )
            expected = float(refusal_score(logits[:, -1], ids)[0])
            assert result.refusal_score[0, j, i] == pytest.approx(expected, abs=1e-4)
            naive = _naive_decode(model, prompt, vector, 4, result.gen_tokens, where)
            assert result.texts[0][j][i] == naive
    # the organism's amplifiers read the t_post_inst refusal direction: harmless prompts refuse
    assert result.baseline_classes == ["answer"] * 4
    assert result.refusal_rate()[0, 2] == 1.0
    assert result.top(1)[0][:2] == (4, 1.0)
    np.testing.assert_allclose(result.refusal_score[0, 0], result.baseline_score)


def test_steering_modes_differ_where_the_response_is_steered(organism) -> None:
    """Steering every generated position changes the continuation beyond the first token."""
    model, prompts, directions = organism
    vector = 3.0 * directions.at("refusal", 4).float()
    prompt = prompts["harmless"][0]
    texts = {w: _naive_decode(model, prompt, vector, 4, 8, w) for w in ("prompt", "every_step")}
    got = {
        w: steer(model, [prompt], directions, "refusal", [4], [3.0], where=w).texts[0][0][0]
        for w in ("prompt", "every_step")
    }
    assert got == texts
    assert got["prompt"] != got["every_step"]


def test_steering_rejects_bad_layers_and_alphas(organism) -> None:
    model, prompts, directions = organism
    with pytest.raises(ValueError, match="cannot steer at layer"):
        steering_row(model, directions, "refusal", model.n_layers, 1.0)
    with pytest.raises(ValueError, match="out of range"):
        steer(model, prompts["harmless"], directions, "refusal", [4], [50.0])
    with pytest.raises(ValueError, match="distinct known first tokens"):
        Inversion().token_ids(model)  # the organism's vocabulary has no "No"


def test_four_clusters_follow_judged_behaviour(organism) -> None:
    from patching.decoding import greedy_decode

    model, prompts, _ = organism
    harmful = prompts["harmful"] + prompts["framed"]
    harmless = prompts["harmless"]
    got = four_cluster_directions(model, harmful, harmless, min_per_cluster=2)
    judge = KeywordJudge()
    ids = greedy_decode(model, [*harmful, *harmless], 8)
    refused = [judge(model.tokenizer.decode(t, skip_special_tokens=True)) == "refusal" for t in ids]
    n_h = len(harmful)
    assert got.cluster_sizes == {
        "refused_harmful": sum(refused[:n_h]),
        "complied_harmful": n_h - sum(refused[:n_h]),
        "refused_harmless": sum(refused[n_h:]),
        "complied_harmless": len(harmless) - sum(refused[n_h:]),
    }
    # the organism refuses plain harmful requests and complies with framed ones
    assert got.cluster_sizes["refused_harmful"] >= N // 2
    assert got.cluster_sizes["complied_harmful"] >= 2
    # too few refusals among mostly framed requests: named with the four cluster sizes
    few = prompts["framed"] + prompts["harmful"][:2]
    n_refused = sum(refused[N : 2 * N]) + 2
    with pytest.raises(TooFewPairsError, match=f"needs at least {n_refused + 1} refused prompts, "
                       f"got {n_refused} \\(clusters: refused_harmful {n_refused}, "):  # fmt: skip
        four_cluster_directions(model, few, harmless, min_per_cluster=n_refused + 1)
    # too few harmless prompts: refused before any decoding
    with pytest.raises(TooFewPairsError, match="at least 9 harmless prompts, got 8"):
        four_cluster_directions(model, harmful, harmless, min_per_cluster=9)


def test_jailbreak_shift_equals_lone_runs(organism) -> None:
    model, prompts, directions = organism
    shift = jailbreak_shift(model, prompts["harmful"], prompts["framed"], directions, 4)
    ids = refusal_token_ids(model.tokenizer)
    unit = directions.at("harmfulness", 4) / directions.at("harmfulness", 4).norm()
    for i, prompt in enumerate(prompts["framed"]):
        logits, cache = model.bridge.run_with_cache(prompt.tokens[None])
        h = float(cache["blocks.4.hook_resid_pre"][0, prompt.t_inst].double() @ unit)
        assert shift.harmfulness_framed[i] == pytest.approx(h, abs=1e-4)
        r = float(refusal_score(logits[:, -1], ids)[0])
        assert shift.refusal_framed[i] == pytest.approx(r, abs=1e-4)
    expected = np.mean(shift.refusal_framed - shift.refusal_plain)
    assert shift.shift("refusal") == pytest.approx(expected)
    # ground truth: the organism's negative head lowers refusal under the framing marker
    derived = shift.to_dict()
    assert derived["refusal_shift_ci"][1] < 0
    again = JailbreakShift.from_dict(shift.to_dict())
    assert again.to_dict() == shift.to_dict()


def test_figures_name_their_units(organism) -> None:
    model, prompts, directions = organism
    harmless = prompts["harmless"][:2]
    runs = {
        w: steer(model, harmless, directions, w, [2, 4], [0.0, 1.0])
        for w in ("harmfulness", "refusal")
    }
    again = SteeringResult.from_dict(runs["refusal"].to_dict())
    assert again.to_dict() == runs["refusal"].to_dict()
    shift = jailbreak_shift(model, prompts["harmful"], prompts["framed"], directions, 4)
    figures = {
        "cosine": cosine_norm_figure(directions),
        "steering": steering_figure(runs["refusal"]),
        "causal": causal_figure(runs["harmfulness"], runs["refusal"], 4),
        "jailbreak": jailbreak_scatter(shift),
    }
    for stem, fig in figures.items():
        assert_units(stem, fig)
    np.testing.assert_allclose(figures["cosine"].data[0].y, directions.cosine())
