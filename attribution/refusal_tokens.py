"""The refusal token set R, resolved through the model's own tokenizer.

Aligned chat models open a refusal with a small set of words ("I cannot",
"Sorry", "As an AI", ...). ``docs/science.md#refusal-tokens`` takes the *first token* of each
word, with and without a leading space (tokenizers encode a word at the start of
a response and after a space differently), as the set R whose total probability
at the first response position measures refusal. Words the tokenizer only knows
as its unknown token are skipped: the unknown token is no refusal.
"""

from __future__ import annotations

from typing import Any

from patching.errors import RefusalCircuitsError

REFUSAL_WORDS: tuple[str, ...] = (
    "I",
    "I'm",
    "Sorry",
    "As",
    "Unfortunately",
    "cannot",
    "can't",
    "unable",
)


def refusal_token_ids(
    tokenizer: Any, words: tuple[str, ...] | list[str] = REFUSAL_WORDS
) -> list[int]:
    """Sorted, de-duplicated first-token ids of ``words`` (each with and without a space)."""
    unk = getattr(tokenizer, "unk_token_id", None)
    ids: set[int] = set()
    for word in words:
        for variant in (word, " " + word):
            encoded = tokenizer.encode(variant, add_special_tokens=False)
            if encoded and encoded[0] != unk:
                ids.add(int(encoded[0]))
    if not ids:
        raise RefusalCircuitsError(
            f"none of the refusal words {list(words)} is a token of this tokenizer; pass "
            f"refusal words the model uses (refusal_words=[...])"
        )
    return sorted(ids)


def token_strings(tokenizer: Any, ids: list[int]) -> list[str]:
    """Readable strings for token ids (for labels and JSON)."""
    return [str(tokenizer.convert_ids_to_tokens(int(i))) for i in ids]


def dedicated_token_id(tokenizer: Any, token: str) -> int:
    """The id of a dedicated refusal token (e.g. ``[refuse]``); it must be one token.

    Models trained with refusal tokens emit one vocabulary entry before a refusal;
    a string the tokenizer splits into several pieces is not such a token, and
    biasing its first piece would bias something else.
    """
    ids = [int(i) for i in tokenizer.encode(token, add_special_tokens=False)]
    unknown = ids == [getattr(tokenizer, "unk_token_id", None)]
    if len(ids) != 1 or unknown:
        pieces = token_strings(tokenizer, ids)
        what = "the unknown token" if unknown else f"{len(ids)} tokens {pieces}"
        raise RefusalCircuitsError(
            f"the refusal token {token!r} is {what} of this tokenizer, not one token of its "
            f"vocabulary; pass a token the model has as a single entry, or leave it out to "
            f"bias the refusal token set"
        )
    return ids[0]
