"""``compare``: audits of several models side by side."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from circuits.cli import main
from circuits.compare import compare_audits
from patching.errors import RefusalCircuitsError


def _fake_audit(directory: Path, n_layers: int, gate_layer: int, effect: float) -> Path:
    directory.mkdir(parents=True)
    finding = {"layer": gate_layer, "head": 0, "necessity": 0.8, "ci": [0.7, 0.9], "p": 0.001,
               "q": 0.01, "dla_share": 0.001, "sufficiency": 0.5}  # fmt: skip
    amps = [{**finding, "layer": gate_layer + 2, "knockout_change": -0.5},
            {**finding, "layer": gate_layer + 3, "knockout_change": -0.4}]  # fmt: skip
    data = {"model": f"m{n_layers}", "n_layers": n_layers, "n_heads": 4, "n_pairs": 8,
            "gate": [finding], "amplifiers": amps, "negative_heads": {"heads": [[1, 1]]},
            "cascade": {"effect": effect, "p": 0.05}}  # fmt: skip
    (directory / "audit.json").write_text(json.dumps(data))
    return directory


def test_compare_table_and_command(tmp_path: Path) -> None:
    small = _fake_audit(tmp_path / "a", 8, 3, -90.0)
    large = _fake_audit(tmp_path / "b", 24, 10, -60.0)
    table = compare_audits([large, small])
    assert list(table["model"]) == ["m8", "m24"]
    assert table["gate_depth"].tolist() == [3 / 8, 10 / 24]
    assert table["amplifier_band_width"].tolist() == [2, 2]
    assert table["cascade_strength"].tolist() == [90.0, 60.0]
    out = tmp_path / "cmp"
    assert main(["compare", str(small), str(large), "--out", str(out)]) == 0
    html = (out / "compare.html").read_text()
    assert "gate depth" in html and "<script src=" not in html
    with pytest.raises(RefusalCircuitsError, match=r"audit\.json"):
        compare_audits([tmp_path])
