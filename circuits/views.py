"""Plotly views of per-head contributions.

Every view takes a result object (never a bare array) so its labels, units and
intervals travel with it. Scales are diverging and centred on zero: a head that
pushes toward refusal is red, one that pushes against it is blue, and an idle
head is white, whatever the range of the data. A head that was not measured
(NaN: a prescreen's unpatched heads) is grey, never white: no value is not 0.
Every value axis and colour bar names its unit; reports are titled with the
model's :func:`display_name`, never a cache path.
"""

from __future__ import annotations

import html
import json
import math
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import plotly.graph_objects as go
from plotly.subplots import make_subplots

from attribution.dla import DLAResult
from attribution.result import Result
from attribution.statistics import HeadStat

DIVERGING = "RdBu_r"
NOT_MEASURED = "#c8c8c8"  # behind the map: a NaN cell draws nothing, so shows this grey
NOT_MEASURED_TEXT = "not measured"
DLA_UNIT = "DLA (logits)"
MODEL_FILE_SUFFIXES = (".gguf", ".ggml", ".bin", ".safetensors", ".pt", ".pth")


def display_name(name: str) -> str:
    """The model as a title names it: a hub id as given, a file or folder by its stem.

    ``"Qwen/Qwen2.5-0.5B-Instruct"`` stays; ``~/.cache/x/model-q4.gguf`` becomes
    ``model-q4``; a hub cache snapshot (``.../models--org--name/snapshots/rev``)
    becomes ``org/name``. A name is a path when it is absolute, starts with ``.``
    or ``~``, has more than one separator, ends in a model file's suffix, or exists.
    """
    path = Path(name).expanduser()
    for part in path.parts:
        if part.startswith("models--"):
            return part.removeprefix("models--").replace("--", "/")
    is_path = (
        path.is_absolute()
        or name.startswith((".", "~"))
        or name.replace(os.sep, "/").count("/") > 1
        or path.suffix.lower() in MODEL_FILE_SUFFIXES
        or path.exists()
    )
    if not is_path:
        return name
    return path.stem if path.suffix else path.name


def number(value: float, spec: str, unit: str = "") -> str:
    """``value`` formatted by ``spec`` (with ``unit``), or "not measured" for NaN."""
    if not math.isfinite(value):
        return NOT_MEASURED_TEXT
    return f"{value:{spec}}{unit}"


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
        colorbar={"title": {"text": colorbar_title, "side": "right"}},
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
    return show_not_measured(fig, np.asarray(trace.z, dtype=np.float64))


def show_not_measured(fig: go.Figure, *grids: np.ndarray) -> go.Figure:
    """Grey behind the maps (NaN cells), and a caption saying so where any cell is NaN."""
    fig.update_layout(plot_bgcolor=NOT_MEASURED)
    fig.update_xaxes(showgrid=False, zeroline=False)  # grid lines would stripe the grey cells
    fig.update_yaxes(showgrid=False, zeroline=False)
    if any(np.isnan(g).any() for g in grids):
        fig.add_annotation(
            text=f"grey: {NOT_MEASURED_TEXT}",
            xref="paper",
            yref="paper",
            x=1.0,
            y=-0.12,
            showarrow=False,
            font={"color": "#555555"},
        )
    return fig


def _head_hover(result: DLAResult, values: np.ndarray, with_ci: bool) -> np.ndarray:
    low, high = result.per_head_ci
    text = np.empty(values.shape, dtype=object)
    for layer in range(result.n_layers):
        for head in range(result.n_heads):
            line = (
                f"L{layer}H{head}<br>layer {layer}, head {head}<br>"
                f"DLA {number(values[layer, head], '+.4f', ' logits')}"
            )
            if with_ci and math.isfinite(values[layer, head]):
                line += f"<br>95% CI [{low[layer, head]:+.4f}, {high[layer, head]:+.4f}]"
            text[layer, head] = line
    return text


def dla_heatmap(result: DLAResult, *, title: str | None = None) -> go.Figure:
    """Layer x head map of harmful-minus-control DLA, with CI on hover."""
    values = result.per_head
    return head_map_figure(
        head_heatmap(values, _head_hover(result, values, with_ci=True), colorbar_title=DLA_UNIT),
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
                colorbar_title=DLA_UNIT,
                zmax=zmax,
                showscale=col == 2,
            ),
            row=1,
            col=col,
        )
    fig.update_yaxes(autorange="reversed", title_text="layer", row=1, col=1)
    fig.update_xaxes(title_text="head")
    fig.update_layout(title="Mean DLA to refusal per head", template="plotly_white")
    return show_not_measured(fig, harmful, control)


def ranked_heads_bar(heads: Sequence[HeadStat], *, title: str, value_axis: str) -> go.Figure:
    """Ranked heads as horizontal bars, first on top, with their 95% intervals as error bars.

    The one bar chart of ranked heads every view uses (DLA, cipher contrast): red pushes
    toward refusal, blue against it; ``value_axis`` names the value and its unit, in logits.
    """
    values = [s.value for s in heads]
    fig = go.Figure(
        go.Bar(
            x=values,
            y=[s.label for s in heads],
            orientation="h",
            marker_color=["#b2182b" if v > 0 else "#2166ac" for v in values],
            error_x={
                "type": "data",
                "symmetric": False,
                "array": [s.ci_high - s.value for s in heads],
                "arrayminus": [s.value - s.ci_low for s in heads],
            },
            hovertemplate="%{y}: %{x:+.4f} logits<extra></extra>",
        )
    )
    fig.update_layout(
        title=title,
        xaxis_title=value_axis,
        yaxis={"autorange": "reversed", "title": "head"},
        template="plotly_white",
    )
    return fig


def dla_top_bar(result: DLAResult, k: int = 15) -> go.Figure:
    """The ``k`` heads with the largest |harmful − control DLA|, with CI error bars."""
    top = result.top(k, by="abs")
    return ranked_heads_bar(
        top,
        title=f"Top {len(top)} heads by |DLA| (harmful − control, 95% CI)",
        value_axis="direct logit attribution (logits)",
    )


def dla_figures(result: DLAResult) -> dict[str, go.Figure]:
    """Every DLA view, keyed by the file stem it is exported under."""
    return {
        "dla_heatmap": dla_heatmap(result),
        "dla_top_heads": dla_top_bar(result),
        "dla_harmful_vs_control": dla_side_by_side(result),
    }


@dataclass(frozen=True)
class Table:
    """A titled table of a report: column names, rows of text, a note under it."""

    title: str
    columns: list[str]
    rows: list[list[str]]
    note: str = ""

    def html(self) -> str:
        head = "".join(f"<th>{html.escape(c)}</th>" for c in self.columns)
        body = "".join(
            "<tr>" + "".join(f"<td>{html.escape(str(v))}</td>" for v in row) + "</tr>"
            for row in self.rows
        )
        note = f"<p class='note'>{html.escape(self.note)}</p>" if self.note else ""
        return (
            f"<h2>{html.escape(self.title)}</h2><table>"
            f"<thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>{note}"
        )


def write_report(
    path: str | Path,
    title: str,
    figures: Sequence[go.Figure],
    *,
    summary: Sequence[str] = (),
    tables: Sequence[Table] = (),
) -> Path:
    """One self-contained HTML page: plotly.js inlined once, so it loads nothing remote.

    The summary's lines, then the tables, then the figures.
    """
    parts = [
        "<!DOCTYPE html><html><head><meta charset='utf-8'>",
        f"<title>{html.escape(title)}</title>",
        "<style>body{font-family:system-ui,sans-serif;max-width:1100px;margin:2em auto;"
        "color:#222}li{margin:.3em 0}.figure{margin:2em 0}table{border-collapse:collapse;"
        "margin:.5em 0;font-size:.9em}th,td{border:1px solid #ccc;padding:.2em .5em;"
        "text-align:left}.note{color:#555}</style></head><body>",
        f"<h1>{html.escape(title)}</h1>",
    ]
    if summary:
        parts.append("<ul>" + "".join(f"<li>{html.escape(s)}</li>" for s in summary) + "</ul>")
    parts += [t.html() for t in tables]
    for i, fig in enumerate(figures):
        snippet = fig.to_html(full_html=False, include_plotlyjs="inline" if i == 0 else False)
        parts.append(f"<div class='figure'>{snippet}</div>")
    parts.append("</body></html>")
    out = Path(path)
    out.write_text("\n".join(parts), encoding="utf-8")
    return out


def write_outputs(
    result: Result | dict[str, Any],
    out: Path,
    name: str,
    title: str,
    figures: Sequence[go.Figure],
    *,
    summary: Sequence[str] = (),
    tables: Sequence[Table] = (),
    run: dict[str, Any] | None = None,
) -> list[Path]:
    """``{name}.json`` (the result, with the run record under ``"run"``) and ``report.html``.

    What every command writes into its ``--out`` folder, created if missing. ``result``:
    one result, or the JSON object of a command that reports several.
    """
    out.mkdir(parents=True, exist_ok=True)
    data = result.to_dict() if isinstance(result, Result) else dict(result)
    if run is not None:
        data["run"] = run
    json_path = out / f"{name}.json"
    json_path.write_text(json.dumps(data, indent=1), encoding="utf-8")
    report = write_report(out / "report.html", title, figures, summary=summary, tables=tables)
    return [json_path, report]
