"""The ``organism`` command: ``refusal-circuits organism build --out DIR [--seed S]``.

``register`` adds the command to the toolkit's argparse subparsers; the parsed
namespace carries ``handler``, which the main entry point calls with it.
"""

from __future__ import annotations

import argparse

from circuits.organism.build import build_organism
from circuits.organism.ground_truth import load_ground_truth


def _build(args: argparse.Namespace) -> int:
    from circuits.common_args import check_output_dir

    out = build_organism(check_output_dir(args.out), seed=args.seed)
    truth = load_ground_truth(out)
    gate_layer, gate_head = truth.gate
    amps = ", ".join(f"L{layer}H{head}" for layer, head in truth.amplifiers)
    print(f"organism (seed {args.seed}) written to {out}")
    print(
        f"  gate L{gate_layer}H{gate_head}; amplifiers {amps}; answer key {out}/ground_truth.json"
    )
    return 0


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add ``organism build`` to a parser's subcommands."""
    from circuits.common_args import HelpFormatter

    organism = subparsers.add_parser(
        "organism",
        formatter_class=HelpFormatter,
        help="the model organism: a small chat model with a planted refusal circuit",
        description="Build the model organism, whose refusal circuit is known exactly.",
    )
    actions = organism.add_subparsers(dest="organism_command", required=True)
    build = actions.add_parser(
        "build",
        help="write the organism (HF model directory, ground truth, prompt pairs) to --out",
        description="Write the organism (HF model directory, ground truth, prompt pairs) to --out.",
        formatter_class=HelpFormatter,
    )
    build.add_argument("--out", required=True, help="directory to write the model into")
    build.add_argument("--seed", type=int, default=0, help="seed of the random filler weights")
    build.set_defaults(handler=_build)
