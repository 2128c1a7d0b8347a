"""Reports in a real browser: every figure renders, nothing is fetched from the network."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.helpers.browser import chromium, figure_count, is_blank, load_page, rendered_figures

pytestmark = pytest.mark.skipif(chromium() is None, reason="Debian's chromium is not installed")


@pytest.fixture(scope="module")
def dla_report(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from attribution.dla import direct_logit_attribution
    from circuits.cli.dla import write_outputs
    from circuits.organism import organism_dir
    from patching.loading import load_model
    from patching.prompts import read_pairs

    directory = organism_dir()
    result = direct_logit_attribution(
        load_model(directory),
        read_pairs(directory / "pairs.jsonl", n=8),
        n_boot=100,
        progress=False,
    )
    out = tmp_path_factory.mktemp("dla")
    write_outputs(result, out)
    return out / "dla.html"


def test_dla_report_renders_every_figure_offline(dla_report: Path, tmp_path: Path) -> None:
    html = dla_report.read_text()
    load = load_page(dla_report, tmp_path)
    assert figure_count(html) == 3
    assert rendered_figures(load.dom) == figure_count(html)
    assert not is_blank(load.screenshot)
    assert load.remote_urls == []


def test_the_network_check_catches_a_remote_resource(tmp_path: Path) -> None:
    """Positive control: a page that loads a CDN script is caught."""
    page = tmp_path / "remote.html"
    page.write_text(
        '<html><body><script src="https://cdn.example.org/x.js"></script></body></html>'
    )
    load = load_page(page, tmp_path)
    assert load.remote_urls == ["https://cdn.example.org/x.js"]
    assert rendered_figures(load.dom) == 0


@pytest.fixture(scope="module")
def audit_report(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from circuits.audit import AuditConfig, audit
    from circuits.organism import organism_dir
    from patching.loading import load_model
    from patching.prompts import read_pairs

    directory = organism_dir()
    out = tmp_path_factory.mktemp("audit")
    audit(
        load_model(directory),
        read_pairs(directory / "pairs.jsonl"),
        AuditConfig(n=12, n_null=6, figures=False),
        out_dir=out,
        progress=False,
        jailbreak=read_pairs(directory / "pairs_jailbreak.jsonl"),
    )
    return out / "report.html"


def test_audit_report_renders_every_figure_offline(audit_report: Path, tmp_path: Path) -> None:
    html = audit_report.read_text()
    load = load_page(audit_report, tmp_path)
    assert figure_count(html) >= 4  # heatmaps, cascade, dose-response, ranking comparison
    assert rendered_figures(load.dom) == figure_count(html)
    assert "Gate L3H2" in load.dom  # the written summary is on the page
    assert not is_blank(load.screenshot)
    assert load.remote_urls == []
