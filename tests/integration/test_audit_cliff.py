"""The audit's optional refusal-cliff step (``--cliff``) on the thinking organism.

Ground truth (``circuits/organism/ground_truth.py``, ``ThinkingTruth``): the cliff head
L7H3 writes against refusal at ``</think>`` for prompts whose topic is susceptible; the
audit's own circuit (gate L3H2, amplifiers, negative head L7H1) is the exact organism's.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from circuits import cliff as C
from circuits.audit import AuditConfig, AuditResult, audit
from circuits.audit.pipeline import steps_for
from circuits.cli import main
from circuits.organism import load_ground_truth, organism_dir
from circuits.organism.ground_truth import GroundTruth, ThinkingTruth
from patching.errors import RefusalCircuitsError
from patching.loading import load_model
from patching.model import HookedModel
from patching.prompts import PromptPair, read_pairs
from tests.helpers.figures import assert_units

N = 12
FAST = {"n_boot": 200, "n_null": 4, "ablation_compare": False, "metric_check": False,
        "figures": False}  # fmt: skip
CLIFF = {"cliff": True, "cliff_gen_tokens": 24, "cliff_top_percent": (3.0,),
         "cliff_random_draws": 2}  # fmt: skip


@pytest.fixture(scope="module")
def organism() -> tuple[HookedModel, list[PromptPair], list[PromptPair], GroundTruth]:
    d = organism_dir(variant="thinking")
    pairs = read_pairs(d / "pairs.jsonl")[:N]
    jailbreak = read_pairs(d / "pairs_jailbreak.jsonl")[:N]
    return load_model(d), pairs, jailbreak, load_ground_truth(d)


@pytest.fixture(scope="module")
def out(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("audit-cliff")


@pytest.fixture(scope="module")
def result(organism, out: Path) -> AuditResult:
    model, pairs, jailbreak, _ = organism
    config = AuditConfig(**FAST, **CLIFF)  # type: ignore[arg-type]
    return audit(model, pairs, config, out, progress=False, jailbreak=jailbreak)


def thinking(truth: GroundTruth) -> ThinkingTruth:
    assert truth.thinking is not None
    return truth.thinking


def susceptible(texts: list[str], truth: ThinkingTruth) -> np.ndarray:
    """Independent of the toolkit: which prompts name a susceptible topic word."""
    return np.array([any(w in t.split() for w in truth.susceptible_words) for t in texts])


def test_cliff_step_is_listed_early_and_only_when_asked() -> None:
    assert "cliff" not in [s.name for s in steps_for(AuditConfig())]
    names = [s.name for s in steps_for(AuditConfig(cliff=True, pairs="refused"))]
    assert names[:4] == ["behaviour", "refused_pairs", "cliff", "interchange"]
    titles = [s.title for s in steps_for(AuditConfig(cliff=True))]
    assert any("9 random draws" in t for t in titles)
    untraced = steps_for(AuditConfig(cliff=True, cliff_tracing=False))
    assert not any("random draws" in s.title for s in untraced)


@pytest.mark.parametrize(
    ("setting", "says"),
    [
        ({"cliff_ablation": "halve"}, "unknown cliff_ablation"),
        ({"cliff_alpha": 1.0}, "cliff_alpha=1.0"),
        ({"cliff_top_percent": (0.0, 3.0)}, "cliff_top_percent"),
        ({"cliff_random_draws": -1}, "cliff_random_draws=-1"),
        ({"cliff_gen_tokens": 0}, "cliff_gen_tokens=0"),
    ],
)
def test_bad_cliff_settings_are_refused_on_construction(setting, says) -> None:
    with pytest.raises(RefusalCircuitsError, match=says):
        AuditConfig(cliff=True, **setting)


def test_audit_finds_the_planted_cliff_head_first(result: AuditResult, organism) -> None:
    truth = load_ground_truth(organism_dir(variant="thinking"))
    cliff = result.cliff
    assert cliff is not None and cliff.tracing is not None
    top = cliff.tracing.ranked[0]
    assert (top.layer, top.head) == thinking(truth).cliff_head and top.p < 0.05
    # Beside the audit's roles: the cliff head is none of them (the organism plants it
    # apart from the negative head), and every named head is listed with its rank.
    heads = {(h.layer, h.head): h for h in result.cliff_heads()}
    first = result.cliff_heads()[0]
    assert (first.layer, first.head) == thinking(truth).cliff_head
    assert first.cliff and first.rank == 1 and first.roles == []
    assert heads[truth.gate].roles == ["gate"] and not heads[truth.gate].cliff
    for amp in truth.amplifiers:
        assert heads[amp].roles == ["amplifier"]
    for neg in truth.negatives:
        assert "negative head" in heads[neg].roles and not heads[neg].cliff
    # Ranks and effects are the tracing's own (an independent ordering of its effects).
    effect = cliff.tracing.stats.effect
    order = sorted(
        ((a, b) for a in range(effect.shape[0]) for b in range(effect.shape[1])
         if np.isfinite(effect[a, b])),
        key=lambda h: -effect[h],
    )  # fmt: skip
    for h, row in heads.items():
        assert row.rank == order.index(h) + 1 and row.effect == effect[h]
    # Only the top-3% set (one head) is ablated: the cliff head alone is a cliff head.
    assert [h.label for h in result.cliff_heads() if h.cliff] == ["L7H3"]
    summary = " ".join(result.summary())
    assert "Cliff heads (the top-ranked heads" in summary and ": L7H3 rank 1" in summary
    assert "None of the audit's named heads is a cliff head" in summary


def test_audit_finds_the_cliff_at_the_planted_position(result: AuditResult, organism) -> None:
    model, pairs, _, truth = organism
    t = thinking(truth)
    cliff = result.cliff
    assert cliff is not None and cliff.traces_source == "generated"
    assert [tr.prompt for tr in cliff.traces] == [p.harmful for p in pairs]
    sus = susceptible([tr.prompt for tr in cliff.traces], t)
    assert 0 < sus.sum() < len(sus)
    for trace, p, (think, close, answer), s in zip(
        cliff.traces, cliff.curves.per_trace, cliff.curves.segments, sus, strict=True
    ):
        tokens = C.tokenize_trace(model.tokenizer, trace).tokens.tolist()
        # The planted position: the end-of-thinking marker, the last before the answer.
        assert model.tokenizer.convert_ids_to_tokens(tokens[answer - 1]) == t.think_close
        p = np.asarray(p)
        assert (p[think:close] > 0.9).all()
        if s:
            assert int(np.argmin(np.diff(p[:answer]))) + 1 == answer - 1
            assert p[answer - 1] < 0.1
        else:
            assert p[answer - 1] > 0.9
    scores = cliff.curves.cliff_scores
    assert (scores[sus] > 0.8).all() and (np.abs(scores[~sus]) < 0.1).all()
    # Ablating the cliff head (the top 3%: one head) brings attack success to 0.
    assert cliff.attack_success == pytest.approx(sus.mean())
    assert cliff.ablations[0].heads == [list(t.cliff_head)]
    assert cliff.ablations[0].attack_success == 0.0
    # Against random traced heads (none of the draws holds the cliff head): the smallest p.
    assert all(list(t.cliff_head) not in h for h in cliff.ablations[0].random_heads)
    assert cliff.ablations[0].p_value == pytest.approx(1 / 3)


def test_step_equals_the_cliff_commands_computation(result: AuditResult, organism) -> None:
    model, pairs, jailbreak, _ = organism
    direct = C.cliff_step(
        model,
        [p.harmful for p in pairs],
        [p.control for p in pairs],
        probe_harmful=[p.harmful for p in jailbreak],
        gen_tokens=24,
        percents=(3.0,),
        random_draws=2,
    )
    assert result.cliff is not None
    assert result.cliff.to_dict() == json.loads(json.dumps(direct.to_dict()))


def test_outputs_hold_the_cliff(result: AuditResult, out: Path) -> None:
    data = json.loads((out / "audit.json").read_text())
    assert data["cliff"]["sweep"]["layer"] == result.cliff.sweep.layer  # type: ignore[union-attr]
    assert data["cliff_heads"][0]["layer"] == 7 and data["cliff_heads"][0]["cliff"] is True
    assert data["settings"]["cliff_random_draws"] == 2
    assert data["settings"]["cliff_traces"] == "generated"
    assert AuditResult.from_json(out / "audit.json").to_dict() == data
    page = (out / "report.html").read_text()
    assert "Refusal cliff: the heads that suppress refusal" in page
    assert "Refusal cliff: probe per layer" in page
    from circuits.audit.views import audit_figures

    figures = audit_figures(result)
    assert {"cliff_probe_sweep", "cliff_curve_aligned", "cliff_head_tracing"} <= set(figures)
    for stem, fig in figures.items():
        if stem.startswith("cliff_") and stem != "cliff_head_tracing":
            assert_units(stem, fig)


def test_resume_reuses_the_step_and_a_changed_setting_recomputes_it(
    result: AuditResult, organism, out: Path
) -> None:
    model, pairs, jailbreak, _ = organism
    config = AuditConfig(**FAST, **CLIFF)  # type: ignore[arg-type]
    again = audit(model, pairs, config, out, progress=False, jailbreak=jailbreak)
    assert "cliff" in again.steps["loaded"] and "cliff" not in again.steps["computed"]
    assert again.cliff is not None and result.cliff is not None
    assert again.cliff.to_dict() == result.cliff.to_dict()
    changed = AuditConfig(**FAST, **{**CLIFF, "cliff_random_draws": 1})  # type: ignore[arg-type]
    other = audit(model, pairs, changed, out, progress=False, jailbreak=jailbreak)
    assert "cliff" in other.steps["computed"] and "interchange" in other.steps["loaded"]
    assert other.cliff is not None
    assert [len(a.random_attack_success) for a in other.cliff.ablations] == [1]
    # Other traces are another computation too.
    traces = result.cliff.traces[:6]
    given = audit(model, pairs, config, out, progress=False, jailbreak=jailbreak,
                  cliff_traces=traces, cliff_traces_source="six traces")  # fmt: skip
    assert "cliff" in given.steps["computed"] and given.cliff is not None
    assert given.cliff.n_traces == 6 and given.cliff.traces_source == "six traces"
    np.testing.assert_allclose(
        given.cliff.curves.cliff_scores, result.cliff.curves.cliff_scores[:6], atol=1e-9
    )


def test_traces_without_the_step_are_refused(organism) -> None:
    model, pairs, _, _ = organism
    with pytest.raises(RefusalCircuitsError, match="cliff=True"):
        audit(model, pairs, AuditConfig(), cliff_traces=[C.Trace("a", "b", "c")])


def test_command_runs_the_step_on_traces_from_a_file(result: AuditResult, tmp_path: Path):
    assert result.cliff is not None
    traces = tmp_path / "traces.jsonl"
    traces.write_text("".join(json.dumps(t.to_dict()) + "\n" for t in result.cliff.traces[:8]))
    out = tmp_path / "audit"
    argv = ["audit", "--n", "8", "--n-null", "4", "--check-heads", "0", "--no-figures",
            "--quiet", "--cliff", "--cliff-traces", str(traces), "--cliff-top-percent", "3",
            "--cliff-random-draws", "1", "--out", str(out)]  # fmt: skip
    assert main(argv) == 0
    data = json.loads((out / "audit.json").read_text())
    assert "thinking" in data["model"]  # --cliff audits the organism's thinking variant
    assert data["cliff"]["traces_source"] == str(traces) and data["cliff"]["n_traces"] == 8
    assert data["cliff_heads"][0]["layer"] == 7 and data["cliff_heads"][0]["head"] == 3
    assert data["settings"]["cliff_random_draws"] == 1


@pytest.mark.parametrize(
    ("extra", "says"),
    [
        (["--cliff-traces", "t.jsonl"], "--cliff-traces without --cliff"),
        (["--no-cliff-tracing"], "--no-cliff-tracing without --cliff"),
        (["--cliff", "--cliff-alpha", "1.5"], "--cliff-alpha 1.5"),
        (["--cliff", "--cliff-top-percent", "0"], "--cliff-top-percent"),
        (["--cliff", "--cliff-random-draws", "-1"], "--cliff-random-draws -1"),
    ],
)
def test_command_refuses_bad_cliff_options_before_loading(tmp_path, capsys, extra, says):
    assert main(["audit", "--out", str(tmp_path / "x"), *extra]) == 2
    assert says in capsys.readouterr().err


def test_cli_mirrors_the_audits_default_draws() -> None:
    from circuits.audit.config import AUDIT_CLIFF_RANDOM_DRAWS
    from circuits.cli import audit as cli

    assert (
        cli.AUDIT_CLIFF_RANDOM_DRAWS == AUDIT_CLIFF_RANDOM_DRAWS == AuditConfig().cliff_random_draws
    )
