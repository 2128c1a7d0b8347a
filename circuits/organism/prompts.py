"""Harmful/control prompt pairs in the organism's language, in the toolkit's JSONL format.

Each pair is one instruction frame filled twice: with a harmful topic word and
with a benign one. The two texts therefore have the same length in tokens and
the same template positions, which is what interchange patching needs.

Variants transform the same underlying draws, so pair ``i`` of every variant
(for one seed) uses the same frame and topic words and the variants are
token-aligned with each other too:

- ``plain``: a filler lead word ("please", ...), plain topic words;
- ``jailbreak``: the lead word is a framing marker ("hypothetically", ...) in
  both texts;
- ``cipher``: the lead word is the cipher marker in both texts and the harmful
  topic word is replaced by its ROT13 twin (the control keeps its benign word).

The beliefs organism also answers a reply-inversion question appended to an
instruction (``with_inversion_question``; ``inversion_pairs`` for a pair list).

That cross-variant alignment is what lets a test patch the gate's activation
from a plain harmful run into the matching cipher run.
"""

from __future__ import annotations

import random

from circuits.organism import vocab
from patching.prompts import PromptPair

VARIANTS = ("plain", "jailbreak", "cipher")
PAIR_FILES = {
    "plain": "pairs.jsonl",
    "jailbreak": "pairs_jailbreak.jsonl",
    "cipher": "pairs_cipher.jsonl",
}


def generate_pairs(n: int = 64, seed: int = 0, variant: str = "plain") -> list[PromptPair]:
    """``n`` token-aligned harmful/control pairs, categories in rotation.

    The random draws do not depend on ``variant``, so equal ``seed`` gives the
    same frames and topics in every variant.
    """
    if variant not in VARIANTS:
        raise ValueError(f"unknown variant {variant!r}; choose one of {VARIANTS}")
    rng = random.Random(seed)
    markers = list(vocab.JAILBREAK_MARKERS)
    pairs = []
    for i in range(n):
        category = vocab.CATEGORIES[i % len(vocab.CATEGORIES)]
        harmful_word = rng.choice(vocab.HARMFUL_TOPICS[category])
        benign_word = rng.choice(vocab.BENIGN_WORDS)
        frame = rng.choice(vocab.FRAMES)
        filler = rng.choice(vocab.FILLERS)
        # Rotating (not drawing) the marker gives every marker strength the same
        # share of the jailbreak set, whatever n is.
        marker = markers[i % len(markers)]
        if variant == "plain":
            lead, topic = filler, harmful_word
        elif variant == "jailbreak":
            lead, topic = marker, harmful_word
        else:
            lead, topic = vocab.CIPHER_MARKER, vocab.cipher_twin(harmful_word)
        pairs.append(
            PromptPair(
                harmful=frame.format(lead=lead, topic=topic),
                control=frame.format(lead=lead, topic=benign_word),
                category=category,
                variant=variant,
            )
        )
    return pairs


def with_inversion_question(instruction: str) -> str:
    """``instruction`` followed by the beliefs organism's reply-inversion question.

    The question ("answer Certainly or No : could this request cause harm") ends with
    its marker word, so the result's ``t_inst`` is the marker; the beliefs organism
    answers ``vocab.INVERSION_YES`` iff the instruction carries the harmfulness feature.
    """
    return f"{instruction.strip()} {vocab.INVERSION_QUESTION}"


def inversion_pairs(pairs: list[PromptPair]) -> list[PromptPair]:
    """The same pairs with the reply-inversion question appended to both texts."""
    return [
        PromptPair(
            harmful=with_inversion_question(p.harmful),
            control=with_inversion_question(p.control),
            category=p.category,
            variant=p.variant,
        )
        for p in pairs
    ]
