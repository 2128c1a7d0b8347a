"""Checks on prompt pairs that catch input mistakes before any forward pass.

A pair whose harmful and control prompts are the same text, or become the same
token ids (words the tokenizer does not know all map to its unknown token),
carries no contrast: every effect over it is exactly zero and a per-head map
of it ranks L0H0 first for no reason. A prompt longer than the model's context
fails deep inside the position embeddings. Both are found here, each with the
pair's number, so the user can fix the file.

:func:`check_distinct_texts` needs only the pairs (run it before loading the
model); :func:`check_pairs_fit` needs the tokenizer and the context length.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from patching.chat import format_chat
from patching.errors import PairError
from patching.model import HookedModel


def _snippet(text: str, width: int = 60) -> str:
    return repr(text if len(text) <= width else text[: width - 3] + "...")


def _which(index: int, total: int) -> str:
    return f"pair {index + 1} of {total}"


def check_distinct_texts(pairs: Sequence[Any]) -> None:
    """Refuse a pair whose harmful and control prompts are the same text.

    Raises:
        PairError: naming the pair (1-based, in the order used) and its text.
    """
    for i, pair in enumerate(pairs):
        if pair.harmful.strip() == pair.control.strip():
            raise PairError(
                f"{_which(i, len(pairs))} has the same harmful and control prompt "
                f"({_snippet(pair.harmful)}), so it carries no contrast; give each harmful "
                f"request a different, harmless control"
            )


def check_pairs_fit(model: HookedModel, pairs: Sequence[Any], *, extra_tokens: int = 0) -> None:
    """Refuse pairs that tokenize to one sequence or exceed the model's context.

    Args:
        extra_tokens: positions the computation appends after the prompt (generated
            or teacher-forced tokens); they must fit in the context too.

    Raises:
        PairError: naming the pair (1-based, in the order used), what is wrong and the fix.
        ChatTemplateError: the tokenizer has no chat template.
    """
    tok = model.tokenizer
    limit = model.n_ctx
    unk = getattr(tok, "unk_token_id", None)
    for i, pair in enumerate(pairs):
        harmful = format_chat(tok, pair.harmful)
        control = format_chat(tok, pair.control)
        for role, prompt in (("harmful", harmful), ("control", control)):
            if limit is not None and len(prompt) + extra_tokens > limit:
                room = f" plus {extra_tokens} generated" if extra_tokens else ""
                raise PairError(
                    f"{_which(i, len(pairs))}: the {role} prompt is {len(prompt)} tokens"
                    f"{room}, more than {model.name}'s context of {limit} positions; "
                    f"shorten it to at most {limit - extra_tokens} tokens or drop the pair"
                )
        if harmful.tokens.tolist() == control.tokens.tolist():
            why = (
                " (their words are unknown to the tokenizer and all become its unknown token)"
                if unk is not None and unk in control.tokens.tolist()
                else ""
            )
            raise PairError(
                f"{_which(i, len(pairs))}: the harmful and control prompts tokenize to the same "
                f"ids{why}, so the pair carries no contrast; write prompts in words the "
                f"model's tokenizer knows, or drop the pair ({_snippet(pair.harmful)})"
            )
