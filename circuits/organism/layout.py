"""Where the planted circuit lives: model shape, residual-stream features, head roles.

The organism's residual stream is partitioned by hand (d_model = 128):

- ``CONST`` holds a large constant written by every token embedding. It keeps
  every RMSNorm scale nearly the same on every prompt (so the circuit stays
  close to linear), and it is the bias input of the unembedding.
- A few named feature dimensions: the embedding flags the circuit reads
  (``BOS_FLAG``, ``ASSISTANT_FLAG``, ``HARMFUL_FLAG``, ``FRAMING_FLAG``,
  ``FRAMING_STRENGTH``, ``CIPHER_FLAG``, ``CIPHER_MARK``), the ``HARM`` feature the
  gate writes and the ``READOUT`` the amplifiers and negative heads write.
- ``IDENTITY`` dimensions: a random unit vector per token, as in any model.
- ``JUNK`` dimensions: where distractor heads, unused heads and MLPs write. No
  circuit head reads them and the unembedding ignores them, so they change the
  logits only through the final norm's scale (a fraction of a percent).

The unembedding reads only ``READOUT`` and ``CONST`` for response tokens, and
its ``HARM`` column is zero: the gate's direct logit attribution is exactly 0.

Head indices are (layer, head) with 4 query heads and 2 key/value heads per
layer; query heads 0-1 share key/value group 0 and heads 2-3 share group 1.
"""

from __future__ import annotations

from dataclasses import dataclass

N_LAYERS = 8
N_HEADS = 4
N_KV_HEADS = 2
D_HEAD = 32
D_MODEL = 128
D_MLP = 128
ROPE_THETA = 1e12
MAX_POSITIONS = 256

# Magnitude of the constant residual component and the norm gain that undoes it:
# with every other feature small, rms(x) ~= CONST_VALUE / sqrt(D_MODEL), so a norm
# weight of that size hands each layer its features at their written scale.
CONST_VALUE = 40.0
NORM_GAIN = CONST_VALUE / D_MODEL**0.5
# The final norm's gain on READOUT differs from the other dimensions so that a
# DLA that forgets the final-norm gain gets the amplifiers wrong by this factor.
READOUT_GAIN = 1.5

CONST = 0
HARM = 1
READOUT = 2
BOS_FLAG = 3
ASSISTANT_FLAG = 4
HARMFUL_FLAG = 5
FRAMING_FLAG = 6
FRAMING_STRENGTH = 7
CIPHER_FLAG = 8
CIPHER_MARK = 9
IDENTITY = range(16, 64)
JUNK = range(64, 128)

# Rotary: with rope_theta = 1e12 and d_head = 32, rotary pair j turns by
# 10**(-0.75 j) radians per position. Pairs 0-2 turn fast enough to encode
# relative position (the distractors use them); from pair 8 on the rotation over
# 256 positions is below 3e-4 rad, so a query/key component there is pure content.
CONTENT_DIM = 8
POSITION_PAIRS = (0, 1, 2)
# Amplitudes of cos(omega_j * (distance - offset)) per position pair: chosen so
# the score peaks at the wanted distance with a margin of ~16 over any other
# distance below MAX_POSITIONS (test_organism checks the attention patterns).
POSITION_AMPLITUDES = (40.0, 32.0, 104.0)


@dataclass(frozen=True)
class PlantedHead:
    """One head the organism's construction gives a role."""

    layer: int
    head: int
    role: str
    description: str
    weight: float = 0.0  # READOUT weight (amplifier, negative) or output scale


GATE = PlantedHead(
    3,
    2,
    "gate",
    "At <assistant>, attends to plain-text harmful topic tokens (BOS otherwise) and writes "
    "the HARM feature, which the unembedding ignores.",
    weight=1.0,
)
AMPLIFIERS = (
    PlantedHead(5, 0, "amplifier", "At <assistant>, attends to itself and copies HARM "
                "into the refusal readout.", weight=0.40),
    PlantedHead(5, 1, "amplifier", "Same reading as L5H0 (shared key/value group), smaller "
                "readout weight.", weight=0.25),
    PlantedHead(6, 2, "amplifier", "At <assistant>, attends to itself and copies HARM "
                "into the refusal readout.", weight=0.35),
)  # fmt: skip
NEGATIVES = (
    PlantedHead(7, 1, "negative", "At <assistant>, attends to jailbreak framing markers and "
                "writes against refusal in proportion to the marker's strength.", weight=0.9),
)  # fmt: skip
DISTRACTORS = (
    PlantedHead(2, 0, "distractor", "Previous-token head copying the previous token's identity "
                "into junk dimensions (large output, no effect on refusal).", weight=4.0),
    PlantedHead(5, 2, "distractor", "Current-token head copying the token's identity into "
                "junk dimensions (large output, no effect on refusal).", weight=5.0),
    PlantedHead(6, 0, "distractor", "Previous-token head copying the previous token's identity "
                "into junk dimensions (large output, no effect on refusal).", weight=4.5),
)  # fmt: skip
# How far back each distractor looks: previous token, current token, previous token.
DISTRACTOR_OFFSETS = (1, 0, 1)
PLANTED: tuple[PlantedHead, ...] = (GATE, *AMPLIFIERS, *NEGATIVES, *DISTRACTORS)

# Refusal readout: logit = slope * READOUT + bias. With READOUT = r (the sum of
# amplifier outputs, 1 on a plain harmful prompt), compliance wins for r < 0.25,
# evasion for 0.25 < r < 0.75 and refusal above: scaling the gate walks the first
# token from compliance through evasion to refusal.
READOUT_SLOPE = 8.0
REFUSAL_BIAS = -4.0
COMPLIANCE_BIAS = 4.0
EVASION_BIAS = 2.0
OTHER_BIAS = -6.0
# Small per-word offsets give each class a definite favourite first token.
WORD_OFFSETS = {
    "Sorry": 0.3, "I": 0.2, "cannot": 0.0, "unable": -0.1, "As": -0.2, "Unfortunately": -0.3,
    "Sure": 0.3, "Here": 0.1, "Certainly": 0.0, "Okay": -0.2,
    "Perhaps": 0.3, "Generally": 0.1, "Hmm": -0.1,
}  # fmt: skip

# Layers that count as the middle band of depth (the gate's band) and the
# amplifier band, as fractions and as layer indices.
MIDDLE_BAND_FRACTION = (0.25, 0.65)
MIDDLE_BAND_LAYERS = (2, 5)
AMPLIFIER_BAND_LAYERS = (5, 6)
