"""The inputs every model command works on, checked before the work starts.

:func:`prepare` runs the checks listed in :mod:`circuits.cli.common` in order,
loads the model and writes the run record; the commands' handlers import this
module (it imports torch), so building the parser does not.
"""

from __future__ import annotations

import argparse
import random
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from attribution.statistics import check_enough_pairs, check_enough_pairs_for_ci
from circuits.checks import ModelChecks, check_model
from circuits.cli.common import ORGANISM, check_common, check_output_dir
from circuits.provenance import run_record, write_run_record
from patching.checks import check_distinct_texts, check_pairs_fit
from patching.errors import PromptFileError
from patching.loading import load_model
from patching.model import HookedModel
from patching.prompts import PromptPair, builtin_pairs, read_pairs


def organism_path(variant: str = "exact") -> Path:
    """The built-in organism's directory (built into the cache on first use)."""
    from circuits.organism import organism_dir

    return organism_dir(variant=variant)


def resolve_model(
    args: argparse.Namespace, variant: str = "exact"
) -> tuple[HookedModel, Path | None]:
    """Load ``--model``; for the organism (its ``variant``) also return its directory."""
    allow_pickle = bool(getattr(args, "allow_pickle", False))
    if args.model == ORGANISM:
        directory = organism_path(variant)
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
    """``--pairs`` if given, else the organism's pairs or the built-in set, with the one
    ``--n`` rule: the first n pairs, or n drawn with ``--seed`` under ``--sample``."""
    seed = args.seed if getattr(args, "sample", False) else None
    source = pairs_source(args, organism)
    if source != "builtin":
        return read_pairs(source, n=args.n, seed=seed)
    if seed is None:
        return builtin_pairs(args.n)
    pairs = builtin_pairs()
    if args.n > len(pairs):
        raise PromptFileError(
            f"the built-in set has {len(pairs)} pairs, fewer than --n {args.n}; "
            f"pass --n {len(pairs)} or less"
        )
    chosen = sorted(random.Random(seed).sample(range(len(pairs)), args.n))
    return [pairs[i] for i in chosen]


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
    variant: str = "exact",
) -> Prepared:
    """Check every input, load the model, write ``DIR/run.json`` (module docstring).

    Args:
        significance: the level p values are compared with; refuse too few pairs to
            reach it (:func:`attribution.statistics.check_enough_pairs`).
        ci: the command reports bootstrap intervals; refuse a single pair.
        extra_tokens: positions the command appends after each prompt.
        extra: more fields for the run record.
        variant: the organism variant ``--model organism`` means (the ``cliff`` command's
            default is the thinking organism).
    """
    check_common(args)
    organism = organism_path(variant) if args.model == ORGANISM else None
    pairs = resolve_pairs(args, organism)
    check_distinct_texts(pairs)
    if ci:
        check_enough_pairs_for_ci(len(pairs))
    if significance is not None:
        check_enough_pairs(len(pairs), significance)
    out = check_output_dir(args.out)
    model, _ = resolve_model(args, variant)
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
