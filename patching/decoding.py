"""Greedy decoding, optionally under interventions: the one decoding loop of the toolkit.

:func:`greedy_decode` appends each prompt's argmax token ``n_tokens`` times. Each
step is one batched pass over the prompts plus what they generated so far:
left-padded, every row with its own interventions.

With a key/value cache (the default where it gives the same numbers) the prompts
run once and every later step runs only the newest token against the cache: on a
0.5B model an 8-token response then costs about one prompt pass instead of eight.
That is exact when no intervention's positions move as the sequence grows: every
``"prompt"``-mode decoding, and ``"every_step"`` decoding whose interventions all
act at ``"all"`` positions (a knocked-out or scaled head, a steering vector) with
no per-position reference; each position is then intervened on exactly when it is
computed, as in a full pass. Otherwise (``-1``, ``last``, a resample reference...)
each step is a full pass of the executor (:func:`patching.executor.forward_batch`);
tests hold both paths equal (1e-5). The prompts' shared opening (a chat template's
system prompt and user header) fills the cache once per distinct row of interventions
that act alike at every position, and each prompt then runs its own tokens only
(:func:`_shared_prefix`).

Where interventions act is explicit (``intervene``):

- ``"every_step"``: positions resolve against the *current* sequence at each step,
  so ``"all"`` includes the generated tokens and ``-1`` is always the newest token
  (a steered or knocked-out model generating on its own).
- ``"prompt"``: positions resolve against the prompt only; generated tokens run
  unchanged (an edit of the input's processing, the response left free).

Labels (``t_inst``, ``t_post_inst``) always name prompt positions; ``last`` is the
newest token in ``"every_step"`` mode and the prompt's last in ``"prompt"`` mode.

**First-token edits** (``first_token=``): prompt i's logits at the first response
position pass through ``first_token[i]`` before the argmax, and later steps are
left alone. :class:`LogitBias` adds a constant to a set of tokens (refusal-rate
calibration, ``docs/science.md#refusal-rate-calibration``); :class:`ForceAbove`
forces the most likely token of the set when the set's probability reaches a
threshold, and forbids the set otherwise. The edit acts on the logits the model
returned, so it commutes with every intervention and with the cache.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Literal

import torch
from jaxtyping import Float
from torch import Tensor

from patching import compat
from patching.batching import left_padded, length_batches
from patching.executor import Prompt, forward_batch, prompt_labels
from patching.hooks import Rows, intervention_hooks, padding_hooks, readout_hooks
from patching.interventions import (
    Ablation,
    AddVector,
    Intervention,
    Scale,
    acts_alike_everywhere,
    same_interventions,
)
from patching.model import HookedModel
from patching.rows import check_rows

# Prompts decoded together. A cached decoding step reads every weight for a handful of
# rows, so it costs about the same for 16 rows as for 64 on a CPU: 48 prompts x 8 tokens
# take 12 s in one batch and 18-20 s in three (Qwen2.5-0.5B, 2 cores).
DECODE_BATCH_SIZE = 64

Intervene = Literal["every_step", "prompt"]
INTERVENE: tuple[Intervene, ...] = ("every_step", "prompt")

__all__ = [
    "DECODE_BATCH_SIZE",
    "INTERVENE",
    "FirstTokenEdit",
    "ForceAbove",
    "Intervene",
    "LogitBias",
    "greedy_decode",
]


@dataclass(frozen=True)
class LogitBias:
    """Add ``value`` to the logits of ``token_ids`` (one prompt's first-token edit).

    ``value`` may be ``inf`` (the most likely of the tokens is forced) or ``-inf``
    (none of them can be chosen); an infinite value never produces NaN.
    """

    token_ids: tuple[int, ...]
    value: float

    def __call__(self, logits: Float[Tensor, " d_vocab"]) -> Float[Tensor, " d_vocab"]:
        ids = torch.tensor(self.token_ids, device=logits.device, dtype=torch.long)
        if self.value == math.inf:  # logits + inf would tie every token of the set
            out = torch.full_like(logits, -math.inf)
            out[ids] = logits[ids]
            return out
        out = logits.clone()
        out[ids] = -math.inf if self.value == -math.inf else out[ids] + self.value
        return out


@dataclass(frozen=True)
class ForceAbove:
    """Force the most likely of ``token_ids`` when their total probability is at least
    ``threshold``, forbid them otherwise (the "Refusal Tokens" paper's threshold rule)."""

    token_ids: tuple[int, ...]
    threshold: float

    def __call__(self, logits: Float[Tensor, " d_vocab"]) -> Float[Tensor, " d_vocab"]:
        ids = torch.tensor(self.token_ids, device=logits.device, dtype=torch.long)
        p = float(torch.softmax(logits.double(), dim=-1)[ids].sum())
        return LogitBias(self.token_ids, math.inf if p >= self.threshold else -math.inf)(logits)


FirstTokenEdit = Callable[[Tensor], Tensor]


def greedy_decode(
    model: HookedModel,
    prompts: Sequence[Prompt],
    n_tokens: int,
    rows: Rows | None = None,
    *,
    intervene: Intervene = "every_step",
    stop_at_eos: bool = True,
    batch_size: int = DECODE_BATCH_SIZE,
    use_cache: bool = True,
    first_token: Sequence[FirstTokenEdit | None] | None = None,
) -> list[list[int]]:
    """Each prompt's greedy continuation of up to ``n_tokens`` token ids.

    Args:
        rows: ``rows[i]`` are prompt i's interventions (:mod:`patching.interventions`).
        intervene: ``"every_step"`` or ``"prompt"`` (see the module docstring).
        stop_at_eos: end a prompt's continuation at the tokenizer's end-of-sequence
            token (included); otherwise take exactly ``n_tokens`` argmax tokens.
        use_cache: decode with a key/value cache where that is exact (module docstring);
            ``False`` recomputes every step in full (the reference the tests use).
        first_token: ``first_token[i]`` edits prompt i's logits at the first response
            position only (:class:`LogitBias`, :class:`ForceAbove`, any callable
            ``[d_vocab] -> [d_vocab]``); ``None`` entries leave a prompt alone.

    ``greedy_decode(model, prompts, 1)`` gives each prompt's greedy first token.
    """
    if intervene not in INTERVENE:
        raise ValueError(f"unknown intervene {intervene!r}; use one of {', '.join(INTERVENE)}")
    if rows is not None and len(rows) != len(prompts):
        raise ValueError(f"{len(rows)} rows of interventions for {len(prompts)} prompts")
    if first_token is not None and len(first_token) != len(prompts):
        raise ValueError(f"{len(first_token)} first-token edits for {len(prompts)} prompts")
    eos = model.tokenizer.eos_token_id if stop_at_eos else None
    pairs = [prompt_labels(p) for p in prompts]
    out: list[list[int]] = [[] for _ in prompts]
    cached = use_cache and _cache_exact(model, rows, intervene)
    for idx in length_batches([len(t) for t, _ in pairs], batch_size):
        if cached:
            batch_rows = [rows[i] for i in idx] if rows is not None else None
            edits = [first_token[i] for i in idx] if first_token is not None else None
            made = _decode_cached(
                model, [pairs[i] for i in idx], n_tokens, batch_rows, intervene, eos, edits
            )
            for i, ids in zip(idx, made, strict=True):
                out[i] = ids
            continue
        seqs: list[Tensor] = [pairs[i][0].cpu() for i in idx]
        labels = [pairs[i][1] for i in idx]
        prompt_lengths = [len(s) for s in seqs]
        done = torch.zeros(len(idx), dtype=torch.bool)
        for step in range(n_tokens):
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
            if step == 0 and first_token is not None:
                logits = _edit_first(logits, [first_token[i] for i in idx])
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


def _edit_first(
    logits: Float[Tensor, "batch d_vocab"], edits: Sequence[FirstTokenEdit | None]
) -> Float[Tensor, "batch d_vocab"]:
    """Each row's first-position logits through its edit (rows without one unchanged)."""
    return torch.stack(
        [row if edit is None else edit(row) for row, edit in zip(logits, edits, strict=True)]
    )


def _shared_prefix(
    model: HookedModel, tokens: Sequence[Tensor], rows: Rows | None
) -> tuple[int, Any]:
    """The prompts' common first tokens run once per distinct row of interventions, and a
    key/value cache holding them for every prompt: ``(cut, cache)``, ``cut`` 0 when none.

    Chat prompts share their template's opening (a system prompt, the user turn's
    header: 60% of a short Qwen prompt), which a prompt pass would otherwise run for
    every prompt. Only rows whose interventions act alike at every position
    (:func:`~patching.interventions.acts_alike_everywhere`) give the prefix the same
    activations in every prompt that carries them; a cache layer that keeps more
    than keys and values (sliding windows) cannot be handed on: then no prefix.
    """
    cache = compat.new_cache()
    groups: list[int] = []
    distinct: list[Sequence[Intervention]] = []
    for row in rows if rows is not None else [[] for _ in tokens]:
        if not all(acts_alike_everywhere(iv) for iv in row):
            return 0, cache
        same = [g for g, seen in enumerate(distinct) if same_interventions(seen, row)]
        if not same:
            distinct.append(row)
        groups.append(same[0] if same else len(distinct) - 1)
    first = tokens[0]
    cut = min(len(t) for t in tokens) - 1  # every prompt keeps a token to read out
    for t in tokens[1:]:
        differ = (t[:cut] != first[:cut]).nonzero()
        cut = int(differ[0, 0]) if len(differ) else cut
    if cut < 1 or len(distinct) >= len(tokens):
        return 0, cache
    batch = first[:cut].expand(len(distinct), -1)
    hooks = intervention_hooks(distinct, cut, {"last": cut - 1}) if rows is not None else []
    hooks += readout_hooks(model.n_layers, [cut - 1])
    with torch.no_grad():
        model.bridge.run_with_hooks(
            batch, fwd_hooks=hooks, **compat.cache_kwargs(model.bridge, cache)
        )
    if not compat.prefix_supported(cache):
        return 0, compat.new_cache()
    compat.select_cache_rows(cache, torch.tensor(groups, device=first.device))
    return cut, cache


def _cache_exact(model: HookedModel, rows: Rows | None, intervene: Intervene) -> bool:
    """Whether a cached decoding gives a full pass's numbers (module docstring)."""
    if compat.missing_internals(model.bridge):
        return False
    if rows is None or intervene == "prompt":
        return True
    for row in rows:
        for iv in row:
            if not isinstance(iv, (Scale, Ablation, AddVector)) or iv.positions != "all":
                return False
            reference = getattr(iv, "reference", None)
            if reference is not None and reference.ndim > 1:  # one value per position
                return False
    return True


def _decode_cached(
    model: HookedModel,
    prompts: Sequence[tuple[Tensor, dict[str, int]]],
    n_tokens: int,
    rows: Rows | None,
    intervene: Intervene,
    eos: int | None,
    first_token: Sequence[FirstTokenEdit | None] | None = None,
) -> list[list[int]]:
    """Greedy decoding of one batch: the prompts once, then one new token a step."""
    done = torch.zeros(len(prompts), dtype=torch.bool)
    made: list[list[int]] = [[] for _ in prompts]

    def greedy(logits: Tensor) -> Tensor | None:
        if first_token is not None and not made[0]:
            logits = _edit_first(logits, first_token)
        nxt = logits.argmax(dim=-1).cpu()
        if eos is not None:
            nxt = torch.where(done, torch.full_like(nxt, int(eos)), nxt)
            done.logical_or_(nxt == eos)
        for r, token in enumerate(nxt.tolist()):
            made[r].append(int(token))
        return None if bool(done.all()) else nxt

    cached_steps(model, prompts, n_tokens, rows, intervene, greedy)
    if eos is not None:
        made = [ids[: ids.index(eos) + 1] if eos in ids else ids for ids in made]
    return made


def cached_steps(
    model: HookedModel,
    prompts: Sequence[tuple[Tensor, dict[str, int]]],
    n_steps: int,
    rows: Rows | None,
    intervene: Intervene,
    choose: Callable[[Float[Tensor, "batch d_vocab"]], Tensor | None],
) -> None:
    """Run the prompts once, then ``choose(last logits)``'s tokens one at a time, cached.

    ``choose`` gets each step's last-position logits and returns the next token of
    every row (``None`` stops). Only exact under :func:`_cache_exact`.
    """
    bridge, n = model.bridge, len(prompts)
    tokens = [t.to(model.device) for t, _ in prompts]
    model.check_tokens(left_padded(tokens)[0])
    check_rows(model, rows or [])
    cut, cache = _shared_prefix(model, tokens, rows)
    # The prompts' own tokens after the shared prefix, left-padded: row r's mask is the
    # prefix, then padding, then its tokens (its positions count on from the prefix).
    padded, pads, _ = left_padded([t[cut:] for t in tokens])
    mask = torch.ones(n, cut + int(padded.shape[1]), dtype=padded.dtype, device=padded.device)
    for r, pad in enumerate(pads):
        mask[r, cut : cut + pad] = 0
    hooks = padding_hooks(model.n_layers) if any(pads) else []
    if rows is not None:
        lengths = [len(t) - cut for t in tokens]
        labels = [{k: v - cut for k, v in lab.items()} for _, lab in prompts]
        hooks += intervention_hooks(rows, lengths, labels, pads=pads)
    # The prompt pass unembeds its last position only (the vocabulary projection of every
    # position would cost as much as the model), and runs the last block's MLP there only:
    # the cache holds keys and values, which that MLP does not feed.
    hooks += readout_hooks(model.n_layers, [int(padded.shape[1]) - 1])
    step_tokens = padded
    with torch.no_grad():
        for _ in range(n_steps):
            logits = bridge.run_with_hooks(
                step_tokens,
                fwd_hooks=hooks,
                attention_mask=mask,
                position_ids=(mask.cumsum(-1) - 1).clamp(min=0)[:, -step_tokens.shape[1] :],
                **compat.cache_kwargs(bridge, cache),
            )
            nxt = choose(logits[:, -1])
            if nxt is None:
                break
            step_tokens = nxt[:, None].to(model.device)
            mask = torch.cat([mask, torch.ones_like(mask[:, :1])], dim=1)
            # Each new position is intervened on as a full pass would ("all" includes it);
            # "prompt" mode leaves generated tokens unchanged.
            hooks = []
            if rows is not None and intervene == "every_step":
                hooks = intervention_hooks(rows, [1] * n, [{"last": 0}] * n)
