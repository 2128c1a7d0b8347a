"""Hooked models: the one adapter between the toolkit and TransformerLens.

Everything above this package talks to a :class:`HookedModel`; nothing above it
imports ``transformer_lens``. A TransformerLens upgrade is therefore a change to
this file, :mod:`patching.loading` (which boots the bridge) and
:mod:`patching.components` (which names hooks) only.

Exact numbers, not just plausible ones
--------------------------------------
A default ``TransformerBridge`` leaves the final norm's gain out of
TransformerLens's own DLA helpers, which silently gives wrong per-head logit
attributions (``docs/dependencies.md#dla-on-a-default-bridge``). This adapter
keeps the Hugging Face weights untouched (so logits equal the original model's to
the last bit) and exposes the final norm's effective gain, bias and kind, which
:mod:`attribution.dla` applies itself. Gemma-2/3 put a norm after each attention block; the adapter
exposes that norm's gain too, so per-head outputs can be mapped through it.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from functools import cached_property
from typing import TYPE_CHECKING, Any, Literal

import torch
from jaxtyping import Float, Int
from torch import Tensor

from patching import compat
from patching.errors import (
    HeadIndexError,
    ModelLoadError,
    UnsupportedArchitectureError,
)
from patching.self_check import EngineCheck

if TYPE_CHECKING:
    from transformer_lens.model_bridge import TransformerBridge
    from transformers import PreTrainedTokenizerBase

NormKind = Literal["RMS", "LN"]

DTYPES: dict[str, torch.dtype] = {
    "float32": torch.float32,
    "float64": torch.float64,
    "bfloat16": torch.bfloat16,
    "float16": torch.float16,
}

# Architectures whose every residual write is hooked in a way the component
# decomposition knows. Anything else still loads, but DLA refuses it rather than
# returning numbers nobody checked (tests hold the identity on each of these).
SUPPORTED_ARCHITECTURES = (
    "LlamaForCausalLM",
    "Qwen2ForCausalLM",
    "Qwen3ForCausalLM",
    "MistralForCausalLM",
    "GPT2LMHeadModel",
    "Gemma2ForCausalLM",
    "Gemma3ForCausalLM",
)

# Gemma's RMSNorm multiplies by (1 + weight), every other supported family by weight.
_ONE_PLUS_WEIGHT_NORMS = ("Gemma2ForCausalLM", "Gemma3ForCausalLM")


@dataclass
class HookedModel:
    """A TransformerLens bridge with its tokenizer and the facts DLA needs.

    Attributes:
        bridge: the ``TransformerBridge`` (HF weights unchanged, no weight folding).
        tokenizer: the model's tokenizer (carries the chat template).
        name: where the model came from (hub name, directory or GGUF file).
    """

    bridge: TransformerBridge
    tokenizer: PreTrainedTokenizerBase
    name: str
    architecture: str = field(init=False)
    engine_check: EngineCheck | None = field(default=None, init=False, repr=False)
    """The engine's self-check on this model (:mod:`patching.self_check`), once it ran."""
    clean_blocks: dict[str, Any] = field(
        default_factory=dict, init=False, repr=False, compare=False
    )
    """Clean passes kept for knockouts of the same prompts (:mod:`circuits.knockout`)."""
    knocked_prefix: Any = field(default=None, init=False, repr=False, compare=False)
    """The last prompt prefix run under a knockout, reused by the next batches of the same
    knockout (:func:`patching.executor.forward_batch`)."""

    def __post_init__(self) -> None:
        cfg = self.bridge.cfg
        self.architecture = str(getattr(cfg, "architecture", None) or "unknown")
        # Parameters are never trained here; gradients (attribution patching) flow
        # from detached embeddings marked requires_grad instead.
        self.bridge.requires_grad_(False)
        self.bridge.eval()
        compat.route_cache_to_attention(self.bridge)

    # -- shape facts -------------------------------------------------------
    @property
    def n_layers(self) -> int:
        return int(self.bridge.cfg.n_layers)

    @property
    def n_heads(self) -> int:
        return int(self.bridge.cfg.n_heads)

    @property
    def n_kv_heads(self) -> int:
        kv = getattr(self.bridge.cfg, "n_key_value_heads", None)
        return int(kv) if kv else self.n_heads

    @property
    def d_model(self) -> int:
        return int(self.bridge.cfg.d_model)

    @property
    def d_head(self) -> int:
        return int(self.bridge.cfg.d_head)

    @property
    def n_ctx(self) -> int | None:
        """Positions the model can attend over (``None`` when the config does not say)."""
        ctx = getattr(self.bridge.cfg, "n_ctx", None)
        return int(ctx) if ctx else None

    @property
    def d_vocab(self) -> int:
        return int(self.bridge.cfg.d_vocab_out)

    @property
    def device(self) -> torch.device:
        return self.bridge.W_U.device

    @property
    def dtype(self) -> torch.dtype:
        return self.bridge.W_U.dtype

    @property
    def norm_kind(self) -> NormKind:
        return "LN" if self.bridge.cfg.normalization_type in ("LN", "LNPre") else "RMS"

    @cached_property  # the bridge's hook_dict is rebuilt on every read (0.6 ms)
    def has_post_attention_norm(self) -> bool:
        """Gemma-2/3: a norm between each attention block and the residual stream."""
        return "blocks.0.ln1_post.hook_scale" in self.bridge.hook_dict

    @property
    def logit_soft_cap(self) -> float | None:
        """Gemma-2's final tanh soft-cap (``None`` when the model has none)."""
        cap = float(getattr(self.bridge.cfg, "output_logits_soft_cap", -1.0) or -1.0)
        return cap if cap > 0 else None

    def check_head(self, layer: int, head: int) -> None:
        """Raise :class:`HeadIndexError` unless ``(layer, head)`` exists in this model."""
        if not 0 <= layer < self.n_layers:
            raise HeadIndexError(
                f"layer {layer} is out of range: {self.name} has layers 0..{self.n_layers - 1}"
            )
        if not 0 <= head < self.n_heads:
            raise HeadIndexError(
                f"head {head} is out of range: {self.name} has heads 0..{self.n_heads - 1} "
                f"per layer (query heads; GQA key/value heads are not indexed separately)"
            )

    def check_supported(self) -> None:
        """Refuse architectures whose residual decomposition has not been verified."""
        if self.architecture not in SUPPORTED_ARCHITECTURES:
            raise UnsupportedArchitectureError(
                f"{self.name} is a {self.architecture}; exact DLA and patching are verified "
                f"only for {', '.join(SUPPORTED_ARCHITECTURES)}. Use one of those families "
                f"(decoder-only causal LMs)."
            )

    # -- weights ----------------------------------------------------------
    @property
    def W_U(self) -> Float[Tensor, "d_model d_vocab"]:
        return self.bridge.W_U

    @property
    def b_U(self) -> Float[Tensor, " d_vocab"] | None:
        bias = getattr(self.bridge.unembed, "b_U", None)
        if bias is None or not isinstance(bias, Tensor):
            return None
        return bias

    def W_O(self, layer: int) -> Float[Tensor, "head d_head d_model"]:
        return self.bridge.blocks[layer].attn.W_O

    def _norm_gain(self, weight: Tensor) -> Tensor:
        if self.architecture in _ONE_PLUS_WEIGHT_NORMS:
            return 1.0 + weight
        return weight

    @property
    def final_norm_gain(self) -> Float[Tensor, " d_model"]:
        """The effective gain of the final norm (``1 + w`` for Gemma)."""
        return self._norm_gain(self.bridge.ln_final.weight)

    @property
    def final_norm_bias(self) -> Float[Tensor, " d_model"] | None:
        bias = getattr(self.bridge.ln_final, "bias", None)
        return bias if isinstance(bias, Tensor) else None

    def post_attention_norm_gain(self, layer: int) -> Float[Tensor, " d_model"]:
        """Gain of layer ``layer``'s post-attention norm (Gemma-2/3 only)."""
        return self._norm_gain(self.bridge.blocks[layer].ln1_post.weight)

    # -- running ------------------------------------------------------------
    def check_tokens(self, tokens: Int[Tensor, "batch pos"]) -> None:
        """Refuse token ids the embedding does not have (else torch fails deep inside)."""
        if tokens.numel() and int(tokens.max()) >= self.d_vocab:
            raise ModelLoadError(
                f"token id {int(tokens.max())} is outside {self.name}'s vocabulary of "
                f"{self.d_vocab}: the tokenizer does not belong to this model. Save the "
                f"tokenizer the model was trained with next to its weights."
            )

    def forward(self, tokens: Int[Tensor, "batch pos"]) -> Float[Tensor, "batch pos d_vocab"]:
        self.check_tokens(tokens)
        with torch.no_grad():
            return self.bridge(tokens.to(self.device))

    def run_with_hooks(
        self,
        tokens: Int[Tensor, "batch pos"],
        fwd_hooks: list[tuple[str | Callable[..., Any], Callable[..., Any]]],
    ) -> Float[Tensor, "batch pos d_vocab"]:
        """One forward pass with TransformerLens hooks ``(hook_name, fn(tensor, hook))``."""
        self.check_tokens(tokens)
        with torch.no_grad():
            return self.bridge.run_with_hooks(tokens.to(self.device), fwd_hooks=fwd_hooks)
