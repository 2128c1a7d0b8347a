"""The audit's report on a hand-built result: units, unmeasured heads, tables, title."""

from __future__ import annotations

import re

import numpy as np
import plotly.graph_objects as go
import pytest

from attribution.statistics import EffectStats
from circuits import export
from circuits.audit import AuditConfig, AuditResult, HeadFinding
from circuits.audit.views import audit_figures, audit_tables, head_maps, write_audit_outputs
from circuits.behaviour import PairBehaviour
from circuits.cascade import CascadeResult
from circuits.metric_check import MetricCheck
from circuits.roles import DropTest, GateCheck
from circuits.views import NOT_MEASURED, display_name
from tests.helpers.figures import assert_units

L, H = 4, 3
UNMEASURED = [(0, 0), (2, 1)]


def _stats(seed: int) -> EffectStats:
    rng = np.random.default_rng(seed)
    effect = rng.normal(0.0, 0.1, (L, H))
    for h in UNMEASURED:
        effect[h] = np.nan
    return EffectStats(effect, effect - 0.05, effect + 0.05, np.full((L, H), 0.01),
                       np.full((L, H), 0.02), 8)  # fmt: skip


@pytest.fixture(scope="module")
def result() -> AuditResult:
    nec, suf = _stats(0), _stats(1)
    dla = np.arange(L * H, dtype=np.float64).reshape(L, H) - 5.0
    gate = HeadFinding(1, 2, 0.06, 0.02, 0.1, 0.004, 0.03, dla_share=0.001, sufficiency=0.05)
    amp = HeadFinding(3, 0, 0.1, 0.05, 0.15, 0.001, 0.01, dla_share=0.2, sufficiency=0.0,
                      knockout_change=-0.12)  # fmt: skip
    clean = np.ones((L, H))
    knocked = clean.copy()
    knocked[3, 0] = 0.88
    cascade = CascadeResult(gate=[(1, 2)], kind="zero", clean=clean, knocked=knocked,
                            amplifiers=[(3, 0)], effect=-12.0, null_heads=[(1, 0), (2, 2), (1, 1)],
                            null_effects=[-1.0, 2.0, -4.0], gap=2.0)  # fmt: skip
    checks = [
        GateCheck(1, 2, 0.06, 0.03, 0.05, 0.001, amplifiers=1),
        GateCheck(2, 1, 0.2, 0.3, 0.1, 0.04, failed=["significance", "DLA-dark"]),
    ]
    drops = [DropTest(3, 0, contrast=0.5, drop=0.06, null_drops=[0.01, -0.01, 0.0])]  # fmt: skip
    behaviour = PairBehaviour(
        harmful_class=["refusal", "answer", "refusal"],
        control_class=["answer", "answer", "refusal"],
        harmful_text=["I cannot", "Sure", "Sorry"],
        control_text=["Sure", "Here", "Sorry"],
        gen_tokens=4,
    )
    check = MetricCheck.of([(1, 2), (3, 0)], "refusal_score", "nll", 0.05, (nec, suf), (suf, nec))
    return AuditResult(
        model="/root/.cache/refusal-circuits/qwen2.5-coder-0.5b-instruct-awq-q4_k_m.gguf",
        n_layers=L, n_heads=H, n_pairs=1, necessity=nec, sufficiency=suf,
        dla={"per_head": dla.tolist(), "per_head_harmful": (dla - 1).tolist()},
        gate=[gate], gate_candidates=[gate], amplifiers=[amp], negative_heads=None,
        cascade=cascade, ablation_vs_interchange=None, dose_response=None,
        settings=AuditConfig(pairs="refused").settings(), versions={}, seconds=1.0,
        behaviour=behaviour, kept_pairs=[0], metric_check=check,
        published_gate=gate, gate_checks=checks, amplifier_tests=drops,
    )  # fmt: skip


def test_unmeasured_heads_are_grey_and_never_zero(result) -> None:
    fig = head_maps(result)
    necessity, sufficiency, dla = fig.data
    for trace, stats in ((necessity, result.necessity), (sufficiency, result.sufficiency)):
        z = np.asarray(trace.z, dtype=np.float64)
        np.testing.assert_array_equal(z, 100 * stats.effect)  # percent of the gap, NaN kept
        for h in UNMEASURED:
            assert np.isnan(z[h]) and "not measured" in trace.text[h[0]][h[1]]
        assert "not measured" not in trace.text[1][2]
    np.testing.assert_array_equal(np.asarray(dla.z), np.asarray(result.dla["per_head"]))
    assert fig.layout.plot_bgcolor == NOT_MEASURED  # what a NaN cell shows
    assert any("not measured" in a.text for a in fig.layout.annotations)
    assert necessity.zmax == sufficiency.zmax  # one scale for the two effects


def test_every_figure_names_its_units(result) -> None:
    figures = audit_figures(result)
    assert "head_maps" in figures and "cascade" in figures
    for stem, fig in figures.items():
        if fig.data and not any(t.type == "table" for t in fig.data):
            assert_units(stem, fig)
    with pytest.raises(AssertionError):  # the check itself fails on a figure without units
        assert_units("bare", go.Figure(go.Scatter(x=[1.0, 2.0], y=[3.0, 4.0])))


def test_tables_show_the_numbers_with_their_null(result) -> None:
    tables = {t.title: t for t in audit_tables(result)}
    cascade = dict(tables["Knockout cascade against the random-head null"].rows)
    nulls = np.array([-1.0, 2.0, -4.0])
    assert cascade["null mean ± sd (%)"] == f"{nulls.mean():+.1f} ± {nulls.std(ddof=1):.1f}"
    assert cascade["null largest drop (%)"] == "4.0"
    assert cascade["empirical p (one-sided, vs the null)"] == f"{1 / 4:.3g}"  # none below -12
    assert cascade["amplifiers' harmful − control DLA change (%)"] == "-12.0"
    # -12% of the amplifier's clean contrast (1 logit) over a pooled DLA gap of 2 logits
    assert cascade["the same in % of the pooled DLA gap"] == "-6.0"
    assert (
        cascade["z (effect − null mean, in null sds)"]
        == f"{(-12 - nulls.mean()) / nulls.std(ddof=1):+.1f}"
    )
    assert cascade["smallest p this null can give"] == "0.25"
    checks = tables["Top band heads by necessity: which gate criterion each failed"]
    assert [r[0] for r in checks.rows] == ["L1H2", "L2H1"]
    assert [r[-1] for r in checks.rows] == ["none: the gate", "significance, DLA-dark"]
    assert checks.rows[1][-2] == "not knocked out" and checks.rows[0][-2] == "1"
    assert "L1H2" in checks.note and "agrees with the audit's gate" in checks.note
    (drop_table,) = [t for title, t in tables.items() if title.startswith("Drop tests")]
    drop = dict(zip(drop_table.columns, drop_table.rows[0], strict=True))
    null = np.array([0.01, -0.01, 0.0])
    assert drop["fall (% of its own contrast)"] == f"{100 * 0.06 / 0.5:+.1f}"
    assert drop["z"] == f"{(0.06 - null.mean()) / null.std(ddof=1):+.1f}"
    assert drop["empirical p"] == f"{1 / 4:.3g}"  # no null drop reaches 0.06
    gate = tables["Gate candidates (the audit's gate first)"]
    row = dict(zip(gate.columns, gate.rows[0], strict=True))
    assert row["head"] == "L1H2" and row["named"] == "gate"
    assert row["necessity (% of the refusal-score gap)"] == "+6.0"
    assert row["q (BH, all heads)"] == "0.03" and row["depth (% of layers)"] == "25"
    amps = tables["Amplifiers"]
    amp = dict(zip(amps.columns, amps.rows[0], strict=True))
    assert amp["DLA harmful − control (logits)"] == f"{3 * H - 5.0:+.4f}"
    assert amp["change under the gate's knockout (%)"] == "-12.0"
    behaviour = tables["What the model does with each pair (greedy continuations)"]
    assert [r[-1] for r in behaviour.rows] == ["yes", "no", "no"]
    assert "harmful prompts refused 67% (2/3), controls refused 33% (1/3)" in behaviour.note
    assert "the 1 refused pairs of 3" in behaviour.note


def test_report_is_titled_by_the_model_not_its_path(result, tmp_path) -> None:
    write_audit_outputs(result, tmp_path, static=False)
    page = (tmp_path / "report.html").read_text()
    title = re.search(r"<h1>(.*?)</h1>", page)
    assert title is not None
    assert title.group(1) == "Refusal circuit audit: qwen2.5-coder-0.5b-instruct-awq-q4_k_m"
    assert "/" not in title.group(1) and "\\" not in title.group(1)
    assert "Interchange metrics side by side" in page and "not measured" in page


def test_display_name() -> None:
    assert display_name("Qwen/Qwen2.5-0.5B-Instruct") == "Qwen/Qwen2.5-0.5B-Instruct"
    assert display_name("gpt2") == "gpt2"
    assert display_name("/tmp/x/organism-v2-seed0") == "organism-v2-seed0"
    assert display_name("~/.cache/refusal-circuits/m-q4.gguf") == "m-q4"
    assert display_name("models/m.safetensors") == "m"
    snapshot = "/root/.cache/huggingface/hub/models--Qwen--Qwen2.5-0.5B/snapshots/ab12cd"
    assert display_name(snapshot) == "Qwen/Qwen2.5-0.5B"


@pytest.mark.skipif(not export.static_export_available(), reason="no Chromium for kaleido")
def test_static_export_of_the_report_figures(result, tmp_path) -> None:
    written = write_audit_outputs(result, tmp_path, static=True)
    assert tmp_path / "figures" / "head_maps.png" in written
    assert (tmp_path / "figures" / "head_maps.svg").read_text()[:500].count("<svg") == 1
