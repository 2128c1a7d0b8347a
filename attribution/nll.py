"""Metrics of patched runs: refusal score, refusal logit difference, teacher-forced NLL.

A patched run returns logits at its read-out positions; a metric maps them to one
number per row (float64). Three are offered (DESIGN.md sections 4 and 5):

- ``refusal_score``: log-odds of a refusal token at the first response position.
- ``logit_diff``: mean refusal-token logit minus the logit of the answer token,
  by default the control prompt's own greedy first token.
- ``nll``: the teacher-forced negative log-likelihood (mean per token) of a
  continuation, by default the control prompt's first few greedy tokens. This
  is the interchange metric of the gate paper: a harmful run assigns the
  control's compliant opening a high NLL, and a head whose patch lowers it
  carries the refusal.

Each metric object carries per-pair data (answer tokens, continuations) and
implements :class:`patching.interchange.PatchMetric`.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field

import torch
from jaxtyping import Float, Int
from torch import Tensor

from attribution.metrics import refusal_logit_diff, refusal_score

METRICS = ("refusal_score", "logit_diff", "nll")


def teacher_forced_nll(
    logits: Float[Tensor, "batch k d_vocab"], targets: Int[Tensor, " k"]
) -> Float[Tensor, " batch"]:
    """Mean over the k positions of ``-log p(target_j | logits_j)``, in float64."""
    logprobs = torch.log_softmax(logits.double(), dim=-1)
    index = targets.to(logits.device).view(1, -1, 1).expand(logits.shape[0], -1, 1)
    return -logprobs.gather(2, index).squeeze(2).mean(dim=1)


def _digest(data: object) -> str:
    return hashlib.sha256(json.dumps(data).encode()).hexdigest()[:12]


@dataclass(frozen=True)
class RefusalScoreMetric:
    """Refusal log-odds at the last read-out position."""

    refusal_ids: list[int]
    name: str = "refusal_score"

    @property
    def key(self) -> str:
        return _digest(self.refusal_ids)

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
        return _digest([self.refusal_ids, self.answers])

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
        return _digest(self.continuations)

    def continuation(self, pair: int) -> list[int]:
        return self.continuations[pair]

    def __call__(self, logits: Tensor, pair: int) -> Tensor:
        return teacher_forced_nll(logits, torch.tensor(self.continuations[pair]))
