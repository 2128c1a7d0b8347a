"""``refusal-circuits audit``: the whole refusal-circuit audit of one model."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import TYPE_CHECKING, Any

from circuits.cli.cliff import DEFAULT_ALPHA, DEFAULT_TOP_PERCENT, TRACE_ABLATIONS
from circuits.cli.common import (
    METRICS,
    ORGANISM,
    HelpFormatter,
    add_model_args,
    check_band,
    check_count,
)

if TYPE_CHECKING:
    from patching.prompts import PromptPair

DEFAULT_OUT = Path("audit")
# circuits.audit.config's AUDIT_CLIFF_RANDOM_DRAWS, mirrored so that building the parser
# imports no torch.
AUDIT_CLIFF_RANDOM_DRAWS = 9


def register(subparsers: Any) -> None:
    parser = subparsers.add_parser(
        "audit",
        help="find the gate, amplifiers and negative heads; cascade, dose-response, report",
        description=(
            "Audit a chat model's refusal circuit: interchange necessity with significance, "
            "DLA, the gate and its amplifiers, the knockout cascade against a random-head "
            "null, dose-response, negative refusal heads and attack success, ablation vs "
            "interchange; optional steps --cipher (cipher contrast) and --cliff (the refusal "
            "cliff, its heads beside the audit's roles). With no arguments it audits the "
            "built-in model organism. Writes "
            "DIR/audit.json, DIR/report.html and PNG/SVG figures; finished steps are kept in "
            "DIR/steps, so rerunning after an interruption resumes. DIR/run.json records the "
            "command, the pairs' digests, the settings and the library versions."
        ),
        formatter_class=HelpFormatter,
    )
    add_model_args(parser, default_out=DEFAULT_OUT)
    parser.add_argument(
        "--jailbreak",
        type=Path,
        default=None,
        help="jailbreak-framed pairs (default: the organism's own for the organism, none "
        "otherwise)",
    )
    parser.add_argument(
        "--band",
        type=float,
        nargs=2,
        default=(0.25, 0.65),
        metavar=("LOW", "HIGH"),
        help="gate depth band as fractions of the layers",
    )
    parser.add_argument(
        "--knockout",
        default="zero",
        choices=["zero", "mean", "resample"],
        help="how the cascade knocks a head out",
    )
    parser.add_argument(
        "--n-null",
        type=int,
        default=99,
        help="random band heads in the cascade's null (99 lets p reach 0.01; a band with "
        "fewer heads uses all of them)",
    )
    parser.add_argument(
        "--metric",
        default="refusal_score",
        choices=METRICS,
        help="the interchange metric heads are ranked by (nll: teacher-forced NLL of the "
        "control's greedy continuation, the gate paper's); the top heads are measured under "
        "the other one too and disagreements reported",
    )
    parser.add_argument(
        "--refused-only",
        action="store_true",
        help="restrict every statistic to the pairs whose harmful prompt the model refuses and "
        "whose control it does not (judged on greedy continuations)",
    )
    parser.add_argument(
        "--check-heads",
        type=int,
        default=6,
        help="top heads measured again under the other metric (0: no cross-check)",
    )
    parser.add_argument(
        "--exact",
        default="screened",
        choices=["screened", "all"],
        help="per-head steps: rank every head by a gradient estimate and measure the top ones "
        "exactly (models with more than 64 heads), or measure every head exactly (slow)",
    )
    parser.add_argument(
        "--screen-k",
        type=int,
        default=16,
        help="heads measured exactly per ranking of the screen (and of the depth band)",
    )
    parser.add_argument(
        "--cipher",
        action="store_true",
        help="add the cipher-contrast step (refusal on plain vs cipher prompts, cipher-sensitive "
        "heads, the gate's necessity under cipher, gate injection)",
    )
    parser.add_argument(
        "--cipher-pairs",
        type=Path,
        default=None,
        help="with --cipher: pairs aligned with --pairs, pair i encoding pair i (default: the "
        "organism's own for the organism, else the pairs encoded with a seeded cipher)",
    )
    add_cliff_args(parser)
    parser.add_argument("--no-figures", action="store_true", help="skip PNG/SVG export")
    parser.set_defaults(handler=run)


def add_cliff_args(parser: argparse.ArgumentParser) -> None:
    """The refusal-cliff step's options (the ``cliff`` command's, prefixed ``--cliff-``)."""
    group = parser.add_argument_group("refusal cliff (with --cliff)")
    group.add_argument(
        "--cliff",
        action="store_true",
        help="add the refusal-cliff step: a refusal probe along reasoning traces, cliff scores, "
        "the heads that suppress refusal before the answer beside the audit's roles, and "
        "their top-k%% ablation (with the organism: its thinking variant)",
    )
    group.add_argument(
        "--cliff-traces",
        type=Path,
        default=None,
        metavar="FILE",
        help="JSONL traces (prompt, thinking, response) to read the probe along (default: "
        "generated from the harmful prompts with the model's thinking template, else asked "
        "to reason between <think> and </think>)",
    )
    group.add_argument(
        "--cliff-layer", type=int, default=None, help="probe layer (default: best CV AUC)"
    )
    group.add_argument(
        "--cliff-gen-tokens",
        type=int,
        default=None,
        help="tokens of a generated trace (default: 64)",
    )
    group.add_argument(
        "--cliff-ablation",
        default=None,
        choices=TRACE_ABLATIONS,
        help="head tracing: scale each head's output by --cliff-alpha, or zero or mean "
        "ablate it (default: scale)",
    )
    group.add_argument(
        "--cliff-alpha", type=float, default=None, help=f"scale (default: {DEFAULT_ALPHA:g})"
    )
    group.add_argument(
        "--cliff-top-percent",
        type=float,
        nargs="+",
        default=None,
        help="percentages of heads to ablate, the top-ranked and as many random ones "
        f"(default: {' '.join(f'{p:g}' for p in DEFAULT_TOP_PERCENT)})",
    )
    group.add_argument(
        "--cliff-random-draws",
        type=int,
        default=None,
        help=f"random head sets per k (default: {AUDIT_CLIFF_RANDOM_DRAWS}, empirical p down "
        "to 0.1; the cliff command draws 99); each costs one generation over the harmful "
        "prompts",
    )
    group.add_argument(
        "--cliff-renormalise",
        action="store_true",
        help="scale the ablated layer's other heads up by n/(n-k), as the paper's code does",
    )
    group.add_argument(
        "--no-cliff-tracing",
        action="store_true",
        help="probe and curves only: no head tracing and no ablation",
    )


CLIFF_OPTIONS = ("cliff_traces", "cliff_layer", "cliff_gen_tokens", "cliff_ablation",
                 "cliff_alpha", "cliff_top_percent", "cliff_random_draws", "cliff_renormalise",
                 "no_cliff_tracing")  # fmt: skip


def cliff_settings(args: argparse.Namespace) -> dict[str, Any]:
    """The ``AuditConfig`` fields of the cliff options given, checked before any work."""
    from patching.errors import OptionError

    given = [o for o in CLIFF_OPTIONS if getattr(args, o) not in (None, False)]
    if not args.cliff:
        if given:
            option = "--" + given[0].replace("_", "-")
            raise OptionError(f"{option} without --cliff: add --cliff, or drop it")
        return {}
    check_count(args.cliff_layer, "--cliff-layer", "the probe layer", minimum=0)
    check_count(args.cliff_gen_tokens, "--cliff-gen-tokens", "the trace length")
    check_count(args.cliff_random_draws, "--cliff-random-draws", "the random draws", minimum=0)
    if args.cliff_alpha is not None and not 0.0 <= args.cliff_alpha < 1.0:
        raise OptionError(f"--cliff-alpha {args.cliff_alpha}: a down-scaling in [0, 1), e.g. 0.1")
    bad = [p for p in args.cliff_top_percent or () if not 0.0 < p <= 100.0]
    if bad:
        raise OptionError(f"--cliff-top-percent {bad}: percentages in (0, 100], e.g. 1.5 3 10")
    values: dict[str, Any] = {
        "cliff": True,
        "cliff_tracing": not args.no_cliff_tracing,
        "cliff_renormalise": args.cliff_renormalise,
    }
    for name in ("cliff_layer", "cliff_gen_tokens", "cliff_ablation", "cliff_alpha",
                 "cliff_random_draws"):  # fmt: skip
        if getattr(args, name) is not None:
            values[name] = getattr(args, name)
    if args.cliff_top_percent is not None:
        values["cliff_top_percent"] = tuple(args.cliff_top_percent)
    return values


def _heads(heads: list[tuple[int, int]]) -> str:
    return ", ".join(f"L{a}H{b}" for a, b in heads) or "none"


def _variant(args: argparse.Namespace) -> str:
    """The organism variant: with --cliff the thinking one (the same circuit, and a cliff)."""
    return "thinking" if args.cliff else "exact"


def _jailbreak(args: argparse.Namespace) -> tuple[list[PromptPair], Path | None]:
    from circuits.cli.inputs import organism_path
    from patching.prompts import read_pairs

    if args.jailbreak is not None:
        return read_pairs(args.jailbreak), Path(args.jailbreak)
    if args.model == ORGANISM:
        path = organism_path(_variant(args)) / "pairs_jailbreak.jsonl"
        return read_pairs(path), path
    return [], None


def _cipher_pairs(args: argparse.Namespace) -> list[PromptPair]:
    """The aligned cipher pairs, read with the same ``--n``/``--sample`` rule as the pairs."""
    from circuits.cli.inputs import organism_path
    from patching.errors import OptionError
    from patching.prompts import read_pairs

    if not args.cipher:
        if args.cipher_pairs is not None:
            raise OptionError("--cipher-pairs without --cipher: add --cipher, or drop it")
        return []
    seed = args.seed if args.sample else None
    if args.cipher_pairs is not None:
        return read_pairs(args.cipher_pairs, n=args.n, seed=seed)
    if args.model == ORGANISM and args.pairs is None:
        path = organism_path(_variant(args)) / "pairs_cipher.jsonl"
        return read_pairs(path, n=args.n, seed=seed)
    return []


def run(args: argparse.Namespace) -> int:
    from circuits.audit import AuditConfig, audit
    from circuits.cli.inputs import prepare
    from circuits.cliff import read_traces
    from circuits.provenance import pairs_record
    from patching.checks import check_distinct_texts, check_pairs_fit
    from patching.errors import OptionError

    check_band(args.band)
    check_count(args.n_null, "--n-null", "the number of random heads in the cascade null")
    if args.check_heads < 0:
        raise OptionError(f"--check-heads {args.check_heads}: use 0 (no cross-check) or more")
    check_count(args.screen_k, "--screen-k", "the heads measured exactly per screen ranking")
    cliff = cliff_settings(args)
    config = AuditConfig(
        seed=args.seed,
        band=(args.band[0], args.band[1]),
        knockout=args.knockout,
        n_null=args.n_null,
        figures=not args.no_figures,
        metric=args.metric,
        pairs="refused" if args.refused_only else "all",
        metric_check=args.check_heads > 0,
        n_check_heads=max(1, args.check_heads),
        exact=args.exact,
        screen_k=args.screen_k,
        screen_band_k=args.screen_k,
        cipher=args.cipher,
        **cliff,
    )
    cipher_pairs = _cipher_pairs(args)
    traces = read_traces(args.cliff_traces) if args.cliff_traces is not None else []
    jailbreak, jailbreak_file = _jailbreak(args)
    check_distinct_texts(jailbreak)
    prepared = prepare(
        args,
        significance=config.alpha,
        ci=True,
        extra_tokens=config.gen_tokens,
        extra={"jailbreak": pairs_record(jailbreak, jailbreak_file) if jailbreak else None},
        variant=_variant(args),
    )
    model, pairs = prepared.model, prepared.pairs
    check_pairs_fit(model, jailbreak, extra_tokens=config.gen_tokens)
    for line in prepared.header():
        print(line)
    result = audit(
        model,
        pairs,
        config,
        prepared.out,
        progress=not args.quiet,
        jailbreak=jailbreak,
        cipher_pairs=cipher_pairs,
        cliff_traces=traces,
        cliff_traces_source=str(args.cliff_traces),
        run=prepared.run,
    )
    for line in result.summary():
        print(line)
    print(f"gate: {_heads([(g.layer, g.head) for g in result.gate])}; report: {args.out}")
    return 0
