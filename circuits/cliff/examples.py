"""The probe's training examples: the model's own behaviour as labels, and the residuals at the
position that predicts the answer with their over-the-stream statistics
(docs/science.md#refusal-cliff).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from jaxtyping import Float, Int

from attribution.result import Result
from circuits.behaviour import Judge, classify
from patching.chat import ChatPrompt, format_chat
from patching.decoding import greedy_decode
from patching.errors import RefusalCircuitsError
from patching.executor import DEFAULT_BATCH_SIZE, run_and_cache
from patching.model import HookedModel
from patching.residuals import residual_hooks

MIN_CLASS = 4  # fewest examples a side (refused / complied) a probe is trained on


class TooFewExamplesError(RefusalCircuitsError):
    """Too few refused or complied examples to train a refusal probe."""


@dataclass(frozen=True)
class ProbeData(Result):
    """Residuals at the position that predicts the answer, labelled by behaviour.

    ``residuals``: ``[example, layer, d_model]`` (layer ``l`` = block ``l``'s input, the
    last = the final residual); ``refused``: the label; ``kind``: ``refused_harmful``,
    ``complied_harmful`` or ``complied_harmless``. ``token_mean``/``token_m2``/
    ``token_count``: per example, each feature's mean and sum of squared deviations over
    every position of the prompt but the first, so the over-the-stream statistics
    (:meth:`stream_stats`) can be taken over any subset of prompts (a probe scored on
    held-out prompts is standardised by its training prompts alone). The probe is read at
    every token, so it standardises by the spread over tokens: a feature constant at the
    answer position but large elsewhere would blow up.
    """

    residuals: Float[np.ndarray, "example layer d_model"] = field(metadata={"group": "data"})
    refused: np.ndarray = field(metadata={"group": "data"})
    kind: list[str] = field(metadata={"group": "data"})
    token_mean: Float[np.ndarray, "example layer d_model"] = field(metadata={"group": "data"})
    token_m2: Float[np.ndarray, "example layer d_model"] = field(metadata={"group": "data"})
    token_count: Int[np.ndarray, " example"] = field(metadata={"group": "data"})

    def stream_stats(
        self, examples: Sequence[int] | np.ndarray | None = None
    ) -> tuple[Float[np.ndarray, "layer d_model"], Float[np.ndarray, "layer d_model"]]:
        """Mean and (unbiased) standard deviation over every token of ``examples`` (all by
        default) but each prompt's first, pooled exactly (Chan et al.); a zero spread is 1."""
        idx = np.arange(len(self.kind)) if examples is None else np.asarray(examples)
        n = self.token_count[idx].astype(np.float64)[:, None, None]
        total = float(n.sum())
        mean = (n * self.token_mean[idx]).sum(axis=0) / total
        m2 = self.token_m2[idx].sum(axis=0) + (n * (self.token_mean[idx] - mean) ** 2).sum(axis=0)
        scale = np.sqrt(m2 / max(total - 1.0, 1.0))
        return mean, np.where(scale > 0, scale, 1.0)

    @property
    def stream_mean(self) -> Float[np.ndarray, "layer d_model"]:
        return self.stream_stats()[0]

    @property
    def stream_scale(self) -> Float[np.ndarray, "layer d_model"]:
        return self.stream_stats()[1]

    @property
    def class_sizes(self) -> dict[str, int]:
        return {k: self.kind.count(k) for k in KINDS}

    def derived(self) -> dict[str, Any]:
        return {"class_sizes": self.class_sizes}


KINDS = ("refused_harmful", "complied_harmful", "complied_harmless")


def probe_examples(
    model: HookedModel,
    harmful: Sequence[str],
    harmless: Sequence[str],
    *,
    gen_tokens: int = 8,
    batch_size: int = DEFAULT_BATCH_SIZE,
    judge: Judge | None = None,
    min_class: int = MIN_CLASS,
) -> ProbeData:
    """The model's own behaviour as probe labels (answers without thinking).

    Each prompt is rendered with ``enable_thinking=False`` (ignored by templates without
    it), answered greedily and classified; refused harmful prompts are the positives,
    complied harmful and complied harmless ones the negatives (evasions and refused
    harmless prompts are left out).

    Raises:
        TooFewExamplesError: fewer than ``min_class`` refused or complied examples.
    """
    tok = model.tokenizer
    texts = [*harmful, *harmless]
    prompts = [format_chat(tok, t, template_kwargs={"enable_thinking": False}) for t in texts]
    ids = greedy_decode(model, prompts, gen_tokens, batch_size=batch_size)
    labels = classify([str(tok.decode(r, skip_special_tokens=True)).strip() for r in ids], judge)
    kinds: list[str | None] = []
    for i, label in enumerate(labels):
        side = "harmful" if i < len(harmful) else "harmless"
        kind = {"refusal": "refused", "answer": "complied"}.get(label)
        kinds.append(None if kind is None or f"{kind}_{side}" not in KINDS else f"{kind}_{side}")
    keep = [i for i, k in enumerate(kinds) if k is not None]
    kept = [str(kinds[i]) for i in keep]
    refused = np.array([k == "refused_harmful" for k in kept])
    n_pos, n_neg = int(refused.sum()), int((~refused).sum())
    if min(n_pos, n_neg) < min_class:
        sizes = {k: kept.count(k) for k in KINDS}
        raise TooFewExamplesError(
            f"the model refused {n_pos} and complied with {n_neg} of {len(texts)} prompts "
            f"({sizes}); a refusal probe needs at least {min_class} of each: pass more pairs "
            f"(--n), or harmful prompts it refuses and prompts it answers"
        )
    return probe_data(model, [prompts[i] for i in keep], kept, batch_size=batch_size)


def probe_data(
    model: HookedModel,
    prompts: Sequence[ChatPrompt],
    kinds: Sequence[str],
    *,
    batch_size: int = DEFAULT_BATCH_SIZE,
) -> ProbeData:
    """Residuals of labelled prompts (``kinds``: one of ``KINDS`` each) at ``t_post_inst``,
    with the over-the-stream statistics (:class:`ProbeData`)."""
    hooks = residual_hooks(model)
    _, caches = run_and_cache(
        model,
        list(prompts),
        names={str(j): h for j, h in enumerate(hooks)},
        batch_size=batch_size,
        to_cpu=True,
    )
    # [pos, layer, d_model] per prompt
    streams = [torch.stack([c[str(j)] for j in range(len(hooks))], dim=1).double() for c in caches]
    last = torch.stack([st[p.t_post_inst] for st, p in zip(streams, prompts, strict=True)])
    means = torch.stack([st[1:].mean(dim=0) for st in streams])
    m2 = torch.stack([((st[1:] - st[1:].mean(dim=0)) ** 2).sum(dim=0) for st in streams])
    return ProbeData(
        residuals=last.float().numpy(),
        refused=np.array([k == "refused_harmful" for k in kinds]),
        kind=list(kinds),
        token_mean=means.numpy(),
        token_m2=m2.numpy(),
        token_count=np.array([len(st) - 1 for st in streams]),
    )
