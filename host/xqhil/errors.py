"""The harness's few exception types. Only the CLI maps them to exit codes.

Exit codes: 0 ok (pass or warn), 1 verification failed, 2 bad input, 3 board or infrastructure failure.
"""
from __future__ import annotations

from typing import Optional

EXIT_OK, EXIT_FAILED, EXIT_BAD_INPUT, EXIT_INFRA = 0, 1, 2, 3


class XqhilError(Exception):
    """Base class: a one-line message (what, where) and a hint (what to do)."""

    exit_code = EXIT_INFRA

    def __init__(self, message: str, hint: str = "") -> None:
        self.message = message
        self.hint = hint
        super().__init__(self.one_line())

    def one_line(self) -> str:
        text = " ".join(str(self.message).split())
        if self.hint:
            text = f"{text} {' '.join(self.hint.split())}"
        return text


class BadInput(XqhilError):
    """The command line, a config, an inventory or a data file is wrong (exit 2)."""

    exit_code = EXIT_BAD_INPUT


class HilError(XqhilError):
    """The board or the infrastructure failed: connection, transfer, agent, deadline (exit 3).

    ``step`` names the step that failed; ``stderr`` keeps the tail of the agent's stderr when there is one.
    """

    exit_code = EXIT_INFRA

    def __init__(self, message: str, hint: str = "", step: str = "", stderr: Optional[str] = None) -> None:
        self.step = step
        self.stderr = stderr
        super().__init__(message, hint)


class StepTimeout(HilError):
    """A step ran past its deadline."""
