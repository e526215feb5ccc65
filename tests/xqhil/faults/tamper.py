"""A board whose answers are malformed: runs the real agent, then tampers with what it wrote.

Used as the board's interpreter: ``--python "env XQHIL_TAMPER=KIND python3 tests/xqhil/faults/tamper.py"``
(the harness appends ``xqhil_agent.py request.json``). KIND:
    int8-shape     INT8 accuracy outputs cut to the first sample, sha256 updated (a plausible vendor-EP bug)
    no-output      the INT8 accuracy task says ok but has no "output" entry
    object-array   the INT8 outputs npz holds an object array (sha256 updated)
    not-json       response.json is not JSON
    no-latency     the INT8 performance task says ok but has no "latency" entry
    nan-latency    the INT8 performance p50 is NaN
    nan-device     the device fingerprint's "cores" is NaN
"""
import hashlib
import json
import os
import runpy
import sys

import numpy as np


def sha256(path):
    with open(path, "rb") as handle:
        return hashlib.sha256(handle.read()).hexdigest()


def rewrite_outputs(folder, task, arrays):
    path = os.path.join(folder, task["output"]["file"])
    np.savez(path, **{"out%d" % i: a for i, a in enumerate(arrays)})
    task["output"]["sha256"] = sha256(path)


def tamper(kind, folder, response):
    tasks = response["tasks"]
    if kind in ("int8-shape", "object-array"):
        task = tasks["int8-accuracy"]
        with np.load(os.path.join(folder, task["output"]["file"])) as data:
            arrays = [data["out%d" % i] for i in range(len(data.files))]
        if kind == "int8-shape":
            arrays = [a[:1] for a in arrays]
        else:
            arrays = [np.array([{"x": 1}] * len(arrays[0]), dtype=object)] + arrays[1:]
        rewrite_outputs(folder, task, arrays)
    elif kind == "no-output":
        del tasks["int8-accuracy"]["output"]
    elif kind == "no-latency":
        del tasks["int8-performance"]["latency"]
    elif kind == "nan-latency":
        tasks["int8-performance"]["latency"]["p50_ms"] = float("nan")
    elif kind == "nan-device":
        response["device"]["cores"] = float("nan")
    else:
        raise SystemExit("tamper.py: unknown XQHIL_TAMPER %r" % kind)


def main():
    agent, request = sys.argv[1], sys.argv[2]
    sys.argv = [agent, request]
    try:
        runpy.run_path(agent, run_name="__main__")
        code = 0
    except SystemExit as exc:
        code = exc.code or 0
    folder = os.path.dirname(os.path.abspath(request))
    with open(request, encoding="utf-8") as handle:
        path = os.path.join(folder, json.load(handle).get("response") or "response.json")
    kind = os.environ.get("XQHIL_TAMPER", "")
    if kind == "not-json":
        with open(path, "w", encoding="utf-8") as handle:
            handle.write('{"protocol": 1, "tasks": {')
    else:
        with open(path, encoding="utf-8") as handle:
            response = json.load(handle)
        tamper(kind, folder, response)
        with open(path, "w", encoding="utf-8") as handle:
            json.dump(response, handle)
    return code


if __name__ == "__main__":
    sys.exit(main())
