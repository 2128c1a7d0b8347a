"""``refusal-circuits dla``: per-head direct logit attribution with its views."""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import TYPE_CHECKING, Any

from circuits.cli.common import (
    HelpFormatter,
    add_batch_size_arg,
    add_model_args,
    add_n_boot_arg,
    print_lines,
    print_written,
)

if TYPE_CHECKING:
    from attribution.dla import DLAResult


def register(subparsers: Any) -> None:
    parser = subparsers.add_parser(
        "dla",
        help="per-head direct logit attribution of refusal (harmful − control)",
        description=(
            "Decompose the refusal logit difference at the last prompt position into "
            "per-head contributions (plus MLPs, embeddings, biases), for harmful prompts and "
            "their controls, with bootstrap CIs. Writes DIR/dla.json, DIR/dla.html and, where "
            "a renderer exists, PNG/SVG figures, and DIR/run.json (the command, pairs and "
            "versions that made them)."
        ),
        formatter_class=HelpFormatter,
    )
    add_model_args(parser)
    add_batch_size_arg(parser)
    add_n_boot_arg(parser)
    parser.set_defaults(handler=run)


def summary_lines(result: DLAResult) -> list[str]:
    top = result.top(3)
    return [
        f"Model {result.model}: {result.n_layers} layers x {result.n_heads} heads, "
        f"{result.n_pairs} prompt pairs.",
        f"Refusal logit difference, harmful − control: {result.total_logit_diff:+.3f} logits; "
        f"heads carry {result.per_head.sum():+.3f}, everything else {result.remainder:+.3f} "
        f"(identity error {result.residual_error:.1e}).",
        "Strongest pro-refusal heads: "
        + ", ".join(f"{s.label} {s.value:+.3f} [{s.ci_low:+.3f}, {s.ci_high:+.3f}]" for s in top)
        + ".",
        "DLA shows heads that write refusal directly (amplifiers); a gate that routes the "
        "decision through later heads stays dark here and is found by interchange patching.",
    ] + ([result.note] if result.note else [])


def write_outputs(result: DLAResult, out: Path, run: dict[str, Any] | None = None) -> list[Path]:
    """``dla.json`` (with the run record under ``"run"``), ``dla.html`` and figures."""
    from circuits.export import save_figures
    from circuits.views import dla_figures, write_report

    out.mkdir(parents=True, exist_ok=True)
    data = result.to_dict()
    if run is not None:
        data["run"] = run
    (out / "dla.json").write_text(json.dumps(data, indent=1))
    figures = dla_figures(result)
    written = [
        out / "dla.json",
        write_report(
            out / "dla.html",
            "Direct logit attribution of refusal",
            list(figures.values()),
            summary=summary_lines(result),
        ),
    ]
    return written + save_figures(figures, out)


def run(args: argparse.Namespace) -> int:
    from attribution.dla import direct_logit_attribution
    from circuits.cli.inputs import prepare

    prepared = prepare(args, ci=True)
    model, pairs = prepared.model, prepared.pairs
    print_lines(prepared.header())
    result = direct_logit_attribution(
        model,
        pairs,
        batch_size=args.batch_size,
        n_boot=args.n_boot,
        seed=args.seed,
        progress=not args.quiet,
    )
    print_lines(summary_lines(result))
    print_written(write_outputs(result, prepared.out, run=prepared.run))
    return 0
