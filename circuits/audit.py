"""The audit: one pipeline from a model and prompt pairs to its refusal circuit.

``audit(model, pairs, config)`` runs, in order, each step stored as it finishes
(:mod:`circuits.store`), so an interrupted audit resumes where it stopped and a
changed setting recomputes only the steps that read it. Every step is also keyed
on the model's fingerprint (:mod:`patching.fingerprint`: weights, config,
tokenizer, chat template, dtype, device kind, toolkit version), so nothing
computed with other weights or another dtype is reused; ``result.steps`` lists
what was computed, reused and set aside, and its ``notes`` say it in words:

1. **interchange** necessity and sufficiency of every head over the pairs
   (:func:`attribution.interchange.interchange_test`), restated on the
   pooled scale (:mod:`attribution.statistics`) with sign-flip p and BH q;
2. **DLA** of every head (:func:`attribution.dla.direct_logit_attribution`);
3. **gate**: the best significant, DLA-dark candidate of the depth band whose
   **knockout** lowers later heads' DLA (tried in order of necessity), and its
   band; the **amplifiers** come out of the same knockout;
4. **cascade**: the gate's knockout against random band heads' knockouts;
5. **dose-response** of the gate's output scale;
6. **negative heads** by down-scaling on harmful and jailbreak-framed prompts,
   and the attack success rate with the top ones ablated;
7. **ablation vs interchange**: per-head ablation ranked beside necessity.

The result (:class:`AuditResult`) serialises to ``audit.json``; with an output
directory the audit also writes ``report.html`` and, where a renderer exists,
PNG/SVG figures.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

import numpy as np
import torch
from tqdm.auto import tqdm

from attribution.dla import DLAResult, direct_logit_attribution
from attribution.interchange import interchange_test
from attribution.metrics import greedy_token
from attribution.refusal_tokens import REFUSAL_WORDS, refusal_token_ids
from attribution.statistics import DEFAULT_N_BOOT, EffectStats, effect_stats, pooled_scale
from circuits.ablation_compare import AblationComparison
from circuits.behaviour import Judge
from circuits.cascade import (
    CascadeResult,
    amplifier_change,
    knockout_dla,
    null_heads,
    percent_change,
)
from circuits.dose_response import DEFAULT_ALPHAS, DoseResponse, dose_response
from circuits.knockout import Head, capture_z, knockouts
from circuits.negative_heads import (
    NegativeHeadsResult,
    attack_success,
    downscale_raises,
    per_head_scores,
    top_percent,
)
from circuits.provenance import versions
from circuits.roles import (
    depth_band,
    dla_shares,
    gate_band,
    gate_candidates,
    select_amplifiers,
    select_negatives,
)
from circuits.store import StepStore, digest
from patching.batching import batches_by_length
from patching.chat import ChatPrompt, format_chat
from patching.errors import RefusalCircuitsError
from patching.fingerprint import fingerprint
from patching.interventions import Ablation, AblationKind
from patching.model import HookedModel

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class AuditConfig:
    """Every setting of an audit (all recorded in ``audit.json``'s ``settings``)."""

    n: int | None = None
    seed: int = 0
    band: tuple[float, float] = (0.25, 0.65)
    metric: str = "refusal_score"
    positions: str = "all"
    alpha: float = 0.05
    max_dla_share: float = 0.01
    min_necessity: float = 0.1
    band_ratio: float = 0.5
    max_gate_tries: int = 3
    knockout: AblationKind = "zero"
    amplifier_min_share: float = 0.05
    amplifier_min_drop: float = 0.2
    n_null: int = 20
    dose_alphas: tuple[float, ...] = DEFAULT_ALPHAS
    n_generate: int = 16
    gen_tokens: int = 8
    negative_scale: float = 0.1
    negative_min_raise: float = 0.05
    negative_top_pct: float = 5.0
    n_boot: int = DEFAULT_N_BOOT
    refusal_words: tuple[str, ...] = REFUSAL_WORDS
    figures: bool = True
    negative_heads: bool = True
    ablation_compare: bool = True

    def settings(self) -> dict[str, Any]:
        return {f.name: _plain(getattr(self, f.name)) for f in fields(self)}

    @classmethod
    def from_settings(cls, data: dict[str, Any]) -> AuditConfig:
        known = {f.name for f in fields(cls)}
        values: dict[str, Any] = {
            k: (tuple(v) if isinstance(v, list) else v) for k, v in data.items() if k in known
        }
        return cls(**values)


def _plain(value: Any) -> Any:
    return list(value) if isinstance(value, tuple) else value


@dataclass(frozen=True)
class HeadFinding:
    """One named head with its interchange statistics and direct share."""

    layer: int
    head: int
    necessity: float
    ci: tuple[float, float]
    p: float
    q: float
    dla_share: float
    sufficiency: float
    knockout_change: float | None = None

    @property
    def label(self) -> str:
        return f"L{self.layer}H{self.head}"

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["ci"] = list(self.ci)
        if self.knockout_change is None:
            del data["knockout_change"]
        return data

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> HeadFinding:
        values = dict(data)
        values["ci"] = tuple(values["ci"])
        return cls(**values)


@dataclass
class AuditResult:
    """Everything an audit found, with the measurements behind it."""

    model: str
    n_layers: int
    n_heads: int
    n_pairs: int
    necessity: EffectStats
    sufficiency: EffectStats
    dla: Any  # DLAResult summary dict (per-head DLA, CIs, totals)
    gate: list[HeadFinding]
    gate_candidates: list[HeadFinding]
    amplifiers: list[HeadFinding]
    negative_heads: NegativeHeadsResult | None
    cascade: CascadeResult | None
    ablation_vs_interchange: AblationComparison | None
    dose_response: DoseResponse | None
    settings: dict[str, Any]
    versions: dict[str, str]
    seconds: float
    steps: dict[str, list[str]] = field(default_factory=dict)
    run: dict[str, Any] | None = None  # circuits.provenance.run_record of the command

    @property
    def band_layers(self) -> list[int]:
        return depth_band(self.n_layers, tuple(self.settings["band"]))  # type: ignore[arg-type]

    def summary(self) -> list[str]:
        """A short written summary (the report's opening)."""
        lines = [
            f"{self.model}: {self.n_layers} layers x {self.n_heads} heads, {self.n_pairs} pairs."
        ]
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
                "upstream of heads that fall when it is knocked out."
            )
        if self.amplifiers:
            lines.append(
                "Amplifiers: "
                + ", ".join(
                    f"{a.label} ({a.knockout_change:+.0%} under knockout)" for a in self.amplifiers
                )
                + "."
            )
        if self.cascade is not None:
            c = self.cascade
            lines.append(
                f"Knockout cascade ({c.kind}): amplifiers' DLA {c.effect:+.1f}% vs random band "
                f"heads {c.null_mean:+.1f}% ± {c.null_sd:.1f} (largest null drop "
                f"{c.null_max:.1f}%, empirical p={c.p:.3g}, {len(c.null_effects)} null heads)."
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
        if self.dose_response is not None:
            d = self.dose_response
            walk = ", ".join(f"{a:g}:{b}" for a, b in zip(d.alphas, d.dominant(), strict=True))
            lines.append(f"Dose-response of the gate's output (alpha: behaviour): {walk}.")
        # How much of it was resumed (a run that reused its steps takes seconds).
        notes = self.steps.get("notes") or []
        lines.append(f"Took {self.seconds:.1f} s" + "".join(f"; {n}" for n in notes) + ".")
        return lines

    def to_dict(self) -> dict[str, Any]:
        return _finite(
            {
                "model": self.model,
                "n_layers": self.n_layers,
                "n_heads": self.n_heads,
                "n_pairs": self.n_pairs,
                "gate": [h.to_dict() for h in self.gate],
                "gate_candidates": [h.to_dict() for h in self.gate_candidates],
                "amplifiers": [h.to_dict() for h in self.amplifiers],
                "negative_heads": None
                if self.negative_heads is None
                else self.negative_heads.to_dict(),
                "cascade": None if self.cascade is None else self.cascade.to_dict(),
                "ablation_vs_interchange": None
                if self.ablation_vs_interchange is None
                else self.ablation_vs_interchange.to_dict(),
                "dose_response": None
                if self.dose_response is None
                else self.dose_response.to_dict(),
                "necessity": self.necessity.to_dict(),
                "sufficiency": self.sufficiency.to_dict(),
                "dla": self.dla,
                "summary": self.summary(),
                "settings": self.settings,
                "versions": self.versions,
                "seconds": self.seconds,
                "steps": self.steps,
                **({"run": self.run} if self.run is not None else {}),
            }
        )

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> AuditResult:
        return cls(
            model=data["model"],
            n_layers=int(data["n_layers"]),
            n_heads=int(data["n_heads"]),
            n_pairs=int(data["n_pairs"]),
            necessity=EffectStats.from_dict(data["necessity"]),
            sufficiency=EffectStats.from_dict(data["sufficiency"]),
            dla=data["dla"],
            gate=[HeadFinding.from_dict(h) for h in data["gate"]],
            gate_candidates=[HeadFinding.from_dict(h) for h in data["gate_candidates"]],
            amplifiers=[HeadFinding.from_dict(h) for h in data["amplifiers"]],
            negative_heads=None
            if data["negative_heads"] is None
            else NegativeHeadsResult.from_dict(data["negative_heads"]),
            cascade=None if data["cascade"] is None else CascadeResult.from_dict(data["cascade"]),
            ablation_vs_interchange=None
            if data["ablation_vs_interchange"] is None
            else AblationComparison.from_dict(data["ablation_vs_interchange"]),
            dose_response=None
            if data["dose_response"] is None
            else DoseResponse.from_dict(data["dose_response"]),
            settings=dict(data["settings"]),
            versions=dict(data["versions"]),
            seconds=float(data["seconds"]),
            steps=dict(data.get("steps", {})),
            run=data.get("run"),
        )

    def to_json(self, path: str | Path) -> Path:
        out = Path(path)
        out.write_text(json.dumps(self.to_dict(), indent=1), encoding="utf-8")
        return out

    @classmethod
    def from_json(cls, path: str | Path) -> AuditResult:
        return cls.from_dict(json.loads(Path(path).read_text(encoding="utf-8")))


def _labels(heads: set[Head]) -> str:
    return ", ".join(f"L{a}H{b}" for a, b in sorted(heads)) or "none"


def _finite(value: Any) -> Any:
    """The same structure with NaN/inf as ``None`` (JSON has no NaN)."""
    if isinstance(value, dict):
        return {k: _finite(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_finite(v) for v in value]
    if isinstance(value, float) and not np.isfinite(value):
        return None
    return value


def shuffle_labels(pairs: Sequence[Any], seed: int) -> list[Any]:
    """The pairs with harmful and control swapped in a random half (a null audit's input)."""
    from patching.pairs import PromptPair

    rng = np.random.default_rng(seed)
    out = []
    for pair in pairs:
        if rng.random() < 0.5:
            pair = PromptPair(harmful=pair.control, control=pair.harmful, category=pair.category)
        out.append(pair)
    return out


def _answers(model: HookedModel, prompts: Sequence[ChatPrompt]) -> torch.Tensor:
    """Each prompt's greedy first response token (the DLA's answer token ``a``)."""
    out = torch.zeros(len(prompts), dtype=torch.long)
    for idx, tokens in batches_by_length(prompts, 16):
        out[idx] = greedy_token(model.forward(tokens)[:, -1]).cpu()
    return out


def _note(say: Callable[[str], None], line: str) -> None:
    """A line about resuming: logged, and shown with the progress output."""
    logger.info(line)
    say(line)


def _judge_name(judge: Judge | None) -> str:
    return "keyword" if judge is None else getattr(judge, "__qualname__", type(judge).__name__)


def audit(
    model: HookedModel,
    pairs: Sequence[Any],
    config: AuditConfig | None = None,
    out_dir: str | Path | None = None,
    progress: bool = True,
    *,
    jailbreak: Sequence[Any] = (),
    judge: Judge | None = None,
    run: dict[str, Any] | None = None,
) -> AuditResult:
    """Audit ``model``'s refusal circuit over ``pairs`` (see the module docstring).

    Args:
        pairs: prompt pairs (``.harmful``, ``.control``); ``config.n`` keeps the first n.
        out_dir: where steps, ``audit.json``, ``report.html`` and figures go; a rerun
            with the same directory loads every finished step.
        jailbreak: jailbreak-framed pairs for the negative-head step (optional).
        judge: behaviour classifier ``str -> class``; the keyword judge by default.
        run: the command's run record (:func:`circuits.provenance.run_record`), kept in
            ``audit.json`` under ``"run"``.
    """
    config = config or AuditConfig()
    began = time.perf_counter()
    pairs = list(pairs)[: config.n] if config.n else list(pairs)
    if not pairs:
        raise RefusalCircuitsError("no prompt pairs given; pass at least one pair")
    jailbreak = list(jailbreak)[: config.n] if config.n else list(jailbreak)
    out = Path(out_dir) if out_dir is not None else None
    # Every step is keyed on the model's fingerprint (weights, config, tokenizer,
    # chat template, dtype, device kind, toolkit version): nothing stored for
    # another model is ever reused.
    store = StepStore(out, context=fingerprint(model))
    say: Callable[[str], None] = tqdm.write if progress else (lambda _: None)
    if out is not None:
        stored = store.stored()
        if stored:
            _note(say, f"resuming {out}: {stored} finished steps of this model stored")
        elif changed := store.changed():
            what = ", ".join(changed)
            _note(say, f"{out} holds steps of another run ({what} differ): not reused")
    tok = model.tokenizer
    harmful = [format_chat(tok, p.harmful) for p in pairs]
    control = [format_chat(tok, p.control) for p in pairs]
    jb_harmful = [format_chat(tok, p.harmful) for p in jailbreak]
    jb_control = [format_chat(tok, p.control) for p in jailbreak]
    refusal_ids = refusal_token_ids(tok, config.refusal_words)
    answers = _answers(model, control)
    s = config
    base = {
        "model": model.name,
        "shape": [model.n_layers, model.n_heads, model.d_model],
        "pairs": digest([[p.harmful, p.control] for p in pairs]),
        "refusal_words": list(s.refusal_words),
    }
    band_layers = depth_band(model.n_layers, s.band)

    # 1. interchange ------------------------------------------------------
    say("[1/7] interchange necessity and sufficiency of every head")
    ic_deps = {**base, "metric": s.metric, "positions": s.positions}

    def run_interchange() -> dict[str, Any]:
        result = interchange_test(
            model,
            pairs,
            metric=s.metric,
            positions=s.positions,  # type: ignore[arg-type]
            refusal_words=s.refusal_words,
            chunk_dir=store.folder("interchange", ic_deps),
            seed=s.seed,
            progress=progress,
        )
        return {
            "gap": result.gap.tolist(),
            "necessity": result.necessity_drop.tolist(),
            "sufficiency": result.sufficiency_rise.tolist(),
        }

    ic = store.step("interchange", ic_deps, run_interchange)
    gaps = np.asarray(ic["gap"], dtype=np.float64)
    scale = pooled_scale(gaps)
    necessity = effect_stats(
        np.asarray(ic["necessity"], dtype=np.float64) / scale, seed=s.seed, n_boot=s.n_boot
    )
    sufficiency = effect_stats(
        np.asarray(ic["sufficiency"], dtype=np.float64) / scale, seed=s.seed, n_boot=s.n_boot
    )

    # 2. DLA ----------------------------------------------------------------
    say("[2/7] direct logit attribution")
    dla_data = store.step(
        "dla",
        {**base, "seed": s.seed, "n_boot": s.n_boot},
        lambda: direct_logit_attribution(
            model,
            pairs,
            refusal_words=s.refusal_words,
            n_boot=s.n_boot,
            seed=s.seed,
            progress=progress,
        ).to_dict(),
    )
    dla = DLAResult.from_dict(dla_data)
    shares = dla_shares(dla.per_head)
    clean_harmful = dla.harmful_mean

    # 3. gate and amplifiers --------------------------------------------------
    say("[3/7] gate candidates and their knockouts")
    candidates = gate_candidates(
        necessity,
        shares,
        band_layers,
        alpha=s.alpha,
        max_dla_share=s.max_dla_share,
        min_necessity=s.min_necessity,
    )
    reference: list[dict[int, torch.Tensor]] | None = None
    if s.knockout != "zero":
        reference = capture_z(model, control, band_layers)
    ko_deps = {**base, "knockout": s.knockout, "seed": s.seed}

    def knocked(heads: Sequence[Head]) -> np.ndarray:
        data = store.step(
            "knockout",
            {**ko_deps, "heads": [list(h) for h in heads]},
            lambda: {
                "knocked": knockout_dla(
                    model, harmful, refusal_ids, answers, heads, s.knockout, reference, s.seed
                ).tolist()
            },
        )
        return np.asarray(data["knocked"], dtype=np.float64)

    def amplifiers_of(heads: Sequence[Head]) -> tuple[list[Head], np.ndarray]:
        change = percent_change(clean_harmful, knocked(heads)) / 100.0
        amps = select_amplifiers(
            clean_harmful,
            np.nan_to_num(change, nan=0.0),
            max(h[0] for h in heads),
            min_share=s.amplifier_min_share,
            min_drop=s.amplifier_min_drop,
        )
        return amps, change

    gate: list[Head] = []
    amplifiers: list[Head] = []
    change = np.full_like(clean_harmful, np.nan)
    for candidate in candidates[: s.max_gate_tries]:
        amps, ch = amplifiers_of([candidate])
        if amps:
            gate = gate_band(candidate, candidates, necessity, s.band_ratio)
            amplifiers, change = (amps, ch) if len(gate) == 1 else amplifiers_of(gate)
            break

    def finding(h: Head, with_change: bool = False) -> HeadFinding:
        return HeadFinding(
            layer=h[0],
            head=h[1],
            necessity=float(necessity.effect[h]),
            ci=(float(necessity.ci_low[h]), float(necessity.ci_high[h])),
            p=float(necessity.p[h]),
            q=float(necessity.q[h]),
            dla_share=float(shares[h]),
            sufficiency=float(sufficiency.effect[h]),
            knockout_change=float(change[h]) if with_change else None,
        )

    # 4. cascade ----------------------------------------------------------
    cascade: CascadeResult | None = None
    if gate:
        say("[4/7] knockout cascade against random heads of the band")
        nulls = null_heads(band_layers, model.n_heads, [*gate, *amplifiers], s.n_null, s.seed)
        null_effects = [
            amplifier_change(clean_harmful, knocked([h]), amplifiers)
            for h in tqdm(nulls, desc="cascade null", unit="head", disable=not progress)
        ]
        cascade = CascadeResult(
            gate=gate,
            kind=s.knockout,
            clean=clean_harmful,
            knocked=knocked(gate),
            amplifiers=amplifiers,
            effect=amplifier_change(clean_harmful, knocked(gate), amplifiers),
            null_heads=nulls,
            null_effects=null_effects,
        )
    else:
        say("[4/7] no gate: cascade skipped")

    # 5. dose-response ------------------------------------------------------
    dose: DoseResponse | None = None
    gen_deps = {"n_generate": s.n_generate, "gen_tokens": s.gen_tokens, "judge": _judge_name(judge)}
    if gate:
        say("[5/7] dose-response of the gate's output")
        dose_data = store.step(
            "dose_response",
            {**base, **gen_deps, "alphas": list(s.dose_alphas), "gate": gate},
            lambda: dose_response(
                model,
                harmful[: s.n_generate],
                refusal_ids,
                gate,
                alphas=s.dose_alphas,
                n_tokens=s.gen_tokens,
                judge=judge,
                progress=progress,
            ).to_dict(),
        )
        dose = DoseResponse.from_dict(dose_data)
    else:
        say("[5/7] no gate: dose-response skipped")

    # 6. negative heads -------------------------------------------------------
    negative: NegativeHeadsResult | None = None
    if s.negative_heads:
        say(f"[6/7] negative refusal heads (down-scaling x{s.negative_scale:g})")
        neg_prompts = harmful + jb_harmful
        neg_answers = torch.cat([answers, _answers(model, jb_control)]) if jb_control else answers
        neg_deps = {
            **base,
            "jailbreak": digest([[p.harmful, p.control] for p in jailbreak]),
            "scale": s.negative_scale,
        }

        def run_downscale() -> dict[str, Any]:
            from circuits.knockout import intervened_dla

            raises = downscale_raises(model, neg_prompts, refusal_ids, s.negative_scale, progress)
            heads_dla, _ = intervened_dla(model, neg_prompts, refusal_ids, neg_answers)
            return {"raises": raises.tolist(), "dla": heads_dla.mean(axis=0).tolist()}

        down = store.step("downscale", neg_deps, run_downscale)
        raises = effect_stats(
            np.asarray(down["raises"], dtype=np.float64) / scale, seed=s.seed, n_boot=s.n_boot
        )
        neg_dla = np.asarray(down["dla"], dtype=np.float64)
        negatives = select_negatives(
            raises,
            neg_dla,
            alpha=s.alpha,
            min_raise=s.negative_min_raise,
            min_dla_share=s.max_dla_share,
        )
        ablated = top_percent(raises, neg_dla, s.negative_top_pct)
        sets = {"harmful": harmful[: s.n_generate], "jailbreak": jb_harmful[: s.n_generate]}
        asr = store.step(
            "attack_success",
            {**neg_deps, **gen_deps, "ablated": [list(h) for h in ablated]},
            lambda: dict(
                zip(
                    ("before", "after"),
                    attack_success(model, sets, ablated, s.gen_tokens, judge),
                    strict=True,
                )
            ),
        )
        negative = NegativeHeadsResult(
            scale=s.negative_scale,
            raises=raises,
            harmful_dla=neg_dla,
            heads=negatives,
            ablated=ablated,
            top_pct=s.negative_top_pct,
            asr_before=asr["before"],
            asr_after=asr["after"],
        )

    # 7. ablation vs interchange -------------------------------------------
    comparison: AblationComparison | None = None
    if s.ablation_compare:
        say(f"[7/7] per-head {s.knockout} ablation vs interchange")

        def run_ablation() -> dict[str, Any]:
            ref = capture_z(model, control, range(model.n_layers)) if s.knockout != "zero" else None
            every = [(lay, h) for lay in range(model.n_layers) for h in range(model.n_heads)]
            rows = {h: knockouts([h], harmful, s.knockout, ref, s.seed) for h in every}

            def row_of(lay: int, h: int, i: int) -> Ablation:
                iv = rows[lay, h][i][0]
                assert isinstance(iv, Ablation)
                return iv

            clean, ablated_scores = per_head_scores(
                model, harmful, refusal_ids, row_of, progress, "ablation"
            )
            return {"drops": (clean[:, None, None] - ablated_scores).tolist()}

        drops = store.step(
            "ablation", {**base, "knockout": s.knockout, "seed": s.seed}, run_ablation
        )
        ablation = effect_stats(
            np.asarray(drops["drops"], dtype=np.float64) / scale, seed=s.seed, n_boot=s.n_boot
        )
        comparison = AblationComparison(
            kind=s.knockout, ablation=ablation, interchange=necessity, alpha=s.alpha
        )

    result = AuditResult(
        model=model.name,
        n_layers=model.n_layers,
        n_heads=model.n_heads,
        n_pairs=len(pairs),
        necessity=necessity,
        sufficiency=sufficiency,
        dla=dla.summary(),
        gate=[finding(h) for h in gate],
        gate_candidates=[finding(h) for h in candidates],
        amplifiers=[finding(h, with_change=True) for h in amplifiers],
        negative_heads=negative,
        cascade=cascade,
        ablation_vs_interchange=comparison,
        dose_response=dose,
        settings={**s.settings(), "n_jailbreak": len(jailbreak), "judge": _judge_name(judge)},
        versions=versions(),
        seconds=time.perf_counter() - began,
        steps={
            "computed": list(store.computed),
            "loaded": list(store.loaded),
            "set_aside": list(store.set_aside),
            "notes": store.notes(),
        },
        run=run,
    )
    for line in result.steps["notes"]:
        logger.info(line)  # the summary's last line says it too
    if out is not None:
        from circuits.audit_views import write_audit_outputs

        for path in write_audit_outputs(result, out, static=s.figures):
            say(f"wrote {path}")
    return result
