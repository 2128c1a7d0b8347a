"""The engine: hooked models, prompts, interventions and every forward pass.

Load a model with :func:`load_model`, format prompts with :func:`format_chat`, read
pairs with :func:`read_pairs` or :func:`builtin_pairs`, and run interventions with the
executor (:func:`run`, :func:`run_and_cache`, :func:`greedy_decode`: one set of
interventions on many prompts) or the engine (:func:`clean_runs` then
:func:`run_rows`: many variants of one prompt). ``docs/design.md`` says what lives
where. Names are imported on first use, so ``import patching`` loads neither torch
nor transformers.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from patching.lazy import lazy_exports

if TYPE_CHECKING:
    from patching.bundled import smollm2_gguf
    from patching.chat import ChatPrompt, format_chat
    from patching.checks import check_distinct_texts, check_pairs_fit
    from patching.components import ResidualDecomposition, decompose_residual
    from patching.decoding import ForceAbove, LogitBias, greedy_decode
    from patching.engine import clean_runs, run_rows
    from patching.errors import (
        ChatTemplateError,
        DeviceError,
        HeadIndexError,
        ModelLoadError,
        ModelMismatchError,
        OptionError,
        OutputDirError,
        PairAlignmentError,
        PairError,
        PromptFileError,
        RefusalCircuitsError,
        ResultFileError,
        TooFewPairsError,
        UnsafeCheckpointError,
        UnsupportedArchitectureError,
    )
    from patching.executor import run, run_and_cache
    from patching.interventions import (
        Ablation,
        AddVector,
        Clamp,
        HeadIntervention,
        Interchange,
        Scale,
    )
    from patching.loading import load_model
    from patching.model import SUPPORTED_ARCHITECTURES, HookedModel
    from patching.prompts.cipher import Cipher
    from patching.prompts.pairs import Prompt, PromptPair, builtin_pairs, read_pairs, write_pairs
    from patching.prompts.readers import make_pairs, read_prompts
    from patching.residuals import residual_stream
    from patching.runtime import configure_process

# Each public name and the module it lives in (imported on first use).
_EXPORTS: dict[str, str] = {
    "HookedModel": "patching.model",
    "load_model": "patching.loading",
    "SUPPORTED_ARCHITECTURES": "patching.model",
    "smollm2_gguf": "patching.bundled",
    "ChatPrompt": "patching.chat",
    "format_chat": "patching.chat",
    "Prompt": "patching.prompts.pairs",
    "PromptPair": "patching.prompts.pairs",
    "builtin_pairs": "patching.prompts.pairs",
    "make_pairs": "patching.prompts.readers",
    "read_pairs": "patching.prompts.pairs",
    "read_prompts": "patching.prompts.readers",
    "write_pairs": "patching.prompts.pairs",
    "configure_process": "patching.runtime",
    "check_distinct_texts": "patching.checks",
    "check_pairs_fit": "patching.checks",
    "Ablation": "patching.interventions",
    "Clamp": "patching.interventions",
    "Cipher": "patching.prompts.cipher",
    "AddVector": "patching.interventions",
    "HeadIntervention": "patching.interventions",
    "Interchange": "patching.interventions",
    "Scale": "patching.interventions",
    "run": "patching.executor",
    "run_and_cache": "patching.executor",
    "greedy_decode": "patching.decoding",
    "LogitBias": "patching.decoding",
    "ForceAbove": "patching.decoding",
    "clean_runs": "patching.engine",
    "run_rows": "patching.engine",
    "ResidualDecomposition": "patching.components",
    "decompose_residual": "patching.components",
    "residual_stream": "patching.residuals",
    "ChatTemplateError": "patching.errors",
    "DeviceError": "patching.errors",
    "HeadIndexError": "patching.errors",
    "ModelLoadError": "patching.errors",
    "ModelMismatchError": "patching.errors",
    "OptionError": "patching.errors",
    "OutputDirError": "patching.errors",
    "PairAlignmentError": "patching.errors",
    "PairError": "patching.errors",
    "PromptFileError": "patching.errors",
    "RefusalCircuitsError": "patching.errors",
    "ResultFileError": "patching.errors",
    "TooFewPairsError": "patching.errors",
    "UnsafeCheckpointError": "patching.errors",
    "UnsupportedArchitectureError": "patching.errors",
}

__all__ = [
    "SUPPORTED_ARCHITECTURES",
    "Ablation",
    "AddVector",
    "ChatPrompt",
    "ChatTemplateError",
    "Cipher",
    "Clamp",
    "DeviceError",
    "ForceAbove",
    "HeadIndexError",
    "HeadIntervention",
    "HookedModel",
    "Interchange",
    "LogitBias",
    "ModelLoadError",
    "ModelMismatchError",
    "OptionError",
    "OutputDirError",
    "PairAlignmentError",
    "PairError",
    "Prompt",
    "PromptFileError",
    "PromptPair",
    "RefusalCircuitsError",
    "ResidualDecomposition",
    "ResultFileError",
    "Scale",
    "TooFewPairsError",
    "UnsafeCheckpointError",
    "UnsupportedArchitectureError",
    "builtin_pairs",
    "check_distinct_texts",
    "check_pairs_fit",
    "clean_runs",
    "configure_process",
    "decompose_residual",
    "format_chat",
    "greedy_decode",
    "load_model",
    "make_pairs",
    "read_pairs",
    "read_prompts",
    "residual_stream",
    "run",
    "run_and_cache",
    "run_rows",
    "smollm2_gguf",
    "write_pairs",
]


__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS, globals(), __all__)
