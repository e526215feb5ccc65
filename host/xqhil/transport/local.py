"""Boards on this machine: ``host`` (the agent in a subprocess) and ``qemu`` (under qemu-riscv64-static)."""
from __future__ import annotations

import logging
import os
import shutil
import signal
import subprocess
import tempfile
from typing import Dict, Optional, Sequence

from ..boards.spec import check_qemu
from ..errors import HilError, StepTimeout
from ..protocol import AGENT_FILE, REQUEST_FILE, check_name
from .base import Deadlines, ExecResult, Transport, clean_stderr

log = logging.getLogger(__name__)


class LocalTransport(Transport):
    kind = "host"

    def __init__(self, where: str, deadlines: Deadlines, retries: int, base: Optional[str] = None) -> None:
        super().__init__(where, deadlines, retries)
        self.base = base or tempfile.gettempdir()

    def env(self) -> Optional[Dict[str, str]]:
        return None  # inherit

    def make_workdir(self) -> str:
        try:
            self.workdir = tempfile.mkdtemp(prefix="xqhil.", dir=self.base)
        except OSError as exc:
            raise HilError(f"cannot make a work folder under '{self.base}' on {self.where}: {exc}.",
                           step="workdir") from exc
        return self.workdir

    def _path(self, name: str) -> str:
        return os.path.join(self.workdir, check_name(name))

    def put(self, local: str, name: str) -> None:
        shutil.copyfile(local, self._path(name))

    def get(self, name: str, local: str) -> None:
        path = self._path(name)
        if not os.path.isfile(path):
            raise HilError(f"{name} was not produced on {self.where}.", step="fetch")
        shutil.copyfile(path, local)

    def run_agent(self, python: Sequence[str], timeout: float) -> ExecResult:
        command = list(python) + [self._path(AGENT_FILE), self._path(REQUEST_FILE)]
        log.debug("running %s", command)
        try:
            proc = subprocess.Popen(command, cwd=self.workdir, env=self.env(), stdin=subprocess.DEVNULL,
                                    stdout=subprocess.PIPE, stderr=subprocess.PIPE, start_new_session=True)
        except OSError as exc:
            raise HilError(f"cannot start the agent's interpreter {python[0]!r} on {self.where}: {exc.strerror}.",
                           "Check --python (or install qemu-user-static for qemu boards).", step="run") from exc
        try:
            out, err = proc.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            self._kill_group(proc.pid)
            out, err = proc.communicate()
            raise StepTimeout(f"the agent on {self.where} ran past the step deadline of {timeout:g} s and was "
                              "stopped.", "Raise --step-timeout or lower max_samples/repeat.", step="run",
                              stderr=clean_stderr(err.decode("utf-8", "replace"))) from None
        except BaseException:  # Ctrl-C, SIGTERM/SIGHUP (cli_support.Stopped): its own session gets neither
            self._kill_group(proc.pid)
            proc.wait()
            raise
        return ExecResult(proc.returncode, out.decode("utf-8", "replace"),
                          clean_stderr(err.decode("utf-8", "replace")))

    @staticmethod
    def _kill_group(pid: int) -> None:
        try:
            os.killpg(pid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass

    def remove_workdir(self, kill: bool) -> None:
        if self.workdir and os.path.isdir(self.workdir):
            shutil.rmtree(self.workdir, ignore_errors=True)

    def leftovers(self) -> bool:
        return bool(self.workdir) and os.path.exists(self.workdir)


class QemuTransport(LocalTransport):
    """The agent under qemu-riscv64-static on a riscv64 rootfs; a clean environment so nothing of the
    host's Python (venv, PYTHONPATH) leaks into the guest."""

    kind = "qemu"

    def __init__(self, where: str, deadlines: Deadlines, retries: int, rootfs: str,
                 base: Optional[str] = None) -> None:
        super().__init__(where, deadlines, retries, base)
        self.rootfs = rootfs

    def open(self) -> None:
        check_qemu(self.rootfs)

    def env(self) -> Optional[Dict[str, str]]:
        keep = {k: v for k, v in os.environ.items() if k in ("HOME", "TMPDIR", "TZ")}
        keep.update(PATH="/usr/local/bin:/usr/bin:/bin", LANG="C.UTF-8", PYTHONNOUSERSITE="1",
                    PYTHONDONTWRITEBYTECODE="1")
        return keep
