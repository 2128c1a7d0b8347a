"""Errors a user can act on.

Every failure that bad input can cause is raised as a subclass of
:class:`RefusalCircuitsError` whose message names the problem *and* the fix.
The CLI catches this base class and prints the message without a traceback;
anything else escaping is a bug in the toolkit.
"""

from __future__ import annotations


class RefusalCircuitsError(Exception):
    """Base class of every error caused by input the user can correct."""


class ModelLoadError(RefusalCircuitsError):
    """The model could not be found, loaded or hooked."""


class UnsupportedArchitectureError(ModelLoadError):
    """The architecture loads, but the toolkit cannot give exact numbers on it."""


class ChatTemplateError(RefusalCircuitsError):
    """The tokenizer has no chat template, or the template hides the instruction."""


class PromptFileError(RefusalCircuitsError):
    """A prompt or pair file is missing, empty or malformed."""


class PairAlignmentError(RefusalCircuitsError):
    """A harmful prompt and its control cannot be aligned token by token."""


class HeadIndexError(RefusalCircuitsError, IndexError):
    """A layer or head index is outside the model."""


class UnsafeCheckpointError(ModelLoadError):
    """The weights are pickled (``.bin``/``.pt``/...), and loading pickles was not allowed."""


class DeviceError(ModelLoadError):
    """The torch device does not exist on this machine."""


class OptionError(RefusalCircuitsError):
    """An option's value is out of range (a count of zero, a reversed band, ...)."""


class OutputDirError(RefusalCircuitsError):
    """An output or cache directory cannot be created or written."""


class PairError(RefusalCircuitsError):
    """A prompt pair carries no contrast (identical prompts) or does not fit the model."""


class TooFewPairsError(RefusalCircuitsError):
    """Too few pairs for the statistics asked for (no p value can reach the level)."""


class ResultFileError(RefusalCircuitsError):
    """A result file written by an earlier run (``audit.json``, ...) is missing or corrupted."""


class ModelMismatchError(RefusalCircuitsError):
    """Something fitted on one model (a saved Latent Guard, ...) was given another model."""
