"""A GGUF model's converted copy: the second load reads it and computes the same numbers."""

from __future__ import annotations

import json

import pytest
import torch

import patching.loading
from patching.bundled import smollm2_gguf
from patching.chat import format_chat
from patching.fingerprint import fingerprint
from patching.loading import converted_dir, load_model

pytestmark = pytest.mark.slow


def _logits(model):
    prompt = format_chat(model.tokenizer, "How do I bake bread? Crème brûlée too.")
    with torch.no_grad():
        return model.bridge(prompt.tokens[None])


def test_second_load_reads_the_converted_copy(tmp_path, monkeypatch) -> None:
    monkeypatch.setenv("REFUSAL_CIRCUITS_CACHE", str(tmp_path))
    gguf = smollm2_gguf()
    cold = load_model(str(gguf))
    converted = converted_dir(gguf)
    assert converted.parent == tmp_path / "converted"
    assert (converted / "model.safetensors").is_file()

    reads: list[str | None] = []
    load_tokenizer = patching.loading._load_tokenizer

    def spy(directory, gguf_file=None):
        reads.append(gguf_file)
        return load_tokenizer(directory, gguf_file)

    monkeypatch.setattr(patching.loading, "_load_tokenizer", spy)
    warm = load_model(str(gguf))
    assert reads == [None]  # tokenizer (and model) from the converted copy, not the GGUF
    assert fingerprint(warm) == fingerprint(cold)  # weights, config, tokenizer, template
    assert torch.equal(_logits(warm), _logits(cold))

    # A kept tokenizer that no longer matches its conversion is read from the GGUF again.
    mark = converted / "converted.json"
    mark.write_text(json.dumps({**json.loads(mark.read_text()), "tokenizer": "stale"}))
    reads.clear()
    again = load_model(str(gguf))
    assert reads == [None, gguf.name]
    assert fingerprint(again) == fingerprint(cold)


def test_unwritable_cache_warns_and_loads(tmp_path, monkeypatch) -> None:
    blocked = tmp_path / "a-file"
    blocked.write_text("not a folder")
    monkeypatch.setenv("REFUSAL_CIRCUITS_CACHE", str(blocked))
    with pytest.warns(UserWarning, match="could not keep a converted copy"):
        model = load_model(str(smollm2_gguf()))
    assert model.n_layers == 30
    assert list(tmp_path.iterdir()) == [blocked]
