"""Refusal metrics (``docs/science.md#metrics``) and the metric objects of patched runs.

Functions of logits at the first response position:

- :func:`refusal_score`: the log-odds that the first response token is a
  refusal token, ``log P(R) - log(1 - P(R))``, computed as a difference of two
  log-sum-exps in float64 so it stays finite when P(R) is close to 0 or 1.
- :func:`refusal_direction`: the unembedding direction
  ``mean_{t in R} W_U[:, t] - W_U[:, a]`` whose dot product with the normalised
  final residual is the *refusal logit difference*; ``a`` is the answer token
  (by default the first token the model produces for the matched control).
- :func:`refusal_logit_diff`: that logit difference read off the logits, the
  quantity direct logit attribution decomposes.
- :func:`teacher_forced_nll`: the mean negative log-likelihood of a continuation.

A patched run returns logits at its read-out positions; a *metric object* maps
them to one number per row (float64) and implements
:class:`patching.interchange.PatchMetric`. Three are offered (:data:`METRICS`,
``docs/science.md#metrics`` and ``#interchange``):

- ``refusal_score``: log-odds of a refusal token at the first response position.
- ``logit_diff``: mean refusal-token logit minus the logit of the answer token,
  by default the control prompt's own greedy first token.
- ``nll``: the teacher-forced negative log-likelihood (mean per token) of a
  continuation, by default the control prompt's first few greedy tokens. This
  is the interchange metric of the gate paper: a harmful run assigns the
  control's compliant opening a high NLL, and a head whose patch lowers it
  carries the refusal.

Each metric object carries per-pair data (answer tokens, continuations).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
from jaxtyping import Float, Int
from torch import Tensor

from patching.fingerprint import digest


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
    # Only the needed columns go to float64: the whole unembedding (136M entries in a
    # 0.5B model) took a third of every knockout's time.
    refusal_mean = W_U[:, refusal_ids].double().mean(dim=1)
    return refusal_mean.unsqueeze(0) - W_U[:, answer_ids.to(W_U.device)].double().T


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


# -- metric objects of patched runs --------------------------------------------
METRICS = ("refusal_score", "logit_diff", "nll")


def teacher_forced_nll(
    logits: Float[Tensor, "batch k d_vocab"], targets: Int[Tensor, " k"]
) -> Float[Tensor, " batch"]:
    """Mean over the k positions of ``-log p(target_j | logits_j)``, in float64."""
    logprobs = torch.log_softmax(logits.double(), dim=-1)
    index = targets.to(logits.device).view(1, -1, 1).expand(logits.shape[0], -1, 1)
    return -logprobs.gather(2, index).squeeze(2).mean(dim=1)


@dataclass(frozen=True)
class RefusalScoreMetric:
    """Refusal log-odds at the last read-out position."""

    refusal_ids: list[int]
    name: str = "refusal_score"

    @property
    def key(self) -> str:
        return digest(self.refusal_ids)

    def continuation(self, pair: int) -> list[int]:
        return []

    def __call__(self, logits: Tensor, pair: int) -> Tensor:
        return refusal_score(logits[:, -1], self.refusal_ids)


@dataclass(frozen=True)
class LogitDiffMetric:
    """Refusal logit difference against pair i's answer token ``answers[i]``."""

    refusal_ids: list[int]
    answers: list[int]
    name: str = "logit_diff"

    @property
    def key(self) -> str:
        return digest([self.refusal_ids, self.answers])

    def continuation(self, pair: int) -> list[int]:
        return []

    def __call__(self, logits: Tensor, pair: int) -> Tensor:
        answer = torch.full((logits.shape[0],), self.answers[pair], dtype=torch.long)
        return refusal_logit_diff(logits[:, -1], self.refusal_ids, answer)


@dataclass(frozen=True)
class NLLMetric:
    """Teacher-forced NLL of pair i's continuation ``continuations[i]``."""

    continuations: list[list[int]] = field(default_factory=list)
    name: str = "nll"

    @property
    def key(self) -> str:
        return digest(self.continuations)

    def continuation(self, pair: int) -> list[int]:
        return self.continuations[pair]

    def __call__(self, logits: Tensor, pair: int) -> Tensor:
        return teacher_forced_nll(logits, torch.tensor(self.continuations[pair]))
