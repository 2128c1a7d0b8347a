"""The audit's role rules against the realistic organism's ground truth, and its null audit.

The realistic organism (docs/science.md#realistic-organism) has a gate carrying a few
percent of the gap, five amplifiers falling 5-25% under its knockout, a direct refusal
head with the largest contrast that the knockout barely moves, louder distractors and
non-zero control DLA everywhere: rules sized to the exact organism's 100% effects miss it.
"""

from __future__ import annotations

import pytest

from circuits.audit import AuditConfig, AuditResult, audit, shuffle_labels
from circuits.organism import load_ground_truth, organism_dir
from circuits.roles import precision_recall
from patching.loading import load_model
from patching.prompts import read_pairs

N_PAIRS = 24


@pytest.fixture(scope="module")
def realistic():
    directory = organism_dir(variant="realistic")
    return (
        load_model(directory),
        read_pairs(directory / "pairs.jsonl"),
        load_ground_truth(directory),
    )


@pytest.fixture(scope="module")
def audited(realistic) -> AuditResult:
    model, pairs, _ = realistic
    config = AuditConfig(n=N_PAIRS, figures=False, negative_heads=False, ablation_compare=False)
    return audit(model, pairs, config, progress=False)


def test_recovers_the_gate_and_amplifiers_at_real_effect_sizes(audited, realistic) -> None:
    truth = realistic[2]
    assert [(g.layer, g.head) for g in audited.gate] == [truth.gate]
    gate = audited.gate[0]
    assert 0.02 <= gate.necessity <= 0.08 and gate.q < 0.05  # a few percent of the gap
    found = [(a.layer, a.head) for a in audited.amplifiers]
    precision, recall = precision_recall(found, truth.amplifiers)
    assert precision >= 0.9 and recall >= 0.9
    assert not set(found) & {*truth.distractors, *truth.with_role("direct")}
    published = audited.published_gate
    assert published is not None and (published.layer, published.head) == truth.gate


def test_amplifier_falls_and_cascade_against_the_null(audited, realistic) -> None:
    tests = {(t.layer, t.head): t for t in audited.amplifier_tests}
    for amp in realistic[2].amplifiers:
        t = tests[amp]
        # Each fall lies in the ground truth's 5-25% of its contrast, beyond every null fall.
        assert 0.05 <= t.fall <= 0.25 and t.drop > t.null_max
    (direct,) = realistic[2].with_role("direct")
    assert abs(tests[direct].fall) < 0.05  # the largest contrast, outside the gate's circuit
    cascade = audited.cascade
    assert cascade is not None
    assert cascade.effect < cascade.null_mean - 3 * cascade.null_sd
    assert cascade.p == cascade.min_p  # the band's 13 other heads: p cannot go lower


def test_null_audit_names_no_gate(realistic) -> None:
    model, pairs, _ = realistic
    config = AuditConfig(
        n=N_PAIRS, figures=False, n_boot=200, negative_heads=False, ablation_compare=False
    )
    seeds = range(10)
    named = sum(
        bool(audit(model, shuffle_labels(pairs[:N_PAIRS], seed), config, progress=False).gate)
        for seed in seeds
    )
    assert named / len(seeds) <= 0.05 + 1e-9
