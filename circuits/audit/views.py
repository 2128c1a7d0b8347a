"""Plotly views of an audit: the figures of ``report.html`` and of papers.

Each view takes the :class:`~circuits.audit.result.AuditResult` (this module
reads results and never runs an audit).

- :func:`necessity_heatmap`: layer x head interchange necessity, gate and
  amplifiers marked, significance (BH q) on hover.
- :func:`cascade_chart`: percentage change of each amplifier's DLA under the
  gate's knockout, beside the random-head null (mean ± sd, largest drop).
- :func:`dose_response_chart`: refusal score along alpha with stacked
  behaviour-class shares.
- :func:`ranking_comparison`: ablation effect against interchange necessity
  per head, with the rank correlation in the title.
- :func:`compare_figures`: several audits side by side against model size.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import plotly.graph_objects as go
from plotly.subplots import make_subplots

from circuits.ablation_compare import AblationComparison
from circuits.audit.result import AuditResult
from circuits.behaviour import BEHAVIOURS
from circuits.export import save_figures
from circuits.views import head_heatmap, head_map_figure, write_report

CLASS_COLOURS = {
    "refusal": "#b2182b",
    "evasion": "#f4a582",
    "constructive": "#92c5de",
    "answer": "#2166ac",
}


def necessity_heatmap(result: AuditResult) -> go.Figure:
    """Interchange necessity per head; the gate (G) and amplifiers (A) marked."""
    nec = result.necessity
    hover = np.empty(nec.effect.shape, dtype=object)
    for layer in range(result.n_layers):
        for head in range(result.n_heads):
            hover[layer, head] = (
                f"L{layer}H{head}<br>necessity {nec.effect[layer, head]:+.3f} "
                f"[{nec.ci_low[layer, head]:+.3f}, {nec.ci_high[layer, head]:+.3f}]"
                f"<br>p={nec.p[layer, head]:.2g}, q={nec.q[layer, head]:.2g}"
            )
    low, high = result.settings["band"]
    fig = head_map_figure(
        head_heatmap(nec.effect, hover, colorbar_title="necessity"),
        f"Interchange necessity (fraction of the mean gap, n={result.n_pairs}); "
        f"G gate, A amplifier, N negative; gate band {low:.0%}-{high:.0%} of depth",
    )
    marks = [((h.layer, h.head), "G") for h in result.gate]
    marks += [((h.layer, h.head), "A") for h in result.amplifiers]
    if result.negative_heads is not None:
        marks += [((a, b), "N") for a, b in result.negative_heads.heads]
    for (layer, head), letter in marks:
        fig.add_annotation(
            x=f"H{head}",
            y=f"L{layer}",
            text=f"<b>{letter}</b>",
            showarrow=False,
            font={"size": 16, "color": "black"},
        )
    return fig


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
        title=f"Knockout cascade: {cascade.kind}-ablating {gate} changes amplifier DLA by "
        f"{cascade.effect:+.1f}% (null {cascade.null_mean:+.1f}%, p={cascade.p:.3g})",
        yaxis_title="% change of refusal DLA",
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
        xaxis_title="alpha",
    )
    fig.update_yaxes(title_text="refusal score (log-odds)", secondary_y=False)
    fig.update_yaxes(title_text="share of greedy responses", range=[0, 1], secondary_y=True)
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
    fig.update_layout(
        title=f"Per-head {comp.kind} ablation vs interchange necessity "
        f"(Spearman {comp.rank_correlation:+.2f})",
        xaxis_title="interchange necessity",
        yaxis_title=f"{comp.kind}-ablation drop (same units)",
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
    columns = ["head", "necessity", "rank", "ablation", "rank", "q (interchange)"]
    cells = [
        [f"L{r['layer']}H{r['head']}" for r in rows],
        [f"{r['interchange']:+.3f}" for r in rows],
        [r["interchange_rank"] for r in rows],
        [f"{r['ablation']:+.3f}" for r in rows],
        [r["ablation_rank"] for r in rows],
        [f"{r['interchange_q']:.2g}" for r in rows],
    ]
    fig = go.Figure(go.Table(header={"values": columns}, cells={"values": cells}))
    fig.update_layout(title="Rankings side by side (top heads by interchange necessity)")
    return fig


def audit_figures(result: AuditResult) -> dict[str, go.Figure]:
    """Every audit view, keyed by the file stem it is exported under."""
    figures = {
        "necessity_heatmap": necessity_heatmap(result),
        "cascade": cascade_chart(result),
        "dose_response": dose_response_chart(result),
        "ablation_vs_interchange": ranking_comparison(result),
        "ranking_table": ranking_table(result),
    }
    return figures


def write_audit_outputs(result: AuditResult, out: Path, *, static: bool = True) -> list[Path]:
    """``audit.json``, a self-contained ``report.html`` and (if possible) PNG/SVG figures."""
    out.mkdir(parents=True, exist_ok=True)
    figures = audit_figures(result)
    written = [
        result.to_json(out / "audit.json"),
        write_report(
            out / "report.html",
            f"Refusal circuit audit: {result.model}",
            list(figures.values()),
            summary=result.summary(),
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
