"""Benchmark: cipher contrast (3 forwards a pair) vs per-head interchange on the same pairs.

Cipher contrast maps the cipher-sensitive heads from three DLA passes per pair (plain
harmful, cipher harmful, control: :func:`attribution.dla.prompts_dla`, the part of
:func:`circuits.cipher.cipher_contrast` that ranks heads), whatever the number of heads
(``docs/science.md#cipher-contrast``). Per-head interchange
(:func:`attribution.interchange.interchange_test`, exact, every head) patches every head
on every pair. The ratio is interchange time over contrast time. Each timing is the best
of ``--repeats`` runs.

    OMP_WAIT_POLICY=PASSIVE .venv/bin/python benchmarks/bench_cipher.py
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
from benchmarks.bench_directions import best  # noqa: E402
from patching.chat import format_chat  # noqa: E402
from patching.loading import load_model  # noqa: E402
from patching.model import HookedModel  # noqa: E402
from patching.prompts import Cipher, PromptPair, builtin_pairs, read_pairs  # noqa: E402


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


def bench(
    name: str,
    model: HookedModel,
    pairs: list[PromptPair],
    cipher: list[PromptPair],
    args: argparse.Namespace,
) -> str:
    contrast(model, pairs, cipher, args.batch_size)  # warm-up
    fast = best(lambda: contrast(model, pairs, cipher, args.batch_size), args.repeats)
    slow = best(lambda: interchange_test(model, pairs, progress=False), args.repeats)
    heads = model.n_layers * model.n_heads
    return f"| {name} | {len(pairs)} | {heads} | {fast:.3f} | {slow:.3f} | {slow / fast:.1f} |"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", choices=("organism", "qwen", "all"), default="organism")
    parser.add_argument("--n", type=int, default=16, help="pairs")
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    rows = [
        "| model | pairs | heads | cipher contrast s | per-head interchange s | "
        "interchange / contrast |",
        "|---|---|---|---|---|---|",
    ]
    if args.model in ("organism", "all"):
        from circuits.organism import organism_dir

        directory = organism_dir()
        pairs = read_pairs(directory / "pairs.jsonl", n=args.n)
        cipher = read_pairs(directory / "pairs_cipher.jsonl", n=args.n)
        rows.append(bench("organism", load_model(directory), pairs, cipher, args))
    if args.model in ("qwen", "all"):
        from patching.bundled import qwen_coder_gguf

        path = qwen_coder_gguf(required=False)
        if path is None:
            rows.append("| qwen | - | - | - | - | absent: not run |")
        else:
            pairs = builtin_pairs(args.n)
            cipher = Cipher.from_seed(0).encode_pairs(pairs)
            rows.append(bench("Qwen2.5-Coder-0.5B", load_model(path), pairs, cipher, args))
    for row in rows:
        print(row)


if __name__ == "__main__":
    main()
