"""Cipher contrast: which heads stop writing refusal when the request is encoded.

An in-context substitution cipher (:class:`patching.prompts.Cipher`) hides a harmful
request's words from a gate that reads plain-text topic words; a model that can still
decode it may then answer. :func:`cipher_contrast` measures, on aligned pairs (pair
``i`` of the plain and the cipher set encode the same request):

- **three passes per pair** (plain harmful, cipher harmful, control), each a
  per-head DLA on the refusal direction (:func:`attribution.dla.prompts_dla`; the
  answer token is the control's greedy token); heads ranked by
  ``|mean plain DLA - mean cipher DLA|`` with a bootstrap interval of the signed
  difference, and the layer x head map;
- the model's **behaviour** on plain and cipher prompts (:mod:`circuits.behaviour`
  classes of greedy continuations), so the reader sees whether the cipher bypasses the
  model at all;
- **gate necessity** under plain vs cipher: the drop of the refusal score when the
  gate's output at the prompt's last position is swapped for the control's; its
  **collapse** is ``1 - mean cipher drop / mean plain drop`` (in %, bootstrap interval),
  and the cipher necessity relative to the cipher's own harmful - control gap (which
  tells "the gate is blind to the cipher" from "the cipher prompts carry no refusal");
- **gate injection**: the plain run's gate output at its last position clamped into the
  cipher run (:class:`patching.interventions.Clamp`), in two labelled variants
  (``"last_position"``: the prompt's last position only; ``"every_step"``: that
  position and every generated one), and the share of refusals it restores,
  ``(rate injected - rate cipher) / (rate plain - rate cipher)``.

Definitions in ``docs/science.md#cipher-contrast``.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from jaxtyping import Float
from tqdm.auto import tqdm

from attribution.dla import prompts_dla
from attribution.metrics import refusal_score
from attribution.refusal_tokens import REFUSAL_WORDS, refusal_token_ids, token_strings
from attribution.result import Result
from attribution.statistics import (
    DEFAULT_CI_LEVEL,
    DEFAULT_N_BOOT,
    HeadStat,
    RatioEstimate,
    bootstrap_mean_ci,
    check_enough_pairs_for_ci,
    ratio_of_means,
    top_heads,
)
from circuits.behaviour import class_shares, classify, greedy_continuations
from patching.batching import count_batches
from patching.chat import ChatPrompt, format_chat
from patching.decoding import Intervene
from patching.errors import OptionError, PairError
from patching.executor import run, run_and_cache
from patching.interventions import Clamp, Interchange, z_hook
from patching.model import HookedModel
from patching.prompts import PromptPair

Head = tuple[int, int]
PER_PAIR = {"group": "per_pair"}
INJECTIONS: dict[str, str] = {
    "last_position": "plain gate output clamped at the cipher prompt's last position only; "
    "the response decoded freely",
    "every_step": "plain gate output clamped at the prompt's last position and at every "
    "generated position",
}


# A ratio's denominator (a mean drop or gap of the refusal score) under this share of the
# mean plain refusal gap is noise: the ratio is NaN rather than a large, meaningless number.
RATIO_FLOOR_SHARE = 0.01


@dataclass
class GateNecessity(Result):
    """The gate's interchange necessity on plain and on cipher pairs (per pair drops).

    ``*_drop[i]``: refusal score of harmful prompt i minus the same with the gate's output
    at the last position taken from control i (plain: the plain control; cipher: the
    cipher control). ``plain_gap[i]`` / ``cipher_gap[i]``: harmful minus control refusal
    score, plain / cipher. ``selected_on_pairs``: the gate was chosen on these same plain
    pairs (its plain necessity is then optimistic). Every ratio is NaN, with a NaN
    interval, when its denominator's mean is at or below :attr:`floor`
    (docs/science.md#cipher-contrast).
    """

    gate: list[int]
    plain_drop: Float[np.ndarray, " pair"] = field(metadata=PER_PAIR)
    cipher_drop: Float[np.ndarray, " pair"] = field(metadata=PER_PAIR)
    plain_gap: Float[np.ndarray, " pair"] = field(metadata=PER_PAIR)
    cipher_gap: Float[np.ndarray, " pair"] = field(metadata=PER_PAIR)
    selected_on_pairs: bool = False
    seed: int = 0
    n_boot: int = DEFAULT_N_BOOT
    ci_level: float = DEFAULT_CI_LEVEL

    @property
    def floor(self) -> float:
        """``RATIO_FLOOR_SHARE`` of the mean absolute plain refusal gap."""
        return RATIO_FLOOR_SHARE * float(np.mean(np.abs(self.plain_gap)))

    def _ratio(self, num: np.ndarray, den: np.ndarray) -> RatioEstimate:
        return ratio_of_means(
            num, den, floor=self.floor, n_boot=self.n_boot, level=self.ci_level, seed=self.seed
        )

    @property
    def necessity_plain(self) -> float:
        """Mean plain drop over the mean plain gap (1: the gate carries the whole gap)."""
        return self._ratio(self.plain_drop, self.plain_gap).value

    @property
    def necessity_cipher(self) -> float:
        """Mean cipher drop over the same plain gap."""
        return self._ratio(self.cipher_drop, self.plain_gap).value

    @property
    def necessity_cipher_own(self) -> RatioEstimate:
        """Mean cipher drop over the cipher's own gap: the share of whatever refusal the
        cipher prompts still carry that runs through the gate (NaN when they carry none)."""
        return self._ratio(self.cipher_drop, self.cipher_gap)

    @property
    def collapse(self) -> RatioEstimate:
        """Mean cipher drop over mean plain drop (``collapse_pct`` is ``100 (1 - this)``)."""
        return self._ratio(self.cipher_drop, self.plain_drop)

    @property
    def collapse_pct(self) -> float:
        """``100 * (1 - mean cipher drop / mean plain drop)``; NaN when the plain drop is
        at or below the floor (the gate carries no plain refusal to lose)."""
        return 100.0 * (1.0 - self.collapse.value)

    @property
    def collapse_ci_pct(self) -> tuple[float, float]:
        low, high = self.collapse.ci
        return 100.0 * (1.0 - high), 100.0 * (1.0 - low)

    def derived(self) -> dict[str, Any]:
        own = self.necessity_cipher_own
        return {
            "necessity_plain": self.necessity_plain,
            "necessity_cipher": self.necessity_cipher,
            "necessity_cipher_own": own.value,
            "necessity_cipher_own_ci": list(own.ci),
            "collapse_pct": self.collapse_pct,
            "collapse_ci_pct": list(self.collapse_ci_pct),
            "collapse_dropped_resamples": self.collapse.dropped,
            "ratio_floor": self.floor,
        }


@dataclass
class Injection(Result):
    """One gate-injection variant: per-pair behaviour and first-token refusal under it."""

    variant: str
    description: str
    injected_class: list[str] = field(metadata=PER_PAIR)
    injected_text: list[str] = field(metadata=PER_PAIR)
    injected_score: Float[np.ndarray, " pair"] = field(metadata=PER_PAIR)
    first_token_refusal: list[bool] = field(metadata=PER_PAIR)

    @property
    def refusal_rate(self) -> float:
        return _rate(self.injected_class)


@dataclass
class CipherContrast(Result):
    """Everything cipher contrast measured (module docstring); ``cipher.json``."""

    model: str
    n_layers: int
    n_heads: int
    plain_heads: Float[np.ndarray, "pair layer head"] = field(metadata=PER_PAIR)
    cipher_heads: Float[np.ndarray, "pair layer head"] = field(metadata=PER_PAIR)
    control_heads: Float[np.ndarray, "pair layer head"] = field(metadata=PER_PAIR)
    plain_logit_diff: Float[np.ndarray, " pair"] = field(metadata=PER_PAIR)
    cipher_logit_diff: Float[np.ndarray, " pair"] = field(metadata=PER_PAIR)
    plain_score: Float[np.ndarray, " pair"] = field(metadata=PER_PAIR)
    cipher_score: Float[np.ndarray, " pair"] = field(metadata=PER_PAIR)
    plain_class: list[str] = field(metadata=PER_PAIR)
    cipher_class: list[str] = field(metadata=PER_PAIR)
    control_class: list[str] = field(metadata=PER_PAIR)
    plain_text: list[str] = field(metadata=PER_PAIR)
    cipher_text: list[str] = field(metadata=PER_PAIR)
    categories: list[str | None] = field(metadata=PER_PAIR)
    refusal_tokens: list[str]
    gen_tokens: int
    gate: list[int] | None = None
    gate_source: str = ""
    necessity: GateNecessity | None = None
    injections: list[Injection] = field(default_factory=list)
    cipher: str = ""
    seed: int = 0
    n_boot: int = DEFAULT_N_BOOT
    ci_level: float = DEFAULT_CI_LEVEL
    _ci: tuple[np.ndarray, np.ndarray] | None = field(default=None, repr=False, compare=False)

    # -- summaries ----------------------------------------------------------
    @property
    def n_pairs(self) -> int:
        return int(self.plain_heads.shape[0])

    @property
    def difference(self) -> Float[np.ndarray, "layer head"]:
        """Mean plain DLA minus mean cipher DLA, per head."""
        return (self.plain_heads - self.cipher_heads).mean(axis=0)

    @property
    def contrast(self) -> Float[np.ndarray, "layer head"]:
        """``|mean plain - mean cipher|`` per head: what the ranking sorts by."""
        return np.abs(self.difference)

    @property
    def difference_ci(
        self,
    ) -> tuple[Float[np.ndarray, "layer head"], Float[np.ndarray, "layer head"]]:
        """Bootstrap interval of :attr:`difference` (pairs resampled, seeded)."""
        if self._ci is None:
            self._ci = bootstrap_mean_ci(
                self.plain_heads - self.cipher_heads,
                n_boot=self.n_boot,
                level=self.ci_level,
                seed=self.seed,
            )
        return self._ci

    def top(self, k: int = 10) -> list[HeadStat]:
        """The ``k`` most cipher-sensitive heads: signed plain - cipher difference, interval."""
        low, high = self.difference_ci
        values = self.difference
        return [
            HeadStat(layer=layer, head=head, value=float(values[layer, head]),
                     ci_low=float(low[layer, head]), ci_high=float(high[layer, head]),
                     n=self.n_pairs)
            for layer, head in top_heads(values, k, by="abs")
        ]  # fmt: skip

    def refusal_rate(self, side: str) -> float:
        """Share of ``side``'s (``"plain"``, ``"cipher"``, ``"control"``) responses refused."""
        return _rate(getattr(self, f"{side}_class"))

    def restored(self, injection: Injection) -> RatioEstimate:
        """``(rate injected - rate cipher) / (rate plain - rate cipher)`` with its paired
        bootstrap interval; NaN (and a NaN interval) when the cipher does not lower the
        refusal rate."""
        refused = np.array([c == "refusal" for c in injection.injected_class], dtype=np.float64)
        cipher = np.array([c == "refusal" for c in self.cipher_class], dtype=np.float64)
        plain = np.array([c == "refusal" for c in self.plain_class], dtype=np.float64)
        return ratio_of_means(
            refused - cipher, plain - cipher, n_boot=self.n_boot, level=self.ci_level,
            seed=self.seed,
        )  # fmt: skip

    def restored_share(self, injection: Injection) -> float:
        """:meth:`restored`'s value."""
        return self.restored(injection).value

    def restored_ci(self, injection: Injection) -> tuple[float, float]:
        return self.restored(injection).ci

    def derived(self) -> dict[str, Any]:
        low, high = self.difference_ci
        return {
            "n_pairs": self.n_pairs,
            "refusal_rate": {s: self.refusal_rate(s) for s in ("plain", "cipher", "control")},
            "behaviour_shares": {
                s: class_shares(getattr(self, f"{s}_class")) for s in ("plain", "cipher", "control")
            },
            "per_head_plain": self.plain_heads.mean(axis=0),
            "per_head_cipher": self.cipher_heads.mean(axis=0),
            "per_head_difference": self.difference,
            "per_head_difference_ci_low": low,
            "per_head_difference_ci_high": high,
            "ranked_heads": [h.to_dict() for h in self.top(self.n_layers * self.n_heads)],
            "injection": {
                inj.variant: {
                    "description": inj.description,
                    "refusal_rate": inj.refusal_rate,
                    "first_token_refusal_rate": float(np.mean(inj.first_token_refusal)),
                    "restored_share": self.restored_share(inj),
                    "restored_share_ci": list(self.restored_ci(inj)),
                    "restored_dropped_resamples": self.restored(inj).dropped,
                }
                for inj in self.injections
            },
        }


def _rate(labels: Sequence[str]) -> float:
    return sum(1 for x in labels if x == "refusal") / max(1, len(labels))


def parse_head(text: str, model: HookedModel | None = None) -> Head:
    """``"L.H"`` (e.g. ``"3.2"``) as ``(layer, head)``, checked against ``model``'s shape."""
    try:
        layer_text, head_text = text.split(".")
        head = (int(layer_text), int(head_text))
    except ValueError:
        raise OptionError(f"--gate {text!r}: write the head as LAYER.HEAD, e.g. 3.2") from None
    if model is not None and not (0 <= head[0] < model.n_layers and 0 <= head[1] < model.n_heads):
        raise OptionError(
            f"--gate {text}: the model has {model.n_layers} layers x {model.n_heads} heads; "
            f"pick a layer below {model.n_layers} and a head below {model.n_heads}"
        )
    return head


def check_aligned(pairs: Sequence[PromptPair], cipher_pairs: Sequence[PromptPair]) -> None:
    """One cipher pair per plain pair, and at least two pairs (the intervals need them)."""
    if len(pairs) != len(cipher_pairs):
        raise PairError(
            f"{len(pairs)} plain pairs but {len(cipher_pairs)} cipher pairs; pair i of the "
            "cipher set must encode plain pair i"
        )
    check_enough_pairs_for_ci(len(pairs))


def _gate_z(
    model: HookedModel, prompts: list[ChatPrompt], gate: Head, batch_size: int
) -> tuple[Float[torch.Tensor, "prompt d_vocab"], list[torch.Tensor]]:
    """Last-position logits and the gate's last-position output ``[d_head]`` per prompt."""
    layer, head = gate
    logits, caches = run_and_cache(
        model, prompts, names={"z": z_hook(layer)}, at="last", batch_size=batch_size
    )
    return logits[:, -1], [c["z"][0, head] for c in caches]


def gate_necessity(
    model: HookedModel,
    prompts: dict[str, list[ChatPrompt]],
    gate: Head,
    refusal_ids: list[int],
    *,
    batch_size: int = 16,
    seed: int = 0,
    n_boot: int = DEFAULT_N_BOOT,
    selected_on_pairs: bool = False,
) -> tuple[GateNecessity, dict[str, torch.Tensor], list[torch.Tensor]]:
    """The gate's necessity on plain and cipher prompts (``prompts``: the four sets).

    Returns the result, every set's clean refusal scores, and the plain harmful gate outputs
    (what injection clamps).
    """
    layer, head = gate
    scores: dict[str, torch.Tensor] = {}
    z: dict[str, list[torch.Tensor]] = {}
    for name, batch in prompts.items():
        logits, z[name] = _gate_z(model, batch, gate, batch_size)
        scores[name] = refusal_score(logits, refusal_ids).cpu()
    drops = {}
    for side, control in (("plain", "control"), ("cipher", "cipher_control")):
        rows = [[Interchange(layer, head, positions="last", source=src)] for src in z[control]]
        patched = run(model, prompts[side], rows, batch_size=batch_size)[:, -1]
        drops[side] = (scores[side] - refusal_score(patched, refusal_ids).cpu()).numpy()
    result = GateNecessity(
        gate=[layer, head],
        plain_drop=drops["plain"],
        cipher_drop=drops["cipher"],
        plain_gap=(scores["plain"] - scores["control"]).numpy(),
        cipher_gap=(scores["cipher"] - scores["cipher_control"]).numpy(),
        selected_on_pairs=selected_on_pairs,
        seed=seed,
        n_boot=n_boot,
    )
    return result, scores, z["plain"]


def inject_gate(
    model: HookedModel,
    cipher_prompts: list[ChatPrompt],
    plain_gate: list[torch.Tensor],
    gate: Head,
    refusal_ids: list[int],
    *,
    gen_tokens: int = 8,
    batch_size: int = 16,
) -> list[Injection]:
    """Both injection variants (``INJECTIONS``): the plain gate output clamped into cipher runs."""
    layer, head = gate
    rows: list[list[Any]] = [
        [Clamp(layer, head, value=v, start=len(p) - 1)]
        for v, p in zip(plain_gate, cipher_prompts, strict=True)
    ]
    logits = run(model, cipher_prompts, rows, batch_size=batch_size)[:, -1]
    score = refusal_score(logits, refusal_ids).cpu().numpy()
    first = [int(t) in set(refusal_ids) for t in logits.argmax(dim=-1).tolist()]
    out = []
    modes: tuple[tuple[str, Intervene], ...] = (
        ("last_position", "prompt"),
        ("every_step", "every_step"),
    )
    for variant, mode in modes:
        texts = greedy_continuations(
            model, cipher_prompts, gen_tokens, rows, batch_size, intervene=mode
        )
        out.append(
            Injection(
                variant=variant,
                description=INJECTIONS[variant],
                injected_class=classify(texts),
                injected_text=texts,
                injected_score=score,
                first_token_refusal=first,
            )
        )
    return out


def cipher_contrast(
    model: HookedModel,
    pairs: Sequence[PromptPair],
    cipher_pairs: Sequence[PromptPair],
    *,
    gate: Head | None = None,
    gate_source: str = "",
    gate_selected_on_pairs: bool = False,
    cipher: str = "",
    refusal_words: Sequence[str] = REFUSAL_WORDS,
    gen_tokens: int = 8,
    batch_size: int = 16,
    n_boot: int = DEFAULT_N_BOOT,
    seed: int = 0,
    progress: bool = True,
) -> CipherContrast:
    """Cipher contrast of aligned plain and cipher pairs (module docstring).

    Args:
        pairs: plain harmful/control pairs.
        cipher_pairs: pair i encodes plain pair i (``Cipher.encode_pairs`` or the
            organism's ``pairs_cipher.jsonl``); its control is the gate-necessity control.
        gate: the gate ``(layer, head)``; without it necessity and injection are skipped.
        gate_source: how the gate was chosen (recorded).
        gate_selected_on_pairs: the gate was chosen on these same plain pairs (recorded
            and reported: its plain necessity is then selection-biased upwards).
        cipher: the cipher's description (its key and template), recorded.
    """
    check_aligned(pairs, cipher_pairs)
    model.check_supported()
    tok = model.tokenizer
    refusal_ids = refusal_token_ids(tok, tuple(refusal_words))
    sets = {
        "plain": [format_chat(tok, p.harmful) for p in pairs],
        "cipher": [format_chat(tok, p.harmful) for p in cipher_pairs],
        "control": [format_chat(tok, p.control) for p in pairs],
        "cipher_control": [format_chat(tok, p.control) for p in cipher_pairs],
    }
    total = 3 * count_batches(len(pairs), batch_size)
    with tqdm(total=total, desc="cipher DLA", unit="batch", disable=not progress) as bar:
        control, answers = prompts_dla(model, sets["control"], refusal_ids, None, batch_size, bar)
        plain, _ = prompts_dla(model, sets["plain"], refusal_ids, answers, batch_size, bar)
        ciphered, _ = prompts_dla(model, sets["cipher"], refusal_ids, answers, batch_size, bar)
    texts = {
        side: greedy_continuations(model, sets[side], gen_tokens, None, batch_size)
        for side in ("plain", "cipher", "control")
    }
    necessity, injections = None, []
    if gate is not None:
        necessity, scores, plain_gate = gate_necessity(
            model, sets, gate, refusal_ids, batch_size=batch_size, seed=seed, n_boot=n_boot,
            selected_on_pairs=gate_selected_on_pairs,
        )  # fmt: skip
        injections = inject_gate(
            model, sets["cipher"], plain_gate, gate, refusal_ids,
            gen_tokens=gen_tokens, batch_size=batch_size,
        )  # fmt: skip
    else:
        scores = {
            side: refusal_score(run(model, sets[side], batch_size=batch_size)[:, -1], refusal_ids)
            for side in ("plain", "cipher")
        }
    return CipherContrast(
        model=model.name,
        n_layers=model.n_layers,
        n_heads=model.n_heads,
        plain_heads=plain.heads.numpy(),
        cipher_heads=ciphered.heads.numpy(),
        control_heads=control.heads.numpy(),
        plain_logit_diff=plain.logit_diff.numpy(),
        cipher_logit_diff=ciphered.logit_diff.numpy(),
        plain_score=scores["plain"].cpu().numpy(),
        cipher_score=scores["cipher"].cpu().numpy(),
        plain_class=classify(texts["plain"]),
        cipher_class=classify(texts["cipher"]),
        control_class=classify(texts["control"]),
        plain_text=texts["plain"],
        cipher_text=texts["cipher"],
        categories=[p.category for p in pairs],
        refusal_tokens=token_strings(tok, refusal_ids),
        gen_tokens=gen_tokens,
        gate=list(gate) if gate is not None else None,
        gate_source=gate_source if gate is not None else "",
        necessity=necessity,
        injections=injections,
        cipher=cipher,
        seed=seed,
        n_boot=n_boot,
    )


__all__ = [
    "INJECTIONS",
    "RATIO_FLOOR_SHARE",
    "CipherContrast",
    "GateNecessity",
    "Injection",
    "cipher_contrast",
    "gate_necessity",
    "inject_gate",
    "parse_head",
]
