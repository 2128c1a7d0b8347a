"""The engine's self-check and the library adapter: a broken fast path is caught, never used."""

from __future__ import annotations

import warnings

import pytest
import torch

from circuits.checks import check_model
from circuits.cli import main
from patching import compat
from patching.engine import clean_runs, run_rows, run_rows_full
from patching.interventions import Interchange, Scale
from patching.prompts import builtin_pairs
from patching.self_check import EngineMismatchWarning, tolerance

pytestmark = pytest.mark.engine  # CI's range leg runs these at both ends of the verified range


@pytest.fixture()
def fresh(tiny_dirs):
    """A model of its own per test: a failed self-check turns its fast paths off for good."""
    from patching.loading import load_model

    def load(arch: str = "qwen2"):
        return load_model(tiny_dirs[arch])

    return load


def _request(model):
    g = torch.Generator().manual_seed(3)
    prompts = [torch.randint(10, 400, (n,), generator=g) for n in (14, 11)]
    source = torch.randn(14, model.d_head, generator=g)
    rows = [[Interchange(layer, 1, [-2, -1], source=source)] for layer in range(model.n_layers)]
    rows.append([Scale(1, 0, [-1], alpha=0.5)])
    return prompts, rows


def _break_prefix(monkeypatch) -> None:
    reset = compat.reset_cache

    def zeroed(cache, prefix, rows, first_layer=0):
        reset(cache, [(k * 0, v * 0) for k, v in prefix], rows, first_layer)

    monkeypatch.setattr(compat, "reset_cache", zeroed)


def test_a_crashing_fast_path_is_a_failed_check(fresh, monkeypatch) -> None:
    model = fresh("gpt2")
    prompts, rows = _request(model)
    monkeypatch.setattr(compat, "reset_cache", lambda cache, prefix, rows, first_layer=0: None)
    with pytest.warns(EngineMismatchWarning, match="raised RuntimeError"):
        _, patched = _patched(model, prompts, rows, start=[9, 6], quiet=False)
    assert model.engine_check is not None and not model.engine_check.fast_paths
    for fast, plain in zip(patched, _plain(model, prompts, rows), strict=True):
        torch.testing.assert_close(fast, plain, atol=1e-5, rtol=1e-5)


def _patched(model, prompts, rows, start, quiet=True):
    with warnings.catch_warnings():
        if quiet:
            warnings.simplefilter("ignore", EngineMismatchWarning)
        runs, logits = clean_runs(model, prompts, start=start, readout=[-2, -1])
    return logits, [run_rows(model, run, rows) for run in runs]


def _plain(model, prompts, rows):
    return [run_rows_full(model, p, rows, readout=[-2, -1]) for p in prompts]


@pytest.mark.parametrize("arch", ["qwen2", "llama", "gpt2", "gemma2"])
def test_self_check_passes_and_is_recorded(fresh, arch) -> None:
    model = fresh(arch)
    assert model.engine_check is None
    prompts, rows = _request(model)
    _, patched = _patched(model, prompts, rows, start=[9, 6])
    check = model.engine_check
    assert check is not None and check.passed and check.fast_paths
    assert (
        check.max_error <= check.tolerance and check.variants == 10
    )  # 2 rows x 4 runs, 2 knockouts
    assert check.versions["transformers"] == compat.versions()["transformers"]
    for fast, plain in zip(patched, _plain(model, prompts, rows), strict=True):
        torch.testing.assert_close(fast, plain, atol=1e-5, rtol=1e-5)


def test_broken_cache_reset_is_caught_and_results_equal_the_plain_path(fresh, monkeypatch) -> None:
    model = fresh("qwen2")
    prompts, rows = _request(model)
    # Silently wrong, as transformers 5.24 made the engine before the adapter: patched
    # runs attend to a prefix that is not the clean one.
    _break_prefix(monkeypatch)
    with pytest.warns(EngineMismatchWarning, match="transformers"):
        runs, logits = clean_runs(model, prompts, start=[9, 6], readout=[-2, -1])
    check = model.engine_check
    assert check is not None and not check.passed and not check.fast_paths
    assert check.max_error > 100 * check.tolerance
    assert all(run.start == 0 and run.prefix is None for run in runs)  # plain from here on
    # The clean logits of this very call, and every later patched run, are the plain path's.
    for r, (prompt, run) in enumerate(zip(prompts, runs, strict=True)):
        plain = run_rows_full(model, prompt, [[], *rows], readout=[-2, -1])
        torch.testing.assert_close(logits[r], plain[0], atol=1e-5, rtol=1e-5)
        torch.testing.assert_close(run_rows(model, run, rows), plain[1:], atol=1e-5, rtol=1e-5)


def test_the_guard_is_needed_the_broken_path_is_wrong(fresh, monkeypatch) -> None:
    """Without the self-check the same break gives wrong logits: the test above can fail."""
    from patching.self_check import EngineCheck

    model = fresh("qwen2")
    prompts, rows = _request(model)
    _break_prefix(monkeypatch)
    model.engine_check = EngineCheck(True, 0.0, 1.0, 0, 0, True, detail="assumed")
    _, patched = _patched(model, prompts, rows, start=[9, 6])
    plain = _plain(model, prompts, rows)
    assert max(float((f - p).abs().max()) for f, p in zip(patched, plain, strict=True)) > 0.01


def test_missing_internals_turn_the_fast_paths_off(fresh, monkeypatch) -> None:
    model = fresh("llama")
    prompts, rows = _request(model)
    monkeypatch.setattr(compat, "missing_internals", lambda bridge: ["Cache.update"])
    with pytest.warns(EngineMismatchWarning, match="missing Cache.update"):
        _, patched = _patched(model, prompts, rows, start=[9, 6], quiet=False)
    assert model.engine_check is not None and not model.engine_check.fast_paths
    for fast, plain in zip(patched, _plain(model, prompts, rows), strict=True):
        torch.testing.assert_close(fast, plain, atol=1e-5, rtol=1e-5)


def test_unverified_versions_are_named(monkeypatch, tiny_dirs) -> None:
    from patching.loading import load_model

    have = {**compat.versions(), "transformers": "5.30.1"}
    assert compat.unverified_versions(have) == [
        f"transformers 5.30.1 (verified {compat.VERIFIED['transformers'][0]} to "
        f"<{compat.VERIFIED['transformers'][1]})"
    ]
    assert compat.unverified_versions({**have, "transformers": "5.24.0"}) == []
    assert compat.unverified_versions({**have, "transformers": "5.9.0rc1"}) == []
    monkeypatch.setattr(compat, "versions", lambda: have)
    with pytest.warns(UserWarning, match=r"transformers 5\.30\.1"):
        load_model(tiny_dirs["gpt2"])


def test_installed_versions_are_verified() -> None:
    """CI installs the lock: it must sit inside the range the adapter was verified on."""
    assert compat.unverified_versions() == []


def test_cache_keyword_follows_the_installed_transformers(fresh) -> None:
    import transformers

    model = fresh("qwen2")
    renamed = compat._release(transformers.__version__) >= (5, 24)
    assert compat.cache_keyword(model.bridge) == ("cache" if renamed else "past_key_values")
    assert getattr(model.bridge, "_rc_cache_routed", False) == renamed


def test_tolerance_scales_with_dtype() -> None:
    assert tolerance(torch.float32, 10.0) == pytest.approx(200 * 2**-23 * 10)
    assert tolerance(torch.float64, 0.5) < 1e-12
    assert tolerance(torch.bfloat16, 1.0) > tolerance(torch.float16, 1.0) > 1e-3


def test_check_model_measures_both_identities(fresh) -> None:
    model = fresh("gemma2")
    result = check_model(model, builtin_pairs(2))
    assert result.passed and result.n_prompts == 4
    assert result.dla_identity_error <= result.dla_tolerance
    record = result.to_dict()
    assert record["passed"] and record["engine"]["passed"]
    assert "engine parity: pass" in result.lines()[1]


def test_check_command_on_the_organism(capsys) -> None:
    assert main(["check", "--n", "1"]) == 0
    out = capsys.readouterr().out
    assert "DLA identity: pass" in out and "engine parity: pass" in out
    assert "transformers" in out.splitlines()[0] and out.rstrip().endswith("check: passed")


def test_check_command_fails_on_a_broken_engine(capsys, monkeypatch) -> None:
    _break_prefix(monkeypatch)
    assert main(["check", "--n", "1"]) == 1
    captured = capsys.readouterr()
    assert "engine parity: FAIL" in captured.out and "check: FAILED" in captured.out
    # The command line shows the library's warning as one line naming the versions.
    (line,) = [w for w in captured.err.splitlines() if "fast paths failed" in w]
    assert line.startswith("refusal-circuits: warning: ") and "transformers" in line


def test_the_check_covers_paths_the_first_call_does_not_use(fresh, monkeypatch) -> None:
    """A first call with no cached prefix and no padding still checks both."""
    model = fresh("llama")
    prompts, rows = _request(model)
    _break_prefix(monkeypatch)
    with pytest.warns(EngineMismatchWarning, match="mismatch"):
        clean_runs(model, prompts[:1], start=0)
    assert model.engine_check is not None and not model.engine_check.fast_paths
    _, patched = _patched(model, prompts, rows, start=[9, 6])
    for fast, plain in zip(patched, _plain(model, prompts, rows), strict=True):
        torch.testing.assert_close(fast, plain, atol=1e-5, rtol=1e-5)


def test_a_wrong_knockout_prefix_is_caught(fresh, monkeypatch) -> None:
    """The knockouts' own path: a prefix attending to every position (a mask layout the
    adapter misreads) must fail the check, not change the numbers."""
    model = fresh("qwen2")
    prompts, rows = _request(model)
    cut = compat.prefix_call

    def unmasked(call, row, prefix, cache):
        args, kwargs = cut(call, row, prefix, cache)
        wide = {
            k: torch.zeros_like(v) if isinstance(v, torch.Tensor) and v.ndim == 4 else v
            for k, v in kwargs.items()
        }
        return args, wide

    monkeypatch.setattr(compat, "prefix_call", unmasked)
    with pytest.warns(EngineMismatchWarning, match="mismatch"):
        _patched(model, prompts, rows, start=[9, 6], quiet=False)
    assert model.engine_check is not None and not model.engine_check.fast_paths
