"""Boards reached over SSH (paramiko): host keys verified against known_hosts by default, SFTP upload,
remote commands built from validated parts with ``shlex.quote``, a deadline per step, bounded retries.

Every blocking step runs under a watchdog that closes the connection at its deadline (one deadline per
whole transfer); a retry always uses a new connection; a lost link is reported as such, and cleanup
reconnects once to stop the agent and remove the work folder (or names the folder it had to leave).
"""
from __future__ import annotations

import logging
import os
import posixpath
import re
import shlex
import socket
import time
from typing import Callable, Optional, Sequence, TypeVar

import paramiko

from ..boards.spec import BoardSpec
from ..errors import BadInput, HilError, StepTimeout
from ..protocol import AGENT_FILE, REQUEST_FILE, check_name
from .base import ConnectionLost, Deadlines, ExecResult, Transport, clean_stderr, describe, with_retries
from .ssh_link import QuietTransport, Watchdog, close_quietly, handshake_failure, link_alive

log = logging.getLogger(__name__)
T = TypeVar("T")
MAX_STDOUT = 1 << 20
EXIT_NO_SPACE = 5  # the agent (or its wrapper) could not write in the work folder: disk full
SHELL_JOB_REPORT = re.compile(r"^(\S+: line \d+: +\d+ .*|Killed|Terminated)$")
DURING = {"run": "while the agent ran", "workdir": "while making the work folder", "cleanup": "during cleanup"}


class LinkError(ConnectionError):
    """The connection could not be made, dropped, or stopped answering; the message says which."""


def _transient(exc: BaseException) -> bool:
    return isinstance(exc, (OSError, EOFError, paramiko.SSHException)) and not isinstance(exc, HilError)


def _explain(exc: BaseException) -> str:
    return str(exc) if isinstance(exc, LinkError) else describe(exc)


class SshTransport(Transport):
    kind = "ssh"

    def __init__(self, spec: BoardSpec, deadlines: Deadlines, retries: int) -> None:
        super().__init__(spec.address or spec.name, deadlines, retries)
        self.spec = spec
        self.base = spec.workdir or "/tmp"
        self.client: Optional[paramiko.SSHClient] = None
        self.sftp: Optional[paramiko.SFTPClient] = None

    # ------------------------------------------------------------------ connection
    def _client(self):
        client = paramiko.SSHClient()
        path = self.spec.known_hosts or os.path.expanduser("~/.ssh/known_hosts")
        if self.spec.known_hosts and not os.path.isfile(path):
            raise BadInput(f"--known-hosts file '{path}' not found.")
        if os.path.isfile(path):
            client.load_host_keys(path)
        if self.spec.accept_unknown_host_key:
            log.warning("accepting an unknown host key for %s (--accept-unknown-host-key)", self.where)
            client.set_missing_host_key_policy(paramiko.AutoAddPolicy())
        else:
            client.set_missing_host_key_policy(paramiko.RejectPolicy())
        return client, path

    def _connect_once(self) -> None:
        client, known = self._client()
        key = self.spec.ssh_key
        if key and not os.path.isfile(key):
            raise BadInput(f"--ssh-key file '{key}' not found.")
        t = self.deadlines.connect
        try:  # the handshake gets 1 s more than the banner, so a silent peer is named as such
            with Watchdog(3 * t + 5, lambda: close_quietly(client)):
                client.connect(self.spec.host, port=self.spec.port, username=self.spec.user, key_filename=key,
                               allow_agent=True, look_for_keys=key is None, timeout=t + 1, banner_timeout=t,
                               auth_timeout=t, transport_factory=QuietTransport)
        except paramiko.BadHostKeyException as exc:
            close_quietly(client)
            raise HilError(f"host key of {self.where} does not match the one in '{known}' (got "
                           f"{exc.key.get_name()} {exc.key.get_fingerprint().hex()}).",
                           "If the board was reinstalled, remove its old entry (ssh-keygen -R HOST) and add "
                           "the new key; otherwise someone may be intercepting the connection.",
                           step="connect") from None
        except paramiko.AuthenticationException as exc:
            close_quietly(client)
            raise HilError(f"authentication to {self.where} failed: {exc}.",
                           "Pass --ssh-key KEY (unencrypted, or loaded into ssh-agent) whose public key is in "
                           "the board's authorized_keys.", step="connect") from None
        except (paramiko.SSHException, OSError, EOFError) as exc:
            close_quietly(client)
            if "not found in known_hosts" in str(exc):
                raise HilError(f"{self.where} is not in known_hosts '{known}'.",
                               "Add its key (ssh-keyscan -p PORT HOST >> known_hosts, then check the "
                               "fingerprint) or pass --accept-unknown-host-key.", step="connect") from None
            raise LinkError(handshake_failure(exc, client, t)) from exc
        self.client, self.sftp = client, self._open_sftp(client)

    def _open_sftp(self, client: paramiko.SSHClient) -> paramiko.SFTPClient:
        try:
            with Watchdog(self.deadlines.connect, lambda: close_quietly(client)) as dog:
                sftp = client.open_sftp()
        except (paramiko.SSHException, OSError, EOFError) as exc:
            close_quietly(client)
            if dog.expired or not link_alive(client):
                raise LinkError(f"connection lost to {self.where} while opening SFTP ({describe(exc)})") from exc
            raise HilError(f"cannot open SFTP on {self.where}: {exc}.",
                           "Enable the sftp subsystem in the board's sshd_config.", step="connect") from None
        sftp.get_channel().settimeout(self.deadlines.transfer)
        return sftp

    def open(self) -> None:
        with_retries(self._connect_once, f"connecting to {self.where}", self.retries, _transient,
                     explain=_explain)

    def _ensure_connected(self) -> None:
        """Reuse a live connection, else make a new one (one attempt)."""
        if not link_alive(self.client):
            self._drop()
            self._connect_once()

    def _drop(self) -> None:
        """Forget the connection and close it without waiting on a frozen peer."""
        sftp, client = self.sftp, self.client
        self.sftp = self.client = None
        close_quietly(sftp, client)

    def close(self) -> None:
        self._drop()

    def _bounded(self, seconds: float, doing: str, action: Callable[[], T]) -> T:
        """``action`` within ``seconds`` in all (the watchdog drops the connection at the deadline).
        ``doing`` completes the messages: "while uploading fp32.onnx"."""
        client = self.client
        with Watchdog(seconds, self._drop) as dog:
            try:
                return action()
            except LinkError:
                raise
            except Exception as exc:
                if dog.expired:
                    raise LinkError(f"{self.where} stopped answering {doing}: no end within the deadline of "
                                    f"{seconds:g} s") from exc
                if not link_alive(client):
                    raise LinkError(f"connection lost to {self.where} {doing} ({describe(exc)})") from exc
                raise

    # ------------------------------------------------------------------ commands
    def exec(self, command: str, timeout: float, step: str) -> ExecResult:
        self._ensure_connected()
        try:
            return self._bounded(timeout + self.deadlines.connect, DURING.get(step, f"during step {step}"),
                                 lambda: self._exec(command, timeout, step))
        except LinkError as exc:
            raise ConnectionLost(f"{exc}.", step=step) from exc

    def _exec(self, command: str, timeout: float, step: str) -> ExecResult:
        transport = self.client.get_transport()
        chan = transport.open_session(timeout=self.deadlines.connect)
        chan.settimeout(0.0)
        chan.exec_command(command)
        out, err = bytearray(), bytearray()
        deadline = time.monotonic() + timeout
        while True:
            busy = False
            while chan.recv_ready():
                busy = True
                chunk = chan.recv(65536)
                if len(out) < MAX_STDOUT:
                    out.extend(chunk)
            while chan.recv_stderr_ready():
                busy = True
                err.extend(chan.recv_stderr(65536))
                if len(err) > 4 * MAX_STDOUT:
                    del err[: len(err) - MAX_STDOUT]
            if chan.exit_status_ready() and not chan.recv_ready() and not chan.recv_stderr_ready():
                break
            if time.monotonic() > deadline:
                chan.close()
                raise StepTimeout(f"{step} on {self.where} ran past its deadline of {timeout:g} s.",
                                  "Raise --step-timeout or lower max_samples/repeat.", step=step,
                                  stderr=clean_stderr(err.decode("utf-8", "replace")))
            if not busy:
                time.sleep(0.02)
        code = chan.recv_exit_status()  # -1: no exit status came back (the link dropped, or a signal)
        chan.close()
        if code == -1 and not transport.is_active():
            raise LinkError(f"connection lost to {self.where} {DURING.get(step, 'during step ' + step)}")
        return ExecResult(code, out.decode("utf-8", "replace"), clean_stderr(err.decode("utf-8", "replace")))

    def _workdir_template(self) -> str:
        base = posixpath.normpath(self.base)
        base = "/" + base.lstrip("/") if base.startswith("/") else base  # normpath keeps a leading '//'
        return posixpath.join(base, "xqhil.XXXXXXXX")

    def _mktemp(self, template: str) -> str:
        """Shell words that make a private work folder from ``template`` into $d and print it."""
        return (f'umask 077 && d=$(mktemp -d {shlex.quote(template)}) && [ -d "$d" ] && '
                f'[ ! -L "$d" ] && printf "%s\\n" "$d"')

    def _set_workdir(self, template: str, printed: str, stderr: str) -> str:
        path = printed.strip()
        if not re.fullmatch(re.escape(template[:-8]) + r"[A-Za-z0-9]{8}", path):
            raise HilError(f"cannot make a work folder under '{self.base}' on {self.where}: "
                           f"{stderr or printed or 'mktemp failed'}", step="workdir")
        self.workdir = path  # remembered at once: cleanup removes it whatever happens next
        return path

    def make_workdir(self) -> str:
        template = self._workdir_template()
        result = self.exec(self._mktemp(template), self.deadlines.cleanup, "workdir")
        return self._set_workdir(template, result.stdout, result.stderr)

    def _remote(self, name: str) -> str:
        return f"{self.workdir}/{check_name(name)}"

    # ------------------------------------------------------------------ files
    def _transfer(self, verb: str, name: str, action: Callable[[], None],
                  on_error: Callable[[BaseException], None], transient: Callable[[BaseException], bool]) -> None:
        """One deadline for the whole transfer (open, write, close); each retry on a new connection."""
        def once() -> None:
            self._ensure_connected()
            try:
                self._bounded(self.deadlines.transfer, f"while {verb} {name}", action)
            except LinkError:
                raise
            except Exception as exc:
                on_error(exc)
                raise

        where = {"uploading": "to", "fetching": "from"}.get(verb, "on")
        with_retries(once, f"{verb} {name} {where} {self.where}", self.retries, transient,
                     before_retry=self._drop, explain=_explain)

    def put(self, local: str, name: str) -> None:
        remote = self._remote(name)
        self._transfer("uploading", name, lambda: self.sftp.put(local, remote, confirm=True),
                       lambda exc: self._check_space(name, os.path.getsize(local)), _transient)

    def get(self, name: str, local: str) -> None:
        def on_error(exc: BaseException) -> None:
            if isinstance(exc, FileNotFoundError):
                raise HilError(f"{name} was not produced on {self.where}.", step="fetch") from None
            if isinstance(exc, OSError):
                raise HilError(f"fetching {name} from {self.where} failed: {exc}.", step="fetch") from exc

        self._transfer("fetching", name, lambda: self.sftp.get(self._remote(name), local), on_error,
                       lambda exc: isinstance(exc, (LinkError, socket.timeout, EOFError)))

    def _check_space(self, name: str, size: int) -> None:
        """After a failed upload on a live link: is the board's disk full? (SFTP reports ENOSPC as 'Failure'.)"""
        work = shlex.quote(self.workdir)
        try:
            result = self.exec(f"rm -f -- {shlex.quote(self._remote(name))}; df -Pk -- {work} | tail -n 1",
                               self.deadlines.cleanup, "check")
            free = int(result.stdout.split()[3]) * 1024
        except (HilError, ValueError, IndexError, OSError, EOFError, paramiko.SSHException):
            return  # the original error is reported
        if free < size:
            raise HilError(f"disk full on the board: uploading {name} ({size} bytes) to {self.where} failed with "
                           f"{free} bytes free under {self.base}.",
                           "Free space on the board or pass --remote-dir on a bigger disk.", step="upload")

    # ------------------------------------------------------------------ agent and cleanup
    def agent_command(self, python: Sequence[str], *args: str) -> str:
        """The agent under a POSIX shell that records its process group (agent.pid) and, since paramiko drops
        SSH exit-signal messages, reports a killing signal as the shell's 128+N exit status."""
        interpreter = " ".join(shlex.quote(p) for p in python)
        return (f"cd {shlex.quote(self.workdir)} || exit 3; "
                f"echo $$ > agent.pid || {{ echo 'xqhil: cannot write agent.pid' >&2; exit {EXIT_NO_SPACE}; }}; "
                f"{interpreter} {shlex.quote(self._remote(AGENT_FILE))} "
                f"{' '.join(shlex.quote(a) for a in args)}; exit $?")  # not the last command: no exec

    def run_agent(self, python: Sequence[str], timeout: float) -> ExecResult:
        result = self.exec(self.agent_command(python, self._remote(REQUEST_FILE)), timeout, "run")
        return self.agent_result(result)

    def agent_result(self, result: ExecResult) -> ExecResult:
        """The agent's exit as the harness reads it: a killing signal N as -N (not the shell's 128+N)."""
        if 128 < result.returncode < 128 + 65:  # the shell's own "line 1: PID Killed COMMAND" is noise
            stderr = "\n".join(ln for ln in result.stderr.splitlines() if not SHELL_JOB_REPORT.match(ln))
            return ExecResult(128 - result.returncode, result.stdout, stderr)
        if result.returncode == -1:
            raise HilError(f"the agent on {self.where} (or its shell) was killed by a signal that did not come "
                           "back over SSH.", "Check the board's memory (OOM killer) and its kernel log.",
                           step="run", stderr=result.stderr)
        return result

    def start_agent_loop(self, python: Sequence[str]):
        """A lease's agent in one remote shell: it makes the work folder (as ``make_workdir``) and prints it,
        records its process group (agent.pid), waits for the line "go" (the host uploads the agent meanwhile:
        ``AgentLoop.go``), runs the agent with --loop, and when that ends removes the folder and exits with the
        agent's status. One shell start per lease instead of three (folder, agent, cleanup)."""
        from .ssh_loop import AgentLoop

        self._ensure_connected()
        template = self._workdir_template()
        interpreter = " ".join(shlex.quote(p) for p in python)
        command = (f'{self._mktemp(template)} && cd "$d" && echo $$ > agent.pid && read -r go && [ "$go" = go ] '
                   f'|| exit 3; {interpreter} "$d"/{AGENT_FILE} --loop; code=$?; cd / && rm -rf -- "$d"; '
                   f"exit $code")
        chan = self._bounded(self.deadlines.connect, "while starting the agent",
                             lambda: self.client.get_transport().open_session(timeout=self.deadlines.connect))
        chan.settimeout(0.0)
        chan.exec_command(command)
        loop = AgentLoop(self, chan)
        printed = loop.first_line(self.deadlines.cleanup)
        self._set_workdir(template, printed or "", loop.stderr())
        return loop

    def make_subdir(self, name: str) -> str:
        """A folder ``name`` (a plain name) in the work folder, private to the user; its remote path."""
        path = self._remote(name)
        self._transfer("making", name, lambda: self.sftp.mkdir(path, 0o700), lambda exc: None, _transient)
        return path

    def remove_subdir(self, name: str) -> None:
        """Remove the folder ``name`` of the work folder and the files in it, over SFTP: no remote shell (a
        login shell's start-up files can cost most of a second per command)."""
        path = self._remote(name)

        def remove() -> None:
            for entry in self.sftp.listdir(path):
                if "/" not in entry and entry not in (".", ".."):
                    self.sftp.remove(posixpath.join(path, entry))
            self.sftp.rmdir(path)

        self._transfer("removing", name, remove, lambda exc: None, _transient)

    def remove_workdir(self, kill: bool) -> None:
        if not self.workdir:
            return
        work = shlex.quote(self.workdir)
        command = f"rm -rf -- {work}"
        if kill:  # the agent's shell leads its own process group (sshd starts a new session)
            command = (f"if [ -f {work}/agent.pid ]; then kill -KILL -- -$(cat {work}/agent.pid) 2>/dev/null; "
                       f"fi; {command}")
        try:
            result = self._cleanup_exec(command)
        except Exception as exc:
            agent = " (the agent may still run there: its process group is in agent.pid)" if kill else ""
            raise HilError(f"the work folder {self.workdir} was left on {self.where}{agent}: {_explain(exc)}.",
                           f"Remove it by hand: rm -rf {work}", step="cleanup") from exc
        if result.returncode != 0:
            raise HilError(f"cannot remove the work folder {self.workdir} on {self.where}: {result.stderr}",
                           step="cleanup")

    def _cleanup_exec(self, command: str) -> ExecResult:
        """On the current connection if it is alive, else (or if it fails) on one new connection."""
        if link_alive(self.client):
            try:
                return self.exec(command, self.deadlines.cleanup, "cleanup")
            except ConnectionLost:
                self._drop()
        return self.exec(command, self.deadlines.cleanup, "cleanup")

    def leftovers(self) -> bool:
        if not self.workdir:
            return False
        return self.exec(f"test -e {shlex.quote(self.workdir)}", self.deadlines.cleanup, "check").returncode == 0
