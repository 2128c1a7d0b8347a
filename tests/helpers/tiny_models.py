"""Tiny randomly initialised chat models, built and saved locally (no hub).

Each architecture the toolkit supports gets a two-to-three layer model with a
byte-level BPE tokenizer trained here on a few sentences, a chat template, and
weights drawn from a fixed seed. Tests load them through the same
``load_model(directory)`` path users take.
"""

from __future__ import annotations

from pathlib import Path

import torch
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers
from transformers import (
    Gemma2Config,
    Gemma2ForCausalLM,
    GPT2Config,
    GPT2LMHeadModel,
    LlamaConfig,
    LlamaForCausalLM,
    PreTrainedTokenizerFast,
    Qwen2Config,
    Qwen2ForCausalLM,
)

from patching.prompts import builtin_pairs

SPECIALS = ["<|bos|>", "<|eos|>", "<|user|>", "<|assistant|>", "<|end|>", "<|system|>"]
CHAT_TEMPLATE = (
    "{{ bos_token }}{% for m in messages %}<|{{ m['role'] }}|>{{ m['content'] }}<|end|>"
    "{% endfor %}{% if add_generation_prompt %}<|assistant|>{% endif %}"
)
VOCAB = 512
ARCHITECTURES = ("qwen2", "llama", "gpt2", "gemma2")


def build_tokenizer(
    out: Path, *, add_bos: bool = False, template: bool = True
) -> PreTrainedTokenizerFast:
    """Train a byte-level BPE on the built-in pairs plus refusal words, and save it.

    ``add_bos=True`` adds a post-processor that prepends BOS on every encode (as
    Llama's tokenizer does), the setting in which a BOS-emitting template doubles BOS.
    """
    corpus = [p.harmful + " " + p.control for p in builtin_pairs()]
    corpus += ["I cannot help with that. Sorry, as an AI I'm unable. Unfortunately I can't."] * 5
    corpus += ["Sure, here is how. Certainly! Perhaps. Generally speaking."] * 5
    tk = Tokenizer(models.BPE())
    tk.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tk.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=VOCAB,
        special_tokens=SPECIALS,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
    )
    tk.train_from_iterator(corpus, trainer)
    if add_bos:
        bos = tk.token_to_id("<|bos|>")
        tk.post_processor = processors.TemplateProcessing(
            single="<|bos|> $A", pair="<|bos|> $A <|bos|> $B", special_tokens=[("<|bos|>", bos)]
        )
    tok = PreTrainedTokenizerFast(
        tokenizer_object=tk, bos_token="<|bos|>", eos_token="<|eos|>", pad_token="<|eos|>"
    )
    if template:
        tok.chat_template = CHAT_TEMPLATE
    tok.save_pretrained(str(out))
    return PreTrainedTokenizerFast.from_pretrained(str(out))


def build_model(arch: str, out: Path, *, seed: int = 0, n_layers: int = 3) -> Path:
    """Save a tiny random ``arch`` model with its tokenizer into ``out``."""
    out.mkdir(parents=True, exist_ok=True)
    tok = build_tokenizer(out)
    vocab = len(tok)
    common = {
        "vocab_size": vocab,
        "bos_token_id": tok.bos_token_id,
        "eos_token_id": tok.eos_token_id,
    }
    torch.manual_seed(seed)
    if arch == "qwen2":
        model: torch.nn.Module = Qwen2ForCausalLM(
            Qwen2Config(
                hidden_size=64,
                intermediate_size=128,
                num_hidden_layers=n_layers,
                num_attention_heads=4,
                num_key_value_heads=2,
                max_position_embeddings=256,
                tie_word_embeddings=False,
                **common,
            )
        )
    elif arch == "llama":
        model = LlamaForCausalLM(
            LlamaConfig(
                hidden_size=64,
                intermediate_size=128,
                num_hidden_layers=n_layers,
                num_attention_heads=4,
                num_key_value_heads=4,
                max_position_embeddings=256,
                **common,
            )
        )
    elif arch == "gpt2":
        model = GPT2LMHeadModel(
            GPT2Config(n_embd=64, n_layer=n_layers, n_head=4, n_positions=256, **common)
        )
    elif arch == "gemma2":
        model = Gemma2ForCausalLM(
            Gemma2Config(
                hidden_size=64,
                intermediate_size=128,
                num_hidden_layers=n_layers,
                num_attention_heads=4,
                num_key_value_heads=2,
                head_dim=16,
                max_position_embeddings=256,
                **common,
            )
        )
    else:
        raise ValueError(f"unknown architecture {arch}")
    # Random init gives logits too flat to tell heads apart; widen the unembedding.
    with torch.no_grad():
        model.get_output_embeddings().weight.mul_(20.0)
    model.eval().save_pretrained(str(out))
    return out
