"""One agent started with ``--loop`` on an SSH board (a farm lease), in a shell that made its work folder and
removes it when the agent ends (``SshTransport.start_agent_loop``): the agent imports numpy and onnxruntime
once, says hello (its fingerprint), then takes request after request on its stdin, one answer line each.

Every wait is bounded: a deadline per request (``StepTimeout``), and the transport's watchdog, which drops a
frozen connection. An agent that ended (killed, crashed, deadline) answers no more: the caller ends the lease,
whose cleanup kills the agent's process group and removes its work folder."""
from __future__ import annotations

import json
import time
from typing import Dict, Optional

from ..errors import HilError, StepTimeout
from .base import ConnectionLost, ExecResult, clean_stderr
from .ssh_link import link_alive

MAX_BUFFER = 1 << 20


class AgentLoop:
    def __init__(self, transport, chan) -> None:
        self.transport, self.chan = transport, chan
        self.out, self.err = bytearray(), bytearray()
        self.ended = False
        self.busy = True  # starting, or handling a request: it would not read the end of its input now
        self.started = time.monotonic()

    def _pump(self) -> bool:
        """Read what the agent sent; True when anything came."""
        busy = False
        while self.chan.recv_ready():
            busy = True
            self.out.extend(self.chan.recv(65536))
        while self.chan.recv_stderr_ready():
            busy = True
            self.err.extend(self.chan.recv_stderr(65536))
            if len(self.err) > 4 * MAX_BUFFER:
                del self.err[: len(self.err) - MAX_BUFFER]
        return busy

    def _line(self, deadline: float, step: str) -> Optional[str]:
        """The agent's next line on stdout, or None once its shell has ended."""
        while True:
            newline = self.out.find(b"\n")
            if newline >= 0:
                line = bytes(self.out[:newline]).decode("utf-8", "replace")
                del self.out[: newline + 1]
                return line
            busy = self._pump()
            if not busy and self.chan.exit_status_ready() and not self.chan.recv_ready():
                self.ended = True
                return None
            if time.monotonic() > deadline:
                raise StepTimeout(f"{step} on {self.transport.where} ran past its deadline of "
                                  f"{deadline - self.started:g} s.",
                                  "Raise --step-timeout or lower max_samples/repeat.", step=step,
                                  stderr=self.stderr())
            if not busy:
                time.sleep(0.01)

    def _message(self, deadline: float, step: str) -> Optional[Dict]:
        """The agent's next JSON line (other lines are skipped), or None once it has ended."""
        while True:
            line = self._line(deadline, step)
            if line is None:
                return None
            try:
                message = json.loads(line)
            except ValueError:
                continue
            if isinstance(message, dict):
                return message

    def first_line(self, timeout: float) -> Optional[str]:
        """The shell's first line (the work folder it made), or None when it ended without one."""
        self.started = time.monotonic()
        return self.transport._bounded(timeout + self.transport.deadlines.connect, "while making the work folder",
                                       lambda: self._line(self.started + timeout, "workdir"))

    def go(self) -> None:
        """The agent file is in place: the shell starts the agent."""
        self.transport._bounded(self.transport.deadlines.connect, "while starting the agent",
                                lambda: self.chan.sendall(b"go\n"))

    def stderr(self) -> str:
        text = clean_stderr(self.err.decode("utf-8", "replace"))
        self.err.clear()
        return text

    def _wait(self, timeout: float, step: str, doing: str, want) -> Optional[Dict]:
        self.started = time.monotonic()
        deadline = self.started + timeout

        def until() -> Optional[Dict]:
            while True:
                message = self._message(deadline, step)
                if message is None or want(message):
                    return message

        return self.transport._bounded(timeout + self.transport.deadlines.connect, doing, until)

    def _ended(self) -> ExecResult:
        code = self.chan.recv_exit_status()  # -1: no exit status came back (the link dropped, or a signal)
        if code == -1 and not link_alive(self.transport.client):
            raise ConnectionLost(f"connection lost to {self.transport.where} while the agent ran.", step="run")
        return self.transport.agent_result(ExecResult(code, "", self.stderr()))

    def hello(self, timeout: float) -> Dict:
        """The agent's fingerprint line ({"protocol", "agent_version", "device"}); HilError if it ended."""
        message = self._wait(timeout, "run", "while the agent started", lambda m: "protocol" in m)
        self.busy = message is None
        if message is None:
            result = self._ended()
            tail = " | ".join(result.stderr.splitlines()[-3:])
            raise HilError(f"the agent on {self.transport.where} ended (exit code {result.returncode}) before "
                           f"saying hello{': ' + tail if tail else ''}.",
                           "Check that the board's Python has numpy and onnxruntime (--python).", step="run",
                           stderr=result.stderr)
        return message

    def request(self, name: str, timeout: float) -> ExecResult:
        """Have the agent handle ``name`` (FOLDER/request.json in its work folder); its exit code, or the
        agent's own exit (a killing signal N as -N) when it ended instead of answering."""
        if self.ended:
            return self._ended()
        self.stderr()  # what an earlier request left
        self.busy = True
        self.transport._bounded(self.transport.deadlines.connect, "while sending a request",
                                lambda: self.chan.sendall((name + "\n").encode()))
        message = self._wait(timeout, "run", "while the agent ran", lambda m: m.get("done") == name)
        if message is None:
            return self._ended()
        self.busy = False
        return ExecResult(int(message.get("exit", 3)), "", self.stderr())

    def close(self, wait: float) -> bool:
        """End the agent's input; True when its shell then ended with a status within ``wait`` s (it has
        removed the work folder itself), False when the caller must kill and clean up (at once when the agent
        is still starting or handling a request: a stopped farm does not wait for it)."""
        try:
            if self.busy and not self.ended:
                return False
            if not self.ended:
                self.chan.shutdown_write()
            deadline = time.monotonic() + wait
            while not self.chan.exit_status_ready() and time.monotonic() < deadline:
                time.sleep(0.01)
            return self.chan.exit_status_ready() and self.chan.recv_exit_status() != -1
        except (OSError, EOFError):
            return False
        finally:
            self.chan.close()
