"""Plotly views of directions, steering, the causal test and the jailbreak scatter.

Each view takes result objects (:mod:`attribution.directions`,
:mod:`circuits.directions`) so its labels and units travel with them: cosines are
unitless, norms and projections are in residual-stream units, refusal scores are
log-odds, rates are shares of prompts. ``docs/science.md#directions-and-steering``.
"""

from __future__ import annotations

import numpy as np
import plotly.graph_objects as go
from plotly.subplots import make_subplots

from attribution.directions import WHICH, Directions
from circuits.directions import JailbreakShift, SteeringResult
from circuits.views import display_name

COLOURS = {"harmfulness": "#d62728", "refusal": "#1f77b4"}

__all__ = ["causal_figure", "cosine_norm_figure", "jailbreak_scatter", "steering_figure"]


def cosine_norm_figure(directions: Directions) -> go.Figure:
    """Cosine between the harmfulness and refusal directions per layer, and their norms."""
    fig = make_subplots(
        rows=2,
        cols=1,
        shared_xaxes=True,
        subplot_titles=("cosine(harmfulness, refusal)", "direction norm"),
    )
    x = directions.labels
    fig.add_trace(
        go.Scatter(x=x, y=directions.cosine(), mode="lines+markers", name="cosine"), row=1, col=1
    )
    for which in WHICH:
        fig.add_trace(
            go.Scatter(
                x=x,
                y=directions.norm(which),
                mode="lines+markers",
                name=f"{which} norm ({'t_inst' if which == 'harmfulness' else 't_post_inst'})",
                line={"color": COLOURS[which]},
            ),
            row=2,
            col=1,
        )
    fig.update_yaxes(title_text="cosine (unitless)", range=[-1.05, 1.05], row=1, col=1)
    fig.update_yaxes(title_text="norm (residual units)", row=2, col=1)
    fig.update_xaxes(title_text="layer (block input; final = last block's output)", row=2, col=1)
    sizes = ", ".join(f"{k} {v}" for k, v in directions.cluster_sizes.items())
    fig.update_layout(
        title=f"Harmfulness vs refusal directions: {display_name(directions.model)} "
        f"({directions.form.replace('_', '-')}; {sizes})",
        height=600,
    )
    return fig


def steering_figure(result: SteeringResult) -> go.Figure:
    """Refusal rate and mean refusal score against alpha, one line per steered layer."""
    fig = make_subplots(rows=1, cols=2, subplot_titles=("refusal rate", "mean refusal score"))
    rate, score = result.refusal_rate(), result.mean_score()
    for i, layer in enumerate(result.layers):
        for col, values in ((1, rate[i]), (2, score[i])):
            fig.add_trace(
                go.Scatter(
                    x=result.alphas,
                    y=values,
                    mode="lines+markers",
                    name=f"L{layer}",
                    legendgroup=f"L{layer}",
                    showlegend=col == 1,
                ),
                row=1,
                col=col,
            )
    fig.update_xaxes(title_text="alpha (multiples of the raw direction)")
    fig.update_yaxes(
        title_text="refusal rate (share of continuations)", range=[-0.05, 1.05], row=1, col=1
    )
    fig.update_yaxes(title_text="refusal score (log-odds)", row=1, col=2)
    fig.update_layout(
        title=f"Steering along {result.which} ({result.where} positions): "
        f"{display_name(result.model)}"
    )
    return fig


def causal_figure(harm: SteeringResult, refusal: SteeringResult, layer: int) -> go.Figure:
    """The causal test at ``layer``: (a) refusal rate, (b) inversion answer, per direction."""
    fig = make_subplots(
        rows=1,
        cols=2,
        subplot_titles=("(a) refusal rate", "(b) reply inversion: answers 'harmful'"),
    )
    for result in (harm, refusal):
        if layer not in result.layers:
            raise ValueError(f"layer {layer} was not steered; choose one of {result.layers}")
        i = result.layers.index(layer)
        inv = result.inversion_rate()
        panels = [(1, result.refusal_rate()[i])]
        if inv is not None:
            panels.append((2, inv[i]))
        for col, values in panels:
            fig.add_trace(
                go.Scatter(
                    x=result.alphas,
                    y=values,
                    mode="lines+markers",
                    name=f"steer along {result.which}",
                    legendgroup=result.which,
                    showlegend=col == 1,
                    line={"color": COLOURS[result.which]},
                ),
                row=1,
                col=col,
            )
    fig.update_xaxes(title_text="alpha (multiples of the raw direction)")
    fig.update_yaxes(
        title_text="refusal rate (share of prompts)", range=[-0.05, 1.05], row=1, col=1
    )
    fig.update_yaxes(
        title_text="answers harmful (share of prompts)", range=[-0.05, 1.05], row=1, col=2
    )
    fig.update_layout(
        title=f"Harmless prompts steered at L{layer} ({harm.where} positions): "
        f"{display_name(harm.model)}"
    )
    return fig


def jailbreak_scatter(shift: JailbreakShift) -> go.Figure:
    """Each request's harmfulness score vs refusal score, plain and framed, with mean shifts."""
    fig = go.Figure()
    for name, h, r, colour in (
        ("plain", shift.harmfulness_plain, shift.refusal_plain, "#d62728"),
        ("framed", shift.harmfulness_framed, shift.refusal_framed, "#9467bd"),
    ):
        fig.add_trace(go.Scatter(x=h, y=r, mode="markers", name=name, marker={"color": colour}))
    mean_plain = (float(np.mean(shift.harmfulness_plain)), float(np.mean(shift.refusal_plain)))
    mean_framed = (float(np.mean(shift.harmfulness_framed)), float(np.mean(shift.refusal_framed)))
    fig.add_annotation(
        x=mean_framed[0],
        y=mean_framed[1],
        ax=mean_plain[0],
        ay=mean_plain[1],
        xref="x",
        yref="y",
        axref="x",
        ayref="y",
        showarrow=True,
        arrowhead=2,
        text=f"mean shift: harmfulness {shift.shift('harmfulness'):+.2f}, "
        f"refusal {shift.shift('refusal'):+.2f}",
    )
    fig.update_xaxes(title_text=f"harmfulness score at t_inst, L{shift.layer} (residual units)")
    fig.update_yaxes(title_text="refusal score at the first response position (log-odds)")
    fig.update_layout(title=f"Plain vs jailbreak-framed requests: {display_name(shift.model)}")
    return fig
