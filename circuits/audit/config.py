"""The settings of an audit: :class:`AuditConfig` (all recorded in ``audit.json``)."""

from __future__ import annotations

from dataclasses import dataclass, fields
from typing import Any

from attribution.refusal_tokens import REFUSAL_WORDS
from attribution.statistics import DEFAULT_N_BOOT
from circuits.dose_response import DEFAULT_ALPHAS
from patching.errors import RefusalCircuitsError
from patching.interventions import AblationKind

PAIR_CHOICES: tuple[str, ...] = ("all", "refused")
# How the per-head steps measure (circuits.screening): screen first, or every head exactly.
EXACT: tuple[str, ...] = ("screened", "all")


@dataclass(frozen=True)
class AuditConfig:
    """Every setting of an audit (all recorded in ``audit.json``'s ``settings``).

    ``negative_heads``, ``ablation_compare`` and ``metric_check`` choose the optional
    steps (:func:`circuits.audit.pipeline.steps_for`); ``figures`` the PNG/SVG export.
    ``pairs="refused"`` restricts every statistic to the pairs whose harmful prompt
    the model refuses and whose control it does not (judged on greedy continuations
    of ``gen_tokens`` tokens); ``metric_check`` measures the top ``n_check_heads``
    heads again under the other interchange metric (:mod:`circuits.metric_check`).
    The role rules' sizes are minimum effects in percent of the refusal gap:
    ``min_gate_effect_pct`` of the interchange gap for the gate's necessity,
    ``min_amplifier_pct`` of the DLA gap for an amplifier's harmful-minus-control
    DLA, and ``min_amplifier_fall_pct`` of that contrast for its fall under the
    gate's knockout; everything else is judged against nulls
    (``docs/science.md#roles``).
    ``n_null`` random band heads make the cascade's null (99: p can reach 0.01).

    Speed (:mod:`circuits.screening`): with ``exact="screened"`` the per-head steps
    (interchange, down-scaling, ablation) rank every head by a gradient estimate and
    measure exactly only the top ``screen_k`` heads of each ranking, plus the top
    ``screen_band_k`` of the depth band for the interchange; ``exact="all"``
    measures every head, and so does a model with at most ``screen_min_heads``
    heads (the organism's 32).
    """

    n: int | None = None
    seed: int = 0
    band: tuple[float, float] = (0.25, 0.65)
    metric: str = "refusal_score"
    positions: str = "all"
    alpha: float = 0.05
    max_dla_share: float = 0.01
    min_gate_effect_pct: float = 1.0
    band_ratio: float = 0.5
    max_gate_tries: int = 3
    knockout: AblationKind = "zero"
    min_amplifier_pct: float = 1.0
    min_amplifier_fall_pct: float = 5.0
    n_null: int = 99
    dose_alphas: tuple[float, ...] = DEFAULT_ALPHAS
    n_generate: int = 16
    gen_tokens: int = 8
    negative_scale: float = 0.1
    negative_min_raise: float = 0.05
    negative_top_pct: float = 5.0
    n_boot: int = DEFAULT_N_BOOT
    refusal_words: tuple[str, ...] = REFUSAL_WORDS
    figures: bool = True
    exact: str = "screened"
    screen_k: int = 16
    screen_band_k: int = 16
    screen_min_heads: int = 64
    negative_heads: bool = True
    ablation_compare: bool = True
    pairs: str = "all"
    metric_check: bool = True
    n_check_heads: int = 6
    cipher: bool = False
    cipher_seed: int = 0

    def __post_init__(self) -> None:
        if self.exact not in EXACT:
            raise RefusalCircuitsError(
                f"unknown exact={self.exact!r}; use one of {', '.join(EXACT)}"
            )
        if min(self.screen_k, self.screen_band_k) < 1:
            raise RefusalCircuitsError(
                f"screen_k ({self.screen_k}) and screen_band_k ({self.screen_band_k}) must be "
                f"at least 1; pass exact='all' to measure every head"
            )

    def settings(self) -> dict[str, Any]:
        """The settings as JSON values (tuples as lists)."""
        return {f.name: _plain(getattr(self, f.name)) for f in fields(self)}

    @classmethod
    def from_settings(cls, data: dict[str, Any]) -> AuditConfig:
        """The config of :meth:`settings` (keys that are no setting, e.g. ``judge``, ignored)."""
        known = {f.name for f in fields(cls)}
        values: dict[str, Any] = {
            k: (tuple(v) if isinstance(v, list) else v) for k, v in data.items() if k in known
        }
        return cls(**values)


def _plain(value: Any) -> Any:
    return list(value) if isinstance(value, tuple) else value
