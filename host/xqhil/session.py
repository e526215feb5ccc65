"""One visit to a board: deploy -> run the agent -> fetch -> clean up (always, in ``finally``).

Uploads are checked on the board (the request carries every file's sha256, the agent verifies them before
running); fetched outputs are checked against the sha256 the agent reports.
"""
from __future__ import annotations

import json
import logging
import os
import tempfile
import time
from dataclasses import dataclass, field
from typing import Callable, Dict, List, Optional, Sequence

import numpy as np

from .boards.spec import BoardSpec
from .errors import BadInput, HilError
from .paths import agent_path
from .protocol import (AGENT_FILE, INPUTS_FILE, REQUEST_FILE, RESPONSE_FILE, Request, Task, check_applied,
                       check_response, check_task_entry, sha256_file)
from .transport import Deadlines, Transport, make_transport

log = logging.getLogger(__name__)
Progress = Callable[[str], None]


@dataclass
class BoardRun:
    """What came back from the board."""

    response: dict
    outputs: Dict[str, List[np.ndarray]]  # accuracy task id -> outputs in graph order
    output_names: Dict[str, List[str]]
    timings: Dict[str, float] = field(default_factory=dict)  # seconds per step

    @property
    def device(self) -> dict:
        return self.response.get("device") or {}

    def task(self, task_id: str) -> dict:
        return self.response["tasks"].get(task_id) or {"ok": False, "error": "task did not run"}

    def model(self, model_id: str) -> dict:
        return self.response["models"].get(model_id) or {"ok": False, "error": "model was not loaded"}


def write_inputs(path: str, arrays: Sequence[np.ndarray]) -> None:
    np.savez(path, **{f"in{i}": np.ascontiguousarray(a) for i, a in enumerate(arrays)})


def load_outputs(path: str, where: str = "the board") -> List[np.ndarray]:
    """The arrays out0, out1, ... of an outputs npz; anything else (object arrays, text, a broken zip) is a
    malformed response (HilError)."""
    name = os.path.basename(path)
    try:
        with np.load(path, allow_pickle=False) as data:
            keys = [f"out{i}" for i in range(len(data.files))]
            if sorted(data.files) != sorted(keys):
                raise HilError(f"{name} from {where} holds arrays {sorted(data.files)}, not out0..out{len(keys) - 1}.",
                               step="fetch")
            arrays = [data[k] for k in keys]
    except HilError:
        raise
    except Exception as exc:  # numpy raises ValueError (object arrays), BadZipFile, OSError, ...
        raise HilError(f"{name} from {where} is not a numeric outputs file: {type(exc).__name__}: {exc}.",
                       step="fetch") from exc
    for key, array in zip(keys, arrays):
        if not (np.issubdtype(array.dtype, np.number) or array.dtype == np.bool_):
            raise HilError(f"{name} from {where}: array {key} has dtype {array.dtype}, not numeric.", step="fetch")
    return arrays


def single_file(model_id: str, path: str, scratch: str) -> str:
    """``path`` as one self-contained file for the board: a model that keeps its weights in external data
    files (``model.onnx.data``) is re-saved with them inline under ``scratch`` (the board gets one file per
    model; external names never become remote paths)."""
    import onnx
    from onnx.external_data_helper import uses_external_data

    graph_only = onnx.load(path, load_external_data=False)
    if not any(uses_external_data(t) for t in graph_only.graph.initializer):
        return path
    inline = os.path.join(scratch, f"{model_id}-inline.onnx")
    try:
        onnx.save(onnx.load(path), inline)
    except ValueError as exc:  # protobuf's 2 GB limit
        raise BadInput(f"model '{path}' cannot be made one file for the board: {exc}.",
                       "The board takes one file per model; verify a model under 2 GB.") from exc
    return inline


def _agent_failure(transport: Transport, code: int, stderr: str) -> HilError:
    tail = stderr.strip().splitlines()[-3:] if stderr.strip() else []
    detail = f": {' | '.join(tail)}" if tail else ""
    if code == 5 or "No space left on device" in stderr:  # 5: the agent's "no space" exit (docs/protocol.md)
        return HilError(f"disk full on the board: the agent on {transport.where} could not write in its work "
                        f"folder {transport.workdir}{detail}.",
                        "Free space on the board or pass --remote-dir on a bigger disk.", step="run", stderr=stderr)
    how = f"was killed by signal {-code}" if code < 0 else f"exited with code {code}"
    if code in (137, 143):
        how = f"was killed (exit code {code})"
    return HilError(f"the agent on {transport.where} {how} before writing its response{detail}.",
                    "Check that the board's Python has numpy and onnxruntime (--python) and enough memory.",
                    step="run", stderr=stderr)


class BoardSession:
    """Deploys files to one board and runs one request there."""

    def __init__(self, spec: BoardSpec, deadlines: Deadlines, retries: int = 2,
                 progress: Optional[Progress] = None) -> None:
        self.spec = spec
        self.deadlines = deadlines
        self.transport = make_transport(spec, deadlines, retries)
        self.progress = progress or (lambda stage: None)
        self.timings: Dict[str, float] = {}

    def _timed(self, step: str, action: Callable[[], object]) -> object:
        start = time.perf_counter()
        try:
            return action()
        except (HilError, BadInput):
            raise
        except Exception as exc:  # a transport library's own error types (paramiko, OSError, ...)
            raise HilError(f"{step} on {self.transport.where} failed: {type(exc).__name__}: {exc}.",
                           step=step) from exc
        finally:
            self.timings[f"{step}_s"] = self.timings.get(f"{step}_s", 0.0) + time.perf_counter() - start

    def run(self, models: Dict[str, str], input_names: Sequence[str], inputs: Sequence[np.ndarray],
            tasks: Sequence[Task], providers: Optional[Sequence[str]] = None, threads: int = 0,
            environment: Optional[Dict[str, str]] = None,
            provider_options: Optional[Dict[str, Dict[str, str]]] = None,
            batch_axes: Optional[Sequence[Optional[int]]] = None) -> BoardRun:
        """``inputs`` hold samples on axis 0; ``batch_axes`` says where each input's model stacks them
        (reference.input_layout; None: axis 0 for all)."""
        with tempfile.TemporaryDirectory(prefix="xqhil-host-") as scratch:
            files = self.agent_files()
            files.update({f"{model_id}.onnx": single_file(model_id, path, scratch)
                          for model_id, path in models.items()})
            if tasks:
                files[INPUTS_FILE] = os.path.join(scratch, INPUTS_FILE)
                write_inputs(files[INPUTS_FILE], inputs)
            request = Request(models={m: f"{m}.onnx" for m in models}, input_names=list(input_names),
                              tasks=list(tasks), providers=list(providers) if providers else None,
                              threads=threads, deadline_s=max(1.0, self.deadlines.run - 5.0),
                              files={name: sha256_file(path) for name, path in files.items()},
                              environment=dict(environment or {}), provider_options=dict(provider_options or {}),
                              batch_axes=None if batch_axes is None else list(batch_axes))
            files[REQUEST_FILE] = os.path.join(scratch, REQUEST_FILE)
            with open(files[REQUEST_FILE], "w", encoding="utf-8") as handle:
                json.dump(request.as_dict(), handle, indent=1)
            return self._visit(files, tasks, scratch, request)

    def agent_files(self) -> Dict[str, str]:
        """The agent goes with every request (a lease's agent is already running: none)."""
        return {AGENT_FILE: agent_path()}

    def _visit(self, files: Dict[str, str], tasks: Sequence[Task], scratch: str, request: Request) -> BoardRun:
        transport, clean = self.transport, False
        try:
            self.progress("connect")
            self._timed("connect", transport.open)
            self._timed("connect", transport.make_workdir)
            self.progress("upload")
            for name, path in files.items():
                self._timed("upload", lambda n=name, p=path: transport.put(p, n))
            self.progress("run agent")
            result = self._timed("run", lambda: transport.run_agent(self.spec.python, self.deadlines.run))
            self.progress("fetch")
            response = self._fetch_response(result, scratch)
            check_applied(response, request, transport.where)
            outputs, names = self._fetch_outputs(response, tasks, scratch)
            clean = True
            return BoardRun(response, outputs, names, self.timings)
        finally:
            self._cleanup(kill=not clean)

    def _fetch_response(self, result, scratch: str) -> dict:
        local = os.path.join(scratch, RESPONSE_FILE)
        try:
            self._timed("fetch", lambda: self.transport.get(RESPONSE_FILE, local))
        except (HilError, OSError):
            raise _agent_failure(self.transport, result.returncode, result.stderr) from None
        try:
            with open(local, encoding="utf-8") as handle:
                response = json.load(handle)
        except (ValueError, OSError) as exc:  # UnicodeDecodeError is a ValueError
            raise HilError(f"the agent on {self.transport.where} wrote a {RESPONSE_FILE} that is not valid JSON "
                           f"(exit code {result.returncode}): {type(exc).__name__}: {str(exc)[:200]}.",
                           "Check the board's storage, and that --python runs the agent unchanged.",
                           step="fetch", stderr=result.stderr) from None
        if result.stderr:
            log.debug("agent stderr on %s:\n%s", self.transport.where, result.stderr)
        return check_response(response, self.transport.where)

    def _fetch_outputs(self, response: dict, tasks: Sequence[Task], scratch: str):
        outputs, names, where = {}, {}, self.transport.where
        for task in tasks:
            entry = check_task_entry(response["tasks"].get(task.id), task, where)
            if task.mode != "accuracy" or not entry.get("ok"):
                continue
            local = os.path.join(scratch, task.output_file)
            self._timed("fetch", lambda t=task, p=local: self.transport.get(t.output_file, p))
            if sha256_file(local) != entry["output"]["sha256"]:
                raise HilError(f"{task.output_file} fetched from {where} does not match the "
                               "checksum the agent reported.", "Retry; check the link.", step="fetch")
            outputs[task.id] = load_outputs(local, where)
            names[task.id] = list(entry["output"]["names"])
            if len(names[task.id]) != len(outputs[task.id]):
                raise HilError(f"{task.output_file} from {where} holds {len(outputs[task.id])} array(s) but the "
                               f"response names {len(names[task.id])} output(s).", step="fetch")
        return outputs, names

    def _cleanup(self, kill: bool) -> None:
        self.progress("cleanup")
        start = time.perf_counter()
        try:
            self.transport.remove_workdir(kill=kill)
        except Exception as exc:  # never mask the error that got us here
            log.warning("cleanup on %s failed: %s", self.transport.where, exc)
        finally:
            self.transport.close()
            self.timings["cleanup_s"] = time.perf_counter() - start
