"""Ground truth: the beliefs organism's planted harmfulness and refusal directions.

``docs/science.md#organism-beliefs-variant``: ``h`` (a basis vector) at ``t_inst`` from
residual index 2, ``r`` at ``t_post_inst`` from index 4; the reply-inversion answer reads
``h`` only. Extracted directions must match the planted ones, harmfulness steering must flip
the inversion answer of harmless prompts and refusal steering must not, and jailbreak framing
must move refusal and leave harmfulness.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from attribution.directions import cosine_per_layer, extract_directions
from circuits.directions import Inversion, jailbreak_shift, steer
from tests.helpers.organism_helpers import organism_prompts

N = 12
LAYER = 4  # both directions exist at block 4's input; the inversion head (L5H0) reads after it


@pytest.fixture(scope="module")
def beliefs():
    from circuits.organism import load_ground_truth, organism_dir
    from patching.loading import load_model

    directory = organism_dir(variant="beliefs")
    model = load_model(directory)
    truth = load_ground_truth(directory).beliefs
    assert truth is not None
    prompts = organism_prompts(model, directory, N)
    directions = extract_directions(model, prompts["harmful"], prompts["harmless"])
    inversion = Inversion(truth.inversion_question, truth.inversion_yes, truth.inversion_no)
    return model, truth, prompts, directions, inversion


def test_extracted_directions_match_the_planted_ones(beliefs) -> None:
    _, truth, _, directions, _ = beliefs
    n = directions.n_layers + 1
    h = torch.tensor(truth.harmfulness_direction, dtype=torch.float64).expand(n, -1)
    r = torch.tensor(truth.refusal_direction, dtype=torch.float64).expand(n, -1)
    cos_h = cosine_per_layer(directions.harmfulness, h)
    cos_r = cosine_per_layer(directions.refusal, r)
    assert directions.layers == list(range(n))  # residual indices, as the ground truth's
    for index in truth.harmfulness_layers:
        assert cos_h[index] >= 0.9, (index, cos_h[index])
    for index in truth.refusal_layers:
        assert cos_r[index] >= 0.9, (index, cos_r[index])
    before = [i for i in range(n) if i < min(truth.refusal_layers)]
    assert np.all(np.nan_to_num(np.abs(cos_r[before])) < 0.5)


def test_harmfulness_steering_flips_the_inversion_answer_and_refusal_steering_does_not(
    beliefs,
) -> None:
    model, _, prompts, directions, inversion = beliefs
    harmless = prompts["harmless"]
    runs = {
        which: steer(model, harmless, directions, which, [LAYER], [0.0, 2.0], inversion=inversion)
        for which in ("harmfulness", "refusal")
    }
    harm, ref = runs["harmfulness"], runs["refusal"]
    assert harm.inversion_rate() is not None and ref.inversion_rate() is not None
    # unsteered harmless prompts: answered, judged harmless
    assert harm.refusal_rate()[0, 0] == 0.0 and harm.inversion_rate()[0, 0] == 0.0
    assert harm.inversion_rate()[0, 1] == 1.0  # the judgement flips
    assert ref.refusal_rate()[0, 1] == 1.0  # the model refuses...
    assert ref.inversion_rate()[0, 1] == 0.0  # ...and still judges the request harmless
    # the inversion score against a lone run of each question prompt under the same vector
    yes, no = inversion.token_ids(model)
    vector = 2.0 * directions.at("harmfulness", LAYER).float()
    for i, prompt in enumerate(inversion.prompts(model, [p.instruction for p in harmless])):
        logits = model.bridge.run_with_hooks(
            prompt.tokens[None],
            fwd_hooks=[(f"blocks.{LAYER}.hook_resid_pre", lambda x, hook: x + vector)],
        )[0, -1].double()
        assert harm.inversion_score[0, 1, i] == pytest.approx(
            float(logits[yes] - logits[no]), abs=1e-4
        )


def test_jailbreak_framing_moves_refusal_and_leaves_harmfulness(beliefs) -> None:
    model, _, prompts, directions, _ = beliefs
    shift = jailbreak_shift(model, prompts["harmful"], prompts["framed"], directions, LAYER)
    data = shift.to_dict()
    assert data["refusal_shift_ci"][1] < 0
    scale = float(np.mean(shift.harmfulness_plain))
    assert scale > 1.0  # harmful prompts sit far along h
    # h itself is unchanged; the extracted direction (cosine ~0.98 with h) also holds other
    # dimensions, which framing moves a little
    assert abs(shift.shift("harmfulness")) < 1e-2 * scale
