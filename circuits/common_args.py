"""Options shared by the subcommands: model, pairs, output, sampling, device."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

import torch

from patching.model import HookedModel, load_model
from patching.pairs import PromptPair, builtin_pairs, read_pairs

ORGANISM = "organism"


def add_model_args(parser: argparse.ArgumentParser, *, default_out: Path | None = None) -> None:
    """The shared options; ``--out`` is required unless a ``default_out`` is given."""
    parser.add_argument(
        "--model",
        default=ORGANISM,
        help="hub name, local Hugging Face directory, or .gguf file; default: the built-in "
        "model organism (built and cached on first use)",
    )
    parser.add_argument(
        "--pairs",
        type=Path,
        default=None,
        help="JSONL/CSV prompt pairs (harmful, control, category); default: the organism's "
        "own pairs for the organism, the built-in set otherwise",
    )
    parser.add_argument(
        "--out",
        type=Path,
        default=default_out,
        required=default_out is None,
        help="output directory" + (f" (default: ./{default_out})" if default_out else ""),
    )
    parser.add_argument("--n", type=int, default=None, help="use n pairs (default: all)")
    parser.add_argument("--seed", type=int, default=0, help="seed for sampling and statistics")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument(
        "--dtype", default="float32", choices=["float32", "float64", "bfloat16", "float16"]
    )


def resolve_model(args: argparse.Namespace) -> tuple[HookedModel, Path | None]:
    """Load ``--model``; for the organism also return its directory (for its pairs)."""
    if args.model == ORGANISM:
        from circuits.organism import organism_dir

        directory = organism_dir()
        return load_model(directory, device=args.device, dtype=args.dtype), directory
    return load_model(args.model, device=args.device, dtype=args.dtype), None


def resolve_pairs(args: argparse.Namespace, organism: Path | None) -> list[PromptPair]:
    """``--pairs`` if given, else the organism's pairs or the built-in set; ``--n`` applied."""
    if args.pairs is not None:
        return read_pairs(args.pairs, n=args.n, seed=args.seed if args.n else None)
    if organism is not None:
        return read_pairs(organism / "pairs.jsonl", n=args.n)
    return builtin_pairs(args.n)


def describe(model: HookedModel, pairs: list[Any]) -> str:
    return (
        f"{model.name}: {model.architecture}, {model.n_layers} layers x {model.n_heads} heads "
        f"({model.n_kv_heads} KV), {len(pairs)} pairs"
    )
