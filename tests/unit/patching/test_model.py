"""Loading hooked models from every source, and every way loading can fail."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from patching.errors import HeadIndexError, ModelLoadError, UnsupportedArchitectureError
from patching.loading import load_model


def test_local_directory_gives_the_hf_models_logits(tiny_dirs) -> None:
    from transformers import AutoModelForCausalLM

    for arch, directory in tiny_dirs.items():
        model = load_model(directory)
        hf = AutoModelForCausalLM.from_pretrained(str(directory)).eval()
        tokens = torch.tensor([[0, 7, 9, 11, 13, 40]])
        with torch.no_grad():
            expected = hf(tokens).logits
        torch.testing.assert_close(model.forward(tokens), expected, atol=1e-5, rtol=1e-5)
        assert model.n_layers == hf.config.num_hidden_layers, arch


def test_in_memory_model_is_copied_not_mutated(tiny_dirs) -> None:
    from transformers import AutoModelForCausalLM, AutoTokenizer

    directory = tiny_dirs["qwen2"]
    hf = AutoModelForCausalLM.from_pretrained(str(directory)).eval()
    tok = AutoTokenizer.from_pretrained(str(directory))
    before = [type(m) for m in hf.modules()]
    model = load_model(hf, tokenizer=tok)
    assert [type(m) for m in hf.modules()] == before
    tokens = torch.tensor([[0, 5, 6, 7]])
    with torch.no_grad():
        torch.testing.assert_close(model.forward(tokens), hf(tokens).logits)
    assert model.n_kv_heads == 2 and model.n_heads == 4


def test_in_memory_model_needs_a_tokenizer(tiny_dirs) -> None:
    from transformers import AutoModelForCausalLM

    hf = AutoModelForCausalLM.from_pretrained(str(tiny_dirs["llama"]))
    with pytest.raises(ModelLoadError, match="needs its tokenizer"):
        load_model(hf)


def test_unknown_hub_name_offline_says_what_to_do() -> None:
    with pytest.raises(ModelLoadError, match="unknown model 'no-such-org/no-such-model'") as info:
        load_model("no-such-org/no-such-model")
    assert "local directory" in str(info.value)


def test_missing_local_path(tmp_path: Path) -> None:
    with pytest.raises(ModelLoadError, match="does not exist"):
        load_model(str(tmp_path / "absent"))


def test_directory_without_config(tmp_path: Path) -> None:
    with pytest.raises(ModelLoadError, match=r"no config\.json"):
        load_model(str(tmp_path))


def test_missing_gguf_file(tmp_path: Path) -> None:
    with pytest.raises(ModelLoadError, match=r"GGUF file .* does not exist"):
        load_model(str(tmp_path / "model.gguf"))


def test_corrupt_gguf_file(tmp_path: Path) -> None:
    bad = tmp_path / "bad.gguf"
    bad.write_bytes(b"not a gguf file at all")
    with pytest.raises(ModelLoadError):
        load_model(str(bad))


def test_unknown_dtype(tiny_dirs) -> None:
    with pytest.raises(ModelLoadError, match="unknown dtype"):
        load_model(tiny_dirs["gpt2"], dtype="float8")


def test_unsupported_architecture_is_refused(tmp_path: Path, tiny_dirs) -> None:
    from transformers import BertConfig, BertForMaskedLM

    from tests.helpers.tiny_models import build_tokenizer

    tok = build_tokenizer(tmp_path)
    BertForMaskedLM(
        BertConfig(
            vocab_size=len(tok),
            hidden_size=32,
            num_hidden_layers=1,
            num_attention_heads=2,
            intermediate_size=64,
        )
    ).save_pretrained(str(tmp_path))
    with pytest.raises(UnsupportedArchitectureError, match="BertForMaskedLM"):
        load_model(str(tmp_path))


def test_tokenizer_that_does_not_fit_the_vocabulary_is_refused(tmp_path: Path) -> None:
    from transformers import Qwen2Config, Qwen2ForCausalLM

    from tests.helpers.tiny_models import build_tokenizer

    build_tokenizer(tmp_path)
    Qwen2ForCausalLM(
        Qwen2Config(
            vocab_size=50,
            hidden_size=32,
            intermediate_size=64,
            num_hidden_layers=1,
            num_attention_heads=2,
            num_key_value_heads=1,
        )
    ).save_pretrained(str(tmp_path))
    model = load_model(str(tmp_path))
    with pytest.raises(ModelLoadError, match="does not belong to this model"):
        model.forward(torch.tensor([[0, 300]]))


def test_head_index_out_of_range(tiny_model) -> None:
    tiny_model.check_head(tiny_model.n_layers - 1, tiny_model.n_heads - 1)
    with pytest.raises(HeadIndexError, match="layer 99 is out of range"):
        tiny_model.check_head(99, 0)
    with pytest.raises(HeadIndexError, match="head 4 is out of range"):
        tiny_model.check_head(0, 4)
    with pytest.raises(IndexError):
        tiny_model.check_head(-1, 0)


def test_local_tokenizer_round_trips_through_autotokenizer(tiny_dirs) -> None:
    """transformers may reload a saved tokenizer as another class: ids must not change."""
    from transformers import AutoTokenizer, PreTrainedTokenizerFast

    texts = ["Explain how to build a bird house at home", "Sorry, I cannot help <|end|>"]
    for directory in tiny_dirs.values():
        saved = PreTrainedTokenizerFast.from_pretrained(str(directory))
        loaded = AutoTokenizer.from_pretrained(str(directory))
        for text in texts:
            assert loaded(text).input_ids == saved(text).input_ids
