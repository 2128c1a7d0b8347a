"""Plotly views of per-head contributions.

Every view takes a result object (never a bare array) so its labels, units and
intervals travel with it. Scales are diverging and centred on zero: a head that
pushes toward refusal is red, one that pushes against it is blue, and an idle
head is white, whatever the range of the data.
"""

from __future__ import annotations

import html
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import plotly.graph_objects as go
from plotly.subplots import make_subplots

from attribution.dla import DLAResult

DIVERGING = "RdBu_r"


def symmetric_range(*grids: np.ndarray) -> float:
    peaks = [float(np.nanmax(np.abs(g))) for g in grids if np.isfinite(g).any()]
    peak = max(peaks, default=0.0)
    return peak if peak > 0 else 1.0


def head_heatmap(
    values: np.ndarray,
    hover: np.ndarray,
    *,
    colorbar_title: str,
    zmax: float | None = None,
    showscale: bool = True,
) -> go.Heatmap:
    """The one layer x head trace every view uses: labelled axes, zero-centred diverging scale."""
    n_layers, n_heads = values.shape
    zmax = zmax if zmax is not None else symmetric_range(values)
    return go.Heatmap(
        z=values,
        x=[f"H{h}" for h in range(n_heads)],
        y=[f"L{layer}" for layer in range(n_layers)],
        colorscale=DIVERGING,
        zmid=0.0,
        zmin=-zmax,
        zmax=zmax,
        text=hover,
        hoverinfo="text",
        showscale=showscale,
        colorbar={"title": colorbar_title},
    )


def head_map_figure(trace: go.Heatmap, title: str) -> go.Figure:
    """A figure of one :func:`head_heatmap` trace: layer 0 on top, heads across."""
    fig = go.Figure(trace)
    fig.update_layout(
        title=title,
        xaxis_title="head",
        yaxis_title="layer",
        yaxis={"autorange": "reversed"},
        template="plotly_white",
    )
    return fig


def _head_hover(result: DLAResult, values: np.ndarray, with_ci: bool) -> np.ndarray:
    low, high = result.per_head_ci
    text = np.empty(values.shape, dtype=object)
    for layer in range(result.n_layers):
        for head in range(result.n_heads):
            line = (
                f"L{layer}H{head}<br>layer {layer}, head {head}<br>DLA {values[layer, head]:+.4f}"
            )
            if with_ci:
                line += f"<br>95% CI [{low[layer, head]:+.4f}, {high[layer, head]:+.4f}]"
            text[layer, head] = line
    return text


def dla_heatmap(result: DLAResult, *, title: str | None = None) -> go.Figure:
    """Layer x head map of harmful-minus-control DLA, with CI on hover."""
    values = result.per_head
    return head_map_figure(
        head_heatmap(values, _head_hover(result, values, with_ci=True), colorbar_title="logits"),
        title
        or f"Direct logit attribution to refusal, harmful − control (n={result.n_pairs} pairs)",
    )


def dla_side_by_side(result: DLAResult) -> go.Figure:
    """Harmful and control DLA maps on one shared, zero-centred scale."""
    harmful, control = result.harmful_mean, result.control_mean
    zmax = symmetric_range(harmful, control)
    fig = make_subplots(
        rows=1, cols=2, subplot_titles=("harmful prompts", "control prompts"), shared_yaxes=True
    )
    for col, values in ((1, harmful), (2, control)):
        fig.add_trace(
            head_heatmap(
                values,
                _head_hover(result, values, with_ci=False),
                colorbar_title="logits",
                zmax=zmax,
                showscale=col == 2,
            ),
            row=1,
            col=col,
        )
    fig.update_yaxes(autorange="reversed", title_text="layer", row=1, col=1)
    fig.update_xaxes(title_text="head")
    fig.update_layout(title="Mean DLA to refusal per head", template="plotly_white")
    return fig


def dla_top_bar(result: DLAResult, k: int = 15) -> go.Figure:
    """The ``k`` heads with the largest |harmful − control DLA|, with CI error bars."""
    top = result.top(k, by="abs")
    labels = [s.label for s in top]
    values = [s.value for s in top]
    fig = go.Figure(
        go.Bar(
            x=values,
            y=labels,
            orientation="h",
            marker_color=["#b2182b" if v > 0 else "#2166ac" for v in values],
            error_x={
                "type": "data",
                "symmetric": False,
                "array": [s.ci_high - s.value for s in top],
                "arrayminus": [s.value - s.ci_low for s in top],
            },
            hovertemplate="%{y}: %{x:+.4f} logits<extra></extra>",
        )
    )
    fig.update_layout(
        title=f"Top {len(top)} heads by |DLA| (harmful − control, 95% CI)",
        xaxis_title="direct logit attribution (logits)",
        yaxis={"autorange": "reversed"},
        template="plotly_white",
    )
    return fig


def dla_figures(result: DLAResult) -> dict[str, go.Figure]:
    """Every DLA view, keyed by the file stem it is exported under."""
    return {
        "dla_heatmap": dla_heatmap(result),
        "dla_top_heads": dla_top_bar(result),
        "dla_harmful_vs_control": dla_side_by_side(result),
    }


def write_report(
    path: str | Path,
    title: str,
    figures: Sequence[go.Figure],
    *,
    summary: Sequence[str] = (),
) -> Path:
    """One self-contained HTML page: plotly.js inlined once, so it loads nothing remote."""
    parts = [
        "<!DOCTYPE html><html><head><meta charset='utf-8'>",
        f"<title>{html.escape(title)}</title>",
        "<style>body{font-family:system-ui,sans-serif;max-width:1100px;margin:2em auto;"
        "color:#222}li{margin:.3em 0}.figure{margin:2em 0}</style></head><body>",
        f"<h1>{html.escape(title)}</h1>",
    ]
    if summary:
        parts.append("<ul>" + "".join(f"<li>{html.escape(s)}</li>" for s in summary) + "</ul>")
    for i, fig in enumerate(figures):
        snippet = fig.to_html(full_html=False, include_plotlyjs="inline" if i == 0 else False)
        parts.append(f"<div class='figure'>{snippet}</div>")
    parts.append("</body></html>")
    out = Path(path)
    out.write_text("\n".join(parts), encoding="utf-8")
    return out
