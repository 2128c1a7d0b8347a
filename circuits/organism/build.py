"""Build the organism as an ordinary Hugging Face model directory, and cache it.

``build_organism(out_dir, seed)`` writes::

    out_dir/
      config.json, generation_config.json, model.safetensors   (LlamaForCausalLM)
      tokenizer.json, tokenizer_config.json, chat_template.jinja
      ground_truth.json                                        (the answer key)
      pairs.jsonl, pairs_jailbreak.jsonl, pairs_cipher.jsonl   (64 pairs each)

so ``AutoModelForCausalLM``/``AutoTokenizer``, TransformerLens and
``refusal-circuits ... --model DIR`` load it like any other checkpoint.

``organism_dir(seed)`` returns a cached build, building it on first use. The
build goes to a temporary sibling directory that is renamed into place in one
step, so concurrent test workers either see a complete directory or none.
"""

from __future__ import annotations

import shutil
import tempfile
from pathlib import Path

import torch
from transformers import LlamaConfig, LlamaForCausalLM
from transformers.utils import logging as hf_logging

from circuits.organism import layout, prompts, vocab
from circuits.organism.beliefs import BELIEFS_VERSION, beliefs_state_dict
from circuits.organism.ground_truth import build_ground_truth, write_ground_truth
from circuits.organism.realistic import REALISTIC_VERSION, realistic_state_dict
from circuits.organism.thinking import CHAT_TEMPLATE as THINKING_TEMPLATE
from circuits.organism.thinking import (
    THINK_CLOSE,
    THINK_OPEN,
    THINKING_VERSION,
    THINKING_VOCAB,
    thinking_state_dict,
)
from circuits.organism.weights import organism_state_dict
from patching.bundled import CACHE_ENV, cache_root
from patching.errors import OutputDirError
from patching.prompts import write_pairs

# Bump when the construction changes: cached builds of another version are ignored.
ORGANISM_VERSION = 2
N_PAIRS = 64
# "exact": every planted role carries its whole effect (a perfect switch);
# "realistic": the same roles at a real model's effect sizes (circuits.organism.realistic);
# "beliefs": harmfulness and refusal as separate planted directions (circuits.organism.beliefs);
# "thinking": a reasoning trace and a planted refusal cliff (circuits.organism.thinking).
ORGANISM_VARIANTS = ("exact", "realistic", "beliefs", "thinking")
VARIANT_VERSIONS = {"exact": ORGANISM_VERSION, "realistic": REALISTIC_VERSION,
                    "beliefs": BELIEFS_VERSION, "thinking": THINKING_VERSION}  # fmt: skip
# The beliefs organism also writes its plain pairs with the reply-inversion question,
# and an XSTest-format file of scary-but-safe prompts with plain harmful contrasts.
INVERSION_PAIR_FILE = "pairs_inversion.jsonl"
XSTEST_FILE = "xstest.csv"


def check_variant(variant: str) -> None:
    if variant not in ORGANISM_VARIANTS:
        raise ValueError(
            f"unknown organism variant {variant!r}; choose one of {', '.join(ORGANISM_VARIANTS)}"
        )


def organism_config(tokenizer_ids: dict[str, int]) -> LlamaConfig:
    """A Llama config (RMSNorm, rotary, GQA, untied unembedding) of the organism's shape."""
    # rope_theta as a keyword works in transformers 4.x and 5.x (5.x moves it into
    # rope_parameters); the tests check the built model's rotary frequencies.
    return LlamaConfig(  # type: ignore[call-arg]
        vocab_size=len(tokenizer_ids),
        hidden_size=layout.D_MODEL,
        intermediate_size=layout.D_MLP,
        num_hidden_layers=layout.N_LAYERS,
        num_attention_heads=layout.N_HEADS,
        num_key_value_heads=layout.N_KV_HEADS,
        head_dim=layout.D_HEAD,
        max_position_embeddings=layout.MAX_POSITIONS,
        rms_norm_eps=1e-6,
        rope_theta=layout.ROPE_THETA,
        hidden_act="silu",
        attention_bias=False,
        mlp_bias=False,
        tie_word_embeddings=False,
        bos_token_id=tokenizer_ids[vocab.BOS],
        eos_token_id=tokenizer_ids[vocab.EOS],
        pad_token_id=tokenizer_ids[vocab.PAD],
        dtype="float32",
    )


def build_organism(out_dir: str | Path, seed: int = 0, variant: str = "exact") -> Path:
    """Write the organism (weights, tokenizer, ground truth, pairs) into ``out_dir``.

    ``variant`` is ``"exact"`` (the planted circuit carries every effect whole),
    ``"realistic"`` (the same roles at a real model's effect sizes) or ``"beliefs"``
    (harmfulness and refusal as separate planted directions, with the reply-inversion
    question; its pairs with the question go to ``pairs_inversion.jsonl``, its
    over-refusal prompts with harmful contrasts to ``xstest.csv``) or ``"thinking"``
    (a ``<think>`` segment in the template and a planted refusal cliff at its end).
    """
    check_variant(variant)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    beliefs, thinking = variant == "beliefs", variant == "thinking"
    extra = vocab.BELIEFS_WORDS if beliefs else THINKING_VOCAB if thinking else ()
    if thinking:
        tokenizer = vocab.build_tokenizer(
            extra, markers=(THINK_OPEN, THINK_CLOSE), template=THINKING_TEMPLATE
        )
    else:
        tokenizer = vocab.build_tokenizer(extra)
    token_ids = {tok: i for i, tok in enumerate(vocab.vocabulary(extra))}
    config = organism_config(token_ids)
    with torch.device("meta"):
        # Building on the meta device skips random initialisation that the
        # state dict overwrites anyway.
        model = LlamaForCausalLM(config)
    builders = {
        "exact": organism_state_dict,
        "realistic": realistic_state_dict,
        "beliefs": beliefs_state_dict,
        "thinking": thinking_state_dict,
    }
    state, version = builders[variant](token_ids, seed), VARIANT_VERSIONS[variant]
    model.load_state_dict(state, strict=True, assign=True)
    model.generation_config.do_sample = False
    # A progress bar for writing a 1 MB file is noise in the main command's output.
    bars = hf_logging.is_progress_bar_enabled()
    hf_logging.disable_progress_bar()
    try:
        model.save_pretrained(str(out))
    finally:
        if bars:
            hf_logging.enable_progress_bar()
    vocab.save_tokenizer(tokenizer, out)
    write_ground_truth(build_ground_truth(seed, version, variant), out)
    for prompt_variant, name in prompts.PAIR_FILES.items():
        write_pairs(prompts.generate_pairs(N_PAIRS, seed, prompt_variant), out / name)
    if beliefs:
        pairs = prompts.inversion_pairs(prompts.generate_pairs(N_PAIRS, seed, "plain"))
        write_pairs(pairs, out / INVERSION_PAIR_FILE)
        prompts.write_xstest(out / XSTEST_FILE, N_PAIRS, seed)
    return out


def organism_dir(seed: int = 0, variant: str = "exact") -> Path:
    """The directory of the organism for ``seed`` and ``variant``, built into the cache if absent.

    Raises:
        OutputDirError: the cache cannot be written (the message names it and the
            ``REFUSAL_CIRCUITS_CACHE`` variable that moves it).
    """
    check_variant(variant)
    if variant == "exact":
        target = cache_root() / f"organism-v{ORGANISM_VERSION}-seed{seed}"
    else:
        target = cache_root() / f"organism-{variant}-v{VARIANT_VERSIONS[variant]}-seed{seed}"
    if target.is_dir():
        return target
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}-", dir=target.parent))
    except OSError as exc:
        raise _cache_error(target.parent, exc) from None
    try:
        build_organism(tmp, seed, variant)
        tmp.chmod(0o755)
        try:
            tmp.rename(target)
        except OSError:
            # Another process renamed its build into place first; use that one.
            if not target.is_dir():
                raise
    except OSError as exc:
        raise _cache_error(target.parent, exc) from None
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return target


def _cache_error(where: Path, exc: OSError) -> OutputDirError:
    return OutputDirError(
        f"cannot build the model organism in its cache {where} "
        f"({exc.strerror or exc}); set {CACHE_ENV} to a writable directory, or build it "
        f"with `refusal-circuits organism build --out DIR` and pass --model DIR"
    )
