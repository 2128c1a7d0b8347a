"""The ``refusal-circuits`` command line.

One module per command (``dla``, ``screen``, ``organism``, ``audit``,
``compare``, ``check``, ``directions``, ``guard``, ``calibrate``, ``cliff``), each with a
``register(subparsers)`` function that imports nothing heavy: a command's
implementation (torch, the model, the methods) is imported by its handler, so
``--help`` answers at once. The shared
options and their checks live in :mod:`circuits.cli.common`, the input
preparation every model command runs first in :mod:`circuits.cli.inputs`.

:func:`main` sets up the process once (:func:`patching.runtime.configure_process`)
and turns every :class:`~patching.errors.RefusalCircuitsError` into a one-line
message and exit status 2 (a traceback would mean a bug in the toolkit, not in
the input).
"""

from __future__ import annotations

import argparse
import sys
import warnings
from collections.abc import Sequence
from typing import Any

from patching.errors import RefusalCircuitsError

__all__ = ["build_parser", "main"]


class _VersionAction(argparse.Action):
    """``--version``: looks the version up only when asked (keeps the parser cheap)."""

    def __init__(self, option_strings: Sequence[str], dest: str, **kwargs: Any) -> None:
        kwargs.setdefault("help", "show the version and exit")
        super().__init__(option_strings, dest, nargs=0, default=argparse.SUPPRESS, **kwargs)

    def __call__(self, parser: argparse.ArgumentParser, *_: Any, **__: Any) -> None:
        from importlib import metadata

        try:
            version = metadata.version("refusal-circuits")
        except metadata.PackageNotFoundError:
            version = "unknown"
        print(f"{parser.prog} {version}")  # stdout, as argparse's own version action
        parser.exit()


def build_parser() -> argparse.ArgumentParser:
    """The whole parser; imports no command implementation (no torch)."""
    from circuits.cli import (
        audit,
        calibrate,
        check,
        cipher,
        cliff,
        compare,
        directions,
        dla,
        guard,
        organism,
        screen,
    )
    from circuits.cli.common import HelpFormatter

    parser = argparse.ArgumentParser(
        prog="refusal-circuits",
        description=(
            "Find where an aligned chat model decides to refuse: per-head direct logit "
            "attribution, interchange patching, and the gate / amplifier / negative-head "
            "circuit. Run a subcommand with --help for its options."
        ),
        formatter_class=HelpFormatter,
    )
    parser.add_argument("--version", action=_VersionAction)
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for command in (
        dla,
        screen,
        organism,
        audit,
        compare,
        check,
        directions,
        guard,
        calibrate,
        cipher,
        cliff,
    ):
        command.register(sub)
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
    parser = build_parser()
    args = parser.parse_args(argv)
    # Before the handler imports torch: OMP policy and denormals, once for every command.
    from patching.runtime import configure_process

    configure_process()
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
