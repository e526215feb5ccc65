"""What every transport does: make a work folder, put and get files, run the agent, clean up.

Deadlines bound each step; ``with_retries`` retries transient failures a bounded number of times and
keeps the last error; the work folder is removed by the session in ``finally``.
"""
from __future__ import annotations

import logging
import time
from abc import ABC, abstractmethod
from dataclasses import dataclass
from typing import Callable, Sequence, Tuple, Type, TypeVar

from ..errors import HilError

log = logging.getLogger(__name__)
T = TypeVar("T")
STDERR_NOISE = ("Schema error: Trying to register schema",)


@dataclass(frozen=True)
class Deadlines:
    """Seconds allowed for each step."""

    connect: float = 20.0
    transfer: float = 120.0
    run: float = 1800.0
    cleanup: float = 30.0


@dataclass(frozen=True)
class ExecResult:
    returncode: int  # negative: killed by that signal (-1: unknown signal over SSH)
    stdout: str
    stderr: str  # filtered of onnxruntime's schema-registration noise, last lines only


def clean_stderr(text: str, keep: int = 40) -> str:
    lines = [ln for ln in text.splitlines() if ln.strip() and not any(n in ln for n in STDERR_NOISE)]
    return "\n".join(lines[-keep:])


def with_retries(action: Callable[[], T], what: str, retries: int,
                 transient: Tuple[Type[BaseException], ...], delay: float = 0.5) -> T:
    """Run ``action``; retry ``retries`` times on ``transient`` errors; raise the last one as HilError."""
    last: BaseException = RuntimeError("not attempted")
    for attempt in range(retries + 1):
        try:
            return action()
        except transient as exc:
            last = exc
            log.info("%s failed (attempt %d of %d): %s", what, attempt + 1, retries + 1, exc)
            if attempt < retries:
                time.sleep(delay * (2 ** attempt))
    if isinstance(last, HilError):
        raise last
    raise HilError(f"{what} failed after {retries + 1} attempt(s): {type(last).__name__}: {last}") from last


class Transport(ABC):
    """One board connection. ``workdir`` is the per-run folder on the board, made by ``make_workdir``."""

    kind = "abstract"

    def __init__(self, where: str, deadlines: Deadlines, retries: int) -> None:
        self.where = where
        self.deadlines = deadlines
        self.retries = retries
        self.workdir: str = ""

    def open(self) -> None:  # noqa: B027 - optional hook: local transports have nothing to connect
        """Connect (nothing to do for local transports)."""

    def close(self) -> None:  # noqa: B027 - optional hook
        """Disconnect."""

    @abstractmethod
    def make_workdir(self) -> str: ...

    @abstractmethod
    def put(self, local: str, name: str) -> None: ...

    @abstractmethod
    def get(self, name: str, local: str) -> None: ...

    @abstractmethod
    def run_agent(self, python: Sequence[str], timeout: float) -> ExecResult:
        """Run ``python AGENT_FILE REQUEST_FILE`` in the work folder within ``timeout`` seconds."""

    @abstractmethod
    def remove_workdir(self, kill: bool) -> None:
        """Remove the work folder; with ``kill``, first end whatever the agent left running."""

    @abstractmethod
    def leftovers(self) -> bool:
        """True when the work folder still exists on the board (used by tests and cleanup checks)."""
