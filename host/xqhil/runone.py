"""``xqhil run`` (one model on a board) and ``xqhil boards --probe`` (the board's fingerprint)."""
from __future__ import annotations

import json
import os
from typing import Dict, List, Optional, Sequence, Tuple

import numpy as np
from xquant.model_io import check_writable, graph_inputs, load_model

from .boards.spec import BoardSpec
from .errors import BadInput
from .protocol import Task
from .reference import leading_dims
from .report import write_atomic
from .session import BoardSession
from .transport import Deadlines


def _model_inputs(model: str) -> List[Tuple[str, List[int]]]:
    """Input names and shapes, free dimensions as 1; an unreadable file is bad input naming it."""
    return [(gi.name, [d if isinstance(d, int) and d > 0 else 1 for d in gi.shape])
            for gi in graph_inputs(load_model(model, load_external_data=False))]


def read_inputs(model: str, path: Optional[str]) -> Tuple[List[str], List[np.ndarray]]:
    """Arrays for the model's inputs: from an .npz (by name or in order), else one random sample."""
    inputs = _model_inputs(model)
    names = [n for n, _ in inputs]
    if path is None:
        rng = np.random.default_rng(0)
        return names, [rng.standard_normal(shape).astype(np.float32) for _, shape in inputs]
    if not os.path.isfile(path):
        raise BadInput(f"--inputs '{path}' not found.")
    try:
        data = np.load(path, allow_pickle=False)
    except (OSError, ValueError) as exc:
        raise BadInput(f"--inputs '{path}' is not a readable .npz file: {str(exc).rstrip('.')}.",
                       "Save the arrays with numpy.savez.") from None
    if not isinstance(data, np.lib.npyio.NpzFile):
        raise BadInput(f"--inputs '{path}' holds one array, not an .npz archive.", "Save it with numpy.savez.")
    with data:
        keys = list(data.files)
        if all(n in keys for n in names):
            return names, [data[n] for n in names]
        if len(keys) == len(names):
            return names, [data[k] for k in keys]
    raise BadInput(f"--inputs '{path}' holds {keys}; the model needs {names}.", "Name the arrays after the inputs.")


def run_model(model: str, spec: BoardSpec, deadlines: Deadlines, retries: int, inputs: Optional[str],
              warmup: int, repeat: int, threads: int, providers: Optional[Sequence[str]],
              out: Optional[str]) -> Dict[str, object]:
    if not os.path.isfile(model):
        raise BadInput(f"model '{model}' not found.")
    if out:
        check_writable(out, "--out", folder=True)
    names, arrays = read_inputs(model, inputs)
    fixed = [d for d in leading_dims(model).values() if d]
    batch = fixed[0] if fixed else 1
    tasks = [Task("accuracy", "model", "accuracy", batch), Task("performance", "model", "performance", batch,
                                                                 warmup, repeat)]
    run = BoardSession(spec, deadlines, retries).run({"model": os.path.abspath(model)}, names, arrays, tasks,
                                                     providers, threads)
    result = {"ok": all(t.get("ok") for t in run.response["tasks"].values()) and run.model("model").get("ok"),
              "board": spec.public(), "device": run.device, "model": run.model("model"),
              "tasks": run.response["tasks"], "harness": run.timings}
    if out:
        os.makedirs(out, exist_ok=True)
        if "accuracy" in run.outputs:
            np.savez(os.path.join(out, "outputs.npz"),
                     **{f"out{i}": o for i, o in enumerate(run.outputs["accuracy"])})
        write_atomic(os.path.join(out, "response.json"), json.dumps(result, indent=1))
    return result


def probe(spec: BoardSpec, deadlines: Deadlines, retries: int) -> Dict[str, object]:
    """Run the agent with an empty request: the device fingerprint and the harness's own overhead."""
    run = BoardSession(spec, deadlines, retries).run({}, [], [], [])
    return {"board": spec.public(), "device": run.device, "agent_version": run.response.get("agent_version"),
            "protocol": run.response.get("protocol"), "harness": run.timings}

