"""The state the audit's steps share: :class:`AuditContext`.

The inputs (model, pairs, config, step store, judge) and what they derive
(chat prompts, refusal token ids, the greedy answers, the deps every stored
step shares), and one field per finding, set by the step that computes it.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from functools import cached_property
from typing import Any, TypeVar

import numpy as np
import torch

from attribution.dla import DLAResult
from attribution.refusal_tokens import refusal_token_ids
from attribution.statistics import EffectStats, effect_stats
from circuits.ablation_compare import AblationComparison
from circuits.audit.config import AuditConfig
from circuits.behaviour import KEYWORD_JUDGE_VERSION, Judge, PairBehaviour
from circuits.cascade import CascadeResult
from circuits.cipher import CipherContrast
from circuits.cliff import CliffResult, Trace
from circuits.dose_response import DoseResponse
from circuits.knockout import Head, capture_z
from circuits.metric_check import MetricCheck
from circuits.negative_heads import NegativeHeadsResult
from circuits.roles import DropTest, GateCheck, depth_band
from circuits.screening import ScreenCheck
from circuits.store import StepStore, digest
from patching.chat import ChatPrompt, format_chat
from patching.decoding import greedy_decode
from patching.model import HookedModel

T = TypeVar("T")


@dataclass
class AuditContext:
    """What every step reads: the inputs, and the findings of the steps before it.

    The inputs are set once; each finding starts as ``None`` (or empty) and is
    set by the step that computes it. A step reads earlier findings through
    :meth:`need`, which names the missing step if the list is out of order.
    """

    model: HookedModel
    pairs: list[Any]
    config: AuditConfig
    store: StepStore
    jailbreak: list[Any] = field(default_factory=list)
    cipher_pairs: list[Any] = field(default_factory=list)  # pair i encodes pair i
    cliff_traces: list[Trace] = field(default_factory=list)  # given traces (else generated)
    cliff_traces_source: str = "generated"  # where the cliff step's traces come from
    judge: Judge | None = None
    progress: bool = True
    # Findings, in the order the steps set them.
    behaviour: PairBehaviour | None = None  # behaviour: every given pair, before any restriction
    kept: list[int] | None = None  # refused_pairs: indices of the pairs the statistics use
    scale: float | None = None  # interchange: the pooled gap every effect is divided by
    floor: float = 0.0  # interchange: float32 rounding on the pooled scale (resolution_floor)
    necessity: EffectStats | None = None  # interchange
    sufficiency: EffectStats | None = None  # interchange
    dla: DLAResult | None = None  # dla
    shares: np.ndarray | None = None  # dla: each head's share of the direct effect
    candidates: list[Head] = field(default_factory=list)  # gate
    gate: list[Head] = field(default_factory=list)  # gate
    amplifiers: list[Head] = field(default_factory=list)  # gate
    change: np.ndarray | None = None  # gate: DLA change under the gate's knockout
    amplifier_tests: list[DropTest] = field(default_factory=list)  # gate: the gate's drop tests
    gate_checks: list[GateCheck] = field(default_factory=list)  # gate: top band heads, why not
    published_gate: Head | None = None  # gate: largest necessity + sufficiency
    cascade: CascadeResult | None = None
    dose: DoseResponse | None = None
    negative: NegativeHeadsResult | None = None
    comparison: AblationComparison | None = None
    metric_check: MetricCheck | None = None
    cipher: CipherContrast | None = None
    cliff: CliffResult | None = None

    # What is derived from the pairs, recomputed after :meth:`restrict`.
    _PAIR_DERIVED = ("harmful", "control", "answers", "reference", "base")

    def restrict(self, keep: Sequence[int]) -> None:
        """Keep only the pairs at ``keep`` for every later step (their prompts and keys too)."""
        self.kept = list(keep)
        self.pairs = [self.pairs[i] for i in keep]
        for name in self._PAIR_DERIVED:
            self.__dict__.pop(name, None)

    # Each screened step: which heads it measured exactly and the screen's recall check.
    screening: dict[str, ScreenCheck] = field(default_factory=dict)

    @staticmethod
    def need(value: T | None, what: str) -> T:
        """An earlier step's finding (an error naming the step if it has not run)."""
        if value is None:
            raise RuntimeError(f"the audit step computing {what} must run before this one")
        return value

    # -- inputs derived once, on first use --------------------------------------
    @cached_property
    def harmful(self) -> list[ChatPrompt]:
        return [format_chat(self.model.tokenizer, p.harmful) for p in self.pairs]

    @cached_property
    def control(self) -> list[ChatPrompt]:
        return [format_chat(self.model.tokenizer, p.control) for p in self.pairs]

    @cached_property
    def jb_harmful(self) -> list[ChatPrompt]:
        return [format_chat(self.model.tokenizer, p.harmful) for p in self.jailbreak]

    @cached_property
    def jb_control(self) -> list[ChatPrompt]:
        return [format_chat(self.model.tokenizer, p.control) for p in self.jailbreak]

    @cached_property
    def refusal_ids(self) -> list[int]:
        return refusal_token_ids(self.model.tokenizer, self.config.refusal_words)

    @cached_property
    def answers(self) -> torch.Tensor:
        """The greedy first response token to each control prompt (the DLA's answer)."""
        return greedy_answers(self.model, self.control)

    @cached_property
    def band_layers(self) -> list[int]:
        return depth_band(self.model.n_layers, self.config.band)

    @cached_property
    def reference(self) -> list[dict[int, torch.Tensor]] | None:
        """Control activations of the band for mean/resample knockouts (none for zero)."""
        if self.config.knockout == "zero":
            return None
        return capture_z(self.model, self.control, self.band_layers)

    @cached_property
    def base(self) -> dict[str, Any]:
        """What every stored step depends on: the model's shape, the pairs, the words."""
        model = self.model
        return {
            "model": model.name,
            "shape": [model.n_layers, model.n_heads, model.d_model],
            "pairs": digest([[p.harmful, p.control] for p in self.pairs]),
            "refusal_words": list(self.config.refusal_words),
        }

    @property
    def generation(self) -> dict[str, Any]:
        """What every step that decodes and judges responses depends on."""
        s = self.config
        return {
            "n_generate": s.n_generate,
            "gen_tokens": s.gen_tokens,
            "judge": judge_name(self.judge),
        }

    def stats(self, per_pair: Any) -> EffectStats:
        """Per-pair effects on the pooled scale, with CI, p and q."""
        scale = self.need(self.scale, "the pooled scale (interchange)")
        s = self.config
        return effect_stats(
            np.asarray(per_pair, dtype=np.float64) / scale,
            seed=s.seed,
            n_boot=s.n_boot,
            floor=self.floor,
        )


def judge_name(judge: Judge | None) -> str:
    if judge is None:
        return f"keyword-v{KEYWORD_JUDGE_VERSION}"
    return getattr(judge, "__qualname__", type(judge).__name__)


def greedy_answers(model: HookedModel, prompts: Sequence[ChatPrompt]) -> torch.Tensor:
    """Each prompt's greedy first response token (the DLA's answer token ``a``)."""
    first = greedy_decode(model, prompts, 1, stop_at_eos=False)
    return torch.tensor([ids[0] for ids in first], dtype=torch.long)
