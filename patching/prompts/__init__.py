"""Prompt sets: pair files and the built-in pairs (:mod:`.pairs`), public prompt
sets such as AdvBench and Alpaca made into pairs (:mod:`.readers`).

The pair data ship in ``patching/data/*.jsonl``.
"""

from patching.prompts.cipher import DEFAULT_TEMPLATE, Cipher, check_template
from patching.prompts.pairs import Prompt, PromptPair, builtin_pairs, read_pairs, write_pairs
from patching.prompts.readers import PUBLIC_FORMATS, make_pairs, read_prompts

__all__ = [
    "DEFAULT_TEMPLATE",
    "PUBLIC_FORMATS",
    "Cipher",
    "Prompt",
    "PromptPair",
    "builtin_pairs",
    "check_template",
    "make_pairs",
    "read_pairs",
    "read_prompts",
    "write_pairs",
]
