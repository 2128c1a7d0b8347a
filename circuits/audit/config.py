"""The settings of an audit: :class:`AuditConfig` (all recorded in ``audit.json``)."""

from __future__ import annotations

from dataclasses import dataclass, fields
from typing import Any

from attribution.refusal_tokens import REFUSAL_WORDS
from attribution.statistics import DEFAULT_N_BOOT
from circuits.cliff import DEFAULT_ALPHA as CLIFF_ALPHA
from circuits.cliff import DEFAULT_TOP_PERCENT, MIN_CLASS, TRACE_ABLATIONS
from circuits.dose_response import DEFAULT_ALPHAS
from patching.errors import RefusalCircuitsError
from patching.interventions import AblationKind

PAIR_CHOICES: tuple[str, ...] = ("all", "refused")
# How the per-head steps measure (circuits.screening): screen first, or every head exactly.
EXACT: tuple[str, ...] = ("screened", "all")
# Random head sets per k of the cliff step's top-k% ablation: each costs one generation
# over the harmful prompts, so the audit draws 9 (empirical p down to 0.1) where the
# ``cliff`` command draws 99; ask for more with cliff_random_draws.
AUDIT_CLIFF_RANDOM_DRAWS = 9


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

    ``cliff`` adds the refusal-cliff step (:func:`circuits.cliff.cliff_step`,
    docs/science.md#refusal-cliff): the probe at ``cliff_layer`` (default: the best
    cross-validated AUC), traces of ``cliff_gen_tokens`` tokens read with
    ``cliff_answer_tokens`` answer tokens, and with ``cliff_tracing`` the head tracing
    (``cliff_ablation``, scale ``cliff_alpha``) and the top ``cliff_top_percent``% ablations
    against ``cliff_random_draws`` random head sets each (:data:`AUDIT_CLIFF_RANDOM_DRAWS`),
    ``cliff_renormalise`` as the paper's code does; ``cliff_min_class`` examples a side.

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
    cliff: bool = False
    cliff_layer: int | None = None
    cliff_gen_tokens: int = 64
    cliff_answer_tokens: int = 8
    cliff_tracing: bool = True
    cliff_ablation: str = "scale"
    cliff_alpha: float = CLIFF_ALPHA
    cliff_top_percent: tuple[float, ...] = DEFAULT_TOP_PERCENT
    cliff_random_draws: int = AUDIT_CLIFF_RANDOM_DRAWS
    cliff_renormalise: bool = False
    cliff_min_class: int = MIN_CLASS

    def __post_init__(self) -> None:
        self._check_cliff()
        if self.exact not in EXACT:
            raise RefusalCircuitsError(
                f"unknown exact={self.exact!r}; use one of {', '.join(EXACT)}"
            )
        if min(self.screen_k, self.screen_band_k) < 1:
            raise RefusalCircuitsError(
                f"screen_k ({self.screen_k}) and screen_band_k ({self.screen_band_k}) must be "
                f"at least 1; pass exact='all' to measure every head"
            )

    def _check_cliff(self) -> None:
        """The cliff step's settings, before any model work (the command names its options)."""
        if self.cliff_ablation not in TRACE_ABLATIONS:
            raise RefusalCircuitsError(
                f"unknown cliff_ablation={self.cliff_ablation!r}; use one of "
                f"{', '.join(TRACE_ABLATIONS)}"
            )
        if not 0.0 <= self.cliff_alpha < 1.0:
            raise RefusalCircuitsError(
                f"cliff_alpha={self.cliff_alpha}: a down-scaling in [0, 1), e.g. 0.1"
            )
        bad = [p for p in self.cliff_top_percent if not 0.0 < p <= 100.0]
        if bad or not self.cliff_top_percent:
            raise RefusalCircuitsError(
                f"cliff_top_percent={list(self.cliff_top_percent)}: percentages in (0, 100], "
                "e.g. 1.5 3 10"
            )
        for name, least in (
            ("cliff_gen_tokens", 1),
            ("cliff_answer_tokens", 1),
            ("cliff_random_draws", 0),
            ("cliff_min_class", 2),
            ("cliff_layer", 0),
        ):
            value = getattr(self, name)
            if value is not None and value < least:
                raise RefusalCircuitsError(f"{name}={value}: use {least} or more")

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
