"""The ``screen`` command: a layer x head interchange map of a model over pairs.

``refusal-circuits screen --model M --pairs P --out DIR`` computes interchange
necessity and sufficiency of every head (exact, attribution estimate, or a
prescreen followed by exact patching of the top k), their per-head tests, and
writes ``DIR/screen.json`` and ``DIR/screen.html`` (self-contained: plotly is
inlined, nothing loads from the network). Finished chunks are kept under
``DIR/.chunks``, so rerunning an interrupted command only computes the rest.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

from attribution.nll import METRICS
from attribution.patching_result import MODES, interchange_test
from circuits.patching_views import patching_figure
from patching.chat import POSITION_LABELS
from patching.model import load_model
from patching.pairs import builtin_pairs, read_pairs


def run_screen(args: argparse.Namespace) -> Path:
    """Run the screen described by parsed ``args``; return the output directory."""
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    model = load_model(args.model)
    if args.pairs:
        pairs = read_pairs(args.pairs, n=args.n, seed=args.seed)
    else:
        pairs = builtin_pairs(args.n)
    positions: Any = args.positions
    result = interchange_test(
        model,
        pairs,
        metric=args.metric,
        positions=positions,
        mode=args.mode,
        top_k=args.top_k,
        budget_mb=args.budget_mb,
        chunk_dir=out / ".chunks",
        seed=args.seed if args.seed is not None else 0,
        progress=not args.quiet,
    )
    data = result.to_dict()
    data["n_pairs"] = result.n_pairs
    (out / "screen.json").write_text(json.dumps(data, indent=1))
    patching_figure(result).write_html(out / "screen.html", include_plotlyjs="inline")
    if not args.quiet:
        for head in result.top(5, by="abs"):
            print(f"{head.label}: necessity {head.effect:+.3f} (p={head.p:.3g}, q={head.q:.3g})")
        print(f"wrote {out / 'screen.json'} and {out / 'screen.html'}")
    return out


def register(subparsers: Any) -> argparse.ArgumentParser:
    """Add the ``screen`` subcommand to an argparse subparsers object."""
    parser = subparsers.add_parser(
        "screen",
        help="interchange necessity/sufficiency map of every head",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--model", required=True, help="HF directory, .gguf file or hub name")
    parser.add_argument("--pairs", help="pair file (.jsonl/.csv); the built-in set when omitted")
    parser.add_argument("--out", required=True, help="output directory")
    parser.add_argument("--positions", default="all", choices=("all", *POSITION_LABELS))
    parser.add_argument("--mode", default="exact", choices=MODES)
    parser.add_argument("--metric", default="refusal_score", choices=METRICS)
    parser.add_argument("--top-k", type=int, default=None, help="heads run exactly (prescreen)")
    parser.add_argument("--n", type=int, default=None, help="number of pairs to use")
    parser.add_argument("--seed", type=int, default=None, help="pair sampling and test seed")
    parser.add_argument("--budget-mb", type=float, default=512.0, help="activation memory")
    parser.add_argument("--quiet", action="store_true", help="no progress bar or summary")
    parser.set_defaults(handler=_handle)
    return parser


def _handle(args: argparse.Namespace) -> int:
    """The console script's entry: run the screen, exit status 0."""
    run_screen(args)
    return 0
