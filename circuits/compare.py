"""Audits of several models side by side (the library behind ``refusal-circuits compare``).

Each audit directory's ``audit.json`` is read as a typed :class:`AuditHeadline`
and reduced to the numbers that travel
across model families: where the gate sits (its depth as a fraction of the
layers), how necessary it is, how wide the amplifier band is (layers spanned),
and how strongly the gate's knockout silences the amplifiers (the cascade's
percentage drop), set against model size (layers x heads, the number of heads
the audit searched). The table is printed and written as CSV; the figures go
into one self-contained ``compare.html``.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from attribution.result import Result
from circuits.audit import HeadFinding
from circuits.audit.views import compare_figures
from circuits.views import write_report
from patching.errors import RefusalCircuitsError, ResultFileError


@dataclass(frozen=True)
class CascadeHeadline(Result):
    """The cascade's headline in ``audit.json``: the amplifiers' % change and its p."""

    effect: float = float("nan")
    p: float = float("nan")


@dataclass(frozen=True)
class NegativeHeadline(Result):
    """The negative refusal heads named in ``audit.json``."""

    heads: list[tuple[int, int]] = field(default_factory=list)


@dataclass(frozen=True)
class AuditHeadline(Result):
    """The parts of ``audit.json`` that travel across models, read as typed fields.

    A view of :class:`circuits.audit.AuditResult` (which holds everything); other
    keys of the file are ignored, so audits with or without the optional steps load.
    """

    model: str
    n_layers: int
    n_heads: int
    n_pairs: int
    gate: list[HeadFinding]
    amplifiers: list[HeadFinding]
    cascade: CascadeHeadline | None = None
    negative_heads: NegativeHeadline | None = None


def load_headline(directory: str | Path) -> AuditHeadline:
    """The typed headline of one audit directory's ``audit.json``.

    Raises:
        RefusalCircuitsError: no ``audit.json`` there.
        ResultFileError: the file is not an audit's (unreadable, a field missing or wrong).
    """
    path = Path(directory) / "audit.json"
    if not path.is_file():
        raise RefusalCircuitsError(
            f"{path} not found: pass directories written by `refusal-circuits audit --out DIR`"
        )
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
        if not isinstance(data, dict):
            raise TypeError("the top level is not an object")
        return AuditHeadline.from_dict(data)
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        reason = f"it cannot be read as JSON ({exc})"
    except KeyError as exc:
        reason = f"it has no field {exc}"
    except (TypeError, ValueError, IndexError, AttributeError) as exc:
        reason = f"a field has the wrong type or value ({exc})"
    raise ResultFileError(
        f"{path} is corrupted: {reason}; rerun `refusal-circuits audit --out {directory}` "
        f"(finished steps are reused) or leave that directory out"
    )


def audit_row(directory: str | Path) -> dict[str, Any]:
    """The comparable numbers of one audit directory."""
    audit = load_headline(directory)
    gate, amps, n_layers = audit.gate, audit.amplifiers, audit.n_layers
    cascade = audit.cascade or CascadeHeadline()
    amp_layers = [a.layer for a in amps]
    return {
        "model": audit.model,
        "dir": str(directory),
        "n_layers": n_layers,
        "n_heads": audit.n_heads,
        "size": n_layers * audit.n_heads,
        "gate": ", ".join(g.label for g in gate) or "none",
        "gate_depth": gate[0].layer / n_layers if gate else None,
        "gate_necessity": gate[0].necessity if gate else None,
        "gate_q": gate[0].q if gate else None,
        "n_amplifiers": len(amps),
        "amplifier_band_width": (max(amp_layers) - min(amp_layers) + 1) if amp_layers else 0,
        "cascade_strength": -cascade.effect if np.isfinite(cascade.effect) else None,
        "cascade_p": cascade.p if np.isfinite(cascade.p) else None,
        "n_negative": len(audit.negative_heads.heads) if audit.negative_heads else 0,
        "n_pairs": audit.n_pairs,
    }


def compare_audits(dirs: Sequence[str | Path]) -> pd.DataFrame:
    """One row per audit, ordered by model size."""
    if not dirs:
        raise RefusalCircuitsError("compare needs at least one audit directory")
    rows = [audit_row(d) for d in dirs]
    return pd.DataFrame(rows).sort_values("size", kind="stable").reset_index(drop=True)


def write_comparison(table: pd.DataFrame, out: Path) -> list[Path]:
    out.mkdir(parents=True, exist_ok=True)
    table.to_csv(out / "compare.csv", index=False)
    figures = compare_figures(table.to_dict("records"))
    summary = [
        f"{r['model']}: gate {r['gate']} at depth "
        + (f"{r['gate_depth']:.0%}" if r["gate_depth"] is not None else "-")
        + f", {r['n_amplifiers']} amplifiers over {r['amplifier_band_width']} layers"
        for r in table.to_dict("records")
    ]
    html = write_report(
        out / "compare.html", "Refusal circuits across models", list(figures.values()),
        summary=summary,
    )  # fmt: skip
    return [out / "compare.csv", html]
