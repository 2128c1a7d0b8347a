"""Refusal metrics at the first response position (DESIGN.md section 4).

- :func:`refusal_score`: the log-odds that the first response token is a
  refusal token, ``log P(R) - log(1 - P(R))``, computed as a difference of two
  log-sum-exps in float64 so it stays finite when P(R) is close to 0 or 1.
- :func:`refusal_direction`: the unembedding direction
  ``mean_{t in R} W_U[:, t] - W_U[:, a]`` whose dot product with the normalised
  final residual is the *refusal logit difference*; ``a`` is the answer token
  (by default the first token the model produces for the matched control).
- :func:`refusal_logit_diff`: that logit difference read off the logits, the
  quantity direct logit attribution decomposes.
"""

from __future__ import annotations

import torch
from jaxtyping import Float, Int
from torch import Tensor


def _refusal_mask(d_vocab: int, refusal_ids: list[int], device: torch.device) -> Tensor:
    mask = torch.zeros(d_vocab, dtype=torch.bool, device=device)
    mask[torch.tensor(refusal_ids, device=device)] = True
    return mask


def refusal_score(
    logits: Float[Tensor, "batch d_vocab"], refusal_ids: list[int]
) -> Float[Tensor, " batch"]:
    """Log-odds of a refusal token, ``log sum_R p - log(1 - sum_R p)``, in float64."""
    logits = logits.double()
    mask = _refusal_mask(logits.shape[-1], refusal_ids, logits.device)
    inside = torch.logsumexp(logits[:, mask], dim=-1)
    outside = torch.logsumexp(logits[:, ~mask], dim=-1)
    return inside - outside


def refusal_probability(
    logits: Float[Tensor, "batch d_vocab"], refusal_ids: list[int]
) -> Float[Tensor, " batch"]:
    """Total probability of the refusal tokens, in float64."""
    probs = torch.softmax(logits.double(), dim=-1)
    return probs[:, refusal_ids].sum(dim=-1)


def refusal_direction(
    W_U: Float[Tensor, "d_model d_vocab"],
    refusal_ids: list[int],
    answer_ids: Int[Tensor, " batch"],
) -> Float[Tensor, "batch d_model"]:
    """One direction per row: mean refusal unembedding minus the row's answer token's."""
    W = W_U.double()
    refusal_mean = W[:, refusal_ids].mean(dim=1)
    return refusal_mean.unsqueeze(0) - W[:, answer_ids.to(W.device)].T


def refusal_logit_diff(
    logits: Float[Tensor, "batch d_vocab"],
    refusal_ids: list[int],
    answer_ids: Int[Tensor, " batch"],
) -> Float[Tensor, " batch"]:
    """``mean_{t in R} logit_t - logit_a`` per row, in float64."""
    logits = logits.double()
    answer = logits.gather(1, answer_ids.to(logits.device).view(-1, 1)).squeeze(1)
    return logits[:, refusal_ids].mean(dim=-1) - answer


def greedy_token(logits: Float[Tensor, "batch d_vocab"]) -> Int[Tensor, " batch"]:
    """The argmax (greedy) next token of each row."""
    return logits.argmax(dim=-1)
