"""Checks of plotly figures shared by the view tests."""

from __future__ import annotations

import re

import plotly.graph_objects as go

CATEGORICAL = {"head", "layer"}  # axes of labels (H0, L0), not of values


def axis_titles(fig: go.Figure) -> list[tuple[str, str, bool]]:
    """(axis name, title, holds numbers) of every axis a trace draws on."""
    out = []
    for trace in fig.data:
        for letter in ("x", "y"):
            ref = getattr(trace, f"{letter}axis", None) or letter
            axis = fig.layout[ref.replace(letter, f"{letter}axis", 1)]
            if axis.matches:  # a shared axis: titled once, on the axis it matches
                axis = fig.layout[axis.matches.replace(letter, f"{letter}axis", 1)]
            values = getattr(trace, letter, None)
            numeric = values is not None and len(values) > 0 and not isinstance(values[0], str)
            if trace.type == "heatmap":
                numeric = False
            out.append((ref, axis.title.text or "", numeric))
    return out


def assert_units(stem: str, fig: go.Figure) -> None:
    """Every axis a trace draws on has a title, a unit in parentheses where it holds
    numbers; every colour bar names its unit."""
    unit = re.compile(r"\(.+\)")
    for ref, title, numeric in axis_titles(fig):
        assert title, f"{stem}: axis {ref} has no title"
        assert title in CATEGORICAL or not numeric or unit.search(title), (stem, title)
    for trace in fig.data:
        if trace.type == "heatmap" and trace.showscale is not False:
            assert unit.search(trace.colorbar.title.text or ""), (stem, trace.colorbar.title)
