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
