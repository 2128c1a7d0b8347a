"""Benchmark: direction extraction vs a plain batched forward over the same prompts.

Directions need one forward per prompt (``docs/science.md#directions-and-steering``):
:func:`attribution.directions.extract_directions` reads every block's input at
``t_inst`` and ``t_post_inst`` in one padded batched pass per batch. The reference
is the cheapest thing that does the same forward work: the same prompts, in the same
length-sorted batches, left-padded, through ``model.bridge(tokens)`` with nothing
captured. The ratio is the plain forward's time over the extraction's (goal >= 0.90,
i.e. extraction at 90% of the plain forward's speed or better). Each timing is the
best of ``--repeats`` runs.

    OMP_WAIT_POLICY=PASSIVE .venv/bin/python benchmarks/bench_directions.py
    OMP_WAIT_POLICY=PASSIVE .venv/bin/python benchmarks/bench_directions.py --model qwen

``--model organism`` (default) uses the organism and its pairs; ``qwen`` the real aligned
model on disk (``patching.bundled.qwen_coder_gguf()``) with the built-in pairs; both
when ``--model all`` (Qwen skipped with a note when absent).
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from collections.abc import Callable
from pathlib import Path

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
torch.set_flush_denormal(True)

from attribution.directions import extract_directions  # noqa: E402
from patching.batching import left_padded, length_batches  # noqa: E402
from patching.chat import ChatPrompt, format_chat  # noqa: E402
from patching.loading import load_model  # noqa: E402
from patching.model import HookedModel  # noqa: E402
from patching.prompts import PromptPair, builtin_pairs, read_pairs  # noqa: E402


def plain_forward(model: HookedModel, prompts: list[ChatPrompt], batch_size: int) -> None:
    tokens = [p.tokens.to(model.device) for p in prompts]
    with torch.no_grad():
        for idx in length_batches([len(t) for t in tokens], batch_size):
            padded, _, extra = left_padded([tokens[i] for i in idx])
            model.bridge(padded, **extra)


def best(fn, repeats: int) -> float:
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return min(times)


def bench(name: str, model: HookedModel, pairs: list[PromptPair], args: argparse.Namespace) -> str:
    harmful = [format_chat(model.tokenizer, p.harmful) for p in pairs]
    harmless = [format_chat(model.tokenizer, p.control) for p in pairs]
    everything = [*harmful, *harmless]
    plain_forward(model, everything, args.batch_size)  # warm-up
    plain = best(lambda: plain_forward(model, everything, args.batch_size), args.repeats)
    extract = best(
        lambda: extract_directions(model, harmful, harmless, batch_size=args.batch_size),
        args.repeats,
    )
    ratio = plain / extract
    goal = "met" if ratio >= 0.9 else "NOT met"
    return (
        f"| {name} | {len(everything)} | {model.n_layers} | {plain:.3f} | {extract:.3f} | "
        f"{ratio:.2f} ({goal}) |"
    )


Bench = Callable[[str, HookedModel, list[PromptPair], argparse.Namespace], str]


def print_table(description: str, columns: list[str], bench: Bench, variant: str = "exact") -> None:
    """Parse the shared options, run ``bench`` on the organism and/or Qwen, print a table row
    each (shared with ``bench_guard.py``, which times the beliefs organism)."""
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--model", choices=("organism", "qwen", "all"), default="organism")
    parser.add_argument("--n", type=int, default=24, help="pairs (each gives two prompts)")
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    rows = ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
    if args.model in ("organism", "all"):
        from circuits.organism import organism_dir

        directory = organism_dir(variant=variant)
        pairs = read_pairs(directory / "pairs.jsonl", n=args.n)
        name = "organism" if variant == "exact" else f"organism ({variant})"
        rows.append(bench(name, load_model(directory), pairs, args))
    if args.model in ("qwen", "all"):
        from patching.bundled import qwen_coder_gguf

        path = qwen_coder_gguf(required=False)
        if path is None:
            rows.append("| qwen | " + "- | " * (len(columns) - 2) + "absent: not run |")
        else:
            rows.append(bench("Qwen2.5-Coder-0.5B", load_model(path), builtin_pairs(args.n), args))
    for row in rows:
        print(row)


def main() -> None:
    columns = ["model", "prompts", "layers", "plain forward s", "extraction s"]
    print_table(__doc__.splitlines()[0], [*columns, "plain / extraction"], bench)


if __name__ == "__main__":
    main()
