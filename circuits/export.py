"""Static figure export (PNG, SVG) for papers.

Plotly renders static images through kaleido, which drives a headless
Chromium. Where none is installed, export fails with a message that says how to
get one instead of a stack trace from the renderer.
"""

from __future__ import annotations

import shutil
import warnings
from pathlib import Path

import plotly.graph_objects as go
import plotly.io as pio

from patching.errors import RefusalCircuitsError

STATIC_FORMATS: tuple[str, ...] = ("png", "svg")
_BROWSERS = ("chromium", "chromium-browser", "google-chrome", "chrome")


class StaticExportUnavailable(RefusalCircuitsError):
    """No renderer for static images on this machine."""


def find_browser() -> str | None:
    """The path of a Chromium-family browser kaleido can drive, if any."""
    for name in _BROWSERS:
        found = shutil.which(name)
        if found:
            return found
    return None


def static_export_available() -> bool:
    try:
        import kaleido  # noqa: F401
    except ImportError:
        return False
    return find_browser() is not None


_HOW_TO = (
    "static PNG/SVG export needs kaleido and a Chromium browser: "
    "`pip install 'refusal-circuits[export]'` and `apt-get install chromium` "
    "(or `python -c 'import kaleido; kaleido.get_chrome_sync()'`). "
    "The interactive HTML was written regardless."
)


def save_figures(figures: dict[str, go.Figure], directory: Path) -> list[Path]:
    """PNG and SVG of every figure into ``directory`` (named by its key), where possible.

    Without a renderer this warns how to get one and writes nothing: the
    interactive HTML a command also writes is the result that must not fail.
    """
    try:
        return _write(list(figures.values()), [directory / stem for stem in figures])
    except StaticExportUnavailable as exc:
        warnings.warn(str(exc), stacklevel=2)
    return []


def save_static(
    fig: go.Figure, stem: str | Path, formats: tuple[str, ...] = STATIC_FORMATS
) -> list[Path]:
    """Write ``stem.png`` / ``stem.svg``; raise :class:`StaticExportUnavailable` if impossible."""
    return _write([fig], [Path(stem)], formats)


def _write(
    figs: list[go.Figure], stems: list[Path], formats: tuple[str, ...] = STATIC_FORMATS
) -> list[Path]:
    """Every figure in every format, rendered in one kaleido session.

    Each ``write_image`` call starts a browser: eight images took 45 s one by one and
    6 s together on the 2-core machine.
    """
    if not static_export_available():
        raise StaticExportUnavailable(_HOW_TO)
    jobs = [
        (fig, Path(f"{stem}.{fmt}"), fmt)
        for fig, stem in zip(figs, stems, strict=True)
        for fmt in formats
    ]
    if jobs:
        pio.write_images(
            [fig for fig, _, _ in jobs],
            [str(path) for _, path, _ in jobs],
            format=[fmt for _, _, fmt in jobs],
            scale=[2 if fmt == "png" else 1 for _, _, fmt in jobs],
            width=1000,
            height=700,
        )
    return [path for _, path, _ in jobs]
