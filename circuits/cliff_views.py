"""Figures, summary lines and the HTML report of the refusal cliff (:mod:`circuits.cliff`)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import plotly.graph_objects as go

from circuits.cliff import CliffResult, TopKAblation
from circuits.cliff.step import unclosed_note
from circuits.views import Table, display_name, head_heatmap, head_map_figure, write_outputs

LAYER_AXIS = "residual layer (l = block l's input; the last = final residual)"
PROBABILITY_AXIS = "probe's refusal probability (0-1)"


def sweep_figure(result: CliffResult) -> go.Figure:
    """Cross-validated and held-out ROC AUC and held-out accuracy of the probe per layer."""
    rows = result.sweep.layers
    fig = go.Figure()
    fig.add_trace(go.Scatter(x=[r.layer for r in rows], y=[r.accuracy for r in rows],
                             mode="lines+markers", name="held-out accuracy"))  # fmt: skip
    fig.add_trace(go.Scatter(x=[r.layer for r in rows], y=[r.auc for r in rows],
                             mode="lines+markers", name="held-out ROC AUC"))  # fmt: skip
    fig.add_trace(go.Scatter(x=[r.layer for r in rows], y=[r.cv_auc for r in rows],
                             mode="lines+markers", line_dash="dash",
                             name="cross-validated ROC AUC (chooses the layer)"))  # fmt: skip
    fig.add_vline(x=result.sweep.layer, line_dash="dot", annotation_text="probe layer")
    fig.update_layout(
        title="Refusal probe per layer (refused = positive)",
        xaxis_title=LAYER_AXIS,
        yaxis_title="accuracy / ROC AUC (fraction)",
        yaxis_range=[0, 1.02],
        template="plotly_white",
    )
    return fig


def _band(x: np.ndarray, mean: np.ndarray, low: np.ndarray, high: np.ndarray) -> list[go.Scatter]:
    ok = np.isfinite(mean)
    xs = x[ok]
    return [
        go.Scatter(
            x=np.concatenate([xs, xs[::-1]]),
            y=np.concatenate([high[ok], low[ok][::-1]]),
            fill="toself",
            line={"width": 0},
            fillcolor="rgba(31,119,180,0.2)",
            name="95% bootstrap band",
            hoverinfo="skip",
        ),
        go.Scatter(x=xs, y=mean[ok], mode="lines+markers", name="mean over traces"),
    ]


def aligned_figure(result: CliffResult) -> go.Figure:
    """The probe along traces, aligned on the last position before the answer."""
    c = result.curves
    fig = go.Figure(_band(c.offsets.astype(float), c.mean, c.ci_low, c.ci_high))
    fig.add_vline(x=0, line_dash="dot", annotation_text="end of thinking")
    fig.update_layout(
        title=f"Refusal probe along {result.n_traces} traces, aligned on the end of thinking",
        xaxis_title="tokens from the last position before the answer (0)",
        yaxis_title=PROBABILITY_AXIS,
        yaxis_range=[-0.02, 1.02],
        template="plotly_white",
    )
    return fig


def relative_figure(result: CliffResult) -> go.Figure:
    """The probe along traces at relative position (prompt, thinking, answer)."""
    c = result.curves
    fig = go.Figure(_band(c.bins, c.bin_mean, c.bin_low, c.bin_high))
    for x, label in ((0.0, "thinking starts"), (1.0, "answer starts")):
        fig.add_vline(x=x, line_dash="dot", annotation_text=label)
    fig.update_layout(
        title="Refusal probe at relative position",
        xaxis_title="relative position (-1-0 prompt, 0-1 thinking, 1-2 answer opening)",
        yaxis_title=PROBABILITY_AXIS,
        yaxis_range=[-0.02, 1.02],
        template="plotly_white",
    )
    return fig


def cliff_histogram(result: CliffResult) -> go.Figure:
    fig = go.Figure(go.Histogram(x=result.curves.cliff_scores, nbinsx=20))
    fig.update_layout(
        title="Cliff score per trace (max over thinking - value before the answer)",
        xaxis_title="cliff score (probability units)",
        yaxis_title="traces (count)",
        template="plotly_white",
    )
    return fig


def tracing_figure(result: CliffResult) -> go.Figure | None:
    t = result.tracing
    if t is None:
        return None
    effect = t.stats.effect
    hover = np.array(
        [
            [
                f"L{a}H{b}: {effect[a, b]:+.3f} log-odds, q={t.stats.q[a, b]:.3g}"
                for b in range(effect.shape[1])
            ]
            for a in range(effect.shape[0])
        ]
    )
    what = f"scaled by {t.alpha:g}" if t.ablation == "scale" else f"{t.ablation}-ablated"
    trace = head_heatmap(effect, hover, colorbar_title="change of probe log-odds")
    return head_map_figure(trace, f"Probe change before the answer, each head {what} (> 0: "
                           "the head suppresses refusal)")  # fmt: skip


def _heads(a: TopKAblation) -> str:
    if len(a.heads) < a.k_requested:
        return f"{len(a.heads)} heads: capped from {a.k_requested} at the {a.n_candidates} traced"
    return f"{len(a.heads)} heads"


def ablation_figure(result: CliffResult) -> go.Figure | None:
    if not result.ablations:
        return None
    labels = [f"top {a.percent:g}% ({_heads(a)}, p={a.p_value:.2g})" for a in result.ablations]
    fig = go.Figure()
    fig.add_trace(go.Bar(x=labels, y=[a.attack_success for a in result.ablations],
                         name="top heads ablated"))  # fmt: skip
    fig.add_trace(go.Bar(x=labels, y=[float(np.mean(a.random_attack_success))
                                      for a in result.ablations],
                         name="as many random traced heads (mean of draws)"))  # fmt: skip
    fig.add_hline(y=result.attack_success, line_dash="dot", annotation_text="no ablation")
    renorm = " (renormalised)" if result.ablations[0].renormalised else ""
    fig.update_layout(
        title=f"Attack success with thinking under head ablation{renorm}",
        xaxis_title="heads ablated",
        yaxis_title="attack success (share of harmful prompts answered)",
        yaxis_range=[0, 1.02],
        barmode="group",
        template="plotly_white",
    )
    return fig


def cliff_figures(result: CliffResult) -> dict[str, go.Figure]:
    figures = {
        "probe_sweep": sweep_figure(result),
        "curve_aligned": aligned_figure(result),
        "curve_relative": relative_figure(result),
        "cliff_scores": cliff_histogram(result),
        "head_tracing": tracing_figure(result),
        "ablation": ablation_figure(result),
    }
    return {k: v for k, v in figures.items() if v is not None}


def cliff_summary(result: CliffResult) -> list[str]:
    s = result.sweep
    best = next(r for r in s.layers if r.layer == s.layer)
    sizes = ", ".join(f"{k} {v}" for k, v in s.class_sizes.items())
    lines = [
        f"Probe at layer {s.layer} ("
        + ("given; its " if s.layer_given else "chosen by ")
        + f"{s.cv_folds}-fold cross-validated AUC {best.cv_auc:.3f} on the training split): "
        f"held-out test accuracy "
        f"{best.accuracy:.3f}, AUC {best.auc:.3f} ({sizes}; minimum {s.min_class} a side)",
        f"{result.n_traces} traces ({result.traces_source}); "
        f"{unclosed_note(result.n_incomplete, result.n_traces + result.n_incomplete)}; "
        f"mean cliff score {np.mean(result.curves.cliff_scores):.3f}",
    ]
    if not s.class_sizes.get("complied_harmful"):
        lines.append("No complied harmful prompts: the probe may read harmfulness, not refusal")
    if np.isfinite(result.attack_success):
        lines.append(f"Attack success with thinking: {result.attack_success:.3f}")
    if result.tracing is not None:
        top = ", ".join(
            f"{h.label} ({h.value:+.2f}, q={h.q:.2g})" for h in result.tracing.ranked[:3]
        )
        lines.append(f"Heads that suppress refusal most: {top}")
    for a in result.ablations:
        lines.append(
            f"Top {a.percent:g}% ({_heads(a)}) ablated: attack success "
            f"{a.attack_success:.3f}; as many random traced heads: "
            f"{a.derived()['random_mean']:.3f} over {len(a.random_attack_success)} draws, "
            f"empirical p {a.p_value:.3g}"
        )
    return lines


def probe_table(result: CliffResult) -> Table:
    """The probe's cross-validated and held-out numbers at every layer."""
    return Table(
        "Probe per layer",
        ["layer", "cross-validated AUC", "held-out accuracy", "held-out AUC", "train", "test"],
        [
            [
                str(r.layer),
                f"{r.cv_auc:.3f}",
                f"{r.accuracy:.3f}",
                f"{r.auc:.3f}",
                str(r.n_train),
                str(r.n_test),
            ]
            for r in result.sweep.layers
        ],
    )


def write_cliff_outputs(
    result: CliffResult, out: Path, run: dict[str, Any] | None = None
) -> list[Path]:
    """``cliff.json`` (with the run record under ``"run"``) and ``report.html`` under ``out``."""
    return write_outputs(
        result,
        out,
        "cliff",
        f"Refusal cliff: {display_name(result.model)}",
        list(cliff_figures(result).values()),
        summary=cliff_summary(result),
        tables=[probe_table(result)],
        run=run,
    )
