"""The realistic organism: its planted roles have a real model's effect sizes.

Measured with the toolkit's primitives (interchange test, knockout DLA, greedy
decoding and the behaviour judge), never with the audit's role rules, on the
first 24 plain pairs: the numbers the ground truth states are what a correct
tool finds (docs/science.md#realistic-organism).
"""

from __future__ import annotations

import argparse
import json
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

from attribution.interchange import interchange_test
from attribution.interchange_result import PatchingResult
from attribution.refusal_tokens import REFUSAL_WORDS, refusal_token_ids
from circuits.audit.context import greedy_answers
from circuits.behaviour import classify, greedy_continuations
from circuits.cli import organism as cli_organism
from circuits.knockout import intervened_dla
from circuits.organism import PAIR_FILES, build_organism, load_ground_truth
from circuits.organism.build import ORGANISM_VARIANTS, ORGANISM_VERSION
from circuits.organism.realistic import REALISTIC_VERSION
from patching.chat import ChatPrompt, format_chat
from patching.interventions import Scale
from patching.loading import load_model
from patching.model import HookedModel
from patching.prompts import read_pairs
from tests.helpers.organism_helpers import fresh_organism
from tests.helpers.references import knockout_dla, scores_under

torch.set_num_threads(1)

N_PAIRS = 24


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    with fresh_organism(tmp_path_factory, seed=0, variant="realistic") as directory:
        yield directory


@pytest.fixture(scope="module")
def truth(model_dir: Path):
    return load_ground_truth(model_dir)


@pytest.fixture(scope="module")
def model(model_dir: Path) -> HookedModel:
    return load_model(model_dir)


def prompts(model: HookedModel, model_dir: Path, variant: str = "plain", which: str = "harmful"):
    pairs = read_pairs(model_dir / PAIR_FILES[variant])[:N_PAIRS]
    return [format_chat(model.tokenizer, getattr(p, which)) for p in pairs]


@pytest.fixture(scope="module")
def harmful(model, model_dir) -> list[ChatPrompt]:
    return prompts(model, model_dir, "plain", "harmful")


@pytest.fixture(scope="module")
def control(model, model_dir) -> list[ChatPrompt]:
    return prompts(model, model_dir, "plain", "control")


@pytest.fixture(scope="module")
def refusal_ids(model) -> list[int]:
    return refusal_token_ids(model.tokenizer, tuple(REFUSAL_WORDS))


@pytest.fixture(scope="module")
def answers(model, control) -> torch.Tensor:
    return greedy_answers(model, control)


@pytest.fixture(scope="module")
def clean_dla(model, harmful, control, refusal_ids, answers):
    """Per-prompt head DLA on the harmful and the control prompts."""
    h, _ = intervened_dla(model, harmful, refusal_ids, answers)
    c, _ = intervened_dla(model, control, refusal_ids, answers)
    return h, c


@pytest.fixture(scope="module")
def interchange(model, model_dir) -> PatchingResult:
    pairs = read_pairs(model_dir / "pairs.jsonl")[:N_PAIRS]
    return interchange_test(model, pairs, progress=False)


# --- the build and its answer key -------------------------------------------------------


def test_own_cache_folder_and_ground_truth(model_dir: Path, truth, tmp_path: Path) -> None:
    assert model_dir.name == f"organism-realistic-v{REALISTIC_VERSION}-seed0"
    data = json.loads((model_dir / "ground_truth.json").read_text())
    assert data["variant"] == "realistic" and data["version"] == REALISTIC_VERSION
    assert truth.variant == "realistic" and truth.version == REALISTIC_VERSION
    assert truth.gate == (3, 2)
    assert 4 <= len(truth.amplifiers) <= 6
    assert truth.with_role("direct") and truth.negatives and truth.distractors
    assert {s.name for s in truth.effect_sizes} == {
        "gate necessity",
        "amplifier drop",
        "direct drop",
    }
    for amp in truth.amplifiers:
        size = truth.effect_size("amplifier drop", amp)
        assert (size.low, size.high) == (0.05, 0.25)
    # The exact organism's answer key is written as before variants existed, read as exact.
    exact = build_organism(tmp_path / "exact", seed=0)
    assert "variant" not in json.loads((exact / "ground_truth.json").read_text())
    exact_truth = load_ground_truth(exact)
    assert exact_truth.variant == "exact" and exact_truth.version == ORGANISM_VERSION
    assert exact_truth.effect_sizes == ()


def test_unknown_variant_is_refused(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match=r"unknown organism variant 'ideal'.*exact, realistic"):
        build_organism(tmp_path / "x", variant="ideal")


def test_cli_builds_the_realistic_variant(tmp_path: Path, capsys) -> None:
    assert cli_organism.VARIANTS == ORGANISM_VARIANTS
    parser = argparse.ArgumentParser(prog="refusal-circuits")
    cli_organism.register(parser.add_subparsers(dest="command", required=True))
    out = tmp_path / "org"
    args = parser.parse_args(["organism", "build", "--out", str(out), "--variant", "realistic"])
    assert args.handler(args) == 0
    printed = capsys.readouterr().out
    assert "realistic organism (seed 0)" in printed and "L5H0, L5H1, L6H2, L6H3, L7H3" in printed
    assert load_ground_truth(out).variant == "realistic"


def test_build_is_deterministic_and_no_weight_is_exactly_zero(
    model_dir: Path, tmp_path: Path
) -> None:
    again = build_organism(tmp_path / "again", seed=0, variant="realistic")
    cached = load_file(str(model_dir / "model.safetensors"))
    rebuilt = load_file(str(again / "model.safetensors"))
    assert cached.keys() == rebuilt.keys()
    assert all(torch.equal(cached[k], rebuilt[k]) for k in cached)
    zeros = {k: int((v == 0).sum()) for k, v in cached.items() if (v == 0).any()}
    assert zeros == {}


# --- effect sizes ------------------------------------------------------------------------


def test_gate_necessity_is_a_few_percent_and_significant(interchange, truth) -> None:
    stats = interchange.stats("necessity")
    size = truth.effect_size("gate necessity")
    gate = truth.gate
    assert size.low <= stats.effect[gate] <= size.high, stats.effect[gate]
    assert stats.p[gate] < 0.01
    # Not a perfect switch: every pair's gap is finite and they differ from pair to pair.
    assert np.std(interchange.gap) > 0.05 * np.mean(interchange.gap) > 0


def test_amplifier_contrasts_fall_by_a_part_under_the_gate_knockout(
    model, harmful, control, refusal_ids, answers, clean_dla, truth
) -> None:
    h, c = clean_dla
    contrast = h.mean(0) - c.mean(0)
    knocked = knockout_dla(model, harmful, refusal_ids, answers, [truth.gate], "zero") - (
        knockout_dla(model, control, refusal_ids, answers, [truth.gate], "zero")
    )
    fall = (contrast - knocked) / contrast
    for amp in truth.amplifiers:
        size = truth.effect_size("amplifier drop", amp)
        assert contrast[amp] > 0
        assert size.low <= fall[amp] <= size.high, (amp, fall[amp])
    # Each amplifier carries a part of the refusal contrast, none all of it.
    shares = np.array([contrast[a] for a in truth.amplifiers]) / contrast.sum()
    assert shares.min() > 0.05 and shares.max() < 0.5
    # The direct refusal head has a large contrast that the gate barely moves (the
    # weights' noise leaks a little of the gate's feature into its attention).
    for head in truth.with_role("direct"):
        size = truth.effect_size("direct drop", head)
        assert contrast[head] > max(contrast[a] for a in truth.amplifiers)
        assert size.low <= fall[head] <= size.high, fall[head]


def test_distractors_are_louder_than_the_gate_and_ignore_harm(clean_dla, truth) -> None:
    h, c = clean_dla
    gate = truth.gate
    for d in truth.distractors:
        for dla in (h, c):
            assert abs(dla.mean(0)[d]) > 3 * abs(dla.mean(0)[gate])
        assert abs(h.mean(0)[d] - c.mean(0)[d]) < 0.02 * abs(h.mean(0)[d])


def test_every_head_has_a_nonzero_control_dla(clean_dla) -> None:
    _, c = clean_dla
    assert np.abs(c.mean(0)).min() > 1e-3


# --- behaviour ---------------------------------------------------------------------------


def test_greedy_behaviour_refuses_harmful_and_answers_controls(
    model, model_dir, harmful, control
) -> None:
    assert classify(greedy_continuations(model, harmful)) == ["refusal"] * len(harmful)
    assert classify(greedy_continuations(model, control)) == ["answer"] * len(control)
    # The cipher lacks the harmful feature that both routes read: it is answered.
    cipher = classify(greedy_continuations(model, prompts(model, model_dir, "cipher")))
    assert cipher.count("refusal") == 0


def test_negative_head_down_scaling_raises_refusal_on_jailbreaks(
    model, model_dir, refusal_ids, truth
) -> None:
    jailbreak = prompts(model, model_dir, "jailbreak")
    clean = scores_under(model, jailbreak, refusal_ids, None)
    labels = classify(greedy_continuations(model, jailbreak))
    assert labels.count("refusal") < len(jailbreak)  # framing works
    for layer, head in truth.negatives:
        rows = [[Scale(layer, head, alpha=0.1)] for _ in jailbreak]
        raised = scores_under(model, jailbreak, refusal_ids, rows)
        assert np.mean(raised - clean) > 1.0


def test_gate_dose_response_raises_refusal(model, harmful, refusal_ids, truth) -> None:
    layer, head = truth.gate
    means = [
        float(np.mean(scores_under(model, harmful, refusal_ids, rows)))
        for rows in ([[Scale(layer, head, alpha=a)] for _ in harmful] for a in (0.0, 1.0, 3.0))
    ]
    assert means == sorted(means) and means[0] < means[-1]
