"""``refusal-circuits audit``: the whole refusal-circuit audit of one model."""

from __future__ import annotations

import argparse
import os
from pathlib import Path
from typing import Any

from circuits.audit import AuditConfig, audit
from circuits.common_args import add_model_args, describe, resolve_model, resolve_pairs
from circuits.knockout import Head
from patching.pairs import read_pairs

DEFAULT_OUT = Path("audit")


def register(subparsers: Any) -> None:
    parser = subparsers.add_parser(
        "audit",
        help="find the gate, amplifiers and negative heads; cascade, dose-response, report",
        description=(
            "Audit a chat model's refusal circuit: interchange necessity with significance, "
            "DLA, the gate and its amplifiers, the knockout cascade against a random-head "
            "null, dose-response, negative refusal heads and attack success, ablation vs "
            "interchange. With no arguments it audits the built-in model organism. Writes "
            "DIR/audit.json, DIR/report.html and PNG/SVG figures; finished steps are kept in "
            "DIR/steps, so rerunning after an interruption resumes."
        ),
    )
    add_model_args(parser, default_out=DEFAULT_OUT)
    parser.add_argument("--jailbreak", type=Path, default=None, help="jailbreak-framed pairs")
    parser.add_argument(
        "--band",
        type=float,
        nargs=2,
        default=(0.25, 0.65),
        metavar=("LOW", "HIGH"),
        help="gate depth band as fractions of the layers (default 0.25 0.65)",
    )
    parser.add_argument("--knockout", default="zero", choices=["zero", "mean", "resample"])
    parser.add_argument("--n-null", type=int, default=20, help="random heads in the cascade null")
    parser.add_argument("--no-figures", action="store_true", help="skip PNG/SVG export")
    parser.add_argument("--quiet", action="store_true", help="no progress output")
    parser.set_defaults(handler=run)


def _heads(heads: list[Head]) -> str:
    return ", ".join(f"L{a}H{b}" for a, b in heads) or "none"


def run(args: argparse.Namespace) -> int:
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
    import torch

    torch.set_flush_denormal(True)  # denormals make CPU runs 10-100x slower at random
    model, organism = resolve_model(args)
    pairs = resolve_pairs(args, organism)
    if args.jailbreak is not None:
        jailbreak = read_pairs(args.jailbreak)
    elif organism is not None:
        jailbreak = read_pairs(organism / "pairs_jailbreak.jsonl")
    else:
        jailbreak = []
    print(describe(model, pairs))
    config = AuditConfig(
        seed=args.seed,
        band=(args.band[0], args.band[1]),
        knockout=args.knockout,
        n_null=args.n_null,
        figures=not args.no_figures,
    )
    result = audit(model, pairs, config, args.out, progress=not args.quiet, jailbreak=jailbreak)
    for line in result.summary():
        print(line)
    print(f"gate: {_heads([(g.layer, g.head) for g in result.gate])}; report: {args.out}")
    return 0
