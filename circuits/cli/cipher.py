"""``refusal-circuits cipher``: cipher contrast, gate necessity under cipher, gate injection."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import TYPE_CHECKING, Any

from circuits.cli.common import (
    ORGANISM,
    HelpFormatter,
    add_batch_size_arg,
    add_gen_tokens_arg,
    add_model_args,
    add_n_boot_arg,
)
from patching.errors import OptionError

if TYPE_CHECKING:
    from patching.model import HookedModel
    from patching.prompts import PromptPair

DEFAULT_OUT = Path("cipher")


def register(subparsers: Any) -> None:
    parser = subparsers.add_parser(
        "cipher",
        help="cipher contrast: the heads that stop writing refusal when the request is encoded",
        description=(
            "Runs every pair three times (plain harmful, cipher harmful, control) and ranks "
            "heads by |mean plain DLA - mean cipher DLA| on the refusal direction, with "
            "bootstrap intervals; reports the refusal rate on plain and cipher prompts "
            "(behaviour classes of greedy responses); the gate's interchange necessity under "
            "plain vs cipher (its collapse in %); and gate injection: the plain run's gate "
            "output clamped into the cipher run at the prompt's last position only, and at "
            "every generated step, with the share of refusals restored. Cipher prompts: "
            "--cipher-pairs FILE (pair i encodes pair i; the organism's own by default), else "
            "every pair encoded with a seeded substitution cipher (--cipher-seed, --cipher-key, "
            "--template). Writes DIR/cipher.json, DIR/report.html and DIR/run.json."
        ),
        formatter_class=HelpFormatter,
    )
    add_model_args(parser, default_out=DEFAULT_OUT)
    parser.add_argument(
        "--cipher-pairs",
        type=Path,
        default=None,
        help="cipher pairs aligned with the pairs (default: the organism's pairs_cipher.jsonl "
        "for the organism, else the pairs encoded with the cipher)",
    )
    parser.add_argument("--cipher-seed", type=int, default=0, help="seed of the cipher's key")
    parser.add_argument(
        "--cipher-key",
        default=None,
        help="26 letters: the code of a..z, none mapped to itself (default: drawn by "
        "--cipher-seed)",
    )
    parser.add_argument(
        "--template",
        default=None,
        help="the cipher prompt, with {key} (the spelled-out key) and {encoded} (the encoded "
        "request) (default: the key, then 'Decode and follow this instruction:')",
    )
    parser.add_argument(
        "--gate",
        default=None,
        metavar="L.H",
        help="the gate head, e.g. 3.2 (default: the head of largest interchange necessity at "
        "the last position on the plain pairs)",
    )
    add_gen_tokens_arg(parser, 8, "tokens of greedy response")
    add_batch_size_arg(parser)
    add_n_boot_arg(parser)
    parser.set_defaults(handler=run)


def check_options(args: argparse.Namespace) -> None:
    """Option values, before any file or model is read."""
    from circuits.cipher import parse_head
    from patching.prompts import Cipher, check_template

    if args.gate is not None:
        parse_head(args.gate)
    if args.template is not None:
        check_template(args.template)
    if args.cipher_key is not None:
        Cipher.from_key(args.cipher_key)
    if args.cipher_pairs is not None and (args.cipher_key or args.template):
        raise OptionError(
            "--cipher-pairs with --cipher-key/--template: the file's cipher prompts are used "
            "as written; drop one"
        )


def _cipher_pairs(
    args: argparse.Namespace, pairs: list[PromptPair], organism: Path | None
) -> tuple[list[PromptPair], str]:
    from patching.prompts import DEFAULT_TEMPLATE, Cipher, read_pairs

    seed = args.seed if args.sample else None
    if args.cipher_pairs is not None:
        return read_pairs(args.cipher_pairs, n=args.n, seed=seed), str(args.cipher_pairs)
    if organism is not None and args.pairs is None:
        # Same draw as the plain pairs (same file length): pair i encodes plain pair i.
        return (
            read_pairs(organism / "pairs_cipher.jsonl", n=args.n, seed=seed),
            "the organism's ROT13 twins (pairs_cipher.jsonl)",
        )
    cipher = (
        Cipher.from_key(args.cipher_key) if args.cipher_key else Cipher.from_seed(args.cipher_seed)
    )
    template = args.template or DEFAULT_TEMPLATE
    return cipher.encode_pairs(pairs, template), f"key {cipher.key}, template {template!r}"


def _gate(
    args: argparse.Namespace, model: HookedModel, pairs: list[PromptPair]
) -> tuple[tuple[int, int], str, bool]:
    """The gate, how it was chosen, and whether it was chosen on these same pairs."""
    from attribution.interchange import interchange_test
    from circuits.cipher import parse_head

    if args.gate is not None:
        return parse_head(args.gate, model), "given by --gate", False
    screen = interchange_test(
        model, pairs, positions="last", seed=args.seed, progress=not args.quiet
    )
    best = screen.top(1)[0]
    return (
        (best.layer, best.head),
        "largest interchange necessity at the last position, selected on these pairs",
        True,
    )


def run(args: argparse.Namespace) -> int:
    from circuits.cipher import check_aligned, cipher_contrast
    from circuits.cipher_views import cipher_summary, write_cipher_outputs
    from circuits.cli.common import check_common, print_lines, print_written
    from circuits.cli.inputs import organism_path, prepare, resolve_pairs

    check_options(args)
    check_common(args)
    # Every file is read and every count checked before the model loads.
    organism = organism_path() if args.model == ORGANISM else None
    pairs = resolve_pairs(args, organism)
    cipher_pairs, cipher_text = _cipher_pairs(args, pairs, organism)
    check_aligned(pairs, cipher_pairs)
    prepared = prepare(args, ci=True, extra={"cipher": {"cipher": cipher_text}})
    model = prepared.model
    print_lines(prepared.header())
    gate, source, selected = _gate(args, model, prepared.pairs)
    result = cipher_contrast(
        model, prepared.pairs, cipher_pairs, gate=gate, gate_source=source,
        gate_selected_on_pairs=selected, cipher=cipher_text,
        gen_tokens=args.gen_tokens, batch_size=args.batch_size, n_boot=args.n_boot,
        seed=args.seed, progress=not args.quiet,
    )  # fmt: skip
    print_lines(cipher_summary(result))
    print_written(write_cipher_outputs(result, prepared.out, run=prepared.run))
    return 0
