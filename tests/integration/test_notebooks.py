"""The notebooks are executed walkthroughs: each must run top to bottom without error."""

from __future__ import annotations

import os
from pathlib import Path

import nbformat
import pytest
from nbclient import NotebookClient

from tests.helpers import ROOT

NOTEBOOKS = sorted((ROOT / "notebooks").glob("*.ipynb"))


def test_the_walkthroughs_exist() -> None:
    assert [p.name for p in NOTEBOOKS] == [
        "01_quickstart.ipynb",
        "02_audit_a_real_model.ipynb",
        "03_compare_models.ipynb",
        "04_directions_guard_calibration.ipynb",
        "05_cipher.ipynb",
        "06_cliff.ipynb",
    ]


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_notebook_executes(path: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    notebook = nbformat.read(path, as_version=4)
    # Notebooks write their outputs under the working directory; run them in a
    # scratch one, with CI's offline settings passed down to the kernel.
    monkeypatch.setenv("REFUSAL_CIRCUITS_NOTEBOOK_CI", "1")
    for name in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE", "OMP_WAIT_POLICY"):
        monkeypatch.setenv(name, os.environ.get(name, "1" if "OFFLINE" in name else "PASSIVE"))
    client = NotebookClient(
        notebook,
        timeout=600,
        kernel_name="python3",
        resources={"metadata": {"path": str(tmp_path)}},
    )
    client.execute()
    errors = [
        out
        for cell in notebook.cells
        if cell.cell_type == "code"
        for out in cell.get("outputs", [])
        if out.get("output_type") == "error"
    ]
    assert errors == []
