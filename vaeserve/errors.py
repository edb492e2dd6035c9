"""The one base class of errors that are the user's to fix: a bad flag, a file that is missing or
not what it should be, a model the server refuses, a server that cannot start as configured.

`vaeserve`'s command line prints a UserError as one line, `vaeserve CMD: error: MESSAGE`, and
exits with its `exit_status`; anything else is a bug and keeps its traceback. The message must
say what was wrong and, where it can, how to fix it.

This module imports nothing, so training/, export/ and service/ can all use it: their errors
subclass UserError next to their old base (`class DatasetError(UserError, ValueError)`), so
code that catches ValueError still catches them.
"""

from __future__ import annotations

__all__ = ["InputError", "UserError"]


class UserError(Exception):
    """A problem with what the user asked for or gave; exit status 2 unless a subclass says."""

    exit_status: int = 2


class InputError(UserError, ValueError):
    """A value the user gave (a flag, an image named on the command line) cannot be used."""
