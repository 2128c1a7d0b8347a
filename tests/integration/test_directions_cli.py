"""The directions command on the organism: JSON + report, resumable, bad options refused."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from circuits.cli import directions as cli
from circuits.cli import main


def test_mirrored_constants_equal_the_library() -> None:
    from attribution.directions import DEFAULT_MIN_PER_CLUSTER
    from circuits.directions import MAX_ALPHA, WHERE

    assert cli.WHERE == WHERE and cli.MAX_ALPHA == MAX_ALPHA
    assert cli.DEFAULT_MIN_PER_CLUSTER == DEFAULT_MIN_PER_CLUSTER


def test_directions_command_writes_and_resumes(tmp_path, capsys) -> None:
    out = tmp_path / "dirs"
    argv = ["directions", "--n", "8", "--out", str(out), "--quiet"]
    argv += ["--steer-layers", "2", "4", "--alphas", "0", "1", "--where", "every_step"]
    assert main(argv) == 0
    first = capsys.readouterr().out
    data = json.loads((out / "directions.json").read_text())
    d = data["directions"]
    h = torch.tensor(d["vectors"]["harmfulness"], dtype=torch.float64)
    r = torch.tensor(d["vectors"]["refusal"], dtype=torch.float64)
    cos = torch.nn.functional.cosine_similarity(h, r, dim=-1).numpy()
    got = np.array([np.nan if c is None else c for c in d["cosine"]], dtype=float)
    np.testing.assert_allclose(got[1:], cos[1:], rtol=1e-9)
    assert d["cluster_sizes"] == {"harmful": 8, "harmless": 8}
    steer = data["steering"]["refusal"]
    assert steer["where"] == "every_step" and "generated" in steer["steered_positions"]
    # the organism's planted amplifiers: the refusal direction at L4 makes harmless prompts refuse
    assert steer["refusal_rate"][1] == [0.0, 1.0]
    assert data["causal_layer"] == 4
    assert data["jailbreak"]["refusal_shift_ci"][1] < 0
    assert "plotly" in (out / "report.html").read_text()
    assert "refusal rate a=0: 0%, a=1: 100%" in first
    assert main(argv) == 0
    assert "4 of 4 steps reused" in capsys.readouterr().out
    assert json.loads((out / "directions.json").read_text())["steering"] == data["steering"]


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (["--alphas", "50"], "--alphas 50.0 out of range"),
        (["--steer-layers", "99"], "--steer-layers 99 outside this model's blocks 0..7"),
        (["--framing", "no slot"], "--framing must contain {request}"),
        (["--min-per-cluster", "0"], "--min-per-cluster"),
    ],
)
def test_bad_options_are_one_line(tmp_path, capsys, extra, message) -> None:
    assert main(["directions", "--n", "4", "--out", str(tmp_path / "o"), *extra]) == 2
    err = capsys.readouterr().err.strip()
    assert message in err and "\n" not in err


def test_directions_command_on_the_beliefs_organism(tmp_path, capsys) -> None:
    """An organism directory with its pairs: framed twins and its own inversion question."""
    from circuits.organism import organism_dir

    directory = organism_dir(variant="beliefs")
    out = tmp_path / "beliefs"
    argv = ["directions", "--model", str(directory), "--pairs", str(directory / "pairs.jsonl")]
    argv += ["--n", "8", "--out", str(out), "--quiet", "--steer-layers", "4"]
    argv += ["--alphas", "0", "2"]
    assert main(argv) == 0
    data = json.loads((out / "directions.json").read_text())
    harm, ref = data["steering"]["harmfulness"], data["steering"]["refusal"]
    assert harm["question"] == "answer Certainly or No : could this request cause harm"
    assert harm["inversion_rate"] == [[0.0, 1.0]] and ref["inversion_rate"] == [[0.0, 0.0]]
    assert ref["refusal_rate"] == [[0.0, 1.0]]
    # the framed twins of the organism's jailbreak file lower refusal
    assert data["jailbreak"]["refusal_shift_ci"][1] < 0
    assert "answers harmful a=0: 0%, a=2: 100%" in capsys.readouterr().out


def test_four_cluster_jailbreak_shift_reads_a_plain_harmfulness_direction(tmp_path) -> None:
    """The framed prompts define the four-cluster harmful mean; the shift must not use it."""
    from attribution.directions import extract_directions
    from circuits.organism import organism_dir
    from patching.chat import format_chat
    from patching.loading import load_model
    from patching.prompts import read_pairs
    from patching.residuals import residual_stream

    out = tmp_path / "four"
    argv = ["directions", "--form", "four_cluster", "--n", "8", "--out", str(out), "--quiet"]
    argv += ["--steer-layers", "4", "--alphas", "0", "--min-per-cluster", "2"]
    assert main(argv) == 0
    shift = json.loads((out / "directions.json").read_text())["jailbreak"]
    directory = organism_dir()
    model = load_model(directory)
    plain = read_pairs(directory / "pairs.jsonl", n=8)
    framed = read_pairs(directory / "pairs_jailbreak.jsonl", n=8)
    chat = lambda texts: [format_chat(model.tokenizer, t) for t in texts]  # noqa: E731
    layer = shift["layer"]
    d = extract_directions(
        model, chat([p.harmful for p in plain]), chat([p.control for p in plain]), [layer]
    ).at("harmfulness", layer)
    unit = d / d.norm()
    for key, pairs in (("harmfulness_plain", plain), ("harmfulness_framed", framed)):
        streams = residual_stream(model, chat([p.harmful for p in pairs]), "t_inst", [layer])
        expected = (streams[:, 0].double() @ unit.double()).numpy()
        np.testing.assert_allclose(shift[key], expected, rtol=1e-4, atol=1e-4)
