"""Benchmark: cipher contrast (3 forwards a pair) vs per-head interchange on the same pairs.

Cipher contrast maps the cipher-sensitive heads from three DLA passes per pair (plain
harmful, cipher harmful, control: :func:`attribution.dla.prompts_dla`, the part of
:func:`circuits.cipher.cipher_contrast` that ranks heads), whatever the number of heads
(``docs/science.md#cipher-contrast``). Per-head interchange
(:func:`attribution.interchange.interchange_test`, exact, every head) patches every head
on every pair. The ratio is interchange time over contrast time. Each timing is the best
of ``--repeats`` runs.

Both methods run on the same pairs in the same process, so the row also says what each
ranks first: the contrast's top heads by ``|mean plain - mean cipher|`` DLA, interchange's
by ``|necessity|`` on the plain pairs, how many of the top 10 they share and the Spearman
correlation of the two magnitudes over every head. They answer different questions (which
heads the cipher changes vs which heads the plain refusal needs), so agreement is a
finding, not a check.

    OMP_WAIT_POLICY=PASSIVE .venv/bin/python benchmarks/bench_cipher.py --n 16
    .venv/bin/python benchmarks/bench_cipher.py --model qwen --n 4 --repeats 1
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

import numpy as np
import torch
from tqdm.auto import tqdm

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
torch.set_flush_denormal(True)

from attribution.dla import prompts_dla  # noqa: E402
from attribution.interchange import interchange_test  # noqa: E402
from attribution.refusal_tokens import refusal_token_ids  # noqa: E402
from attribution.statistics import top_heads  # noqa: E402
from benchmarks.bench_directions import best, print_table  # noqa: E402
from circuits.ablation_compare import spearman  # noqa: E402
from circuits.organism import generate_pairs  # noqa: E402
from patching.chat import format_chat  # noqa: E402
from patching.model import HookedModel  # noqa: E402
from patching.prompts import Cipher, PromptPair  # noqa: E402

TOP = 10


def contrast(
    model: HookedModel, pairs: list[PromptPair], cipher: list[PromptPair], size: int
) -> np.ndarray:
    """The three DLA passes of cipher contrast; the mean plain - cipher DLA per head."""
    tok = model.tokenizer
    ids = refusal_token_ids(tok)
    control = [format_chat(tok, p.control) for p in pairs]
    plain = [format_chat(tok, p.harmful) for p in pairs]
    coded = [format_chat(tok, p.harmful) for p in cipher]
    with tqdm(disable=True) as bar:
        _, answers = prompts_dla(model, control, ids, None, size, bar)
        plain_dla, _ = prompts_dla(model, plain, ids, answers, size, bar)
        coded_dla, _ = prompts_dla(model, coded, ids, answers, size, bar)
    return (plain_dla.heads - coded_dla.heads).mean(dim=0).numpy()


def cipher_pairs(name: str, pairs: list[PromptPair]) -> list[PromptPair]:
    """The organism's own ROT13 variant of its first pairs; a seeded cipher for a real model."""
    if name.startswith("organism"):
        return generate_pairs(len(pairs), 0, "cipher")
    return Cipher.from_seed(0).encode_pairs(pairs)


def named(heads: list[tuple[int, int]]) -> str:
    return " ".join(f"L{layer}H{head}" for layer, head in heads)


def bench(name: str, model: HookedModel, pairs: list[PromptPair], args: argparse.Namespace) -> str:
    cipher = cipher_pairs(name, pairs)
    difference = contrast(model, pairs, cipher, args.batch_size)  # warm-up, and the ranking
    fast = best(lambda: contrast(model, pairs, cipher, args.batch_size), args.repeats)
    found = []
    slow = best(lambda: found.append(interchange_test(model, pairs, progress=False)), args.repeats)
    necessity = found[-1].necessity
    by_contrast = top_heads(difference, TOP, by="abs")
    by_interchange = top_heads(necessity, TOP, by="abs")
    shared = len(set(by_contrast) & set(by_interchange))
    rho = spearman(np.abs(difference), np.abs(necessity))
    heads = model.n_layers * model.n_heads
    return (
        f"| {name} | {len(pairs)} | {heads} | {fast:.3f} | {slow:.3f} | {slow / fast:.1f} | "
        f"{named(by_contrast[:5])} | {named(by_interchange[:5])} | {shared}/{TOP} | {rho:.2f} |"
    )


def main() -> None:
    columns = ["model", "pairs", "heads", "cipher contrast s", "per-head interchange s"]
    columns += ["interchange / contrast", "contrast top 5", "interchange top 5 (abs necessity)"]
    columns += [f"shared in top {TOP}", "Spearman, abs difference vs abs necessity"]
    print_table(__doc__.splitlines()[0], columns, bench)


if __name__ == "__main__":
    main()
