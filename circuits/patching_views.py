"""Plotly views of interchange results: a layer x head map per direction.

Cells are mean effects (fractions of the clean gap) on a diverging scale centred
at 0, so heads that carry refusal and heads that push against it read apart at a
glance; heads with ``q < alpha`` are ringed. Hover shows layer, head, effect,
its interval, p and q. Heads not patched exactly (prescreen mode) stay blank.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from attribution.patching_result import PatchingResult, Which


def patching_heatmap(
    result: PatchingResult, which: Which = "necessity", *, alpha: float = 0.05
) -> Any:
    """A layer x head heatmap of ``result``'s mean ``which`` effects."""
    import plotly.graph_objects as go

    s = result.stats(which)
    effect = s["effect"]
    limit = float(np.nanmax(np.abs(effect))) if np.isfinite(effect).any() else 1.0
    custom = np.stack([s["ci_low"], s["ci_high"], s["p"], s["q"]], axis=-1)
    fig = go.Figure(
        go.Heatmap(
            z=effect,
            x=list(range(result.n_heads)),
            y=list(range(result.n_layers)),
            customdata=custom,
            colorscale="RdBu_r",
            zmid=0.0,
            zmin=-limit,
            zmax=limit,
            colorbar={"title": which},
            hovertemplate=(
                "layer %{y}, head %{x}<br>effect %{z:.3f}"
                "<br>CI [%{customdata[0]:.3f}, %{customdata[1]:.3f}]"
                "<br>p %{customdata[2]:.3g}, q %{customdata[3]:.3g}<extra></extra>"
            ),
        )
    )
    hits = result.significant(alpha, which=which)
    if hits:
        fig.add_trace(
            go.Scatter(
                x=[h.head for h in hits],
                y=[h.layer for h in hits],
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
    fig.update_layout(
        title=(
            f"Interchange {which} ({result.metric}, positions={result.positions}, "
            f"n={result.n}, {result.mode})"
        ),
        xaxis_title="head",
        yaxis_title="layer",
        yaxis={"autorange": True},
    )
    return fig


def patching_figure(result: PatchingResult, *, alpha: float = 0.05) -> Any:
    """Necessity and sufficiency side by side."""
    from plotly.subplots import make_subplots

    fig = make_subplots(rows=1, cols=2, subplot_titles=("necessity", "sufficiency"))
    for col, which in enumerate(("necessity", "sufficiency"), start=1):
        single = patching_heatmap(result, which, alpha=alpha)  # type: ignore[arg-type]
        for trace in single.data:
            if col == 2 and hasattr(trace, "colorbar"):
                trace.showscale = False
            fig.add_trace(trace, row=1, col=col)
    fig.update_layout(
        title=f"Interchange test: {result.model} ({result.metric}, n={result.n})",
        height=max(400, 30 * result.n_layers + 150),
    )
    return fig
