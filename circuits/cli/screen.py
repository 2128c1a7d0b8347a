"""The ``screen`` command: a layer x head interchange map of a model over pairs.

``refusal-circuits screen --model M --pairs P --out DIR`` computes interchange
necessity and sufficiency of every head (exact, attribution estimate, or a
prescreen followed by exact patching of the top k) on the pooled scale the
audit uses (``--scale per_pair`` divides by each pair's own gap instead),
their per-head tests, and
writes ``DIR/screen.json`` and ``DIR/screen.html`` (self-contained: plotly is
inlined, nothing loads from the network) and ``DIR/run.json`` (the command, the
pairs' digests, the settings and the library versions). Finished chunks are kept under
``DIR/.chunks``, so rerunning an interrupted command only computes the rest.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

from circuits.cli.common import (
    DEFAULT_LEVEL,
    METRICS,
    MODES,
    POSITION_LABELS,
    SCALES,
    HelpFormatter,
    add_model_args,
    check_count,
    print_lines,
    print_written,
)
from patching.errors import OptionError

NLL_TOKENS = 5  # greedy control tokens the nll metric scores (interchange_test's default)


def check_screen_args(args: argparse.Namespace) -> None:
    """The screen's own options (the shared ones are checked by ``prepare``)."""
    check_count(args.top_k, "--top-k", "the number of heads run exactly")
    if args.top_k is not None and args.mode != "prescreen":
        raise OptionError(
            f"--top-k {args.top_k} applies only to --mode prescreen (this is --mode "
            f"{args.mode}); add --mode prescreen or drop --top-k"
        )
    if not args.budget_mb > 0:
        raise OptionError(
            f"--budget-mb {args.budget_mb:g}: the activation memory budget must be positive; "
            f"pass for example --budget-mb 512"
        )


def run_screen(args: argparse.Namespace) -> Path:
    """Run the screen described by parsed ``args``; return the output directory."""
    from attribution.interchange import interchange_test
    from circuits.cli.inputs import prepare
    from circuits.patching_views import patching_figure

    check_screen_args(args)
    extra_tokens = NLL_TOKENS if args.metric == "nll" else 0
    prepared = prepare(args, significance=DEFAULT_LEVEL, ci=True, extra_tokens=extra_tokens)
    out = prepared.out
    print_lines(prepared.header())
    positions: Any = args.positions
    result = interchange_test(
        prepared.model,
        prepared.pairs,
        metric=args.metric,
        positions=positions,
        mode=args.mode,
        top_k=args.top_k,
        nll_tokens=NLL_TOKENS,
        budget_mb=args.budget_mb,
        chunk_dir=out / ".chunks",
        seed=args.seed,
        scale=args.scale,
        progress=not args.quiet,
    )
    data = result.to_dict()
    data["run"] = prepared.run
    (out / "screen.json").write_text(json.dumps(data, indent=1))
    patching_figure(result).write_html(out / "screen.html", include_plotlyjs="inline")
    print_lines(
        f"{head.label}: necessity {head.value:+.3f} (p={head.p:.3g}, q={head.q:.3g})"
        for head in result.top(5, by="abs")
    )
    print_written([out / "screen.json", out / "screen.html"])
    return out


def register(subparsers: Any) -> argparse.ArgumentParser:
    """Add the ``screen`` subcommand to an argparse subparsers object."""
    parser = subparsers.add_parser(
        "screen",
        help="interchange necessity/sufficiency map of every head",
        description=__doc__,
        formatter_class=HelpFormatter,
    )
    add_model_args(parser)
    parser.add_argument(
        "--positions",
        default="all",
        choices=("all", *POSITION_LABELS),
        help="positions whose head outputs are patched",
    )
    parser.add_argument(
        "--mode", default="exact", choices=MODES, help="exact patching, an estimate, or both"
    )
    parser.add_argument(
        "--metric", default="refusal_score", choices=METRICS, help="what a patch changes"
    )
    parser.add_argument(
        "--top-k",
        type=int,
        default=None,
        help="heads run exactly after the prescreen (default: 10%% of all heads)",
    )
    parser.add_argument(
        "--scale",
        default="pooled",
        choices=SCALES,
        help="divide each pair's change by the mean absolute clean gap over pairs (pooled, "
        "as the audit) or by the pair's own gap (per_pair)",
    )
    parser.add_argument("--budget-mb", type=float, default=512.0, help="activation memory")
    parser.set_defaults(handler=_handle)
    return parser


def _handle(args: argparse.Namespace) -> int:
    """The console script's entry: run the screen, exit status 0."""
    run_screen(args)
    return 0
