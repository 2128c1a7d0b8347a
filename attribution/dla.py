"""Direct logit attribution (DLA) of the refusal logit difference, per head.

The method
----------
The logits at the last prompt position are ``norm(resid) @ W_U``, and the final
residual ``resid`` is a sum of the outputs of every component (embeddings, each
attention head, each attention block's bias, each MLP). The final norm is not
linear, but once its scale is *frozen* at the value of the clean run it is:
``norm(x) = center(x) / scale * gain (+ bias)``. Each component's direct effect
on the refusal logit difference is then

    DLA(c) = center(c) / scale * gain . d,     d = mean_{t in R} W_U[:, t] - W_U[:, a]

and the DLAs of all components (plus the norm's and unembedding's biases) sum
*exactly* to the logit difference read from the model's logits. That identity
is the check every number here passes; TransformerLens's default bridge breaks
it by leaving out the gain (``docs/dependencies.md#dla-on-a-default-bridge``).

The headline is the paired difference: harmful prompt minus its matched
control, per head, averaged over pairs with a bootstrap confidence interval.
Heads that *write* refusal (amplifiers) light up; a gate that only routes the
decision through later heads stays near zero here, which is why patching is
needed to find it.

Explained in ``docs/science.md#direct-logit-attribution``.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np
import torch
from jaxtyping import Float
from torch import Tensor
from tqdm.auto import tqdm

from attribution.metrics import greedy_token, refusal_direction, refusal_logit_diff
from attribution.refusal_tokens import REFUSAL_WORDS, refusal_token_ids, token_strings
from attribution.result import Result
from attribution.statistics import (
    DEFAULT_CI_LEVEL,
    DEFAULT_N_BOOT,
    HeadStat,
    bootstrap_mean_ci,
    top_heads,
)
from patching.batching import count_batches, length_batches
from patching.chat import ChatPrompt, format_chat
from patching.components import ResidualDecomposition, decompose_residual
from patching.errors import RefusalCircuitsError
from patching.model import HookedModel

Which = Literal["diff", "harmful", "control"]
PER_PAIR = {"group": "per_pair"}


@dataclass
class DLAResult(Result):
    """Per-pair direct logit attributions of the refusal logit difference.

    Per-pair arrays keep every number needed to recompute means and intervals
    (``dla.json`` nests them under ``per_pair``); the properties give the
    summaries the views and ``dla.json`` show.
    """

    model: str
    n_layers: int
    n_heads: int
    harmful_heads: Float[np.ndarray, "pair layer head"] = field(metadata=PER_PAIR)
    control_heads: Float[np.ndarray, "pair layer head"] = field(metadata=PER_PAIR)
    harmful_components: dict[str, list[float]] = field(metadata=PER_PAIR)
    control_components: dict[str, list[float]] = field(metadata=PER_PAIR)
    harmful_logit_diff: Float[np.ndarray, " pair"] = field(metadata=PER_PAIR)
    control_logit_diff: Float[np.ndarray, " pair"] = field(metadata=PER_PAIR)
    refusal_tokens: list[str]
    answer_tokens: list[str] = field(metadata=PER_PAIR)
    categories: list[str | None] = field(metadata=PER_PAIR)
    exact: bool = True
    note: str = ""
    seed: int = 0
    n_boot: int = DEFAULT_N_BOOT
    ci_level: float = DEFAULT_CI_LEVEL
    _ci: tuple[np.ndarray, np.ndarray] | None = field(default=None, repr=False, compare=False)

    # -- summaries ----------------------------------------------------------
    @property
    def n_pairs(self) -> int:
        return int(self.harmful_heads.shape[0])

    @property
    def pair_diff_heads(self) -> Float[np.ndarray, "pair layer head"]:
        return self.harmful_heads - self.control_heads

    @property
    def per_head(self) -> Float[np.ndarray, "layer head"]:
        """Mean over pairs of harmful-minus-control DLA per head."""
        return self.pair_diff_heads.mean(axis=0)

    @property
    def harmful_mean(self) -> Float[np.ndarray, "layer head"]:
        return self.harmful_heads.mean(axis=0)

    @property
    def control_mean(self) -> Float[np.ndarray, "layer head"]:
        return self.control_heads.mean(axis=0)

    def heads(self, which: Which = "diff") -> Float[np.ndarray, "layer head"]:
        return {"diff": self.per_head, "harmful": self.harmful_mean, "control": self.control_mean}[
            which
        ]

    @property
    def per_head_ci(
        self,
    ) -> tuple[Float[np.ndarray, "layer head"], Float[np.ndarray, "layer head"]]:
        """Bootstrap interval of :attr:`per_head` (pairs resampled, seeded)."""
        if self._ci is None:
            self._ci = bootstrap_mean_ci(
                self.pair_diff_heads, n_boot=self.n_boot, level=self.ci_level, seed=self.seed
            )
        return self._ci

    @property
    def components(self) -> dict[str, float]:
        """Mean harmful-minus-control DLA of every non-head component."""
        return {
            name: float(np.mean(np.subtract(self.harmful_components[name], values)))
            for name, values in self.control_components.items()
        }

    @property
    def total_logit_diff(self) -> float:
        """Mean harmful-minus-control refusal logit difference, from the logits."""
        return float(np.mean(self.harmful_logit_diff - self.control_logit_diff))

    @property
    def remainder(self) -> float:
        """Total logit difference minus the sum of all per-head terms."""
        return self.total_logit_diff - float(self.per_head.sum())

    @property
    def residual_error(self) -> float:
        """Total minus every component: zero up to float error when DLA is exact."""
        return self.remainder - sum(self.components.values())

    def top(
        self, k: int = 10, *, which: Which = "diff", by: Literal["value", "abs"] = "value"
    ) -> list[HeadStat]:
        """The ``k`` heads with the largest value (or largest magnitude with ``by="abs"``).

        Only the harmful-minus-control difference has an interval; ``p`` and ``q`` are
        NaN (DLA reports intervals, not tests).
        """
        values = self.heads(which)
        low, high = self.per_head_ci if which == "diff" else (values, values)
        return [
            HeadStat(
                layer=layer,
                head=head,
                value=float(values[layer, head]),
                ci_low=float(low[layer, head]),
                ci_high=float(high[layer, head]),
                n=self.n_pairs,
            )
            for layer, head in top_heads(values, k, by=by)
        ]

    # -- serialisation ------------------------------------------------------
    def derived(self) -> dict[str, Any]:
        """The means, intervals and totals ``dla.json`` shows beside the per-pair numbers."""
        low, high = self.per_head_ci
        return {
            "n_pairs": self.n_pairs,
            "per_head": self.per_head,
            "per_head_ci_low": low,
            "per_head_ci_high": high,
            "per_head_harmful": self.harmful_mean,
            "per_head_control": self.control_mean,
            "components": self.components,
            "total_logit_diff": self.total_logit_diff,
            "remainder": self.remainder,
            "residual_error": self.residual_error,
        }

    def summary(self) -> dict[str, Any]:
        """The fields of ``dla.json`` a reader looks at first (no per-pair numbers)."""
        data = self.to_dict()
        del data["per_pair"]
        return data

    def to_dataframe(self) -> Any:
        """One row per head: harmful, control, diff and its interval."""
        import pandas as pd

        low, high = self.per_head_ci
        rows = [
            {
                "layer": layer,
                "head": head,
                "harmful": float(self.harmful_mean[layer, head]),
                "control": float(self.control_mean[layer, head]),
                "diff": float(self.per_head[layer, head]),
                "ci_low": float(low[layer, head]),
                "ci_high": float(high[layer, head]),
            }
            for layer in range(self.n_layers)
            for head in range(self.n_heads)
        ]
        return pd.DataFrame(rows)


@dataclass(frozen=True)
class PromptDLA:
    """DLA of one batch of prompts: per-head and named components, plus the logit diff."""

    heads: Float[Tensor, "batch layer head"]
    components: dict[str, Float[Tensor, " batch"]]
    logit_diff: Float[Tensor, " batch"]


def attribute(
    model: HookedModel,
    dec: ResidualDecomposition,
    refusal_ids: list[int],
    answer_ids: Tensor,
) -> PromptDLA:
    """Project every term of a residual decomposition onto the refusal direction.

    All arithmetic is float64; the frozen final-norm scale comes from the same run.
    """
    direction = refusal_direction(model.W_U, refusal_ids, answer_ids)  # [batch, d_model]
    gain = model.final_norm_gain.double()
    scale = dec.final_scale.double().view(-1)
    # (x / scale * gain) . direction, with the gain folded into the direction: one pass over
    # the terms instead of three (the heads' terms are batch x layers x heads x d_model).
    read = direction * gain
    if model.norm_kind == "LN":  # LayerNorm's centring is linear: centre the read-out instead
        read = read - read.mean(dim=-1, keepdim=True)

    def to_logits(x: Tensor) -> Tensor:
        dots = torch.einsum("b...m,bm->b...", x.double(), read)
        return dots / scale.view(-1, *([1] * (dots.dim() - 1)))

    components: dict[str, Tensor] = {"embed": to_logits(dec.embed)}
    bias_dla = to_logits(dec.attn_bias)
    mlp_dla = to_logits(dec.mlps)
    for layer in range(model.n_layers):
        components[f"L{layer}.attn_bias"] = bias_dla[:, layer]
        components[f"L{layer}.mlp"] = mlp_dla[:, layer]
    if model.final_norm_bias is not None:
        components["ln_final.bias"] = direction @ model.final_norm_bias.double()
    if model.b_U is not None:
        b_U = model.b_U.double()
        components["unembed.bias"] = b_U[refusal_ids].mean() - b_U[answer_ids]
    return PromptDLA(
        heads=to_logits(dec.heads),
        components=components,
        logit_diff=refusal_logit_diff(dec.logits, refusal_ids, answer_ids),
    )


def prompts_dla(
    model: HookedModel,
    prompts: Sequence[ChatPrompt],
    refusal_ids: list[int],
    answer_ids: Tensor | None,
    batch_size: int,
    bar: Any,
) -> tuple[PromptDLA, Tensor]:
    """DLA for every prompt; answer tokens default to each prompt's own greedy token."""
    n = len(prompts)
    heads = torch.zeros(n, model.n_layers, model.n_heads, dtype=torch.float64)
    logit_diff = torch.zeros(n, dtype=torch.float64)
    components: dict[str, Tensor] = {}
    answers = torch.zeros(n, dtype=torch.long)
    for rows in length_batches([len(p) for p in prompts], batch_size):
        dec = decompose_residual(model, [prompts[i] for i in rows])
        index = torch.tensor(rows)
        batch_answers = greedy_token(dec.logits).cpu() if answer_ids is None else answer_ids[index]
        answers[index] = batch_answers
        dla = attribute(model, dec, refusal_ids, batch_answers)
        heads[index] = dla.heads.cpu()
        logit_diff[index] = dla.logit_diff.cpu()
        for name, values in dla.components.items():
            components.setdefault(name, torch.zeros(n, dtype=torch.float64))[index] = values.cpu()
        bar.update(1)
    return PromptDLA(heads=heads, components=components, logit_diff=logit_diff), answers


def direct_logit_attribution(
    model: HookedModel,
    pairs: Sequence[Any],
    *,
    refusal_words: Sequence[str] = REFUSAL_WORDS,
    answer_token: str | None = None,
    batch_size: int = 16,
    n_boot: int = DEFAULT_N_BOOT,
    ci_level: float = 0.95,
    seed: int = 0,
    progress: bool = True,
) -> DLAResult:
    """Per-head DLA of the refusal logit difference on harmful prompts and their controls.

    Args:
        model: a loaded :class:`~patching.model.HookedModel`.
        pairs: prompt pairs with ``.harmful``, ``.control`` and optional ``.category``.
        refusal_words: the words whose first tokens form the refusal set R.
        answer_token: the answer token ``a`` for every pair; by default each pair's
            control prompt's own greedy first token.
        batch_size: prompts per forward pass (left-padded, :mod:`patching.batching`).
        n_boot, ci_level, seed: bootstrap settings of the confidence intervals.
        progress: show a progress bar.
    """
    if not pairs:
        raise RefusalCircuitsError("no prompt pairs given; pass at least one pair")
    model.check_supported()
    tok = model.tokenizer
    refusal_ids = refusal_token_ids(tok, tuple(refusal_words))
    controls = [format_chat(tok, p.control) for p in pairs]
    harmfuls = [format_chat(tok, p.harmful) for p in pairs]
    fixed: Tensor | None = None
    if answer_token is not None:
        ids = tok.encode(answer_token, add_special_tokens=False)
        if not ids:
            raise RefusalCircuitsError(f"answer token {answer_token!r} encodes to no token")
        fixed = torch.full((len(pairs),), int(ids[0]), dtype=torch.long)
    total = 2 * count_batches(len(pairs), batch_size)
    with tqdm(total=total, desc="DLA", unit="batch", disable=not progress) as bar:
        control, answers = prompts_dla(model, controls, refusal_ids, fixed, batch_size, bar)
        harmful, _ = prompts_dla(model, harmfuls, refusal_ids, answers, batch_size, bar)
    cap = model.logit_soft_cap
    note = (
        ""
        if cap is None
        else f"{model.architecture} soft-caps logits at {cap:g}: DLA and total_logit_diff are "
        f"exact for the logits before the cap and approximate the capped logits' difference"
    )
    return DLAResult(
        model=model.name,
        n_layers=model.n_layers,
        n_heads=model.n_heads,
        harmful_heads=harmful.heads.numpy(),
        control_heads=control.heads.numpy(),
        harmful_components={k: v.tolist() for k, v in harmful.components.items()},
        control_components={k: v.tolist() for k, v in control.components.items()},
        harmful_logit_diff=harmful.logit_diff.numpy(),
        control_logit_diff=control.logit_diff.numpy(),
        refusal_tokens=token_strings(tok, refusal_ids),
        answer_tokens=token_strings(tok, answers.tolist()),
        categories=[getattr(p, "category", None) for p in pairs],
        exact=cap is None,
        note=note,
        seed=seed,
        n_boot=n_boot,
        ci_level=ci_level,
    )
