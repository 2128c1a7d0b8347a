"""Chat formatting through the model's own template, with labelled positions.

Refusal is decided at two places in a chat prompt (``docs/science.md#positions``):

- ``t_inst``: the last token of the user's instruction, where the *harmfulness*
  of the request is read;
- ``t_post_inst``: the last prompt token (end of the template, just before the
  response), where the *refusal* decision is written and the first response
  token is predicted.

:func:`format_chat` renders the instruction with the tokenizer's chat template,
tokenizes the rendered text *without* adding special tokens (a template that
emits BOS would otherwise get a second one from the tokenizer), and locates
``t_inst`` from character offsets. The result carries its token ids and both
positions, so patching can address positions by label.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

import torch
from jaxtyping import Int
from torch import Tensor

from patching.errors import ChatTemplateError

PositionLabel = Literal["t_inst", "t_post_inst", "last"]
POSITION_LABELS: tuple[str, ...] = ("t_inst", "t_post_inst", "last")


@dataclass(frozen=True)
class ChatPrompt:
    """One instruction rendered through a chat template, with labelled positions."""

    instruction: str
    text: str
    tokens: Int[Tensor, " pos"]
    t_inst: int
    t_post_inst: int

    def __len__(self) -> int:
        return int(self.tokens.shape[0])

    def position(self, label: str | int) -> int:
        """The index of a labelled position (``t_inst``, ``t_post_inst``, ``last``) or an int."""
        if isinstance(label, int):
            if not -len(self) <= label < len(self):
                raise IndexError(f"position {label} is outside a prompt of {len(self)} tokens")
            return label % len(self)
        if label == "t_inst":
            return self.t_inst
        if label in ("t_post_inst", "last"):
            return self.t_post_inst
        raise ValueError(f"unknown position label {label!r}; use one of {POSITION_LABELS}")


def has_chat_template(tokenizer: Any) -> bool:
    return bool(getattr(tokenizer, "chat_template", None))


def render(
    tokenizer: Any,
    instruction: str,
    *,
    system: str | None = None,
    template_kwargs: dict[str, Any] | None = None,
) -> str:
    """The chat-template text of a one-turn user message, ending at the response.

    ``template_kwargs`` are passed to the template (``{"enable_thinking": False}`` turns
    a thinking template's reasoning segment off; templates ignore variables they lack).
    """
    if not has_chat_template(tokenizer):
        name = getattr(tokenizer, "name_or_path", "") or type(tokenizer).__name__
        raise ChatTemplateError(
            f"the tokenizer of {name!r} has no chat template, so prompts cannot be formatted "
            f"as the model sees them in chat. Use an instruct/chat model, or give its tokenizer "
            f"a template: save a Jinja template as chat_template.jinja in the model directory "
            f"(or set tokenizer.chat_template and pass tokenizer= to load_model)."
        )
    messages = [{"role": "user", "content": instruction}]
    if system is not None:
        messages.insert(0, {"role": "system", "content": system})
    text = tokenizer.apply_chat_template(
        messages, add_generation_prompt=True, tokenize=False, **(template_kwargs or {})
    )
    return str(text)


def _last_token_covering(offsets: list[tuple[int, int]], char: int) -> int:
    """Index of the last token whose span starts at or before ``char``."""
    index = -1
    for i, (start, end) in enumerate(offsets):
        if end > start and start <= char:
            index = i
    return index


def format_chat(
    tokenizer: Any,
    instruction: str,
    *,
    system: str | None = None,
    template_kwargs: dict[str, Any] | None = None,
) -> ChatPrompt:
    """Render ``instruction`` through the chat template and label its positions.

    Raises:
        ChatTemplateError: no template, or the template does not contain the
            instruction verbatim (then ``t_inst`` cannot be located).
    """
    instruction = instruction.strip()
    if not instruction:
        raise ChatTemplateError("an instruction is empty; every prompt needs text")
    text = render(tokenizer, instruction, system=system, template_kwargs=template_kwargs)
    start = text.rfind(instruction)
    if start < 0:
        raise ChatTemplateError(
            "the chat template rewrote the instruction, so its last token cannot be found; "
            "use a template that inserts the message content verbatim"
        )
    end_char = start + len(instruction) - 1
    encoded = tokenizer(text, add_special_tokens=False, return_offsets_mapping=True)
    ids: list[int] = list(encoded["input_ids"])
    t_inst = _last_token_covering(list(encoded["offset_mapping"]), end_char)
    if t_inst < 0:
        raise ChatTemplateError("the instruction produced no tokens in the rendered template")
    bos = getattr(tokenizer, "bos_token_id", None)
    if bos is not None and len(ids) > 1 and ids[0] == ids[1] == bos:
        # Never two BOS: a template that emits BOS plus a text that starts with it.
        raise ChatTemplateError(
            "the rendered prompt starts with two BOS tokens; remove the BOS from the "
            "instruction text or from the template"
        )
    return ChatPrompt(
        instruction=instruction,
        text=text,
        tokens=torch.tensor(ids, dtype=torch.long),
        t_inst=t_inst,
        t_post_inst=len(ids) - 1,
    )
