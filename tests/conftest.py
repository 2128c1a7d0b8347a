"""Shared fixtures: offline, deterministic, tiny local models."""

from __future__ import annotations

import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

from pathlib import Path

import pytest
import torch

torch.set_flush_denormal(True)

from tests.helpers.tiny_models import ARCHITECTURES, build_model  # noqa: E402


@pytest.fixture(scope="session")
def tiny_dirs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """One saved tiny model directory per supported architecture."""
    root = tmp_path_factory.mktemp("tiny")
    return {arch: build_model(arch, root / arch) for arch in ARCHITECTURES}


@pytest.fixture(scope="session", params=ARCHITECTURES)
def tiny_model(request: pytest.FixtureRequest, tiny_dirs: dict[str, Path]):
    from patching.loading import load_model

    return load_model(tiny_dirs[request.param])


@pytest.fixture
def suffix_passes(monkeypatch) -> list[int]:
    """The prefix length of every pass run from a shared prefix (empty: none was)."""
    import patching.executor

    cuts: list[int] = []
    run = patching.executor._suffix_from

    def spy(model, resume, start, prefix, hooks, columns=None):
        cuts.append(prefix[0])
        return run(model, resume, start, prefix, hooks, columns)

    monkeypatch.setattr(patching.executor, "_suffix_from", spy)
    return cuts
