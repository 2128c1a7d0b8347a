"""``refusal-circuits guard``: fit, cross-fit, evaluate, save, load and apply a Latent Guard."""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import TYPE_CHECKING, Any

from circuits.cli.common import (
    ORGANISM,
    HelpFormatter,
    add_batch_size_arg,
    add_gen_tokens_arg,
    add_model_args,
    check_count,
)
from patching.errors import OptionError

if TYPE_CHECKING:
    from attribution.latent_guard import LatentGuard
    from circuits.cli.inputs import Prepared
    from circuits.guard import LabelledPrompt

DEFAULT_OUT = Path("guard")
DEFAULT_FOLDS = 5  # circuits.guard.DEFAULT_FOLDS
THRESHOLD_RULES = ("zero", "fit")  # attribution.latent_guard.THRESHOLD_RULES


def register(subparsers: Any) -> None:
    parser = subparsers.add_parser(
        "guard",
        help="Latent Guard: the model's harmfulness belief at t_inst as a classifier",
        description=(
            "Latent Guard scores a prompt by the cosine of its residual stream at t_inst to "
            "the harmful centroid minus that to the harmless centroid, averaged over layers. "
            "With pairs alone it cross-fits (fits on --folds - 1 folds of the pairs, scores "
            "the held-out fold) and reports accuracy, precision, recall, F1 and ROC AUC "
            "(harmful = positive), per fold, per source and per jailbreak framing, beside the "
            "same read at t_post_inst (the refusal belief) and the model's own refusals. "
            "--eval FILE scores labelled files (AdvBench, HarmBench, JailbreakBench, XSTest, "
            "Alpaca, pair files) with a guard fitted on all pairs or given by --load; --save NAME "
            "writes NAME.safetensors + NAME.json; --score FILE writes each prompt's score. "
            "Writes DIR/guard.json, DIR/report.html and DIR/run.json."
        ),
        formatter_class=HelpFormatter,
    )
    add_model_args(parser, default_out=DEFAULT_OUT)
    parser.add_argument(
        "--jailbreak",
        type=Path,
        default=None,
        help="jailbreak-framed pairs, scored but never fitted on (default: the organism's own "
        "for the organism, none otherwise)",
    )
    parser.add_argument(
        "--eval",
        type=Path,
        nargs="+",
        default=[],
        metavar="FILE",
        help="labelled prompt files to evaluate on (default: none)",
    )
    parser.add_argument("--folds", type=int, default=DEFAULT_FOLDS, help="cross-fitting folds")
    parser.add_argument(
        "--layers",
        type=int,
        nargs="+",
        default=None,
        help="residual layers to average (l = block l's input, n_layers = the final residual) "
        "(default: every layer after the embeddings)",
    )
    parser.add_argument(
        "--center",
        action="store_true",
        help="centre on the midpoint of the two centroids before the cosines",
    )
    parser.add_argument(
        "--threshold",
        default="zero",
        choices=THRESHOLD_RULES,
        help="threshold 0, or fitted on a held-out share of the fitting prompts",
    )
    parser.add_argument(
        "--validation", type=float, default=0.25, help="share held out with --threshold fit"
    )
    parser.add_argument(
        "--save",
        type=Path,
        default=None,
        help="fit on all pairs and save as NAME.safetensors + NAME.json (default: not saved)",
    )
    parser.add_argument(
        "--load",
        type=Path,
        default=None,
        help="use the guard saved as NAME instead of fitting (default: fit on the pairs)",
    )
    parser.add_argument(
        "--score",
        type=Path,
        default=None,
        metavar="FILE",
        help="score every prompt of FILE (a prompt or pair file, or .txt one prompt a line) "
        "into DIR/scores.json (default: none)",
    )
    parser.add_argument(
        "--no-behaviour",
        action="store_true",
        help="skip the model's greedy responses (no refusal rate beside the guard)",
    )
    add_gen_tokens_arg(parser, 8, "tokens of greedy response")
    add_batch_size_arg(parser)
    parser.set_defaults(handler=run)


def check_options(args: argparse.Namespace) -> None:
    """Option values, before any file or model is read."""
    check_count(args.folds, "--folds", "the number of folds", minimum=2)
    if not 0.0 < args.validation < 1.0:
        raise OptionError(
            f"--validation {args.validation}: a share strictly between 0 and 1, e.g. 0.25"
        )
    if args.load is not None and args.save is not None:
        raise OptionError("--load and --save together: a loaded guard is already saved; drop one")
    if args.load is not None and (args.layers or args.center or args.threshold != "zero"):
        raise OptionError(
            "--layers/--center/--threshold shape a guard being fitted; a guard given by "
            "--load keeps its own: drop them"
        )


def _read_texts(path: Path) -> list[str]:
    """Prompts of a file to score: a .txt file (one a line) or any labelled file."""
    from circuits.guard import read_labelled
    from patching.errors import PromptFileError

    if path.suffix.lower() != ".txt":
        return [p.text for p in read_labelled(path)]
    try:
        text = path.expanduser().read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise PromptFileError(
            f"--score {path}: cannot be read ({exc}); pass a UTF-8 text file, one prompt a line"
        ) from None
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    if not lines:
        raise PromptFileError(f"--score {path} has no prompts; write one prompt a line")
    return lines


def _labelled(args: argparse.Namespace) -> list[LabelledPrompt]:
    from circuits.guard import read_labelled

    out = []
    for path in args.eval:
        out += read_labelled(path)
    return out


def _jailbreak(args: argparse.Namespace, organism: Path | None) -> tuple[list[Any], str]:
    from patching.prompts import read_pairs

    # The same draw as the plain pairs (equal files): pair i reframes plain pair i, which
    # circuits.guard.align_framed checks before the model loads.
    seed = args.seed if args.sample else None
    if args.jailbreak is not None:
        return read_pairs(args.jailbreak, n=args.n, seed=seed), Path(args.jailbreak).stem
    if args.model == ORGANISM and args.pairs is None and organism is not None:
        framed = read_pairs(organism / "pairs_jailbreak.jsonl", n=args.n, seed=seed)
        return framed, "pairs_jailbreak"
    return [], "jailbreak"


def _fit_all(
    prepared: Prepared, args: argparse.Namespace
) -> tuple[LatentGuard, LatentGuard | None]:
    from attribution.latent_guard import LatentGuard

    model, pairs = prepared.model, prepared.pairs
    harmful, harmless = [p.harmful for p in pairs], [p.control for p in pairs]
    common = {
        "layers": args.layers,
        "center": args.center,
        "threshold": args.threshold,
        "validation": args.validation,
        "seed": args.seed,
        "batch_size": args.batch_size,
        "progress": not args.quiet,
    }
    guard = LatentGuard.fit(model, harmful, harmless, **common)
    belief = LatentGuard.fit(model, harmful, harmless, position="t_post_inst", **common)
    return guard, belief


def _write_scores(
    guard: LatentGuard, texts: list[str], out: Path, args: argparse.Namespace
) -> Path:
    scores = guard.score(texts, batch_size=args.batch_size, progress=not args.quiet)
    rows = [
        {"text": t, "score": float(s), "harmful": bool(s >= guard.threshold)}
        for t, s in zip(texts, scores, strict=True)
    ]
    path = out / "scores.json"
    data = {"threshold": guard.threshold, "guard": guard.metadata(), "prompts": rows}
    path.write_text(json.dumps(data, indent=1), encoding="utf-8")
    print(f"{int((scores >= guard.threshold).sum())} of {len(rows)} scored prompts called harmful")
    return path


def run(args: argparse.Namespace) -> int:
    from attribution.latent_guard import LatentGuard
    from circuits.cli.common import check_common, print_lines, print_written
    from circuits.cli.inputs import organism_path, prepare, resolve_pairs
    from circuits.guard import (
        align_framed,
        check_folds,
        cross_fit_guard,
        evaluate_guard,
        labelled_pairs,
    )
    from circuits.guard_views import guard_summary, write_guard_outputs
    from patching.checks import check_distinct_texts

    check_options(args)
    check_common(args)
    # Every file is read and every count checked before the model loads.
    organism = organism_path() if args.model == ORGANISM else None
    jailbreak, jailbreak_name = _jailbreak(args, organism)
    check_distinct_texts(jailbreak)
    labelled = _labelled(args)
    to_score = _read_texts(args.score) if args.score is not None else None
    loaded = LatentGuard.load(args.load) if args.load is not None else None
    if jailbreak:
        jailbreak = align_framed(resolve_pairs(args, organism), jailbreak)
    if loaded is None:
        check_folds(len(resolve_pairs(args, organism)), args.folds, args.threshold, args.validation)
    settings = {
        "folds": args.folds,
        "layers": args.layers,
        "center": args.center,
        "threshold": args.threshold,
        "load": str(args.load) if args.load else None,
        "eval": [str(p) for p in args.eval],
        "n_jailbreak_pairs": len(jailbreak),
    }
    prepared = prepare(args, extra={"guard": settings})
    model, pairs, out = prepared.model, prepared.pairs, prepared.out
    source = Path(args.pairs).stem if args.pairs is not None else "pairs"
    common: dict[str, Any] = {
        "behaviour": not args.no_behaviour,
        "gen_tokens": args.gen_tokens,
        "batch_size": args.batch_size,
        "progress": not args.quiet,
    }
    print_lines(prepared.header())
    written: list[Path] = []
    fitted: tuple[LatentGuard, LatentGuard | None] | None = None
    if loaded is not None:
        fitted = (loaded.attach(model), None)
        guard = fitted[0]
        prompts = labelled_pairs(pairs, source) + labelled_pairs(jailbreak, jailbreak_name)
        result = evaluate_guard(model, guard, prompts + labelled, mode="loaded", **common)
        labelled = []  # evaluated with the pairs above
    else:
        result = cross_fit_guard(
            model, pairs, jailbreak=jailbreak, folds=args.folds, layers=args.layers,
            center=args.center, threshold=args.threshold, validation=args.validation,
            seed=args.seed, source=source, jailbreak_source=jailbreak_name, **common,
        )  # fmt: skip
        # One guard fitted on every pair serves --save, --eval and --score.
        fitted = _fit_all(prepared, args) if args.save or labelled or to_score else None
    print_lines(guard_summary(result))
    written += write_guard_outputs(result, out, run=prepared.run)
    if fitted is None:
        print_written(written)
        return 0
    guard, belief = fitted
    if labelled:
        evaluation = evaluate_guard(model, guard, labelled, belief=belief, **common)
        print(
            f"Labelled files ({', '.join(str(p) for p in args.eval)}), guard fitted on all pairs:"
        )
        print_lines(guard_summary(evaluation))
        written += write_guard_outputs(evaluation, out / "eval", run=prepared.run)
    if args.save is not None:
        written += list(guard.save(args.save))
    if to_score is not None:
        written.append(_write_scores(guard, to_score, out, args))
    print_written(written)
    return 0
