"""The audit's pair restriction (refused pairs only) and its NLL metric, on the organism."""

from __future__ import annotations

import json

import numpy as np
import pytest

from circuits.audit import AuditConfig, audit, shuffle_labels
from circuits.organism import load_ground_truth, organism_dir
from patching.errors import TooFewPairsError
from patching.loading import load_model
from patching.prompts import read_pairs
from tests.helpers.figures import assert_units

N = 16
FAST = {"n_boot": 200, "n_null": 4, "negative_heads": False, "ablation_compare": False,
        "figures": False}  # fmt: skip


@pytest.fixture(scope="module")
def organism():
    directory = organism_dir()
    return load_model(directory), read_pairs(directory / "pairs.jsonl")[:N], directory


def test_refused_only_keeps_the_refused_pairs(organism) -> None:
    """Pairs with swapped labels have a harmful prompt the organism answers: dropped.

    The statistics over the kept pairs equal an audit given only those pairs."""
    model, pairs, _ = organism
    mixed = shuffle_labels(pairs, seed=3)
    unswapped = [i for i, (a, b) in enumerate(zip(pairs, mixed, strict=True)) if a == b]
    assert 6 <= len(unswapped) < N
    config = AuditConfig(**FAST, pairs="refused", metric_check=False)
    result = audit(model, mixed, config, progress=False)
    behaviour = result.behaviour
    assert behaviour is not None
    assert behaviour.harmful_class.count("refusal") == len(unswapped)
    assert result.kept_pairs == unswapped and result.n_pairs == len(unswapped)
    assert f"statistics over the {len(unswapped)} refused pairs of {N}" in result.summary()[1]
    direct = audit(model, [mixed[i] for i in unswapped], AuditConfig(**FAST), progress=False)
    np.testing.assert_array_equal(result.necessity.effect, direct.necessity.effect)
    np.testing.assert_array_equal(result.necessity.q, direct.necessity.q)
    assert [g.label for g in result.gate] == [g.label for g in direct.gate]


def test_refused_only_with_too_few_pairs_is_one_clear_line(organism) -> None:
    model, pairs, _ = organism
    config = AuditConfig(**FAST, pairs="refused")
    with pytest.raises(TooFewPairsError, match=f"keeps 0 of {N} pairs") as caught:
        audit(model, pairs, config, progress=False, judge=lambda text: "refusal")
    assert "\n" not in str(caught.value) and "--refused-only" in str(caught.value)


def test_nll_metric_finds_the_gate_and_the_refusal_score_is_measured_beside_it(
    organism, tmp_path
) -> None:
    model, pairs, directory = organism
    truth = load_ground_truth(directory)
    nll = audit(model, pairs, AuditConfig(**FAST, metric="nll", n_check_heads=4), tmp_path,
                progress=False)  # fmt: skip
    assert [(g.layer, g.head) for g in nll.gate] == [truth.gate]
    check = nll.metric_check
    assert check is not None and check.metric == "nll" and check.other == "refusal_score"
    assert check.heads[0] == truth.gate and len(check.heads) == 4
    # The check's refusal-score numbers are the refusal-score audit's own, head for head.
    score = audit(model, pairs, AuditConfig(**FAST, metric_check=False), progress=False)
    for h, stat in zip(check.heads, check.other_necessity, strict=True):
        assert stat.value == pytest.approx(score.necessity.effect[h], abs=1e-6)  # float32 batches
    for h, stat in zip(check.heads, check.main_necessity, strict=True):
        assert stat.value == nll.necessity.effect[h]
    assert check.disagreements() == []  # the organism's two metrics tell one story
    data = json.loads((tmp_path / "audit.json").read_text())
    assert data["settings"]["metric"] == "nll" and data["metric_check"]["other"] == "refusal_score"
    from circuits.audit.views import audit_figures

    for stem, fig in audit_figures(nll).items():
        if fig.data and not any(t.type == "table" for t in fig.data):
            assert_units(stem, fig)


def test_cli_options(tmp_path) -> None:
    from circuits.cli import main

    out = tmp_path / "a"
    argv = ["audit", "--n", "12", "--metric", "nll", "--refused-only", "--check-heads", "3",
            "--n-null", "4", "--no-figures", "--quiet", "--out", str(out)]  # fmt: skip
    assert main(argv) == 0
    data = json.loads((out / "audit.json").read_text())
    settings = data["settings"]
    assert settings["metric"] == "nll" and settings["pairs"] == "refused"
    assert settings["n_check_heads"] == 3 and len(data["metric_check"]["heads"]) == 3
    assert data["kept_pairs"] == list(range(12)) and data["behaviour"]["n_refused_pairs"] == 12
    page = (out / "report.html").read_text()
    assert "What the model does with each pair" in page


def test_cipher_step_uses_the_audits_gate_and_matches_the_command(organism, tmp_path) -> None:
    """The optional cipher step: the gate the audit found, the organism's truth, stored."""
    from circuits.cipher import cipher_contrast

    model, pairs, directory = organism
    cipher = read_pairs(directory / "pairs_cipher.jsonl")[:N]
    config = AuditConfig(**FAST, metric_check=False, cipher=True)
    result = audit(model, pairs, config, tmp_path / "audit", progress=False, cipher_pairs=cipher)
    truth = load_ground_truth(directory)
    found = result.cipher
    assert found is not None and found.gate == list(truth.gate)
    assert found.necessity is not None and found.necessity.collapse_pct >= 90.0
    assert {(s.layer, s.head) for s in found.top(3)} == set(truth.amplifiers)
    direct = cipher_contrast(model, pairs, cipher, gate=truth.gate, n_boot=200, progress=False)
    np.testing.assert_allclose(found.difference, direct.difference, atol=1e-9)
    assert any(line.startswith("Gate L3H2") for line in result.summary())
    data = json.loads((tmp_path / "audit" / "audit.json").read_text())
    assert data["cipher"]["injection"]["every_step"]["restored_share"] >= 0.9
    assert "Cipher contrast: DLA to refusal" in (tmp_path / "audit" / "report.html").read_text()
    again = audit(model, pairs, config, tmp_path / "audit", progress=False, cipher_pairs=cipher)
    assert "cipher" in again.steps["loaded"]
