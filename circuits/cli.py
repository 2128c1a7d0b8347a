"""The ``refusal-circuits`` command line.

Each subcommand lives in its own module with a ``register(subparsers)``
function; this module only assembles them and turns every
:class:`~patching.errors.RefusalCircuitsError` into a one-line message and exit
status 2 (a traceback would mean a bug in the toolkit, not in the input).
"""

from __future__ import annotations

import argparse
import os
import sys
import warnings
from collections.abc import Sequence

from patching.errors import RefusalCircuitsError


def build_parser() -> argparse.ArgumentParser:
    from circuits import audit_command, check_command, compare, dla_command, screen
    from circuits.common_args import HelpFormatter
    from circuits.organism import cli as organism_cli
    from circuits.provenance import package_version

    parser = argparse.ArgumentParser(
        prog="refusal-circuits",
        description=(
            "Find where an aligned chat model decides to refuse: per-head direct logit "
            "attribution, interchange patching, and the gate / amplifier / negative-head "
            "circuit. Run a subcommand with --help for its options."
        ),
        formatter_class=HelpFormatter,
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {package_version()}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    dla_command.register(sub)
    screen.register(sub)
    organism_cli.register(sub)
    audit_command.register(sub)
    compare.register(sub)
    check_command.register(sub)
    _show_defaults(parser, HelpFormatter)
    return parser


def _show_defaults(
    parser: argparse.ArgumentParser, formatter: type[argparse.HelpFormatter]
) -> None:
    """Every subcommand's --help shows its defaults, however it was registered."""
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for sub in action.choices.values():
                sub.formatter_class = formatter
                _show_defaults(sub, formatter)
        elif action.option_strings and action.help is None and action.default is not None:
            action.help = "(default: %(default)s)"  # argparse prints nothing for help=None


def _show_warning(message: Warning | str, *_: object, **__: object) -> None:
    print(f"refusal-circuits: warning: {message}", file=sys.stderr)


def main(argv: Sequence[str] | None = None) -> int:
    # Torch's OpenMP threads spin when another process shares the cores; passive
    # waiting changes no number and avoids 10x slowdowns (docs/dependencies.md#cpu-speed).
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
    parser = build_parser()
    args = parser.parse_args(argv)
    # The exact command, for each output directory's run record (circuits.provenance).
    args.argv = [parser.prog, *argv] if argv is not None else list(sys.argv)
    try:
        with warnings.catch_warnings():
            # The library warns (self-check fallbacks, missing renderers...); a user of the
            # command line reads one line per warning, not a source location.
            warnings.showwarning = _show_warning
            return int(args.handler(args) or 0)
    except RefusalCircuitsError as exc:
        print(f"refusal-circuits {args.command}: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted; finished steps are kept, rerun the command to resume", file=sys.stderr)
        return 130


if __name__ == "__main__":
    raise SystemExit(main())
