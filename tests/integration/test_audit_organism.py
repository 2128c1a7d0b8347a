"""The audit against the organism's ground truth, resumability, and the null audit."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from circuits.audit import AuditConfig, AuditResult, audit, shuffle_labels
from circuits.organism import load_ground_truth, organism_dir
from circuits.roles import precision_recall
from patching.loading import load_model
from patching.prompts import read_pairs

N_PAIRS = 32


@pytest.fixture(scope="module")
def organism():
    directory = organism_dir()
    return load_model(directory), directory, load_ground_truth(directory)


@pytest.fixture(scope="module")
def audited(organism, tmp_path_factory: pytest.TempPathFactory) -> tuple[AuditResult, Path]:
    model, directory, _ = organism
    out = tmp_path_factory.mktemp("audit")
    pairs = read_pairs(directory / "pairs.jsonl")
    jailbreak = read_pairs(directory / "pairs_jailbreak.jsonl")
    config = AuditConfig(n=N_PAIRS, figures=False)
    result = audit(model, pairs, config, out, progress=False, jailbreak=jailbreak)
    return result, out


def test_names_the_planted_gate(audited, organism) -> None:
    result, _ = audited
    truth = organism[2]
    assert [(g.layer, g.head) for g in result.gate] == [truth.gate]
    gate = result.gate[0]
    assert gate.q < 0.05 and gate.necessity > 0.9 and gate.dla_share < 0.01
    named = {(h.layer, h.head) for h in [*result.gate, *result.amplifiers]}
    assert not named & set(truth.distractors)
    # The published rule (largest necessity + sufficiency) names the same head.
    assert result.published_gate is not None
    assert (result.published_gate.layer, result.published_gate.head) == truth.gate
    assert any("agrees with the audit's gate" in line for line in result.summary())
    # Heads that do nothing (effects of float32 rounding) are never significant.
    import numpy as np

    idle = np.abs(result.necessity.effect) < 1e-4
    assert idle.sum() > 20 and (result.necessity.p[idle] == 1.0).all()


def test_finds_the_amplifiers_and_negative_head(audited, organism) -> None:
    result, _ = audited
    truth = organism[2]
    precision, recall = precision_recall(
        [(a.layer, a.head) for a in result.amplifiers], truth.amplifiers
    )
    assert precision >= 0.9 and recall >= 0.9
    negatives = set(result.negative_heads.heads) if result.negative_heads else set()
    assert set(truth.negatives) <= negatives
    assert not negatives & set(truth.distractors)
    neg = result.negative_heads
    assert neg is not None
    assert neg.asr_after["jailbreak"] < neg.asr_before["jailbreak"]


def test_cascade_amplifiers_fall_and_null_does_not(audited) -> None:
    result, _ = audited
    cascade = result.cascade
    assert cascade is not None
    assert all(change < -50 for change in cascade.per_amplifier().values())
    assert cascade.effect < -50
    assert abs(cascade.null_mean) < 5 and cascade.null_max < 10
    assert cascade.p == min(cascade.p, 1 / (1 + len(cascade.null_effects)) + 1e-12)


def test_dose_response_walks_from_answer_to_refusal(audited) -> None:
    dose = audited[0].dose_response
    assert dose is not None
    assert dose.score_mean == sorted(dose.score_mean)
    classes = dose.dominant()
    assert classes[0] == "answer" and classes[-1] == "refusal" and "evasion" in classes


def test_outputs_and_resume(audited, organism) -> None:
    result, out = audited
    data = json.loads((out / "audit.json").read_text())
    for key in ("model", "n_layers", "n_heads", "n_pairs", "gate", "amplifiers", "negative_heads",
                "cascade", "ablation_vs_interchange", "dose_response", "settings", "versions",
                "seconds"):  # fmt: skip
        assert key in data
    assert {"layer", "head", "necessity", "ci", "p", "q", "dla_share"} <= set(data["gate"][0])
    assert "knockout_change" in data["amplifiers"][0]
    html = (out / "report.html").read_text()
    assert "<script src=" not in html and "plotly" in html.lower()
    model, directory, _ = organism
    pairs = read_pairs(directory / "pairs.jsonl")
    jailbreak = read_pairs(directory / "pairs_jailbreak.jsonl")
    again = audit(model, pairs, AuditConfig(n=N_PAIRS, figures=False), out, progress=False,
                  jailbreak=jailbreak)  # fmt: skip
    assert again.steps["computed"] == []
    strip = ("seconds", "steps", "summary")
    first = {k: v for k, v in result.to_dict().items() if k not in strip}
    assert first == {k: v for k, v in again.to_dict().items() if k not in strip}
    # A changed dose setting recomputes only the dose-response.
    changed = audit(model, pairs, AuditConfig(n=N_PAIRS, figures=False, dose_alphas=(0.0, 1.0)),
                    out, progress=False, jailbreak=jailbreak)  # fmt: skip
    assert changed.steps["computed"] == ["dose_response"]
    assert AuditResult.from_json(out / "audit.json").to_dict()["gate"] == changed.to_dict()["gate"]


def test_null_audit_names_no_gate(organism) -> None:
    model, directory, _ = organism
    pairs = read_pairs(directory / "pairs.jsonl")
    config = AuditConfig(
        n=12, figures=False, n_boot=200, negative_heads=False, ablation_compare=False
    )
    named = 0
    seeds = range(10)
    for seed in seeds:
        result = audit(model, shuffle_labels(pairs[:12], seed), config, progress=False)
        named += bool(result.gate)
        if not result.gate:  # "no gate" says what each top band head failed, with its numbers
            assert all(c.failed for c in result.gate_checks)
            first = result.gate_checks[0].label if result.gate_checks else "none"
            assert any(line.startswith(f"  {first}: ") for line in result.summary())
    assert named / len(seeds) <= 0.05 + 1e-9


def test_screen_and_audit_report_the_same_necessity(audited, tmp_path) -> None:
    """One definition: the screen command and the audit agree head for head.

    Same model (the organism), same first ``N_PAIRS`` pairs, same seed and bootstrap
    n: necessity and sufficiency, their intervals, p and q are equal exactly,
    for every head both measured (all of them: the screen runs exact here).
    """
    import numpy as np

    from circuits.cli import main

    result, _ = audited
    out = tmp_path / "screen"
    assert main(["screen", "--n", str(N_PAIRS), "--seed", "0", "--out", str(out), "--quiet"]) == 0
    screen = json.loads((out / "screen.json").read_text())
    assert screen["n"] == result.necessity.n == N_PAIRS and screen["scale"] == "pooled"
    for which in ("necessity", "sufficiency"):
        stats = getattr(result, which)
        measured = {
            "": stats.effect,
            "_ci_low": stats.ci_low,
            "_ci_high": stats.ci_high,
            "_p": stats.p,
            "_q": stats.q,
        }
        for suffix, from_audit in measured.items():
            from_screen = np.asarray(screen[which + suffix], dtype=np.float64)
            both = np.isfinite(from_screen) & np.isfinite(from_audit)
            assert both.all(), f"{which}{suffix}: a head measured by one command only"
            np.testing.assert_array_equal(
                from_screen[both], from_audit[both], err_msg=which + suffix
            )
    gate = result.gate[0]
    assert screen["necessity"][gate.layer][gate.head] == gate.necessity
    assert screen["necessity_q"][gate.layer][gate.head] == gate.q


def _ranks(x):
    """Average ranks (ties share the mean of their positions), counted directly."""
    import numpy as np

    return np.array([np.sum(x < v) + (np.sum(x == v) + 1) / 2 for v in x])


def test_screened_audit_measures_the_top_heads_exactly(audited, organism, tmp_path) -> None:
    """Screening forced on the organism: the screened heads' numbers equal the exact audit's.

    The unmeasured heads are NaN; the measured ones carry the all-exact audit's
    per-head effects (to float32 rounding: fewer rows share each batched pass); the
    recall check's Spearman and top-5 recall equal an independent computation from
    the attribution estimate; the planted gate is still found.
    """
    import numpy as np

    from attribution.interchange import interchange_test

    result, _ = audited
    model, directory, truth = organism
    pairs = read_pairs(directory / "pairs.jsonl")[:N_PAIRS]
    jailbreak = read_pairs(directory / "pairs_jailbreak.jsonl")
    config = AuditConfig(n=N_PAIRS, figures=False, screen_min_heads=0, screen_k=6, screen_band_k=4)
    screened = audit(model, pairs, config, tmp_path, progress=False, jailbreak=jailbreak)
    check = screened.screening["interchange"]
    assert check.screened and 6 <= len(check.measured) < model.n_layers * model.n_heads
    measured = np.zeros((model.n_layers, model.n_heads), dtype=bool)
    for h in check.measured:
        measured[h] = True
    for which in ("necessity", "sufficiency"):
        got, full = getattr(screened, which).effect, getattr(result, which).effect
        assert np.isnan(got[~measured]).all()
        # Fewer rows per batched pass: the same numbers up to float32 rounding.
        np.testing.assert_allclose(got[measured], full[measured], rtol=1e-6, atol=1e-7)
        assert np.isfinite(getattr(screened, which).q[measured]).all()
    estimate = interchange_test(model, pairs, mode="attribution", progress=False)
    est = np.nanmean(estimate.necessity_drop, axis=0)
    exact = screened.necessity.effect
    rho = np.corrcoef(_ranks(est[measured]), _ranks(exact[measured]))[0, 1]
    assert check.spearman == pytest.approx(rho, abs=1e-9)
    top_est = set(map(tuple, np.argwhere(np.abs(est) >= np.sort(np.abs(est).ravel())[-6])))
    n_top = min(5, int(measured.sum()))
    # Ties (heads at exactly 0) go to the lower flat index, the toolkit's convention.
    key = -np.where(measured, np.abs(exact), -1.0)
    order = np.argsort(key, axis=None, kind="stable")[:n_top]
    top_exact = [(int(i) // model.n_heads, int(i) % model.n_heads) for i in order]
    assert check.exact_top == top_exact
    assert check.recall == sum(h in top_est for h in top_exact) / n_top
    assert [(g.layer, g.head) for g in screened.gate] == [truth.gate]
    negatives = set(screened.negative_heads.heads) if screened.negative_heads else set()
    assert set(truth.negatives) <= negatives
    for step in ("negative_heads", "ablation"):
        assert screened.screening[step].screened
    assert all(not c.screened for c in result.screening.values())  # 32 heads: all exact
    # Resuming keys the exact step on the screened heads: a rerun computes nothing.
    again = audit(model, pairs, config, tmp_path, progress=False, jailbreak=jailbreak)
    assert again.steps["computed"] == []
