"""Difference-of-means directions equal the means of each prompt's lone run; the arithmetic."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from attribution.directions import (
    Directions,
    check_groups,
    cluster_sizes,
    cosine_per_layer,
    directions_from_streams,
    extract_directions,
    mean_difference,
    project,
)
from patching.chat import format_chat
from patching.errors import TooFewPairsError
from patching.prompts import builtin_pairs


@pytest.fixture(scope="module")
def model(tiny_dirs):
    from patching.loading import load_model

    return load_model(tiny_dirs["qwen2"])


def _lone(model, prompt, label: str) -> torch.Tensor:
    """[layer + 1, d] from one unpadded run_with_cache of the prompt alone."""
    _, cache = model.bridge.run_with_cache(prompt.tokens[None].to(model.device))
    at = prompt.position(label)
    rows = [cache[f"blocks.{x}.hook_resid_pre"][0, at] for x in range(model.n_layers)]
    rows.append(cache[f"blocks.{model.n_layers - 1}.hook_resid_post"][0, at])
    return torch.stack(rows).double().cpu()


def test_extract_directions_equals_means_of_lone_runs(model) -> None:
    pairs = builtin_pairs(5)
    harmful = [format_chat(model.tokenizer, p.harmful) for p in pairs]
    harmless = [format_chat(model.tokenizer, p.control) for p in pairs[:4]]
    got = extract_directions(model, harmful, harmless, min_per_cluster=2, batch_size=3)
    for label, vectors in (("t_inst", got.harmfulness), ("t_post_inst", got.refusal)):
        h = torch.stack([_lone(model, p, label) for p in harmful]).mean(0)
        c = torch.stack([_lone(model, p, label) for p in harmless]).mean(0)
        torch.testing.assert_close(vectors, h - c, atol=1e-5, rtol=1e-5)
    assert got.layers == [*range(model.n_layers), model.n_layers]
    assert got.labels[-1] == "final" and got.cluster_sizes == {"harmful": 5, "harmless": 4}
    norm_ref = torch.stack([_lone(model, p, "t_inst") for p in [*harmful, *harmless]])
    np.testing.assert_allclose(got.resid_norm_t_inst, norm_ref.norm(dim=-1).mean(0), rtol=1e-5)
    some = extract_directions(model, harmful, harmless, layers=[1], min_per_cluster=2)
    assert some.layers == [1, model.n_layers]
    torch.testing.assert_close(some.harmfulness[0], got.harmfulness[1], atol=1e-6, rtol=1e-6)
    with pytest.raises(TooFewPairsError, match="at least 5 harmless prompts, got 4"):
        extract_directions(model, harmful, harmless, min_per_cluster=5)


def test_cosine_norm_projection_and_top() -> None:
    g = torch.Generator().manual_seed(0)
    a, b = torch.randn(4, 7, generator=g), torch.randn(4, 7, generator=g)
    b[2] = -3 * a[2]  # one layer exactly anti-parallel
    cos = cosine_per_layer(a, b)
    ref = torch.nn.functional.cosine_similarity(a.double(), b.double(), dim=-1).numpy()
    np.testing.assert_allclose(cos, ref, rtol=1e-12)
    assert cos[2] == pytest.approx(-1.0)
    assert np.isnan(cosine_per_layer(a, torch.zeros(4, 7))).all()
    streams = torch.randn(3, 4, 7, generator=g)
    proj = project(streams, a)
    for n in range(3):
        for layer in range(4):
            unit = a[layer].double() / a[layer].double().norm()
            assert proj[n, layer] == pytest.approx(float(streams[n, layer].double() @ unit))
    d = Directions(
        model="m",
        n_layers=3,
        layers=[0, 1, 2, 3],
        harmfulness=a.double(),
        refusal=b.double(),
        resid_norm_t_inst=np.ones(4),
        resid_norm_t_post_inst=np.array([1.0, 2.0, 4.0, 8.0]),
    )
    rel = [float(b[i].norm()) / s for i, s in enumerate([1.0, 2.0, 4.0, 8.0])]
    expected = sorted(range(4), key=lambda i: -rel[i])[:2]
    assert [s.layer for s in d.top(2)] == expected
    assert d.top(1)[0].value == pytest.approx(max(rel))
    assert d.top(1, "harmfulness")[0].harmfulness_norm == pytest.approx(float(a.norm(dim=1).max()))
    again = Directions.from_dict(d.to_dict())
    assert again.to_dict() == d.to_dict()
    torch.testing.assert_close(again.refusal, d.refusal)
    with pytest.raises(ValueError, match="layer 5 has no direction"):
        d.at("refusal", 5)


def test_four_cluster_form_pools_over_the_other_label() -> None:
    g = torch.Generator().manual_seed(1)
    streams = torch.randn(10, 2, 3, 5, generator=g)
    harmful = np.array([1, 1, 1, 1, 1, 0, 0, 0, 0, 0], bool)
    refused = np.array([1, 1, 1, 0, 0, 1, 1, 0, 0, 0], bool)
    got = directions_from_streams(
        streams, harmful, refused=refused, layers=[0, 1], n_layers=2, min_per_cluster=2
    )
    assert got.form == "four_cluster"
    assert got.cluster_sizes == {
        "refused_harmful": 3,
        "complied_harmful": 2,
        "refused_harmless": 2,
        "complied_harmless": 3,
    }
    s = streams.double()
    h_ref = s[:5, 0].mean(0) - s[5:, 0].mean(0)
    r_idx, c_idx = [0, 1, 2, 5, 6], [3, 4, 7, 8, 9]
    r_ref = s[r_idx, 1].mean(0) - s[c_idx, 1].mean(0)
    torch.testing.assert_close(got.harmfulness, h_ref)
    torch.testing.assert_close(got.refusal, r_ref)
    torch.testing.assert_close(
        mean_difference(s[:5, 1], s[5:, 1]), s[:5, 1].mean(0) - s[5:, 1].mean(0)
    )
    two = directions_from_streams(streams, harmful, layers=[0, 1], n_layers=2, min_per_cluster=2)
    torch.testing.assert_close(two.refusal, s[:5, 1].mean(0) - s[5:, 1].mean(0))


def test_too_few_per_cluster_is_one_clear_line() -> None:
    harmful = np.array([1, 1, 1, 1, 0, 0, 0, 0], bool)
    refused = np.array([1, 1, 1, 1, 0, 0, 0, 1], bool)
    assert cluster_sizes(harmful, refused)["refused_harmless"] == 1
    with pytest.raises(TooFewPairsError) as err:
        check_groups(harmful, refused, 4)
    message = str(err.value)
    assert "\n" not in message
    assert "refusal direction needs at least 4 complied prompts, got 3" in message
    assert "refused_harmless 1" in message and "lower min_per_cluster" in message
    assert check_groups(harmful, refused, 3)["complied_harmless"] == 3


def test_project_onto_a_zero_direction_names_the_layer() -> None:
    streams = torch.ones(2, 3, 4)
    directions = torch.ones(3, 4)
    directions[1] = 0.0
    with pytest.raises(ValueError, match="direction at layer 1 is zero"):
        project(streams, directions)
    with pytest.raises(ValueError, match="direction at layer 7 is zero"):
        project(streams, directions, [2, 7, 9])
