"""The thinking organism: a reasoning trace, and a planted refusal cliff at its end.

The ground truth of "Refusal Falls off a Cliff" (docs/science.md#refusal-cliff). The
exact organism's circuit (gate L3H2, amplifiers, negative head, distractors) with a
thinking segment in its chat template:

- **Template.** With ``add_generation_prompt`` the prompt ends ``<assistant> <think>``
  (``enable_thinking=False`` drops the ``<think>``, and the model answers at
  ``<assistant>`` exactly as the exact organism does). After ``<think>`` the model
  writes a fixed reasoning trace (``THINKING_WORDS``, a bigram chain in the
  unembedding), then ``</think>``, then its answer: the answer's first token is
  predicted at ``</think>``, the last position before the answer.
- **Refusal intention through the trace.** ``<think>``, every reasoning word and
  ``</think>`` carry the ``<assistant>`` flag, so the gate and the amplifiers read and
  write at each of them: a plain harmful prompt has READOUT ~1 (refusal) at
  ``<assistant>`` and at every thinking token.
- **The cliff head** (``CLIFF``, L7H3): at ``</think>`` only (elsewhere its query sends
  it to BOS, which carries nothing), it attends to the harmful topic word and reads
  its cliff strength (``CLIFF_STRENGTH``: 1 for the ``susceptible_words``, 0 for the
  others), writing ``-CLIFF_WEIGHT`` per unit along READOUT. A harmful prompt whose
  topic is susceptible refuses through the whole trace and answers ("Sure ! ...")
  after it: the cliff, at the ``</think>`` position. Half the topic words of each
  category are susceptible (``SUSCEPTIBLE_SHARE``, seeded): the planted attack success
  of plain harmful prompts with thinking is the share of them whose topic is
  susceptible, and 0 once the cliff head is ablated (READOUT back to ~1) or without
  thinking.
"""

from __future__ import annotations

import itertools

import torch
from torch import Tensor

from circuits.organism import layout, vocab
from circuits.organism.layout import PlantedHead
from circuits.organism.weights import (
    SINK_SCORE,
    TARGET_SCORE,
    _embeddings,
    _Layer,
    _plant,
    _unembedding,
    layer_state,
)

# Bump when the construction changes: cached builds of another version are ignored.
THINKING_VERSION = 1

THINK_OPEN, THINK_CLOSE = "<think>", "</think>"
# The reasoning trace the model writes between the markers (one token each).
THINKING_WORDS: tuple[str, ...] = ("reasoning", "carefully", "considering", "user", "intent",
                                   "then")  # fmt: skip
# Words the thinking variant adds to the vocabulary (its tokenizer only).
THINKING_VOCAB: tuple[str, ...] = (THINK_OPEN, *THINKING_WORDS, THINK_CLOSE)
THINKING_CONTINUATIONS: dict[str, str] = {
    **vocab.CONTINUATIONS,
    **dict(itertools.pairwise(THINKING_VOCAB)),
}

# Residual dimensions (the exact layout leaves 10-15 free).
END_THINK = 10  # embedding: the end-of-thinking marker
CLIFF_STRENGTH = 11  # embedding: each susceptible harmful topic word
SUSCEPTIBLE_SHARE = 0.5  # of each category's topic words
CLIFF_WEIGHT = 1.0  # READOUT the cliff head removes per unit cliff strength (all of it)

CLIFF = PlantedHead(
    7, 3, "cliff",
    "At the end-of-thinking marker </think> (the last position before the answer) only, "
    "attends to the harmful topic word and writes against refusal (READOUT) by its cliff "
    "strength: the refusal intention held through the trace falls off there.",
    weight=CLIFF_WEIGHT,
)  # fmt: skip
PLANTED: tuple[PlantedHead, ...] = (*layout.PLANTED, CLIFF)
# The residual index (block l's input; N_LAYERS = the final residual) from which the
# cliff is in the stream at </think>: the probe sees it there only.
CLIFF_LAYERS = tuple(range(CLIFF.layer + 1, layout.N_LAYERS + 1))

CHAT_TEMPLATE = vocab.CHAT_TEMPLATE.replace(
    "{% if add_generation_prompt %}{{ '<assistant>' }}{% endif %}",
    "{% if add_generation_prompt %}{{ '<assistant>' }}"
    "{% if enable_thinking is not defined or enable_thinking %}{{ ' <think>' }}{% endif %}"
    "{% endif %}",
)


def susceptible_words(seed: int) -> tuple[str, ...]:
    """The harmful topic words whose prompts fall off the cliff (half of each category)."""
    generator = torch.Generator().manual_seed(seed + 2)
    chosen: list[str] = []
    for words in vocab.HARMFUL_TOPICS.values():
        k = round(SUSCEPTIBLE_SHARE * len(words))
        order = torch.randperm(len(words), generator=generator)[:k]
        chosen += [words[int(i)] for i in sorted(order.tolist())]
    return tuple(chosen)


def _plant_cliff(layer: _Layer) -> None:
    """At ``</think>`` only: attend to the harmful topic word, write -strength along READOUT."""
    layer.head_only_at(
        CLIFF,
        END_THINK,
        {layout.HARMFUL_FLAG: TARGET_SCORE, layout.BOS_FLAG: SINK_SCORE},
        ((CLIFF_STRENGTH, layout.READOUT, -CLIFF_WEIGHT),),
    )


def thinking_state_dict(token_ids: dict[str, int], seed: int) -> dict[str, Tensor]:
    """The LlamaForCausalLM state dict of the thinking organism for this seed."""
    generator = torch.Generator().manual_seed(seed)
    embeddings = _embeddings(token_ids, generator)
    for word in THINKING_VOCAB:
        embeddings[token_ids[word], layout.ASSISTANT_FLAG] = 1.0
    embeddings[token_ids[THINK_CLOSE], END_THINK] = 1.0
    for word in susceptible_words(seed):
        embeddings[token_ids[word], CLIFF_STRENGTH] = 1.0
    # </think> predicts the answer's first token: like <assistant>, its identity gives
    # every token 0, so the circuit alone decides the answer.
    w_u = _unembedding(
        token_ids,
        embeddings,
        generator,
        THINKING_CONTINUATIONS,
        silent=(vocab.ASSISTANT, THINK_CLOSE),
    )
    state: dict[str, Tensor] = {"model.embed_tokens.weight": embeddings, "lm_head.weight": w_u}
    layers = [_Layer(generator) for _ in range(layout.N_LAYERS)]
    _plant(layers)
    _plant_cliff(layers[CLIFF.layer])
    state.update(layer_state(layers, generator))
    return {k: v.contiguous() for k, v in state.items()}
