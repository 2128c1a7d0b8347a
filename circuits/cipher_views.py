"""Figures, summary lines and outputs of cipher contrast (``cipher.json`` + ``report.html``)."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import numpy as np
import plotly.graph_objects as go

from circuits.behaviour import BEHAVIOURS
from circuits.cipher import CipherContrast
from circuits.views import (
    DLA_UNIT,
    Table,
    display_name,
    head_heatmap,
    head_map_figure,
    ranked_heads_bar,
    write_outputs,
)

SIDES = ("plain", "cipher", "control")


def _pct(value: float) -> str:
    return "n/a" if math.isnan(value) else f"{100 * value:.0f}%"


def _num(value: float) -> str:
    return "n/a" if math.isnan(value) else f"{value:.2f}"


def _dropped(dropped: int, n_boot: int) -> str:
    """A note when bootstrap resamples had a denominator at or below its noise floor."""
    return f" ({dropped} of {n_boot} resamples undefined, dropped)" if dropped else ""


def contrast_heatmap(result: CipherContrast) -> go.Figure:
    """Layer x head map of mean plain DLA minus mean cipher DLA, interval on hover."""
    values = result.difference
    low, high = result.difference_ci
    hover = np.array(
        [
            [
                f"L{layer}H{head}: {values[layer, head]:+.4f} logits "
                f"[{low[layer, head]:+.4f}, {high[layer, head]:+.4f}]"
                for head in range(result.n_heads)
            ]
            for layer in range(result.n_layers)
        ]
    )
    return head_map_figure(
        head_heatmap(values, hover, colorbar_title=DLA_UNIT),
        f"Cipher contrast: DLA to refusal, plain − cipher (n={result.n_pairs} pairs)",
    )


def top_bar(result: CipherContrast, k: int = 15) -> go.Figure:
    """The ``k`` most cipher-sensitive heads, signed difference with its interval."""
    top = result.top(k)
    return ranked_heads_bar(
        top,
        title=f"Top {len(top)} cipher-sensitive heads by |plain − cipher DLA| (95% CI)",
        value_axis="plain − cipher direct logit attribution (logits)",
    )


def behaviour_bar(result: CipherContrast) -> go.Figure:
    """Behaviour class shares of plain, cipher and control (and injected) responses."""
    groups: list[tuple[str, list[str]]] = [
        (side, getattr(result, f"{side}_class")) for side in SIDES
    ]
    groups += [(f"cipher + injection ({i.variant})", i.injected_class) for i in result.injections]
    fig = go.Figure(
        [
            go.Bar(
                name=cls,
                x=[name for name, _ in groups],
                y=[
                    100.0 * sum(c == cls for c in labels) / max(1, len(labels))
                    for _, labels in groups
                ],
                hovertemplate="%{x}: %{y:.0f}%<extra>" + cls + "</extra>",
            )
            for cls in BEHAVIOURS
        ]
    )
    fig.update_layout(
        barmode="stack",
        title=f"Behaviour of greedy responses ({result.gen_tokens} tokens)",
        xaxis_title="prompt set",
        yaxis_title="share of responses (%)",
        template="plotly_white",
    )
    return fig


def cipher_figures(result: CipherContrast) -> dict[str, go.Figure]:
    return {
        "cipher_heatmap": contrast_heatmap(result),
        "cipher_top_heads": top_bar(result),
        "cipher_behaviour": behaviour_bar(result),
    }


def cipher_summary(result: CipherContrast) -> list[str]:
    """The lines the command prints and the report opens with."""
    lines = [
        f"Refusal rate: plain {_pct(result.refusal_rate('plain'))}, cipher "
        f"{_pct(result.refusal_rate('cipher'))}, control {_pct(result.refusal_rate('control'))} "
        f"({result.n_pairs} pairs).",
        "Most cipher-sensitive heads (plain − cipher DLA, logits): "
        + ", ".join(f"{s.label} {s.value:+.3f}" for s in result.top(5))
        + ".",
    ]
    nec = result.necessity
    if nec is not None and result.gate is not None:
        low, high = nec.collapse_ci_pct
        own = nec.necessity_cipher_own
        lines.append(
            f"Gate L{result.gate[0]}H{result.gate[1]} ({result.gate_source}): interchange "
            f"necessity {_num(nec.necessity_plain)} plain, {_num(nec.necessity_cipher)} cipher "
            f"(of the plain gap), {_num(own.value)} [{_num(own.ci_low)}, {_num(own.ci_high)}] "
            f"of the cipher's own gap; collapse {_pct(nec.collapse_pct / 100)} "
            f"[{_pct(low / 100)}, {_pct(high / 100)}]"
            f"{_dropped(nec.collapse.dropped, nec.n_boot)}."
        )
        if nec.selected_on_pairs:
            lines.append(
                "The gate was selected on these same pairs: its plain necessity (and so the "
                "collapse) is selection-biased upwards; pass --gate from a separate run."
            )
    for inj in result.injections:
        low, high = result.restored_ci(inj)
        lines.append(
            f"Injection ({inj.variant}): refusal {_pct(inj.refusal_rate)}, first token "
            f"{_pct(float(np.mean(inj.first_token_refusal)))}; restored "
            f"{_pct(result.restored_share(inj))} [{_pct(low)}, {_pct(high)}] of the plain − "
            f"cipher refusal gap{_dropped(result.restored(inj).dropped, result.n_boot)}."
        )
    if result.gate is None:
        lines.append("No gate given: necessity and injection not measured (pass --gate L.H).")
    return lines


def cipher_tables(result: CipherContrast) -> list[Table]:
    rows = [
        [s.label, f"{s.value:+.4f}", f"[{s.ci_low:+.4f}, {s.ci_high:+.4f}]"] for s in result.top(10)
    ]
    return [
        Table(
            "Cipher-sensitive heads",
            ["head", "plain − cipher DLA (logits)", "95% CI"],
            rows,
            note="DLA on the refusal direction (answer token: the control's greedy token).",
        )
    ]


def write_cipher_outputs(
    result: CipherContrast, out: Path, run: dict[str, Any] | None = None
) -> list[Path]:
    """``cipher.json`` (with the run record under ``"run"``) and ``report.html``."""
    return write_outputs(
        result,
        out,
        "cipher",
        f"Cipher contrast: {display_name(result.model)}",
        list(cipher_figures(result).values()),
        summary=cipher_summary(result),
        tables=cipher_tables(result),
        run=run,
    )
