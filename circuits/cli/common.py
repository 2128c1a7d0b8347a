"""Options shared by the subcommands, and the option checks every command runs first.

Every command takes its shared options from here (:func:`add_model_args`,
:func:`add_out_arg`, :func:`add_batch_size_arg`, :func:`add_n_boot_arg`,
:func:`add_gen_tokens_arg`), and prints its header, summary and written files
through :func:`print_lines` and :func:`print_written`, so names, meanings, defaults
and output agree across commands. ``--quiet`` (every model command but ``check``)
hides the progress bars, which go to stderr; the header, the summary and the files
written still print to stdout, as they are the command's answer.
This module imports nothing heavy: building the parser stays cheap. The one
``--n`` rule: ``--n N`` keeps the first N pairs; ``--sample`` draws N pairs at
random with ``--seed`` instead (returned in file order).

A command's work is expensive (loading a model, thousands of forward passes),
so every mistake in its input is found before that work starts, in this order
(:func:`circuits.cli.inputs.prepare`):

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
from collections.abc import Iterable
from pathlib import Path

from patching.errors import OptionError, OutputDirError

ORGANISM = "organism"
AUTO_DEVICE = "auto"  # cuda when a GPU is visible, else cpu (resolved by check_common)
DTYPES = ("float32", "float64", "bfloat16", "float16")

# The library's defaults and choices, mirrored here so that building the parser
# imports no torch; tests/integration/test_inputs.py holds each equal to the library's own.
DEFAULT_N_BOOT = 2000  # attribution.statistics.DEFAULT_N_BOOT
DEFAULT_LEVEL = 0.05  # attribution.statistics.DEFAULT_LEVEL
SCALES = ("pooled", "per_pair")  # attribution.statistics.SCALES
MODES = ("exact", "attribution", "prescreen")  # attribution.interchange.MODES
METRICS = ("refusal_score", "logit_diff", "nll")  # attribution.metrics.METRICS
POSITION_LABELS = ("t_inst", "t_post_inst", "last")  # patching.chat.POSITION_LABELS


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


def add_out_arg(parser: argparse.ArgumentParser, *, default: Path | None = None) -> None:
    """``--out DIR``: required unless a ``default`` is given."""
    parser.add_argument(
        "--out",
        type=Path,
        default=default,
        required=default is None,
        help="output directory, created if missing",
    )


def add_seed_arg(parser: argparse.ArgumentParser, help: str = "seed for statistics") -> None:
    parser.add_argument("--seed", type=int, default=0, help=help)


def add_quiet_arg(parser: argparse.ArgumentParser) -> None:
    """``--quiet``: no progress bars; what the command prints to stdout is unchanged."""
    parser.add_argument(
        "--quiet",
        action="store_true",
        help="hide the progress bars (the summary and the files written still print)",
    )


def add_batch_size_arg(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--batch-size", type=int, default=16, help="prompts per forward pass")


def add_n_boot_arg(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--n-boot", type=int, default=DEFAULT_N_BOOT, help="bootstrap resamples")


def add_gen_tokens_arg(parser: argparse.ArgumentParser, default: int, help: str) -> None:
    """``--gen-tokens``: how many tokens the command generates greedily (``help``: of what)."""
    parser.add_argument("--gen-tokens", type=int, default=default, help=help)


# The counts the add_*_arg options above define, checked by check_common where a command has them.
RUN_COUNTS = (
    ("--batch-size", "the batch size"),
    ("--n-boot", "the number of bootstrap resamples"),
    ("--gen-tokens", "the number of generated tokens"),
)


def add_model_args(
    parser: argparse.ArgumentParser,
    *,
    default_out: Path | None = None,
    out: bool = True,
    default_n: int | None = None,
    progress: bool = True,
) -> None:
    """The shared options of every model command (model, pairs, out, n, sample, seed,
    device, dtype, allow-pickle, quiet); ``--out`` is required unless a ``default_out``
    is given, and left out with ``out=False``; ``--quiet`` is left out with
    ``progress=False`` (a command that shows no progress)."""
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
    if out:
        add_out_arg(parser, default=default_out)
    parser.add_argument(
        "--n",
        type=int,
        default=default_n,
        help="use the first n pairs (--sample: n pairs drawn with --seed) "
        + (f"(default: {default_n})" if default_n is not None else "(default: all)"),
    )
    parser.add_argument(
        "--sample",
        action="store_true",
        help="draw the --n pairs at random with --seed (in file order) instead of the first n",
    )
    add_seed_arg(parser, "seed for --sample and the statistics")
    parser.add_argument(
        "--device",
        default=AUTO_DEVICE,
        help="torch device: cpu, cuda, cuda:N or mps (default: auto, cuda when a GPU is "
        "visible, else cpu)",
    )
    parser.add_argument(
        "--dtype", default="float32", choices=DTYPES, help="weights and activations dtype"
    )
    parser.add_argument(
        "--allow-pickle",
        action="store_true",
        help="load weights stored only as pickles (pytorch_model.bin, .pt); unpickling can run "
        "arbitrary code, so only for files you trust (default: refuse them)",
    )
    if progress:
        add_quiet_arg(parser)


def print_lines(lines: Iterable[str]) -> None:
    """A command's header or summary, a line each, to stdout."""
    for line in lines:
        print(line)


def print_written(paths: Iterable[Path]) -> None:
    """``wrote PATH`` for every file a command wrote, to stdout."""
    for path in paths:
        print(f"wrote {path}")


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
    import torch

    from patching.loading import check_device

    check_count(args.n, "--n", "the number of pairs")
    for option, what in RUN_COUNTS:
        check_count(getattr(args, option.removeprefix("--").replace("-", "_"), None), option, what)
    if getattr(args, "sample", False) and args.n is None:
        raise OptionError("--sample draws --n pairs at random; add --n N or drop --sample")
    if args.device == AUTO_DEVICE:
        args.device = "cuda" if torch.cuda.is_available() else "cpu"
    args.device = check_device(args.device)
