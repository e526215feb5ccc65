"""The one error type of the history and dashboard packages.

It carries a one-line message (what is wrong, where, what to do) and the exit code the CLI maps it to:
2 for bad input (unknown run id, a file that is not a history database, a malformed document), 3 for
infrastructure (an output folder that cannot be written, no browser for a screenshot).
"""
from __future__ import annotations

from xqhil.errors import EXIT_BAD_INPUT, XqhilError


class HistoryError(XqhilError):
    """A history or dashboard operation failed for a reason the user can act on."""

    exit_code = EXIT_BAD_INPUT

    def __init__(self, message: str, exit_code: int = EXIT_BAD_INPUT) -> None:
        super().__init__(message)
        self.exit_code = exit_code
