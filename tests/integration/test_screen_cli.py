"""The screen command writes screen.json and a self-contained screen.html."""

from __future__ import annotations

import argparse
import json

from circuits.cli import main
from circuits.cli.screen import register, run_screen


def _parse(argv):
    parser = argparse.ArgumentParser()
    register(parser.add_subparsers())
    return parser.parse_args(argv)


def test_screen_writes_json_and_html(tiny_dirs, tmp_path) -> None:
    out = tmp_path / "screen"
    args = _parse(
        [
            "screen",
            "--model",
            str(tiny_dirs["gpt2"]),
            "--out",
            str(out),
            "--n",
            "6",
            "--positions",
            "last",
            "--quiet",
        ]
    )
    run_screen(args)
    data = json.loads((out / "screen.json").read_text())
    for key in (
        "necessity",
        "sufficiency",
        "p",
        "q",
        "n_pairs",
        "metric",
        "positions",
        "forward_passes",
        "seconds",
    ):
        assert key in data
    assert len(data["necessity"]) == 3 and len(data["necessity"][0]) == 4
    assert data["n_pairs"] == 6 and data["positions"] == "last"
    html = (out / "screen.html").read_text()
    assert '<script src="http' not in html and "Plotly" in html
    again = _parse(
        [
            "screen",
            "--model",
            str(tiny_dirs["gpt2"]),
            "--out",
            str(out),
            "--n",
            "6",
            "--positions",
            "last",
            "--mode",
            "prescreen",
            "--top-k",
            "3",
            "--quiet",
        ]
    )
    run_screen(again)
    assert json.loads((out / "screen.json").read_text())["mode"] == "prescreen"


def test_screen_runs_through_the_console_script(tiny_dirs, tmp_path, capsys) -> None:
    out = tmp_path / "via_main"
    code = main(
        [
            "screen",
            "--model",
            str(tiny_dirs["qwen2"]),
            "--out",
            str(out),
            "--n",
            "6",
            "--positions",
            "last",
            "--quiet",
        ]
    )
    assert code == 0
    data = json.loads((out / "screen.json").read_text())
    assert len(data["necessity"]) == 3 and len(data["necessity"][0]) == 4
    # --quiet hides the progress bars (stderr) only: the summary and the files still print.
    printed = capsys.readouterr()
    assert "it/s" not in printed.err and "%|" not in printed.err
    lines = printed.out.splitlines()
    assert [line for line in lines if line.startswith("wrote ")] == [
        f"wrote {out / 'screen.json'}",
        f"wrote {out / 'screen.html'}",
    ]
    top = sorted(
        (abs(v), v, f"L{layer}H{head}")
        for layer, row in enumerate(data["necessity"])
        for head, v in enumerate(row)
    )[::-1][:5]
    for _, value, label in top:
        assert any(line.startswith(f"{label}: necessity {value:+.3f}") for line in lines), label
