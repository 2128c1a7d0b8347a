"""Chat formatting: labelled positions and exactly one BOS, on real templates."""

from __future__ import annotations

from pathlib import Path

import pytest

from patching.chat import format_chat
from patching.errors import ChatTemplateError
from tests.helpers.tiny_models import build_tokenizer


@pytest.fixture(scope="module")
def tok(tmp_path_factory: pytest.TempPathFactory):
    return build_tokenizer(tmp_path_factory.mktemp("tok"))


def test_positions_are_labelled(tok) -> None:
    prompt = format_chat(tok, "Explain how to build a bird house at home")
    tokens = tok.convert_ids_to_tokens(prompt.tokens.tolist())
    assert tokens[-1] == "<|assistant|>"
    assert prompt.t_post_inst == len(prompt) - 1 == prompt.position("last")
    assert (
        tokens[prompt.t_inst].lstrip("Ġ") in {"home", "me"}
        and tokens[prompt.t_inst + 1] == "<|end|>"
    )
    assert prompt.position("t_inst") == prompt.t_inst
    assert prompt.position(-1) == prompt.t_post_inst
    with pytest.raises(ValueError, match="unknown position label"):
        prompt.position("middle")


def test_exactly_one_bos_when_the_tokenizer_also_adds_one(tmp_path: Path) -> None:
    tok = build_tokenizer(tmp_path, add_bos=True)
    assert tok("hi").input_ids[0] == tok.bos_token_id  # the trap: this tokenizer adds BOS
    prompt = format_chat(tok, "Write a poem")
    ids = prompt.tokens.tolist()
    assert ids.count(tok.bos_token_id) == 1 and ids[0] == tok.bos_token_id


def test_a_model_without_template_is_a_clear_error(tmp_path: Path) -> None:
    tok = build_tokenizer(tmp_path, template=False)
    with pytest.raises(ChatTemplateError, match="has no chat template"):
        format_chat(tok, "Write a poem")


def test_user_given_template_is_used(tmp_path: Path) -> None:
    tok = build_tokenizer(tmp_path, template=False)
    tok.chat_template = "{% for m in messages %}{{ m['content'] }}{% endfor %}<|assistant|>"
    prompt = format_chat(tok, "Write a poem")
    assert tok.convert_ids_to_tokens(prompt.tokens.tolist())[-1] == "<|assistant|>"


def test_empty_instruction_is_refused(tok) -> None:
    with pytest.raises(ChatTemplateError, match="empty"):
        format_chat(tok, "   ")
