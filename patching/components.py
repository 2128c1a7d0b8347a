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

from collections.abc import Sequence
from dataclasses import dataclass, field

import torch
from jaxtyping import Float, Int
from torch import Tensor

from patching.executor import BlockInputs, Prompt, forward_batch, prompt_labels
from patching.hooks import Hook, Rows
from patching.interventions import z_hook
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
    blocks: BlockInputs | None = field(default=None, repr=False)
    """The pass's block inputs when asked for (``keep_blocks``): a later decomposition
    of the same prompts under interventions starts from them (``resume``)."""

    def total(self) -> Float[Tensor, "batch d_model"]:
        """The sum of all terms (equals ``resid_final`` up to float error)."""
        return (
            self.embed
            + self.heads.sum(dim=(1, 2))
            + self.attn_bias.sum(dim=1)
            + self.mlps.sum(dim=1)
        )


def decompose_residual(
    model: HookedModel,
    tokens: Int[Tensor, "batch pos"] | Sequence[Prompt],
    positions: Int[Tensor, " batch"] | Sequence[int] | None = None,
    *,
    rows: Rows | None = None,
    interventions: Sequence[Hook] | None = None,
    keep_blocks: bool = False,
    resume: BlockInputs | None = None,
    logit_columns: Sequence[int] | None = None,
) -> ResidualDecomposition:
    """Run ``tokens`` once and split the final residual at ``positions`` into its terms.

    Args:
        model: the hooked model.
        tokens: a batch of token rows, or prompts of any lengths (one left-padded pass,
            :mod:`patching.batching`).
        positions: the position to decompose in each row (its own index); the last
            one when omitted.
        rows: each row's interventions (:mod:`patching.interventions`), applied
            before anything is captured: the decomposition is then of the intervened
            run (what a knockout cascade needs).
        interventions: raw TransformerLens hooks ``(name, fn)`` applied the same way
            (for experiments the intervention objects do not express).
        keep_blocks: keep the pass's block inputs in ``.blocks`` (a clean pass).
        resume: the ``.blocks`` of a clean decomposition of the same prompts and
            positions: a pass under ``rows`` then starts at their first intervened
            layer (:func:`patching.executor.forward_batch`); not with ``interventions``.
        logit_columns: the tokens whose logits the caller reads (a knockout's refusal
            logit difference): the others may come back NaN (not computed).
    """
    model.check_supported()
    prompts: list[Tensor] = (
        list(tokens) if isinstance(tokens, Tensor) else [prompt_labels(p)[0] for p in tokens]
    )
    at = (
        [[len(t) - 1] for t in prompts]
        if positions is None
        else [
            [int(p)] for p in (positions.tolist() if isinstance(positions, Tensor) else positions)
        ]
    )
    n_layers = model.n_layers
    names = {
        "embed": "blocks.0.hook_resid_pre",
        "resid_final": f"blocks.{n_layers - 1}.hook_resid_post",
        "final_scale": "ln_final.hook_scale",
    }
    for layer in range(n_layers):
        names |= {
            f"z{layer}": z_hook(layer),
            f"attn{layer}": f"blocks.{layer}.hook_attn_out",
            f"mlp{layer}": f"blocks.{layer}.hook_mlp_out",
        }
        if model.has_post_attention_norm:
            names[f"post_scale{layer}"] = f"blocks.{layer}.ln1_post.hook_scale"
    if model.logit_soft_cap is not None:
        names["normalized"] = "ln_final.hook_out"
    if resume is not None and interventions:
        raise ValueError("resume needs every intervention as rows (raw hooks may act earlier)")
    out = forward_batch(
        model,
        prompts,
        rows,
        readout=at,
        capture=names,
        at=at,
        extra_hooks=interventions or (),
        keep_blocks=keep_blocks,
        resume=resume,
        logit_columns=logit_columns,
    )
    assert out.cache is not None
    store = {key: torch.cat([row[key] for row in out.cache]) for key in names}
    if model.logit_soft_cap is not None:
        # tanh is not inverted (lossy near the cap): recompute from the normalised residual.
        bias = model.b_U if model.b_U is not None else 0.0
        position_logits = store["normalized"] @ model.W_U + bias
    else:
        position_logits = out.logits[:, 0]
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
        blocks=out.blocks,
    )
