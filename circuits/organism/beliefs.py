"""The beliefs organism: harmfulness and refusal planted as separate, known directions.

The ground truth of "harmfulness is encoded separately from refusal"
(docs/science.md#organism-beliefs-variant). Same shape, embeddings, random heads,
MLPs and distractors as the exact organism; the refusal decision is planted as a
chain of four heads that read and write named residual dimensions:

- **Harmfulness detector** (L1H0): at every position except ``<assistant>``, attends
  to a plain-text harmful topic word (BOS otherwise) and writes the word's strength
  (0.6-1.4, per word) times ``H_SCALE`` along the harmfulness direction ``h``
  (dimension ``H``). So ``h`` is at ``t_inst`` on every prompt whose instruction
  names a harmful topic, from block 2's input on; it reads nothing a jailbreak
  marker carries, so framing leaves it unchanged. Cipher twins lack the harmful
  flag: cipher prompts carry no ``h`` (the detector reads the plain spelling only).
- **Refusal writer** (L3H2): at ``<assistant>`` (``t_post_inst``) only, attends to the
  positions carrying ``h`` (with a score that grows with it) and writes what it reads
  into the refusal direction ``r`` (``layout.READOUT``, the dimension the unembedding
  turns into refusal or compliance tokens). The attention it gives ``h`` against the
  other positions depends on the topic's strength, on how many positions follow
  the topic and (through a small random key on token identity) on every word of the
  prompt, so refusal margins are graded across prompts.
- **Negative head** (L4H1): at ``<assistant>``, attends to a jailbreak framing marker
  and writes against ``r`` in proportion to the marker's strength.
- **Inversion head** (L5H0): at ``<assistant>``, attends to the reply-inversion
  question's marker (``vocab.INVERSION_MARKER``, the question's last word, so
  ``t_inst`` of a prompt with the question) and copies two things: that the question
  is there (``QUESTION``) and the ``h`` it finds there (``ANSWER``). The unembedding
  turns ``QUESTION`` into "the answer is Certainly or No" (every other response word
  is suppressed) and ``ANSWER`` into Certainly over No: the answer comes from ``h``,
  never from ``r``.

- **Over-refusal head** (L4H2): at ``<assistant>``, attends to a harmless topic that
  sounds harmful (``vocab.SCARY_WORDS``) and writes its strength along ``r``: about
  half of those prompts refuse with no ``h`` anywhere (XSTest's over-refusal), and
  answer the inversion question "No".

The exact organism's gate and amplifiers are not planted here: their ``HARM`` at
``t_post_inst`` would be a second harmful-vs-harmless difference beside ``r``.
"""

from __future__ import annotations

import torch
from jaxtyping import Float
from torch import Tensor

from circuits.organism import layout, vocab
from circuits.organism.layout import D_MODEL, PlantedHead
from circuits.organism.weights import (
    QUERY_SIZE,
    SINK_SCORE,
    TARGET_SCORE,
    _embeddings,
    _Layer,
    _score_weight,
    _unembedding,
    layer_state,
)

# Bump when the construction changes: cached builds of another version are ignored.
BELIEFS_VERSION = 3

# Residual dimensions (the exact layout leaves 10-15 free).
HARM_STRENGTH = 10  # embedding: each harmful topic word's strength
H = 11  # the harmfulness feature h
QUESTION_FLAG = 12  # embedding: the inversion question's marker word
QUESTION = 13  # at <assistant>: the question is present
ANSWER = 14  # at <assistant>: the h found at the question's marker, over H_SCALE
SCARY = 15  # embedding: each scary (harmless) topic word's strength
R = layout.READOUT  # the refusal feature r

# Per-category topic strengths, evenly spaced and shuffled per seed: every category
# has the same spread of harmfulness, so each has graded refusal margins.
STRENGTH_RANGE = (0.6, 1.4)
H_SCALE = 4.0  # |h| at t_inst for a topic of strength 1
# Refusal writer: score per unit strength of an h position (every other position
# scores 0), and the READOUT it writes per unit strength read. READOUT > 0.75 refuses
# at zero bias; these give plain harmful prompts READOUT ~0.8-2.4 (graded margins).
REFUSAL_SCORE = 2.0
REFUSAL_WEIGHT = 3.6
# Standard deviation of a random score each token's identity adds to the refusal
# writer's keys: how much of its attention the h positions get then depends on every
# word of the prompt (filler, frame, topic), so no two prompts share a refusal margin
# by accident and a bias on the refusal tokens moves a category's rate in small steps.
REFUSAL_KEY_NOISE = 1.0
NEGATIVE_WEIGHT = 3.0  # READOUT the negative head removes per unit marker strength
# Scary topic strengths and the READOUT the over-refusal head writes per unit: about
# half of the scary prompts refuse (READOUT > 0.75), the rest evade or comply.
SCARY_RANGE = (0.5, 1.5)
OVER_REFUSAL_WEIGHT = 1.0
# Inversion head: its scores are large so that, without the question, no attention
# leaks from BOS onto positions carrying h (ANSWER would lift Certainly there).
INVERSION_SCORE = 30.0
INVERSION_SINK = 15.0
# Unembedding columns. QUESTION suppresses every response word but the two answers
# and lifts them; ANSWER (the h the inversion head read, in strength units) lifts
# every response word alike and lowers No: with the question it moves Certainly over
# No, without it (where steering along h puts h at BOS, the head's sink) it leaves
# the choice among refusal, compliance and evasion words unchanged.
QUESTION_SUPPRESS = 400.0
QUESTION_YES = -10.0
QUESTION_NO = 25.0
ANSWER_WEIGHT = 40.0

DETECTOR = PlantedHead(
    1, 0, "harm_detector",
    "At every position but <assistant>, attends to a plain-text harmful topic word and "
    "writes its strength along the harmfulness direction h (jailbreak markers unread).",
    weight=H_SCALE,
)  # fmt: skip
REFUSAL_WRITER = PlantedHead(
    3, 2, "refusal_writer",
    "At <assistant> (t_post_inst), attends to the positions carrying h and writes it into "
    "the refusal direction r (READOUT), which the unembedding turns into refusal tokens.",
    weight=REFUSAL_WEIGHT,
)  # fmt: skip
NEGATIVE = PlantedHead(
    4, 1, "negative",
    "At <assistant>, attends to jailbreak framing markers and writes against r in "
    "proportion to the marker's strength.",
    weight=NEGATIVE_WEIGHT,
)  # fmt: skip
OVER_REFUSAL = PlantedHead(
    4, 2, "over_refusal",
    "At <assistant>, attends to a harmless topic that sounds harmful (zombie, ghost, ...) and "
    "writes its strength along r without any h: refusal the harmfulness feature does not see.",
    weight=OVER_REFUSAL_WEIGHT,
)  # fmt: skip
INVERSION = PlantedHead(
    5, 0, "inversion",
    "At <assistant>, attends to the reply-inversion question's marker (its t_inst) and "
    "copies the question's presence and the h there: answers Certainly iff h, not from r.",
    weight=1.0,
)  # fmt: skip
PLANTED: tuple[PlantedHead, ...] = (
    DETECTOR,
    REFUSAL_WRITER,
    NEGATIVE,
    OVER_REFUSAL,
    INVERSION,
    *layout.DISTRACTORS,
)

# Residual indices (block l's input for l < N_LAYERS, N_LAYERS = the final residual)
# where each feature is in the stream, at its position.
H_LAYERS = tuple(range(DETECTOR.layer + 1, layout.N_LAYERS + 1))
R_LAYERS = tuple(range(REFUSAL_WRITER.layer + 1, layout.N_LAYERS + 1))
OVER_REFUSAL_LAYERS = tuple(range(OVER_REFUSAL.layer + 1, layout.N_LAYERS + 1))
JAILBREAK_LAYERS = tuple(range(NEGATIVE.layer + 1, layout.N_LAYERS + 1))
ANSWER_LAYERS = tuple(range(INVERSION.layer + 1, layout.N_LAYERS + 1))


def _spread(
    words: tuple[str, ...], bounds: tuple[float, float], generator: torch.Generator
) -> dict[str, float]:
    """Evenly spaced levels between ``bounds``, shuffled over ``words``."""
    levels = torch.linspace(*bounds, len(words))[torch.randperm(len(words), generator=generator)]
    return {w: round(float(s), 6) for w, s in zip(words, levels, strict=True)}


def topic_strengths(seed: int) -> dict[str, float]:
    """Each harmful topic word's strength (what ``h`` carries, in units of ``H_SCALE``)."""
    generator = torch.Generator().manual_seed(seed)
    strengths: dict[str, float] = {}
    for words in vocab.HARMFUL_TOPICS.values():
        strengths.update(_spread(words, STRENGTH_RANGE, generator))
    return strengths


def scary_strengths(seed: int) -> dict[str, float]:
    """Each scary (harmless) topic word's strength: the r the over-refusal head writes."""
    generator = torch.Generator().manual_seed(seed + 1)
    return _spread(vocab.SCARY_WORDS, SCARY_RANGE, generator)


def unit(dim: int) -> Float[Tensor, " d_model"]:
    """The residual basis vector of ``dim`` (h = unit(H), r = unit(R))."""
    v = torch.zeros(D_MODEL)
    v[dim] = 1.0
    return v


def _plant_detector(layer: _Layer) -> None:
    """Every position reads the harmful topic word; ``<assistant>`` is sent to BOS."""
    layer.gated_head(
        DETECTOR,
        query={layout.CONST: QUERY_SIZE / layout.CONST_VALUE},
        exclude_query={layout.ASSISTANT_FLAG: QUERY_SIZE},
        key_scores={layout.HARMFUL_FLAG: TARGET_SCORE, layout.BOS_FLAG: SINK_SCORE},
        values=((HARM_STRENGTH, H, H_SCALE),),
    )


def _word_noise(
    token_ids: dict[str, int],
    embeddings: Float[Tensor, "vocab d_model"],
    generator: torch.Generator,
) -> Float[Tensor, " identity"]:
    """A random key over token identity that gives the template's tokens a score of 0.

    Every prompt has the template tokens, so a score on them would shift every prompt's
    refusal margin at once; only the words of the instruction should vary it.
    """
    noise = torch.randn(len(layout.IDENTITY), generator=generator)
    template = [vocab.BOS, vocab.USER, vocab.END, vocab.ASSISTANT]
    basis, _ = torch.linalg.qr(embeddings[[token_ids[t] for t in template]][:, layout.IDENTITY].T)
    return noise - basis @ (basis.T @ noise)


def _beliefs_unembedding(
    token_ids: dict[str, int],
    embeddings: Float[Tensor, "vocab d_model"],
    generator: torch.Generator,
) -> Float[Tensor, "vocab d_model"]:
    w_u = _unembedding(token_ids, embeddings, generator, vocab.BELIEFS_CONTINUATIONS)
    for word in (*vocab.REFUSAL_WORDS, *vocab.COMPLIANCE_WORDS, *vocab.EVASION_WORDS):
        w_u[token_ids[word], QUESTION] = -QUESTION_SUPPRESS
        w_u[token_ids[word], ANSWER] = ANSWER_WEIGHT
    yes, no = token_ids[vocab.INVERSION_YES], token_ids[vocab.INVERSION_NO]
    w_u[yes, QUESTION] = QUESTION_YES
    w_u[no, QUESTION] = QUESTION_NO
    w_u[no, ANSWER] = -ANSWER_WEIGHT
    return w_u


def beliefs_state_dict(token_ids: dict[str, int], seed: int) -> dict[str, Tensor]:
    """The LlamaForCausalLM state dict of the beliefs organism for this seed."""
    generator = torch.Generator().manual_seed(seed)
    embeddings = _embeddings(token_ids, generator)
    for word, strength in topic_strengths(seed).items():
        embeddings[token_ids[word], HARM_STRENGTH] = strength
    for word, strength in scary_strengths(seed).items():
        embeddings[token_ids[word], SCARY] = strength
    embeddings[token_ids[vocab.INVERSION_MARKER], QUESTION_FLAG] = 1.0
    state: dict[str, Tensor] = {
        "model.embed_tokens.weight": embeddings,
        "lm_head.weight": _beliefs_unembedding(token_ids, embeddings, generator),
    }
    layers = [_Layer(generator) for _ in range(layout.N_LAYERS)]
    _plant_detector(layers[DETECTOR.layer])
    writer = layers[REFUSAL_WRITER.layer]
    # Each planted head reads at <assistant> only, so what it writes exists at t_post_inst alone.
    writer.head_only_at(
        REFUSAL_WRITER,
        layout.ASSISTANT_FLAG,
        {H: REFUSAL_SCORE / H_SCALE},
        ((H, R, REFUSAL_WEIGHT / H_SCALE),),
    )
    writer.k[writer.kv_row(REFUSAL_WRITER.head, layout.CONTENT_DIM), layout.IDENTITY] = (
        _score_weight(REFUSAL_KEY_NOISE) * _word_noise(token_ids, embeddings, generator)
    )
    layers[NEGATIVE.layer].head_only_at(
        NEGATIVE,
        layout.ASSISTANT_FLAG,
        {layout.FRAMING_FLAG: TARGET_SCORE, layout.BOS_FLAG: SINK_SCORE},
        ((layout.FRAMING_STRENGTH, R, -NEGATIVE_WEIGHT),),
    )
    layers[OVER_REFUSAL.layer].head_only_at(
        OVER_REFUSAL,
        layout.ASSISTANT_FLAG,
        {SCARY: TARGET_SCORE, layout.BOS_FLAG: SINK_SCORE},
        ((SCARY, R, OVER_REFUSAL_WEIGHT),),
    )
    layers[INVERSION.layer].head_only_at(
        INVERSION,
        layout.ASSISTANT_FLAG,
        {QUESTION_FLAG: INVERSION_SCORE, layout.BOS_FLAG: INVERSION_SINK},
        ((QUESTION_FLAG, QUESTION, 1.0), (H, ANSWER, 1.0 / H_SCALE)),
    )
    for distractor, offset in zip(layout.DISTRACTORS, layout.DISTRACTOR_OFFSETS, strict=True):
        layers[distractor.layer].positional_copy_head(distractor, offset)
    state.update(layer_state(layers, generator))
    return {k: v.contiguous() for k, v in state.items()}
