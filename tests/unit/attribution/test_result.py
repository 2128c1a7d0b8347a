"""The fields-driven result serialiser (attribution.result) and the per-head record."""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pytest
import torch
from jaxtyping import Float, Int

from attribution.result import Result
from attribution.statistics import EffectStats, HeadStat, effect_stats


@dataclass
class Inner(Result):
    name: str
    values: Float[np.ndarray, " n"]


@dataclass
class Outer(Result):
    label: str
    score: float
    counts: Int[np.ndarray, " n"]
    weights: Float[torch.Tensor, " n"] = field(metadata={"group": "per_pair"})
    inner: Inner | None = None
    inners: list[Inner] = field(default_factory=list)
    pair: tuple[int, int] = (0, 0)
    _cache: dict[str, float] = field(default_factory=dict)

    def derived(self) -> dict[str, object]:
        return {"total": float(self.counts.sum())}


def test_round_trip_with_nan_nesting_groups_and_tensors(tmp_path: Path) -> None:
    r = Outer(
        label="x",
        score=float("nan"),
        counts=np.array([1, 2]),
        weights=torch.tensor([0.5, float("inf")]),
        inner=Inner("a", np.array([[1.0, np.nan]])),
        inners=[Inner("b", np.array([2.0]))],
        pair=(3, 4),
        _cache={"skip": 1.0},
    )
    data = r.to_dict()
    json.dumps(data, allow_nan=False)  # NaN and inf are null: strict JSON
    assert data["score"] is None and data["per_pair"]["weights"] == [0.5, None]
    assert data["total"] == 3.0 and "_cache" not in data and "weights" not in data
    path = r.to_json(tmp_path / "r.json")
    assert path == tmp_path / "r.json"
    back = Outer.from_json(path)
    # inf -> null -> NaN (JSON has neither)
    assert math.isnan(back.score) and back.pair == (3, 4) and back.counts.dtype == np.int64
    assert isinstance(back.weights, torch.Tensor) and torch.isnan(
        back.weights[1]
    )  # inf -> null -> NaN
    assert back.inner is not None and np.isnan(back.inner.values[0, 1])
    assert back.to_dict() == data


def test_missing_required_field_is_a_key_error_and_extra_keys_are_ignored() -> None:
    with pytest.raises(KeyError, match="values"):
        Inner.from_dict({"name": "a"})
    assert Inner.from_dict({"name": "a", "values": [1.0], "extra": 1}).name == "a"


def test_effect_stats_and_head_records_round_trip() -> None:
    x = np.random.default_rng(0).normal(size=(8, 2, 3))
    x[:, 1, 2] = np.nan  # a head not measured
    stats = effect_stats(x, n_boot=50)
    back = EffectStats.from_dict(json.loads(json.dumps(stats.to_dict())))
    np.testing.assert_array_equal(back.q, stats.q)
    assert np.isnan(back.effect[1, 2]) and back.n == 8
    top = stats.top(2, by="abs")
    assert all(isinstance(h, HeadStat) for h in top) and top[0].label.startswith("L")
    assert HeadStat.from_dict(top[0].to_dict()) == top[0]
    assert stats.top(6)[-1].label == "L1H2"  # the unmeasured head ranks last


# -- the circuits' results: one round trip each (to_dict -> from_dict, NaN -> null -> NaN)
def _stats(seed: int) -> EffectStats:
    x = np.random.default_rng(seed).normal(size=(6, 2, 3))
    x[:, 0, 1] = np.nan
    return effect_stats(x, n_boot=20, seed=seed)


def _round_trip(result: Result) -> Result:
    data = result.to_dict()
    text = json.dumps(data, allow_nan=False)  # NaN is null: strict JSON
    back = type(result).from_dict(json.loads(text))
    assert back.to_dict() == data
    return back


def test_cascade_result_round_trip_and_top() -> None:
    from circuits.cascade import CascadeResult

    clean = np.array([[1.0, 2.0, 0.0], [4.0, -2.0, 1.0]])
    r = CascadeResult(
        gate=[(0, 0)],
        kind="zero",
        clean=clean,
        knocked=np.array([[1.0, 1.0, 0.0], [1.0, -1.0, np.nan]]),
        amplifiers=[(1, 0)],
        effect=-75.0,
        null_heads=[(0, 1), (0, 2)],
        null_effects=[-10.0, float("nan")],
    )
    data = r.to_dict()
    assert data["null"]["heads"] == [[0, 1], [0, 2]] and data["null"]["effects"] == [-10.0, None]
    assert {"mean", "sd", "max_drop"} <= set(data["null"]) and data["change_percent"][0][2] is None
    back = _round_trip(r)
    assert isinstance(back, CascadeResult) and back.gate == [(0, 0)]
    assert math.isnan(back.null_effects[1]) and np.isnan(back.knocked[1, 2])
    top = r.top(2)
    assert all(isinstance(h, HeadStat) for h in top) and top[0].label == "L1H0"
    assert top[0].value == pytest.approx(-75.0)


def test_negative_heads_result_round_trip_and_top() -> None:
    from circuits.negative_heads import NegativeHeadsResult

    r = NegativeHeadsResult(
        scale=0.1,
        raises=_stats(1),
        harmful_dla=np.array([[-1.0, np.nan, 0.5], [0.2, -0.3, 0.0]]),
        heads=[(1, 1)],
        ablated=[(1, 1), (0, 0)],
        top_pct=5.0,
        asr_before={"plain": 0.1, "framed": float("nan")},
        asr_after={"plain": 0.3, "framed": 0.5},
    )
    back = _round_trip(r)
    assert isinstance(back, NegativeHeadsResult) and back.ablated == [(1, 1), (0, 0)]
    assert np.isnan(back.harmful_dla[0, 1]) and math.isnan(back.asr_before["framed"])
    top = r.top(3)
    assert all(isinstance(h, HeadStat) for h in top)
    assert top == r.raises.top(3) and top[0].value == np.nanmax(r.raises.effect)


def test_dose_response_round_trip_keeps_its_json_names() -> None:
    from circuits.behaviour import BEHAVIOURS
    from circuits.dose_response import DoseResponse

    r = DoseResponse(
        heads=[(3, 2)],
        alphas=[0.0, 1.0],
        score_mean=[-1.0, float("nan")],
        score_sd=[0.5, 0.0],
        shares=[
            {b: float(b == "answer") for b in BEHAVIOURS},
            {b: float(b == "refusal") for b in BEHAVIOURS},
        ],
        examples=["a", "b"],
        n_prompts=4,
    )
    data = r.to_dict()
    assert data["refusal_score"] == [-1.0, None] and data["behaviour"] == r.shares
    assert data["dominant"] == ["answer", "refusal"] and "score_mean" not in data
    back = _round_trip(r)
    assert isinstance(back, DoseResponse) and back.heads == [(3, 2)]
    assert math.isnan(back.score_mean[1])


def test_ablation_comparison_round_trip() -> None:
    from circuits.ablation_compare import AblationComparison

    r = AblationComparison(kind="mean", ablation=_stats(2), interchange=_stats(3), alpha=0.5)
    data = r.to_dict()
    assert {"rank_correlation", "found_by_both", "table"} <= set(data)
    back = _round_trip(r)
    assert isinstance(back, AblationComparison) and back.alpha == 0.5
    assert np.isnan(back.interchange.effect[0, 1])
    assert back.found_by_ablation == r.found_by_ablation


@dataclass
class Renamed(Result):
    value: float = field(metadata={"key": "score"})
    low: float = field(default=float("nan"), metadata={"key": "ci", "index": 0})
    high: float = field(default=float("nan"), metadata={"key": "ci", "index": 1})
    note: str | None = field(default=None, metadata={"omit": None})


def test_field_metadata_renames_packs_and_omits() -> None:
    r = Renamed(1.0, 0.5, float("nan"))
    assert r.to_dict() == {"score": 1.0, "ci": [0.5, None]}
    back = _round_trip(r)
    assert isinstance(back, Renamed) and back.note is None and math.isnan(back.high)
    assert Renamed.from_dict(Renamed(2.0, note="x").to_dict()).note == "x"
