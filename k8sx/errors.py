"""Errors that carry their own user-facing message and exit status.

Domain code raises these instead of printing: the CLI turns them into one clear line on stderr and
the exit status, so no bad input ever ends in a traceback, whichever layer noticed it.
"""

from __future__ import annotations


class K8sxError(Exception):
    """A failure the user can act on. ``exit_code`` follows the convention 1 = failed, 2 = usage."""

    exit_code = 1

    def __init__(self, message: str, *, hint: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.hint = hint


class UsageError(K8sxError):
    """The command line itself is wrong (a bad flag value, a missing file argument)."""

    exit_code = 2
