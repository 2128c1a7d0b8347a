"""What an audit found: :class:`AuditResult`, its named heads and its JSON form.

Both are :class:`attribution.result.Result` s: ``to_dict`` and ``from_dict`` come
from the fields and are each other's inverse (``summary`` is derived, written
for readers and not read back); NaN is written as ``null`` and read back as NaN.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, TypedDict

import numpy as np

from attribution.result import Result
from attribution.statistics import EffectStats, HeadStat
from circuits.ablation_compare import AblationComparison
from circuits.behaviour import PairBehaviour
from circuits.cascade import CascadeResult
from circuits.cipher import CipherContrast
from circuits.cipher_views import cipher_summary
from circuits.cliff import CliffResult
from circuits.cliff_views import cliff_summary
from circuits.dose_response import DoseResponse
from circuits.knockout import Head
from circuits.metric_check import MetricCheck
from circuits.negative_heads import NegativeHeadsResult
from circuits.roles import DropTest, GateCheck, depth_band
from circuits.screening import ScreenCheck
from circuits.views import display_name


class DLASummary(TypedDict):
    """The DLA step's headline numbers (:meth:`attribution.dla.DLAResult.summary`)."""

    model: str
    n_layers: int
    n_heads: int
    n_pairs: int
    per_head: list[list[float]]
    per_head_ci_low: list[list[float]]
    per_head_ci_high: list[list[float]]
    per_head_harmful: list[list[float]]
    per_head_control: list[list[float]]
    components: dict[str, float]
    total_logit_diff: float
    remainder: float
    residual_error: float
    refusal_tokens: list[Any]
    exact: bool
    note: str
    ci_level: float
    n_boot: int
    seed: int


@dataclass(frozen=True)
class HeadFinding(HeadStat):
    """A named head: its :class:`HeadStat` of interchange necessity, plus what else was measured.

    ``value`` is the necessity (written as ``necessity``, its interval as ``ci``, as
    ``audit.json`` always had it); ``dla_share`` is its share of the positive direct
    effect, ``sufficiency`` its interchange sufficiency and ``knockout_change``
    (amplifiers only, else absent from the JSON) the change of its DLA under the
    gate's knockout.
    """

    value: float = field(metadata={"key": "necessity"})
    ci_low: float = field(default=float("nan"), metadata={"key": "ci", "index": 0})
    ci_high: float = field(default=float("nan"), metadata={"key": "ci", "index": 1})
    n: int = field(default=0, metadata={"omit": 0})  # not in audit.json (n_pairs is)
    dla_share: float = float("nan")
    sufficiency: float = float("nan")
    knockout_change: float | None = field(default=None, metadata={"omit": None})

    @property
    def necessity(self) -> float:
        return self.value

    @property
    def ci(self) -> tuple[float, float]:
        return (self.ci_low, self.ci_high)


# The summary names at most this many cliff heads (the report's table lists them all).
MAX_CLIFF_HEADS = 10


@dataclass(frozen=True)
class CliffHead(Result):
    """A head of the cliff step's tracing beside the audit's roles (``AuditResult.cliff_heads``).

    ``rank``: its rank among the traced heads by probe change (1 = suppresses refusal
    most; ``None``: at or after the probe layer, not traced); ``effect``: the mean
    change of the probe's log-odds at the last position before the answer under the
    tracing's ablation (> 0: the head suppresses refusal there), ``q`` its BH q;
    ``cliff``: one of the cliff heads, the heads the step ablates in its largest top-k%
    set that have a positive effect (ranked by effect, not by q: a sign-flip test over
    traces with exact zeros, e.g. the organism's unsusceptible ones, has little power,
    while a head with tiny consistent effects can have a small q); ``roles``: what the
    audit found it to be (``gate``, ``amplifier``, ``negative head``; empty for none).
    """

    layer: int
    head: int
    rank: int | None
    effect: float
    q: float
    cliff: bool
    roles: list[str]

    @property
    def label(self) -> str:
        return f"L{self.layer}H{self.head}"


@dataclass
class AuditResult(Result):
    """Everything an audit found, with the measurements behind it.

    ``audit.json`` is :meth:`to_dict`: the written ``summary``, then every field.
    """

    model: str
    n_layers: int
    n_heads: int
    n_pairs: int
    gate: list[HeadFinding]
    gate_candidates: list[HeadFinding]
    amplifiers: list[HeadFinding]
    negative_heads: NegativeHeadsResult | None
    cascade: CascadeResult | None
    ablation_vs_interchange: AblationComparison | None
    dose_response: DoseResponse | None
    necessity: EffectStats
    sufficiency: EffectStats
    dla: DLASummary
    settings: dict[str, Any]  # AuditConfig.settings() with n_jailbreak and judge
    versions: dict[str, str]
    seconds: float
    steps: dict[str, list[str]] = field(default_factory=dict)  # computed, loaded, set_aside, notes
    run: dict[str, Any] | None = None  # circuits.provenance.run_record of the command
    behaviour: PairBehaviour | None = None  # every given pair's judged continuations
    kept_pairs: list[int] | None = None  # pairs="refused": the given pairs' indices kept
    metric_check: MetricCheck | None = None  # the top heads under the other metric
    cipher: CipherContrast | None = None  # cipher contrast (optional step)
    cliff: CliffResult | None = None  # the refusal cliff (optional step)
    # The published rule's gate (largest necessity + sufficiency among DLA-dark band heads),
    # why the top band heads are or are not the gate, and the gate's amplifier drop tests.
    published_gate: HeadFinding | None = None
    gate_checks: list[GateCheck] = field(default_factory=list)
    amplifier_tests: list[DropTest] = field(default_factory=list)
    # Per screened step: the heads measured exactly and the screen's recall check.
    screening: dict[str, ScreenCheck] = field(default_factory=dict)

    @property
    def band_layers(self) -> list[int]:
        low, high = self.settings["band"]
        return depth_band(self.n_layers, (float(low), float(high)))

    def summary(self) -> list[str]:
        """A short written summary (the report's opening)."""
        lines = [
            f"{display_name(self.model)}: {self.n_layers} layers x {self.n_heads} heads, "
            f"{self.n_pairs} pairs."
        ]
        lines += self.behaviour_lines()
        if self.gate:
            g = self.gate[0]
            band = ", ".join(h.label for h in self.gate)
            lines.append(
                f"Gate {g.label} (depth {g.layer / self.n_layers:.0%}): interchange necessity "
                f"{g.necessity:.2f} [{g.ci[0]:.2f}, {g.ci[1]:.2f}], q={g.q:.2g}, sufficiency "
                f"{g.sufficiency:.2f}, direct DLA share {g.dla_share:.2%}"
                + (f"; gate band {band}." if len(self.gate) > 1 else ".")
            )
        else:
            lines.append(
                "No gate: no head of the depth band is significantly necessary, DLA-dark and "
                "upstream of heads that fall when it is knocked out. Top band heads:"
            )
            lines += [self._check_line(c) for c in self.gate_checks] or [
                "  none: no band head has a positive interchange necessity."
            ]
        lines += self.published_lines()
        tests = {(t.layer, t.head): t for t in self.amplifier_tests}
        if self.amplifiers:
            lines.append(
                "Amplifiers (harmful-minus-control DLA, its fall under the gate's knockout, in % "
                "of the DLA gap, vs knocking out random upstream band heads): "
                + "; ".join(_drop_text(a, tests.get((a.layer, a.head))) for a in self.amplifiers)
                + "."
            )
        if self.cascade is not None:
            c = self.cascade
            lines.append(
                f"Knockout cascade ({c.kind}, both prompts of each pair): amplifiers' "
                f"harmful-minus-control DLA {c.effect:+.1f}% ({c.in_gap(c.effect):+.1%} of the "
                f"DLA gap) vs random band heads {c.null_mean:+.1f}% ± {c.null_sd:.1f} (largest "
                f"null drop {c.null_max:.1f}%), z={c.z:+.2f}, empirical p={c.p:.3g} "
                f"({len(c.null_effects)} null heads: smallest p {c.min_p:.2g})."
            )
        neg = self.negative_heads
        if neg is None:
            lines.append("Negative heads: not run (negative_heads=False).")
        elif neg.heads:
            lines.append(
                "Negative refusal heads: "
                + ", ".join(f"L{a}H{b}" for a, b in neg.heads)
                + f". Ablating the top {neg.top_pct:g}% ("
                + ", ".join(f"L{a}H{b}" for a, b in neg.ablated)
                + ") changes the attack success rate "
                + "; ".join(
                    f"{k}: {neg.asr_before[k]:.0%} -> {neg.asr_after[k]:.0%}"
                    for k in neg.asr_before
                )
                + "."
            )
        else:
            lines.append("No negative refusal head.")
        comp = self.ablation_vs_interchange
        if comp is not None:
            lines.append(
                f"Ablation ({comp.kind}) vs interchange rankings: Spearman "
                f"{comp.rank_correlation:+.2f}; "
                f"interchange only: {_labels(comp.found_by_interchange - comp.found_by_ablation)}; "
                f"ablation only: {_labels(comp.found_by_ablation - comp.found_by_interchange)}."
            )
        if self.metric_check is not None:
            lines.append(self.metric_check.line())
        if self.cipher is not None:
            lines += cipher_summary(self.cipher)
        if self.cliff is not None:
            lines += [f"Refusal cliff: {line}" for line in cliff_summary(self.cliff)]
            lines += self.cliff_lines()
        if self.dose_response is not None:
            d = self.dose_response
            walk = ", ".join(f"{a:g}:{b}" for a, b in zip(d.alphas, d.dominant(), strict=True))
            lines.append(f"Dose-response of the gate's output (alpha: behaviour): {walk}.")
        # Which heads were measured exactly, and how well the screen ranked them.
        lines += [check.line() for check in self.screening.values()]
        # How much of it was resumed (a run that reused its steps takes seconds).
        notes = self.steps.get("notes") or []
        lines.append(f"Took {self.seconds:.1f} s" + "".join(f"; {n}" for n in notes) + ".")
        return lines

    def behaviour_lines(self) -> list[str]:
        """What the model does with the given pairs, and which of them the statistics use."""
        b = self.behaviour
        if b is None:
            return []
        n = len(b.harmful_class)
        refused = {side: b.refusal_rate(side) for side in ("harmful", "control")}
        line = (
            f"Greedy continuations ({b.gen_tokens} tokens): harmful prompts refused "
            f"{refused['harmful']:.0%} ({round(refused['harmful'] * n)}/{n}), controls refused "
            f"{refused['control']:.0%} ({round(refused['control'] * n)}/{n}); "
        )
        if self.kept_pairs is None:
            return [line + f"statistics over all {n} pairs ({sum(b.refused)} refused)."]
        return [line + f"statistics over the {len(self.kept_pairs)} refused pairs of {n}."]

    def _check_line(self, c: GateCheck) -> str:
        """One band head's numbers and the criteria it failed (a "no gate" explanation)."""
        s = self.settings
        reasons = {
            "significance": f"not significant (q={c.q:.2g} >= {s['alpha']:g})",
            "min effect": f"necessity under the minimum {s['min_gate_effect_pct']:g}% of the gap",
            "DLA-dark": f"DLA share {c.dla_share:.2%} >= {s['max_dla_share']:.0%}",
            "amplifiers": "its knockout made no head after it fall beyond the random-head null",
            "not tried": f"beyond the first {s['max_gate_tries']} candidates tried",
        }
        return (
            f"  {c.label}: necessity {c.necessity:.1%} of the gap (q={c.q:.2g}), sufficiency "
            f"{c.sufficiency:.1%}, DLA share {c.dla_share:.2%}: "
            + ("; ".join(reasons[f] for f in c.failed) or "passes")
            + "."
        )

    def published_lines(self) -> list[str]:
        """The published rule's gate beside the audit's, and whether they agree."""
        pub = self.published_gate
        if pub is None:
            return []
        line = (
            f"Published rule (largest necessity + sufficiency among DLA-dark band heads): "
            f"{pub.label}, necessity {pub.necessity:.1%} + sufficiency {pub.sufficiency:.1%} of "
            f"the gap (q={pub.q:.2g})"
        )
        named = [(g.layer, g.head) for g in self.gate]
        if not named:
            return [line + "; the audit names no gate."]
        agree = (pub.layer, pub.head) in named
        return [
            line
            + (
                "; agrees with the audit's gate."
                if agree
                else "; DISAGREES with the "
                "audit's gate " + ", ".join(g.label for g in self.gate) + "."
            )
        ]

    def roles(self) -> dict[Head, list[str]]:
        """The audit's named heads and their roles (gate, amplifier, negative head)."""
        named: dict[Head, list[str]] = {}
        for role, heads in (
            ("gate", [(g.layer, g.head) for g in self.gate]),
            ("amplifier", [(a.layer, a.head) for a in self.amplifiers]),
            ("negative head", self.negative_heads.heads if self.negative_heads else []),
        ):
            for a, b in heads:
                named.setdefault((int(a), int(b)), []).append(role)
        return named

    def cliff_heads(self) -> list[CliffHead]:
        """The cliff heads (by rank), then the audit's other named heads, each with both
        findings (:class:`CliffHead`); empty without the cliff step's head tracing."""
        tracing = self.cliff.tracing if self.cliff is not None else None
        if tracing is None:
            return []
        effect, q = tracing.stats.effect, tracing.stats.q
        traced = [(h.layer, h.head) for h in tracing.ranked if np.isfinite(h.value)]
        rank = {h: i for i, h in enumerate(traced, start=1)}
        k = max((len(a.heads) for a in self.cliff.ablations), default=0)  # type: ignore[union-attr]
        cliff = [h for h in traced[:k] if effect[h] > 0]
        named = self.roles()
        others = sorted((h for h in named if h not in cliff), key=lambda h: rank.get(h, 10**9))
        return [
            CliffHead(h[0], h[1], rank.get(h), float(effect[h]), float(q[h]), h in cliff,
                      named.get(h, []))
            for h in [*cliff, *others]
        ]  # fmt: skip

    def cliff_lines(self) -> list[str]:
        """The cliff heads, and whether they are the audit's gate, amplifiers or negative heads."""
        heads = self.cliff_heads()
        if self.cliff is None or self.cliff.tracing is None:
            return []

        def text(h: CliffHead) -> str:
            if h.rank is None:
                return f"{h.label} not traced (at or after the probe layer)"
            return f"{h.label} rank {h.rank} ({h.effect:+.2f} log-odds, q={h.q:.2g})"

        cliff = [h for h in heads if h.cliff]
        more = len(cliff) - MAX_CLIFF_HEADS
        lines = [
            "Cliff heads (the top-ranked heads of the largest top-k% set ablated, by the "
            "probe's change before the answer): "
            + ("; ".join(text(h) for h in cliff[:MAX_CLIFF_HEADS]) or "none")
            + (f" and {more} more (report table)" if more > 0 else "")
            + "."
        ]
        named = [h for h in heads if h.roles]
        if not named:
            return lines
        both = [h for h in named if h.cliff]
        lines.append(
            (
                "Cliff heads the audit also named: "
                + "; ".join(f"{text(h)} = {' and '.join(h.roles)}" for h in both)
                if both
                else "None of the audit's named heads is a cliff head"
            )
            + (
                "; the others in the cliff's tracing: "
                + "; ".join(f"{' and '.join(h.roles)} {text(h)}" for h in named if not h.cliff)
                if len(both) < len(named)
                else ""
            )
            + "."
        )
        return lines

    # -- serialisation ------------------------------------------------------
    def derived(self) -> dict[str, Any]:
        if self.cliff is None:
            return {"summary": self.summary()}
        return {"summary": self.summary(), "cliff_heads": self.cliff_heads()}


def _drop_text(a: HeadFinding, t: DropTest | None) -> str:
    if t is None:  # an audit.json written before the drop tests
        return f"{a.label} ({(a.knockout_change or float('nan')):+.0%} under knockout)"
    return (
        f"{t.label} {t.contrast:.1%}, falls {t.drop:+.1%} ({t.fall:.0%} of itself; null "
        f"{t.null_mean:+.1%} ± "
        f"{t.null_sd:.1%}, max {t.null_max:+.1%}, z={t.z:+.1f}, p={t.p:.2g})"
    )


def _labels(heads: set[Head]) -> str:
    return ", ".join(f"L{a}H{b}" for a, b in sorted(heads)) or "none"
