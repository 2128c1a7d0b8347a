"""Plotly views of interchange results: a layer x head map per direction.

Cells are mean effects (fractions of the clean gap, on the result's scale) on a
diverging scale centred at 0, so heads that carry refusal and heads that push
against it read apart at a glance; heads with ``q < alpha`` are ringed. Hover
shows layer, head, effect, its interval, p and q.
Heads not patched exactly (prescreen mode) are grey and read "not measured",
never 0.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from attribution.interchange_result import PatchingResult, Which
from circuits.views import (
    head_heatmap,
    head_map_figure,
    number,
    show_not_measured,
    symmetric_range,
)

GAP_UNIT = "fraction of the clean gap"


def patching_heatmap(
    result: PatchingResult,
    which: Which = "necessity",
    *,
    alpha: float = 0.05,
    zmax: float | None = None,
) -> Any:
    """A layer x head heatmap of ``result``'s mean ``which`` effects (scale +-``zmax``)."""
    import plotly.graph_objects as go

    s = result.stats(which)
    hover = np.empty(s.effect.shape, dtype=object)
    for layer in range(result.n_layers):
        for head in range(result.n_heads):
            hover[layer, head] = f"L{layer}H{head}<br>effect {number(s.effect[layer, head], '.3f')}"
            if np.isfinite(s.effect[layer, head]):
                hover[layer, head] += (
                    f"<br>CI [{s.ci_low[layer, head]:.3f}, {s.ci_high[layer, head]:.3f}]"
                    f"<br>p {s.p[layer, head]:.3g}, q {s.q[layer, head]:.3g}"
                )
    fig = head_map_figure(
        head_heatmap(s.effect, hover, colorbar_title=f"{which} ({GAP_UNIT})", zmax=zmax),
        f"Interchange {which} ({result.metric}, positions={result.positions}, "
        f"n={result.n}, {result.mode})",
    )
    hits = result.significant(alpha, which=which)
    if hits:
        fig.add_trace(
            go.Scatter(
                x=[f"H{h.head}" for h in hits],
                y=[f"L{h.layer}" for h in hits],
                mode="markers",
                marker={
                    "symbol": "circle-open",
                    "size": 14,
                    "color": "black",
                    "line": {"width": 2},
                },
                name=f"q < {alpha:g}",
                hoverinfo="skip",
            )
        )
    return fig


def patching_figure(result: PatchingResult, *, alpha: float = 0.05) -> Any:
    """Necessity and sufficiency side by side."""
    from plotly.subplots import make_subplots

    fig = make_subplots(rows=1, cols=2, subplot_titles=("necessity", "sufficiency"))
    zmax = symmetric_range(result.necessity, result.sufficiency)  # the one bar fits both
    for col, which in enumerate(("necessity", "sufficiency"), start=1):
        single = patching_heatmap(result, which, alpha=alpha, zmax=zmax)  # type: ignore[arg-type]
        for trace in single.data:
            if hasattr(trace, "colorbar"):  # one colour bar serves both panels
                trace.colorbar.title.text = f"effect ({GAP_UNIT})"
                trace.showscale = col == 1
            elif col == 2:
                trace.showlegend = False  # and one legend entry
            fig.add_trace(trace, row=1, col=col)
    fig.update_layout(
        title=f"Interchange test: {result.model} ({result.metric}, n={result.n})",
        height=max(400, 30 * result.n_layers + 150),
        template="plotly_white",
        legend={"orientation": "h", "y": -0.12},
    )
    fig.update_yaxes(autorange="reversed")  # layer 0 on top, as in every head map
    fig.update_xaxes(title_text="head")
    fig.update_yaxes(title_text="layer")
    return show_not_measured(fig, result.necessity, result.sufficiency)
