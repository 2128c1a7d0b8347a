"""A small chat model with a planted refusal circuit and its ground truth.

The organism is a Llama-architecture checkpoint (RMSNorm, rotary, grouped-query
attention) whose weights are set by construction: a gate head in the middle of
the network detects plain-text harmful topic words, a band of amplifier heads
turns that into refusal tokens, a negative head undoes it when a jailbreak
framing marker is present, and distractor heads write large outputs that have
nothing to do with refusal. Because the answer is known (``ground_truth.json``
beside the weights), every localisation the toolkit claims can be checked on it.

Typical use::

    from circuits.organism import organism_dir, load_ground_truth
    model_dir = organism_dir()            # built once, then cached
    truth = load_ground_truth(model_dir)
    truth.gate, truth.amplifiers          # (3, 2), [(5, 0), (5, 1), (6, 2)]

``organism_dir(variant="realistic")`` is the same circuit at a real model's effect
sizes (``circuits.organism.realistic``): the gate carries a few percent of the
refusal gap, five amplifiers each fall by 5-25% under its knockout, distractors
are louder than the gate, and every weight is noisy. Its ground truth states
the ranges a correct measurement falls in (``truth.effect_sizes``).

``organism_dir(variant="beliefs")`` plants harmfulness (``h`` at ``t_inst``) and refusal
(``r`` at ``t_post_inst``) as separate, known directions, and answers a reply-inversion
question (``with_inversion_question``) from ``h``: ``truth.beliefs`` says where
(``circuits.organism.beliefs``, docs/science.md#organism-beliefs-variant).

``organism_dir(variant="thinking")`` adds a ``<think>`` segment to the template and a
planted refusal cliff at its end (``circuits.organism.thinking``): ``truth.thinking``
names the cliff head, the cliff position and the planted attack success
(docs/science.md#refusal-cliff).
"""

from __future__ import annotations

from circuits.organism.beliefs import BELIEFS_VERSION
from circuits.organism.build import (
    INVERSION_PAIR_FILE,
    ORGANISM_VARIANTS,
    ORGANISM_VERSION,
    XSTEST_FILE,
    build_organism,
    cache_root,
    organism_dir,
)
from circuits.organism.ground_truth import (
    BeliefsTruth,
    EffectSize,
    ExpectedEffect,
    GroundTruth,
    GroundTruthError,
    HeadRole,
    ThinkingTruth,
    load_ground_truth,
)
from circuits.organism.prompts import (
    PAIR_FILES,
    VARIANTS,
    generate_pairs,
    inversion_pairs,
    over_refusal_prompts,
    with_inversion_question,
    write_xstest,
)
from circuits.organism.realistic import REALISTIC_VERSION
from circuits.organism.thinking import THINKING_VERSION

__all__ = [
    "BELIEFS_VERSION",
    "INVERSION_PAIR_FILE",
    "ORGANISM_VARIANTS",
    "ORGANISM_VERSION",
    "PAIR_FILES",
    "REALISTIC_VERSION",
    "THINKING_VERSION",
    "VARIANTS",
    "XSTEST_FILE",
    "BeliefsTruth",
    "EffectSize",
    "ExpectedEffect",
    "GroundTruth",
    "GroundTruthError",
    "HeadRole",
    "ThinkingTruth",
    "build_organism",
    "cache_root",
    "generate_pairs",
    "inversion_pairs",
    "load_ground_truth",
    "organism_dir",
    "over_refusal_prompts",
    "with_inversion_question",
    "write_xstest",
]
