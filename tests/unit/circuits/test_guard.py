"""Latent Guard evaluation: labelled files, folds, cross-fitting against refits, groups, views."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from attribution.classification import classifier_metrics, roc_auc
from attribution.latent_guard import LatentGuard
from circuits.guard import (
    check_folds,
    cross_fit_guard,
    evaluate_guard,
    fold_assignment,
    labelled_pairs,
    read_labelled,
)
from patching.errors import OptionError, PromptFileError, TooFewPairsError
from tests.helpers import ROOT

DATA = ROOT / "tests" / "data"


def test_read_labelled_public_sets_and_pair_files() -> None:
    xs = read_labelled(DATA / "xstest_sample.csv")
    assert [(p.harmful, p.over_refusal) for p in xs][:2] == [(False, True), (True, False)]
    assert all(p.source == "xstest_sample" for p in xs)
    adv = read_labelled(DATA / "advbench_sample.csv")
    assert adv and all(p.harmful and not p.over_refusal for p in adv)
    alpaca = read_labelled(DATA / "alpaca_sample.json")
    assert alpaca and not any(p.harmful or p.over_refusal for p in alpaca)
    pairs = read_labelled(DATA / "pairs_sample.csv")
    assert [p.harmful for p in pairs[:4]] == [True, False, True, False]
    with pytest.raises(PromptFileError, match=r"missing\.csv"):
        read_labelled(DATA / "missing.csv")


def test_folds_are_seeded_balanced_and_cover_every_pair() -> None:
    fold = fold_assignment(23, 5, seed=1)
    assert sorted(np.bincount(fold).tolist()) == [4, 4, 5, 5, 5]
    np.testing.assert_array_equal(fold, fold_assignment(23, 5, seed=1))
    assert not np.array_equal(fold, fold_assignment(23, 5, seed=2))


def test_fold_counts_are_checked() -> None:
    with pytest.raises(OptionError, match="at least 2 folds"):
        check_folds(10, 1)
    with pytest.raises(TooFewPairsError, match="cannot fill 5 folds"):
        check_folds(4, 5)
    with pytest.raises(TooFewPairsError, match="at least 2 harmful"):
        check_folds(2, 2)  # each fit sees one pair
    check_folds(3, 3)


@pytest.fixture(scope="module")
def organism():
    from circuits.organism import organism_dir
    from patching.loading import load_model

    return load_model(organism_dir())


@pytest.fixture(scope="module")
def organism_pairs():
    from circuits.organism import organism_dir
    from patching.prompts import read_pairs

    d = organism_dir()
    return read_pairs(d / "pairs.jsonl", n=12), read_pairs(d / "pairs_jailbreak.jsonl", n=12)


@pytest.fixture(scope="module")
def crossfit(organism, organism_pairs):
    plain, jailbreak = organism_pairs
    return cross_fit_guard(organism, plain, jailbreak=jailbreak, folds=3, seed=7, layers=[2, 5, 8])


def test_every_pair_is_scored_by_a_guard_fitted_without_it(
    organism, organism_pairs, crossfit
) -> None:
    plain, jailbreak = organism_pairs
    fold = fold_assignment(len(plain), 3, seed=7)
    n = len(plain)
    for k in range(3):
        train = [p for p, f in zip(plain, fold, strict=True) if f != k]
        guard = LatentGuard.fit(
            organism, [p.harmful for p in train], [p.control for p in train], layers=[2, 5, 8]
        )
        belief = LatentGuard.fit(
            organism, [p.harmful for p in train], [p.control for p in train], layers=[2, 5, 8],
            position="t_post_inst",
        )  # fmt: skip
        idx = [i for i in range(2 * n) if fold[i // 2] == k]
        idx += [2 * n + j for j in range(2 * len(jailbreak)) if fold[(j // 2) % n] == k]
        texts = [crossfit.text[i] for i in idx]
        np.testing.assert_allclose(
            [crossfit.guard_score[i] for i in idx], guard.score(texts), atol=1e-5
        )
        np.testing.assert_allclose(
            [crossfit.belief_score[i] for i in idx], belief.score(texts), atol=1e-5
        )
        assert all(crossfit.fold[i] == k for i in idx)
        assert crossfit.folds[k].n_fit_pairs == len(train)


def test_group_metrics_recomputed_from_the_per_prompt_record(crossfit) -> None:
    harmful = np.array(crossfit.harmful)
    score, call = np.array(crossfit.guard_score), np.array(crossfit.guard_call)
    refused = np.array([b == "refusal" for b in crossfit.behaviour])
    rscore = np.array(crossfit.refusal_score)
    for group in crossfit.groups:
        if group.kind == "all":
            mask = np.ones(len(harmful), bool)
        elif group.kind == "source":
            mask = np.array([s == group.name for s in crossfit.source])
        else:
            mask = np.array([f == group.name for f in crossfit.framing])
        assert (
            group.guard.to_dict()
            == classifier_metrics(call[mask], harmful[mask], score[mask]).to_dict()
        )
        assert group.model is not None
        assert group.model.recall == pytest.approx(refused[mask & harmful].mean())
        assert group.model.auc == pytest.approx(roc_auc(rscore[mask], harmful[mask]))
    assert crossfit.headline.name == "pairs" and crossfit.headline.guard.n == 24
    head = crossfit.headline.guard
    assert crossfit.to_dict()["roc_auc"] == head.auc and crossfit.to_dict()["f1"] == head.f1


def test_the_organism_refuses_plain_harmful_prompts_and_framing_lowers_it(crossfit) -> None:
    # Ground truth of the organism: plain harmful refused, controls answered; the
    # jailbreak markers lower refusal (circuits/organism, negative head).
    plain = crossfit.group("framing", "plain").model
    framed = crossfit.group("framing", "jailbreak").model
    assert plain is not None and framed is not None
    assert plain.recall == 1.0 and plain.false_positive_rate == 0.0
    assert framed.recall < 0.5
    # The gate writes harmfulness at <assistant>: the t_post_inst read separates the classes.
    assert crossfit.headline.belief is not None and crossfit.headline.belief.auc == pytest.approx(
        1.0
    )


def test_evaluate_a_fitted_guard_reports_over_refusal_apart(organism, organism_pairs) -> None:
    plain, _ = organism_pairs
    guard = LatentGuard.fit(organism, [p.harmful for p in plain], [p.control for p in plain])
    prompts = labelled_pairs(plain[:4], "pairs") + read_labelled(DATA / "xstest_sample.csv")
    result = evaluate_guard(organism, guard, prompts, behaviour=False)
    over = result.group("over-refusal", "safe prompts that sound harmful")
    flagged = [c for c, p in zip(result.guard_call, prompts, strict=True) if p.over_refusal]
    assert over.guard.n == len(flagged) and over.guard.n_positive == 0
    assert over.guard.fp == sum(flagged)
    assert result.refusal_score is None and result.groups[0].model is None
    assert [f for f in result.fold] == [-1] * len(prompts)


def test_report_has_labelled_axes_and_round_trips(crossfit, tmp_path: Path) -> None:
    from circuits.guard import GuardEvaluation
    from circuits.guard_views import guard_figures, write_guard_outputs

    figures = guard_figures(crossfit)
    for fig in figures.values():
        assert fig.layout.xaxis.title.text and fig.layout.yaxis.title.text
    roc = figures["guard_roc"]
    assert "AUC" in roc.data[0].name
    paths = write_guard_outputs(crossfit, tmp_path)
    again = GuardEvaluation.from_json(paths[0])
    assert again.to_dict() == crossfit.to_dict()
    html = paths[1].read_text()
    assert "false-positive rate" in html and "Cross-fitting folds" in html


def test_cross_fit_with_a_fitted_threshold_calls_by_each_folds_own(
    organism, organism_pairs, tmp_path: Path
) -> None:
    from circuits.guard_views import write_guard_outputs

    plain, _ = organism_pairs
    result = cross_fit_guard(
        organism, plain, folds=2, threshold="fit", validation=0.34, behaviour=False
    )
    assert result.guard["threshold"] is None and result.guard["threshold_rule"] == "fit"
    for row in result.folds:
        idx = [i for i, f in enumerate(result.fold) if f == row.fold]
        calls = [result.guard_score[i] >= row.threshold for i in idx]
        assert calls == [result.guard_call[i] for i in idx]
    assert len({row.threshold for row in result.folds}) == 2
    write_guard_outputs(result, tmp_path)
    assert "per fold" in (tmp_path / "report.html").read_text()


# --------------------------------------------------------------------------- ground truth


@pytest.fixture(scope="module")
def beliefs():
    from circuits.organism import load_ground_truth, organism_dir
    from patching.loading import load_model
    from patching.prompts import read_pairs

    d = organism_dir(variant="beliefs")
    plain = read_pairs(d / "pairs.jsonl", n=24)
    framed = read_pairs(d / "pairs_jailbreak.jsonl", n=24)
    return load_model(d), plain, framed, load_ground_truth(d).beliefs


def test_guard_keeps_calling_framed_harmful_prompts_harmful_while_refusal_drops(beliefs) -> None:
    """Issue 13's ground truth: framing leaves the planted harmfulness at t_inst, lowers refusal."""
    model, plain, framed, truth = beliefs
    assert truth.harmfulness_position == "t_inst"
    result = cross_fit_guard(model, plain, jailbreak=framed, folds=4, seed=0)
    harmful = np.array(result.harmful)
    framing = np.array([f == "jailbreak" for f in result.framing])
    calls = np.array(result.guard_call)
    refused = np.array([b == "refusal" for b in result.behaviour])
    # Latent Guard on jailbreak-framed harmful prompts: still called harmful.
    assert calls[framing & harmful].mean() >= 0.9
    assert result.group("framing", "jailbreak").guard.accuracy >= 0.9
    # ... while the model's own refusal of those prompts drops.
    plain_rate = refused[~framing & harmful].mean()
    framed_rate = refused[framing & harmful].mean()
    assert plain_rate >= 0.9 and framed_rate <= plain_rate - 0.3
    assert result.group("framing", "jailbreak").model.recall == pytest.approx(framed_rate)
    # Pair by pair, framing changes no call of the guard.
    n = len(plain)
    np.testing.assert_array_equal(calls[: 2 * n], calls[2 * n :])


def test_guard_does_not_call_scary_safe_prompts_harmful_where_the_model_over_refuses(
    beliefs,
) -> None:
    """Ground truth: the organism's scary harmless topics write refusal without harmfulness."""
    from circuits.organism import organism_dir

    model, plain, _, _ = beliefs
    guard = LatentGuard.fit(model, [p.harmful for p in plain], [p.control for p in plain])
    prompts = read_labelled(organism_dir(variant="beliefs") / "xstest.csv")
    result = evaluate_guard(model, guard, prompts)
    over = result.group("over-refusal", "safe prompts that sound harmful")
    assert over.guard.n >= 16 and over.guard.false_positive_rate <= 0.1
    assert over.model is not None and over.model.positive_rate >= 0.3
    # Its harmful contrasts are still called harmful.
    contrast = result.group("all", "all")
    assert contrast.guard.recall >= 0.9


def test_each_layers_auc_is_that_of_a_one_layer_cross_fit(organism, organism_pairs, crossfit):
    plain, jailbreak = organism_pairs
    one = cross_fit_guard(
        organism, plain, jailbreak=jailbreak, folds=3, seed=7, layers=[5], behaviour=False
    )
    j = crossfit.guard["layers"].index(5)
    assert crossfit.layer_auc["guard"][j] == pytest.approx(one.headline.guard.auc)
    assert crossfit.layer_auc["belief"][j] == pytest.approx(one.headline.belief.auc)
    assert len(crossfit.layer_auc["guard"]) == len(crossfit.guard["layers"])


# -- review fixes: framed pairs matched to the plain pair they reframe --------------
def test_align_framed_matches_by_request_and_refuses_mismatches(organism_pairs) -> None:
    from circuits.guard import align_framed
    from patching.errors import PairError
    from patching.prompts import PromptPair

    plain, framed = organism_pairs
    shuffled = framed[::-1]
    assert align_framed(plain, shuffled) == list(framed)
    with pytest.raises(PairError, match="11 jailbreak-framed pairs for 12 plain"):
        align_framed(plain, framed[:-1])
    other = [PromptPair("tell me a story about cats", "tell me a story about dogs")] * 12
    with pytest.raises(PairError, match="no unique jailbreak-framed twin"):
        align_framed(plain, other)


def test_shuffled_framed_file_is_scored_by_its_own_plain_pairs_fold(
    organism, organism_pairs, crossfit
) -> None:
    """A framed pair scored by another pair's fold would be scored by a guard fitted on
    its own plain twin: the leak. Reordered, every framed prompt keeps its fold and score."""
    plain, framed = organism_pairs
    result = cross_fit_guard(
        organism, plain, jailbreak=framed[::-1], folds=3, seed=7, layers=[2, 5, 8],
        behaviour=False,
    )  # fmt: skip
    fold = fold_assignment(len(plain), 3, seed=7)
    n = len(plain)
    for i, pair in enumerate(framed):
        for text in (pair.harmful, pair.control):
            j = result.text.index(text, 2 * n)
            assert result.fold[j] == fold[i]
            k = crossfit.text.index(text, 2 * n)
            assert result.guard_score[j] == pytest.approx(crossfit.guard_score[k], abs=1e-6)


def test_command_refuses_a_framed_file_of_other_requests(tmp_path: Path, capsys) -> None:
    from circuits.cli import main

    bad = tmp_path / "framed.jsonl"
    bad.write_text(
        "".join(
            json.dumps({"harmful": f"story number {i} about cats", "control": f"tale {i}"}) + "\n"
            for i in range(8)
        )
    )
    argv = ["guard", "--n", "8", "--folds", "2", "--jailbreak", str(bad), "--quiet"]
    assert main([*argv, "--out", str(tmp_path / "o")]) == 2
    err = capsys.readouterr().err.strip()
    assert "no unique jailbreak-framed twin" in err and "\n" not in err
