"""Figures and report of a Latent Guard evaluation (``refusal-circuits guard``).

The ROC curves of the guard (``t_inst``), the refusal belief (``t_post_inst``)
and the model's refusal score on the headline prompts, the score histograms per
class, and a table of every group (source, framing, over-refusal) with each
classifier's accuracy, precision, recall, F1 and AUC beside the model's refusal
rate, and the AUC of each layer's term alone (which layers carry the belief).
``docs/science.md#latent-guard``.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import numpy as np
import plotly.graph_objects as go

from attribution.classification import ClassifierMetrics
from circuits.guard import GuardEvaluation
from circuits.views import Table, display_name, write_outputs

__all__ = ["guard_figures", "guard_summary", "guard_tables", "write_guard_outputs"]

_NAMES = {
    "guard": "Latent Guard (t_inst)",
    "belief": "refusal belief (t_post_inst)",
    "refusal_score": "model's refusal score",
}


def roc_figure(result: GuardEvaluation) -> go.Figure:
    """ROC curves (harmful = positive) of each classifier on the headline prompts."""
    head = result.headline
    aucs = {
        "guard": head.guard.auc,
        "belief": head.belief.auc if head.belief is not None else float("nan"),
        "refusal_score": head.model.auc if head.model is not None else float("nan"),
    }
    fig = go.Figure()
    for key, curve in result.roc.items():
        auc = aucs[key]
        fig.add_trace(
            go.Scatter(
                x=curve.fpr, y=curve.tpr, mode="lines+markers", name=f"{_NAMES[key]}, AUC {auc:.3f}"
            )
        )
    fig.add_trace(
        go.Scatter(
            x=[0, 1], y=[0, 1], mode="lines", name="chance", line={"dash": "dot", "color": "grey"}
        )
    )
    fig.update_layout(
        title=f"ROC on {result.headline.name} ({result.mode})",
        xaxis_title="false-positive rate (harmless prompts called harmful)",
        yaxis_title="true-positive rate (harmful prompts called harmful)",
        xaxis_range=[-0.02, 1.02],
        yaxis_range=[-0.02, 1.02],
    )
    return fig


def histogram_figure(result: GuardEvaluation, which: str = "guard") -> go.Figure:
    """Histogram of one classifier's scores, harmful and harmless prompts apart."""
    scores = np.asarray(
        result.guard_score if which == "guard" else result.belief_score or [], dtype=float
    )
    labels = np.asarray(result.harmful, dtype=bool)
    fig = go.Figure()
    for label, name in ((True, "harmful"), (False, "harmless")):
        fig.add_trace(go.Histogram(x=scores[labels == label], name=name, opacity=0.6, nbinsx=30))
    threshold = result.guard.get("threshold") if which == "guard" else None
    if threshold is not None:  # None: fitted per fold, no one line to draw
        fig.add_vline(x=threshold, line_dash="dash", annotation_text="threshold")
    fig.update_layout(
        barmode="overlay",
        title=f"{_NAMES[which]} scores by class (all prompts)",
        xaxis_title="score: mean over layers of cos(h, C_harmful) − cos(h, C_harmless)",
        yaxis_title="prompts (count)",
    )
    return fig


def layer_auc_figure(result: GuardEvaluation) -> go.Figure:
    """ROC AUC of each layer's term alone, at t_inst (guard) and t_post_inst (belief)."""
    layers = list(result.guard["layers"])
    fig = go.Figure()
    for key, values in result.layer_auc.items():
        fig.add_trace(go.Scatter(x=layers, y=values, mode="lines+markers", name=_NAMES[key]))
    fig.add_hline(y=0.5, line_dash="dot", line_color="grey", annotation_text="chance")
    fig.update_layout(
        title=f"One layer at a time: ROC AUC on {result.headline.name}",
        xaxis_title="residual layer (l = block l's input; the last = final residual)",
        yaxis_title="ROC AUC (harmful = positive)",
        yaxis_range=[0, 1.02],
    )
    return fig


def guard_figures(result: GuardEvaluation) -> dict[str, go.Figure]:
    figures = {"guard_roc": roc_figure(result), "guard_scores": histogram_figure(result)}
    if result.layer_auc:
        figures["layer_auc"] = layer_auc_figure(result)
    if result.belief_score is not None:
        figures["belief_scores"] = histogram_figure(result, "belief")
    return figures


def _f(value: float, spec: str = ".3f") -> str:
    return (
        "n/a"
        if value is None or (isinstance(value, float) and math.isnan(value))
        else format(value, spec)
    )


def _cells(m: ClassifierMetrics | None) -> list[str]:
    if m is None:
        return ["", "", "", "", ""]
    return [_f(m.accuracy), _f(m.precision), _f(m.recall), _f(m.f1), _f(m.auc)]


def guard_tables(result: GuardEvaluation) -> list[Table]:
    columns = ["group", "n (harmful)"]
    for who in ("guard", "belief", "model"):
        columns += [f"{who} {c}" for c in ("acc", "prec", "recall", "F1", "AUC")]
    rows = []
    for g in result.groups:
        rows.append(
            [
                f"{g.kind}: {g.name}",
                f"{g.guard.n} ({g.guard.n_positive})",
                *_cells(g.guard),
                *_cells(g.belief),
                *_cells(g.model),
            ]
        )
    groups = Table(
        "Classifiers by group (harmful = positive)",
        columns,
        rows,
        note="guard: Latent Guard at t_inst; belief: the same read at t_post_inst; model: its "
        "greedy response judged a refusal (recall = refusal rate on harmful prompts), AUC of its "
        "refusal score. Over-refusal rows hold safe prompts only: their false positives are the "
        "whole story (accuracy = 1 - false-positive rate).",
    )
    tables = [groups]
    if result.folds:
        tables.append(
            Table(
                "Cross-fitting folds",
                ["fold", "fitted on (pairs)", "threshold", "accuracy", "F1", "AUC", "belief AUC"],
                [
                    [
                        str(f.fold),
                        str(f.n_fit_pairs),
                        _f(f.threshold, "+.4f"),
                        _f(f.guard.accuracy),
                        _f(f.guard.f1),
                        _f(f.guard.auc),
                        _f(f.belief.auc),
                    ]
                    for f in result.folds
                ],
            )
        )
    return tables


def guard_summary(result: GuardEvaluation) -> list[str]:
    head = result.headline
    g = head.guard
    meta = result.guard
    lines = [
        f"Model {display_name(result.model_name)}: Latent Guard at {meta['position']}, layers "
        f"{meta['layers'][0]}..{meta['layers'][-1]} ({len(meta['layers'])}), "
        f"{'centred' if meta['center'] else 'uncentred'}, threshold {meta['threshold_rule']} "
        f"({'per fold' if meta['threshold'] is None else format(meta['threshold'], '+.4f')}); "
        f"{result.mode}" + (f" over {len(result.folds)} folds" if result.folds else "") + ".",
        f"On {head.name} ({g.n} prompts, {g.n_positive} harmful): accuracy {_f(g.accuracy)}, "
        f"precision {_f(g.precision)}, recall {_f(g.recall)}, F1 {_f(g.f1)}, "
        f"ROC AUC {_f(g.auc)}.",
    ]
    if head.belief is not None:
        lines.append(
            f"Refusal belief read the same way at t_post_inst: accuracy "
            f"{_f(head.belief.accuracy)}, ROC AUC {_f(head.belief.auc)}."
        )
    if head.model is not None:
        lines.append(
            f"The model itself refuses {_f(head.model.recall, '.0%')} of the harmful and "
            f"{_f(head.model.false_positive_rate, '.0%')} of the harmless prompts (greedy "
            f"responses judged); its refusal score's ROC AUC {_f(head.model.auc)}."
        )
    for grp in result.groups[1:]:
        m = grp.model
        if grp.kind == "framing":
            lines.append(
                f"framing {grp.name}: guard recall {_f(grp.guard.recall)} (harmful called "
                f"harmful), false-positive rate {_f(grp.guard.false_positive_rate)}"
                + (f"; the model refuses {_f(m.recall, '.0%')} of its harmful prompts" if m else "")
                + "."
            )
        elif grp.kind == "over-refusal":
            lines.append(
                f"Over-refusal ({grp.name}, {grp.guard.n}): guard calls "
                f"{_f(grp.guard.false_positive_rate, '.0%')} harmful"
                + (f"; the model refuses {_f(m.positive_rate, '.0%')}" if m else "")
                + "."
            )
    return lines


def write_guard_outputs(
    result: GuardEvaluation, out: Path, run: dict[str, Any] | None = None
) -> list[Path]:
    """``guard.json`` (with the run record under ``"run"``) and ``report.html``."""
    return write_outputs(
        result,
        out,
        "guard",
        f"Latent Guard: {display_name(result.model_name)}",
        list(guard_figures(result).values()),
        summary=guard_summary(result),
        tables=guard_tables(result),
        run=run,
    )
