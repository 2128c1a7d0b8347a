"""Plotly views of DLA results, static export, and the `dla` command end to end."""

from __future__ import annotations

import json
import subprocess
import sys
import warnings

import numpy as np
import pytest

from attribution.dla import DLAResult, direct_logit_attribution
from circuits import export
from circuits.cli import main
from circuits.views import dla_heatmap, dla_side_by_side, dla_top_bar, write_report
from patching.prompts import builtin_pairs, write_pairs


@pytest.fixture(scope="module")
def result(tiny_dirs) -> DLAResult:
    from patching.loading import load_model

    return direct_logit_attribution(
        load_model(tiny_dirs["qwen2"]), builtin_pairs(5), n_boot=100, progress=False
    )


def test_heatmap_shows_the_per_head_values_on_a_zero_centred_scale(result) -> None:
    trace = dla_heatmap(result).data[0]
    np.testing.assert_array_equal(np.asarray(trace.z), result.per_head)
    assert trace.zmid == 0 and trace.zmin == -trace.zmax
    assert trace.zmax == pytest.approx(np.abs(result.per_head).max())
    low, high = result.per_head_ci
    assert f"[{low[1, 2]:+.4f}, {high[1, 2]:+.4f}]" in trace.text[1][2]
    assert "L1H2" in trace.text[1][2]


def test_side_by_side_shares_one_scale(result) -> None:
    harmful, control = dla_side_by_side(result).data
    np.testing.assert_array_equal(np.asarray(harmful.z), result.harmful_mean)
    np.testing.assert_array_equal(np.asarray(control.z), result.control_mean)
    assert harmful.zmax == control.zmax


def test_top_bar_lists_the_largest_heads_with_their_intervals(result) -> None:
    bar = dla_top_bar(result, k=4).data[0]
    top = result.top(4, by="abs")
    assert list(bar.y) == [s.label for s in top]
    assert list(bar.x) == [s.value for s in top]
    np.testing.assert_allclose(bar.error_x.array, [s.ci_high - s.value for s in top])


def test_report_is_self_contained(result, tmp_path) -> None:
    page = write_report(tmp_path / "r.html", "t", [dla_heatmap(result), dla_top_bar(result)])
    text = page.read_text()
    assert text.count("<script src=") == 0  # plotly.js is inlined, nothing is fetched
    assert text.count("Plotly.newPlot") == 2


def test_static_export_without_a_browser_says_how_to_enable_it(
    result, tmp_path, monkeypatch
) -> None:
    monkeypatch.setattr(export, "find_browser", lambda: None)
    with pytest.raises(export.StaticExportUnavailable, match="apt-get install chromium"):
        export.save_static(dla_heatmap(result), tmp_path / "fig")


@pytest.mark.skipif(not export.static_export_available(), reason="no Chromium for kaleido")
def test_static_export_writes_png_and_svg(result, tmp_path) -> None:
    written = export.save_static(dla_heatmap(result), tmp_path / "fig")
    png, svg = written
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert "<svg" in svg.read_text()[:500]


def test_help_explains_each_subcommand() -> None:
    out = subprocess.run(
        [sys.executable, "-m", "circuits.cli", "--help"], capture_output=True, text=True, check=True
    ).stdout
    assert "dla" in out and "organism" in out
    dla_help = subprocess.run(
        [sys.executable, "-m", "circuits.cli", "dla", "--help"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    for option in ("--model", "--pairs", "--out", "--n", "--seed"):
        assert option in dla_help


def test_dla_command_writes_json_and_html(tiny_dirs, tmp_path) -> None:
    pairs = tmp_path / "pairs.jsonl"
    write_pairs(builtin_pairs(4), pairs)
    out = tmp_path / "out"
    code = main(
        [
            "dla",
            "--model",
            str(tiny_dirs["gpt2"]),
            "--pairs",
            str(pairs),
            "--out",
            str(out),
            "--n",
            "3",
            "--seed",
            "1",
            "--n-boot",
            "100",
        ]
    )
    assert code == 0
    data = json.loads((out / "dla.json").read_text())
    assert data["n_pairs"] == 3 and data["n_layers"] == 3 and data["n_heads"] == 4
    per_head = np.array(data["per_head"])
    assert per_head.shape == (3, 4)
    assert np.all(np.array(data["per_head_ci_low"]) <= per_head + 1e-12)
    assert data["remainder"] == pytest.approx(data["total_logit_diff"] - per_head.sum())
    assert data["remainder"] == pytest.approx(sum(data["components"].values()), abs=1e-4)
    assert "Plotly.newPlot" in (out / "dla.html").read_text()


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--model", "no-such-org/no-such-model"], "unknown model"),
        (["--pairs", "missing.jsonl"], "does not exist"),
        (["--pairs", "EMPTY"], "no pairs"),
    ],
)
def test_dla_command_bad_input_is_one_clear_line(
    tiny_dirs, tmp_path, capsys, args: list[str], message: str
) -> None:
    empty = tmp_path / "empty.jsonl"
    empty.write_text("\n")
    args = [str(empty) if a == "EMPTY" else a for a in args]
    if "--model" not in args:
        args = ["--model", str(tiny_dirs["llama"]), *args]
    code = main(["dla", "--out", str(tmp_path / "o"), *args])
    assert code == 2
    err = capsys.readouterr().err
    assert message in err and "Traceback" not in err


def test_every_dla_figure_names_its_units(result) -> None:
    from circuits.views import dla_figures
    from tests.helpers.figures import assert_units

    for stem, fig in dla_figures(result).items():
        assert_units(stem, fig)


def test_unpatched_heads_of_a_prescreen_read_not_measured(tiny_dirs) -> None:
    from attribution.interchange import interchange_test
    from circuits.patching_views import patching_figure
    from circuits.views import NOT_MEASURED
    from patching.loading import load_model
    from tests.helpers.figures import assert_units

    model = load_model(tiny_dirs["qwen2"])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # pairs of unequal length: not the point
        run = interchange_test(model, builtin_pairs(6), mode="prescreen", top_k=3,
                               positions="last", n_boot=50, progress=False)  # fmt: skip
    fig = patching_figure(run)
    assert_units("patching", fig)
    necessity = fig.data[0]
    z = np.asarray(necessity.z, dtype=np.float64)
    np.testing.assert_array_equal(z, run.necessity)  # NaN where not patched, never 0
    unmeasured = np.argwhere(np.isnan(z))
    assert len(unmeasured) == model.n_layers * model.n_heads - 3
    layer, head = unmeasured[0]
    assert "not measured" in necessity.text[layer][head]
    assert fig.layout.plot_bgcolor == NOT_MEASURED
