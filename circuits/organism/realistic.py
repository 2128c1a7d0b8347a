"""The realistic organism: the same planted roles at the effect sizes of a real model.

The exact organism (``layout``/``weights``) is a perfect switch: its gate
carries the whole refusal gap, its amplifiers read nothing else, its other
heads write nothing the refusal direction sees. On a real aligned model a gate
carries a few percent of the gap and a knockout cascade moves amplifiers by
5-25% (docs/science.md#realistic-organism). This variant plants that:

- **Amplifiers read the harmful topic directly.** Each of five amplifier heads
  attends, at ``<assistant>``, both to the harmful topic word (reading a per-word
  ``HARM_STRENGTH`` feature, 0.75-1.25) and to itself (reading the gate's
  ``HARM``). Most of its harmful-minus-control contrast comes by the direct
  route; a planted share (6-10% of its READOUT weight) comes through the gate. Each
  amplifier also reads ``CONST``, a baseline it writes to READOUT on every prompt.
- **The gate** is the exact organism's (L3H2), so it carries only what the
  amplifiers read from it: a few percent of the refusal-score gap.
- **A direct refusal head** (L7H2) reads the topic word alone: a large refusal
  contrast outside the gate's circuit, which its knockout does not move.
- **Distractors** (the exact organism's previous/current-token heads) also
  write a fixed amount to READOUT at the last position: a DLA larger than the
  gate's that does not depend on harmfulness.
- **Every head** writes a small random amount to READOUT (so every head has a
  non-zero DLA on control prompts too), the unembedding has noise on every
  column, and every weight gets small seeded noise (nothing is exactly 0).

The negative head and the cipher/jailbreak mechanics are the exact organism's.
"""

from __future__ import annotations

import torch
from torch import Tensor

from circuits.organism import layout, vocab
from circuits.organism.layout import D_HEAD, PlantedHead
from circuits.organism.weights import (
    QUERY_SIZE,
    TARGET_SCORE,
    _embeddings,
    _Layer,
    _plant_gate,
    _plant_negatives_and_distractors,
    _score_weight,
    _unembedding,
    layer_state,
)

# Bump when the construction changes: cached builds of another version are ignored.
REALISTIC_VERSION = 1

HARM_STRENGTH = 10  # a free feature dimension of the exact layout
HARM_STRENGTH_RANGE = (0.75, 1.25)  # per harmful word, drawn uniformly (seeded)
AMPLIFIER_SCORE = TARGET_SCORE  # same score for the topic word and itself: ~half each

# Noise (standard deviations). READOUT_NOISE: every head's random READOUT write
# per unit of its value (a DLA of ~0.05-0.2 logits per head); UNEMBED_NOISE: every
# unembedding entry; WEIGHT_NOISE: every other weight (norm gains relative).
READOUT_NOISE = 0.003
UNEMBED_NOISE = 0.01
WEIGHT_NOISE = 1e-3


AMPLIFIERS: tuple[tuple[PlantedHead, float, float], ...] = tuple(
    (
        PlantedHead(layer, head, "amplifier",
                    f"At <assistant>, attends to the harmful topic word (reading its strength) "
                    f"and to itself (reading the gate's HARM); {share:.0%} of its READOUT "
                    f"weight reads HARM. Writes a baseline to READOUT on every prompt.",
                    weight=weight),
        share,
        baseline,
    )
    for layer, head, weight, share, baseline in (
        # layer, head, READOUT weight (direct + gate), planted gate share, baseline
        (5, 0, 0.40, 0.06, 0.020),
        (5, 1, 0.30, 0.09, -0.015),
        (6, 2, 0.35, 0.10, 0.010),
        (6, 3, 0.25, 0.06, -0.020),
        (7, 3, 0.30, 0.10, 0.015),
    )
)  # fmt: skip
# A head that writes refusal from the harmful topic alone, not through the gate
# (it shares L7H3's keys and values and reads only the strength and the baseline):
# a large refusal contrast that the gate's knockout leaves unchanged, as the
# refusal heads outside a gate's circuit on a real model.
DIRECT = PlantedHead(
    7, 2, "direct",
    "At <assistant>, attends to the harmful topic word and writes its strength to READOUT; "
    "does not read the gate (outside its circuit). Writes a baseline to READOUT.",
    weight=0.70,
)  # fmt: skip
DIRECT_BASELINE = -0.010
# READOUT each distractor writes at the last position (a constant, not a function of harm).
DISTRACTOR_READOUT = (0.05, -0.06, 0.04)

GATE = layout.GATE
PLANTED: tuple[PlantedHead, ...] = (
    GATE,
    *(amp for amp, _, _ in AMPLIFIERS),
    DIRECT,
    *layout.NEGATIVES,
    *layout.DISTRACTORS,
)
AMPLIFIER_BAND_LAYERS = (5, 7)

# What a correct measurement finds (the ground truth's effect sizes): the gate's
# interchange necessity as a fraction of the pooled refusal-score gap, and each
# amplifier's fall of its harmful-minus-control DLA contrast under the gate's
# zero knockout on harmful and control prompts, as a fraction of the clean contrast.
GATE_NECESSITY_RANGE = (0.02, 0.08)
AMPLIFIER_DROP_RANGE = (0.05, 0.25)
DIRECT_DROP_RANGE = (-0.03, 0.03)


def _strengths(generator: torch.Generator) -> dict[str, float]:
    """Each harmful word's strength, the feature the amplifiers' direct route reads."""
    low, high = HARM_STRENGTH_RANGE
    draws = torch.rand(len(vocab.HARMFUL_WORDS), generator=generator)
    return {
        w: low + (high - low) * float(u) for w, u in zip(vocab.HARMFUL_WORDS, draws, strict=True)
    }


def _plant_amplifier(layer: _Layer, amp: PlantedHead, share: float, baseline: float) -> None:
    """Mixed attention (topic word and itself); value rows: strength, HARM, CONST."""
    h = amp.head
    layer.clear_head(h)
    layer.q[layer.q_row(h, layout.CONTENT_DIM), layout.ASSISTANT_FLAG] = QUERY_SIZE
    k_row = layer.k[layer.kv_row(h, layout.CONTENT_DIM)]
    k_row.zero_()
    k_row[layout.HARMFUL_FLAG] = _score_weight(AMPLIFIER_SCORE)
    k_row[layout.ASSISTANT_FLAG] = _score_weight(AMPLIFIER_SCORE)
    for i, feature in enumerate((HARM_STRENGTH, layout.HARM, layout.CONST)):
        v_row = layer.v[layer.kv_row(h, i)]
        v_row.zero_()
        v_row[feature] = 1.0 / layout.CONST_VALUE if feature == layout.CONST else 1.0
    # On a harmful prompt half the attention is on each source: the contrast is
    # weight/2 * (direct + gate), so these weights split it by ``share``.
    layer.o[layout.READOUT, layer.q_row(h, 0)] = amp.weight * (1 - share)
    layer.o[layout.READOUT, layer.q_row(h, 1)] = amp.weight * share
    layer.o[layout.READOUT, layer.q_row(h, 2)] = baseline


def _distractor_readout(
    layer: _Layer, distractor: PlantedHead, token: Tensor, readout: float
) -> None:
    """Make a positional-copy head write ``readout`` to READOUT when it copies ``token``."""
    first = layer.kv_row(distractor.head, 0)
    value = layer.v[first : first + D_HEAD] @ token
    cols = slice(distractor.head * D_HEAD, (distractor.head + 1) * D_HEAD)
    layer.o[layout.READOUT, cols] = readout * value / value.pow(2).sum()


def realistic_state_dict(token_ids: dict[str, int], seed: int) -> dict[str, Tensor]:
    """The LlamaForCausalLM state dict of the realistic organism for this seed."""
    generator = torch.Generator().manual_seed(seed)
    embeddings = _embeddings(token_ids, generator)
    strengths = _strengths(generator)
    for word, strength in strengths.items():
        embeddings[token_ids[word], HARM_STRENGTH] = strength
    w_u = _unembedding(token_ids, embeddings, generator)
    w_u += UNEMBED_NOISE * torch.randn(w_u.shape, generator=generator)
    layers = [_Layer(generator) for _ in range(layout.N_LAYERS)]
    _plant_gate(layers)
    _plant_negatives_and_distractors(layers)
    # At the last position (<assistant>, after <end>) the previous-token
    # distractors copy <end> and the current-token one copies <assistant>.
    copied = {1: vocab.END, 0: vocab.ASSISTANT}
    for distractor, offset, readout in zip(
        layout.DISTRACTORS, layout.DISTRACTOR_OFFSETS, DISTRACTOR_READOUT, strict=True
    ):
        token = embeddings[token_ids[copied[offset]]]
        _distractor_readout(layers[distractor.layer], distractor, token, readout)
    for layer in layers:
        # Every head's baseline: a small random READOUT write of whatever it reads.
        layer.o[layout.READOUT] += READOUT_NOISE * torch.randn(
            layer.o.shape[1], generator=generator
        )
    # Planted after the baselines so that what the amplifiers and the direct head
    # read from the gate is exactly their planted share: random READOUT weight on
    # their HARM column would be a gate share of its own (~1% of the direct head's).
    for amp, share, baseline in AMPLIFIERS:
        _plant_amplifier(layers[amp.layer], amp, share, baseline)
    _plant_amplifier(layers[DIRECT.layer], DIRECT, 0.0, DIRECT_BASELINE)
    state: dict[str, Tensor] = {"model.embed_tokens.weight": embeddings, "lm_head.weight": w_u}
    state.update(layer_state(layers, generator))
    for name, tensor in state.items():
        noise = WEIGHT_NOISE * torch.randn(tensor.shape, generator=generator)
        state[name] = tensor * (1 + noise) if tensor.dim() == 1 else tensor + noise
    return {k: v.contiguous() for k, v in state.items()}
