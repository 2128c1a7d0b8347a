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
