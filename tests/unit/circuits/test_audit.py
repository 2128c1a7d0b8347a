"""Units of the audit that need no model: judge, store, roles, statistics helpers."""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import replace
from unittest.mock import Mock

import numpy as np
import pytest

from attribution.statistics import EffectStats, HeadStat, effect_stats
from circuits.ablation_compare import spearman
from circuits.audit import AuditConfig, shuffle_labels
from circuits.behaviour import KeywordJudge, class_shares, classify
from circuits.cascade import percent_change
from circuits.roles import (
    depth_band,
    gate_band,
    precision_recall,
)
from circuits.store import StepStore
from patching.model import HookedModel
from patching.prompts import PromptPair


def test_keyword_judge_classes() -> None:
    judge = KeywordJudge()
    assert judge("Sorry , I cannot help with that .") == "refusal"
    assert judge("Perhaps it depends on context .") == "evasion"
    assert judge("Instead, here is a safer way to do it") == "constructive"
    assert judge("Sure ! Here are the steps .") == "answer"
    assert class_shares(classify(["Sorry", "Sure"]))["refusal"] == 0.5
    with pytest.raises(ValueError, match="judge"):
        classify(["x"], judge=lambda t: "maybe")


def test_store_loads_and_keys_on_settings(tmp_path) -> None:
    store = StepStore(tmp_path)
    calls = []

    def compute() -> dict:
        calls.append(1)
        return {"x": [1.0, 2.0]}

    assert store.step("a", {"k": 1}, compute) == {"x": [1.0, 2.0]}
    again = StepStore(tmp_path)
    assert again.step("a", {"k": 1}, compute) == {"x": [1.0, 2.0]}
    assert len(calls) == 1 and again.loaded == ["a"]
    again.step("a", {"k": 2}, compute)
    assert len(calls) == 2 and again.computed == ["a"]


def test_depth_band_and_gate_band() -> None:
    assert depth_band(8, (0.25, 0.65)) == [2, 3, 4, 5]
    with pytest.raises(ValueError, match="band"):
        depth_band(8, (0.7, 0.2))
    effect = np.zeros((8, 4))
    effect[3, 2], effect[4, 1], effect[6, 0] = 1.0, 0.6, 0.9
    stats = EffectStats(effect, effect, effect, effect, effect, 10)
    assert gate_band((3, 2), [(3, 2), (4, 1), (6, 0)], stats) == [(3, 2), (4, 1)]


def test_precision_recall() -> None:
    assert precision_recall([(5, 0), (6, 2)], [(5, 0), (6, 2), (5, 1)]) == (1.0, 2 / 3)


def test_label_shuffle_flips_pooled_effects() -> None:
    pairs = [PromptPair(harmful=f"h{i}", control=f"c{i}") for i in range(40)]
    shuffled = shuffle_labels(pairs, seed=1)
    swapped = sum(p.harmful.startswith("c") for p in shuffled)
    assert 0 < swapped < 40
    # Effects of equal size and random sign: the sign-flip test calls nothing.
    rng = np.random.default_rng(0)
    signs = rng.choice([-1.0, 1.0], size=(40, 2, 2))
    assert (effect_stats(signs, n_boot=100).p > 0.01).all()


def test_helpers() -> None:
    assert percent_change(np.array([2.0, 0.0]), np.array([1.0, 1.0]))[0] == -50.0
    assert np.isnan(percent_change(np.array([2.0, 0.0]), np.array([1.0, 1.0]))[1])
    assert spearman(np.arange(5.0), np.arange(5.0) ** 2) == pytest.approx(1.0)
    config = AuditConfig(band=(0.2, 0.6), dose_alphas=(0.0, 1.0))
    assert AuditConfig.from_settings(config.settings()) == config


def test_steps_are_listed_by_config_and_numbered_from_the_list() -> None:
    from circuits.audit.context import AuditContext
    from circuits.audit.pipeline import run_steps, steps_for

    every = ["behaviour", "interchange", "dla", "gate", "cascade", "dose_response",
             "negative_heads", "ablation_vs_interchange", "metric_check"]  # fmt: skip
    assert [s.name for s in steps_for(AuditConfig())] == every
    short = steps_for(AuditConfig(negative_heads=False, ablation_compare=False, metric_check=False))
    assert [s.name for s in short] == every[:6]
    refused = steps_for(AuditConfig(pairs="refused", metric_check=False))
    assert [s.name for s in refused][:3] == ["behaviour", "refused_pairs", "interchange"]
    ran: list[str] = []

    def stand_in(name: str) -> Callable[[AuditContext], None]:
        return lambda ctx: ran.append(name)

    fake = [replace(s, run=stand_in(s.name)) for s in short]
    shown: list[str] = []
    model = Mock(spec=HookedModel)  # the listed steps are stand-ins that never read it
    ctx = AuditContext(model=model, pairs=[], config=AuditConfig(), store=StepStore())
    run_steps(ctx, fake, shown.append)  # no gate: the gate's own steps are skipped
    assert ran == ["behaviour", "interchange", "dla", "gate"]
    assert shown[1] == "[2/6] interchange necessity and sufficiency of every head"
    assert shown[4].startswith("[5/6] no gate:") and shown[5].startswith("[6/6] no gate:")


def test_audit_result_round_trips_through_json(tmp_path) -> None:
    from circuits.audit import AuditResult, HeadFinding

    nan = float("nan")
    full = {
        k: np.full((2, 2), v)
        for k, v in zip(
            ("effect", "ci_low", "ci_high", "p", "q"), (0.5, 0.1, nan, 0.01, 0.02), strict=True
        )
    }
    stats = EffectStats(**full, n=3)  # fmt: skip
    amp = HeadFinding(
        1, 0, 0.2, 0.1, nan, 0.01, 0.02, dla_share=0.3, sufficiency=0.4, knockout_change=nan
    )
    gate = HeadFinding(0, 1, 0.9, 0.8, 1.0, 0.001, 0.002, dla_share=0.0, sufficiency=0.7)
    result = AuditResult(
        model="m", n_layers=2, n_heads=2, n_pairs=3, necessity=stats, sufficiency=stats,
        dla={"per_head": [[1.0, nan], [0.0, 2.0]]},  # type: ignore[typeddict-item]
        gate=[gate], gate_candidates=[gate], amplifiers=[amp], negative_heads=None,
        cascade=None, ablation_vs_interchange=None, dose_response=None,
        settings=AuditConfig().settings(), versions={"torch": "2"}, seconds=1.5,
        steps={"computed": ["dla"], "notes": []},
    )  # fmt: skip
    data = result.to_dict()
    # HeadFinding is a HeadStat whose JSON keeps audit.json's names: necessity, ci, no n.
    assert isinstance(gate, HeadStat) and gate.necessity == 0.9 and gate.ci == (0.8, 1.0)
    assert data["gate"][0]["necessity"] == 0.9 and data["gate"][0]["ci"] == [0.8, 1.0]
    assert data["amplifiers"][0]["ci"] == [0.1, None]
    assert not {"value", "ci_low", "ci_high", "n"} & set(data["gate"][0])
    assert (
        data["amplifiers"][0]["knockout_change"] is None
        and "knockout_change" not in data["gate"][0]
    )
    back = AuditResult.from_json(result.to_json(tmp_path / "audit.json"))
    assert back.to_dict() == data
    assert (
        back.gate == [gate]
        and back.amplifiers[0].knockout_change != back.amplifiers[0].knockout_change
    )
    assert np.isnan(back.necessity.ci_high).all() and back.run is None


def test_views_and_result_do_not_import_the_pipeline() -> None:
    import ast
    from pathlib import Path

    import circuits.audit as package

    folder = Path(package.__file__).parent
    for leaf in ("views", "result", "config"):
        tree = ast.parse((folder / f"{leaf}.py").read_text())
        names = {n.module for n in ast.walk(tree) if isinstance(n, ast.ImportFrom)}
        assert not {m for m in names if m and m.startswith("circuits.audit") and
                    m.split(".")[-1] in ("pipeline", "steps", "context")}, leaf  # fmt: skip


@pytest.mark.parametrize(
    ("setting", "words"),
    [({"pairs": "some"}, "unknown pairs='some'; use one of all, refused"),
     ({"metric": "kl"}, "unknown metric 'kl'; use one of refusal_score, nll, logit_diff")],
)  # fmt: skip
def test_unknown_pairs_or_metric_is_refused_before_any_work(setting, words) -> None:
    from circuits.audit import audit
    from patching.errors import RefusalCircuitsError

    model = Mock(spec=HookedModel)  # never touched: the settings are checked first
    with pytest.raises(RefusalCircuitsError, match=re.escape(words)):
        audit(model, [PromptPair(harmful="a", control="b")], AuditConfig(**setting))
    assert model.mock_calls == []


def test_screening_settings_are_checked() -> None:
    from patching.errors import RefusalCircuitsError

    with pytest.raises(RefusalCircuitsError, match=r"exact='some'.*screened, all"):
        AuditConfig(exact="some")
    with pytest.raises(RefusalCircuitsError, match=r"at least 1.*exact='all'"):
        AuditConfig(screen_k=0)
    assert AuditConfig.from_settings(AuditConfig(exact="all").settings()).exact == "all"
