"""``refusal-circuits check``: versions, DLA identity and engine parity on a model."""

from __future__ import annotations

import argparse
from typing import Any

from circuits.checks import check_model
from circuits.common_args import ORGANISM, check_common, resolve_model, resolve_pairs
from patching.compat import VERIFIED, unverified_versions, versions


def register(subparsers: Any) -> None:
    parser = subparsers.add_parser(
        "check",
        help="check this install on a model: versions, DLA identity, engine parity",
        description=(
            "Print the installed versions, then measure on the model (default: the built-in "
            "organism) the two identities every result rests on: per-head DLA plus the other "
            "components equals the logit difference, and the engine's fast paths equal a plain "
            "forward pass. Exits with status 1 if either fails. Run it after installing and "
            "on each model you audit."
        ),
    )
    parser.add_argument("--model", default=ORGANISM, help="hub name, local directory or .gguf")
    parser.add_argument("--pairs", default=None, help="prompt pairs (default: built-in set)")
    parser.add_argument("--n", type=int, default=2, help="pairs to check on (default: 2)")
    parser.add_argument("--seed", type=int, default=0, help=argparse.SUPPRESS)
    parser.add_argument("--device", default="cpu", help="torch device (default: cpu)")
    parser.add_argument(
        "--dtype", default="float32", choices=["float32", "float64", "bfloat16", "float16"]
    )
    parser.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    check_common(args)
    installed = versions()
    print("versions: " + ", ".join(f"{k} {v}" for k, v in installed.items()))
    verified = ", ".join(f"{k} {low} to <{high}" for k, (low, high) in VERIFIED.items())
    outside = unverified_versions(installed)
    if outside:
        print(f"versions: outside the verified range ({verified}): {'; '.join(outside)}")
    else:
        print(f"versions: inside the verified range ({verified})")
    model, organism = resolve_model(args)
    pairs = resolve_pairs(args, organism)
    result = check_model(model, pairs)
    print(f"model: {model.name} ({model.architecture}, {model.dtype}, {model.device})")
    for line in result.lines():
        print(line)
    print("check: " + ("passed" if result.passed else "FAILED: do not trust results on this model"))
    return 0 if result.passed else 1
