"""``refusal-circuits cliff``: the refusal probe along reasoning traces, and the heads behind
the cliff (docs/science.md#refusal-cliff)."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from circuits.cli.common import (
    ORGANISM,
    HelpFormatter,
    add_batch_size_arg,
    add_gen_tokens_arg,
    add_model_args,
    check_count,
)
from patching.errors import OptionError

DEFAULT_OUT = Path("cliff")
# circuits.cliff's defaults, mirrored so that building the parser imports no torch.
TRACE_ABLATIONS = ("scale", "zero", "mean")
DEFAULT_TOP_PERCENT = (1.5, 3.0, 10.0)
DEFAULT_ALPHA = 0.1
DEFAULT_RANDOM_DRAWS = 99
MIN_CLASS = 4


def register(subparsers: Any) -> None:
    parser = subparsers.add_parser(
        "cliff",
        help="refusal cliff: a refusal probe along reasoning traces, and the heads behind it",
        description=(
            "Trains a refusal probe (logistic regression on standardised residuals) on the "
            "model's own behaviour (refused harmful vs complied harmful and harmless prompts) "
            "at every layer, reads it at every token of prompt + reasoning trace + answer "
            "opening (traces generated with the model's thinking template, or asked to "
            "reason between <think> and </think>, or read from --traces), scores each "
            "trace's cliff, traces the heads that suppress refusal before the answer and "
            "ablates the top k% of them against as many random traced heads (empirical "
            "p). --judge-out writes the --top-frac traces with the largest cliffs "
            "(Cliff-as-a-Judge). Writes DIR/cliff.json, DIR/report.html and DIR/run.json. "
            "The default model is the organism's thinking variant."
        ),
        formatter_class=HelpFormatter,
    )
    add_model_args(parser, default_out=DEFAULT_OUT)
    parser.add_argument(
        "--jailbreak",
        type=Path,
        default=None,
        help="jailbreak-framed pairs whose harmful prompts join the probe's training set "
        "(the complied-harmful control) (default: the organism's own for the organism)",
    )
    parser.add_argument(
        "--traces",
        type=Path,
        default=None,
        metavar="FILE",
        help="JSONL traces (prompt, thinking, response) to read the probe along (default: "
        "generate them from the harmful prompts)",
    )
    parser.add_argument(
        "--judge-out",
        type=Path,
        default=None,
        metavar="FILE",
        help="write the --top-frac traces of --traces with the largest cliff scores as JSONL "
        "(default: not written)",
    )
    parser.add_argument(
        "--top-frac", type=float, default=0.1, help="share of traces --judge-out keeps"
    )
    parser.add_argument(
        "--layer", type=int, default=None, help="probe layer (default: best held-out AUC)"
    )
    parser.add_argument(
        "--ablation",
        default="scale",
        choices=TRACE_ABLATIONS,
        help="head tracing: scale each head's output by --alpha, or zero or mean ablate it",
    )
    parser.add_argument(
        "--alpha", type=float, default=DEFAULT_ALPHA, help="scale of --ablation scale"
    )
    parser.add_argument(
        "--top-percent",
        type=float,
        nargs="+",
        default=list(DEFAULT_TOP_PERCENT),
        help="percentages of heads to ablate (the top-ranked, and as many random ones)",
    )
    parser.add_argument(
        "--random-draws",
        type=int,
        default=DEFAULT_RANDOM_DRAWS,
        help="random head sets per k, drawn from the traced heads (those before the probe "
        "layer), for the empirical p; each costs one generation over the harmful prompts",
    )
    parser.add_argument(
        "--renormalise",
        action="store_true",
        help="scale the ablated layer's other heads up by n/(n-k), as the paper's code does "
        "(labelled in the output; default: plain ablation)",
    )
    parser.add_argument("--no-tracing", action="store_true", help="skip head tracing and ablation")
    add_gen_tokens_arg(parser, 64, "tokens of a generated trace")
    parser.add_argument("--answer-tokens", type=int, default=8, help="answer tokens read")
    parser.add_argument("--min-class", type=int, default=MIN_CLASS, help="fewest examples a side")
    add_batch_size_arg(parser)
    parser.set_defaults(handler=run)


def check_options(args: argparse.Namespace) -> None:
    """Option values, before any file or model is read."""
    for value, option, what in (
        (args.answer_tokens, "--answer-tokens", "the answer opening"),
        (args.random_draws, "--random-draws", "the number of random draws"),
    ):
        check_count(value, option, what)
    check_count(args.min_class, "--min-class", "the fewest examples a side", minimum=2)
    if not 0.0 < args.top_frac <= 1.0:
        raise OptionError(f"--top-frac {args.top_frac}: a share in (0, 1], e.g. 0.1")
    if args.judge_out is not None and args.traces is None:
        raise OptionError("--judge-out ranks the traces of --traces FILE; add --traces")
    if not 0.0 <= args.alpha < 1.0:
        raise OptionError(f"--alpha {args.alpha}: a down-scaling in [0, 1), e.g. 0.1")
    bad = [p for p in args.top_percent if not 0.0 < p <= 100.0]
    if bad:
        raise OptionError(f"--top-percent {bad}: percentages in (0, 100], e.g. 1.5 3 10")


def run(args: argparse.Namespace) -> int:
    from circuits.cli.common import check_common, print_lines, print_written
    from circuits.cli.inputs import organism_path, prepare
    from circuits.cliff import cliff_step, judge_traces, read_traces, write_judge_subset
    from circuits.cliff_views import cliff_summary, write_cliff_outputs
    from patching.prompts import read_pairs

    check_options(args)
    check_common(args)
    traces = read_traces(args.traces) if args.traces is not None else None
    organism = organism_path("thinking") if args.model == ORGANISM else None
    jailbreak = []
    if args.jailbreak is not None:
        jailbreak = read_pairs(args.jailbreak, n=args.n)
    elif organism is not None and args.pairs is None:
        jailbreak = read_pairs(organism / "pairs_jailbreak.jsonl", n=args.n)
    if args.layer is not None:
        check_count(args.layer, "--layer", "the probe layer", minimum=0)
    settings = {"traces": str(args.traces) if args.traces else None, "ablation": args.ablation,
                "alpha": args.alpha, "top_percent": args.top_percent,
                "renormalise": args.renormalise}  # fmt: skip
    prepared = prepare(args, extra={"cliff": settings}, variant="thinking")
    model, pairs, out = prepared.model, prepared.pairs, prepared.out
    if args.layer is not None and args.layer > model.n_layers:
        raise OptionError(
            f"--layer {args.layer}: this model's residual layers are 0..{model.n_layers} "
            f"({model.n_layers} = the final residual)"
        )
    print_lines(prepared.header())
    result = cliff_step(
        model,
        [p.harmful for p in pairs],
        [p.control for p in pairs],
        probe_harmful=[p.harmful for p in jailbreak],
        traces=traces,
        traces_source=str(args.traces) if traces is not None else "generated",
        layer=args.layer,
        gen_tokens=args.gen_tokens,
        answer_tokens=args.answer_tokens,
        tracing=not args.no_tracing,
        ablation=args.ablation,
        alpha=args.alpha,
        percents=args.top_percent,
        random_draws=args.random_draws,
        renormalise=args.renormalise,
        min_class=args.min_class,
        seed=args.seed,
        batch_size=args.batch_size,
        progress=not args.quiet,
    )
    print_lines(cliff_summary(result))
    written = write_cliff_outputs(result, out, run=prepared.run)
    if args.judge_out is not None:
        rows = judge_traces(result.traces, result.curves.cliff_scores, args.top_frac)
        written.append(write_judge_subset(rows, args.judge_out))
    print_written(written)
    return 0
