"""Benchmark: Latent Guard scoring vs a plain batched forward over the same prompts.

Scoring a prompt needs one forward pass (``docs/science.md#latent-guard``):
:meth:`attribution.latent_guard.LatentGuard.score` reads the residual stream at
``t_inst`` at the guard's layers in one padded batched pass per batch
(:func:`patching.residuals.residual_streams`), then takes cosines. The reference is
the same prompts in the same length-sorted, left-padded batches through
``model.bridge(tokens)`` with nothing captured (``bench_directions.plain_forward``).
The ratio is the plain forward's time over the guard's (goal >= 0.90). Each timing
is the best of ``--repeats`` runs.

    OMP_WAIT_POLICY=PASSIVE .venv/bin/python benchmarks/bench_guard.py
    OMP_WAIT_POLICY=PASSIVE .venv/bin/python benchmarks/bench_guard.py --model qwen
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
torch.set_flush_denormal(True)

from attribution.latent_guard import LatentGuard  # noqa: E402
from benchmarks.bench_directions import best, plain_forward, print_table  # noqa: E402
from patching.chat import format_chat  # noqa: E402
from patching.model import HookedModel  # noqa: E402
from patching.prompts import PromptPair  # noqa: E402


def bench(name: str, model: HookedModel, pairs: list[PromptPair], args: argparse.Namespace) -> str:
    harmful = [format_chat(model.tokenizer, p.harmful) for p in pairs]
    harmless = [format_chat(model.tokenizer, p.control) for p in pairs]
    everything = [*harmful, *harmless]
    guard = LatentGuard.fit(model, harmful, harmless, batch_size=args.batch_size)
    plain_forward(model, everything, args.batch_size)  # warm-up
    plain = best(lambda: plain_forward(model, everything, args.batch_size), args.repeats)
    scored = best(lambda: guard.score(everything, batch_size=args.batch_size), args.repeats)
    ratio = plain / scored
    goal = "met" if ratio >= 0.9 else "NOT met"
    return (
        f"| {name} | {len(everything)} | {len(guard.layers)} | {plain:.3f} | {scored:.3f} | "
        f"{ratio:.2f} ({goal}) |"
    )


def main() -> None:
    columns = ["model", "prompts", "layers read", "plain forward s", "guard score s"]
    print_table(__doc__.splitlines()[0], [*columns, "plain / guard"], bench, variant="beliefs")


if __name__ == "__main__":
    main()
