"""Greedy decoding, optionally under interventions: the one decoding loop of the toolkit.

:func:`greedy_decode` appends each prompt's argmax token ``n_tokens`` times. Each
step is one batched pass of the executor (:func:`patching.executor.forward_batch`)
over the prompts plus what they generated so far: left-padded, every row with its
own interventions. There is no key/value cache: for the handful of tokens the
toolkit decodes (a first answer token, a metric's continuation, a short response
to classify) recomputing the prefix is cheap and keeps the numbers those of a
plain forward pass.

Where interventions act is explicit (``intervene``):

- ``"every_step"``: positions resolve against the *current* sequence at each step,
  so ``"all"`` includes the generated tokens and ``-1`` is always the newest token
  (a steered or knocked-out model generating on its own).
- ``"prompt"``: positions resolve against the prompt only; generated tokens run
  unchanged (an edit of the input's processing, the response left free).

Labels (``t_inst``, ``t_post_inst``) always name prompt positions; ``last`` is the
newest token in ``"every_step"`` mode and the prompt's last in ``"prompt"`` mode.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Literal

import torch
from torch import Tensor

from patching.batching import length_batches
from patching.executor import DEFAULT_BATCH_SIZE, Prompt, forward_batch, prompt_labels
from patching.hooks import Rows
from patching.model import HookedModel

Intervene = Literal["every_step", "prompt"]
INTERVENE: tuple[Intervene, ...] = ("every_step", "prompt")

__all__ = ["INTERVENE", "Intervene", "greedy_decode"]


def greedy_decode(
    model: HookedModel,
    prompts: Sequence[Prompt],
    n_tokens: int,
    rows: Rows | None = None,
    *,
    intervene: Intervene = "every_step",
    stop_at_eos: bool = True,
    batch_size: int = DEFAULT_BATCH_SIZE,
) -> list[list[int]]:
    """Each prompt's greedy continuation of up to ``n_tokens`` token ids.

    Args:
        rows: ``rows[i]`` are prompt i's interventions (:mod:`patching.interventions`).
        intervene: ``"every_step"`` or ``"prompt"`` (see the module docstring).
        stop_at_eos: end a prompt's continuation at the tokenizer's end-of-sequence
            token (included); otherwise take exactly ``n_tokens`` argmax tokens.

    ``greedy_decode(model, prompts, 1)`` gives each prompt's greedy first token.
    """
    if intervene not in INTERVENE:
        raise ValueError(f"unknown intervene {intervene!r}; use one of {', '.join(INTERVENE)}")
    if rows is not None and len(rows) != len(prompts):
        raise ValueError(f"{len(rows)} rows of interventions for {len(prompts)} prompts")
    eos = model.tokenizer.eos_token_id if stop_at_eos else None
    pairs = [prompt_labels(p) for p in prompts]
    out: list[list[int]] = [[] for _ in prompts]
    for idx in length_batches([len(t) for t, _ in pairs], batch_size):
        seqs: list[Tensor] = [pairs[i][0].cpu() for i in idx]
        labels = [pairs[i][1] for i in idx]
        prompt_lengths = [len(s) for s in seqs]
        done = torch.zeros(len(idx), dtype=torch.bool)
        for _ in range(n_tokens):
            lengths = [len(s) for s in seqs]
            step_labels = (
                labels
                if intervene == "prompt"
                else [{**lab, "last": n - 1} for lab, n in zip(labels, lengths, strict=True)]
            )
            logits = forward_batch(
                model,
                seqs,
                [rows[i] for i in idx] if rows is not None else None,
                step_labels,
                intervene_lengths=prompt_lengths if intervene == "prompt" else None,
            ).logits[:, -1]
            nxt = logits.argmax(dim=-1).cpu()
            if eos is not None:
                nxt = torch.where(done, torch.full_like(nxt, int(eos)), nxt)
                done |= nxt == eos
            seqs = [torch.cat([s, nxt[j : j + 1]]) for j, s in enumerate(seqs)]
            if bool(done.all()):
                break
        for j, i in enumerate(idx):
            ids = seqs[j][prompt_lengths[j] :].tolist()
            if eos is not None and eos in ids:
                ids = ids[: ids.index(eos) + 1]
            out[i] = [int(t) for t in ids]
    return out
