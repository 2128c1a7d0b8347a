"""``refusal-circuits compare``: audits of several models side by side.

The table and figures are :func:`circuits.compare.compare_audits` and
:func:`circuits.compare.write_comparison`; this module parses the command and prints.
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from circuits.cli.common import HelpFormatter, add_out_arg, check_output_dir


def register(subparsers: Any) -> None:
    parser = subparsers.add_parser(
        "compare",
        help="put audits of several models side by side",
        description=(
            "Read DIR/audit.json of each audit and compare gate depth (fraction of layers), "
            "gate necessity, amplifier band width and cascade strength against model size. "
            "Prints a table; writes OUT/compare.csv, OUT/compare.html and OUT/run.json."
        ),
        formatter_class=HelpFormatter,
    )
    parser.add_argument("dirs", nargs="+", type=Path, help="audit output directories")
    add_out_arg(parser, default=Path("compare"))
    parser.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    import pandas as pd

    from circuits.compare import compare_audits, write_comparison
    from circuits.provenance import file_sha256, run_record, write_run_record

    table = compare_audits(args.dirs)
    out = check_output_dir(args.out)
    record = run_record(args, None, None)
    record["audits"] = [
        {
            "path": str((Path(d) / "audit.json").resolve()),
            "sha256": file_sha256(Path(d) / "audit.json"),
        }
        for d in args.dirs
    ]
    write_run_record(record, out)
    with pd.option_context("display.width", 160, "display.max_columns", 20):
        print(table.drop(columns=["dir"]).to_string(index=False))
    for path in write_comparison(table, args.out):
        print(f"wrote {path}")
    return 0
