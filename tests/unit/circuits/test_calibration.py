"""Refusal-rate calibration on the organism: targets reached per category, by generation too."""

from __future__ import annotations

import json
import math
from collections.abc import Iterator
from pathlib import Path

import pytest
import torch

from circuits.calibration import (
    MIN_PROMPTS,
    RefusalCalibration,
    by_category,
    calibrate_refusal,
    calibrated_decode,
)
from circuits.cli import main
from circuits.organism import generate_pairs
from patching.chat import format_chat
from patching.errors import OptionError, TooFewPairsError
from patching.executor import run
from patching.loading import load_model
from tests.helpers.organism_helpers import fresh_organism

# The organism variant whose refusal margins are graded across prompts, so a bias moves the
# rate one prompt at a time (docs/science.md#organism-beliefs-variant).
VARIANT = "beliefs"
N_PAIRS = 120  # 20 a category: rates in steps of 5 points
TARGETS = {"weapons": 0.2, "drugs": 0.8}
TOLERANCE = 0.05


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    with fresh_organism(tmp_path_factory, seed=0, variant=VARIANT) as directory:
        yield directory


@pytest.fixture(scope="module")
def model(model_dir: Path):
    return load_model(model_dir)


@pytest.fixture(scope="module")
def groups(model_dir: Path):
    return by_category(generate_pairs(N_PAIRS, seed=0, variant="plain"))


def _targets(groups) -> dict[str, float]:
    return {name: TARGETS.get(name, 0.5) for name in groups}


@pytest.fixture(scope="module", params=["bias", "threshold"])
def calibration(request, model, groups) -> RefusalCalibration:
    return calibrate_refusal(model, groups, _targets(groups), mode=request.param)


def test_targets_reached_within_five_points_verified_by_generation(calibration, groups) -> None:
    assert calibration.names == list(groups)
    for c in calibration.categories:
        assert c.n_harmful == len(groups[c.category]) >= MIN_PROMPTS
        assert abs(c.harmful_at - c.target) <= TOLERANCE, c.category
        assert abs(c.harmful_generated - c.target) <= TOLERANCE, (c.category, c.harmful_text)
        assert len(c.harmful_class) == c.n_harmful and len(c.harmless_class) == c.n_harmless
        assert not math.isnan(c.harmless_generated)
    # Different targets give different settings: the calibration is per category.
    biases = calibration.biases
    assert set(biases) == set(groups)
    assert len({round(b, 6) for b in biases.values()}) > 1


def test_first_token_rates_are_what_the_hook_generates(calibration, model, groups) -> None:
    """Per category, the share of first generated tokens in R under the hook is the
    reported first-token rate, and the reported curve at the setting agrees."""
    tok = model.tokenizer
    prompts = [format_chat(tok, p.harmful) for pairs in groups.values() for p in pairs]
    categories = [name for name, pairs in groups.items() for _ in pairs]
    first = [ids[0] for ids in calibrated_decode(model, prompts, categories, calibration, 1)]
    ids = set(calibration.refusal_ids)
    for c in calibration.categories:
        mine = [t for t, name in zip(first, categories, strict=True) if name == c.category]
        assert sum(t in ids for t in mine) / len(mine) == pytest.approx(c.harmful_at)


def test_curves_equal_the_biased_softmax_of_the_executor_logits(model, groups) -> None:
    name = next(iter(groups))
    result = calibrate_refusal(
        model, {name: groups[name]}, None, sweep=[-6.0, -2.0, 0.0, 3.0], verify=False
    )
    entry = result.categories[0]
    logits = run(model, [format_chat(model.tokenizer, p.control) for p in groups[name]])[:, -1]
    for j, b in enumerate(result.sweep):
        biased = logits.double().clone()
        biased[:, result.refusal_ids] += float(b)
        p = torch.softmax(biased, dim=-1)[:, result.refusal_ids].sum(-1)
        greedy = torch.isin(biased.argmax(-1), torch.tensor(result.refusal_ids))
        assert entry.harmless_rate[j] == pytest.approx(float(greedy.double().mean()))
        assert entry.harmless_expected[j] == pytest.approx(float(p.mean()), abs=1e-9)
    assert math.isnan(entry.setting) and result.biases == {}


def test_dedicated_token_is_stripped_before_judging(model, groups) -> None:
    name = next(iter(groups))
    result = calibrate_refusal(model, {name: groups[name]}, 1.0, dedicated_token="Sorry")
    entry = result.categories[0]
    assert result.refusal_ids == [model.tokenizer.convert_tokens_to_ids("Sorry")]
    assert entry.harmful_at == 1.0
    # Forced "Sorry" opens every harmful reply; the judge reads what follows it.
    assert all(not t.startswith("Sorry") for t in entry.harmful_text)
    assert entry.harmful_generated == 1.0, entry.harmful_text


def test_result_round_trips(calibration) -> None:
    data = json.loads(json.dumps(calibration.to_dict()))
    again = RefusalCalibration.from_dict(data)
    assert again.to_dict() == calibration.to_dict()
    assert data["biases"] == calibration.biases


def test_bad_input_is_refused_before_any_run(model, groups, monkeypatch) -> None:
    import circuits.calibration

    def refuse(*args: object, **kwargs: object) -> None:
        raise AssertionError("the model ran before the input was checked")

    monkeypatch.setattr(circuits.calibration, "run", refuse)
    with pytest.raises(OptionError, match="unknown category nosuch; the prompts' categories"):
        calibrate_refusal(model, groups, {"nosuch": 0.5})
    with pytest.raises(OptionError, match=r"target 1\.5 for weapons is not a refusal rate"):
        calibrate_refusal(model, groups, {"weapons": 1.5})
    few = {"weapons": groups["weapons"][: MIN_PROMPTS - 1]}
    with pytest.raises(TooFewPairsError, match=f"weapons has {MIN_PROMPTS - 1} pairs"):
        calibrate_refusal(model, few, 0.5)


def test_calibrate_command(model_dir: Path, tmp_path: Path, capsys) -> None:
    out = tmp_path / "out"
    argv = ["calibrate", "--model", str(model_dir), "--pairs", str(model_dir / "pairs.jsonl")]
    # The organism's pair file has 8 pairs a category: 25% and 50% are reachable.
    assert main([*argv, "--out", str(out), "--target", "0.5", "--target", "weapons=0.25"]) == 0
    data = json.loads((out / "calibration.json").read_text())
    summary = data["summary"]
    assert summary["weapons"]["target"] == 0.25 and summary["drugs"]["target"] == 0.5
    for entry in summary.values():
        assert abs(entry["tpr_generated"] - entry["target"]) <= TOLERANCE
    page = (out / "report.html").read_text()
    assert "bias on the refusal tokens (logits)" in page
    assert "refusal rate (% of prompts)" in page and "FPR: harmless prompts refused" in page
    capsys.readouterr()
    for extra, words in (
        (["--target", "nosuch=0.2"], "unknown category nosuch"),
        (["--target", "1.5"], "target 1.5 for weapons is not a refusal rate"),
        (["--target", "x"], "--target x: not a rate"),
        (["--n", "8"], f"needs at least {MIN_PROMPTS} a category"),
    ):
        assert main([*argv, "--out", str(tmp_path / "bad"), *extra]) == 2
        err = [line for line in capsys.readouterr().err.splitlines() if line.strip()]
        assert len(err) == 1 and words in err[0], err


def test_calibrate_defaults_to_the_organism(model_dir: Path, tmp_path: Path) -> None:
    """No --model, no --target: the exact organism (built in this module's cache) at 50%."""
    assert main(["calibrate", "--out", str(tmp_path / "o"), "--quiet"]) == 0
    data = json.loads((tmp_path / "o" / "calibration.json").read_text())
    assert "organism-v" in data["model"]
    for entry in data["summary"].values():
        assert entry["target"] == 0.5
        assert abs(entry["tpr_generated"] - 0.5) <= 0.5 / 10  # 10-11 pairs a category


def test_heldout_rates_equal_per_fold_calibrations_applied_by_the_hook(
    calibration, model, groups
) -> None:
    """Independent path: per fold, calibrate on the other folds' pairs alone (the same
    sweep), decode the held-out fold's first token under that setting, pool the refusals."""
    import numpy as np

    name = "drugs"
    c = calibration.category(name)
    pairs = groups[name]
    n = len(pairs)
    assert c.cv_folds == 5
    fold = np.empty(n, dtype=np.int64)
    for j, part in enumerate(np.array_split(np.random.default_rng(0).permutation(n), 5)):
        fold[part] = j
    tok = model.tokenizer
    refused = {"harmful": 0, "harmless": 0}
    for j in range(5):
        fit = [p for p, f in zip(pairs, fold, strict=True) if f != j]
        held = [p for p, f in zip(pairs, fold, strict=True) if f == j]
        part = calibrate_refusal(
            model, {name: fit}, {name: c.target}, mode=calibration.mode,
            sweep=calibration.sweep, verify=False,
        )  # fmt: skip
        for side in refused:
            prompts = [format_chat(tok, getattr(p, "control" if side == "harmless" else side))
                       for p in held]  # fmt: skip
            first = calibrated_decode(model, prompts, [name] * len(held), part, 1)
            refused[side] += sum(ids[0] in set(part.refusal_ids) for ids in first)
    assert c.harmful_heldout == pytest.approx(refused["harmful"] / n)
    assert c.harmless_heldout == pytest.approx(refused["harmless"] / n)
    summary = calibration.to_dict()["summary"][name]
    assert summary["tpr_heldout"] == pytest.approx(c.harmful_heldout)
