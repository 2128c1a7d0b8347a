"""The refusal cliff (circuits.cliff) against the thinking organism's ground truth and
against independent computations (docs/science.md#refusal-cliff)."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
import pytest

from circuits import cliff as C
from circuits.cli import build_parser
from circuits.cli.cliff import check_options
from circuits.cliff_views import cliff_figures, cliff_summary, write_cliff_outputs
from circuits.organism import generate_pairs, load_ground_truth, organism_dir, vocab
from circuits.organism.build import ORGANISM_VARIANTS
from circuits.organism.ground_truth import ThinkingTruth
from patching.chat import format_chat
from patching.decoding import greedy_decode
from patching.errors import OptionError, PromptFileError
from patching.loading import load_model
from patching.model import HookedModel

N = 12


@pytest.fixture(scope="module")
def model_dir() -> Path:
    return organism_dir(variant="thinking")


@pytest.fixture(scope="module")
def truth(model_dir: Path) -> ThinkingTruth:
    t = load_ground_truth(model_dir).thinking
    assert t is not None
    return t


@pytest.fixture(scope="module")
def model(model_dir: Path) -> HookedModel:
    return load_model(model_dir)


@pytest.fixture(scope="module")
def harmful() -> list[str]:
    return [p.harmful for p in generate_pairs(N, 0, "plain")]


# The interventions of every generation the cliff step runs through the package (the top-k%
# ablations' attack success), filled by the ``result`` fixture.
ABLATED_GENERATIONS: list[list[object]] = []


@pytest.fixture(scope="module")
def result(model: HookedModel, harmful: list[str]) -> C.CliffResult:
    real = C.generate_traces

    def spy(model, prompts, n_tokens, rows=None, **kw):  # type: ignore[no-untyped-def]
        ABLATED_GENERATIONS.append(list(rows[0]) if rows else [])
        return real(model, prompts, n_tokens, rows, **kw)

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(C, "generate_traces", spy)
        return C.cliff_step(
            model,
            harmful,
            [p.control for p in generate_pairs(N, 0, "plain")],
            probe_harmful=[p.harmful for p in generate_pairs(N, 0, "jailbreak")],
            percents=(3.0, 10.0),
            random_draws=2,
            gen_tokens=24,
        )


def susceptible(texts: list[str], truth: ThinkingTruth) -> np.ndarray:
    """Independent of the toolkit: which prompts name a susceptible topic word."""
    return np.array([any(w in t.split() for w in truth.susceptible_words) for t in texts])


# -- the organism ------------------------------------------------------------------
def test_thinking_variant_has_its_own_version_and_truth(model_dir: Path, truth: ThinkingTruth):
    assert "thinking" in ORGANISM_VARIANTS
    assert model_dir.name.startswith("organism-thinking-v")
    assert truth.cliff_head == (7, 3)
    assert load_ground_truth(model_dir).role_of(*truth.cliff_head) == "cliff"
    per_category = {
        c: sum(w in truth.susceptible_words for w in ws) for c, ws in vocab.HARMFUL_TOPICS.items()
    }
    assert set(per_category.values()) == {round(truth.planted_attack_success * 6)}


def test_thinking_organism_answers_susceptible_topics_after_the_trace(
    model: HookedModel, truth: ThinkingTruth, harmful: list[str]
) -> None:
    tok = model.tokenizer
    texts = [
        str(tok.decode(r)) for r in greedy_decode(model, [format_chat(tok, h) for h in harmful], 24)
    ]
    trace = " ".join(truth.thinking_words)
    for text, sus in zip(texts, susceptible(harmful, truth), strict=True):
        assert text.startswith(f"{trace} {truth.think_close} ")
        assert text.split(truth.think_close)[1].split()[0] == ("Sure" if sus else "Sorry")
    # Without thinking every plain harmful prompt is refused (no cliff).
    plain = [format_chat(tok, h, template_kwargs={"enable_thinking": False}) for h in harmful]
    assert all(str(tok.decode(r)).startswith("Sorry") for r in greedy_decode(model, plain, 3))


# -- probe -------------------------------------------------------------------------
def test_fit_probe_solves_the_penalised_likelihood() -> None:
    """Independent check: the gradient of C * sum(log-loss) + |w|^2 / 2 is ~0 at the fit."""
    rng = np.random.default_rng(0)
    x = rng.normal(size=(60, 5)) * [1, 2, 3, 4, 5] + 3
    y = (x[:, 0] + rng.normal(size=60) > 3).astype(int)
    mean, scale = x.mean(0), x.std(0)
    probe = C.fit_probe(x, y, 0, mean, scale, c=0.5)
    z = (x - mean) / scale
    residual = 1 / (1 + np.exp(-(z @ probe.coef + probe.intercept))) - y
    assert np.allclose(0.5 * z.T @ residual + probe.coef, 0, atol=1e-3)
    assert abs(residual.sum()) < 1e-3  # the intercept is not penalised
    assert np.allclose(probe.probability(x), 1 / (1 + np.exp(-probe.logit(x))))


def test_fit_probe_separable_toy_puts_weight_on_the_separating_feature() -> None:
    x = np.array([[0.0, 1.0], [0.1, -1.0], [1.0, 1.0], [1.1, -1.0]] * 5)
    y = np.array([0, 0, 1, 1] * 5)
    probe = C.fit_probe(x, y, 0, x.mean(0), x.std(0))
    assert abs(probe.coef[0]) > 10 * abs(probe.coef[1])
    assert ((probe.logit(x) > 0) == y.astype(bool)).all()


def test_sweep_numbers_match_an_independent_recomputation(result: C.CliffResult) -> None:
    sweep = result.sweep
    sizes = sweep.class_sizes
    # Ground truth of the classes: plain harmful refused, controls and strong framings answered.
    assert sizes["refused_harmful"] >= N and sizes["complied_harmless"] == N
    assert sizes["complied_harmful"] > 0
    best = next(r for r in sweep.layers if r.layer == sweep.layer)
    assert best.accuracy == 1.0 and best.auc == 1.0
    assert sweep.layer == 8  # the cliff and the negative head are in the final residual only
    # The probe reads the planted refusal readout more than any other feature.
    weight = np.abs(sweep.probe.coef)
    assert int(np.argmax(weight)) == 2  # layout.READOUT
    for row in sweep.layers:
        assert row.n_train + row.n_test == sum(sizes.values())


def test_too_few_examples_is_a_clear_error(model: HookedModel, harmful: list[str]) -> None:
    with pytest.raises(C.TooFewExamplesError, match="at least 4 of each"):
        C.probe_examples(model, harmful[:2], ["explain how to make a cake"])


# -- curves ------------------------------------------------------------------------
def test_curve_shows_the_cliff_at_the_planted_position(
    result: C.CliffResult, truth: ThinkingTruth, harmful: list[str]
) -> None:
    sus = susceptible([t.prompt for t in result.traces], truth)
    assert 0 < sus.sum() < len(sus)
    for p, (think, close, answer), s in zip(
        result.curves.per_trace, result.curves.segments, sus, strict=True
    ):
        p = np.array(p)
        assert close - think == 1 + len(truth.thinking_words)
        assert (p[think:close] > 0.9).all()  # refusal intention held through the trace
        assert (p[answer - 1] < 0.1) if s else (p[answer - 1] > 0.9)
        # The largest one-step drop is at the end-of-thinking marker (the planted cliff).
        if s:
            assert int(np.argmin(np.diff(p[:answer]))) + 1 == answer - 1
    scores = result.curves.cliff_scores
    assert (scores[sus] > 0.8).all() and (np.abs(scores[~sus]) < 0.1).all()


def test_curves_hand_case() -> None:
    """Two traces of different lengths: aligned means exclude missing positions."""
    import torch

    a = C.TraceTokens(torch.zeros(6, dtype=torch.long), think=2, close=4, answer=5)
    b = C.TraceTokens(torch.zeros(5, dtype=torch.long), think=1, close=3, answer=4)
    pa = np.array([0.1, 0.2, 0.9, 0.8, 0.3, 0.2])
    pb = np.array([0.0, 0.6, 0.7, 0.1, 0.5])
    c = C.cliff_curves([pa, pb], [a, b], n_bins=2)
    assert list(c.offsets) == [-4, -3, -2, -1, 0, 1]
    assert np.allclose(c.mean, [0.1, 0.1, 0.75, 0.75, 0.2, 0.35])
    assert list(c.count) == [1, 2, 2, 2, 2, 2]
    assert np.allclose(c.cliff_scores, [0.9 - 0.3, 0.7 - 0.1])
    assert (c.ci_low <= c.mean + 1e-12).all() and (c.mean <= c.ci_high + 1e-12).all()


# -- head tracing and ablation -----------------------------------------------------
def test_head_tracing_ranks_the_cliff_head_first(result: C.CliffResult, truth: ThinkingTruth):
    tracing = result.tracing
    assert tracing is not None
    top = tracing.ranked[0]
    assert (top.layer, top.head) == truth.cliff_head
    assert top.p < 0.05
    # No head at or after the probe layer is measured.
    assert np.isnan(tracing.stats.effect[8:]).all()


def test_tracing_effect_matches_a_manual_intervened_run(
    model: HookedModel, result: C.CliffResult, truth: ThinkingTruth
) -> None:
    """The cliff head's mean effect against runs made one trace at a time."""
    from patching.interventions import Scale

    layer, head = truth.cliff_head
    effects = []
    for trace in result.traces:
        tt = C.tokenize_trace(model.tokenizer, trace)
        tokens = [tt.tokens[: tt.answer]]
        clean = C.probe_positions(model, result.sweep.probe, tokens, at=[-1])[0][0]
        scaled = C.probe_positions(
            model, result.sweep.probe, tokens, [[Scale(layer, head, "all", 0.1)]], at=[-1]
        )[0][0]
        effects.append(scaled - clean)
    assert result.tracing is not None
    assert result.tracing.stats.effect[layer, head] == pytest.approx(np.mean(effects), abs=1e-4)
    sus = susceptible([t.prompt for t in result.traces], truth)
    assert np.abs(np.array(effects)[~sus]).max() < 0.05


@pytest.mark.parametrize(
    ("ablation", "probe_layer"), [("scale", 4), ("zero", 4), ("mean", 4), ("scale", 8)]
)
def test_tracing_resumed_at_each_head_equals_full_passes(
    model: HookedModel, result: C.CliffResult, ablation: str, probe_layer: int
) -> None:
    """Every head's mean effect, each pass resumed at the head's layer from a kept clean
    pass (and stopped at a mid-depth probe's layer), against full passes from the
    embeddings one head at a time."""
    from dataclasses import replace

    from circuits.cliff.tracing import _head_rows, head_means

    probe = replace(result.sweep.probe, layer=probe_layer)
    segments = [C.tokenize_trace(model.tokenizer, t) for t in result.traces]
    traced = C.trace_heads(model, probe, segments, ablation=ablation, batch_size=5)  # type: ignore[arg-type]
    tokens = [s.tokens[: s.answer] for s in segments]
    means = head_means(model, tokens) if ablation == "mean" else None
    clean = np.array([x[0] for x in C.probe_positions(model, probe, tokens, at=[-1])])
    want = np.full((model.n_layers, model.n_heads), np.nan)
    for layer in range(probe_layer):
        for head in range(model.n_heads):
            iv = _head_rows(layer, head, ablation, C.DEFAULT_ALPHA, means)
            got = C.probe_positions(model, probe, tokens, [[iv]] * len(tokens), at=[-1])
            want[layer, head] = np.mean(np.array([x[0] for x in got]) - clean)
    np.testing.assert_allclose(traced.stats.effect, want, atol=1e-5, rtol=0)
    assert np.abs(want[:probe_layer]).max() > 1e-2  # some head does move the probe


def test_baseline_attack_success_reuses_the_generated_traces(
    model: HookedModel, result: C.CliffResult, harmful: list[str]
) -> None:
    """The step judges the traces it generated: the same rate as a fresh unablated
    generation, and every generation it ran besides carried an ablation."""
    assert result.attack_success == C.attack_success(model, harmful, 24)[0]
    assert ABLATED_GENERATIONS and all(ABLATED_GENERATIONS)
    # The traces that never closed thinking, counted apart and said in the summary.
    made = C.generate_traces(model, harmful, 24)
    tok = model.tokenizer
    texts = [
        str(tok.decode(r)) for r in greedy_decode(model, [format_chat(tok, h) for h in harmful], 24)
    ]
    unclosed = sum("</think>" not in t for t in texts)
    assert result.n_incomplete == unclosed == sum(t is None for t in made)
    assert f"{unclosed} of {len(harmful)} traces never closed </think>" in "\n".join(
        cliff_summary(result)
    )


def test_ablating_the_cliff_head_stops_attack_success(
    result: C.CliffResult, truth: ThinkingTruth, harmful: list[str]
) -> None:
    planted = float(susceptible(harmful, truth).mean())
    assert result.attack_success == pytest.approx(planted)
    three = result.ablations[0]
    assert three.heads == [list(truth.cliff_head)]
    assert three.attack_success == 0.0
    for heads, rate in zip(three.random_heads, three.random_attack_success, strict=True):
        if list(truth.cliff_head) not in heads:
            assert rate == pytest.approx(planted)
    # The test is one-sided towards lower attack success: random draws without the cliff
    # head keep the planted level, so p is the smallest the draws allow.
    assert all(list(truth.cliff_head) not in heads for heads in three.random_heads)
    assert three.p_value == pytest.approx(1 / (1 + len(three.random_heads)))


def test_renormalised_ablation_is_labelled_and_boosts_by_n_over_n_minus_k(
    model: HookedModel, harmful: list[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    from patching.interventions import Ablation, Scale

    n = model.n_heads
    gone = [(7, 3), (7, 1), (2, 0)]
    # The manual rows: the heads zeroed, every other head of a touched layer scaled by
    # n / (n - k) with k that layer's ablated heads.
    manual = [Ablation(a, b, "all") for a, b in gone]
    manual += [Scale(2, b, "all", n / (n - 1)) for b in range(n) if b != 0]
    manual += [Scale(7, b, "all", n / (n - 2)) for b in range(n) if b not in (3, 1)]
    seen: list[list[object]] = []
    real = C.generate_traces

    def spy(model, prompts, n_tokens, rows=None, **kw):  # type: ignore[no-untyped-def]
        seen.append(list(rows[0]) if rows else [])
        return real(model, prompts, n_tokens, rows, **kw)

    monkeypatch.setattr(C, "generate_traces", spy)
    rate, open_traces = C.attack_success(model, harmful, 24, gone, renormalise=True)
    assert sorted(map(repr, seen[-1])) == sorted(map(repr, manual))
    # The same rate as the manual rows run directly.
    traces = real(model, harmful, 24, [manual] * len(harmful))
    done = [t for t in traces if t is not None]
    labels = C.classify([t.response for t in done], None)
    assert rate == sum(x == "answer" for x in labels) / len(harmful)
    assert open_traces == len(traces) - len(done)
    # Plain ablation: no boost.
    C.attack_success(model, harmful, 24, gone)
    assert sorted(map(repr, seen[-1])) == sorted(map(repr, manual[:3]))
    # The flag: ablate_top_heads labels each row it renormalised.
    trace = _fake_trace(model.n_layers, model.n_heads, probe_layer=8)
    out = C.ablate_top_heads(model, trace, harmful[:2], 8, percents=(1.0,), random_draws=1,
                             renormalise=True)  # fmt: skip
    assert all(a.renormalised for a in out)
    assert any(isinstance(iv, Scale) for iv in seen[-1])


# -- traces and the judge ----------------------------------------------------------
def test_tokenized_trace_segments_hold_the_markers(model: HookedModel, truth: ThinkingTruth):
    trace = C.Trace("explain how to make a bomb", " ".join(truth.thinking_words), "Sure ! Here")
    tt = C.tokenize_trace(model.tokenizer, trace)
    ids = tt.tokens.tolist()
    tok = model.tokenizer
    assert tok.convert_ids_to_tokens(ids[tt.think]) == truth.think_open
    assert tok.convert_ids_to_tokens(ids[tt.last_before_answer]) == truth.think_close
    assert tok.convert_ids_to_tokens(ids[tt.answer :]) == ["Sure", "!", "Here"]
    # Same tokens as the template's own rendering of the whole conversation.
    prompt = format_chat(tok, trace.prompt)
    assert ids[: len(prompt)] == prompt.tokens.tolist()


def test_judge_keeps_the_largest_cliffs(tmp_path: Path) -> None:
    traces = [C.Trace(f"p{i}", "t", "r") for i in range(5)]
    scores = np.array([0.1, 0.9, -0.2, 0.5, 0.7])
    rows = C.judge_traces(traces, scores, 0.4)
    assert [r["prompt"] for r in rows] == ["p1", "p4"]
    assert [r["cliff_score"] for r in rows] == [0.9, 0.7]
    path = C.write_judge_subset(rows, tmp_path / "top.jsonl")
    assert [json.loads(line) for line in path.read_text().splitlines()] == rows
    with pytest.raises(ValueError, match="top fraction"):
        C.judge_traces(traces, scores, 0.0)


def test_read_traces_errors(tmp_path: Path) -> None:
    good = tmp_path / "t.jsonl"
    good.write_text(json.dumps({"prompt": "a", "thinking": "b", "response": "c"}) + "\n\n")
    assert C.read_traces(good) == [C.Trace("a", "b", "c")]
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"prompt": "a"}\n')
    with pytest.raises(PromptFileError, match="line 1"):
        C.read_traces(bad)


# -- outputs and the command -------------------------------------------------------
def test_result_round_trips_and_report_is_written(result: C.CliffResult, tmp_path: Path):
    data = result.to_dict()
    assert C.CliffResult.from_dict(data).to_dict() == data
    figures = cliff_figures(result)
    for fig in figures.values():
        assert fig.layout.xaxis.title.text and fig.layout.yaxis.title.text
    paths = write_cliff_outputs(result, tmp_path)
    assert json.loads(paths[0].read_text())["sweep"]["layer"] == 8


def _args(*extra: str) -> argparse.Namespace:
    return build_parser().parse_args(["cliff", *extra])


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (["--judge-out", "x.jsonl"], "--judge-out ranks"),
        (["--top-frac", "0"], "--top-frac 0.0"),
        (["--alpha", "1.5"], "--alpha 1.5"),
        (["--top-percent", "0", "3"], "--top-percent"),
    ],
)
def test_bad_options_fail_before_any_work(extra: list[str], message: str) -> None:
    with pytest.raises(OptionError, match=message):
        check_options(_args(*extra))


def test_cli_mirrors_the_library_defaults() -> None:
    from circuits.cli import cliff as cli

    assert cli.TRACE_ABLATIONS == C.TRACE_ABLATIONS
    assert cli.DEFAULT_TOP_PERCENT == C.DEFAULT_TOP_PERCENT
    assert cli.DEFAULT_ALPHA == C.DEFAULT_ALPHA
    assert cli.MIN_CLASS == C.MIN_CLASS


# -- review fixes: the random-head null --------------------------------------------
def _fake_trace(n_layers: int, n_heads: int, probe_layer: int) -> C.HeadTrace:
    from attribution.statistics import effect_stats

    rng = np.random.default_rng(1)
    effects = rng.normal(size=(5, n_layers, n_heads))
    effects[:, probe_layer:] = np.nan
    stats = effect_stats(effects)
    ranked = stats.top(probe_layer * n_heads)
    return C.HeadTrace("scale", 0.1, probe_layer, stats, ranked)


def test_random_heads_come_from_the_traced_candidates_and_k_is_capped(
    model: HookedModel, monkeypatch: pytest.MonkeyPatch
) -> None:
    calls: list[list[tuple[int, int]]] = []

    def fake_asr(model, harmful, n_tokens, heads=(), **kw):
        calls.append(list(heads))
        # Independent of the toolkit: attack success rises with the ablated heads' layer sum.
        return float(sum(a for a, _ in heads)) / 100.0, 0

    monkeypatch.setattr(C, "attack_success", fake_asr)
    total = model.n_layers * model.n_heads
    trace = _fake_trace(model.n_layers, model.n_heads, probe_layer=2)
    pct = 100.0 * model.n_heads / total  # one layer's worth of heads
    out = C.ablate_top_heads(model, trace, ["x"], 4, percents=(pct, 100.0), random_draws=19)
    small, big = out
    assert small.k_requested == model.n_heads == len(small.heads)
    assert not small.derived()["capped"]
    assert big.k_requested == total and big.derived()["capped"]
    assert len(big.heads) == big.n_candidates == 2 * model.n_heads
    assert calls[0] == [tuple(h) for h in small.heads]
    for a in out:
        assert len(a.random_heads) == 19
        for heads in a.random_heads:
            assert len(heads) == len(a.heads)
            assert all(layer < 2 for layer, _ in heads)
        rates = np.array(a.random_attack_success)
        assert a.p_value == pytest.approx((1 + (rates <= a.attack_success).sum()) / 20)
    # All six candidates ablated: every draw is the same set, so p = 1.
    assert big.p_value == 1.0
    assert C.DEFAULT_RANDOM_DRAWS == 99
    from circuits.cli import cliff as cli

    assert cli.DEFAULT_RANDOM_DRAWS == C.DEFAULT_RANDOM_DRAWS


# -- review fixes: probe layer selection and standardisation -----------------------
def _synthetic_probe_data(seed: int = 0) -> tuple[C.ProbeData, list[np.ndarray]]:
    """Two layers, 16 examples; each example's token matrix kept for independent checks.
    Layer 1 separates the classes cleanly, layer 0 barely; token spreads differ a lot
    between examples, so which prompts the statistics pool matters."""
    rng = np.random.default_rng(seed)
    refused = np.array([True] * 8 + [False] * 8)
    tokens, last = [], []
    for i, r in enumerate(refused):
        t = rng.normal(size=(5 + i % 3, 2, 3)) * (1.0 + 4.0 * (i % 4))
        t[-1, 1, 0] += 6.0 if r else -6.0
        t[-1, 0, 0] += 0.3 if r else -0.3
        tokens.append(t)
        last.append(t[-1])
    data = C.ProbeData(
        residuals=np.array(last),
        refused=refused,
        kind=["refused_harmful" if r else "complied_harmless" for r in refused],
        token_mean=np.array([t[1:].mean(0) for t in tokens]),
        token_m2=np.array([((t[1:] - t[1:].mean(0)) ** 2).sum(0) for t in tokens]),
        token_count=np.array([len(t) - 1 for t in tokens]),
    )
    return data, tokens


def test_stream_stats_pool_exactly_over_any_subset() -> None:
    data, tokens = _synthetic_probe_data()
    for subset in ([0, 3, 9, 12], list(range(16))):
        pooled = np.concatenate([tokens[i][1:] for i in subset])
        mean, scale = data.stream_stats(subset)
        np.testing.assert_allclose(mean, pooled.mean(0), atol=1e-10)
        np.testing.assert_allclose(scale, pooled.std(0, ddof=1), atol=1e-10)


def test_probe_layer_is_chosen_on_training_folds_and_scored_on_test_only() -> None:
    from sklearn.model_selection import StratifiedKFold, train_test_split

    data, tokens = _synthetic_probe_data()
    sweep = C.probe_sweep(data, min_class=4, seed=2)
    y = data.refused.astype(int)
    train, test = train_test_split(np.arange(16), test_size=0.3, random_state=2, stratify=y)

    def fitted_on(idx: np.ndarray, layer: int) -> C.RefusalProbe:
        # Standardised by the fitted prompts' tokens alone (numpy, not stream_stats).
        pooled = np.concatenate([tokens[i][1:, layer] for i in idx])
        x = data.residuals[idx, layer]
        return C.fit_probe(x, y[idx], layer, pooled.mean(0), pooled.std(0, ddof=1))

    assert sweep.cv_folds == min(5, int(y[train].sum()), int((1 - y[train]).sum()))
    kfold = StratifiedKFold(sweep.cv_folds, shuffle=True, random_state=2)
    folds = list(kfold.split(train, y[train]))
    for row in sweep.layers:
        probe = fitted_on(train, row.layer)
        scores = probe.logit(data.residuals[test, row.layer])
        assert row.auc == pytest.approx(C.roc_auc(scores, y[test].astype(bool)))
        cv = []
        for a, b in folds:
            p = fitted_on(train[a], row.layer)
            cv.append(C.roc_auc(p.logit(data.residuals[train[b], row.layer]), y[train[b]] == 1))
        assert row.cv_auc == pytest.approx(np.mean(cv))
    best = max(sweep.layers, key=lambda r: (r.cv_auc, r.cv_accuracy, r.layer))
    assert sweep.layer == best.layer == 1 and not sweep.layer_given
    # A layer the caller fixes is kept (and said to be given, not chosen).
    given = C.probe_sweep(data, layer=0, min_class=4, seed=2)
    assert given.layer == 0 and given.layer_given
    assert [r.cv_auc for r in given.layers] == [r.cv_auc for r in sweep.layers]


def test_relative_bins_put_the_close_marker_in_the_last_thinking_bin() -> None:
    """Hand case: prompt [0, 2), open marker + reasoning [2, 5), close marker [5, 6),
    answer [6, 8); two bins a segment."""
    import torch

    tt = C.TraceTokens(torch.zeros(8, dtype=torch.long), think=2, close=5, answer=6)
    p = np.array([0.1, 0.3, 0.9, 0.8, 0.7, 0.05, 0.2, 0.4])
    c = C.cliff_curves([p], [tt], n_bins=2)
    # [0, 1) holds positions 2..5: bin 0 = {2, 3}, bin 1 = {4, 5} (the close marker).
    np.testing.assert_allclose(c.bin_mean, [0.1, 0.3, 0.85, (0.7 + 0.05) / 2, 0.2, 0.4])
    np.testing.assert_allclose(c.bins, [-0.75, -0.25, 0.25, 0.75, 1.25, 1.75])
