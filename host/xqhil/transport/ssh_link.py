"""The SSH link itself (paramiko): a quiet handshake that names its failure, a watchdog that bounds any
blocking call by closing the connection, and closing a dead or frozen connection without waiting on it.

paramiko's transport thread logs handshake failures at ERROR with a traceback; the harness reports the
cause itself in one line, so those records are demoted to DEBUG (visible with ``-v``).
"""
from __future__ import annotations

import logging
import socket
import threading
from typing import Callable, List, Optional

import paramiko

from .base import describe

CLOSE_WAIT_S = 5.0  # the most a (possibly frozen) connection may take to close


class HandshakeError(paramiko.SSHException):
    """The peer did not complete the SSH handshake; the message says how."""


class QuietTransport(paramiko.Transport):
    """paramiko's Transport, with its error tracebacks demoted to DEBUG and the banner failure named."""

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.other_lines: List[str] = []  # what the peer sent before (instead of) an SSH banner

    def _log(self, level, msg, *args):
        if isinstance(msg, str) and msg.startswith("Banner: ") and len(self.other_lines) < 3:
            self.other_lines.append(msg[len("Banner: "):][:80])
        super()._log(logging.DEBUG if level >= logging.ERROR else level, msg, *args)

    def _check_banner(self):
        try:
            super()._check_banner()
        except paramiko.SSHException as exc:
            raise HandshakeError(self._banner_failure(exc)) from exc

    def _banner_failure(self, exc: Exception) -> str:
        if self.other_lines:
            return (f"the peer answered {self.other_lines[0]!r} instead of an SSH banner: it is not an SSH "
                    "server (check the host and port)")
        cause = exc.__cause__ or exc.__context__
        if isinstance(cause, socket.timeout):
            return f"no SSH banner within {self.banner_timeout:g} s (the peer accepted the connection, then " \
                   "stayed silent)"
        if isinstance(cause, (EOFError, ConnectionResetError, BrokenPipeError)):
            return "the peer closed the connection before sending an SSH banner"
        return str(exc)


def handshake_failure(exc: BaseException, client: paramiko.SSHClient, seconds: float) -> str:
    """One line naming why connecting failed (paramiko's own text is often a symptom, not the cause)."""
    transport = client.get_transport()
    saved = getattr(transport, "saved_exception", None) if transport is not None else None
    if isinstance(exc, HandshakeError):
        return str(exc)
    if isinstance(saved, HandshakeError):
        return str(saved)
    if "No existing session" in str(exc) or "Negotiation failed" in str(exc):
        return f"the SSH handshake did not finish within {seconds:g} s"
    return describe(exc)


class Watchdog:
    """Calls ``on_expire`` (which closes the connection) when ``seconds`` pass before the block ends;
    every paramiko call blocked on that connection then fails at once."""

    def __init__(self, seconds: float, on_expire: Callable[[], None]) -> None:
        self.seconds = seconds
        self.expired = False
        self._on_expire = on_expire
        self._timer = threading.Timer(seconds, self._fire)
        self._timer.daemon = True

    def _fire(self) -> None:
        self.expired = True
        self._on_expire()

    def __enter__(self) -> "Watchdog":
        self._timer.start()
        return self

    def __exit__(self, *exc) -> None:
        self._timer.cancel()


def close_quietly(*things: Optional[object], wait: float = CLOSE_WAIT_S) -> None:
    """Close SFTP/SSH objects in a helper thread and wait at most ``wait`` s: a frozen peer cannot hang us."""
    def close_all() -> None:
        for thing in things:
            if thing is not None:
                try:
                    thing.close()  # type: ignore[attr-defined]
                except Exception:  # closing a broken connection must not hide the real error
                    pass

    closer = threading.Thread(target=close_all, name="xqhil-ssh-close", daemon=True)
    closer.start()
    closer.join(wait)


def link_alive(client: Optional[paramiko.SSHClient]) -> bool:
    transport = client.get_transport() if client is not None else None
    return bool(transport is not None and transport.is_active())
