"""Resumed steps belong to the run: stored steps and chunks are keyed on the model.

A rerun into an audit directory reuses a step only if the weights, tokenizer,
dtype, device kind, toolkit version and settings it was computed with are the
same; an unreadable step or chunk is set aside and recomputed.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file, save_file

from circuits.audit import AuditConfig, AuditResult, audit
from circuits.organism import organism_dir
from circuits.store import StepStore
from patching.compat import versions
from patching.fingerprint import fingerprint
from patching.loading import load_model
from patching.prompts import PromptPair, read_pairs

# Small enough to take ~2 s, large enough that the organism's gate L3H2 is found.
CONFIG = AuditConfig(
    n=8,
    figures=False,
    n_boot=200,
    n_null=2,
    n_generate=2,
    gen_tokens=2,
    negative_heads=False,
    ablation_compare=False,
)
STRIP = ("seconds", "steps", "summary")


def _pairs() -> list[PromptPair]:
    return read_pairs(organism_dir() / "pairs.jsonl")


def _same(a: AuditResult, b: AuditResult) -> bool:
    strip = {k: v for k, v in a.to_dict().items() if k not in STRIP}
    return strip == {k: v for k, v in b.to_dict().items() if k not in STRIP}


def _gate(result: AuditResult) -> list[str]:
    return [g.label for g in result.gate]


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    target = tmp_path_factory.mktemp("organism") / "model"
    shutil.copytree(organism_dir(), target)
    return target


@pytest.fixture(scope="module")
def model(model_dir):
    return load_model(model_dir)


@pytest.fixture(scope="module")
def baseline(model, tmp_path_factory: pytest.TempPathFactory) -> tuple[AuditResult, Path]:
    out = tmp_path_factory.mktemp("baseline")
    result = audit(model, _pairs(), CONFIG, out, progress=False)
    assert _gate(result) == ["L3H2"] and result.steps["loaded"] == []
    return result, out


@pytest.fixture
def out(baseline, tmp_path: Path) -> Path:
    """A private copy of the baseline's output directory."""
    copy = tmp_path / "audit"
    shutil.copytree(baseline[1], copy)
    return copy


def _run_dir(out: Path) -> Path:
    (run,) = (out / "steps").glob("run-*")
    return run


def test_unchanged_rerun_reuses_every_step_and_says_so(baseline, model, out) -> None:
    again = audit(model, _pairs(), CONFIG, out, progress=False)
    n = len(baseline[0].steps["computed"])
    assert again.steps["computed"] == [] and len(again.steps["loaded"]) == n
    assert again.steps["notes"] == [f"resumed {out}: {n} of {n} steps reused"]
    assert f"{n} of {n} steps reused" in again.summary()[-1]
    assert _same(baseline[0], again)


def test_stored_steps_record_what_they_belong_to(model, out) -> None:
    run = _run_dir(out)
    context = json.loads((run / "run.json").read_text())["context"]
    assert context == fingerprint(model)
    record = json.loads(next(run.glob("dla-*.json")).read_text())
    assert record["name"] == "dla" and record["context"] == context
    assert record["deps"]["seed"] == CONFIG.seed and "pairs" in record["deps"]
    (parts,) = run.glob("interchange-*.parts/*/deps.json")
    assert json.loads(parts.read_text())["fingerprint"] == context


def test_replaced_weights_recompute(tmp_path: Path) -> None:
    """The reported bug: new weights in the same directory reported the old gate."""
    directory = tmp_path / "model"
    shutil.copytree(organism_dir(), directory)
    out = tmp_path / "audit"
    first = audit(load_model(directory), _pairs(), CONFIG, out, progress=False)
    assert _gate(first) == ["L3H2"]
    # Same file, same shapes, other values: the gate head L3H2 writes nothing.
    weights = load_file(directory / "model.safetensors")
    weights["model.layers.3.self_attn.o_proj.weight"][:, 64:96] = 0.0
    save_file(weights, directory / "model.safetensors", metadata={"format": "pt"})
    replaced = load_model(directory)
    stored = json.loads((_run_dir(out) / "run.json").read_text())["context"]
    assert fingerprint(replaced)["weights"] != stored["weights"]
    assert fingerprint(replaced)["tokenizer"] == stored["tokenizer"]
    rerun = audit(replaced, _pairs(), CONFIG, out, progress=False)
    fresh = audit(replaced, _pairs(), CONFIG, tmp_path / "fresh", progress=False)
    assert rerun.steps["loaded"] == [] and _gate(rerun) == _gate(fresh) == []
    assert _same(rerun, fresh)
    assert "weights differ" in rerun.steps["notes"][0]


def test_changed_dtype_recomputes(baseline, model_dir, out) -> None:
    wide = load_model(model_dir, dtype="float64")
    assert fingerprint(wide)["weights"] != fingerprint(load_model(model_dir))["weights"]
    rerun = audit(wide, _pairs(), CONFIG, out, progress=False)
    assert rerun.steps["loaded"] == []
    assert "dtype" in rerun.steps["notes"][0] and "weights" in rerun.steps["notes"][0]
    assert _gate(rerun) == _gate(baseline[0])


def test_corrupt_step_is_set_aside_and_recomputed(baseline, model, out) -> None:
    step = next(_run_dir(out).glob("dla-*.json"))
    step.write_text(step.read_text()[: len(step.read_text()) // 2])  # truncated mid-write
    with pytest.warns(UserWarning, match=step.name):
        again = audit(model, _pairs(), CONFIG, out, progress=False)
    assert again.steps["computed"] == ["dla"]
    assert step.is_file() and step.with_name(step.name + ".corrupt").is_file()
    assert again.steps["set_aside"] == [str(step) + ".corrupt"]
    assert _same(baseline[0], again)
    assert audit(model, _pairs(), CONFIG, out, progress=False).steps["computed"] == []


def test_truncated_chunk_is_set_aside_and_recomputed(baseline, model, out) -> None:
    run = _run_dir(out)
    next(run.glob("interchange-*.json")).unlink()  # the rerun rebuilds it from its chunks
    (chunk,) = run.glob("interchange-*.parts/*/pair0.pt")
    chunk.write_bytes(chunk.read_bytes()[:100])
    with pytest.warns(UserWarning, match="pair0.pt"):
        again = audit(model, _pairs(), CONFIG, out, progress=False)
    assert again.steps["computed"] == ["interchange"]
    assert chunk.is_file() and chunk.with_name("pair0.pt.corrupt").is_file()
    assert _same(baseline[0], again)


def test_fingerprint_follows_weights_tokenizer_and_in_place_edits(model_dir) -> None:
    m = load_model(model_dir)
    before = fingerprint(m)
    assert fingerprint(m) == before and fingerprint(load_model(model_dir)) == before
    assert set(before) == {
        "weights", "config", "tokenizer", "chat_template", "dtype", "device", "toolkit",
        "torch", "transformers", "transformer-lens",
    }  # fmt: skip
    assert before["transformers"] == versions()["transformers"]
    assert before["device"] == "cpu" and before["dtype"] == "float32"
    o = m.bridge.blocks[3].attn.o.weight
    value = float(o[0, 0])
    with torch.no_grad():
        o[0, 0] += 1.0  # one value, in place: the version counter moves
    edited = fingerprint(m)
    assert edited["weights"] != before["weights"]
    o.data[0, 0] = value  # through .data: invisible to the cache until refreshed
    assert fingerprint(m) == edited and fingerprint(m, refresh=True) == before
    m.tokenizer.chat_template = str(m.tokenizer.chat_template) + "\n"
    assert fingerprint(m)["chat_template"] != before["chat_template"]


def test_store_sets_aside_a_step_recorded_for_other_deps(tmp_path: Path) -> None:
    store = StepStore(tmp_path, context={"weights": "a"})
    store.step("a", {"k": 1}, lambda: {"x": 1})
    path = store.path("a", {"k": 1})
    assert path is not None
    record = json.loads(path.read_text())
    record["deps"] = {"k": 2}
    path.write_text(json.dumps(record))
    again = StepStore(tmp_path, context={"weights": "a"})
    with pytest.warns(UserWarning, match="other deps"):
        assert again.step("a", {"k": 1}, lambda: {"x": 2}) == {"x": 2}
    other = StepStore(tmp_path, context={"weights": "b"})
    assert other.step("a", {"k": 1}, lambda: {"x": 3}) == {"x": 3}
    assert other.notes() == [f"{tmp_path} holds steps of another run (weights differ); none "
                             "reused, all 1 steps computed"]  # fmt: skip
