"""Plotly views of a refusal calibration: rate curves per category and the summary table.

:func:`calibration_curves` draws, per category, the first-token refusal rate of the
harmful prompts (TPR) and of the harmless controls (FPR) along the sweep, in % of
prompts, with the chosen setting and the rates judged by generation under it as
markers; :func:`calibration_roc` puts each category's FPR against its TPR (the
trade-off the setting walks along). ``docs/science.md#refusal-rate-calibration``.
"""

from __future__ import annotations

import math
from pathlib import Path

import plotly.graph_objects as go
from plotly.subplots import make_subplots

from circuits.calibration import RefusalCalibration
from circuits.views import Table, display_name, write_report

HARMFUL_COLOUR, HARMLESS_COLOUR = "#c0392b", "#2471a3"


def setting_axis(result: RefusalCalibration) -> str:
    """The sweep's axis title, with its unit."""
    if result.mode == "bias":
        return "bias on the refusal tokens (logits)"
    return "threshold on P(refusal token) (probability, log scale)"


def _pct(value: float) -> str:
    return "n/a" if math.isnan(value) else f"{100 * value:.1f}%"


def calibration_curves(result: RefusalCalibration) -> go.Figure:
    """TPR and FPR (first token, and expected when sampling) along the sweep, per category."""
    n = len(result.categories)
    cols = min(2, n)
    rows = math.ceil(n / cols)
    fig = make_subplots(
        rows=rows,
        cols=cols,
        subplot_titles=[
            f"{c.category} (n={c.n_harmful}+{c.n_harmless})" for c in result.categories
        ],
        vertical_spacing=0.5 / rows,
        horizontal_spacing=0.1,
    )
    x = result.sweep.tolist()
    for i, c in enumerate(result.categories):
        row, col = i // cols + 1, i % cols + 1
        first = i == 0
        for side, colour, label in (
            ("harmful", HARMFUL_COLOUR, "TPR: harmful refused"),
            ("harmless", HARMLESS_COLOUR, "FPR: harmless refused"),
        ):
            fig.add_trace(
                go.Scatter(
                    x=x,
                    y=(100 * getattr(c, f"{side}_rate")).tolist(),
                    mode="lines",
                    line={"color": colour, "shape": "hv"},
                    name=f"{label} (greedy first token)",
                    legendgroup=side,
                    showlegend=first,
                ),
                row=row,
                col=col,
            )
            if result.mode == "bias":
                fig.add_trace(
                    go.Scatter(
                        x=x,
                        y=(100 * getattr(c, f"{side}_expected")).tolist(),
                        mode="lines",
                        line={"color": colour, "dash": "dot"},
                        name=f"{label} (expected, sampling)",
                        legendgroup=f"{side}-expected",
                        showlegend=first,
                    ),
                    row=row,
                    col=col,
                )
            generated = getattr(c, f"{side}_generated")
            if not math.isnan(generated):
                fig.add_trace(
                    go.Scatter(
                        x=[c.setting],
                        y=[100 * generated],
                        mode="markers",
                        marker={"color": colour, "symbol": "diamond", "size": 11},
                        name=f"{label} (judged generation at the setting)",
                        legendgroup=f"{side}-generated",
                        showlegend=first,
                    ),
                    row=row,
                    col=col,
                )
        if not math.isnan(c.target):
            fig.add_hline(
                y=100 * c.target, line={"color": "grey", "dash": "dash"}, row=row, col=col
            )
            fig.add_vline(x=c.setting, line={"color": "grey", "dash": "dot"}, row=row, col=col)
    fig.update_xaxes(
        title_text=setting_axis(result), type="log" if result.mode == "threshold" else None
    )
    fig.update_yaxes(title_text="refusal rate (% of prompts)", range=[-3, 103])
    fig.update_layout(
        title=f"Refusal rate along the {result.mode} sweep, per category (dashed line: target)",
        template="plotly_white",
        height=330 * rows + 200,
        legend={"orientation": "h", "yanchor": "top", "y": -0.35 / rows, "x": 0},
    )
    return fig


def calibration_roc(result: RefusalCalibration) -> go.Figure:
    """Each category's FPR against its TPR along the sweep (greedy first token)."""
    fig = go.Figure()
    for c in result.categories:
        fig.add_trace(
            go.Scatter(
                x=(100 * c.harmless_rate).tolist(),
                y=(100 * c.harmful_rate).tolist(),
                mode="lines+markers",
                marker={"size": 4},
                name=c.category,
            )
        )
    fig.update_layout(
        title="Refusal trade-off per category along the sweep (greedy first token)",
        xaxis_title="FPR: harmless prompts refused (% of prompts)",
        yaxis_title="TPR: harmful prompts refused (% of prompts)",
        template="plotly_white",
    )
    fig.update_xaxes(range=[-3, 103])
    fig.update_yaxes(range=[-3, 103])
    return fig


def calibration_table(result: RefusalCalibration) -> Table:
    unit = "logits" if result.mode == "bias" else "P"
    return Table(
        title="Settings reaching each target, and their verification",
        columns=[
            "category",
            "n harmful / harmless",
            "target",
            f"setting ({unit})",
            "TPR first token",
            "FPR first token",
            "TPR generated",
            "FPR generated",
            "TPR held out",
            "FPR held out",
        ],
        rows=[
            [
                c.category,
                f"{c.n_harmful} / {c.n_harmless}",
                _pct(c.target),
                "n/a" if math.isnan(c.setting) else f"{c.setting:.4g}",
                _pct(c.harmful_at),
                _pct(c.harmless_at),
                _pct(c.harmful_generated),
                _pct(c.harmless_generated),
                _pct(c.harmful_heldout),
                _pct(c.harmless_heldout),
            ]
            for c in result.categories
        ],
        note=(
            "First token: share of prompts whose greedy first response token is a refusal "
            "token under the setting. Generated: share of greedy continuations "
            f"({result.gen_tokens} tokens) the behaviour judge calls a refusal"
            + (", the dedicated token stripped first." if result.dedicated else ".")
            + " Both are in-sample: the setting was chosen on these harmful prompts. Held "
            "out: first token, each fold of pairs called at the setting chosen on the other "
            "folds (cross-validated)."
        ),
    )


def write_calibration_report(result: RefusalCalibration, out: Path) -> list[Path]:
    """``out/calibration.json`` and ``out/report.html``."""
    written = [result.to_json(out / "calibration.json")]
    tokens = result.dedicated or ", ".join(repr(t) for t in result.refusal_tokens)
    summary = [
        f"model {display_name(result.model)}; {result.mode} on {tokens} at the first "
        "response position",
        *(
            f"{c.category}: setting {c.setting:.4g} for target {_pct(c.target)}: TPR "
            f"{_pct(c.harmful_at)} first token / {_pct(c.harmful_generated)} generated, "
            f"FPR {_pct(c.harmless_at)} / {_pct(c.harmless_generated)}; held out "
            f"({c.cv_folds}-fold) TPR {_pct(c.harmful_heldout)}, FPR {_pct(c.harmless_heldout)}"
            for c in result.categories
            if not math.isnan(c.setting)
        ),
    ]
    written.append(
        write_report(
            out / "report.html",
            f"Refusal calibration: {display_name(result.model)}",
            [calibration_curves(result), calibration_roc(result)],
            summary=summary,
            tables=[calibration_table(result)],
        )
    )
    return written
