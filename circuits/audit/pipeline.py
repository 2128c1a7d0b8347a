"""The audit as an ordered list of steps, run through the resumable step store.

:func:`steps_for` lists the steps a config asks for; :func:`audit` builds the
shared :class:`~circuits.audit.context.AuditContext`, runs each step in order
(shown as ``[i/n] title``, numbered from the list), and assembles the
:class:`~circuits.audit.result.AuditResult` from what the steps found. With an
output directory it writes ``audit.json``, ``report.html`` and figures
(:mod:`circuits.audit.views`).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, cast

import numpy as np
from tqdm.auto import tqdm

from attribution.statistics import check_enough_pairs
from circuits.audit import steps
from circuits.audit.config import PAIR_CHOICES, AuditConfig
from circuits.audit.context import AuditContext, judge_name
from circuits.audit.result import AuditResult, DLASummary, HeadFinding
from circuits.audit.views import write_audit_outputs
from circuits.behaviour import Judge
from circuits.cliff import Trace
from circuits.knockout import Head
from circuits.metric_check import OTHER_METRIC
from circuits.provenance import versions
from circuits.store import StepStore
from patching.errors import RefusalCircuitsError, TooFewPairsError
from patching.fingerprint import fingerprint
from patching.model import HookedModel
from patching.prompts import PromptPair

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class Step:
    """One entry of the pipeline: a name, what progress shows, the function, when to skip.

    ``skip`` returns why the step does not apply to this run (e.g. ``"no gate"``)
    or ``None``; it is asked when the step's turn comes, after the steps before it.
    """

    name: str
    title: str
    run: Callable[[AuditContext], None]
    skip: Callable[[AuditContext], str | None] | None = None


def steps_for(config: AuditConfig) -> list[Step]:
    """The audit's steps for ``config``, in order (optional steps only when asked for)."""
    listed = [Step("behaviour", "greedy continuations of every pair, judged", steps.behaviour)]
    if config.pairs == "refused":
        title = "keep the pairs whose harmful prompt is refused and whose control is not"
        listed.append(Step("refused_pairs", title, keep_refused))
    if config.cliff:
        # Early: it needs no other finding, and a model that refuses too little for a
        # probe, or whose traces never close, is told so before the per-head steps.
        what = "probe sweep, curves along reasoning traces, cliff scores"
        if config.cliff_tracing:
            what += f", head tracing, top-k% ablation ({config.cliff_random_draws} random draws)"
        listed.append(Step("cliff", f"refusal cliff: {what}", steps.cliff))
    listed += [
        Step(
            "interchange", "interchange necessity and sufficiency of every head", steps.interchange
        ),
        Step("dla", "direct logit attribution", steps.dla),
        Step("gate", "gate candidates and their knockouts", steps.gate),
        Step(
            "cascade",
            "knockout cascade against random heads of the band",
            steps.cascade,
            skip=steps.no_gate,
        ),
        Step("dose_response", "dose-response of the gate's output", steps.dose, skip=steps.no_gate),
    ]
    if config.negative_heads:
        title = f"negative refusal heads (down-scaling x{config.negative_scale:g})"
        listed.append(Step("negative_heads", title, steps.negative_heads))
    if config.ablation_compare:
        title = f"per-head {config.knockout} ablation vs interchange"
        listed.append(Step("ablation_vs_interchange", title, steps.ablation))
    if config.metric_check:
        title = (
            f"the top {config.n_check_heads} heads under the {OTHER_METRIC[config.metric]} metric"
        )
        listed.append(Step("metric_check", title, steps.metric_check))
    if config.cipher:
        title = "cipher contrast, gate necessity under cipher, gate injection"
        listed.append(Step("cipher", title, steps.cipher))
    return listed


def keep_refused(ctx: AuditContext) -> None:
    """Restrict the audit to the refused pairs; too few of them for the test is an error."""
    refused = ctx.need(ctx.behaviour, "the behaviour of every pair (behaviour)").refused
    keep = [i for i, r in enumerate(refused) if r]
    try:
        check_enough_pairs(len(keep), ctx.config.alpha)
    except TooFewPairsError as exc:
        raise TooFewPairsError(
            f"pairs='refused' keeps {len(keep)} of {len(refused)} pairs (harmful refused, "
            f"control not), too few for the sign-flip test at {ctx.config.alpha:g}; give more "
            f"pairs the model refuses, or audit all pairs (drop --refused-only)"
        ) from exc
    ctx.restrict(keep)


def run_steps(ctx: AuditContext, listed: Sequence[Step], say: Callable[[str], None]) -> None:
    """Run ``listed`` in order on ``ctx``, showing ``[i/n] title`` (or why it is skipped)."""
    for i, step in enumerate(listed, start=1):
        reason = step.skip(ctx) if step.skip is not None else None
        if reason is not None:
            say(f"[{i}/{len(listed)}] {reason}: {step.title} skipped")
            continue
        say(f"[{i}/{len(listed)}] {step.title}")
        step.run(ctx)


def audit(
    model: HookedModel,
    pairs: Sequence[Any],
    config: AuditConfig | None = None,
    out_dir: str | Path | None = None,
    progress: bool = True,
    *,
    jailbreak: Sequence[Any] = (),
    cipher_pairs: Sequence[Any] = (),
    cliff_traces: Sequence[Trace] = (),
    cliff_traces_source: str = "given traces",
    judge: Judge | None = None,
    run: dict[str, Any] | None = None,
) -> AuditResult:
    """Audit ``model``'s refusal circuit over ``pairs`` (see :mod:`circuits.audit`).

    Args:
        pairs: prompt pairs (``.harmful``, ``.control``); ``config.n`` keeps the first n.
        out_dir: where steps, ``audit.json``, ``report.html`` and figures go; a rerun
            with the same directory loads every finished step.
        jailbreak: jailbreak-framed pairs for the negative-head step (optional).
        cipher_pairs: with ``config.cipher``, pair i encoding pair i (default: every pair
            encoded with ``Cipher.from_seed(config.cipher_seed)``).
        cliff_traces: with ``config.cliff``, the reasoning traces to read the probe along
            (default: generated from the harmful prompts); ``cliff_traces_source`` names
            them in the result (e.g. the file).
        judge: behaviour classifier ``str -> class``; the keyword judge by default.
        run: the command's run record (:func:`circuits.provenance.run_record`), kept in
            ``audit.json`` under ``"run"``.
    """
    config = config or AuditConfig()
    if config.pairs not in PAIR_CHOICES:
        raise RefusalCircuitsError(
            f"unknown pairs={config.pairs!r}; use one of {', '.join(PAIR_CHOICES)}"
        )
    if config.metric not in OTHER_METRIC:
        raise RefusalCircuitsError(
            f"unknown metric {config.metric!r}; use one of {', '.join(OTHER_METRIC)}"
        )
    began = time.perf_counter()
    pairs = list(pairs)[: config.n] if config.n else list(pairs)
    if not pairs:
        raise RefusalCircuitsError("no prompt pairs given; pass at least one pair")
    # Before any model work: with too few pairs "no head is significant" would be a
    # property of n, not of the model.
    check_enough_pairs(len(pairs), config.alpha)
    jailbreak = list(jailbreak)[: config.n] if config.n else list(jailbreak)
    cipher_pairs = list(cipher_pairs)[: config.n] if config.n else list(cipher_pairs)
    if cipher_pairs and len(cipher_pairs) != len(pairs):
        raise RefusalCircuitsError(
            f"{len(cipher_pairs)} cipher pairs for {len(pairs)} pairs; pair i of the cipher set "
            "must encode pair i"
        )
    if cliff_traces and not config.cliff:
        raise RefusalCircuitsError("cliff traces given without the cliff step; set cliff=True")
    out = Path(out_dir) if out_dir is not None else None
    # Every step is keyed on the model's fingerprint (weights, config, tokenizer,
    # chat template, dtype, device kind, toolkit version): nothing stored for
    # another model is ever reused.
    store = StepStore(out, context=fingerprint(model))
    say: Callable[[str], None] = tqdm.write if progress else (lambda _: None)
    if out is not None:
        if stored := store.stored():
            _note(say, f"resuming {out}: {stored} finished steps of this model stored")
        elif changed := store.changed():
            what = ", ".join(changed)
            _note(say, f"{out} holds steps of another run ({what} differ): not reused")
    ctx = AuditContext(
        model=model,
        pairs=pairs,
        config=config,
        store=store,
        jailbreak=jailbreak,
        cipher_pairs=cipher_pairs,
        cliff_traces=list(cliff_traces),
        cliff_traces_source=cliff_traces_source if cliff_traces else "generated",
        judge=judge,
        progress=progress,
    )
    run_steps(ctx, steps_for(config), say)
    result = result_of(ctx, seconds=time.perf_counter() - began, run=run)
    for line in result.steps["notes"]:
        logger.info(line)  # the summary's last line says it too
    if out is not None:
        for path in write_audit_outputs(result, out, static=config.figures):
            say(f"wrote {path}")
    return result


def result_of(ctx: AuditContext, *, seconds: float, run: dict[str, Any] | None) -> AuditResult:
    """The :class:`AuditResult` of a context whose steps have run."""
    model, store = ctx.model, ctx.store
    necessity = ctx.need(ctx.necessity, "necessity (interchange)")
    sufficiency = ctx.need(ctx.sufficiency, "sufficiency (interchange)")
    shares = ctx.need(ctx.shares, "DLA shares (dla)")
    change = ctx.change if ctx.change is not None else np.full_like(shares, np.nan)

    def finding(h: Head, with_change: bool = False) -> HeadFinding:
        return HeadFinding(
            layer=h[0],
            head=h[1],
            value=float(necessity.effect[h]),
            ci_low=float(necessity.ci_low[h]),
            ci_high=float(necessity.ci_high[h]),
            p=float(necessity.p[h]),
            q=float(necessity.q[h]),
            dla_share=float(shares[h]),
            sufficiency=float(sufficiency.effect[h]),
            knockout_change=float(change[h]) if with_change else None,
        )

    summary = cast(DLASummary, ctx.need(ctx.dla, "the DLA").summary())
    return AuditResult(
        model=model.name,
        n_layers=model.n_layers,
        n_heads=model.n_heads,
        n_pairs=len(ctx.pairs),
        necessity=necessity,
        sufficiency=sufficiency,
        dla=summary,
        gate=[finding(h) for h in ctx.gate],
        gate_candidates=[finding(h) for h in ctx.candidates],
        amplifiers=[finding(h, with_change=True) for h in ctx.amplifiers],
        negative_heads=ctx.negative,
        cascade=ctx.cascade,
        ablation_vs_interchange=ctx.comparison,
        dose_response=ctx.dose,
        behaviour=ctx.behaviour,
        kept_pairs=ctx.kept,
        metric_check=ctx.metric_check,
        cipher=ctx.cipher,
        cliff=ctx.cliff,
        settings={
            **ctx.config.settings(),
            "n_jailbreak": len(ctx.jailbreak),
            "cliff_traces": ctx.cliff_traces_source if ctx.config.cliff else None,
            "judge": judge_name(ctx.judge),
        },
        versions=versions(),
        seconds=seconds,
        steps={
            "computed": list(store.computed),
            "loaded": list(store.loaded),
            "set_aside": list(store.set_aside),
            "notes": store.notes(),
        },
        run=run,
        published_gate=finding(ctx.published_gate) if ctx.published_gate else None,
        gate_checks=ctx.gate_checks,
        amplifier_tests=ctx.amplifier_tests,
        screening=dict(ctx.screening),
    )


def shuffle_labels(pairs: Sequence[Any], seed: int) -> list[Any]:
    """The pairs with harmful and control swapped in a random half (a null audit's input)."""
    rng = np.random.default_rng(seed)
    out = []
    for pair in pairs:
        if rng.random() < 0.5:
            pair = PromptPair(harmful=pair.control, control=pair.harmful, category=pair.category)
        out.append(pair)
    return out


def _note(say: Callable[[str], None], line: str) -> None:
    """A line about resuming: logged, and shown with the progress output."""
    logger.info(line)
    say(line)
