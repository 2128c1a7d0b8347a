"""Plotly views of an audit: the figures of ``report.html`` and of papers.

Each view takes the :class:`~circuits.audit.result.AuditResult` (this module
reads results and never runs an audit).

- :func:`head_maps`: interchange necessity, sufficiency (one scale, % of the
  metric's gap) and the harmful - control DLA (logits) side by side, gate,
  amplifiers and negative heads marked, significance on hover; unmeasured
  (NaN) heads grey. :func:`necessity_heatmap` is its first panel alone.
- :func:`audit_tables`: the report's tables of numbers (gate candidates,
  amplifiers, the cascade against its null, the metric cross-check, each pair's
  behaviour); a new statistic is one more entry of :func:`finding_columns`,
  :func:`amplifier_columns` or :data:`CASCADE_ROWS`.
- :func:`cascade_chart`: percentage change of each amplifier's DLA under the
  gate's knockout, beside the random-head null (mean ± sd, largest drop).
- :func:`dose_response_chart`: refusal score along alpha with stacked
  behaviour-class shares.
- :func:`ranking_comparison`: ablation effect against interchange necessity
  per head, with the rank correlation in the title.
- :func:`compare_figures`: several audits side by side against model size.

Units and the report's layout: ``docs/science.md#report``.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import plotly.graph_objects as go
from plotly.subplots import make_subplots

from attribution.statistics import EffectStats
from circuits.ablation_compare import AblationComparison
from circuits.audit.result import AuditResult, HeadFinding
from circuits.behaviour import BEHAVIOURS
from circuits.cascade import CascadeResult
from circuits.cipher_views import cipher_figures
from circuits.cliff_views import cliff_figures, probe_table
from circuits.export import save_figures
from circuits.knockout import Head
from circuits.roles import DropTest, GateCheck
from circuits.views import (
    DLA_UNIT,
    Table,
    display_name,
    head_heatmap,
    head_map_figure,
    number,
    show_not_measured,
    symmetric_range,
    write_report,
)

CLASS_COLOURS = {
    "refusal": "#b2182b",
    "evasion": "#f4a582",
    "constructive": "#92c5de",
    "answer": "#2166ac",
}


METRIC_LABELS = {"refusal_score": "refusal-score", "logit_diff": "logit-diff", "nll": "NLL"}


def gap_unit(result: AuditResult) -> str:
    """The unit of interchange effects in the figures: percent of the metric's pooled gap."""
    metric = str(result.settings.get("metric", "refusal_score"))
    return f"% of the {METRIC_LABELS.get(metric, metric)} gap"


def _effect_hover(result: AuditResult, stats: EffectStats, which: str) -> np.ndarray:
    hover = np.empty(stats.effect.shape, dtype=object)
    for layer in range(result.n_layers):
        for head in range(result.n_heads):
            h = (layer, head)
            line = f"L{layer}H{head}<br>{which} {number(100 * stats.effect[h], '+.1f', '%')}"
            if np.isfinite(stats.effect[h]):
                line += (
                    f" [{100 * stats.ci_low[h]:+.1f}, {100 * stats.ci_high[h]:+.1f}]"
                    f"<br>p={stats.p[h]:.2g}, q={stats.q[h]:.2g}"
                )
            hover[h] = line
    return hover


def _marks(result: AuditResult) -> list[tuple[Head, str]]:
    marks = [((h.layer, h.head), "G") for h in result.gate]
    marks += [((h.layer, h.head), "A") for h in result.amplifiers]
    if result.negative_heads is not None:
        marks += [((a, b), "N") for a, b in result.negative_heads.heads]
    return marks


def _annotate(fig: go.Figure, marks: list[tuple[Head, str]], axis: str = "") -> None:
    for (layer, head), letter in marks:
        fig.add_annotation(
            x=f"H{head}",
            y=f"L{layer}",
            xref=f"x{axis}",
            yref=f"y{axis}",
            text=f"<b>{letter}</b>",
            showarrow=False,
            font={"size": 16, "color": "black"},
        )


def necessity_heatmap(result: AuditResult) -> go.Figure:
    """Interchange necessity per head; the gate (G) and amplifiers (A) marked."""
    nec = result.necessity
    low, high = result.settings["band"]
    fig = head_map_figure(
        head_heatmap(
            100 * nec.effect,
            _effect_hover(result, nec, "necessity"),
            colorbar_title=f"necessity ({gap_unit(result)})",
        ),
        f"Interchange necessity (n={result.n_pairs} pairs); "
        f"G gate, A amplifier, N negative; gate band {low:.0%}-{high:.0%} of depth",
    )
    _annotate(fig, _marks(result))
    return fig


def head_maps(result: AuditResult) -> go.Figure:
    """Necessity, sufficiency (one scale) and the harmful - control DLA, side by side."""
    nec, suf = result.necessity, result.sufficiency
    dla = np.asarray(result.dla["per_head"], dtype=np.float64)
    fig = make_subplots(
        rows=1,
        cols=3,
        shared_yaxes=True,
        horizontal_spacing=0.1,
        subplot_titles=(
            "interchange necessity",
            "interchange sufficiency",
            "DLA, harmful − control",
        ),
    )
    zmax = symmetric_range(100 * nec.effect, 100 * suf.effect)
    unit = gap_unit(result)
    panels = [
        (100 * nec.effect, _effect_hover(result, nec, "necessity"), f"effect ({unit})", zmax),
        (100 * suf.effect, _effect_hover(result, suf, "sufficiency"), None, zmax),
        (dla, _dla_hover(result, dla), DLA_UNIT, None),
    ]
    for col, (values, hover, bar, top) in enumerate(panels, start=1):
        trace = head_heatmap(
            values, hover, colorbar_title=bar or "", zmax=top, showscale=bar is not None
        )
        # The shared effect bar stands between the sufficiency and DLA panels.
        domain = fig.layout[f"xaxis{2 if col == 1 else 3}"].domain
        trace.colorbar.update(x=domain[1] + 0.005, len=0.9, thickness=14, title_side="right")
        fig.add_trace(trace, row=1, col=col)
        _annotate(fig, _marks(result), "" if col == 1 else str(col))
    fig.update_xaxes(title_text="head")
    fig.update_yaxes(title_text="layer", autorange="reversed", row=1, col=1)
    fig.update_yaxes(autorange="reversed")
    fig.update_layout(
        title=f"Per-head maps (n={result.n_pairs} pairs); G gate, A amplifier, N negative",
        template="plotly_white",
        height=max(420, 22 * result.n_layers + 180),
    )
    return show_not_measured(fig, nec.effect, suf.effect, dla)


def _dla_hover(result: AuditResult, dla: np.ndarray) -> np.ndarray:
    hover = np.empty(dla.shape, dtype=object)
    for layer in range(result.n_layers):
        for head in range(result.n_heads):
            value = number(dla[layer, head], "+.4f", " logits")
            hover[layer, head] = f"L{layer}H{head}<br>DLA harmful − control {value}"
    return hover


def cascade_chart(result: AuditResult) -> go.Figure:
    """Per-amplifier % change under the gate knockout, and the random-head null."""
    fig = go.Figure()
    cascade = result.cascade
    if cascade is None:
        fig.update_layout(title="Knockout cascade: no gate was named", template="plotly_white")
        return fig
    per = cascade.per_amplifier()
    fig.add_trace(
        go.Bar(
            x=[*per, "amplifiers (sum)"],
            y=[*per.values(), cascade.effect],
            name="gate knocked out",
            marker_color="#b2182b",
        )
    )
    fig.add_trace(
        go.Bar(
            x=["random band heads (null)"],
            y=[cascade.null_mean],
            error_y={"type": "data", "array": [cascade.null_sd]},
            name=f"null mean ± sd (n={len(cascade.null_effects)})",
            marker_color="#999999",
        )
    )
    fig.add_trace(
        go.Scatter(
            x=["random band heads (null)"] * len(cascade.null_effects),
            y=cascade.null_effects,
            mode="markers",
            name="null heads",
            marker={"color": "#333333", "size": 6},
            text=[f"L{a}H{b}" for a, b in cascade.null_heads],
        )
    )
    gate = ", ".join(f"L{a}H{b}" for a, b in cascade.gate)
    fig.update_layout(
        title=f"Knockout cascade: {cascade.kind}-ablating {gate} changes amplifier contrast by "
        f"{cascade.effect:+.1f}% (null {cascade.null_mean:+.1f}%, z={cascade.z:+.1f}, "
        f"p={cascade.p:.3g})",
        xaxis_title="knocked-out amplifier heads, and the random band heads (null)",
        yaxis_title="change of harmful − control refusal DLA (% of clean)",
        template="plotly_white",
        barmode="group",
    )
    return fig


def dose_response_chart(result: AuditResult) -> go.Figure:
    """Refusal score along alpha (line) over the behaviour classes' shares (stacked bars)."""
    fig = make_subplots(specs=[[{"secondary_y": True}]])
    dose = result.dose_response
    if dose is None:
        fig.update_layout(title="Dose-response: no gate was named", template="plotly_white")
        return fig
    x = [f"{a:g}" for a in dose.alphas]
    for behaviour in BEHAVIOURS:
        fig.add_trace(
            go.Bar(
                x=x,
                y=[s[behaviour] for s in dose.shares],
                name=behaviour,
                marker_color=CLASS_COLOURS[behaviour],
                opacity=0.6,
            ),
            secondary_y=True,
        )
    fig.add_trace(
        go.Scatter(
            x=x,
            y=dose.score_mean,
            error_y={"type": "data", "array": dose.score_sd},
            mode="lines+markers",
            name="refusal score",
            line={"color": "black", "width": 3},
            text=dose.examples,
        ),
        secondary_y=False,
    )
    heads = ", ".join(f"L{a}H{b}" for a, b in dose.heads)
    fig.update_layout(
        title=f"Dose-response: {heads} output x alpha (n={dose.n_prompts} harmful prompts)",
        barmode="stack",
        template="plotly_white",
        xaxis_title="alpha (multiple of the gate's output)",
    )
    fig.update_yaxes(title_text="refusal score (log-odds)", secondary_y=False)
    fig.update_yaxes(
        title_text="share of greedy responses (fraction)",
        range=[0, 1],
        tickvals=[0, 0.25, 0.5, 0.75, 1],  # its own ticks, not the score axis's grid
        showgrid=False,
        secondary_y=True,
    )
    return fig


def ranking_comparison(result: AuditResult) -> go.Figure:
    """Ablation effect vs interchange necessity per head (one point per head)."""
    comp = result.ablation_vs_interchange
    if comp is None:
        return go.Figure(layout={"title": "Ablation vs interchange: not run"})
    n_heads = result.n_heads
    labels = [f"L{i // n_heads}H{i % n_heads}" for i in range(comp.ablation.effect.size)]
    inter, abl = comp.found_by_interchange, comp.found_by_ablation
    groups = {
        "both": inter & abl,
        "interchange only": inter - abl,
        "ablation only": abl - inter,
    }
    colours = {"both": "#7b3294", "interchange only": "#b2182b", "ablation only": "#2166ac"}
    fig = go.Figure()
    taken: set[int] = set()
    for name, heads in groups.items():
        idx = [a * n_heads + b for a, b in sorted(heads)]
        taken |= set(idx)
        fig.add_trace(_points(comp, idx, labels, name, colours[name]))
    rest = [i for i in range(len(labels)) if i not in taken]
    fig.add_trace(_points(comp, rest, labels, "neither", "#bbbbbb"))
    for trace in fig.data:  # in percent, as every other figure of the gap
        trace.x = [100 * v for v in trace.x]
        trace.y = [100 * v for v in trace.y]
    fig.update_layout(
        title=f"Per-head {comp.kind} ablation vs interchange necessity "
        f"(Spearman {comp.rank_correlation:+.2f})",
        xaxis_title=f"interchange necessity ({gap_unit(result)})",
        yaxis_title=f"{comp.kind}-ablation drop ({gap_unit(result)})",
        template="plotly_white",
    )
    return fig


def _points(
    comp: AblationComparison, idx: list[int], labels: list[str], name: str, colour: str
) -> go.Scatter:
    return go.Scatter(
        x=[float(comp.interchange.effect.flat[i]) for i in idx],
        y=[float(comp.ablation.effect.flat[i]) for i in idx],
        mode="markers+text",
        text=[labels[i] if name != "neither" else "" for i in idx],
        textposition="top center",
        hovertext=[labels[i] for i in idx],
        name=name,
        marker={"color": colour, "size": 9},
    )


def ranking_table(result: AuditResult, k: int = 12) -> go.Figure:
    """The top heads by interchange necessity with their ablation rank beside."""
    if result.ablation_vs_interchange is None:
        return go.Figure(layout={"title": "Rankings: ablation not run"})
    rows = result.ablation_vs_interchange.table(k)
    unit = gap_unit(result)
    columns = [
        "head",
        f"necessity ({unit})",
        "rank",
        f"ablation drop ({unit})",
        "rank",
        "q (interchange)",
    ]
    cells = [
        [f"L{r['layer']}H{r['head']}" for r in rows],
        [number(100 * r["interchange"], "+.1f") for r in rows],
        [r["interchange_rank"] for r in rows],
        [number(100 * r["ablation"], "+.1f") for r in rows],
        [r["ablation_rank"] for r in rows],
        [f"{r['interchange_q']:.2g}" for r in rows],
    ]
    fig = go.Figure(go.Table(header={"values": columns}, cells={"values": cells}))
    fig.update_layout(title="Rankings side by side (top heads by interchange necessity)")
    return fig


# -- the report's tables: one (column title, value of a finding) entry per column ----------
FindingColumn = tuple[str, Callable[[HeadFinding], str]]
CascadeRow = tuple[str, Callable[[CascadeResult], str]]


def _pct(value: float) -> str:
    return number(100 * value, "+.1f")


def finding_columns(result: AuditResult) -> list[FindingColumn]:
    """The columns of the gate candidates' table (a new statistic is one more entry)."""
    unit = gap_unit(result)
    gate = {(g.layer, g.head) for g in result.gate}
    return [
        ("head", lambda h: h.label),
        ("named", lambda h: "gate" if (h.layer, h.head) in gate else "candidate"),
        ("depth (% of layers)", lambda h: f"{100 * h.layer / result.n_layers:.0f}"),
        (f"necessity ({unit})", lambda h: _pct(h.value)),
        ("95% CI", lambda h: f"[{_pct(h.ci_low)}, {_pct(h.ci_high)}]"),
        ("p (sign-flip)", lambda h: number(h.p, ".2g")),
        ("q (BH, all heads)", lambda h: number(h.q, ".2g")),
        (f"sufficiency ({unit})", lambda h: _pct(h.sufficiency)),
        ("DLA share (% of the direct effect)", lambda h: number(100 * h.dla_share, ".2f")),
    ]


def amplifier_columns(result: AuditResult) -> list[FindingColumn]:
    """The columns of the amplifiers' table."""
    contrast = np.asarray(result.dla["per_head"], dtype=np.float64)
    harmful = np.asarray(result.dla.get("per_head_harmful", contrast), dtype=np.float64)
    return [
        ("head", lambda h: h.label),
        ("DLA harmful − control (logits)", lambda h: number(contrast[h.layer, h.head], "+.4f")),
        ("DLA on harmful (logits)", lambda h: number(harmful[h.layer, h.head], "+.4f")),
        (
            "change under the gate's knockout (%)",
            lambda h: _pct(h.knockout_change if h.knockout_change is not None else np.nan),
        ),
        (f"necessity ({gap_unit(result)})", lambda h: _pct(h.value)),
        ("q (BH, all heads)", lambda h: number(h.q, ".2g")),
    ]


CASCADE_ROWS: list[CascadeRow] = [
    (
        "knocked out (harmful and control prompts)",
        lambda c: f"{', '.join(f'L{a}H{b}' for a, b in c.gate)} ({c.kind})",
    ),
    ("amplifiers' harmful − control DLA change (%)", lambda c: number(c.effect, "+.1f")),
    ("the same in % of the pooled DLA gap", lambda c: number(100 * c.in_gap(c.effect), "+.1f")),
    ("null: random band heads knocked out", lambda c: str(len(c.null_effects))),
    ("null mean ± sd (%)", lambda c: f"{number(c.null_mean, '+.1f')} ± {number(c.null_sd, '.1f')}"),
    ("null largest drop (%)", lambda c: number(c.null_max, ".1f")),
    ("z (effect − null mean, in null sds)", lambda c: number(c.z, "+.1f")),
    ("empirical p (one-sided, vs the null)", lambda c: number(c.p, ".3g")),
    ("smallest p this null can give", lambda c: number(c.min_p, ".3g")),
]

DROP_COLUMNS: list[tuple[str, Callable[[DropTest], str]]] = [
    ("head", lambda t: t.label),
    ("contrast (% of DLA gap)", lambda t: number(100 * t.contrast, "+.2f")),
    ("drop under the gate's knockout (% of DLA gap)", lambda t: number(100 * t.drop, "+.2f")),
    ("fall (% of its own contrast)", lambda t: number(100 * t.fall, "+.1f")),
    (
        "null mean ± sd (% of DLA gap)",
        lambda t: f"{number(100 * t.null_mean, '+.2f')} ± {number(100 * t.null_sd, '.2f')}",
    ),
    ("null heads", lambda t: str(t.n_null)),
    ("z", lambda t: number(t.z, "+.1f")),
    ("empirical p", lambda t: number(t.p, ".3g")),
]

GATE_CHECK_COLUMNS: list[tuple[str, Callable[[GateCheck], str]]] = [
    ("head", lambda c: c.label),
    ("necessity (% of gap)", lambda c: number(100 * c.necessity, "+.1f")),
    ("q", lambda c: number(c.q, ".2g")),
    ("sufficiency (% of gap)", lambda c: number(100 * c.sufficiency, "+.1f")),
    ("DLA share (%)", lambda c: number(100 * c.dla_share, ".2f")),
    (
        "heads falling under its knockout",
        lambda c: "not knocked out" if c.amplifiers is None else str(c.amplifiers),
    ),
    ("failed", lambda c: ", ".join(c.failed) or "none: the gate"),
]


def published_note(result: AuditResult) -> str:
    """The published rule's gate beside the audit's (the summary's line)."""
    return " ".join(result.published_lines())


def _finding_table(title: str, columns: list[FindingColumn], rows: list[HeadFinding]) -> Table:
    return Table(title, [name for name, _ in columns], [[f(h) for _, f in columns] for h in rows])


def audit_tables(result: AuditResult) -> list[Table]:
    """The report's tables: the named heads with their statistics and null, behaviour, metrics."""
    gate = {(g.layer, g.head) for g in result.gate}
    candidates = _finding_table(
        "Gate candidates (the audit's gate first)",
        finding_columns(result),
        sorted(result.gate_candidates, key=lambda h: (h.layer, h.head) not in gate),
    )
    if not result.gate_candidates:
        candidates = replace(candidates, note="No head of the depth band was a gate candidate.")
    tables = [candidates]
    if result.amplifiers:
        tables.append(_finding_table("Amplifiers", amplifier_columns(result), result.amplifiers))
    if result.gate_checks:
        tables.append(
            Table(
                "Top band heads by necessity: which gate criterion each failed",
                [name for name, _ in GATE_CHECK_COLUMNS],
                [[f(c) for _, f in GATE_CHECK_COLUMNS] for c in result.gate_checks],
                note=published_note(result),
            )
        )
    if result.amplifier_tests:
        tables.append(
            Table(
                "Drop tests under the gate's knockout (heads after the gate, largest contrast "
                "first), against random band heads knocked out instead",
                [name for name, _ in DROP_COLUMNS],
                [[f(t) for _, f in DROP_COLUMNS] for t in result.amplifier_tests],
            )
        )
    if result.cascade is not None:
        c = result.cascade
        tables.append(
            Table(
                "Knockout cascade against the random-head null",
                ["", "value"],
                [[name, f(c)] for name, f in CASCADE_ROWS],
            )
        )
    if result.metric_check is not None:
        tables.append(metric_check_table(result))
    if result.behaviour is not None:
        tables.append(behaviour_table(result))
    if result.cliff is not None:
        tables.append(replace(probe_table(result.cliff), title="Refusal cliff: probe per layer"))
        if result.cliff.tracing is not None:
            tables.append(cliff_heads_table(result))
    return tables


def cliff_heads_table(result: AuditResult) -> Table:
    """The cliff heads beside the audit's gate, amplifiers and negative heads."""
    rows = [
        [
            h.label,
            "-" if h.rank is None else str(h.rank),
            number(h.effect, "+.3f"),
            number(h.q, ".2g"),
            "yes" if h.cliff else "no",
            ", ".join(h.roles) or "-",
        ]
        for h in result.cliff_heads()
    ]
    return Table(
        "Refusal cliff: the heads that suppress refusal before the answer, beside the audit's "
        "roles",
        [
            "head",
            "rank in the cliff's tracing",
            "probe change before the answer (log-odds; > 0 suppresses refusal)",
            "q",
            "cliff head (in the largest top-k% set ablated)",
            "the audit's role",
        ],
        rows,
        note=" ".join(result.cliff_lines()),
    )


def metric_check_table(result: AuditResult) -> Table:
    """The top heads under both interchange metrics, and where they disagree."""
    check = result.metric_check
    assert check is not None
    why: dict[Head, list[str]] = {}
    for h, reason in check.disagreements():
        why.setdefault(h, []).append(reason)
    rows = [
        [
            f"L{h[0]}H{h[1]}",
            _pct(a.value),
            number(a.p, ".2g"),
            _pct(b.value),
            number(b.p, ".2g"),
            _pct(sa.value),
            _pct(sb.value),
            "; ".join(why.get(h, ["agree"])),
        ]
        for h, a, b, sa, sb in zip(
            check.heads,
            check.main_necessity,
            check.other_necessity,
            check.main_sufficiency,
            check.other_sufficiency,
            strict=True,
        )
    ]
    m, o = (
        METRIC_LABELS.get(check.metric, check.metric),
        METRIC_LABELS.get(check.other, check.other),
    )
    return Table(
        f"Interchange metrics side by side: {m} (the audit's) and {o}",
        [
            "head",
            f"necessity, {m} (% of its gap)",
            "p",
            f"necessity, {o} (% of its gap)",
            "p",
            f"sufficiency, {m} (%)",
            f"sufficiency, {o} (%)",
            f"disagree on (p < {check.alpha:g})",
        ],
        rows,
        note=check.line(),
    )


def behaviour_table(result: AuditResult) -> Table:
    """Every given pair: the judged class and opening of its harmful and control continuation."""
    b = result.behaviour
    assert b is not None
    kept = set(result.kept_pairs) if result.kept_pairs is not None else None
    rows = [
        [
            str(i),
            b.harmful_class[i],
            b.harmful_text[i],
            b.control_class[i],
            b.control_text[i],
            "yes" if kept is None or i in kept else "no",
        ]
        for i in range(len(b.harmful_class))
    ]
    return Table(
        "What the model does with each pair (greedy continuations)",
        [
            "pair",
            "harmful: class",
            "harmful: continuation",
            "control: class",
            "control: continuation",
            "in the statistics",
        ],
        rows,
        note=" ".join(result.behaviour_lines()),
    )


def audit_figures(result: AuditResult) -> dict[str, go.Figure]:
    """Every audit view, keyed by the file stem it is exported under."""
    figures = {
        "head_maps": head_maps(result),
        "cascade": cascade_chart(result),
        "dose_response": dose_response_chart(result),
        "ablation_vs_interchange": ranking_comparison(result),
        "ranking_table": ranking_table(result),
    }
    if result.cipher is not None:
        figures.update(cipher_figures(result.cipher))
    if result.cliff is not None:
        figures.update({f"cliff_{k}": v for k, v in cliff_figures(result.cliff).items()})
    return figures


def write_audit_outputs(result: AuditResult, out: Path, *, static: bool = True) -> list[Path]:
    """``audit.json``, a self-contained ``report.html`` and (if possible) PNG/SVG figures."""
    out.mkdir(parents=True, exist_ok=True)
    figures = audit_figures(result)
    written = [
        result.to_json(out / "audit.json"),
        write_report(
            out / "report.html",
            f"Refusal circuit audit: {display_name(result.model)}",
            list(figures.values()),
            summary=result.summary(),
            tables=audit_tables(result),
        ),
    ]
    if static:
        (out / "figures").mkdir(exist_ok=True)
        plots = {stem: fig for stem, fig in figures.items() if stem != "ranking_table"}
        written += save_figures(plots, out / "figures")
    return written


def compare_figures(rows: Sequence[dict[str, Any]]) -> dict[str, go.Figure]:
    """Audits of several models against model size (parameters or layers x heads)."""
    size = [r["size"] for r in rows]
    names = [r["model"] for r in rows]
    figures = {}
    for key, title in (
        ("gate_depth", "gate depth (fraction of layers)"),
        ("gate_necessity", "gate interchange necessity"),
        ("amplifier_band_width", "amplifier band width (layers)"),
        ("cascade_strength", "cascade strength (% drop of amplifier DLA)"),
    ):
        fig = go.Figure(
            go.Scatter(
                x=size,
                y=[r[key] for r in rows],
                mode="markers+text",
                text=names,
                textposition="top center",
                marker={"size": 11},
            )
        )
        fig.update_layout(
            title=f"{title} vs model size",
            xaxis_title="model size (heads)",
            xaxis_type="log",
            yaxis_title=title,
            template="plotly_white",
        )
        figures[f"compare_{key}"] = fig
    return figures
