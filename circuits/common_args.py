"""Options shared by the subcommands, and the checks every command runs first.

A command's work is expensive (loading a model, thousands of forward passes),
so every mistake in its input is found before that work starts, in this order
(:func:`prepare`):

1. option values (counts of at least 1, a device that exists here, ...);
2. the pairs: read and checked (no pair with the same harmful and control
   text; enough pairs for the statistics asked for);
3. the output directory: created, and a probe file written and removed;
4. the model is loaded, then every pair is checked against its tokenizer and
   context length (no pair that tokenizes to one sequence, none too long);
5. the run record (:mod:`circuits.provenance`) is written as ``DIR/run.json``.

Each failure is a :class:`~patching.errors.RefusalCircuitsError` whose one-line
message names the option or pair and the fix; the CLI prints it, exit status 2.
"""

from __future__ import annotations

import argparse
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from attribution.statistics import check_enough_pairs, check_enough_pairs_for_ci
from circuits.checks import ModelChecks, check_model
from circuits.provenance import run_record, write_run_record
from patching.checks import check_distinct_texts, check_pairs_fit
from patching.errors import OptionError, OutputDirError
from patching.model import HookedModel, check_device, load_model
from patching.pairs import PromptPair, builtin_pairs, read_pairs

ORGANISM = "organism"


class HelpFormatter(argparse.HelpFormatter):
    """Shows every option's default; keeps a multi-line description as written.

    An option whose help already says what its default means (``default: all``)
    is left alone; every other option with a default gets ``(default: X)``.
    """

    def _fill_text(self, text: str, width: int, indent: str) -> str:
        if "\n" in text.strip():
            return "".join(indent + line for line in text.splitlines(keepends=True))
        return super()._fill_text(text, width, indent)

    def _get_help_string(self, action: argparse.Action) -> str:
        text = action.help or ""
        default = action.default
        if not action.option_strings or "default" in text:
            return text
        if default is None or default == argparse.SUPPRESS:
            return text
        if action.nargs == 0:  # a flag: store_true / store_false
            return f"{text} (default: {'on' if default else 'off'})"
        if isinstance(default, (list, tuple)):
            shown = " ".join(str(v) for v in default)
        else:
            shown = str(default)
        return f"{text} (default: {shown.replace('%', '%%')})"


def add_model_args(parser: argparse.ArgumentParser, *, default_out: Path | None = None) -> None:
    """The shared options; ``--out`` is required unless a ``default_out`` is given."""
    parser.add_argument(
        "--model",
        default=ORGANISM,
        help="hub name, local Hugging Face directory, or .gguf file (default: the built-in "
        "model organism, built and cached on first use)",
    )
    parser.add_argument(
        "--pairs",
        type=Path,
        default=None,
        help="JSONL/CSV prompt pairs (harmful, control, category) (default: the organism's "
        "own pairs for the organism, the built-in set otherwise)",
    )
    parser.add_argument(
        "--out",
        type=Path,
        default=default_out,
        required=default_out is None,
        help="output directory, created if missing",
    )
    parser.add_argument(
        "--n",
        type=int,
        default=None,
        help="use n pairs: from a --pairs file sampled with --seed, else the first n "
        "(default: all)",
    )
    parser.add_argument("--seed", type=int, default=0, help="seed for sampling and statistics")
    parser.add_argument(
        "--device",
        default="cuda" if torch.cuda.is_available() else "cpu",
        help="torch device: cpu, cuda, cuda:N or mps",
    )
    parser.add_argument(
        "--dtype",
        default="float32",
        choices=["float32", "float64", "bfloat16", "float16"],
        help="weights and activations dtype",
    )
    parser.add_argument(
        "--allow-pickle",
        action="store_true",
        help="load weights stored only as pickles (pytorch_model.bin, .pt); unpickling can run "
        "arbitrary code, so only for files you trust (default: refuse them)",
    )


# --------------------------------------------------------------------------- option checks


def check_count(value: int | None, option: str, what: str, *, minimum: int = 1) -> None:
    """Refuse a count below ``minimum`` (``None`` means "not given" and passes)."""
    if value is not None and value < minimum:
        raise OptionError(
            f"{option} {value}: {what} must be at least {minimum}; pass {option} {minimum} "
            f"or more, or leave it out for the default"
        )


def check_band(band: tuple[float, float] | list[float], option: str = "--band") -> None:
    """Refuse a depth band that is reversed or not within [0, 1]."""
    low, high = float(band[0]), float(band[1])
    if not (0.0 <= low < high <= 1.0):
        raise OptionError(
            f"{option} {low:g} {high:g}: LOW and HIGH are fractions of the layers, with "
            f"0 <= LOW < HIGH <= 1; pass for example {option} 0.25 0.65"
        )


def check_output_dir(out: str | Path, option: str = "--out") -> Path:
    """Create ``out`` and prove it writable (a probe file is written and removed).

    Raises:
        OutputDirError: ``out`` is a file, cannot be created, or cannot be written
            (permissions, read-only filesystem, full disk).
    """
    path = Path(out).expanduser()
    if path.exists() and not path.is_dir():
        raise OutputDirError(
            f"{option} {path} is a file, not a directory; pass a directory path "
            f"(it is created if missing)"
        )
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise OutputDirError(
            f"{option} {path}: the directory cannot be created ({exc.strerror or exc}); "
            f"pass a directory in a writable location"
        ) from None
    probe = path / f".write-probe-{os.getpid()}"
    try:
        probe.write_bytes(b"probe")
        probe.unlink()
    except OSError as exc:
        raise OutputDirError(
            f"{option} {path} is not writable ({exc.strerror or exc}); pass a directory in "
            f"a writable location, or fix its permissions"
        ) from None
    return path


def check_common(args: argparse.Namespace) -> None:
    """Check the shared options that need no file or model (before anything else)."""
    check_count(args.n, "--n", "the number of pairs")
    args.device = check_device(args.device)


# --------------------------------------------------------------------------- inputs


def organism_path() -> Path:
    """The built-in organism's directory (built into the cache on first use)."""
    from circuits.organism import organism_dir

    return organism_dir()


def resolve_model(args: argparse.Namespace) -> tuple[HookedModel, Path | None]:
    """Load ``--model``; for the organism also return its directory (for its pairs)."""
    allow_pickle = bool(getattr(args, "allow_pickle", False))
    if args.model == ORGANISM:
        directory = organism_path()
        model = load_model(
            directory, device=args.device, dtype=args.dtype, allow_pickle=allow_pickle
        )
        return model, directory
    model = load_model(args.model, device=args.device, dtype=args.dtype, allow_pickle=allow_pickle)
    return model, None


def pairs_source(args: argparse.Namespace, organism: Path | None) -> Path | str:
    """The file the pairs are read from, or ``"builtin"``."""
    if args.pairs is not None:
        return Path(args.pairs)
    if organism is not None:
        return organism / "pairs.jsonl"
    return "builtin"


def resolve_pairs(args: argparse.Namespace, organism: Path | None) -> list[PromptPair]:
    """``--pairs`` if given, else the organism's pairs or the built-in set; ``--n`` applied."""
    if args.pairs is not None:
        return read_pairs(args.pairs, n=args.n, seed=args.seed if args.n else None)
    if organism is not None:
        return read_pairs(organism / "pairs.jsonl", n=args.n)
    return builtin_pairs(args.n)


@dataclass
class Prepared:
    """What a command works on, every input already checked."""

    model: HookedModel
    pairs: list[PromptPair]
    organism: Path | None
    out: Path
    run: dict[str, Any]
    checks: ModelChecks

    def header(self) -> list[str]:
        """What the run works on, then the two identities measured on the model."""
        return [describe(self.model, self.pairs), *self.checks.lines()]


def prepare(
    args: argparse.Namespace,
    *,
    significance: float | None = None,
    ci: bool = False,
    extra_tokens: int = 0,
    extra: dict[str, Any] | None = None,
) -> Prepared:
    """Check every input, load the model, write ``DIR/run.json`` (module docstring).

    Args:
        significance: the level p values are compared with; refuse too few pairs to
            reach it (:func:`attribution.statistics.check_enough_pairs`).
        ci: the command reports bootstrap intervals; refuse a single pair.
        extra_tokens: positions the command appends after each prompt.
        extra: more fields for the run record.
    """
    check_common(args)
    organism = organism_path() if args.model == ORGANISM else None
    pairs = resolve_pairs(args, organism)
    check_distinct_texts(pairs)
    if ci:
        check_enough_pairs_for_ci(len(pairs))
    if significance is not None:
        check_enough_pairs(len(pairs), significance)
    out = check_output_dir(args.out)
    model, _ = resolve_model(args)
    check_pairs_fit(model, pairs, extra_tokens=extra_tokens)
    # The DLA identity and the engine's self-check on the user's own model and first
    # pair, before the work: every output records them (circuits.checks).
    checks = check_model(model, pairs[:1])
    extra = {**(extra or {}), "checks": checks.to_dict()}
    record = run_record(args, pairs, model, pairs_source=pairs_source(args, organism), extra=extra)
    write_run_record(record, out)
    return Prepared(model=model, pairs=pairs, organism=organism, out=out, run=record, checks=checks)


def describe(model: HookedModel, pairs: list[Any]) -> str:
    return (
        f"{model.name}: {model.architecture}, {model.n_layers} layers x {model.n_heads} heads "
        f"({model.n_kv_heads} KV), {len(pairs)} pairs"
    )
