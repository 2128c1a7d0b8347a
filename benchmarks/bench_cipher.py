"""Benchmark: cipher contrast (3 forwards a pair) vs per-head interchange on the same pairs.

Cipher contrast maps the cipher-sensitive heads from three DLA passes per pair (plain
harmful, cipher harmful, control: :func:`attribution.dla.prompts_dla`, the part of
:func:`circuits.cipher.cipher_contrast` that ranks heads), whatever the number of heads
(``docs/science.md#cipher-contrast``). Per-head interchange
(:func:`attribution.interchange.interchange_test`, exact, every head) patches every head
on every pair. The ratio is interchange time over contrast time. Each timing is the best
of ``--repeats`` runs.

    OMP_WAIT_POLICY=PASSIVE .venv/bin/python benchmarks/bench_cipher.py --n 16
    OMP_WAIT_POLICY=PASSIVE .venv/bin/python benchmarks/bench_cipher.py --model qwen --n 8
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
from tqdm.auto import tqdm

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
torch.set_flush_denormal(True)

from attribution.dla import prompts_dla  # noqa: E402
from attribution.interchange import interchange_test  # noqa: E402
from attribution.refusal_tokens import refusal_token_ids  # noqa: E402
from benchmarks.bench_directions import best, print_table  # noqa: E402
from circuits.organism import generate_pairs  # noqa: E402
from patching.chat import format_chat  # noqa: E402
from patching.model import HookedModel  # noqa: E402
from patching.prompts import Cipher, PromptPair  # noqa: E402


def contrast(
    model: HookedModel, pairs: list[PromptPair], cipher: list[PromptPair], size: int
) -> None:
    """The three DLA passes of cipher contrast."""
    tok = model.tokenizer
    ids = refusal_token_ids(tok)
    control = [format_chat(tok, p.control) for p in pairs]
    plain = [format_chat(tok, p.harmful) for p in pairs]
    coded = [format_chat(tok, p.harmful) for p in cipher]
    with tqdm(disable=True) as bar:
        _, answers = prompts_dla(model, control, ids, None, size, bar)
        prompts_dla(model, plain, ids, answers, size, bar)
        prompts_dla(model, coded, ids, answers, size, bar)


def cipher_pairs(name: str, pairs: list[PromptPair]) -> list[PromptPair]:
    """The organism's own ROT13 variant of its first pairs; a seeded cipher for a real model."""
    if name.startswith("organism"):
        return generate_pairs(len(pairs), 0, "cipher")
    return Cipher.from_seed(0).encode_pairs(pairs)


def bench(name: str, model: HookedModel, pairs: list[PromptPair], args: argparse.Namespace) -> str:
    cipher = cipher_pairs(name, pairs)
    contrast(model, pairs, cipher, args.batch_size)  # warm-up
    fast = best(lambda: contrast(model, pairs, cipher, args.batch_size), args.repeats)
    slow = best(lambda: interchange_test(model, pairs, progress=False), args.repeats)
    heads = model.n_layers * model.n_heads
    return f"| {name} | {len(pairs)} | {heads} | {fast:.3f} | {slow:.3f} | {slow / fast:.1f} |"


def main() -> None:
    columns = ["model", "pairs", "heads", "cipher contrast s", "per-head interchange s"]
    print_table(__doc__.splitlines()[0], [*columns, "interchange / contrast"], bench)


if __name__ == "__main__":
    main()
