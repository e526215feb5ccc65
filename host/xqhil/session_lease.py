"""A board session kept for many runs (a farm lease): one SSH connection, one work folder holding the agent,
and one agent started with ``--loop`` (numpy and onnxruntime imported once, not per run).

``start`` is the probe (connect, upload the agent, start it, read its fingerprint). Each ``run`` uploads its
files into a fresh subfolder, has the running agent handle the request there, fetches and checks the results
as a ``BoardSession`` does, and removes the subfolder. ``close`` ends the agent, kills its process group if
needed and removes the work folder. A run with an ``environment`` (applied before onnxruntime is imported)
gets an agent of its own. Only SSH boards (labgrid places are SSH boards) keep an agent running."""
from __future__ import annotations

import logging
from typing import Dict, Optional, Sequence

import numpy as np

from .boards.spec import BoardSpec
from .paths import agent_path
from .protocol import AGENT_FILE, REQUEST_FILE, Request, Task, check_applied
from .session import BoardRun, BoardSession
from .transport import Deadlines

log = logging.getLogger(__name__)


class AgentLease(BoardSession):
    def __init__(self, spec: BoardSpec, deadlines: Deadlines, retries: int = 2) -> None:
        super().__init__(spec, deadlines, retries)
        self.loop = None
        self.root = ""
        self.runs = 0

    def start(self) -> Dict[str, object]:
        """Connect, put the agent in a new work folder, start it; its hello: protocol, agent_version, device."""
        t = self.transport
        self._timed("connect", t.open)
        self.loop = self._timed("connect", lambda: t.start_agent_loop(self.spec.python))
        self.root = t.workdir
        self._timed("upload", lambda: t.put(agent_path(), AGENT_FILE))
        self._timed("run", self.loop.go)
        return self._timed("run", lambda: self.loop.hello(self.deadlines.run))

    def run(self, models: Dict[str, str], input_names: Sequence[str], inputs: Sequence[np.ndarray],
            tasks: Sequence[Task], providers: Optional[Sequence[str]] = None, threads: int = 0,
            environment: Optional[Dict[str, str]] = None,
            provider_options: Optional[Dict[str, Dict[str, str]]] = None,
            batch_axes: Optional[Sequence[Optional[int]]] = None) -> BoardRun:
        if environment or self.loop is None:
            own = BoardSession(self.spec, self.deadlines, self.retries, self.progress)
            return own.run(models, input_names, inputs, tasks, providers, threads, environment, provider_options,
                           batch_axes)
        self.timings = {}
        return super().run(models, input_names, inputs, tasks, providers, threads, environment, provider_options,
                           batch_axes)

    def agent_files(self) -> Dict[str, str]:
        return {}

    def _visit(self, files: Dict[str, str], tasks: Sequence[Task], scratch: str, request: Request) -> BoardRun:
        t = self.transport
        self.runs += 1
        folder = f"run{self.runs:04d}"
        try:
            t.workdir = self._timed("upload", lambda: t.make_subdir(folder))
            for name, path in files.items():
                self._timed("upload", lambda n=name, p=path: t.put(p, n))
            result = self._timed("run", lambda: self.loop.request(f"{folder}/{REQUEST_FILE}", self.deadlines.run))
            response = self._fetch_response(result, scratch)
            check_applied(response, request, t.where)
            outputs, names = self._fetch_outputs(response, tasks, scratch)
            return BoardRun(response, outputs, names, self.timings)
        finally:
            t.workdir = self.root
            self._remove(folder)

    def _remove(self, folder: str) -> None:
        """Remove a run's subfolder; a failure is logged (the lease's end removes the whole work folder)."""
        try:
            self._timed("cleanup", lambda: self.transport.remove_subdir(folder))
        except Exception as exc:  # never mask the error that got us here
            log.warning("removing %s on %s failed: %s", folder, self.transport.where, exc)

    def close(self) -> None:
        """End the agent and remove the work folder (killing the agent's process group if it still runs)."""
        if self.loop is not None and self.loop.close(self.deadlines.cleanup):
            self.transport.workdir = ""  # the agent's shell removed it
        if self.transport.workdir:
            try:
                self.transport.remove_workdir(kill=True)
            except Exception as exc:  # never mask the error that got us here
                log.warning("cleanup on %s failed: %s", self.transport.where, exc)
        self.transport.close()
