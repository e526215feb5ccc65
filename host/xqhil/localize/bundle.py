"""Repro bundles: ``repro/<op>-<n>/`` holds the minimal subgraph, the PC's inputs, the PC's and the chip's
outputs, the board's fingerprint and a README with the one command that replays it. ``xqhil replay`` reads
only the bundle: it runs model.onnx on a board with inputs.npz and compares with expected_pc.npz.
"""
from __future__ import annotations

import json
import os
import re
from typing import Dict, List, Optional, Sequence, Tuple

import numpy as np
import onnx

from ..errors import BadInput
from ..report import write_atomic
from .compare import difference, tolerance_for
from .runs import Board

FILES = ("model.onnx", "inputs.npz", "expected_pc.npz", "chip.npz", "fingerprint.json", "README.md")


def _save(path: str, names: Sequence[str], arrays: Sequence[Optional[np.ndarray]], prefix: str) -> None:
    np.savez(path, **{f"{prefix}{i}": np.asarray(a) for i, a in enumerate(arrays) if a is not None})


def _folder(root: str, op: str) -> str:
    slug = re.sub(r"[^a-z0-9]+", "-", op.lower()).strip("-") or "op"
    n = 1
    while os.path.exists(os.path.join(root, f"{slug}-{n}")):
        n += 1
    return os.path.join(root, f"{slug}-{n}")


def _readme(folder: str, finding: dict, board: str) -> str:
    return "\n".join([
        f"# Repro: {finding['op']} `{finding['node']}` departs on the chip", "",
        f"The subgraph in `model.onnx` computes `{finding['boundary']}` from the tensors in `inputs.npz` (the "
        "PC's values). On the board it gave `chip.npz`; the PC's onnxruntime gives `expected_pc.npz`.", "",
        "Replay (exit 1 while the runtime bug is there, 0 once it is fixed):", "",
        "```", f"xqhil replay {folder} --board {board}", "```", "",
        f"Compared with the tolerance in `fingerprint.json` ({finding['tolerance']}).", ""])


def write_bundle(root: str, loc, board: Board, board_arg: str) -> str:
    """Write the bundle of a localised (or unconfirmed) finding under ``root``; returns its folder."""
    confirm = loc.confirm
    model: onnx.ModelProto = confirm["model"]
    out = confirm["output"]
    folder = _folder(root, loc.boundary.op)
    os.makedirs(folder)
    in_names = list(confirm["inputs"])
    onnx.save(model, os.path.join(folder, "model.onnx"))
    _save(os.path.join(folder, "inputs.npz"), in_names, [confirm["inputs"][n] for n in in_names], "in")
    _save(os.path.join(folder, "expected_pc.npz"), [out], [confirm["pc"][out]], "out")
    _save(os.path.join(folder, "chip.npz"), [out], [(confirm["chip"] or {}).get(out)], "out")
    finding = {**{k: v for k, v in loc.summary().items() if k != "boundaries"},
               "tolerance": tolerance_for(board.provider), "output": out, "inputs": in_names}
    fingerprint = {"board": board.spec.public(), "device": board.device, "runtime": board.device.get("onnxruntime"),
                   "provider": board.provider, "providers": list(board.providers or []),
                   "options": {"threads": board.threads, "environment": board.environment,
                               "provider_options": board.provider_options}, "finding": finding}
    write_atomic(os.path.join(folder, "fingerprint.json"), json.dumps(fingerprint, indent=1, default=str))
    write_atomic(os.path.join(folder, "README.md"), _readme(folder, finding, board_arg))
    return folder


def read_bundle(folder: str) -> Tuple[onnx.ModelProto, List[str], List[np.ndarray], str, np.ndarray]:
    """(model, input names, input arrays, output name, expected output) of a bundle; BadInput when it is
    not one."""
    missing = [f for f in FILES[:3] + ("fingerprint.json",) if not os.path.isfile(os.path.join(folder, f))]
    if missing:
        raise BadInput(f"'{folder}' is not a repro bundle: it lacks {', '.join(missing)}.",
                       "Pass a repro/<op>-<n> folder written by `xqhil localize`.")
    try:
        with open(os.path.join(folder, "fingerprint.json"), encoding="utf-8") as handle:
            finding = json.load(handle)["finding"]
        names, out = list(finding["inputs"]), str(finding["output"])
        with np.load(os.path.join(folder, "inputs.npz"), allow_pickle=False) as data:
            arrays = [data[f"in{i}"] for i in range(len(names))]
        with np.load(os.path.join(folder, "expected_pc.npz"), allow_pickle=False) as data:
            expected = data["out0"]
        model = onnx.load(os.path.join(folder, "model.onnx"))
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise BadInput(f"repro bundle '{folder}' is damaged: {type(exc).__name__}: {exc}.") from None
    return model, names, arrays, out, expected


def replay(folder: str, board: Board) -> Dict[str, object]:
    """Run the bundle's subgraph on ``board``; ``departs`` says whether the chip still differs from the PC."""
    model, names, arrays, out, expected = read_bundle(folder)
    chip, error = board.run(model, "int8-repro", names, arrays)
    if chip is None:
        return {"departs": True, "error": error, "board_runs": board.runs}
    diff = difference(expected, chip[out], tolerance_for(board.provider))
    return {**diff, "output": out, "provider": board.provider, "board_runs": board.runs}
