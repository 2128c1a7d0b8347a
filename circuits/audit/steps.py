"""The audit's steps: one function each, all reading and writing one context.

A step takes the :class:`~circuits.audit.context.AuditContext` (the model, the
pairs, the config, the step store and what the steps before it found) and sets
its own findings on it. Whatever a step computes from the model goes through
``ctx.store.step(name, deps, ...)``, keyed on exactly the prompts, settings and
earlier results it depends on, so a rerun into the same directory loads it
instead (:mod:`circuits.store`); what a step derives from stored numbers
(statistics, selections) is recomputed each time, which is cheap and keeps a
resumed result identical to a fresh one.

The order and the choice of steps is :func:`circuits.audit.pipeline.steps_for`.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
from tqdm.auto import tqdm

from attribution.dla import DLAResult, direct_logit_attribution
from attribution.interchange import build_metric, effects_from_run, interchange_test
from attribution.metrics import refusal_score
from attribution.statistics import EffectStats, effect_stats, pooled_scale, resolution_floor
from circuits.ablation_compare import AblationComparison
from circuits.audit.context import AuditContext, greedy_answers, judge_name
from circuits.behaviour import PairBehaviour, classify, greedy_continuations
from circuits.cascade import (
    CascadeResult,
    amplifier_change,
    knockout_contrast,
    null_heads,
    percent_change,
)
from circuits.cipher import CipherContrast, cipher_contrast
from circuits.cliff import CliffResult, cliff_step
from circuits.dose_response import DoseResponse, dose_response
from circuits.knockout import Head, capture_z, intervened_dla, knockouts
from circuits.metric_check import OTHER_METRIC, MetricCheck
from circuits.negative_heads import (
    NegativeHeadsResult,
    attack_success,
    downscale_raises,
    per_head_scores,
    top_percent,
)
from circuits.roles import (
    DropTest,
    amplifier_tests,
    dla_shares,
    gate_band,
    gate_candidates,
    gate_checks,
    published_gate,
    select_amplifiers,
    select_negatives,
)
from circuits.screening import check, every_head, not_screened, screen_all, to_json, top_of
from circuits.store import digest
from patching.alignment import align_pair
from patching.chat import ChatPrompt
from patching.gradient_estimate import output_attribution
from patching.interchange import interchange as patch_interchange
from patching.interventions import Ablation
from patching.prompts import Cipher


# -- 1. interchange -----------------------------------------------------------
def interchange(ctx: AuditContext) -> None:
    """Necessity and sufficiency of every head over the pairs, on the pooled scale.

    Screened first on a model with many heads (:mod:`circuits.screening`): the
    gradient estimate ranks every head, and only the top ones by estimated
    ``|necessity|`` and by estimated necessity + sufficiency, plus the band's top
    heads, are measured exactly (the others NaN).
    """
    s, store, model = ctx.config, ctx.store, ctx.model
    deps = {**ctx.base, "metric": s.metric, "positions": s.positions}
    shape = (model.n_layers, model.n_heads)
    why_all = screen_all(shape[0] * shape[1], s.exact, s.screen_min_heads)
    heads: list[Head] | None = None
    if why_all is None:
        estimate = store.step("interchange_screen", deps, lambda: _interchange_estimate(ctx))
        est_nec = np.asarray(estimate["necessity"], dtype=np.float64)
        est_suf = np.asarray(estimate["sufficiency"], dtype=np.float64)
        heads = sorted(
            {
                *top_of(np.abs(est_nec), s.screen_k),
                *top_of(est_nec + est_suf, s.screen_k),
                *top_of(np.abs(est_nec) + np.abs(est_suf), s.screen_band_k, ctx.band_layers),
            }
        )
        deps = {**deps, "heads": to_json(heads)}

    def run() -> dict[str, Any]:
        result = interchange_test(
            model,
            ctx.pairs,
            metric=s.metric,
            positions=s.positions,  # type: ignore[arg-type]
            heads=heads,
            refusal_words=s.refusal_words,
            chunk_dir=store.folder("interchange", deps),
            seed=s.seed,
            progress=ctx.progress,
        )
        return {
            "gap": result.gap.tolist(),
            "necessity": result.necessity_drop.tolist(),
            "sufficiency": result.sufficiency_rise.tolist(),
        }

    ic = store.step("interchange", deps, run)
    gaps = np.asarray(ic["gap"], dtype=np.float64)
    ctx.scale = pooled_scale(gaps)
    ctx.floor = float(resolution_floor(gaps, ctx.scale))
    ctx.necessity = ctx.stats(ic["necessity"])
    ctx.sufficiency = ctx.stats(ic["sufficiency"])
    if heads is None:
        ctx.screening["interchange"] = not_screened("interchange", shape, why_all or "")
        return
    ctx.screening["interchange"] = check(
        "interchange necessity", est_nec, ctx.necessity.effect, heads, s.screen_k, "|necessity|"
    )
    ctx.screening["interchange_sufficiency"] = check(
        "interchange sufficiency",
        est_suf,
        ctx.sufficiency.effect,
        heads,
        s.screen_k,
        "|sufficiency|",
    )


def _interchange_estimate(ctx: AuditContext) -> dict[str, Any]:
    """Every head's estimated necessity and sufficiency (mean over pairs, metric units)."""
    s = ctx.config
    estimate = interchange_test(
        ctx.model,
        ctx.pairs,
        metric=s.metric,
        positions=s.positions,  # type: ignore[arg-type]
        mode="attribution",
        refusal_words=s.refusal_words,
        seed=s.seed,
        progress=ctx.progress,
    )
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # excluded pairs are NaN
        return {
            "necessity": np.nanmean(estimate.necessity_drop, axis=0).tolist(),
            "sufficiency": np.nanmean(estimate.sufficiency_rise, axis=0).tolist(),
        }


# -- 2. DLA ---------------------------------------------------------------------
def dla(ctx: AuditContext) -> None:
    """Direct logit attribution of every head, and each head's share of it."""
    s = ctx.config
    data = ctx.store.step(
        "dla",
        {**ctx.base, "seed": s.seed, "n_boot": s.n_boot},
        lambda: direct_logit_attribution(
            ctx.model,
            ctx.pairs,
            refusal_words=s.refusal_words,
            n_boot=s.n_boot,
            seed=s.seed,
            progress=ctx.progress,
        ).to_dict(),
    )
    ctx.dla = DLAResult.from_dict(data)
    ctx.shares = dla_shares(ctx.dla.per_head)


def knocked(ctx: AuditContext, heads: Sequence[Head]) -> np.ndarray:
    """Every head's harmful-minus-control refusal DLA with ``heads`` knocked out (stored).

    The heads are knocked out on the harmful and on the control prompt of every pair
    (the published cascade's contrast); one stored step per set of heads, so the
    gate candidates' and the cascade's nulls share their knockouts.
    """
    s = ctx.config

    def run() -> dict[str, Any]:
        harmful, control = knockout_contrast(
            ctx.model,
            ctx.harmful,
            ctx.control,
            ctx.refusal_ids,
            ctx.answers,
            heads,
            s.knockout,
            ctx.reference,
            s.seed,
        )
        return {"harmful": harmful.tolist(), "control": control.tolist()}

    deps = {**ctx.base, "knockout": s.knockout, "seed": s.seed, "heads": [list(h) for h in heads]}
    data = ctx.store.step("knockout", {**deps, "prompts": "harmful and control"}, run)
    return np.asarray(data["harmful"], dtype=np.float64) - np.asarray(
        data["control"], dtype=np.float64
    )


def _contrast(ctx: AuditContext) -> np.ndarray:
    """The clean harmful-minus-control DLA per head (logits)."""
    return ctx.need(ctx.dla, "the DLA").per_head


def _dla_gap(ctx: AuditContext) -> tuple[float, float]:
    """The pooled DLA gap (logits) and the float32 rounding floor on its scale."""
    dla = ctx.need(ctx.dla, "the DLA")
    gaps = dla.harmful_logit_diff - dla.control_logit_diff
    gap = pooled_scale(gaps)
    return gap, float(resolution_floor(gaps, gap))


def _amplifiers_of(
    ctx: AuditContext, heads: Sequence[Head]
) -> tuple[list[Head], list[DropTest], np.ndarray]:
    """Amplifiers of a gate (band) ``heads``: drop tests against knockouts of random band heads.

    Only the null heads upstream of some head worth testing are knocked out (a
    later head cannot change what an earlier one writes).
    """
    s = ctx.config
    clean, (gap, floor) = _contrast(ctx), _dla_gap(ctx)
    gate_knocked = knocked(ctx, heads)
    after = max(h[0] for h in heads)
    tested = [
        layer
        for layer in range(after + 1, clean.shape[0])
        if (clean[layer] / gap >= s.min_amplifier_pct / 100).any()
    ]
    nulls = [
        h
        for h in null_heads(ctx.band_layers, ctx.model.n_heads, heads, s.n_null, s.seed)
        if tested and h[0] < max(tested)
    ]
    null_knocked = {
        h: knocked(ctx, [h])
        for h in tqdm(nulls, desc="amplifier null", unit="head", disable=not ctx.progress)
    }
    tests = amplifier_tests(
        clean, gate_knocked, null_knocked, after, gap, min_contrast=s.min_amplifier_pct / 100
    )
    amps = select_amplifiers(
        tests, alpha=s.alpha, floor=floor, min_fall=s.min_amplifier_fall_pct / 100
    )
    return amps, tests, percent_change(clean, gate_knocked) / 100.0


# -- 3. gate and amplifiers -------------------------------------------------------
def gate(ctx: AuditContext) -> None:
    """The first significant, DLA-dark band head whose knockout makes amplifiers fall.

    Also the published rule's gate, and for the top band heads which criterion each
    failed (:func:`circuits.roles.gate_checks`).
    """
    s = ctx.config
    necessity = ctx.need(ctx.necessity, "necessity (interchange)")
    sufficiency = ctx.need(ctx.sufficiency, "sufficiency (interchange)")
    shares = ctx.need(ctx.shares, "DLA shares (dla)")
    rules: dict[str, float] = {
        "alpha": s.alpha,
        "max_dla_share": s.max_dla_share,
        "min_effect": s.min_gate_effect_pct / 100,
    }
    ctx.candidates = gate_candidates(necessity, shares, ctx.band_layers, **rules)
    ctx.change = np.full_like(_contrast(ctx), np.nan)
    tried: dict[Head, int] = {}
    for candidate in ctx.candidates[: s.max_gate_tries]:
        amps, tests, change = _amplifiers_of(ctx, [candidate])
        tried[candidate] = len(amps)
        if amps:
            ctx.gate = gate_band(candidate, ctx.candidates, necessity, s.band_ratio)
            if len(ctx.gate) > 1:
                amps, tests, change = _amplifiers_of(ctx, ctx.gate)
            ctx.amplifiers, ctx.amplifier_tests, ctx.change = amps, tests, change
            break
    ctx.gate_checks = gate_checks(
        necessity, sufficiency, shares, ctx.band_layers, tried, ctx.gate, k=5, **rules
    )
    ctx.published_gate = published_gate(
        necessity, sufficiency, shares, ctx.band_layers, max_dla_share=s.max_dla_share
    )


def no_gate(ctx: AuditContext) -> str | None:
    """Why a step that studies the gate is skipped (``None``: it runs)."""
    return None if ctx.gate else "no gate"


# -- 4. cascade -------------------------------------------------------------------
def cascade(ctx: AuditContext) -> None:
    """The gate's knockout against the knockouts of random heads of the band.

    ``n_null`` heads of the band, not the gate nor an amplifier (all of them when
    the band has fewer; the result states the smallest p they allow).
    """
    s, clean = ctx.config, _contrast(ctx)
    nulls = null_heads(
        ctx.band_layers, ctx.model.n_heads, [*ctx.gate, *ctx.amplifiers], s.n_null, s.seed
    )
    null_effects = [
        amplifier_change(clean, knocked(ctx, [h]), ctx.amplifiers)
        for h in tqdm(nulls, desc="cascade null", unit="head", disable=not ctx.progress)
    ]
    gate_knocked = knocked(ctx, ctx.gate)
    ctx.cascade = CascadeResult(
        gate=ctx.gate,
        kind=s.knockout,
        clean=clean,
        knocked=gate_knocked,
        amplifiers=ctx.amplifiers,
        effect=amplifier_change(clean, gate_knocked, ctx.amplifiers),
        null_heads=nulls,
        null_effects=null_effects,
        gap=_dla_gap(ctx)[0],
    )


# -- 5. dose-response -------------------------------------------------------------
def dose(ctx: AuditContext) -> None:
    """Refusal score and judged behaviour along a scale of the gate's output."""
    s = ctx.config
    data = ctx.store.step(
        "dose_response",
        {**ctx.base, **ctx.generation, "alphas": list(s.dose_alphas), "gate": ctx.gate},
        lambda: dose_response(
            ctx.model,
            ctx.harmful[: s.n_generate],
            ctx.refusal_ids,
            ctx.gate,
            alphas=s.dose_alphas,
            n_tokens=s.gen_tokens,
            judge=ctx.judge,
            progress=ctx.progress,
        ).to_dict(),
    )
    ctx.dose = DoseResponse.from_dict(data)


# -- 6. negative heads ------------------------------------------------------------
def output_attribution_of(
    ctx: AuditContext, prompts: Sequence[ChatPrompt], name: str
) -> np.ndarray:
    """Mean over ``prompts`` of every head's ``z . d refusal score / dz`` (stored).

    The first-order screen of scaling a head's output (:func:`output_attribution`):
    scaling by ``alpha`` changes the score by about ``(alpha - 1)`` times it.
    """
    model, refusal_ids = ctx.model, ctx.refusal_ids
    data = ctx.store.step(
        "output_attribution",
        {**ctx.base, "prompts": name, "tokens": digest([p.tokens.tolist() for p in prompts])},
        lambda: {
            "mean": output_attribution(
                model,
                [p.tokens for p in prompts],
                lambda logits: refusal_score(logits, refusal_ids),
            )
            .mean(dim=0)
            .tolist()
        },
    )
    return np.asarray(data["mean"], dtype=np.float64)


def _screened(ctx: AuditContext) -> str | None:
    model = ctx.model
    return screen_all(model.n_layers * model.n_heads, ctx.config.exact, ctx.config.screen_min_heads)


def negative_heads(ctx: AuditContext) -> None:
    """Heads whose down-scaling raises refusal, and attack success with the top ones ablated.

    Screened first on a model with many heads: the down-scaling's gradient estimate
    ranks every head, and the top ones by estimated raise are scaled exactly.
    """
    s, store, model = ctx.config, ctx.store, ctx.model
    prompts = ctx.harmful + ctx.jb_harmful
    shape = (model.n_layers, model.n_heads)
    deps = {
        **ctx.base,
        "jailbreak": digest([[p.harmful, p.control] for p in ctx.jailbreak]),
        "scale": s.negative_scale,
    }
    why_all = _screened(ctx)
    heads: list[Head] | None = None
    down_deps = deps
    if why_all is None:
        n = len(ctx.harmful)
        attribution = output_attribution_of(ctx, ctx.harmful, "harmful") * n
        if ctx.jb_harmful:
            attribution = attribution + output_attribution_of(
                ctx, ctx.jb_harmful, "jailbreak"
            ) * len(ctx.jb_harmful)
        estimate = (s.negative_scale - 1.0) * attribution / len(prompts)
        k = max(s.screen_k, 2 * math.ceil(s.negative_top_pct / 100.0 * estimate.size))
        heads = sorted(top_of(estimate, k))
        down_deps = {**deps, "heads": to_json(heads)}

    def run_downscale() -> dict[str, Any]:
        answers = ctx.answers
        if ctx.jb_control:
            answers = torch.cat([answers, greedy_answers(ctx.model, ctx.jb_control)])
        raises = downscale_raises(
            ctx.model, prompts, ctx.refusal_ids, s.negative_scale, ctx.progress, heads
        )
        heads_dla, _ = intervened_dla(ctx.model, prompts, ctx.refusal_ids, answers)
        return {"raises": raises.tolist(), "dla": heads_dla.mean(axis=0).tolist()}

    down = store.step("downscale", down_deps, run_downscale)
    raises = ctx.stats(down["raises"])
    if heads is None:
        ctx.screening["negative_heads"] = not_screened("down-scaling", shape, why_all or "")
    else:
        ctx.screening["negative_heads"] = check(
            "down-scaling raise", estimate, raises.effect, heads, k, "raise", by_abs=False
        )
    neg_dla = np.asarray(down["dla"], dtype=np.float64)
    negatives = select_negatives(
        raises,
        neg_dla,
        alpha=s.alpha,
        min_raise=s.negative_min_raise,
        min_dla_share=s.max_dla_share,
    )
    ablated = top_percent(raises, neg_dla, s.negative_top_pct)
    sets = {"harmful": ctx.harmful[: s.n_generate], "jailbreak": ctx.jb_harmful[: s.n_generate]}
    asr = store.step(
        "attack_success",
        {**deps, **ctx.generation, "ablated": [list(h) for h in ablated]},
        lambda: dict(
            zip(
                ("before", "after"),
                attack_success(ctx.model, sets, ablated, s.gen_tokens, ctx.judge),
                strict=True,
            )
        ),
    )
    ctx.negative = NegativeHeadsResult(
        scale=s.negative_scale,
        raises=raises,
        harmful_dla=neg_dla,
        heads=negatives,
        ablated=ablated,
        top_pct=s.negative_top_pct,
        asr_before=asr["before"],
        asr_after=asr["after"],
    )


# -- 7. ablation vs interchange -------------------------------------------------------
def ablation(ctx: AuditContext) -> None:
    """Every head's ablation effect, ranked beside its interchange necessity.

    Screened first on a model with many heads (zero ablation only: its gradient
    estimate is the down-scaling's at ``alpha = 0``): the top heads by estimated
    ``|drop|`` and by exact interchange ``|necessity|`` are ablated exactly.
    """
    s, model = ctx.config, ctx.model
    shape = (model.n_layers, model.n_heads)
    necessity = ctx.need(ctx.necessity, "necessity (interchange)")
    deps = {**ctx.base, "knockout": s.knockout, "seed": s.seed}
    why_all = _screened(ctx)
    if why_all is None and s.knockout != "zero":
        why_all = f"{s.knockout} ablation has no gradient screen"
    heads: list[Head] | None = None
    if why_all is None:
        estimate = output_attribution_of(ctx, ctx.harmful, "harmful")  # drop ~ z . grad
        heads = sorted(
            {*top_of(np.abs(estimate), s.screen_k), *top_of(np.abs(necessity.effect), s.screen_k)}
        )
        deps = {**deps, "heads": to_json(heads)}

    def run() -> dict[str, Any]:
        ref = capture_z(model, ctx.control, range(model.n_layers)) if s.knockout != "zero" else None
        every = heads if heads is not None else every_head(shape)
        rows = {h: knockouts([h], ctx.harmful, s.knockout, ref, s.seed) for h in every}

        def row_of(lay: int, h: int, i: int) -> Ablation:
            iv = rows[lay, h][i][0]
            assert isinstance(iv, Ablation)
            return iv

        clean, ablated = per_head_scores(
            model, ctx.harmful, ctx.refusal_ids, row_of, ctx.progress, "ablation", heads
        )
        return {"drops": (clean[:, None, None] - ablated).tolist()}

    drops = ctx.store.step("ablation", deps, run)
    ablation_stats = ctx.stats(drops["drops"])
    if heads is None:
        ctx.screening["ablation"] = not_screened("ablation", shape, why_all or "")
    else:
        ctx.screening["ablation"] = check(
            "ablation drop", estimate, ablation_stats.effect, heads, s.screen_k, "|drop|"
        )
    ctx.comparison = AblationComparison(
        kind=s.knockout,
        ablation=ablation_stats,
        interchange=necessity,
        alpha=s.alpha,
    )


# -- behaviour of every pair (before the interchange) ---------------------------------
def behaviour(ctx: AuditContext) -> None:
    """Judge each pair's greedy harmful and control continuations (which pairs are refused)."""
    s = ctx.config

    def run() -> dict[str, Any]:
        prompts = ctx.harmful + ctx.control  # one batched decoding for both sides
        texts = greedy_continuations(ctx.model, prompts, s.gen_tokens)
        labels = classify(texts, ctx.judge)
        n = len(ctx.pairs)
        return PairBehaviour(
            harmful_class=labels[:n],
            control_class=labels[n:],
            harmful_text=texts[:n],
            control_text=texts[n:],
            gen_tokens=s.gen_tokens,
        ).to_dict()

    deps = {**ctx.base, "gen_tokens": s.gen_tokens, "judge": judge_name(ctx.judge)}
    ctx.behaviour = PairBehaviour.from_dict(ctx.store.step("behaviour", deps, run))


# -- the other metric on the top heads ---------------------------------------------------
def checked_heads(ctx: AuditContext) -> list[Head]:
    """The gate candidates, then the top heads by necessity, ``n_check_heads`` in all."""
    necessity = ctx.need(ctx.necessity, "necessity (interchange)")
    effect = np.nan_to_num(necessity.effect, nan=-np.inf)
    order = np.argsort(-effect, axis=None, kind="stable")
    top = [(int(i) // effect.shape[1], int(i) % effect.shape[1]) for i in order]
    heads: list[Head] = []
    for h in [*ctx.candidates, *top]:
        if h not in heads and np.isfinite(necessity.effect[h]):
            heads.append(h)
    return heads[: ctx.config.n_check_heads]


def metric_check(ctx: AuditContext) -> None:
    """The interchange of the top heads again under the other metric, exactly."""
    s, store, model = ctx.config, ctx.store, ctx.model
    other = OTHER_METRIC[s.metric]
    heads = checked_heads(ctx)
    deps = {**ctx.base, "metric": other, "positions": s.positions, "heads": heads}

    def run() -> dict[str, Any]:
        patch_metric, _ = build_metric(
            model, [c.tokens for c in ctx.control], other, refusal_words=s.refusal_words
        )
        aligned = [
            align_pair(h, c, patch_metric.continuation(i))
            for i, (h, c) in enumerate(zip(ctx.harmful, ctx.control, strict=True))
        ]
        ran = patch_interchange(
            model,
            aligned,
            patch_metric,
            positions=s.positions,  # type: ignore[arg-type]
            heads=heads,
            chunk_dir=store.folder("metric_check", deps),
            progress=ctx.progress,
        )
        drop, rise, _ = effects_from_run(ran)
        gap = (ran.clean_harmful - ran.clean_control).numpy()
        return {"gap": gap.tolist(), "necessity": drop.tolist(), "sufficiency": rise.tolist()}

    data = store.step("metric_check", deps, run)
    gaps = np.asarray(data["gap"], dtype=np.float64)
    unit = pooled_scale(gaps)

    def stats(key: str) -> EffectStats:
        raw = np.asarray(data[key], dtype=np.float64) / unit
        return effect_stats(raw, seed=s.seed, n_boot=s.n_boot, floor=resolution_floor(gaps, unit))

    main = (
        ctx.need(ctx.necessity, "necessity (interchange)"),
        ctx.need(ctx.sufficiency, "sufficiency (interchange)"),
    )
    ctx.metric_check = MetricCheck.of(
        heads, s.metric, other, s.alpha, main, (stats("necessity"), stats("sufficiency"))
    )


def cipher(ctx: AuditContext) -> None:
    """Cipher contrast of the audited pairs, with the audit's gate (``circuits.cipher``)."""
    s = ctx.config
    if ctx.cipher_pairs:
        kept = ctx.kept if ctx.kept is not None else range(len(ctx.cipher_pairs))
        encoded, described = [ctx.cipher_pairs[i] for i in kept], "given cipher pairs"
    else:
        code = Cipher.from_seed(s.cipher_seed)
        encoded, described = code.encode_pairs(ctx.pairs), f"key {code.key}"
    gate = ctx.gate[0] if ctx.gate else None
    texts = [[p.harmful, p.control] for p in encoded]
    # "v": 2: GateNecessity gained cipher_gap; a step stored before cannot be read back.
    deps = {**ctx.base, "cipher": digest(texts), "gate": gate, "gen_tokens": s.gen_tokens, "v": 2}

    def run() -> dict[str, Any]:
        return cipher_contrast(
            ctx.model, ctx.pairs, encoded, gate=gate,
            gate_source="the audit's gate, selected on these pairs",
            gate_selected_on_pairs=True, cipher=described, refusal_words=s.refusal_words,
            gen_tokens=s.gen_tokens, n_boot=s.n_boot, seed=s.seed, progress=ctx.progress,
        ).to_dict()  # fmt: skip

    ctx.cipher = CipherContrast.from_dict(ctx.store.step("cipher", deps, run))


# Bump when the cliff step's stored result changes shape: a step stored before is recomputed.
CLIFF_STEP_VERSION = 1


def cliff(ctx: AuditContext) -> None:
    """The refusal cliff of the audited model (:func:`circuits.cliff.cliff_step`).

    The probe is trained on the pairs' harmful prompts and the jailbreak-framed ones
    (the complied-harmful control) against the controls; the traces are the given ones,
    else generated from the harmful prompts with the model's thinking template (or asked
    to reason between ``<think>`` and ``</think>``). Which cliff heads are also the
    audit's gate, amplifiers or negative heads is read off the result
    (:meth:`circuits.audit.result.AuditResult.cliff_heads`), so nothing here depends on
    the steps before it.
    """
    s = ctx.config
    traces = ctx.cliff_traces or None
    deps = {
        **ctx.base,
        "jailbreak": digest([p.harmful for p in ctx.jailbreak]),
        "traces": digest([t.to_dict() for t in traces]) if traces else "generated",
        "judge": judge_name(ctx.judge),
        "seed": s.seed,
        **{k: v for k, v in s.settings().items() if k.startswith("cliff_")},
        "v": CLIFF_STEP_VERSION,
    }

    def run() -> dict[str, Any]:
        return cliff_step(
            ctx.model,
            [p.harmful for p in ctx.pairs],
            [p.control for p in ctx.pairs],
            probe_harmful=[p.harmful for p in ctx.jailbreak],
            traces=traces,
            traces_source=ctx.cliff_traces_source,
            layer=s.cliff_layer,
            gen_tokens=s.cliff_gen_tokens,
            answer_tokens=s.cliff_answer_tokens,
            tracing=s.cliff_tracing,
            ablation=s.cliff_ablation,  # type: ignore[arg-type]
            alpha=s.cliff_alpha,
            percents=s.cliff_top_percent,
            random_draws=s.cliff_random_draws,
            renormalise=s.cliff_renormalise,
            min_class=s.cliff_min_class,
            seed=s.seed,
            judge=ctx.judge,
            progress=ctx.progress,
        ).to_dict()

    ctx.cliff = CliffResult.from_dict(ctx.store.step("cliff", deps, run))
