"""The organism's weights, set by construction (as compiled transformers are).

Everything here is a Llama state dict built head by head. Heads with no role
get small random weights (seeded) that read token identity and write only into
the junk dimensions, so the model looks like a trained one to a method that
does not know the layout, while its refusal behaviour is fixed by the planted
heads alone. The feature dimensions and head roles are defined in ``layout``.

Attention arithmetic used below: each layer's input norm has gain NORM_GAIN,
so a head sees every feature at about its written size; a query/key pair at
rotary pair CONTENT_DIM does not rotate, so the attention score of query
feature a against key feature b is ``q * k / sqrt(D_HEAD)`` whatever the
positions. ``_score_weight`` turns a wanted score into the key weight.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from jaxtyping import Float
from torch import Tensor

from circuits.organism import layout, vocab
from circuits.organism.layout import D_HEAD, D_MODEL, PlantedHead

QUERY_SIZE = 10.0  # query component a planted content head puts on CONTENT_DIM
POSITION_QUERY_SIZE = 4.0  # same, on each rotary position pair
# Attention scores (logits) the planted heads give each kind of key.
TARGET_SCORE = 15.0  # a harmful topic word (gate) or a framing marker (negative head)
SINK_SCORE = 5.0  # BOS, where the gate and the negative head look when nothing matches
SELF_SCORE = 20.0  # amplifiers: the <assistant> position itself
# A score that makes a gated head attend to BOS (so it writes nothing) where it must stay quiet.
EXCLUDE_SCORE = 40.0
RANDOM_QK_SCALE = 1.0
RANDOM_V_SCALE = 0.3
RANDOM_O_SCALE = 0.05
RANDOM_MLP_IN_SCALE = 0.3
RANDOM_MLP_OUT_SCALE = 0.05
RANDOM_UNEMBED_SCALE = 0.1
CONTINUATION_LOGIT = 20.0  # bigram boost of a response word's successor
TWIN_MEANING_SHARE = 0.8  # how much of a cipher twin's identity vector is its plain word's


def _score_weight(score: float, query: float = QUERY_SIZE) -> float:
    return score * math.sqrt(D_HEAD) / query


def _orthonormal(rows: int, cols: int, generator: torch.Generator) -> Float[Tensor, "rows cols"]:
    """A random matrix with orthonormal rows (rows <= cols) or columns (rows > cols)."""
    a = torch.randn(max(rows, cols), min(rows, cols), generator=generator)
    q, _ = torch.linalg.qr(a)
    return q if rows > cols else q.T


def _embeddings(
    token_ids: dict[str, int], generator: torch.Generator
) -> Float[Tensor, "vocab d_model"]:
    n_identity = len(layout.IDENTITY)
    identity = torch.randn(len(token_ids), n_identity, generator=generator)
    identity /= identity.norm(dim=1, keepdim=True)
    # A cipher twin means the same as its plain word (most of its identity is
    # the word's), so the model "understands" the cipher; it only lacks the
    # harmful flag, which is all the gate reads.
    for word in vocab.HARMFUL_WORDS:
        twin = token_ids[vocab.cipher_twin(word)]
        mixed = (
            TWIN_MEANING_SHARE * identity[token_ids[word]]
            + math.sqrt(1 - TWIN_MEANING_SHARE**2) * identity[twin]
        )
        identity[twin] = mixed / mixed.norm()

    emb = torch.zeros(len(token_ids), D_MODEL)
    emb[:, layout.CONST] = layout.CONST_VALUE
    emb[:, layout.IDENTITY] = identity
    emb[token_ids[vocab.BOS], layout.BOS_FLAG] = 1.0
    emb[token_ids[vocab.ASSISTANT], layout.ASSISTANT_FLAG] = 1.0
    for word in vocab.HARMFUL_WORDS:
        emb[token_ids[word], layout.HARMFUL_FLAG] = 1.0
        emb[token_ids[vocab.cipher_twin(word)], layout.CIPHER_FLAG] = 1.0
    for marker, strength in vocab.JAILBREAK_MARKERS.items():
        emb[token_ids[marker], layout.FRAMING_FLAG] = 1.0
        emb[token_ids[marker], layout.FRAMING_STRENGTH] = strength
    emb[token_ids[vocab.CIPHER_MARKER], layout.CIPHER_MARK] = 1.0
    return emb


def _unembedding(
    token_ids: dict[str, int],
    embeddings: Float[Tensor, "vocab d_model"],
    generator: torch.Generator,
    continuations: dict[str, str] = vocab.CONTINUATIONS,
    silent: tuple[str, ...] = (vocab.ASSISTANT,),
) -> Float[Tensor, "vocab d_model"]:
    """Response tokens read READOUT (slope) and CONST (bias); nothing reads HARM.

    The IDENTITY columns hold the continuation bigrams: solved so that the
    current token's identity vector gives its successor CONTINUATION_LOGIT and
    ``<assistant>``'s (every ``silent`` token's) gives every token exactly 0 (the first
    response token is decided by the circuit alone). The remaining freedom is random noise for
    non-response words, orthogonal to every constrained identity vector.
    """
    n_vocab = len(token_ids)
    w_u = torch.zeros(n_vocab, D_MODEL)
    w_u[:, layout.CONST] = layout.OTHER_BIAS / layout.CONST_VALUE
    classes = (
        (vocab.REFUSAL_WORDS, layout.READOUT_SLOPE, layout.REFUSAL_BIAS),
        (vocab.COMPLIANCE_WORDS, -layout.READOUT_SLOPE, layout.COMPLIANCE_BIAS),
        (vocab.EVASION_WORDS, 0.0, layout.EVASION_BIAS),
    )
    response = [token_ids[w] for words, _, _ in classes for w in words]
    for words, slope, bias in classes:
        for word in words:
            row = w_u[token_ids[word]]
            row[layout.CONST] = (bias + layout.WORD_OFFSETS[word]) / layout.CONST_VALUE
            # The final norm multiplies READOUT by READOUT_GAIN; undo it here.
            row[layout.READOUT] = slope / layout.READOUT_GAIN

    current = [*silent, *continuations]
    ids = embeddings[[token_ids[w] for w in current]][:, layout.IDENTITY].T  # [identity, m]
    targets = torch.zeros(n_vocab, len(current))
    for column, word in enumerate(current[len(silent) :], start=len(silent)):
        targets[token_ids[continuations[word]], column] = CONTINUATION_LOGIT
    pinv = torch.linalg.pinv(ids)
    noise = RANDOM_UNEMBED_SCALE * torch.randn(n_vocab, len(layout.IDENTITY), generator=generator)
    noise[response] = 0.0
    null_space = torch.eye(len(layout.IDENTITY)) - ids @ pinv
    w_u[:, layout.IDENTITY] = targets @ pinv + noise @ null_space
    return w_u


class _Layer:
    """One layer's attention projections, edited head by head."""

    def __init__(self, generator: torch.Generator) -> None:
        n_q, n_kv = layout.N_HEADS * D_HEAD, layout.N_KV_HEADS * D_HEAD
        self.generator = generator
        self.q = self._random_reading_identity(n_q, RANDOM_QK_SCALE)
        self.k = self._random_reading_identity(n_kv, RANDOM_QK_SCALE)
        self.v = self._random_reading_identity(n_kv, RANDOM_V_SCALE)
        self.o = torch.zeros(D_MODEL, n_q)
        self.o[layout.JUNK] = RANDOM_O_SCALE * torch.randn(
            len(layout.JUNK), n_q, generator=generator
        )

    def _random_reading_identity(self, rows: int, scale: float) -> Float[Tensor, "rows d_model"]:
        w = torch.zeros(rows, D_MODEL)
        w[:, layout.IDENTITY] = scale * torch.randn(
            rows, len(layout.IDENTITY), generator=self.generator
        )
        return w

    @staticmethod
    def q_row(head: int, i: int) -> int:
        return head * D_HEAD + i

    @staticmethod
    def kv_row(head: int, i: int) -> int:
        # GQA: query head h uses key/value group h // (heads per group).
        group = head // (layout.N_HEADS // layout.N_KV_HEADS)
        return group * D_HEAD + i

    def clear_head(self, head: int) -> None:
        """Remove the random query and output of a head that gets a role."""
        self.q[head * D_HEAD : (head + 1) * D_HEAD] = 0.0
        self.o[:, head * D_HEAD : (head + 1) * D_HEAD] = 0.0

    def content_head(
        self,
        planted: PlantedHead,
        query_feature: int,
        key_scores: dict[int, float],
        value_feature: int,
        output_feature: int,
        output_weight: float,
    ) -> None:
        """A head that attends by content and moves one feature to another.

        The query reads ``query_feature``; the key of a position gets
        ``key_scores[f]`` for each feature f it carries; the value copies
        ``value_feature`` and the output writes it, times ``output_weight``, to
        ``output_feature``.
        """
        h = planted.head
        self.clear_head(h)
        self.q[self.q_row(h, layout.CONTENT_DIM), query_feature] = QUERY_SIZE
        k_row = self.k[self.kv_row(h, layout.CONTENT_DIM)]
        k_row.zero_()
        for feature, score in key_scores.items():
            k_row[feature] = _score_weight(score)
        v_row = self.v[self.kv_row(h, 0)]
        v_row.zero_()
        v_row[value_feature] = 1.0
        self.o[output_feature, self.q_row(h, 0)] = output_weight

    def gated_head(
        self,
        planted: PlantedHead,
        query: dict[int, float],
        exclude_query: dict[int, float],
        key_scores: dict[int, float],
        values: Sequence[tuple[int, int, float]],
    ) -> None:
        """A content head that reads only where it is let through, and attends to BOS elsewhere.

        Query component CONTENT_DIM reads ``query`` (feature: weight) and gives each key
        feature f the score ``key_scores[f]`` per unit; component CONTENT_DIM + 1 reads
        ``exclude_query`` and scores BOS at EXCLUDE_SCORE per unit, so where it fires the
        head looks at BOS (whose values are 0) and writes nothing. ``values``: (read
        feature, written feature, output weight) per value row.
        """
        h = planted.head
        self.clear_head(h)
        content, exclude = layout.CONTENT_DIM, layout.CONTENT_DIM + 1
        for feature, weight in query.items():
            self.q[self.q_row(h, content), feature] = weight
        for feature, weight in exclude_query.items():
            self.q[self.q_row(h, exclude), feature] = weight
        k_row = self.k[self.kv_row(h, content)]
        k_row.zero_()
        for feature, score in key_scores.items():
            k_row[feature] = _score_weight(score)
        k_exclude = self.k[self.kv_row(h, exclude)]
        k_exclude.zero_()
        k_exclude[layout.BOS_FLAG] = _score_weight(EXCLUDE_SCORE)
        for i, (read, write, weight) in enumerate(values):
            v_row = self.v[self.kv_row(h, i)]
            v_row.zero_()
            v_row[read] = 1.0
            self.o[write, self.q_row(h, i)] = weight

    def head_only_at(
        self,
        planted: PlantedHead,
        flag: int,
        key_scores: dict[int, float],
        values: Sequence[tuple[int, int, float]],
    ) -> None:
        """A :meth:`gated_head` that reads at positions carrying ``flag`` only.

        Its exclusion query is CONST minus ``flag``: it fires everywhere but there.
        """
        self.gated_head(
            planted,
            query={flag: QUERY_SIZE},
            exclude_query={layout.CONST: QUERY_SIZE / layout.CONST_VALUE, flag: -QUERY_SIZE},
            key_scores=key_scores,
            values=values,
        )

    def positional_copy_head(self, planted: PlantedHead, offset: int) -> None:
        """A head attending ``offset`` tokens back and copying that token's identity.

        Query and key come from CONST (the same at every position); rotary
        turns them, and the key's phase omega_j * offset on each position pair
        makes sum_j A_j cos(omega_j * (distance - offset)) peak at ``offset``.
        The output is an orthonormal map into JUNK of norm ``planted.weight``.
        """
        h = planted.head
        self.clear_head(h)
        half = D_HEAD // 2
        for j, amplitude in zip(layout.POSITION_PAIRS, layout.POSITION_AMPLITUDES, strict=True):
            omega = layout.ROPE_THETA ** (-2 * j / D_HEAD)
            key_size = _score_weight(amplitude, POSITION_QUERY_SIZE)
            self.q[self.q_row(h, j), layout.CONST] = POSITION_QUERY_SIZE / layout.CONST_VALUE
            for i, part in ((j, math.cos(omega * offset)), (j + half, math.sin(omega * offset))):
                k_row = self.k[self.kv_row(h, i)]
                k_row.zero_()
                k_row[layout.CONST] = key_size * part / layout.CONST_VALUE
        first = self.kv_row(h, 0)
        self.v[first : first + D_HEAD] = 0.0
        self.v[first : first + D_HEAD, layout.IDENTITY] = _orthonormal(
            D_HEAD, len(layout.IDENTITY), self.generator
        )
        self.o[layout.JUNK, h * D_HEAD : (h + 1) * D_HEAD] = planted.weight * _orthonormal(
            len(layout.JUNK), D_HEAD, self.generator
        )


def _plant(layers: list[_Layer]) -> None:
    _plant_gate(layers)
    for amp in layout.AMPLIFIERS:
        layers[amp.layer].content_head(
            amp,
            query_feature=layout.ASSISTANT_FLAG,
            key_scores={layout.ASSISTANT_FLAG: SELF_SCORE},
            value_feature=layout.HARM,
            output_feature=layout.READOUT,
            output_weight=amp.weight,
        )
    _plant_negatives_and_distractors(layers)


def _plant_gate(layers: list[_Layer]) -> None:
    gate = layout.GATE
    layers[gate.layer].content_head(
        gate,
        query_feature=layout.ASSISTANT_FLAG,
        key_scores={layout.HARMFUL_FLAG: TARGET_SCORE, layout.BOS_FLAG: SINK_SCORE},
        value_feature=layout.HARMFUL_FLAG,
        output_feature=layout.HARM,
        output_weight=gate.weight,
    )


def _plant_negatives_and_distractors(layers: list[_Layer]) -> None:
    for neg in layout.NEGATIVES:
        layers[neg.layer].content_head(
            neg,
            query_feature=layout.ASSISTANT_FLAG,
            key_scores={layout.FRAMING_FLAG: TARGET_SCORE, layout.BOS_FLAG: SINK_SCORE},
            value_feature=layout.FRAMING_STRENGTH,
            output_feature=layout.READOUT,
            output_weight=-neg.weight,  # it writes against refusal
        )
    for distractor, offset in zip(layout.DISTRACTORS, layout.DISTRACTOR_OFFSETS, strict=True):
        layers[distractor.layer].positional_copy_head(distractor, offset)


def organism_state_dict(token_ids: dict[str, int], seed: int) -> dict[str, Tensor]:
    """The full LlamaForCausalLM state dict of the organism for this seed."""
    generator = torch.Generator().manual_seed(seed)
    embeddings = _embeddings(token_ids, generator)
    state: dict[str, Tensor] = {
        "model.embed_tokens.weight": embeddings,
        "lm_head.weight": _unembedding(token_ids, embeddings, generator),
    }
    layers = [_Layer(generator) for _ in range(layout.N_LAYERS)]
    _plant(layers)
    state.update(layer_state(layers, generator))
    return {k: v.contiguous() for k, v in state.items()}


def layer_state(layers: list[_Layer], generator: torch.Generator) -> dict[str, Tensor]:
    """The state dict entries of the layers, their norms and MLPs, and the final norm."""
    state: dict[str, Tensor] = {}
    norm = torch.full((D_MODEL,), layout.NORM_GAIN)
    final_norm = norm.clone()
    final_norm[layout.READOUT] *= layout.READOUT_GAIN
    state["model.norm.weight"] = final_norm
    mlp_in = list(layout.IDENTITY)
    for i, layer in enumerate(layers):
        prefix = f"model.layers.{i}."
        state[prefix + "self_attn.q_proj.weight"] = layer.q
        state[prefix + "self_attn.k_proj.weight"] = layer.k
        state[prefix + "self_attn.v_proj.weight"] = layer.v
        state[prefix + "self_attn.o_proj.weight"] = layer.o
        state[prefix + "input_layernorm.weight"] = norm.clone()
        state[prefix + "post_attention_layernorm.weight"] = norm.clone()
        # MLPs do nothing for the circuit: they read identity and write junk (reading
        # junk too would let junk feed back on itself and swamp the norms).
        for name in ("gate_proj", "up_proj"):
            w = torch.zeros(layout.D_MLP, D_MODEL)
            w[:, mlp_in] = RANDOM_MLP_IN_SCALE * torch.randn(
                layout.D_MLP, len(mlp_in), generator=generator
            )
            state[prefix + f"mlp.{name}.weight"] = w
        down = torch.zeros(D_MODEL, layout.D_MLP)
        down[layout.JUNK] = RANDOM_MLP_OUT_SCALE * torch.randn(
            len(layout.JUNK), layout.D_MLP, generator=generator
        )
        state[prefix + "mlp.down_proj.weight"] = down
    return state
