"""Boards reached over SSH (paramiko): host keys verified against known_hosts by default, SFTP upload,
remote commands built from validated parts with ``shlex.quote``, a deadline per step, bounded retries."""
from __future__ import annotations

import logging
import os
import re
import shlex
import socket
import time
from typing import Sequence

from ..boards.spec import BoardSpec
from ..errors import BadInput, HilError, StepTimeout
from ..protocol import AGENT_FILE, REQUEST_FILE, check_name
from .base import Deadlines, ExecResult, Transport, clean_stderr, with_retries

log = logging.getLogger(__name__)
TRANSIENT = (socket.timeout, TimeoutError, ConnectionError, EOFError, OSError)
MAX_STDOUT = 1 << 20


class SshTransport(Transport):
    kind = "ssh"

    def __init__(self, spec: BoardSpec, deadlines: Deadlines, retries: int) -> None:
        super().__init__(spec.address or spec.name, deadlines, retries)
        self.spec = spec
        self.base = spec.workdir or "/tmp"
        self.client = None
        self.sftp = None

    # ------------------------------------------------------------------ connection
    def _client(self):
        import paramiko

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
        import paramiko

        client, known = self._client()
        key = self.spec.ssh_key
        if key and not os.path.isfile(key):
            raise BadInput(f"--ssh-key file '{key}' not found.")
        t = self.deadlines.connect
        try:
            client.connect(self.spec.host, port=self.spec.port, username=self.spec.user, key_filename=key,
                           allow_agent=True, look_for_keys=key is None, timeout=t, banner_timeout=t,
                           auth_timeout=t)
        except paramiko.BadHostKeyException as exc:
            client.close()
            raise HilError(f"host key of {self.where} does not match the one in '{known}' (got "
                           f"{exc.key.get_name()} {exc.key.get_fingerprint().hex()}).",
                           "If the board was reinstalled, remove its old entry (ssh-keygen -R HOST) and add "
                           "the new key; otherwise someone may be intercepting the connection.",
                           step="connect") from None
        except paramiko.AuthenticationException as exc:
            client.close()
            raise HilError(f"authentication to {self.where} failed: {exc}.",
                           "Pass --ssh-key KEY (unencrypted, or loaded into ssh-agent) whose public key is in "
                           "the board's authorized_keys.", step="connect") from None
        except paramiko.SSHException as exc:
            client.close()
            if "not found in known_hosts" in str(exc):
                raise HilError(f"{self.where} is not in known_hosts '{known}'.",
                               "Add its key (ssh-keyscan -p PORT HOST >> known_hosts, then check the "
                               "fingerprint) or pass --accept-unknown-host-key.", step="connect") from None
            raise ConnectionError(str(exc)) from exc
        self.client = client

    def open(self) -> None:
        import paramiko

        with_retries(self._connect_once, f"connecting to {self.where}", self.retries, TRANSIENT)
        try:
            self.sftp = self.client.open_sftp()
        except (paramiko.SSHException, OSError) as exc:
            raise HilError(f"cannot open SFTP on {self.where}: {exc}.",
                           "Enable the sftp subsystem in the board's sshd_config.", step="connect") from None
        self.sftp.get_channel().settimeout(self.deadlines.transfer)

    def close(self) -> None:
        for thing in (self.sftp, self.client):
            if thing is not None:
                try:
                    thing.close()
                except Exception:  # closing a broken connection must not hide the real error
                    pass
        self.sftp = self.client = None

    # ------------------------------------------------------------------ commands
    def exec(self, command: str, timeout: float, step: str) -> ExecResult:
        if self.client is None:
            raise HilError(f"not connected to {self.where}.", step=step)
        chan = self.client.get_transport().open_session(timeout=self.deadlines.connect)
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
        code = chan.recv_exit_status()
        chan.close()
        return ExecResult(code, out.decode("utf-8", "replace"), clean_stderr(err.decode("utf-8", "replace")))

    def make_workdir(self) -> str:
        base = shlex.quote(self.base)
        result = self.exec(f"umask 077 && mktemp -d {base}/xqhil.XXXXXXXX", self.deadlines.cleanup, "workdir")
        path = result.stdout.strip()
        if result.returncode != 0 or not re.fullmatch(re.escape(self.base.rstrip("/")) + r"/xqhil\.[A-Za-z0-9]{8}",
                                                      path):
            raise HilError(f"cannot make a work folder under '{self.base}' on {self.where}: "
                           f"{result.stderr or result.stdout or 'mktemp failed'}", step="workdir")
        self.workdir = path
        return path

    def _remote(self, name: str) -> str:
        return f"{self.workdir}/{check_name(name)}"

    def put(self, local: str, name: str) -> None:
        def once() -> None:
            self.sftp.put(local, self._remote(name), confirm=True)

        with_retries(once, f"uploading {name} to {self.where}", self.retries, TRANSIENT)

    def get(self, name: str, local: str) -> None:
        def once() -> None:
            self.sftp.get(self._remote(name), local)

        try:
            with_retries(once, f"fetching {name} from {self.where}", self.retries, (socket.timeout, EOFError))
        except FileNotFoundError:
            raise HilError(f"{name} was not produced on {self.where}.", step="fetch") from None
        except OSError as exc:
            raise HilError(f"fetching {name} from {self.where} failed: {exc}.", step="fetch") from exc

    def run_agent(self, python: Sequence[str], timeout: float) -> ExecResult:
        interpreter = " ".join(shlex.quote(p) for p in python)
        work = shlex.quote(self.workdir)
        command = (f"cd {work} && echo $$ > agent.pid && exec {interpreter} "
                   f"{shlex.quote(self._remote(AGENT_FILE))} {shlex.quote(self._remote(REQUEST_FILE))}")
        return self.exec(command, timeout, "run")

    def remove_workdir(self, kill: bool) -> None:
        if not self.workdir or self.client is None:
            return
        work = shlex.quote(self.workdir)
        command = f"rm -rf -- {work}"
        if kill:  # the agent ran as the leader of its own process group (sshd starts a new session)
            command = (f"if [ -f {work}/agent.pid ]; then kill -KILL -- -$(cat {work}/agent.pid) 2>/dev/null; "
                       f"fi; {command}")
        result = self.exec(command, self.deadlines.cleanup, "cleanup")
        if result.returncode != 0:
            raise HilError(f"cannot remove the work folder {self.workdir} on {self.where}: {result.stderr}",
                           step="cleanup")

    def leftovers(self) -> bool:
        if not self.workdir or self.client is None:
            return False
        return self.exec(f"test -e {shlex.quote(self.workdir)}", self.deadlines.cleanup, "check").returncode == 0

