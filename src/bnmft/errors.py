"""The one error type for bad input.

Every check of user input (arguments, option values, files, expressions, configurations) raises
:class:`InputError`, a :class:`ValueError` subclass whose message names the argument and what is allowed. The CLI
turns exactly this type into a one-line message and exit status 2; any other exception is a bug and keeps its
traceback.
"""

from __future__ import annotations


class InputError(ValueError):
    """Bad input: the message names the argument and what is allowed."""


__all__ = ["InputError"]
