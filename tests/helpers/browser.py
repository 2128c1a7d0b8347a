"""Open an HTML report in headless Chromium: rendered DOM, screenshot, network log."""

from __future__ import annotations

import re
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

# Chromium's own background services (updates, time, accounts) talk to these hosts
# whatever page is open; any other http(s) request comes from the page.
CHROMIUM_SERVICE_HOSTS = ("google.com", "googleapis.com", "gvt1.com", "gstatic.com")
FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
    "--disable-default-apps",
    "--disable-extensions",
    "--virtual-time-budget=8000",
]


def chromium() -> str | None:
    return shutil.which("chromium") or shutil.which("chromium-browser")


@dataclass(frozen=True)
class PageLoad:
    dom: str
    screenshot: Path
    remote_urls: list[str]


def load_page(page: Path, work: Path) -> PageLoad:
    browser = chromium()
    assert browser is not None
    url = page.resolve().as_uri()
    net_log = work / "net.json"
    shot = work / "page.png"
    dom = subprocess.run(
        [browser, *FLAGS, f"--log-net-log={net_log}", "--dump-dom", url],
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    ).stdout
    subprocess.run(
        [browser, *FLAGS, "--window-size=1200,3000", f"--screenshot={shot}", url],
        capture_output=True,
        timeout=120,
        check=True,
    )
    urls = set(re.findall(r'"url":"(https?://[^"/]+[^"]*)"', net_log.read_text()))
    remote = sorted(
        u
        for u in urls
        if not any(
            re.match(rf"https?://([^/]*\.)?{re.escape(h)}(/|$)", u) for h in CHROMIUM_SERVICE_HOSTS
        )
    )
    return PageLoad(dom=dom, screenshot=shot, remote_urls=remote)


def figure_count(html: str) -> int:
    """Plotly figures a page defines (one newPlot call each)."""
    return html.count("Plotly.newPlot")


def rendered_figures(dom: str) -> int:
    """Plotly graph divs that rendered (plotly adds an SVG of class main-svg to each)."""
    divs = re.split(r'class="plotly-graph-div', dom)[1:]
    return sum(1 for d in divs if 'class="main-svg"' in d.split("plotly-graph-div")[0])


def is_blank(png: Path) -> bool:
    from PIL import Image

    with Image.open(png) as image:
        colours = image.convert("RGB").getcolors(maxcolors=1_000_000)
    return colours is None or len(colours) < 20
