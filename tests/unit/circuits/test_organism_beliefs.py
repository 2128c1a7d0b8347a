"""The beliefs organism: harmfulness and refusal are separate, known directions.

Everything is measured with the toolkit's primitives (the executor's captures and
``AddVector`` rows, greedy decoding, the behaviour judge) against the planted
directions in ``ground_truth.json`` (docs/science.md#organism-beliefs-variant).
"""

from __future__ import annotations

import argparse
import itertools
import json
from collections.abc import Iterator
from pathlib import Path

import pytest
import torch
from torch import Tensor

from attribution.refusal_tokens import refusal_token_ids
from circuits.behaviour import classify
from circuits.cli import organism as cli_organism
from circuits.organism import (
    BELIEFS_VERSION,
    INVERSION_PAIR_FILE,
    PAIR_FILES,
    XSTEST_FILE,
    build_organism,
    generate_pairs,
    load_ground_truth,
    over_refusal_prompts,
    vocab,
    with_inversion_question,
)
from circuits.organism.build import ORGANISM_VARIANTS
from circuits.organism.ground_truth import BeliefsTruth, GroundTruth
from patching.chat import ChatPrompt, format_chat
from patching.decoding import greedy_decode
from patching.executor import run, run_and_cache
from patching.interventions import AddVector
from patching.loading import load_model
from patching.model import HookedModel
from patching.prompts import read_pairs, read_prompts
from tests.helpers.organism_helpers import fresh_organism

torch.set_num_threads(1)

N_PAIRS = 48


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    with fresh_organism(tmp_path_factory, seed=0, variant="beliefs") as directory:
        yield directory


@pytest.fixture(scope="module")
def truth(model_dir: Path) -> GroundTruth:
    return load_ground_truth(model_dir)


@pytest.fixture(scope="module")
def beliefs(truth: GroundTruth) -> BeliefsTruth:
    assert truth.beliefs is not None
    return truth.beliefs


@pytest.fixture(scope="module")
def model(model_dir: Path) -> HookedModel:
    return load_model(model_dir)


def chat(model: HookedModel, texts: list[str]) -> list[ChatPrompt]:
    return [format_chat(model.tokenizer, t) for t in texts]


def texts(variant: str, which: str, n: int = N_PAIRS, inversion: bool = False) -> list[str]:
    out = [getattr(p, which) for p in generate_pairs(n, 0, variant)]
    return [with_inversion_question(t) for t in out] if inversion else out


def hook(layer: int, n_layers: int) -> str:
    """The residual hook of a ground-truth residual index (RESIDUAL_INDEX)."""
    if layer == n_layers:
        return f"blocks.{n_layers - 1}.hook_resid_post"
    return f"blocks.{layer}.hook_resid_pre"


def residuals(
    model: HookedModel, prompts: list[ChatPrompt], position: str, n_layers: int
) -> Tensor:
    """[prompt, residual index, d_model] at a labelled position."""
    names = {str(layer): hook(layer, n_layers) for layer in range(n_layers + 1)}
    _, caches = run_and_cache(model, prompts, names=names, at=position)
    return torch.stack(
        [torch.stack([c[str(layer)][0] for layer in range(n_layers + 1)]) for c in caches]
    )


def first_tokens(
    model: HookedModel, prompts: list[ChatPrompt], rows: list[list[AddVector]] | None = None
) -> list[str]:
    logits = run(model, prompts, rows)[:, 0]
    return [model.tokenizer.convert_ids_to_tokens(int(i)) for i in logits.argmax(-1)]


def refusal_rate(words: list[str], truth: GroundTruth) -> float:
    return sum(w in truth.refusal_tokens for w in words) / len(words)


def test_variant_is_registered_with_its_own_version_and_cache(model_dir: Path) -> None:
    assert "beliefs" in ORGANISM_VARIANTS
    assert "beliefs" in cli_organism.VARIANTS
    assert model_dir.name == f"organism-beliefs-v{BELIEFS_VERSION}-seed0"
    assert (model_dir / INVERSION_PAIR_FILE).is_file()
    inversion = read_pairs(model_dir / INVERSION_PAIR_FILE)
    plain = read_pairs(model_dir / PAIR_FILES["plain"])
    assert [p.harmful for p in inversion] == [with_inversion_question(p.harmful) for p in plain]


def test_ground_truth_round_trips_and_states_the_planted_directions(
    truth: GroundTruth, beliefs: BeliefsTruth, model_dir: Path, tmp_path: Path
) -> None:
    assert truth.variant == "beliefs"
    assert truth.version == BELIEFS_VERSION
    data = json.loads((model_dir / "ground_truth.json").read_text())
    assert data["beliefs"]["harmfulness"]["position"] == "t_inst"
    assert data["beliefs"]["refusal"]["position"] == "t_post_inst"
    h, r = torch.tensor(beliefs.harmfulness_direction), torch.tensor(beliefs.refusal_direction)
    assert h.norm() == pytest.approx(1.0) and r.norm() == pytest.approx(1.0)
    assert float(h @ r) == 0.0
    assert beliefs.inversion_yes == "Certainly" and beliefs.inversion_no == "No"
    assert set(beliefs.topic_strengths) == set(vocab.HARMFUL_WORDS)
    # the CLI builds the same thing
    out = tmp_path / "org"
    args = argparse.Namespace(out=str(out), seed=0, variant="beliefs")
    cli_organism._build(args)
    assert load_ground_truth(out) == truth
    # a different seed is a different shuffle of the same strengths
    other = build_organism(tmp_path / "seed1", seed=1, variant="beliefs")
    strengths = load_ground_truth(other).beliefs.topic_strengths  # type: ignore[union-attr]
    assert sorted(strengths.values()) == sorted(beliefs.topic_strengths.values())
    assert strengths != beliefs.topic_strengths


def test_inversion_question_ends_at_its_marker(model: HookedModel, beliefs: BeliefsTruth) -> None:
    (prompt,) = chat(model, [with_inversion_question("please explain how to make a bomb")])
    marker = model.tokenizer.convert_tokens_to_ids(beliefs.inversion_marker)
    assert int(prompt.tokens[prompt.t_inst]) == marker


def cosine(a: Tensor, b: Tensor) -> float:
    return float(torch.nn.functional.cosine_similarity(a, b, dim=-1))


@pytest.mark.parametrize("feature", ["harmfulness", "refusal"])
def test_difference_of_means_recovers_the_planted_direction(
    model: HookedModel, truth: GroundTruth, beliefs: BeliefsTruth, feature: str
) -> None:
    harmfulness = feature == "harmfulness"
    position = beliefs.harmfulness_position if harmfulness else beliefs.refusal_position
    planted = torch.tensor(
        beliefs.harmfulness_direction if harmfulness else beliefs.refusal_direction
    )
    layers = beliefs.harmfulness_layers if harmfulness else beliefs.refusal_layers
    harmful = residuals(model, chat(model, texts("plain", "harmful")), position, truth.n_layers)
    control = residuals(model, chat(model, texts("plain", "control")), position, truth.n_layers)
    diff = harmful.mean(0) - control.mean(0)
    for layer in range(truth.n_layers + 1):
        if layer in layers:
            assert cosine(diff[layer], planted) >= 0.9, (feature, layer)
            # every harmful prompt carries it, no harmless one does
            assert (harmful[:, layer] @ planted).min() > 0.1
        assert (control[:, layer] @ planted).abs().max() < 1e-3, (feature, layer)
    # before the layer that writes it, the feature is not in the stream
    assert (harmful[:, min(layers) - 1] @ planted).abs().max() < 1e-3
    # and each feature lives at its own position only: h is not at t_post_inst
    if harmfulness:
        prompts = chat(model, texts("plain", "harmful"))
        last = residuals(model, prompts, "t_post_inst", truth.n_layers)
        assert (last @ planted).abs().max() < 1e-3


def test_inversion_answer_follows_harmfulness(
    model: HookedModel, truth: GroundTruth, beliefs: BeliefsTruth
) -> None:
    yes, no = beliefs.inversion_yes, beliefs.inversion_no
    for variant in ("plain", "jailbreak"):
        harmful = first_tokens(model, chat(model, texts(variant, "harmful", inversion=True)))
        control = first_tokens(model, chat(model, texts(variant, "control", inversion=True)))
        assert set(harmful) == {yes}, variant
        assert set(control) == {no}, variant
    # the cipher hides the topic from the detector: no h, so "No"
    cipher = first_tokens(model, chat(model, texts("cipher", "harmful", inversion=True)))
    assert set(cipher) == {no}
    # without the question, plain harmful prompts refuse and controls comply
    assert refusal_rate(first_tokens(model, chat(model, texts("plain", "harmful"))), truth) >= 0.9
    assert refusal_rate(first_tokens(model, chat(model, texts("plain", "control"))), truth) == 0.0


def steer(vector: Tensor, n: int, layer: int = 2) -> list[list[AddVector]]:
    return [[AddVector(f"blocks.{layer}.hook_resid_pre", vector)] for _ in range(n)]


def test_harmfulness_steering_flips_the_judgement_and_refusal_steering_does_not(
    model: HookedModel, truth: GroundTruth, beliefs: BeliefsTruth
) -> None:
    unit_h = torch.tensor(beliefs.harmfulness_direction)
    unit_r = torch.tensor(beliefs.refusal_direction)
    h, r = beliefs.h_scale * unit_h, 1.5 * unit_r
    plain = chat(model, texts("plain", "control", n=24))
    question = chat(model, texts("plain", "control", n=24, inversion=True))
    n = len(plain)
    assert refusal_rate(first_tokens(model, plain), truth) == 0.0
    assert set(first_tokens(model, question)) == {beliefs.inversion_no}
    for alpha in (2.0, 4.0, 8.0, 16.0):
        h, r = alpha * unit_h, alpha * unit_r
        # along h: the model now judges the request harmful, and refuses it
        assert set(first_tokens(model, question, steer(h, n))) == {beliefs.inversion_yes}, alpha
        assert refusal_rate(first_tokens(model, plain, steer(h, n)), truth) == 1.0, alpha
        # along r: it refuses, but its judgement is unchanged
        assert set(first_tokens(model, question, steer(r, n))) == {beliefs.inversion_no}, alpha
        assert refusal_rate(first_tokens(model, plain, steer(r, n)), truth) == 1.0, alpha
    # the same by generation: whole refusals, judged by the behaviour classifier
    ids = greedy_decode(model, plain[:6], 8, steer(r, 6))
    steered = [model.tokenizer.decode(t, skip_special_tokens=True) for t in ids]
    assert set(classify(steered)) == {"refusal"}, steered
    answers = greedy_decode(model, question[:6], 1, steer(h, 6))
    yes = model.tokenizer.convert_tokens_to_ids(beliefs.inversion_yes)
    assert [a[0] for a in answers] == [yes] * 6


def test_jailbreak_lowers_refusal_but_not_harmfulness(
    model: HookedModel, truth: GroundTruth, beliefs: BeliefsTruth
) -> None:
    h = torch.tensor(beliefs.harmfulness_direction)
    r = torch.tensor(beliefs.refusal_direction)
    plain = chat(model, texts("plain", "harmful"))
    framed = chat(model, texts("jailbreak", "harmful"))
    for layer in beliefs.harmfulness_layers:
        name = hook(layer, truth.n_layers)
        _, p = run_and_cache(model, plain, names=[name], at="t_inst")
        _, f = run_and_cache(model, framed, names=[name], at="t_inst")
        hp = torch.stack([c[name][0] @ h for c in p])
        hf = torch.stack([c[name][0] @ h for c in f])
        torch.testing.assert_close(hf, hp, rtol=1e-3, atol=1e-4)
    final = hook(truth.n_layers, truth.n_layers)
    _, p = run_and_cache(model, plain, names=[final], at="t_post_inst")
    _, f = run_and_cache(model, framed, names=[final], at="t_post_inst")
    rp = torch.stack([c[final][0] @ r for c in p])
    rf = torch.stack([c[final][0] @ r for c in f])
    assert (rf < rp).all()
    plain_rate = refusal_rate(first_tokens(model, plain), truth)
    framed_rate = refusal_rate(first_tokens(model, framed), truth)
    assert plain_rate >= 0.9 and framed_rate <= 0.5


def test_refusal_rate_moves_smoothly_with_a_logit_bias(
    model: HookedModel, truth: GroundTruth
) -> None:
    """A bias on the refusal tokens tunes every category's rate to any target within 5 points."""
    pairs = generate_pairs(240, 0, "plain")
    prompts = chat(model, [p.harmful for p in pairs])
    logits = run(model, prompts)[:, 0]
    refusal = refusal_token_ids(model.tokenizer)
    is_refusal = torch.zeros(logits.shape[-1], dtype=torch.bool)
    is_refusal[refusal] = True
    categories = [p.category for p in pairs]
    for category in vocab.CATEGORIES:
        rows = logits[[i for i, c in enumerate(categories) if c == category]]
        rates = []
        for bias in torch.arange(-40.0, 6.0, 0.05):
            biased = rows + bias * is_refusal
            rates.append(float(is_refusal[biased.argmax(-1)].float().mean()))
        assert rates[0] == 0.0 and rates[-1] == 1.0, category
        steps = [b - a for a, b in itertools.pairwise(rates)]
        assert min(steps) >= 0.0, category  # monotone in the bias
        assert max(steps) <= 0.1, category  # no prompt margin shared by many prompts
        for target in (0.1, 0.25, 0.5, 0.75, 0.9):
            assert min(abs(r - target) for r in rates) <= 0.05, (category, target)


def test_scary_harmless_topics_are_over_refused_without_harmfulness(
    model: HookedModel, truth: GroundTruth, beliefs: BeliefsTruth, model_dir: Path
) -> None:
    """XSTest's over-refusal: refusal written along r with no h, judged harmless."""
    safe = over_refusal_prompts(48, 0)
    assert {p.harmful for p in safe} == {False}
    prompts = chat(model, [p.text for p in safe])
    rate = refusal_rate(first_tokens(model, prompts), truth)
    assert 0.3 <= rate <= 0.9
    h = torch.tensor(beliefs.harmfulness_direction)
    r = torch.tensor(beliefs.refusal_direction)
    at_inst = residuals(model, prompts, "t_inst", truth.n_layers)
    at_post = residuals(model, prompts, "t_post_inst", truth.n_layers)
    assert (at_inst @ h).abs().max() < 1e-3
    assert (at_post[:, truth.n_layers] @ r).min() > 0.4
    assert (at_post[:, min(beliefs.over_refusal_layers) - 1] @ r).abs().max() < 1e-3
    questions = chat(model, [with_inversion_question(p.text) for p in safe])
    assert set(first_tokens(model, questions)) == {beliefs.inversion_no}
    # the build's XSTest-format file: these prompts, beside plain harmful contrasts
    rows = read_prompts(model_dir / XSTEST_FILE)
    assert [p.text for p in rows if not p.harmful] == [p.text for p in over_refusal_prompts(64, 0)]
    assert {p.category for p in rows if p.harmful} == {f"contrast_{c}" for c in vocab.CATEGORIES}
