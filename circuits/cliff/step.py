"""The whole measurement, :func:`cliff_step`, and its result (docs/science.md#refusal-cliff)."""

from __future__ import annotations

import sys
from collections.abc import Sequence
from dataclasses import dataclass, field

from tqdm.auto import tqdm

from attribution.result import Result
from circuits.behaviour import Judge
from circuits.cliff.ablation import (
    DEFAULT_RANDOM_DRAWS,
    DEFAULT_TOP_PERCENT,
    TopKAblation,
    ablate_top_heads,
    answered_share,
    attack_success,
)
from circuits.cliff.curves import CliffCurves, cliff_curves, trace_probabilities
from circuits.cliff.examples import MIN_CLASS, TooFewExamplesError, probe_examples
from circuits.cliff.probe import ProbeSweep, probe_sweep
from circuits.cliff.traces import (
    DEFAULT_ANSWER_TOKENS,
    THINK_CLOSE,
    Trace,
    generate_traces,
    tokenize_trace,
)
from circuits.cliff.tracing import DEFAULT_ALPHA, HeadTrace, TraceAblation, trace_heads
from patching.executor import DEFAULT_BATCH_SIZE
from patching.model import HookedModel


@dataclass(frozen=True)
class CliffResult(Result):
    """The ``cliff`` step's output (docs/science.md#refusal-cliff).

    ``n_traces`` traces are measured; ``n_incomplete`` generated ones never closed
    ``</think>`` within the token budget: left out of the curves and the tracing, and
    counted as not answered in ``attack_success``."""

    model: str
    sweep: ProbeSweep
    curves: CliffCurves
    n_traces: int
    n_incomplete: int
    traces_source: str
    tracing: HeadTrace | None = None
    attack_success: float = float("nan")
    ablations: list[TopKAblation] = field(default_factory=list)
    traces: list[Trace] = field(default_factory=list, metadata={"group": "per_trace"})


def unclosed_note(n_incomplete: int, n_made: int) -> str:
    """How many of the traces never closed thinking (said before tracing, and in the summary)."""
    return f"{n_incomplete} of {n_made} traces never closed {THINK_CLOSE} (left out)"


def cliff_step(
    model: HookedModel,
    harmful: Sequence[str],
    harmless: Sequence[str],
    *,
    probe_harmful: Sequence[str] = (),
    traces: Sequence[Trace] | None = None,
    traces_source: str = "generated",
    layer: int | None = None,
    gen_tokens: int = 64,
    answer_tokens: int = DEFAULT_ANSWER_TOKENS,
    tracing: bool = True,
    ablation: TraceAblation = "scale",
    alpha: float = DEFAULT_ALPHA,
    percents: Sequence[float] = DEFAULT_TOP_PERCENT,
    random_draws: int = DEFAULT_RANDOM_DRAWS,
    renormalise: bool = False,
    min_class: int = MIN_CLASS,
    seed: int = 0,
    judge: Judge | None = None,
    batch_size: int = DEFAULT_BATCH_SIZE,
    progress: bool = False,
) -> CliffResult:
    """The whole measurement: probe sweep, curves, head tracing, top-k% ablations.

    The probe is trained on ``harmful`` + ``probe_harmful`` (e.g. jailbreak-framed
    prompts, the complied-harmful control) and ``harmless``; traces are ``traces`` or
    generated from ``harmful`` (``gen_tokens`` at most); attack success is measured on
    ``harmful`` with thinking.
    """
    data = probe_examples(
        model, [*harmful, *probe_harmful], harmless, batch_size=batch_size, judge=judge,
        min_class=min_class,
    )  # fmt: skip
    sweep = probe_sweep(data, layer=layer, seed=seed, min_class=min_class)
    made = (
        generate_traces(model, harmful, gen_tokens, batch_size=batch_size)
        if traces is None
        else list(traces)
    )
    complete = [t for t in made if t is not None]
    if progress:  # before the long part: how much of the input the measurement keeps
        # With the progress bars, on stderr: stdout is the same with --quiet.
        tqdm.write(unclosed_note(len(made) - len(complete), len(made)), file=sys.stderr)
    if not complete:
        raise TooFewExamplesError(
            f"none of {len(made)} traces has an end-of-thinking marker ({THINK_CLOSE}); raise "
            f"the trace length (--gen-tokens) or pass traces (--traces FILE)"
        )
    segments = [tokenize_trace(model.tokenizer, t, answer_tokens=answer_tokens) for t in complete]
    probs = trace_probabilities(model, sweep.probe, segments, batch_size=batch_size)
    curves = cliff_curves(probs, segments, seed=seed)
    head_trace = None
    ablations: list[TopKAblation] = []
    asr = float("nan")
    if tracing:
        head_trace = trace_heads(
            model, sweep.probe, segments, ablation=ablation, alpha=alpha, seed=seed,
            batch_size=batch_size, progress=progress,
        )  # fmt: skip
        # Generated traces are the unablated generations attack success judges: not rerun.
        asr = (
            answered_share(made, judge)[0]
            if traces is None
            else attack_success(model, harmful, gen_tokens, judge=judge, batch_size=batch_size)[0]
        )
        ablations = ablate_top_heads(
            model, head_trace, harmful, gen_tokens, percents=percents, random_draws=random_draws,
            renormalise=renormalise, seed=seed, judge=judge, batch_size=batch_size,
        )  # fmt: skip
    return CliffResult(
        model=model.name,
        sweep=sweep,
        curves=curves,
        n_traces=len(complete),
        n_incomplete=len(made) - len(complete),
        traces_source=traces_source,
        tracing=head_trace,
        attack_success=asr,
        ablations=ablations,
        traces=complete,
    )
