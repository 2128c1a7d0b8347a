"""Bad input is one clear line and exit status 2, found before any expensive work.

Issue 10, items 7-9: option values, output and cache directories, pair files,
damaged model and result files, pickled checkpoints, too few pairs for the
statistics; and what every output directory records about the run.
"""

from __future__ import annotations

import errno
import hashlib
import json
import shutil
import subprocess
import sys
import time
from importlib import metadata
from pathlib import Path

import pytest
import torch

from attribution.statistics import check_enough_pairs, min_attainable_p, min_pairs_for
from circuits.cli import build_parser, main
from circuits.cli import inputs as cli_inputs
from patching import loading as model_module
from patching.chat import format_chat
from patching.errors import (
    ChatTemplateError,
    DeviceError,
    ModelLoadError,
    TooFewPairsError,
    UnsafeCheckpointError,
)
from patching.gguf_check import check_gguf_file
from patching.loading import check_device, load_model
from patching.prompts import PromptPair, builtin_pairs, write_pairs
from tests.helpers import ROOT
from tests.helpers.tiny_models import build_tokenizer

# --------------------------------------------------------------------------- helpers


def one_line(capsys: pytest.CaptureFixture[str], *words: str) -> str:
    """The single stderr line, holding every one of ``words``."""
    err = capsys.readouterr().err
    lines = [line for line in err.splitlines() if line.strip()]
    assert "Traceback" not in err
    assert len(lines) == 1, err
    for word in words:
        assert word in lines[0], (word, lines[0])
    return lines[0]


@pytest.fixture
def no_model(monkeypatch: pytest.MonkeyPatch) -> None:
    """Fail the test if a command loads a model."""

    def refuse(*args: object, **kwargs: object) -> None:
        raise AssertionError("the model was loaded before the input was checked")

    monkeypatch.setattr(cli_inputs, "load_model", refuse)


@pytest.fixture
def no_compute(monkeypatch: pytest.MonkeyPatch) -> None:
    """Fail the test if a command starts its computation."""

    def refuse(*args: object, **kwargs: object) -> None:
        raise AssertionError("the computation started before the input was checked")

    # The command handlers import their implementation when they run.
    import attribution.dla
    import attribution.interchange
    import circuits.audit

    monkeypatch.setattr(attribution.dla, "direct_logit_attribution", refuse)
    monkeypatch.setattr(attribution.interchange, "interchange_test", refuse)
    monkeypatch.setattr(circuits.audit, "audit", refuse)


@pytest.fixture
def pair_file(tmp_path: Path) -> Path:
    path = tmp_path / "pairs.jsonl"
    write_pairs(builtin_pairs(8), path)
    return path


# --------------------------------------------------------------------------- item 7: options


@pytest.mark.parametrize(
    ("argv", "words"),
    [
        (["audit", "--band", "0.65", "0.25"], ["--band 0.65 0.25", "LOW < HIGH"]),
        (["audit", "--band", "0.2", "1.5"], ["--band 0.2 1.5", "<= 1"]),
        (["audit", "--band", "-0.1", "0.5"], ["--band -0.1 0.5", "0 <= LOW"]),
        (["dla", "--n-boot", "0"], ["--n-boot 0", "bootstrap resamples", "at least 1"]),
        (["dla", "--n-boot", "-5"], ["--n-boot -5", "at least 1"]),
        (["dla", "--batch-size", "0"], ["--batch-size 0", "batch size", "at least 1"]),
        # The shared run options are checked in one place, whichever command has them.
        (["cipher", "--n-boot", "0"], ["--n-boot 0", "bootstrap resamples", "at least 1"]),
        (["cipher", "--batch-size", "0"], ["--batch-size 0", "batch size", "at least 1"]),
        (["guard", "--gen-tokens", "0"], ["--gen-tokens 0", "generated tokens", "at least 1"]),
        (["cliff", "--batch-size", "-1"], ["--batch-size -1", "at least 1"]),
        (["directions", "--gen-tokens", "0"], ["--gen-tokens 0", "at least 1"]),
        (["calibrate", "--gen-tokens", "0"], ["--gen-tokens 0", "at least 1"]),
        (["dla", "--device", "tpu"], ["unknown device 'tpu'", "cpu"]),
        (["screen", "--mode", "prescreen", "--top-k", "-5"], ["--top-k -5", "at least 1"]),
        (["screen", "--mode", "prescreen", "--top-k", "0"], ["--top-k 0", "at least 1"]),
        (["screen", "--top-k", "3"], ["--top-k 3", "--mode prescreen"]),
        (["screen", "--budget-mb", "0"], ["--budget-mb 0", "positive"]),
        (["audit", "--n-null", "0"], ["--n-null 0", "random heads", "at least 1"]),
        (["audit", "--n-null", "-2"], ["--n-null -2", "at least 1"]),
        (["audit", "--check-heads", "-1"], ["--check-heads -1", "0 (no cross-check)"]),
        (["audit", "--screen-k", "0"], ["--screen-k 0", "measured exactly", "at least 1"]),
        (["dla", "--n", "0"], ["--n 0", "number of pairs", "at least 1"]),
        (["audit", "--n", "-3"], ["--n -3", "at least 1"]),
        (["screen", "--n", "0"], ["--n 0", "at least 1"]),
    ],
)
def test_bad_option_values_are_refused_before_loading(
    tmp_path: Path, capsys, no_model, no_compute, argv: list[str], words: list[str]
) -> None:
    out = tmp_path / "out"
    assert main([*argv, "--out", str(out)]) == 2
    one_line(capsys, f"refusal-circuits {argv[0]}: error:", *words)
    assert not out.exists()  # not even the output directory was made


@pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has a GPU")
def test_cuda_without_a_gpu_is_refused(tmp_path: Path, capsys, no_model) -> None:
    assert main(["dla", "--device", "cuda", "--out", str(tmp_path / "o")]) == 2
    one_line(capsys, "'cuda'", "no CUDA GPU", "--device cpu")


def test_check_device() -> None:
    assert check_device("cpu") == "cpu"
    with pytest.raises(DeviceError, match="unknown device"):
        check_device("tpu")
    with pytest.raises(DeviceError, match="cuda:N"):
        check_device("gpu0")
    if not torch.cuda.is_available():
        with pytest.raises(DeviceError, match="no CUDA GPU"):
            check_device("cuda:1")


# --------------------------------------------------------------------------- item 7: directories


def test_out_that_is_a_file(tmp_path: Path, capsys, pair_file, no_model) -> None:
    target = tmp_path / "taken"
    target.write_text("x")
    assert main(["dla", "--pairs", str(pair_file), "--model", "x/y", "--out", str(target)]) == 2
    one_line(capsys, str(target), "is a file", "directory")
    assert target.read_text() == "x"


def test_out_under_a_file(tmp_path: Path, capsys, pair_file, no_model) -> None:
    (tmp_path / "f").write_text("x")
    out = tmp_path / "f" / "sub"
    assert main(["dla", "--pairs", str(pair_file), "--model", "x/y", "--out", str(out)]) == 2
    one_line(capsys, str(out), "cannot be created", "writable location")


def test_unwritable_out(tmp_path: Path, capsys, pair_file, no_model, monkeypatch) -> None:
    # Tests run as root here, where chmod cannot make a directory unwritable.
    real = Path.write_bytes

    def denied(self: Path, data: bytes) -> int:
        if self.name.startswith(".write-probe"):
            raise PermissionError(errno.EACCES, "Permission denied", str(self))
        return real(self, data)

    monkeypatch.setattr(Path, "write_bytes", denied)
    out = tmp_path / "o"
    assert main(["dla", "--pairs", str(pair_file), "--model", "x/y", "--out", str(out)]) == 2
    one_line(capsys, str(out), "not writable", "Permission denied")


def test_read_only_filesystem(tmp_path: Path, capsys, pair_file, no_model, monkeypatch) -> None:
    def read_only(self: Path, *args: object, **kwargs: object) -> None:
        raise OSError(errno.EROFS, "Read-only file system", str(self))

    monkeypatch.setattr(Path, "mkdir", read_only)
    out = tmp_path / "o"
    assert main(["audit", "--pairs", str(pair_file), "--model", "x/y", "--out", str(out)]) == 2
    one_line(capsys, str(out), "Read-only file system", "writable location")


def test_unwritable_organism_cache(tmp_path: Path, capsys, monkeypatch, no_model) -> None:
    (tmp_path / "file").write_text("x")
    cache = tmp_path / "file" / "cache"
    monkeypatch.setenv("REFUSAL_CIRCUITS_CACHE", str(cache))
    assert main(["dla", "--out", str(tmp_path / "o")]) == 2
    one_line(capsys, "cannot build the model organism", str(cache), "REFUSAL_CIRCUITS_CACHE")


# --------------------------------------------------------------------------- item 7: pairs


def test_identical_pair_in_audit(tmp_path: Path, capsys, no_model) -> None:
    pairs = builtin_pairs(8)
    pairs[3] = PromptPair(harmful="Tell me a story", control="Tell me a story")
    path = tmp_path / "pairs.jsonl"
    write_pairs(pairs, path)
    argv = ["audit", "--model", "x/y", "--pairs", str(path), "--out", str(tmp_path / "o")]
    assert main(argv) == 2
    one_line(capsys, "pair 4 of 8", "same harmful and control", "'Tell me a story'")


def test_pairs_of_unknown_words_carry_no_contrast(tmp_path: Path, capsys, no_compute) -> None:
    # The organism's word-level tokenizer maps words it does not know to one unknown token.
    pairs = builtin_pairs(8)
    pairs[0] = PromptPair(harmful="qwzx plorf", control="zzyv blick")
    path = tmp_path / "pairs.jsonl"
    write_pairs(pairs, path)
    assert main(["dla", "--pairs", str(path), "--out", str(tmp_path / "o")]) == 2
    one_line(capsys, "pair 1 of 8", "same ids", "unknown", "drop the pair")


def test_prompt_longer_than_the_context(tiny_dirs, tmp_path: Path, capsys, no_compute) -> None:
    pairs = builtin_pairs(8)
    pairs[1] = PromptPair(harmful="how to " * 2500, control="how do " * 2500)
    path = tmp_path / "pairs.jsonl"
    write_pairs(pairs, path)
    argv = ["dla", "--model", str(tiny_dirs["gpt2"]), "--pairs", str(path)]
    assert main([*argv, "--out", str(tmp_path / "o")]) == 2
    line = one_line(capsys, "pair 2 of 8", "harmful prompt", "context of 256 positions")
    assert "shorten" in line


# --------------------------------------------------------------------------- item 7: statistics


def test_min_attainable_p_of_the_sign_flip_test() -> None:
    assert min_attainable_p(1) == 1.0
    assert min_attainable_p(4) == 0.125
    assert min_attainable_p(5) == 0.0625
    assert min_attainable_p(6) == 2 / 64
    assert min_attainable_p(30) == pytest.approx(1 / 10_001)  # Monte Carlo: (0 + 1) / (B + 1)
    assert min_pairs_for(0.05) == 6
    assert min_pairs_for(0.01) == 8
    check_enough_pairs(6)
    with pytest.raises(TooFewPairsError, match=r"smallest attainable p is 0\.125.*at least 6"):
        check_enough_pairs(4)


def test_min_attainable_p_matches_the_test_itself() -> None:
    import numpy as np

    from attribution.statistics import sign_flip_test

    for n in (1, 3, 5, 8):
        p = sign_flip_test(np.ones((n, 1)))
        assert p[0] == pytest.approx(min_attainable_p(n))


def test_audit_with_too_few_pairs_for_significance(tmp_path: Path, capsys, no_model) -> None:
    assert main(["audit", "--n", "4", "--out", str(tmp_path / "o")]) == 2
    one_line(capsys, "4 pairs", "0.125", "0.05", "at least 6 pairs")


def test_screen_with_too_few_pairs(tmp_path: Path, capsys, pair_file, no_model) -> None:
    argv = ["screen", "--model", "x/y", "--pairs", str(pair_file), "--n", "5"]
    assert main([*argv, "--out", str(tmp_path / "o")]) == 2
    one_line(capsys, "5 pairs", "0.0625", "at least 6 pairs")


def test_dla_with_one_pair_has_no_interval(tmp_path: Path, capsys, pair_file, no_model) -> None:
    argv = ["dla", "--model", "x/y", "--pairs", str(pair_file), "--n", "1"]
    assert main([*argv, "--out", str(tmp_path / "o")]) == 2
    one_line(capsys, "1 pair", "zero-width", "at least 2 pairs")


# --------------------------------------------------------------------------- item 7: files


def _tiny_gguf(path: Path) -> Path:
    import gguf
    import numpy as np

    writer = gguf.GGUFWriter(str(path), "llama")
    writer.add_block_count(1)
    writer.add_tensor("token_embd.weight", np.ones((64, 32), dtype=np.float32))
    writer.add_tensor("output.weight", np.ones((64, 32), dtype=np.float32))
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return path


def test_truncated_gguf_is_named_truncated(tmp_path: Path, capsys) -> None:
    whole = _tiny_gguf(tmp_path / "whole.gguf")
    check_gguf_file(whole)  # a whole file passes
    data = whole.read_bytes()
    cut = tmp_path / "cut.gguf"
    cut.write_bytes(data[: len(data) - 100])
    with pytest.raises(ModelLoadError, match=rf"{len(data) - 100:,} bytes\) is truncated"):
        check_gguf_file(cut)
    head = tmp_path / "head.gguf"
    head.write_bytes(data[:40])
    with pytest.raises(ModelLoadError, match="truncated: it ends inside its header"):
        check_gguf_file(head)
    junk = tmp_path / "junk.gguf"
    junk.write_bytes(b"not a gguf file at all")
    with pytest.raises(ModelLoadError, match="corrupted"):
        check_gguf_file(junk)
    assert main(["dla", "--model", str(cut), "--n", "2", "--out", str(tmp_path / "o")]) == 2
    line = one_line(capsys, str(cut), "truncated", "bytes", "download")
    assert "tokenizer" not in line


@pytest.mark.parametrize(
    ("content", "words"),
    [
        ('{"model": "m", "gate": [', ["cannot be read as JSON"]),
        ("{}", ["has no field 'model'"]),
        ("[1, 2]", ["wrong type"]),
    ],
)
def test_compare_names_a_corrupted_audit_json(
    tmp_path: Path, capsys, content: str, words: list[str]
) -> None:
    bad = tmp_path / "bad"
    bad.mkdir()
    (bad / "audit.json").write_text(content)
    assert main(["compare", str(bad), "--out", str(tmp_path / "cmp")]) == 2
    one_line(capsys, str(bad / "audit.json"), "is corrupted", *words)


# --------------------------------------------------------------------------- item 7: hub, template


def test_no_template_message_names_no_missing_option(tmp_path: Path) -> None:
    tok = build_tokenizer(tmp_path, template=False)
    with pytest.raises(ChatTemplateError) as info:
        format_chat(tok, "Write a poem")
    assert "--chat-template" not in str(info.value)
    assert "chat_template.jinja" in str(info.value)


def test_options_named_in_messages_exist() -> None:
    """Every ``--option`` the toolkit's messages or docs suggest is a real option."""
    import re

    parser = build_parser()
    known = {o for _, sub in _subparsers(parser) for a in sub._actions for o in a.option_strings}
    known |= set(parser._option_string_actions)
    root = ROOT
    for package in ("patching", "attribution", "circuits"):
        for source in (root / package).rglob("*.py"):
            for line in source.read_text().splitlines():
                if "pip " in line:
                    continue  # pip's own options (pip install/download --no-deps)
                for option in re.findall(r"(?<![\w-])--[a-z][a-z-]*[a-z]", line):
                    assert option in known, f"{source.name} names {option}, which does not exist"


def test_hub_name_with_offline_env_fails_without_network(monkeypatch) -> None:
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")

    def no_network(*args: object, **kwargs: object) -> None:
        raise AssertionError("the hub was contacted")

    monkeypatch.setattr(model_module, "_hub_reachable", no_network)
    monkeypatch.setattr("transformers.AutoTokenizer.from_pretrained", no_network)
    began = time.perf_counter()
    with pytest.raises(ModelLoadError, match="HF_HUB_OFFLINE"):
        load_model("no-such-org/no-such-model")
    assert time.perf_counter() - began < 5


def test_hub_name_without_network_fails_fast(monkeypatch) -> None:
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.delenv("TRANSFORMERS_OFFLINE", raising=False)
    monkeypatch.setattr(model_module, "_hub_reachable", lambda timeout=3.0: False)

    def no_retries(*args: object, **kwargs: object) -> None:
        raise AssertionError("the load went on to the hub and its retries")

    monkeypatch.setattr("transformers.AutoTokenizer.from_pretrained", no_retries)
    with pytest.raises(ModelLoadError, match="cannot be reached") as info:
        load_model("no-such-org/no-such-model")
    assert "unknown model 'no-such-org/no-such-model'" in str(info.value)


def test_hub_name_offline_uses_the_local_hub_cache(tiny_dirs, monkeypatch) -> None:
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr(model_module, "_cached_snapshot", lambda name: tiny_dirs["llama"])
    model = load_model("some-org/tiny-llama")
    assert model.name == "some-org/tiny-llama" and model.n_layers == 3


def test_hub_reachability_probe_is_quick_when_unreachable(monkeypatch) -> None:
    monkeypatch.setenv("HF_ENDPOINT", "https://127.0.0.1:9")
    from huggingface_hub import constants

    monkeypatch.setattr(constants, "ENDPOINT", "https://127.0.0.1:9")
    for var in ("HTTPS_PROXY", "https_proxy", "ALL_PROXY", "all_proxy"):
        monkeypatch.delenv(var, raising=False)
    began = time.perf_counter()
    assert model_module._hub_reachable(timeout=2.0) is False
    assert time.perf_counter() - began < 3


# --------------------------------------------------------------------------- item 8: pickles


@pytest.fixture
def pickled_dir(tiny_dirs, tmp_path: Path) -> Path:
    from safetensors.torch import load_file

    directory = tmp_path / "pickled"
    shutil.copytree(tiny_dirs["llama"], directory)
    state = load_file(str(directory / "model.safetensors"))
    torch.save(state, directory / "pytorch_model.bin")
    (directory / "model.safetensors").unlink()
    return directory


def test_pickled_checkpoint_is_refused_by_default(pickled_dir: Path) -> None:
    with pytest.raises(UnsafeCheckpointError) as info:
        load_model(pickled_dir)
    message = str(info.value)
    for words in ("pytorch_model.bin", "arbitrary code", "safe_serialization=True", "allow_pickle"):
        assert words in message


def test_pickled_checkpoint_loads_when_allowed(pickled_dir: Path, tiny_dirs) -> None:
    model = load_model(pickled_dir, allow_pickle=True)
    reference = load_model(tiny_dirs["llama"])
    tokens = torch.tensor([[1, 2, 3, 4]])
    torch.testing.assert_close(model.forward(tokens), reference.forward(tokens))


def test_pickled_checkpoint_on_the_command_line(
    pickled_dir: Path, tmp_path: Path, capsys, pair_file, no_compute
) -> None:
    argv = ["dla", "--model", str(pickled_dir), "--pairs", str(pair_file)]
    assert main([*argv, "--out", str(tmp_path / "o")]) == 2
    one_line(capsys, "pickled weights", "arbitrary code", "--allow-pickle")


@pytest.mark.parametrize("suffix", [".pt", ".pth", ".ckpt"])
def test_other_pickle_suffixes_are_refused(pickled_dir: Path, suffix: str) -> None:
    (pickled_dir / "pytorch_model.bin").rename(pickled_dir / f"weights{suffix}")
    with pytest.raises(UnsafeCheckpointError, match=rf"weights\{suffix}"):
        load_model(pickled_dir)


# --------------------------------------------------------------------------- item 9: provenance


def test_version_flag(capsys) -> None:
    with pytest.raises(SystemExit) as info:
        main(["--version"])
    assert info.value.code == 0
    assert capsys.readouterr().out.strip() == (
        f"refusal-circuits {metadata.version('refusal-circuits')}"
    )


def _subparsers(parser):
    import argparse

    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, sub in action.choices.items():
                yield name, sub
                yield from _subparsers(sub)


def test_every_help_shows_every_default() -> None:
    import argparse

    parser = build_parser()
    seen = set()
    for name, sub in _subparsers(parser):
        seen.add(name)
        text = " ".join(sub.format_help().split())
        for action in sub._actions:
            if not action.option_strings or action.required:
                continue
            if argparse.SUPPRESS in (action.default, action.help):
                continue
            if action.default is None:
                assert "default" in (action.help or ""), (name, action.option_strings)
                continue
            shown = sub._get_formatter()._format_action(action)
            assert "default" in shown, (name, action.option_strings)
        if name == "dla":
            assert "(default: 2000)" in text and "(default: 16)" in text
            assert "(default: float32)" in text and "(default: 0)" in text
        if name == "audit":
            assert "(default: 0.25 0.65)" in text and "(default: 99)" in text
            assert "(default: audit)" in text and "(default: off)" in text
    assert {"dla", "screen", "audit", "compare", "organism", "build", "check", "directions"} <= seen


def test_every_model_command_takes_the_one_quiet_flag() -> None:
    """--quiet, from common.py, on every command that shows progress; no other progress flag."""
    expected = {"dla", "screen", "audit", "directions", "guard", "calibrate", "cipher", "cliff"}
    helps = {}
    for name, sub in _subparsers(build_parser()):
        flags = {o: a for a in sub._actions for o in a.option_strings}
        assert "--no-progress" not in flags, name
        if "--quiet" in flags:
            helps[name] = flags["--quiet"].help
    assert set(helps) == expected
    assert len(set(helps.values())) == 1 and "progress bars" in next(iter(helps.values()))


def test_help_subprocess_shows_defaults() -> None:
    out = subprocess.run(
        [sys.executable, "-m", "circuits.cli", "screen", "--help"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    assert "(default: exact)" in out and "(default: 512.0)" in out


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_dla_records_the_run(tiny_dirs, tmp_path: Path, pair_file) -> None:
    out = tmp_path / "dla"
    argv = ["dla", "--model", str(tiny_dirs["qwen2"]), "--pairs", str(pair_file)]
    argv += ["--n", "3", "--seed", "2", "--n-boot", "50", "--out", str(out)]
    assert main(argv) == 0
    run = json.loads((out / "run.json").read_text())
    assert run["argv"] == ["refusal-circuits", *argv]
    assert run["pairs"]["source"] == str(pair_file.resolve())
    assert run["pairs"]["file_sha256"] == _sha256(pair_file)
    assert run["pairs"]["n"] == 3 and len(run["pairs"]["sha256"]) == 64
    assert (run["n"], run["seed"], run["dtype"], run["device"]) == (3, 2, "float32", "cpu")
    assert run["model"]["dtype"] == "float32" and run["model"]["shape"]["n_layers"] == 3
    assert {"python", "torch", "transformers", "transformer-lens", "refusal-circuits"} <= set(
        run["versions"]
    )
    assert json.loads((out / "dla.json").read_text())["run"] == run
    # The two identities measured on this model before the work (circuits.checks).
    checks = run["checks"]
    assert checks["passed"] and checks["engine"]["passed"] and checks["engine"]["fast_paths"]
    assert 0 <= checks["dla_identity_error"] <= checks["dla_tolerance"] < 1e-2
    assert 0 <= checks["engine"]["max_error"] <= checks["engine"]["tolerance"]
    assert checks["engine"]["versions"] == run["versions"]


def test_screen_records_the_run_with_builtin_pairs(tiny_dirs, tmp_path: Path) -> None:
    from circuits.provenance import pairs_sha256

    out = tmp_path / "screen"
    argv = ["screen", "--model", str(tiny_dirs["gpt2"]), "--n", "6", "--positions", "last"]
    assert main([*argv, "--quiet", "--out", str(out)]) == 0
    run = json.loads((out / "run.json").read_text())
    assert run["pairs"]["source"] == "builtin" and run["pairs"]["file_sha256"] is None
    assert run["pairs"]["sha256"] == pairs_sha256(builtin_pairs(6))
    assert json.loads((out / "screen.json").read_text())["run"] == run


def test_run_record_takes_extra_fields(tiny_dirs) -> None:
    import argparse

    from circuits.provenance import run_record

    args = argparse.Namespace(model="m", pairs=None, n=None, seed=0, dtype="float32")
    record = run_record(args, builtin_pairs(2), None, extra={"self_check": {"ok": True}})
    assert record["self_check"] == {"ok": True} and record["pairs"]["n"] == 2


def test_audit_json_keeps_the_run(monkeypatch, tmp_path: Path, capsys) -> None:
    """The audit command hands its run record to ``audit``; AuditResult keeps it."""
    import circuits.audit
    from circuits.audit import AuditResult

    seen = {}

    class Stop(Exception):
        pass

    def fake_audit(model, pairs, config, out, **kwargs):
        seen.update(kwargs)
        raise Stop

    monkeypatch.setattr(circuits.audit, "audit", fake_audit)
    out = tmp_path / "a"
    with pytest.raises(Stop):
        main(["audit", "--n", "6", "--out", str(out), "--quiet", "--no-figures"])
    run = seen["run"]
    assert run == json.loads((out / "run.json").read_text())
    assert run["jailbreak"]["n"] > 0 and run["pairs"]["n"] == 6
    assert run["checks"]["passed"] and run["checks"]["model"] == run["model"]["name"]
    assert run["pairs"]["source"].endswith("pairs.jsonl") and run["pairs"]["file_sha256"]
    assert "run" in AuditResult.__dataclass_fields__


def test_the_parser_mirrors_the_library_defaults() -> None:
    """circuits.cli.common keeps copies (so --help imports no torch); they must agree."""
    import attribution.interchange
    import attribution.metrics
    import attribution.statistics
    import patching.chat
    from circuits.cli import common

    assert common.DEFAULT_N_BOOT == attribution.statistics.DEFAULT_N_BOOT
    assert common.DEFAULT_LEVEL == attribution.statistics.DEFAULT_LEVEL
    assert tuple(common.SCALES) == tuple(attribution.statistics.SCALES)
    assert tuple(common.MODES) == tuple(attribution.interchange.MODES)
    assert tuple(common.METRICS) == tuple(attribution.metrics.METRICS)
    assert tuple(common.POSITION_LABELS) == tuple(patching.chat.POSITION_LABELS)


def test_building_the_parser_imports_no_torch() -> None:
    code = "import sys; from circuits.cli import build_parser; build_parser(); "
    code += "print('torch' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


def test_one_n_rule_first_n_unless_sample(tmp_path: Path) -> None:
    """--n keeps the first n pairs for every source; --sample draws them with --seed."""
    from circuits.cli.inputs import resolve_pairs

    pairs = [PromptPair(f"harmful request {i}", f"harmless request {i}") for i in range(10)]
    path = write_pairs(pairs, tmp_path / "p.jsonl")
    args = build_parser().parse_args(["dla", "--pairs", str(path), "--n", "3", "--out", "o"])
    assert resolve_pairs(args, None) == pairs[:3]
    builtin = build_parser().parse_args(["dla", "--n", "3", "--out", "o", "--model", "x"])
    assert resolve_pairs(builtin, None) == builtin_pairs(3)
    for argv in (["--pairs", str(path)], ["--model", "x"]):
        args = build_parser().parse_args(["dla", *argv, "--n", "3", "--sample", "--out", "o"])
        args.seed = 1
        drawn = resolve_pairs(args, None)
        again = resolve_pairs(args, None)
        assert len(drawn) == 3 and drawn == again


def test_sample_needs_n(capsys) -> None:
    assert main(["dla", "--sample", "--out", "o"]) == 2
    one_line(capsys, "--sample", "--n")
