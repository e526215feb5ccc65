"""The one error type of the history and dashboard packages.

It carries a one-line message (what is wrong, where, what to do) and the exit code the CLI maps it to:
2 for bad input (unknown run id, a file that is not a history database, a malformed document).
"""
from __future__ import annotations


class HistoryError(Exception):
    """A history or dashboard operation failed for a reason the user can act on."""

    exit_code = 2

    def __init__(self, message: str, exit_code: int = 2) -> None:
        self.message = " ".join(message.split())
        self.exit_code = exit_code
        super().__init__(self.message)
