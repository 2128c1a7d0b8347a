"""Decompose the residual stream at one position into the pieces that wrote it.

The final residual stream of a decoder is a sum: the embeddings, then for every
layer the attention block's output and the MLP's output. The attention output
itself is a sum over heads (each head's ``z @ W_O``) plus the output bias.
:func:`decompose_residual` runs one forward pass, captures each term at the
position of interest only (so memory does not grow with the prompt), and
returns them together with the final norm's scale from the *same* run: the
frozen scale that makes direct logit attribution linear and exact.

The decomposition is an identity, and tests hold it on every supported
architecture::

    embed + sum_L (sum_h heads[L, h] + attn_bias[L] + mlp[L]) == resid_final

Gemma-2/3 normalise each attention output before adding it to the stream, so a
head's contribution there is its raw output divided by that norm's scale (frozen
from the run) and multiplied by its gain; the sum over heads then equals the
block's ``attn_out`` exactly.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
from jaxtyping import Float, Int
from torch import Tensor

from patching.model import HookedModel


@dataclass(frozen=True)
class ResidualDecomposition:
    """Every additive term of the final residual stream at one position per row."""

    heads: Float[Tensor, "batch layer head d_model"]
    attn_bias: Float[Tensor, "batch layer d_model"]
    mlps: Float[Tensor, "batch layer d_model"]
    embed: Float[Tensor, "batch d_model"]
    resid_final: Float[Tensor, "batch d_model"]
    final_scale: Float[Tensor, "batch 1"]
    logits: Float[Tensor, "batch d_vocab"]
    """Logits at the position; *before* the tanh soft-cap on models that have one
    (Gemma-2), because that is the quantity the terms add up to exactly."""

    def total(self) -> Float[Tensor, "batch d_model"]:
        """The sum of all terms (equals ``resid_final`` up to float error)."""
        return (
            self.embed
            + self.heads.sum(dim=(1, 2))
            + self.attn_bias.sum(dim=1)
            + self.mlps.sum(dim=1)
        )


def _gather(t: Tensor, positions: Tensor) -> Tensor:
    """Pick ``t[b, positions[b]]`` for every row b (t is [batch, pos, ...])."""
    idx = positions.to(t.device).view(-1, *([1] * (t.dim() - 1)))
    idx = idx.expand(-1, 1, *t.shape[2:])
    return t.gather(1, idx).squeeze(1)


def decompose_residual(
    model: HookedModel,
    tokens: Int[Tensor, "batch pos"],
    positions: Int[Tensor, " batch"] | None = None,
    *,
    interventions: list[tuple[str | Callable[..., Any], Callable[..., Any]]] | None = None,
) -> ResidualDecomposition:
    """Run ``tokens`` once and split the final residual at ``positions`` into its terms.

    Args:
        model: the hooked model.
        tokens: a batch of equal-length token rows (no padding).
        positions: the position to decompose in each row; the last one when omitted.
        interventions: TransformerLens hooks ``(name, fn)`` applied *before* the
            capturing hooks, e.g. a knocked-out gate: the decomposition is then
            of the intervened run (what a knockout cascade needs).
    """
    model.check_supported()
    batch, seq = tokens.shape
    if positions is None:
        positions = torch.full((batch,), seq - 1, dtype=torch.long)
    n_layers = model.n_layers
    store: dict[str, Tensor] = {}

    def keep(key: str) -> Any:
        # Bind the name we want in the closure: inside a hook, hook.name is the
        # canonical alias (e.g. blocks.L.attn.o.hook_in), not hook_z.
        def hook(t: Tensor, hook: Any) -> Tensor:
            store[key] = _gather(t.detach(), positions)
            return t

        return hook

    hooks: list[tuple[str | Callable[..., Any], Callable[..., Any]]] = [
        ("blocks.0.hook_resid_pre", keep("embed")),
        (f"blocks.{n_layers - 1}.hook_resid_post", keep("resid_final")),
        ("ln_final.hook_scale", keep("final_scale")),
    ]
    for layer in range(n_layers):
        hooks += [
            (f"blocks.{layer}.attn.hook_z", keep(f"z{layer}")),
            (f"blocks.{layer}.hook_attn_out", keep(f"attn{layer}")),
            (f"blocks.{layer}.hook_mlp_out", keep(f"mlp{layer}")),
        ]
        if model.has_post_attention_norm:
            hooks.append((f"blocks.{layer}.ln1_post.hook_scale", keep(f"post_scale{layer}")))

    if model.logit_soft_cap is not None:
        hooks.append(("ln_final.hook_out", keep("normalized")))
    logits = model.run_with_hooks(tokens, [*(interventions or []), *hooks])
    if model.logit_soft_cap is not None:
        # tanh is not inverted (lossy near the cap): recompute from the normalised residual.
        bias = model.b_U if model.b_U is not None else 0.0
        position_logits = store["normalized"] @ model.W_U + bias
    else:
        position_logits = _gather(logits, positions)
    heads, attn_bias = [], []
    for layer in range(n_layers):
        z = store[f"z{layer}"]  # [batch, head, d_head]
        per_head = torch.einsum("bhd,hdm->bhm", z, model.W_O(layer).to(z.dtype))
        if model.has_post_attention_norm:
            gain = model.post_attention_norm_gain(layer).to(z.dtype)
            per_head = per_head / store[f"post_scale{layer}"].unsqueeze(1) * gain
        heads.append(per_head)
        attn_bias.append(store[f"attn{layer}"] - per_head.sum(dim=1))
    return ResidualDecomposition(
        heads=torch.stack(heads, dim=1),
        attn_bias=torch.stack(attn_bias, dim=1),
        mlps=torch.stack([store[f"mlp{layer}"] for layer in range(n_layers)], dim=1),
        embed=store["embed"],
        resid_final=store["resid_final"],
        final_scale=store["final_scale"],
        logits=position_logits,
    )
