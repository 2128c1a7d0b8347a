"""Reasoning traces: read from JSONL, generated with the model's thinking template (or asked
to reason between the markers), and tokenized segment by segment (docs/science.md#refusal-cliff).
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from jaxtyping import Int
from torch import Tensor

from attribution.result import Result
from patching.chat import ChatPrompt, format_chat, render
from patching.decoding import greedy_decode
from patching.errors import PromptFileError
from patching.executor import DEFAULT_BATCH_SIZE
from patching.interventions import Intervention
from patching.model import HookedModel

THINK_OPEN, THINK_CLOSE = "<think>", "</think>"
# Asked of a model whose template has no thinking mode, after the instruction.
REASON_SUFFIX = (
    f"First reason step by step between {THINK_OPEN} and {THINK_CLOSE}, then give your answer."
)
DEFAULT_ANSWER_TOKENS = 8


@dataclass(frozen=True)
class Trace(Result):
    """One reasoning trace: the user prompt, the thinking text, the answer."""

    prompt: str
    thinking: str
    response: str


def has_thinking_template(tokenizer: Any) -> bool:
    """Whether the chat template has a thinking segment (it names the open marker)."""
    return THINK_OPEN in str(getattr(tokenizer, "chat_template", None) or "")


def read_traces(path: str | Path) -> list[Trace]:
    """Traces from a JSONL file, one ``{"prompt", "thinking", "response"}`` object a line.

    Raises:
        PromptFileError: unreadable file, a line that is not such an object, or no traces.
    """
    p = Path(path).expanduser()
    try:
        lines = p.read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError) as exc:
        raise PromptFileError(f"{p}: cannot be read ({exc}); pass a UTF-8 JSONL file") from None
    traces = []
    for i, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
            traces.append(Trace(str(row["prompt"]), str(row["thinking"]), str(row["response"])))
        except (json.JSONDecodeError, KeyError, TypeError):
            raise PromptFileError(
                f"{p} line {i}: not a trace; write one JSON object a line with the keys "
                f'"prompt", "thinking" and "response"'
            ) from None
    if not traces:
        raise PromptFileError(f"{p} has no traces; write one JSON object a line")
    return traces


def generation_prompt(model: HookedModel, instruction: str) -> ChatPrompt:
    """The prompt a trace is generated from: the thinking template's own, else the
    instruction asked to reason between the markers first (:data:`REASON_SUFFIX`)."""
    if has_thinking_template(model.tokenizer):
        return format_chat(model.tokenizer, instruction)
    return format_chat(model.tokenizer, f"{instruction} {REASON_SUFFIX}")


def _split(text: str) -> tuple[str, str] | None:
    if THINK_CLOSE not in text:
        return None
    thinking, response = text.split(THINK_CLOSE, 1)
    return thinking.replace(THINK_OPEN, "").strip(), response.strip()


def generate_traces(
    model: HookedModel,
    instructions: Sequence[str],
    n_tokens: int,
    rows: Sequence[Sequence[Intervention]] | None = None,
    *,
    batch_size: int = DEFAULT_BATCH_SIZE,
) -> list[Trace | None]:
    """Greedy traces of the instructions (``None`` where no end-of-thinking marker came
    within ``n_tokens``), ``rows[i]`` applied at every step."""
    prompts = [generation_prompt(model, s) for s in instructions]
    ids = greedy_decode(
        model, prompts, n_tokens, [list(r) for r in rows] if rows else None, batch_size=batch_size
    )
    tok = model.tokenizer
    out: list[Trace | None] = []
    for prompt, row in zip(prompts, ids, strict=True):
        parts = _split(str(tok.decode(row, skip_special_tokens=True)))
        out.append(None if parts is None else Trace(prompt.instruction, *parts))
    return out


@dataclass(frozen=True)
class TraceTokens:
    """A trace's tokens and segments: prompt ``[0, think)``, thinking ``[think, close)``
    (the open marker and the reasoning), the close marker ``[close, answer)`` and the
    answer opening ``[answer, len)``. ``answer - 1`` is the last position before the
    answer (the close marker's last token): the cliff is measured there."""

    tokens: Int[Tensor, " pos"]
    think: int
    close: int
    answer: int

    @property
    def last_before_answer(self) -> int:
        return self.answer - 1


def tokenize_trace(
    tokenizer: Any, trace: Trace, *, answer_tokens: int = DEFAULT_ANSWER_TOKENS
) -> TraceTokens:
    """The trace as the model reads it: chat template (with thinking), open marker,
    thinking, close marker, the first ``answer_tokens`` answer tokens. Segments are
    tokenized apart so that their bounds are exact."""
    head = render(tokenizer, trace.prompt)
    if head.rstrip().endswith(THINK_OPEN):
        head = head.rstrip()[: -len(THINK_OPEN)]

    def ids(text: str) -> list[int]:
        return list(tokenizer(text, add_special_tokens=False)["input_ids"])

    pieces = [ids(head), ids(THINK_OPEN), ids(trace.thinking), ids(THINK_CLOSE)]
    answer = ids(trace.response)[:answer_tokens]
    think = len(pieces[0])
    close = think + len(pieces[1]) + len(pieces[2])
    start = close + len(pieces[3])
    tokens = torch.tensor([t for p in pieces for t in p] + answer, dtype=torch.long)
    return TraceTokens(tokens=tokens, think=think, close=close, answer=start)
