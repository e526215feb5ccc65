"""What both command lines (``python -m xquant`` and ``xqhil``) share: one error path.

* ``OneLineParser``: an argument error is one line and exit 2 (argparse prints the usage too).
* ``int_at_least`` / ``positive_seconds``: numbers checked at parse time.
* ``run_guarded``: errors the user can act on print one line and their own exit code; Ctrl-C exits 130;
  SIGTERM / SIGHUP unwind the same way (``stop_signals``) and exit 128 + the signal (143 / 129);
  anything else is a bug: one line and exit 3, with the traceback above it under ``--debug``.
* ``exiting``: a command line about to exit skips the interpreter's last garbage collections.
* ``StderrHandler``: log lines go to the ``sys.stderr`` of the moment, not the one at set-up (a caller that
  swaps it, as pytest's capture does, and closes the old one would otherwise get "I/O operation on closed
  file" from every later log line).
"""
from __future__ import annotations

import argparse
import math
import contextlib
import gc
import logging
import re
import signal
import sys
import threading
import traceback
from typing import Callable, Iterator, NoReturn, Tuple, Type

from .suggest import did_you_mean

EXIT_BAD_INPUT = 2
EXIT_INTERNAL = 3
EXIT_INTERRUPTED = 130  # 128 + SIGINT, as shells report a Ctrl-C
STOP_SIGNALS = (signal.SIGTERM, signal.SIGHUP)


class Stopped(KeyboardInterrupt):
    """SIGTERM or SIGHUP (a CI timeout, a closed terminal): raised where the program is, so it unwinds exactly
    like Ctrl-C (every ``finally`` runs: the board's agent is killed, its work folder removed)."""

    def __init__(self, signum: int) -> None:
        super().__init__(signum)
        self.signum = signum
        self.exit_code = 128 + signum
        self.name = signal.Signals(signum).name


def _raise_stopped(signum: int, _frame: object) -> None:
    for other in STOP_SIGNALS:  # a repeated signal must not cut the cleanup short (SIGKILL still ends it)
        if signal.getsignal(other) == _raise_stopped:
            signal.signal(other, signal.SIG_IGN)
    raise Stopped(signum)


@contextlib.contextmanager
def stop_signals() -> Iterator[None]:
    """SIGTERM and SIGHUP raise ``Stopped`` inside the block; the previous handlers come back after it.
    A signal ignored from the start stays ignored (``nohup``); outside the main thread (where Python cannot
    set handlers) the block runs unchanged."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = {sig: signal.signal(sig, _raise_stopped) for sig in STOP_SIGNALS
                if signal.getsignal(sig) != signal.SIG_IGN}
    try:
        yield
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, signal.SIG_DFL if handler is None else handler)  # None: set outside Python


class OneLineParser(argparse.ArgumentParser):
    def error(self, message: str) -> NoReturn:
        choice = re.search(r"invalid choice: '([^']*)' \(choose from (.*)\)", message)
        close = did_you_mean(choice.group(1), re.findall(r"'([^']*)'", choice.group(2))) if choice else None
        hint = f" Did you mean '{close}'?" if close else ""
        self.exit(EXIT_BAD_INPUT, f"{self.prog}: error: {message}.{hint} See: {self.prog} --help\n")


def int_at_least(minimum: int) -> Callable[[str], int]:
    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not an integer") from None
        if value < minimum:
            raise argparse.ArgumentTypeError(f"must be {minimum} or more, got {value}")
        return value

    parse.__name__ = f"integer >= {minimum}"
    return parse


def positive_seconds(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number of seconds") from None
    if not (math.isfinite(value) and value > 0):
        raise argparse.ArgumentTypeError(f"must be a positive number of seconds, got {text}")
    return value


def run_guarded(prog: str, func: Callable[[], int], debug: bool,
                user_errors: Tuple[Type[BaseException], ...]) -> int:
    """``func()``'s exit code; ``user_errors`` carry ``exit_code`` and ``one_line()``."""
    try:
        with stop_signals():
            return int(func())
    except user_errors as exc:
        print(f"{prog}: error: {exc.one_line()}", file=sys.stderr)  # type: ignore[attr-defined]
        return int(exc.exit_code)  # type: ignore[attr-defined]
    except Stopped as exc:
        print(f"{prog}: stopped by {exc.name}", file=sys.stderr)
        return exc.exit_code
    except KeyboardInterrupt:
        print(f"{prog}: interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED
    except Exception as exc:  # noqa: BLE001 - the one place that turns any other error into one line
        return _internal(prog, exc, debug)


def exiting(rc: int, argv) -> int:
    """``rc``, after readying the process for a quick exit when ``main`` ran as the command line (``argv`` None;
    a test calling ``main([...])`` is left as it is). At exit the interpreter collects every object: with
    onnxslim (sympy), onnxruntime and labgrid's client loaded that took 0.3-0.35 s of every command, measured.
    Frozen objects are left out of those collections; atexit handlers and module teardown still run."""
    if argv is None:
        gc.freeze()
    return rc


def _internal(prog: str, exc: BaseException, debug: bool) -> int:
    if debug:
        traceback.print_exception(type(exc), exc, exc.__traceback__, file=sys.stderr)
    text = " ".join(str(exc).split())[:300]
    print(f"{prog}: internal error: {type(exc).__name__}: {text} (rerun with --debug and report it)",
          file=sys.stderr)
    return EXIT_INTERNAL


class StderrHandler(logging.StreamHandler):
    """A StreamHandler on whatever ``sys.stderr`` is when a record is written."""

    def __init__(self) -> None:
        super().__init__(sys.stderr)

    @property
    def stream(self):  # type: ignore[override]
        return sys.stderr

    @stream.setter
    def stream(self, _value) -> None:
        pass
