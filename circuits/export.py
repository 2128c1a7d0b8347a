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
    written: list[Path] = []
    try:
        for stem, fig in figures.items():
            written += save_static(fig, directory / stem)
    except StaticExportUnavailable as exc:
        warnings.warn(str(exc), stacklevel=2)
    return written


def save_static(
    fig: go.Figure, stem: str | Path, formats: tuple[str, ...] = STATIC_FORMATS
) -> list[Path]:
    """Write ``stem.png`` / ``stem.svg``; raise :class:`StaticExportUnavailable` if impossible."""
    if not static_export_available():
        raise StaticExportUnavailable(_HOW_TO)
    written = []
    for fmt in formats:
        path = Path(f"{stem}.{fmt}")
        fig.write_image(
            str(path), format=fmt, width=1000, height=700, scale=2 if fmt == "png" else 1
        )
        written.append(path)
    return written
