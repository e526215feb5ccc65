#!/usr/bin/env python3
"""xqhil device agent: runs ONNX models on a board, returns their outputs, latencies and a device fingerprint.

One file, standard library + numpy + onnxruntime only, Python >= 3.8; it never imports host code. The host
copies it into a fresh work folder on the board together with the models, the inputs and a request.

Wire protocol, version 2 (this docstring is the reference; docs/protocol.md explains it for humans)
------------------------------------------------------------------------------------------------
Invocations::

    python3 xqhil_agent.py --hello          # one JSON line on stdout: {"protocol", "agent_version", "device"}
    python3 xqhil_agent.py REQUEST.json     # handles the request, writes the response file it names
    python3 xqhil_agent.py --loop           # one agent for many requests (a farm lease): the --hello line,
                                            # then per line FOLDER/REQUEST.json read on stdin (relative to the
                                            # agent's working folder) the request handled as above and one
                                            # JSON line {"done": that line, "exit": code}; ends at EOF.
                                            # numpy and onnxruntime are imported once; a request's
                                            # "environment" must be empty (it applies before the import).
                                            # A deadline ends the whole loop (exit 4) once the response
                                            # is written

Request (JSON object; every file name is a plain name inside the request's folder, never a path)::

    protocol     int, must equal PROTOCOL; otherwise the response says "protocol mismatch" and exit code is 2
    deadline_s   number > 0, the agent's own deadline: past it, it writes an error response and exits with 4;
                 null: DEFAULT_DEADLINE_S; more than MAX_DEADLINE_S is cut to MAX_DEADLINE_S (a deadline is
                 always kept)
    files        {name: sha256}, verified before anything runs (upload integrity is checked on the board)
    providers    [str] or null: null picks a vendor provider (e.g. SpaceMITExecutionProvider) when present,
                 then CPUExecutionProvider; a named provider the board lacks is an error
    threads      int, intra-op threads (0: onnxruntime's default)
    environment  optional {NAME: value}: set in the agent's environment before onnxruntime is imported (e.g.
                 the SpaceMIT EP's SPACEMIT_EP_DISABLE_OP_TYPE_FILTER, SPACEMIT_EP_DUMP_TENSORS); echoed in
                 device.environment so the host knows it was applied (agents before 0.2 do not echo it)
    provider_options  optional {provider: {key: value}}: onnxruntime provider options of each session;
                 echoed in device.provider_options
    models       {model_id: file name}
    inputs       {"file": "inputs.npz", "names": [graph input names], "batch_axes": [int | "none"] or null};
                 npz keys in0, in1, ... hold [N, ...]: samples stacked on axis 0, in the dtype the model
                 declares (int64 / int32 / bool pass through as they are). batch_axes (version 2): per input,
                 where the model stacks samples (e.g. 1 for recurrent state [layers, N, hidden]); "none": the
                 input has no batch axis (a scalar such as a sample rate, a fixed state): it takes one sample,
                 so batches are of 1. null or absent: 0 for every input
    tasks        [{"id", "model": model_id, "mode": "accuracy" | "performance", "batch_size": int,
                   accuracy: "output": file name for the outputs npz,
                   performance: "warmup": int, "repeat": int, optional "interleave": str, "min_time_s": number}]
                 performance tasks with the same "interleave" name are timed together: their first runs,
                 warm-ups and timed runs alternate (A B, then B A, round by round), so whatever drifts on the
                 board during the measurement (load, clock, temperature) hits each of them alike; each task
                 still gets its own latency. Agents before 0.4 ignore the field and time the tasks in turn.
                 "min_time_s" (0.4+, default 0): the timed runs go on past "repeat" until this many seconds of
                 timing have passed (a run long enough to average the board's load over its changes)
    response     file name of the response (default "response.json")

Response (JSON object, written atomically)::

    protocol, agent_version, ok (the request was understood and handled; task failures are reported per task),
    error        null or {"type", "message"}: the reason the request as a whole failed
    device       fingerprint: arch, cpu, cores, os, kernel, python, numpy, onnxruntime, providers, emulated
    agent_sha256 checksum of this file as the board sees it
    models       {model_id: {"ok", "error", "load_ms", "providers", "inputs", "outputs"}}
    tasks        {task_id: {"ok", "error", "model", "mode", "batch_size",
                  accuracy: "samples", "total_ms", "output": {"file", "sha256", "names"}  (npz keys out0, ...,
                            each [N, ...]: samples first, joined on whichever axis the model puts them),
                  performance: "latency": {"first_ms", "mean_ms", "p50_ms", "p90_ms", "p99_ms", "min_ms",
                                           "max_ms", "std_ms", "samples_ms": [...], "timed_runs",
                                           "cpu_p50_ms": median CPU time of the process per timed run},
                             "interleaved": [task ids timed together] (only when they were)}}
                 the statistics cover every timed run (timed_runs of them); samples_ms holds them all up to
                 MAX_SAMPLES, else every k-th pair of them (an even subsample, in order; pairs because
                 interleaved rounds alternate ABBA, so every other sample of a model follows the other
                 model: every k-th sample with k even kept one kind only, 4-5% off the median of all on
                 a 0.2 ms model)
    duration_s, stage (the last stage reached)

Exit codes: 0 the response was written (look at ok and tasks), 2 bad request (a field of the wrong type or
value, an unreadable request or inputs file), 4 deadline exceeded, 3 the agent itself crashed (the response
still says why when it could be written), 5 no space left in the work folder (error type DiskFull in the
response when it could still be written; a one-line reason on stderr when not).
Errors are data: a model that fails to load or run is reported with onnxruntime's message, never raised.
"""
from __future__ import annotations

import errno
import hashlib
import json
import os
import platform
import re
import sys
import tempfile
import threading
import time
import traceback
import zipfile

PROTOCOL = 2
AGENT_VERSION = "0.4.1"
ENV_NAME = re.compile(r"^[A-Z][A-Z0-9_]{0,63}$")
VENDOR_PROVIDERS = ("SpaceMITExecutionProvider",)
VENDOR_MODULES = ("spacemit_ort",)  # imported when present: they register the vendor provider
STDERR_NOISE = ("Schema error: Trying to register schema",)
SAFE_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$")
EXIT_OK, EXIT_BAD_REQUEST, EXIT_CRASH, EXIT_DEADLINE, EXIT_NO_SPACE = 0, 2, 3, 4, 5
DEFAULT_DEADLINE_S, MAX_DEADLINE_S = 3600.0, 86400.0
NO_SPACE = (errno.ENOSPC, getattr(errno, "EDQUOT", errno.ENOSPC))
MAX_SAMPLES = 1000  # timed runs reported one by one; beyond, an even subsample
UNKNOWN = "unknown"  # declared_batch_axis: the declared shapes do not tell
NO_BATCH = "none"  # inputs.batch_axes: the input has no batch axis


class AgentError(Exception):
    """A request-level failure reported in the response's ``error`` field."""

    def __init__(self, kind, message):
        super().__init__(message)
        self.kind = kind
        self.message = message


# ----------------------------------------------------------------------------------------- fingerprint
def _read(path):
    try:
        with open(path, encoding="utf-8", errors="replace") as handle:
            return handle.read()
    except OSError:
        return ""


def _cpu_fields():
    fields = {}
    for line in _read("/proc/cpuinfo").splitlines():
        if ":" in line:
            key, value = line.split(":", 1)
            fields.setdefault(key.strip().lower(), value.strip())
    return fields


def cpu_model():
    fields = _cpu_fields()
    for key in ("model name", "uarch", "cpu model", "hardware", "isa", "processor"):
        if fields.get(key) and not fields[key].isdigit():
            return fields[key]
    return platform.processor() or platform.machine() or "unknown"


def looks_emulated(arch):
    """True when the CPU the kernel describes is not of the architecture Python runs on (qemu-user)."""
    fields = _cpu_fields()
    host_marks = ("genuineintel", "authenticamd", "x86", "intel", "amd", "aarch64", "arm")
    text = " ".join([fields.get("vendor_id", ""), fields.get("model name", ""), fields.get("flags", "")[:40]])
    if arch in ("riscv64", "riscv32"):
        return any(mark in text.lower() for mark in host_marks)
    return False


def os_name():
    for line in _read("/etc/os-release").splitlines():
        if line.startswith("PRETTY_NAME="):
            return line.split("=", 1)[1].strip().strip('"')
    return platform.platform()


def fingerprint(ort, np):
    arch = platform.machine()
    return {
        "arch": arch,
        "cpu": cpu_model(),
        "cores": os.cpu_count() or 0,
        "os": os_name(),
        "kernel": platform.release(),
        "python": platform.python_version(),
        "numpy": np.__version__,
        "onnxruntime": ort.__version__,
        "providers": list(ort.get_available_providers()),
        "emulated": looks_emulated(arch),
    }


# ----------------------------------------------------------------------------------------- imports
class QuietStderr:
    """Send fd 2 to a temp file, then replay it without onnxruntime's harmless schema-registration noise."""

    def __enter__(self):
        sys.stderr.flush()
        self.saved = os.dup(2)
        self.tmp = tempfile.TemporaryFile()
        os.dup2(self.tmp.fileno(), 2)
        return self

    def __exit__(self, *exc):
        sys.stderr.flush()
        os.dup2(self.saved, 2)
        os.close(self.saved)
        self.tmp.seek(0)
        text = self.tmp.read().decode("utf-8", "replace")
        self.tmp.close()
        for line in text.splitlines():
            if line.strip() and not any(noise in line for noise in STDERR_NOISE):
                sys.stderr.write(line + "\n")
        return False


def import_runtime():
    with QuietStderr():
        import numpy as np
        import onnxruntime as ort

        for name in VENDOR_MODULES:
            try:
                __import__(name)
            except Exception:  # a vendor module that is absent or broken must not stop the CPU path
                pass
    return np, ort


# ----------------------------------------------------------------------------------------- helpers
def sha256_file(path):
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def safe_path(folder, name):
    if not isinstance(name, str) or not SAFE_NAME.match(name) or ".." in name:
        raise AgentError("BadRequest", "file name %r is not a plain file name of the work folder" % (name,))
    return os.path.join(folder, name)


def _bad(field, expected, value):
    return AgentError("BadRequest", "request field %s must be %s, got %s" % (field, expected, repr(value)[:80]))


def _is_int(value, low=0):
    return isinstance(value, int) and not isinstance(value, bool) and value >= low


def _check(mapping, field, ok, expected, label=None):
    value = mapping.get(field)
    if value is not None and not ok(value):
        raise _bad(label or field, expected, value)


def _names_map(value):
    return isinstance(value, dict) and all(isinstance(k, str) and isinstance(v, str) for k, v in value.items())


def _str_list(value):
    return isinstance(value, list) and all(isinstance(v, str) for v in value)


def deadline_of(request):
    """The watchdog's seconds: DEFAULT_DEADLINE_S when absent, never more than MAX_DEADLINE_S."""
    value = request.get("deadline_s")
    if value is None:
        return DEFAULT_DEADLINE_S
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not value > 0:
        raise _bad("deadline_s", "a number of seconds > 0", value)
    return min(float(value), MAX_DEADLINE_S)


def _is_seconds(value):
    return isinstance(value, (int, float)) and not isinstance(value, bool) and 0 <= value <= MAX_DEADLINE_S


def _batch_axes_ok(value, count):
    return value is None or (isinstance(value, list) and len(value) == count
                             and all(a == NO_BATCH or _is_int(a) for a in value))


def check_request(request):
    """The type of every field the agent reads: a malformed request is a BadRequest, never a crash."""
    _check(request, "files", _names_map, "an object {file name: sha256}")
    _check(request, "models", _names_map, "an object {model id: file name}")
    _check(request, "providers", _str_list, "null or a list of provider names")
    _check(request, "threads", _is_int, "an integer >= 0")
    _check(request, "inputs", lambda v: isinstance(v, dict), 'an object {"file", "names"}')
    inputs = request.get("inputs") or {}
    _check(inputs, "file", lambda v: isinstance(v, str), "a file name", "inputs.file")
    _check(inputs, "names", _str_list, "a list of input names", "inputs.names")
    _check(inputs, "batch_axes", lambda v: _batch_axes_ok(v, len(inputs.get("names") or [])),
           'null or a list with one integer >= 0 or "none" per input name', "inputs.batch_axes")
    _check(request, "tasks", lambda v: isinstance(v, list), "a list of task objects")
    for index, task in enumerate(request.get("tasks") or []):
        if not isinstance(task, dict):
            raise _bad("tasks[%d]" % index, "an object", task)
        for key, ok, expected in (
                ("id", lambda v: isinstance(v, (str, int)) and not isinstance(v, bool), "a string"),
                ("model", lambda v: isinstance(v, str), "a model id"),
                ("mode", lambda v: isinstance(v, str), '"accuracy" or "performance"'),
                ("output", lambda v: isinstance(v, str), "a file name"),
                ("batch_size", _is_int, "an integer >= 0"), ("warmup", _is_int, "an integer >= 0"),
                ("repeat", _is_int, "an integer >= 0"),
                ("interleave", lambda v: isinstance(v, str), "a group name"),
                ("min_time_s", _is_seconds, "a number of seconds >= 0")):
            _check(task, key, ok, expected, "tasks[%d].%s" % (index, key))


def write_json_atomic(path, data):
    tmp = path + ".tmp"
    with open(tmp, "w", encoding="utf-8") as handle:
        json.dump(data, handle, indent=1, sort_keys=True)
    os.replace(tmp, path)


CPP_LOCATION = re.compile(r"[\w./-]*\.(?:h|cc|cpp):\d+ [^()]*\([^)]*\)")  # onnxruntime's "file.h:46 void f(...)"


def error_text(exc):
    text = " ".join(CPP_LOCATION.sub(" ", str(exc)).split())
    return "%s: %s" % (type(exc).__name__, text[:2000]) if text else type(exc).__name__


def latency_stats(np, first_ms, samples_ms):
    arr = np.asarray(samples_ms, dtype=np.float64)
    if arr.size == 0:
        arr = np.asarray([first_ms], dtype=np.float64)

    def pct(q):
        return float(np.percentile(arr, q))

    step = -(-arr.size // MAX_SAMPLES)  # every step-th *pair* of runs: one after each model (ABBA rounds)
    shown = arr if arr.size <= MAX_SAMPLES else arr[(np.arange(arr.size) // 2) % step == 0][:MAX_SAMPLES]
    return {
        "first_ms": float(first_ms), "mean_ms": float(arr.mean()), "p50_ms": pct(50), "p90_ms": pct(90),
        "p99_ms": pct(99), "min_ms": float(arr.min()), "max_ms": float(arr.max()), "std_ms": float(arr.std()),
        "samples_ms": [round(float(v), 4) for v in shown], "timed_runs": int(arr.size),
    }


def choose_providers(requested, available):
    if requested:
        missing = [p for p in requested if p not in available]
        if missing:
            raise AgentError("ProviderUnavailable", "execution provider(s) %s not available on this board; "
                             "available: %s" % (", ".join(missing), ", ".join(available)))
        return list(requested)
    chosen = [p for p in VENDOR_PROVIDERS if p in available]
    return chosen + ["CPUExecutionProvider"]


def apply_environment(environment):
    """Set the request's environment variables (checked names, text values); returns what was set."""
    applied = {}
    for name, value in sorted((environment or {}).items()):
        if not ENV_NAME.match(str(name)) or not isinstance(value, str) or len(value) > 4096:
            raise AgentError("BadRequest", "environment entry %r is not NAME (A-Z, 0-9, _) = text" % (name,))
        os.environ[name] = value
        applied[name] = value
    return applied


def provider_options_for(providers, options):
    """onnxruntime's provider_options list aligned with ``providers`` (None when no options were given)."""
    if not options:
        return None
    return [dict((str(k), str(v)) for k, v in (options.get(p) or {}).items()) for p in providers]


def load_model(ort, path, providers, threads, provider_options=None):
    options = ort.SessionOptions()
    options.log_severity_level = 4  # a failed run raises with the same text; its log line only duplicated it
    if threads and threads > 0:
        options.intra_op_num_threads = int(threads)
    options.inter_op_num_threads = 1
    with QuietStderr():
        if provider_options:
            return ort.InferenceSession(path, sess_options=options, providers=providers,
                                        provider_options=provider_options)
        return ort.InferenceSession(path, sess_options=options, providers=providers)


def batches(np, arrays, batch_size):
    count = int(arrays[0].shape[0]) if arrays else 0
    size = max(1, int(batch_size or 1))
    for start in range(0, count, size):
        yield [a[start:start + size] for a in arrays]


def lay_out(np, samples, axis):
    """Samples stacked on axis 0 laid out as the model takes them: the batch moved to ``axis``; None (no batch
    axis): the first sample alone (callers run such models one sample at a time)."""
    if axis is None:
        return np.ascontiguousarray(samples[0])
    return samples if axis == 0 else np.ascontiguousarray(np.moveaxis(samples, 0, axis))


def feed_for(np, session, names, arrays, axes=None):
    """The feed of one batch (``arrays`` samples-first, ``axes`` per name: see inputs.batch_axes)."""
    wanted = [i.name for i in session.get_inputs()]
    missing = [n for n in wanted if n not in names]
    if missing:
        raise ValueError("model input(s) %s have no data; the request provides %s" % (missing, names))
    axes = list(axes) if axes is not None else [0] * len(names)
    return {n: lay_out(np, arrays[names.index(n)], axes[names.index(n)]) for n in wanted}


def declared_batch_axis(declared, input_batch):
    """Which axis of an output holds the samples, from declared shapes alone.

    ``declared``: the output's dims as the model declares them (ints, names, None; None for no shape at all);
    ``input_batch``: axis 0 of the first input (int when fixed, else a name or None). Returns the axis, None
    when the output has no sample axis (batch fixed at 1 and no axis of size 1: one value set per sample),
    or UNKNOWN when the declared shapes cannot tell (a free batch with no output dim of the same name).
    """
    dims = list(declared or [])
    if not dims:  # no declared shape (a declared scalar is rare; a run shows it)
        return UNKNOWN
    if isinstance(input_batch, str) and dims.count(input_batch) == 1:
        return dims.index(input_batch)
    if isinstance(input_batch, int) and input_batch > 0 and all(isinstance(d, int) for d in dims):
        return fixed_batch_axis(dims, input_batch)
    return UNKNOWN


def fixed_batch_axis(dims, batch):
    """For a batch fixed at ``batch`` and static ``dims``: the first axis of that size, None when none is."""
    dims = list(dims)
    return dims.index(batch) if batch in dims else None


def probed_batch_axis(shape_one, shape_two):
    """The sample axis from one output's shapes for 1 and 2 samples: the one axis that grows from 1 to 2; None
    when the shape does not change (no sample axis: only batches of 1 give one value set per sample)."""
    if tuple(shape_one) == tuple(shape_two):
        return None
    if len(shape_one) == len(shape_two):
        grown = [i for i, (a, b) in enumerate(zip(shape_one, shape_two)) if (a, b) == (1, 2)]
        changed = [i for i, (a, b) in enumerate(zip(shape_one, shape_two)) if a != b]
        if len(grown) == 1 and changed == grown:
            return grown[0]
    raise ValueError("cannot tell which axis holds the samples: the output has shape %s for 1 sample and %s "
                     "for 2" % (tuple(shape_one), tuple(shape_two)))


def input_batch_dim(session, names, axes):
    """The declared size of the batch: the first input with a batch axis, at that axis (an int when fixed, else
    a name or None); 1 when no input has one (the model runs one sample at a time)."""
    axes = list(axes) if axes is not None else [0] * len(names)
    for item in session.get_inputs():
        axis = axes[names.index(item.name)] if item.name in names else 0
        if axis is not None:
            shape = list(item.shape or [])
            return shape[axis] if axis < len(shape) else None
    return 1


def output_batch_axes(np, session, names, arrays, in_axes=None, size=0):
    """The sample axis of every output (see declared_batch_axis); free batches are probed with 1 and 2 samples
    when the declared shapes do not tell. A model run in batches of ``size`` 1 that fails on 2 samples (an
    export that hard-codes batch 1 behind a free declared batch) takes the first axis of size 1, if any."""
    input_batch = input_batch_dim(session, names, in_axes)
    axes = [declared_batch_axis(o.shape, input_batch) for o in session.get_outputs()]
    if UNKNOWN not in axes:
        return axes

    def shapes(count):
        feed = [a[:count] if count <= a.shape[0] else np.concatenate([a[:1]] * count) for a in arrays]
        return [np.shape(o) for o in session.run(None, feed_for(np, session, names, feed, in_axes))]

    if isinstance(input_batch, int):  # a fixed batch: the actual shapes of one run are static shapes
        actual = shapes(input_batch)
        return [fixed_batch_axis(actual[i], input_batch) if axis == UNKNOWN else axis for i, axis in enumerate(axes)]
    one = shapes(1)
    try:
        two = shapes(2)
    except Exception:
        if size != 1:
            raise
        two = [None] * len(one)
    if None in two:
        return [fixed_batch_axis(one[i], 1) if axis == UNKNOWN else axis for i, axis in enumerate(axes)]
    return [probed_batch_axis(one[i], two[i]) if axis == UNKNOWN else axis for i, axis in enumerate(axes)]


def join_samples(np, parts, axis):
    """One output's per-run parts joined on its sample axis and returned samples-first ([N, ...])."""
    if axis is None:
        return np.stack([np.asarray(p) for p in parts], axis=0)
    return np.moveaxis(np.concatenate(parts, axis=axis), axis, 0)


def run_accuracy(np, session, names, arrays, batch_size, in_axes=None):
    """Run every sample; return (outputs samples-first, [N, ...] whatever axis the model puts them on,
    total milliseconds). ``in_axes``: each input's batch axis (inputs.batch_axes)."""
    if not arrays or int(arrays[0].shape[0]) == 0:
        raise ValueError("no input samples to run")
    size = max(1, int(batch_size or 1))
    single = [n for n, axis in zip(names, in_axes or []) if axis is None]
    if single and size > 1:
        raise ValueError("input(s) %s have no batch axis, so they take one sample per run: use batch_size 1, "
                         "not %d" % (single, size))
    axes = output_batch_axes(np, session, names, arrays, in_axes, size)
    if None in axes and size > 1:
        free = [o.name for o, axis in zip(session.get_outputs(), axes) if axis is None]
        raise ValueError("output(s) %s have no sample axis, so batches of %d cannot be split into samples"
                         % (free, size))
    collected = [[] for _ in axes]
    start = time.perf_counter()
    for chunk in batches(np, arrays, size):
        outs = session.run(None, feed_for(np, session, names, chunk, in_axes))
        for slot, out in zip(collected, outs):
            slot.append(np.asarray(out))
    total_ms = (time.perf_counter() - start) * 1000.0
    return [join_samples(np, slot, axis) for slot, axis in zip(collected, axes)], total_ms


def perf_feed(np, session, names, arrays, batch_size, in_axes=None):
    """The feed a performance task times: the first batch of the inputs."""
    return feed_for(np, session, names, [a[:max(1, int(batch_size or 1))] for a in arrays], in_axes)


def run_performance(np, session, names, arrays, batch_size, warmup, repeat, in_axes=None, min_time_s=0):
    feed = perf_feed(np, session, names, arrays, batch_size, in_axes)
    return time_interleaved(np, [(session, feed, warmup, repeat)], min_time_s)[0]


def _timed(session, feed, cpu=None):
    """Wall milliseconds of one run; its CPU milliseconds (this process's) appended to ``cpu``."""
    start, used = time.perf_counter(), time.process_time()
    session.run(None, feed)
    wall = (time.perf_counter() - start) * 1000.0
    if cpu is not None:
        cpu.append((time.process_time() - used) * 1000.0)
    return wall


def time_interleaved(np, runs, min_time_s=0):
    """Latency stats of each (session, feed, warmup, repeat) in ``runs``, timed in alternation: first runs,
    then warm-up rounds, then timed rounds, each round in the opposite order of the one before (ABBA),
    until every run has its ``repeat`` samples and ``min_time_s`` seconds of timing have passed."""
    first = [_timed(session, feed) for session, feed, _, _ in runs]
    for i in range(max([max(0, int(w)) for _, _, w, _ in runs] or [0])):
        for session, feed, warmup, _ in runs:
            if i < int(warmup):
                session.run(None, feed)
    samples, cpu = [[] for _ in runs], [[] for _ in runs]
    repeats = [max(1, int(r)) for _, _, _, r in runs]
    start, i = time.perf_counter(), 0
    while runs and (i < max(repeats) or time.perf_counter() - start < float(min_time_s or 0)):
        order = range(len(runs)) if i % 2 == 0 else range(len(runs) - 1, -1, -1)
        for j in order:
            if i < repeats[j] or min_time_s:
                samples[j].append(_timed(runs[j][0], runs[j][1], cpu[j]))
        i += 1
    stats = [latency_stats(np, f, s) for f, s in zip(first, samples)]
    for entry, used in zip(stats, cpu):
        entry["cpu_p50_ms"] = float(np.median(used)) if used else None
    return stats


def interleave_group(tasks, task):
    """The performance tasks timed together with ``task`` (its "interleave" group), else just ``task``."""
    name = task.get("interleave")
    if task.get("mode") != "performance" or name is None:
        return [task]
    return [t for t in tasks if t.get("mode") == "performance" and t.get("interleave") == name]


# ----------------------------------------------------------------------------------------- request handling
class Agent:
    def __init__(self, request_path):
        self.folder = os.path.dirname(os.path.abspath(request_path))
        self.request_path = request_path
        self.started = time.time()
        self.lock = threading.Lock()
        self.done = False
        self.response = {"protocol": PROTOCOL, "agent_version": AGENT_VERSION, "ok": False, "error": None,
                         "device": None, "models": {}, "tasks": {}, "stage": "start", "duration_s": 0.0}
        self.response_path = os.path.join(self.folder, "response.json")
        self.timer = None

    def stage(self, name):
        self.response["stage"] = name

    def finish(self, exit_code):
        """Write the response once; when it cannot be written, say why on stderr (one line) and return
        EXIT_NO_SPACE for a full disk, else EXIT_CRASH (or the bad request's code)."""
        with self.lock:
            if self.done:
                return None
            self.done = True
            self.response["duration_s"] = round(time.time() - self.started, 4)
            try:
                write_json_atomic(self.response_path, self.response)
            except OSError as exc:
                sys.stderr.write("xqhil-agent: cannot write the response %s: %s\n" % (self.response_path, exc))
                if exc.errno in NO_SPACE:
                    return EXIT_NO_SPACE
                return exit_code or EXIT_CRASH
        return exit_code

    def watchdog(self, deadline_s):
        """Exit with EXIT_DEADLINE after ``deadline_s`` (at most MAX_DEADLINE_S: Timer fails past ~1e9 s)."""
        deadline_s = min(float(deadline_s), MAX_DEADLINE_S)

        def expire():
            self.response["error"] = {"type": "DeadlineExceeded",
                                      "message": "agent deadline of %.1f s exceeded during stage '%s'"
                                      % (deadline_s, self.response["stage"])}
            self.response["ok"] = False
            try:
                if self.finish(EXIT_DEADLINE) is None:
                    return  # the main thread finished first
            except Exception:
                pass
            os._exit(EXIT_DEADLINE)

        timer = threading.Timer(float(deadline_s), expire)
        timer.daemon = True
        timer.start()
        return timer

    def read_request(self):
        try:
            with open(self.request_path, encoding="utf-8") as handle:
                request = json.load(handle)
        except (OSError, ValueError) as exc:
            raise AgentError("BadRequest",
                             "cannot read request %s: %s" % (self.request_path, error_text(exc))) from None
        if not isinstance(request, dict):
            raise AgentError("BadRequest", "the request must be a JSON object")
        if request.get("response") is not None:
            self.response_path = safe_path(self.folder, request["response"])
        if request.get("protocol") != PROTOCOL:
            raise AgentError("ProtocolMismatch", "protocol mismatch: the request speaks version %r, this agent "
                             "(%s) speaks version %d; deploy the agent that matches the host"
                             % (request.get("protocol"), AGENT_VERSION, PROTOCOL))
        return request

    def verify_files(self, files):
        self.stage("verify")
        for name, expected in sorted((files or {}).items()):
            path = safe_path(self.folder, name)
            if not os.path.isfile(path):
                raise AgentError("MissingFile", "file %s was not found in the work folder" % name)
            actual = sha256_file(path)
            if actual != expected:
                raise AgentError("ChecksumMismatch", "checksum mismatch for %s: expected %s, board has %s"
                                 % (name, expected, actual))

    def load_models(self, ort, request):
        providers = choose_providers(request.get("providers"), list(ort.get_available_providers()))
        sessions = {}
        for model_id, name in sorted((request.get("models") or {}).items()):
            self.stage("load " + model_id)
            entry = {"ok": False, "error": None, "load_ms": None, "providers": []}
            start = time.perf_counter()
            try:
                session = load_model(ort, safe_path(self.folder, name), providers, request.get("threads", 0),
                                     provider_options_for(providers, request.get("provider_options")))
                entry.update(ok=True, load_ms=(time.perf_counter() - start) * 1000.0,
                             providers=list(session.get_providers()),
                             inputs=[i.name for i in session.get_inputs()],
                             outputs=[o.name for o in session.get_outputs()])
                sessions[model_id] = session
            except AgentError:
                raise
            except Exception as exc:
                entry["error"] = error_text(exc)
            self.response["models"][model_id] = entry
        return sessions

    def read_inputs(self, np, spec):
        spec = spec or {}
        path = safe_path(self.folder, spec.get("file", "inputs.npz"))
        names = list(spec.get("names") or [])
        axes = spec.get("batch_axes")
        axes = [None if a == NO_BATCH else int(a) for a in axes] if axes is not None else [0] * len(names)
        try:
            with np.load(path, allow_pickle=False) as data:
                arrays = [np.ascontiguousarray(data["in%d" % i]) for i in range(len(names))]
        except (OSError, KeyError, ValueError, EOFError, zipfile.BadZipFile) as exc:
            raise AgentError("BadRequest", "cannot read inputs %s: %s" % (path, error_text(exc))) from None
        if not arrays or len({int(a.shape[0]) for a in arrays}) != 1:
            raise AgentError("BadRequest", "inputs must be one or more arrays with the same number of samples")
        return names, arrays, axes

    @staticmethod
    def new_result(task):
        return {"ok": False, "error": None, "model": task.get("model"), "mode": task.get("mode"),
                "batch_size": int(task.get("batch_size") or 1)}

    def session_of(self, sessions, task):
        session = sessions.get(task.get("model"))
        if session is None:
            entry = self.response["models"].get(task.get("model"))
            reason = entry["error"] if entry else "it is not in the request's models"
            raise RuntimeError("model %r is not loaded: %s" % (task.get("model"), reason))
        return session

    def run_interleaved(self, np, sessions, names, arrays, group, axes=None):
        """Results of the performance tasks in ``group``, timed in alternation (see time_interleaved); a
        task that cannot start fails alone, and a run that fails midway has every task retried on its own
        so the error lands on the task that caused it."""
        results, runs, min_time = {}, [], 0.0
        for task in group:
            result = results[str(task.get("id"))] = self.new_result(task)
            try:
                session = self.session_of(sessions, task)
                feed = perf_feed(np, session, names, arrays, result["batch_size"], axes)
                runs.append((result, (session, feed, task.get("warmup", 5), task.get("repeat", 20))))
                min_time = max(min_time, float(task.get("min_time_s") or 0))
            except Exception as exc:
                result["error"] = error_text(exc)
        try:
            stats = time_interleaved(np, [run for _, run in runs], min_time)
        except Exception:
            return {str(t.get("id")): self.run_task(np, sessions, names, arrays, t, axes) for t in group}
        together = [str(t.get("id")) for t in group if results[str(t.get("id"))]["error"] is None]
        for (result, _), latency in zip(runs, stats):
            result.update(ok=True, latency=latency, interleaved=together)
        return results

    def run_task(self, np, sessions, names, arrays, task, axes=None):
        result, path = self.new_result(task), ""
        try:
            session = self.session_of(sessions, task)
            if task.get("mode") == "accuracy":
                outs, total_ms = run_accuracy(np, session, names, arrays, result["batch_size"], axes)
                path = safe_path(self.folder, task.get("output") or "out-%s.npz" % task.get("id"))
                np.savez(path, **{"out%d" % i: o for i, o in enumerate(outs)})
                result.update(samples=int(arrays[0].shape[0]), total_ms=total_ms, output={
                    "file": os.path.basename(path), "sha256": sha256_file(path),
                    "names": [o.name for o in session.get_outputs()]})
            elif task.get("mode") == "performance":
                result["latency"] = run_performance(np, session, names, arrays, result["batch_size"],
                                                    task.get("warmup", 5), task.get("repeat", 20), axes,
                                                    task.get("min_time_s") or 0)
            else:
                raise ValueError("unknown mode %r (accuracy or performance)" % (task.get("mode"),))
            result["ok"] = True
        except AgentError:
            raise
        except OSError as exc:
            if exc.errno not in NO_SPACE:
                result["error"] = error_text(exc)
                return result
            if path and os.path.exists(path):
                os.remove(path)  # room for the response
            raise AgentError("DiskFull", "no space left in the work folder writing %s: %s"
                             % (os.path.basename(path), error_text(exc))) from None
        except Exception as exc:
            result["error"] = error_text(exc)
        return result

    def handle(self, looping=False):
        request = self.read_request()
        self.timer = self.watchdog(deadline_of(request))
        check_request(request)
        if looping and request.get("environment"):
            raise AgentError("BadRequest", "a request with an environment cannot run in --loop mode (the "
                             "runtime is already imported): run it with its own agent")
        self.verify_files(request.get("files"))
        self.stage("import")
        environment = apply_environment(request.get("environment"))
        np, ort = import_runtime()
        self.response["device"] = fingerprint(ort, np)
        self.response["device"].update(environment=environment,
                                       provider_options=request.get("provider_options") or {})
        self.response["agent_sha256"] = sha256_file(os.path.abspath(__file__))
        sessions = self.load_models(ort, request)
        self.stage("inputs")
        names, arrays, axes = self.read_inputs(np, request.get("inputs")) if request.get("tasks") else ([], [], [])
        tasks, timed = request.get("tasks") or [], set()
        for task in tasks:
            task_id = str(task.get("id"))
            if id(task) in timed:
                continue  # timed with its interleave group
            group = interleave_group(tasks, task)
            self.stage("task " + "+".join(str(t.get("id")) for t in group))
            if len(group) > 1:
                timed.update(id(t) for t in group)
                self.response["tasks"].update(self.run_interleaved(np, sessions, names, arrays, group, axes))
            else:
                self.response["tasks"][task_id] = self.run_task(np, sessions, names, arrays, task, axes)
        self.stage("done")
        self.response["ok"] = True


def serve(request_path, looping=False):
    agent = Agent(request_path)
    code = EXIT_OK
    try:
        agent.handle(looping)
    except AgentError as exc:
        agent.response["error"] = {"type": exc.kind, "message": exc.message}
        code = EXIT_NO_SPACE if exc.kind == "DiskFull" else EXIT_BAD_REQUEST
    except Exception as exc:  # errors are data: anything unexpected is reported, not raised
        agent.response["error"] = {"type": "AgentCrash", "message": error_text(exc),
                                   "traceback": traceback.format_exc()[-4000:]}
        code = EXIT_CRASH
    result = agent.finish(code)
    if agent.timer is not None:
        agent.timer.cancel()
    return code if result is None else result


def hello(**extra):
    np, ort = import_runtime()
    sys.stdout.write(json.dumps(dict({"protocol": PROTOCOL, "agent_version": AGENT_VERSION,
                                      "device": fingerprint(ort, np)}, **extra), sort_keys=True) + "\n")
    sys.stdout.flush()
    return EXIT_OK


LOOP_REQUEST = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}/[A-Za-z0-9][A-Za-z0-9._-]{0,127}$")


def loop(lines):
    """--loop: the hello line, then each request named on ``lines`` handled in this one process."""
    hello(loop=True)
    for line in lines:
        name = line.strip()
        if not name:
            continue
        code = serve(name, looping=True) if LOOP_REQUEST.match(name) and ".." not in name else EXIT_BAD_REQUEST
        sys.stdout.write(json.dumps({"done": name, "exit": code}) + "\n")
        sys.stdout.flush()
    return EXIT_OK


def main(argv=None):
    args = list(sys.argv[1:] if argv is None else argv)
    if args == ["--hello"]:
        return hello()
    if args == ["--loop"]:
        return loop(sys.stdin)
    if args == ["--version"]:
        sys.stdout.write("xqhil-agent %s protocol %d\n" % (AGENT_VERSION, PROTOCOL))
        return EXIT_OK
    if len(args) != 1 or args[0].startswith("-"):
        sys.stderr.write("usage: xqhil_agent.py --hello | --version | --loop | REQUEST.json\n")
        return EXIT_BAD_REQUEST
    return serve(args[0])


if __name__ == "__main__":
    sys.exit(main())
