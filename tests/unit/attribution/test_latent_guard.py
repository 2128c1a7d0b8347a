"""Latent Guard: score against plain loops, centring's identity, thresholds, files, models."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from attribution.classification import best_threshold
from attribution.latent_guard import (
    LatentGuard,
    check_layers,
    default_layers,
    guard_scores,
    held_out,
)
from patching.errors import ModelMismatchError, OptionError, ResultFileError, TooFewPairsError


def naive_score(h: np.ndarray, a: np.ndarray, b: np.ndarray, m: np.ndarray | None) -> float:
    """The definition, one layer at a time in plain numpy."""
    out = []
    for layer in range(h.shape[0]):
        x, ca, cb = h[layer], a[layer], b[layer]
        if m is not None:
            x, ca, cb = x - m[layer], ca - m[layer], cb - m[layer]
        cos_a = x @ ca / (np.linalg.norm(x) * np.linalg.norm(ca))
        cos_b = x @ cb / (np.linalg.norm(x) * np.linalg.norm(cb))
        out.append(cos_a - cos_b)
    return float(np.mean(out))


def synthetic(n: int = 12, layers: int = 3, d: int = 6, seed: int = 0):
    """Two classes around a shared offset (as residual streams have), apart along one axis."""
    g = torch.Generator().manual_seed(seed)
    base = 5 * torch.randn(layers, d, generator=g)
    axis = torch.randn(layers, d, generator=g)
    harmful = base + axis + 0.5 * torch.randn(n, layers, d, generator=g)
    harmless = base - axis + 0.5 * torch.randn(n, layers, d, generator=g)
    return harmful, harmless


@pytest.mark.parametrize("center", [False, True])
def test_score_is_the_definition(center: bool) -> None:
    harmful, harmless = synthetic()
    guard = LatentGuard.from_activations(harmful, harmless, layers=[1, 2, 3], center=center)
    a = harmful.double().mean(0).numpy()
    b = harmless.double().mean(0).numpy()
    m = (a + b) / 2 if center else None
    probe = torch.cat([harmful[:3], harmless[:3]])
    expected = [naive_score(x.double().numpy(), a, b, m) for x in probe]
    np.testing.assert_allclose(guard.score_activations(probe), expected, atol=1e-6)


def test_centred_score_is_twice_the_cosine_to_the_mean_difference() -> None:
    harmful, harmless = synthetic(seed=1)
    guard = LatentGuard.from_activations(harmful, harmless, layers=[0, 1, 2], center=True)
    a, b = harmful.double().mean(0), harmless.double().mean(0)
    m, d = (a + b) / 2, a - b
    probe = torch.cat([harmful, harmless]).double() - m
    cos = (probe * d).sum(-1) / (probe.norm(dim=-1) * d.norm(dim=-1))
    np.testing.assert_allclose(guard.score_activations(probe.float() + m.float()), 2 * cos.mean(-1))


def test_centring_separates_where_a_shared_offset_blurs_the_uncentred_score() -> None:
    harmful, harmless = synthetic(seed=2)
    plain = LatentGuard.from_activations(harmful, harmless, layers=[0, 1, 2])
    centred = LatentGuard.from_activations(harmful, harmless, layers=[0, 1, 2], center=True)
    acts = torch.cat([harmful, harmless])
    spread_plain = np.ptp(plain.score_activations(acts))
    spread_centred = np.ptp(centred.score_activations(acts))
    assert spread_centred > 5 * spread_plain  # the large shared component squeezes both cosines


def test_zero_vector_scores_zero_and_dtype_is_float64() -> None:
    acts = torch.zeros(1, 2, 4)
    out = guard_scores(acts, torch.ones(2, 4), -torch.ones(2, 4))
    assert out.dtype == np.float64 and out.tolist() == [0.0]


def test_fitted_threshold_is_the_best_cut_of_the_held_out_prompts() -> None:
    harmful, harmless = synthetic(n=16, seed=3)
    guard = LatentGuard.fit_activations(
        harmful, harmless, layers=[0, 1, 2], threshold="fit", validation=0.25, seed=4
    )
    assert (guard.n_harmful, guard.n_harmless, guard.n_validation) == (12, 12, 8)
    assert guard.threshold_rule == "fit"
    # Rebuild the split independently: the same seeded permutations, held-out first.
    rng = np.random.default_rng(4)
    order_h, order_c = rng.permutation(16), rng.permutation(16)
    torch.testing.assert_close(guard.harmful_centroid, harmful[order_h[4:]].mean(0))
    val = torch.cat([harmful[order_h[:4]], harmless[order_c[:4]]])
    labels = np.r_[np.ones(4, bool), np.zeros(4, bool)]
    assert guard.threshold == best_threshold(guard.score_activations(val), labels)


def test_too_few_prompts_and_bad_options_are_refused() -> None:
    with pytest.raises(TooFewPairsError, match="at least 2 harmful"):
        held_out(1, 5)
    with pytest.raises(TooFewPairsError, match="not held-out"):
        held_out(3, 3, "fit", 0.5)  # 2 held out leaves 1 to fit
    with pytest.raises(OptionError, match="threshold 'best'"):
        held_out(5, 5, "best")
    with pytest.raises(OptionError, match=r"validation 1\.5"):
        held_out(5, 5, "fit", 1.5)
    assert held_out(8, 4, "fit", 0.25) == (2, 1)
    with pytest.raises(OptionError, match=r"outside .* 0..8"):
        check_layers([3, 9], 8)
    with pytest.raises(OptionError, match="repeat"):
        check_layers([3, 3], 8)
    assert default_layers(4) == [1, 2, 3, 4]


def test_save_and_load_round_trip_without_pickle(tmp_path: Path) -> None:
    harmful, harmless = synthetic(seed=5)
    guard = LatentGuard.from_activations(
        harmful, harmless, layers=[2, 4, 6], center=True,
        model={"name": "m", "n_layers": 8, "d_model": 6, "fingerprint": {}},
    )  # fmt: skip
    tensors, meta = guard.save(tmp_path / "g")
    assert (tensors.name, meta.name) == ("g.safetensors", "g.json")
    data = json.loads(meta.read_text())
    assert data["layers"] == [2, 4, 6] and data["center"] is True and data["threshold"] == 0.0
    for name in ("g", "g.json", "g.safetensors"):
        again = LatentGuard.load(tmp_path / name)
        probe = torch.cat([harmful, harmless])
        np.testing.assert_array_equal(
            again.score_activations(probe), guard.score_activations(probe)
        )
        assert again.metadata() == guard.metadata()


def test_damaged_or_missing_files_are_named(tmp_path: Path) -> None:
    harmful, harmless = synthetic(seed=6)
    model = {"name": "m", "n_layers": 8, "d_model": 6, "fingerprint": {}}
    guard = LatentGuard.from_activations(harmful, harmless, layers=[1, 2, 3], model=model)
    _, meta = guard.save(tmp_path / "g")
    with pytest.raises(ResultFileError, match=r"missing\.safetensors is missing"):
        LatentGuard.load(tmp_path / "missing")
    meta.write_text("{not json")
    with pytest.raises(ResultFileError, match="not a readable Latent Guard"):
        LatentGuard.load(tmp_path / "g")
    data = guard.metadata() | {"layers": [1, 2]}
    meta.write_text(json.dumps(data))
    with pytest.raises(ResultFileError, match="do not match 2 layers"):
        LatentGuard.load(tmp_path / "g")


# --------------------------------------------------------------------------- on a model


@pytest.fixture(scope="module")
def organism():
    from circuits.organism import organism_dir
    from patching.loading import load_model

    return load_model(organism_dir())


@pytest.fixture(scope="module")
def pairs():
    from circuits.organism import organism_dir
    from patching.prompts import read_pairs

    return read_pairs(organism_dir() / "pairs.jsonl", n=8)


def lone_residuals(model, text: str, position: str, layers: list[int]) -> torch.Tensor:
    """One unbatched ``run_with_cache`` of the prompt alone (not the executor)."""
    from patching.chat import format_chat

    prompt = format_chat(model.tokenizer, text)
    _, cache = model.bridge.run_with_cache(prompt.tokens[None])
    at = prompt.position(position)
    n = model.n_layers
    rows = [
        cache[f"blocks.{layer}.hook_resid_pre" if layer < n else f"blocks.{n - 1}.hook_resid_post"][
            0, at
        ]
        for layer in layers
    ]
    return torch.stack(rows).float()


@pytest.mark.parametrize("position", ["t_inst", "t_post_inst"])
def test_fit_and_score_on_a_model_match_lone_runs(organism, pairs, position: str) -> None:
    layers = [2, 5, organism.n_layers]
    harmful, harmless = [p.harmful for p in pairs], [p.control for p in pairs]
    guard = LatentGuard.fit(organism, harmful, harmless, layers=layers, position=position)
    acts_h = torch.stack([lone_residuals(organism, t, position, layers) for t in harmful])
    acts_c = torch.stack([lone_residuals(organism, t, position, layers) for t in harmless])
    torch.testing.assert_close(guard.harmful_centroid, acts_h.mean(0), atol=1e-4, rtol=1e-4)
    torch.testing.assert_close(guard.harmless_centroid, acts_c.mean(0), atol=1e-4, rtol=1e-4)
    texts = harmful[:2] + harmless[:2]
    expected = [
        naive_score(
            lone_residuals(organism, t, position, layers).double().numpy(),
            acts_h.double().mean(0).numpy(),
            acts_c.double().mean(0).numpy(),
            None,
        )
        for t in texts
    ]
    np.testing.assert_allclose(guard.score(texts), expected, atol=1e-4)
    np.testing.assert_array_equal(guard.predict(texts), guard.score(texts) >= 0)


def test_load_refuses_another_model(organism, pairs, tmp_path: Path, tiny_dirs) -> None:
    from circuits.organism import organism_dir
    from patching.loading import load_model

    harmful, harmless = [p.harmful for p in pairs], [p.control for p in pairs]
    guard = LatentGuard.fit(organism, harmful, harmless)
    guard.save(tmp_path / "g")
    again = LatentGuard.load(tmp_path / "g", organism)  # the same model: accepted
    np.testing.assert_allclose(again.score(harmful[:2]), guard.score(harmful[:2]))

    tiny = load_model(tiny_dirs["qwen2"])
    with pytest.raises(ModelMismatchError, match="layers, d_model"):
        LatentGuard.load(tmp_path / "g", tiny)

    edited = load_model(organism_dir())
    with torch.no_grad():
        next(edited.bridge.parameters()).mul_(1.01)
    with pytest.raises(ModelMismatchError, match="weights differ"):
        LatentGuard.load(tmp_path / "g", edited)
    loose = LatentGuard.load(tmp_path / "g", edited, check_fingerprint=False)
    assert loose.layers == guard.layers
