"""Host side of the agent's wire protocol (version 2: per-input batch axes).

The protocol is documented in one place: the docstring of ``device/xqhil_agent.py`` (docs/protocol.md
explains it). This module builds requests and checks responses; a version mismatch is a clear error.
"""
from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass, field
from typing import Any, Dict, List, Optional, Sequence

from .errors import HilError

PROTOCOL_VERSION = 2
NO_BATCH = "none"  # inputs.batch_axes: the input has no batch axis (one sample per run)
REQUEST_FILE = "request.json"
RESPONSE_FILE = "response.json"
INPUTS_FILE = "inputs.npz"
AGENT_FILE = "xqhil_agent.py"
SAFE_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$")
PERF_GROUP = "latency"  # the interleave group of the standard performance tasks
LATENCY_KEYS = ("first_ms", "mean_ms", "p50_ms", "p90_ms", "p99_ms", "min_ms", "max_ms", "std_ms")


@dataclass(frozen=True)
class Task:
    """One unit of work for the agent: every sample (accuracy) or warm-up + timed runs (performance)."""

    id: str
    model: str
    mode: str
    batch_size: int = 1
    warmup: int = 5
    repeat: int = 20
    interleave: Optional[str] = None  # performance tasks of one group are timed in alternation (agent 0.4+)
    min_time_s: float = 0.0  # timed runs go on past ``repeat`` until this much timing (agent 0.4+)

    @property
    def output_file(self) -> str:
        return f"out-{self.id}.npz"

    def as_dict(self) -> Dict[str, Any]:
        body: Dict[str, Any] = {"id": self.id, "model": self.model, "mode": self.mode,
                                "batch_size": self.batch_size}
        if self.mode == "accuracy":
            body["output"] = self.output_file
        else:
            body.update(warmup=self.warmup, repeat=self.repeat)
            if self.interleave:
                body["interleave"] = self.interleave
            if self.min_time_s:
                body["min_time_s"] = float(self.min_time_s)
        return body


@dataclass
class Request:
    models: Dict[str, str]  # model id -> file name in the work folder
    input_names: List[str]
    tasks: List[Task]
    providers: Optional[List[str]] = None
    threads: int = 0
    deadline_s: float = 600.0
    files: Dict[str, str] = field(default_factory=dict)  # file name -> sha256
    environment: Dict[str, str] = field(default_factory=dict)  # set on the board before onnxruntime loads
    provider_options: Dict[str, Dict[str, str]] = field(default_factory=dict)  # provider -> {key: value}
    batch_axes: Optional[List[Optional[int]]] = None  # per input: where samples stack, None: no batch axis

    def as_dict(self) -> Dict[str, Any]:
        return {
            "protocol": PROTOCOL_VERSION, "deadline_s": float(self.deadline_s), "files": dict(self.files),
            "providers": list(self.providers) if self.providers else None, "threads": int(self.threads),
            "models": dict(self.models), "inputs": {"file": INPUTS_FILE, "names": list(self.input_names),
                                              "batch_axes": wire_axes(self.batch_axes)},
            "tasks": [t.as_dict() for t in self.tasks], "response": RESPONSE_FILE,
            "environment": dict(self.environment), "provider_options": dict(self.provider_options),
        }


def wire_axes(axes: Optional[Sequence[Optional[int]]]) -> Optional[List[Any]]:
    """Batch axes as the request carries them: an int per input, NO_BATCH for none; None when not given."""
    return None if axes is None else [NO_BATCH if a is None else int(a) for a in axes]


def check_applied(response: Dict[str, Any], request: Request, where: str) -> None:
    """An agent that did not echo the requested environment / provider options did not apply them."""
    device = response.get("device") or {}
    for key in ("environment", "provider_options"):
        wanted = getattr(request, key)
        if wanted and device.get(key) != wanted:
            raise HilError(f"the agent on {where} did not apply the requested {key.replace('_', ' ')} "
                           f"(it echoed {device.get(key)!r}).", "Deploy the device/xqhil_agent.py that ships "
                           "with this xqhil (0.2 or later).", step="run")


def check_name(name: str) -> str:
    """A file name the harness may use inside the remote work folder (never a path)."""
    if not SAFE_NAME.match(name) or ".." in name:
        raise ValueError(f"'{name}' is not a plain file name")
    return name


def sha256_file(path: str) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def standard_tasks(warmup: int, repeat: int, batch_size: int = 1,
                   models: Sequence[str] = ("fp32", "int8"), perf_batch: int = 1,
                   min_time_s: float = 0.0) -> List[Task]:
    """Accuracy mode for each model, then performance mode for each model (batches of ``perf_batch``: 1,
    or the batch a model fixes), the models' timed runs interleaved so board-wide drift hits them alike
    (the INT8/FP32 latency ratio of one run is then a within-run control, docs/history.md)."""
    tasks = [Task(f"{m}-accuracy", m, "accuracy", batch_size) for m in models]
    tasks += [Task(f"{m}-performance", m, "performance", perf_batch, warmup, repeat, PERF_GROUP, min_time_s)
              for m in models]
    return tasks


def check_response(response: Any, where: str) -> Dict[str, Any]:
    """Validate the agent's response; request-level errors become ``HilError`` (exit 3)."""
    if not isinstance(response, dict):
        raise HilError(f"the agent on {where} wrote a response that is not a JSON object.", step="run")
    version = response.get("protocol")
    if version != PROTOCOL_VERSION:
        raise HilError(
            f"protocol mismatch on {where}: the agent speaks version {version!r}, the host speaks "
            f"{PROTOCOL_VERSION}.", "Deploy the device/xqhil_agent.py that ships with this xqhil.", step="run")
    error = response.get("error")
    if error:
        kind = error.get("type", "Error") if isinstance(error, dict) else "Error"
        text = error.get("message", str(error)) if isinstance(error, dict) else str(error)
        hints = {
            "ChecksumMismatch": "The upload was corrupted; check the board's storage and retry.",
            "DeadlineExceeded": "Raise --step-timeout, or use fewer samples (verify_parameters.max_samples).",
            "DiskFull": "Free space on the board or pass --remote-dir on a bigger disk.",
            "ProviderUnavailable": "Pick a provider the board has (see `xqhil boards --probe`).",
        }
        raise HilError(f"the agent on {where} failed ({kind}): {str(text).rstrip('.')}.", hints.get(kind, ""),
                       step="run")
    for key in ("models", "tasks", "device"):
        if not isinstance(response.get(key), dict):
            raise HilError(f"the agent on {where} wrote a response without '{key}'.", step="run")
    for model_id, entry in response["models"].items():
        if not isinstance(entry, dict):
            raise HilError(f"the agent on {where} wrote a response whose model '{model_id}' is not a JSON object.",
                           step="run")
    return response


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _entry_problem(entry: Dict[str, Any], task: Task) -> str:
    """What a task entry that says ``ok`` lacks (empty when it is complete). NaN numbers are allowed here:
    they are the chip's answer and the verdict judges them."""
    if task.mode == "accuracy":
        output = entry.get("output")
        if not isinstance(output, dict):
            return "no 'output' entry"
        if not isinstance(output.get("sha256"), str):
            return "no output 'sha256'"
        names = output.get("names")
        if not isinstance(names, list) or not names or not all(isinstance(n, str) for n in names):
            return "no list of output 'names'"
        return ""
    latency = entry.get("latency")
    if not isinstance(latency, dict):
        return "no 'latency' entry"
    missing = [k for k in LATENCY_KEYS if not _is_number(latency.get(k))]
    if missing:
        return f"latency without numeric {', '.join(missing)}"
    samples = latency.get("samples_ms")
    if not isinstance(samples, list) or not all(_is_number(v) for v in samples):
        return "latency 'samples_ms' that is not a list of numbers"
    return ""


def check_task_entry(entry: Any, task: Task, where: str) -> Dict[str, Any]:
    """A task's entry in the response: a dict; when ``ok``, with what its mode promises (else HilError)."""
    if entry is None:
        return {}
    if not isinstance(entry, dict):
        raise HilError(f"the agent on {where} wrote a response whose task '{task.id}' is not a JSON object.",
                       step="run")
    problem = _entry_problem(entry, task) if entry.get("ok") else ""
    if problem:
        raise HilError(f"the agent on {where} reported {task.mode} task '{task.id}' as ok but with {problem}: "
                       "a malformed response.", "Deploy the device/xqhil_agent.py that ships with this xqhil.",
                       step="run")
    return entry
