"""The ``calibrate`` command: per-category refusal rates under a first-token bias.

``refusal-circuits calibrate --model M --pairs P --target 0.5 --out DIR`` groups the
pairs by category, sweeps a logit bias on the refusal tokens at the first response
position (``--mode threshold``: a threshold on their probability; ``--refusal-token
TOKEN``: a model's own dedicated refusal token instead of the set), finds the bias
reaching each category's target refusal rate on its harmful prompts, verifies it by
judged greedy generation, and writes ``DIR/calibration.json`` (curves, settings,
first-token and generated rates), ``DIR/report.html`` (TPR/FPR curves) and
``DIR/run.json``. ``--target 0.5`` applies to every category, ``--target
weapons=0.2`` to one (repeat it; a plain number then covers the others).
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from circuits.cli.common import (
    ORGANISM,
    HelpFormatter,
    add_gen_tokens_arg,
    add_model_args,
    check_common,
    print_lines,
    print_written,
)
from patching.errors import OptionError

DEFAULT_TARGET = 0.5  # every category's target refusal rate when --target is not given


def parse_targets(values: list[str] | None) -> tuple[float | None, dict[str, float]]:
    """``--target`` values: (the plain rate for every category, ``{CATEGORY: RATE}``)."""
    default: float | None = None
    per: dict[str, float] = {}
    for value in values or [str(DEFAULT_TARGET)]:
        name, _, rate = value.rpartition("=")
        try:
            number = float(rate)
        except ValueError:
            raise OptionError(
                f"--target {value}: not a rate; pass a share of prompts like --target 0.5 or "
                f"--target weapons=0.2"
            ) from None
        if not name:
            if default is not None:
                raise OptionError(
                    f"--target given two plain rates ({default:g} and {number:g}); pass one, "
                    f"and CATEGORY=RATE for the categories that differ"
                )
            default = number
        else:
            per[name.strip()] = number
    return default, per


def run_calibrate(args: argparse.Namespace) -> Path:
    """Run the calibration described by parsed ``args``; return the output directory."""
    from circuits.calibration import by_category, calibrate_refusal, check_categories, check_targets
    from circuits.calibration_views import write_calibration_report
    from circuits.cli.inputs import organism_path, prepare, resolve_pairs

    default, per = parse_targets(args.target)
    # Categories and targets are checked on the pairs before the model loads.
    check_common(args)
    organism = organism_path() if args.model == ORGANISM else None
    groups = by_category(resolve_pairs(args, organism))
    check_categories(groups)
    check_targets(per, list(groups))
    targets = {**(dict.fromkeys(groups, default) if default is not None else {}), **per}
    check_targets(targets, list(groups))
    prepared = prepare(args, extra={"targets": targets, "mode": args.mode})
    print_lines(prepared.header())
    result = calibrate_refusal(
        prepared.model,
        by_category(prepared.pairs),
        targets,
        mode=args.mode,
        dedicated_token=args.refusal_token,
        gen_tokens=args.gen_tokens,
        progress=not args.quiet,
    )
    write_calibration_report(result, prepared.out)
    unit = "logits" if args.mode == "bias" else "probability"
    print_lines(
        f"{c.category}: {args.mode} {c.setting:.4g} ({unit}) for target "
        f"{c.target:.0%}: TPR {c.harmful_at:.0%} first token, {c.harmful_generated:.0%} "
        f"generated; FPR {c.harmless_at:.0%} / {c.harmless_generated:.0%}; held out "
        f"({c.cv_folds}-fold, first token) TPR {c.harmful_heldout:.0%}, FPR "
        f"{c.harmless_heldout:.0%}"
        for c in result.categories
    )
    print_written([prepared.out / "calibration.json", prepared.out / "report.html"])
    return prepared.out


def register(subparsers: Any) -> argparse.ArgumentParser:
    """Add the ``calibrate`` subcommand to an argparse subparsers object."""
    parser = subparsers.add_parser(
        "calibrate",
        help="per-category refusal rates under a first-token bias, and the bias for a target",
        description=__doc__,
        formatter_class=HelpFormatter,
    )
    add_model_args(parser)
    parser.add_argument(
        "--target",
        action="append",
        metavar="[CATEGORY=]RATE",
        help="target refusal rate on the harmful prompts, a share in [0, 1]: RATE for every "
        "category, CATEGORY=RATE for one (repeatable) (default: 0.5)",
    )
    parser.add_argument(
        "--mode",
        default="bias",
        choices=("bias", "threshold"),
        help="a logit bias on the refusal tokens, or a threshold on their probability",
    )
    parser.add_argument(
        "--refusal-token",
        default=None,
        metavar="TOKEN",
        help="the model's dedicated refusal token (e.g. [refuse]); must be one token "
        "(default: the refusal token set)",
    )
    add_gen_tokens_arg(parser, 8, "tokens generated per prompt to verify")
    parser.set_defaults(handler=_handle)
    return parser


def _handle(args: argparse.Namespace) -> int:
    """The console script's entry: run the calibration, exit status 0."""
    run_calibrate(args)
    return 0
