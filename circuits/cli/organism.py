"""The ``organism`` command: ``refusal-circuits organism build --out DIR [--seed S] [--variant V]``.

``register`` adds the command to the toolkit's argparse subparsers; the parsed
namespace carries ``handler``, which the main entry point calls with it.
"""

from __future__ import annotations

import argparse
from typing import Any

from circuits.cli.common import HelpFormatter, add_out_arg, add_seed_arg, check_output_dir

# circuits.organism.build.ORGANISM_VARIANTS, spelled out: importing the builder
# here would load torch for every command (test_organism_realistic checks they agree).
VARIANTS = ("exact", "realistic", "beliefs", "thinking")


def _build(args: argparse.Namespace) -> int:
    from circuits.organism.build import build_organism
    from circuits.organism.ground_truth import load_ground_truth

    out = build_organism(check_output_dir(args.out), seed=args.seed, variant=args.variant)
    truth = load_ground_truth(out)
    print(f"{args.variant} organism (seed {args.seed}) written to {out}")
    if truth.beliefs is not None:
        b = truth.beliefs
        print(
            f"  harmfulness: residual dim {b.harmfulness_dim} at {b.harmfulness_position}, "
            f"layers {min(b.harmfulness_layers)}-{max(b.harmfulness_layers)}; refusal: dim "
            f"{b.refusal_dim} at {b.refusal_position}, layers {min(b.refusal_layers)}-"
            f"{max(b.refusal_layers)}; answer key {out}/ground_truth.json"
        )
        return 0
    gate_layer, gate_head = truth.gate
    amps = ", ".join(f"L{layer}H{head}" for layer, head in truth.amplifiers)
    print(
        f"  gate L{gate_layer}H{gate_head}; amplifiers {amps}; answer key {out}/ground_truth.json"
    )
    return 0


def register(subparsers: Any) -> None:
    """Add ``organism build`` to a parser's subcommands."""
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
    add_out_arg(build)
    add_seed_arg(build, "seed of the random filler weights")
    build.add_argument(
        "--variant",
        choices=VARIANTS,
        default="exact",
        help="exact: every planted role carries its whole effect (the gate is a perfect "
        "switch); realistic: the same roles at a real model's effect sizes (the gate carries "
        "a few percent of the gap, amplifiers fall 5-25%% under its knockout, noise "
        "everywhere); beliefs: harmfulness (at t_inst) and refusal (at t_post_inst) planted as "
        "separate known directions, with a reply-inversion question answered from harmfulness",
    )
    build.set_defaults(handler=_build)
