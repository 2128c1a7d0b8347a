"""``refusal-circuits guard`` end to end on the organism, and its input errors."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from circuits.cli import inputs as cli_inputs
from circuits.cli import main
from patching.prompts import builtin_pairs, write_pairs
from tests.helpers import ROOT

DATA = ROOT / "tests" / "data"


def one_line(capsys: pytest.CaptureFixture[str], *words: str) -> str:
    err = capsys.readouterr().err
    lines = [line for line in err.splitlines() if line.strip()]
    assert "Traceback" not in err and len(lines) == 1, err
    for word in words:
        assert word in lines[0], (word, lines[0])
    return lines[0]


@pytest.fixture
def no_model(monkeypatch: pytest.MonkeyPatch) -> None:
    def refuse(*args: object, **kwargs: object) -> None:
        raise AssertionError("the model was loaded before the input was checked")

    monkeypatch.setattr(cli_inputs, "load_model", refuse)


def test_cross_fit_save_load_eval_and_score(tmp_path: Path, capsys) -> None:
    out = tmp_path / "g"
    argv = ["guard", "--n", "12", "--folds", "3", "--out", str(out), "--quiet"]
    argv += ["--save", str(tmp_path / "saved"), "--score", str(DATA / "advbench_sample.csv")]
    argv += ["--eval", str(DATA / "xstest_sample.csv"), str(DATA / "alpaca_sample.json")]
    assert main(argv) == 0
    printed = capsys.readouterr().out
    assert "cross-fit over 3 folds" in printed and "ROC AUC" in printed
    data = json.loads((out / "guard.json").read_text())
    assert {"accuracy", "f1", "roc_auc", "folds", "groups", "run"} <= set(data)
    assert len(data["folds"]) == 3 and data["mode"] == "cross-fit"
    head = data["groups"][0]
    assert head["name"] == "pairs" and head["guard"]["n"] == 24
    assert data["roc_auc"] == head["guard"]["auc"]
    # The organism's own jailbreak pairs ride along, scored and grouped by framing.
    framings = {g["name"] for g in data["groups"] if g["kind"] == "framing"}
    assert framings == {"plain", "jailbreak"}
    html = (out / "report.html").read_text()
    assert "true-positive rate" in html and "prompts (count)" in html
    evaluation = json.loads((out / "eval" / "guard.json").read_text())
    assert any(g["kind"] == "over-refusal" for g in evaluation["groups"])

    # The saved guard, loaded, scores the file as the fitted one did.
    scored = json.loads((out / "scores.json").read_text())
    assert (tmp_path / "saved.safetensors").is_file() and (tmp_path / "saved.json").is_file()
    again = tmp_path / "again"
    argv = ["guard", "--n", "12", "--out", str(again), "--quiet", "--no-behaviour"]
    argv += ["--load", str(tmp_path / "saved"), "--score", str(DATA / "advbench_sample.csv")]
    assert main(argv) == 0
    rescored = json.loads((again / "scores.json").read_text())
    np.testing.assert_allclose(
        [p["score"] for p in rescored["prompts"]], [p["score"] for p in scored["prompts"]]
    )
    loaded = json.loads((again / "guard.json").read_text())
    assert loaded["mode"] == "loaded" and loaded["folds"] == []


@pytest.mark.parametrize(
    ("extra", "words"),
    [
        (["--folds", "1"], ["--folds 1", "at least 2"]),
        (["--n", "2", "--folds", "2"], ["at least 2 harmful", "add prompts"]),
        (["--n", "3", "--folds", "4"], ["3 pairs cannot fill 4 folds", "--folds 3"]),
        (["--validation", "1.5"], ["--validation 1.5", "between 0 and 1"]),
        (["--eval", "nowhere.csv"], ["nowhere.csv"]),
        (["--score", "nowhere.txt"], ["--score nowhere.txt", "cannot be read"]),
        (["--load", "nowhere"], ["nowhere.safetensors is missing"]),
        (["--load", "x", "--save", "y"], ["--load and --save"]),
        (["--load", "x", "--center"], ["--load", "drop them"]),
    ],
)
def test_bad_input_is_one_line_before_the_model_loads(
    tmp_path: Path, capsys, no_model, extra: list[str], words: list[str]
) -> None:
    pairs = tmp_path / "pairs.jsonl"
    write_pairs(builtin_pairs(8), pairs)
    argv = ["guard", "--pairs", str(pairs), "--model", "x/y", "--out", str(tmp_path / "o")]
    assert main(argv + extra) == 2
    one_line(capsys, *words)


def test_unwritable_out_is_refused(tmp_path: Path, capsys, no_model) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("x")
    assert main(["guard", "--model", "x/y", "--out", str(blocker)]) == 2
    one_line(capsys, str(blocker), "is a file")


def test_a_guard_of_another_model_is_refused(tmp_path: Path, capsys, tiny_dirs) -> None:
    saved = tmp_path / "organism_guard"
    assert main(["guard", "--n", "6", "--folds", "2", "--no-behaviour", "--quiet",
                 "--out", str(tmp_path / "a"), "--save", str(saved)]) == 0  # fmt: skip
    capsys.readouterr()
    pairs = tmp_path / "pairs.jsonl"
    write_pairs(builtin_pairs(4), pairs)
    argv = ["guard", "--model", str(tiny_dirs["qwen2"]), "--pairs", str(pairs)]
    argv += ["--load", str(saved), "--out", str(tmp_path / "b"), "--quiet"]
    assert main(argv) == 2
    one_line(capsys, "fitted on", "fit a guard on this model")


def test_sampled_organism_pairs_keep_their_reframings(tmp_path: Path) -> None:
    out = tmp_path / "s"
    argv = ["guard", "--n", "6", "--sample", "--seed", "3", "--folds", "2", "--no-behaviour"]
    assert main([*argv, "--quiet", "--out", str(out)]) == 0
    data = json.loads((out / "guard.json").read_text())["per_prompt"]
    plain = [t for t, s in zip(data["text"], data["source"], strict=True) if s == "pairs"]
    framed = [t for t, s in zip(data["text"], data["source"], strict=True) if s != "pairs"]
    # The organism's framed pair i is plain pair i with the lead word replaced by a marker.
    assert [t.split()[1:] for t in plain] == [t.split()[1:] for t in framed]
