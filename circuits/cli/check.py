"""``refusal-circuits check``: versions, DLA identity and engine parity on a model."""

from __future__ import annotations

import argparse
from typing import Any

from circuits.cli.common import HelpFormatter, add_model_args, check_common


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
        formatter_class=HelpFormatter,
    )
    add_model_args(parser, out=False, default_n=2, progress=False)
    parser.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    from circuits.checks import check_model
    from circuits.cli.inputs import resolve_model, resolve_pairs
    from patching.compat import VERIFIED, unverified_versions, versions

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
