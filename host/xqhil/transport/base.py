"""What every transport does: make a work folder, put and get files, run the agent, clean up.

Deadlines bound each step; ``with_retries`` retries transient failures a bounded number of times and
keeps the last error; the work folder is removed by the session in ``finally``.
"""
from __future__ import annotations

import logging
import math
import os
import time
from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from typing import Callable, Optional, Sequence, TypeVar

from ..errors import BadInput, HilError

log = logging.getLogger(__name__)
T = TypeVar("T")
STDERR_NOISE = ("Schema error: Trying to register schema",)
TRANSFER_ENV = "XQHIL_TRANSFER_TIMEOUT"


def transfer_deadline() -> float:
    """Seconds allowed for one whole file transfer (open, write, close): 120, or $XQHIL_TRANSFER_TIMEOUT."""
    text = os.environ.get(TRANSFER_ENV, "").strip()
    if not text:
        return 120.0
    try:
        value = float(text)
    except ValueError:
        value = math.nan
    if not (math.isfinite(value) and value > 0):
        raise BadInput(f"${TRANSFER_ENV} must be a positive number of seconds, got {text!r}.")
    return value


@dataclass(frozen=True)
class Deadlines:
    """Seconds allowed for each step."""

    connect: float = 20.0
    transfer: float = field(default_factory=transfer_deadline)
    run: float = 1800.0
    cleanup: float = 30.0


class ConnectionLost(HilError):
    """The link to the board dropped (not the agent's fault)."""


@dataclass(frozen=True)
class ExecResult:
    returncode: int  # negative: killed by that signal
    stdout: str
    stderr: str  # filtered of onnxruntime's schema-registration noise, last lines only


def clean_stderr(text: str, keep: int = 40) -> str:
    lines = [ln for ln in text.splitlines() if ln.strip() and not any(n in ln for n in STDERR_NOISE)]
    return "\n".join(lines[-keep:])


def describe(exc: BaseException) -> str:
    """``Type: message``, or only the type when the message is empty (``str(TimeoutError())`` is '')."""
    text = " ".join(str(exc).split())
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


def with_retries(action: Callable[[], T], what: str, retries: int, transient: Callable[[BaseException], bool],
                 before_retry: Optional[Callable[[], None]] = None, delay: float = 0.5,
                 explain: Callable[[BaseException], str] = describe) -> T:
    """Run ``action``; retry ``retries`` times on errors ``transient`` accepts (``before_retry`` runs before
    each retry: a new connection); raise the last one as HilError, with its cause named by ``explain``."""
    last: BaseException = RuntimeError("not attempted")
    for attempt in range(retries + 1):
        try:
            return action()
        except Exception as exc:
            if not transient(exc):
                raise
            last = exc
            again = "; retrying on a new connection" if before_retry and attempt < retries else ""
            log.info("%s failed (attempt %d of %d): %s%s", what, attempt + 1, retries + 1, explain(exc), again)
            if attempt < retries:
                time.sleep(delay * (2 ** attempt))
                if before_retry is not None:
                    before_retry()
    if isinstance(last, HilError):
        raise last
    raise HilError(f"{what} failed after {retries + 1} attempt(s): {explain(last)}") from last


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
