"""Localisation of a chip-runtime bug: pick samples -> expose boundaries -> compare in topological order ->
confirm on a cut subgraph -> (bisect when exposure is refused or changes the result) -> finding.

Board runs are counted: exposing costs one run, confirming one more; bisection costs ceil(log2(B + 1))
runs for B boundaries, plus the confirmation.
"""
from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from typing import Dict, List, Optional, Sequence

import numpy as np
import onnx

from xquant.graph_cut import Boundary, boundaries, cut, dequantized, expose

from .compare import difference, pick_samples, tolerance_for
from .layers import fp32_sources, layer_errors
from .runs import Board, Outputs, feed, run_pc

log = logging.getLogger(__name__)


@dataclass
class Localisation:
    status: str  # clean | localised | unconfirmed | not-found
    method: str = ""  # expose | bisect
    boundary: Optional[Boundary] = None
    samples: List[int] = field(default_factory=list)
    board_runs: int = 0
    seconds: float = 0.0
    notes: List[str] = field(default_factory=list)
    confirm: Dict[str, object] = field(default_factory=dict)  # the cut subgraph and its four tensor sets
    compared: List[Dict[str, object]] = field(default_factory=list)  # per boundary, topological order
    layers: Dict[str, object] = field(default_factory=dict)  # quantization vs runtime error (layers.py)
    pc: Dict[str, np.ndarray] = field(default_factory=dict, repr=False)  # PC INT8 boundary values

    def summary(self) -> Dict[str, object]:
        found = self.boundary
        return {"status": self.status, "method": self.method, "samples": self.samples,
                "board_runs": self.board_runs, "seconds": round(self.seconds, 3), "notes": self.notes,
                "op": found.op if found else None, "node": found.node if found else None,
                "boundary": found.tensor if found else None,
                "region_ops": [list(o) for o in found.ops] if found else [],
                "confirmed": self.status == "localised", "boundaries": self.compared, "layers": self.layers}


def _departs(pc: Outputs, chip: Outputs, names: Sequence[str], tol) -> bool:
    return any(difference(pc[n], chip[n], tol)["departs"] for n in names)


def first_divergence(bounds: Sequence[Boundary], pc: Outputs, chip: Outputs, tol, compared: list):
    """The first boundary (topological order) whose chip value departs while every boundary its region
    reads agrees; fills ``compared`` with one row per boundary."""
    departed = set()
    found = None
    for b in bounds:
        diff = difference(pc[b.tensor], chip[b.tensor], tol)
        compared.append({"tensor": b.tensor, "op": b.op, "node": b.node, **diff})
        if diff["departs"]:
            departed.add(b.tensor)
            if found is None and not departed.intersection(b.inputs):
                found = b
    return found


def _values(pc: Outputs, names: Sequence[str], arrays: Sequence[np.ndarray]) -> Outputs:
    values = dict(pc)
    values.update(zip(names, arrays))
    return values


def _bisect(model, bounds, values: Outputs, board: Board, tol, threads: int) -> Optional[Boundary]:
    """The boundary whose region holds the fault: the largest k such that the model cut after the first k
    boundaries (the PC's tensors fed at the cut) still departs on the chip."""
    outputs = [o.name for o in model.graph.output]
    chain = [b for b in bounds if b.tensor not in outputs]
    lo, hi = 0, len(chain) + 1  # S(0), the whole model, departs; S(len+1) is nothing
    while hi - lo > 1:
        mid = (lo + hi) // 2
        stop = {b.tensor for b in chain[:mid]}
        sub = cut(model, stop, outputs)
        names, arrays = feed(sub, values)
        chip, error = board.run(sub, "int8-suffix", names, arrays)
        if chip is None:
            raise RuntimeError(f"the board cannot run the model cut after {mid} boundaries: {error}")
        pc = run_pc(sub, "cut INT8 model", names, arrays, threads)
        if _departs(pc, chip, outputs, tol):
            lo = mid
        else:
            hi = mid
    if lo < len(chain):
        return chain[lo]
    return next((b for b in bounds if b.tensor in outputs), None)  # the float tail after the last boundary


def _confirm(model, found: Boundary, values: Outputs, board: Board, tol, threads: int, float_out: bool):
    """Cut the region that makes ``found``, feed it the PC's tensors on the board: does the chip depart?"""
    out = dequantized(model, found.tensor) if float_out else found.tensor
    sub = cut(model, set(found.inputs), [out])
    names, arrays = feed(sub, values)
    chip, error = board.run(sub, "int8-cut", names, arrays)
    pc = run_pc(sub, "cut INT8 model", names, arrays, threads)
    bundle = {"model": sub, "inputs": dict(zip(names, arrays)), "pc": pc, "chip": chip, "output": out}
    if chip is None:
        return False, bundle, f"the board could not run the cut subgraph: {error}"
    diff = difference(pc[out], chip[out], tol)
    bundle["difference"] = diff
    return bool(diff["departs"]), bundle, ""


def localize(model: onnx.ModelProto, names: Sequence[str], arrays: Sequence[np.ndarray], board: Board,
             pc_outputs: Optional[Outputs] = None, chip_outputs: Optional[Outputs] = None, top: int = 4,
             bisect: bool = False, threads: int = 0, fp32: Optional[onnx.ModelProto] = None) -> Localisation:
    """Find the first boundary where the chip departs from the PC (see module docstring)."""
    start, runs0 = time.perf_counter(), board.runs
    result = Localisation("clean")
    if pc_outputs is None:
        pc_outputs = run_pc(model, "INT8 model", names, arrays, threads)
    if chip_outputs is None:
        chip_outputs, error = board.run(model, "int8", names, arrays)
        if chip_outputs is None:
            raise RuntimeError(f"the board cannot run the INT8 model: {error}")
    tol = tolerance_for(board.provider)
    outs = [o.name for o in model.graph.output]
    result.samples = pick_samples([pc_outputs[n] for n in outs], [chip_outputs[n] for n in outs], top)
    departs = _departs({n: pc_outputs[n][result.samples] for n in outs},
                       {n: chip_outputs[n][result.samples] for n in outs}, outs, tol) if result.samples else False
    if departs:
        picked = [a[result.samples] for a in arrays]
        chip = _locate(model, names, picked, board, tol, bisect, threads,
                       {n: chip_outputs[n][result.samples] for n in outs}, result)
        result.layers = _layers(model, fp32, names, picked, chip, result.pc, threads)
    elif result.samples:
        result.notes.append("chip and PC differ only within the provider's tolerance")
        result.samples = []
    result.board_runs = board.runs - runs0
    result.seconds = time.perf_counter() - start
    return result


def _layers(model, fp32, names, arrays, chip, pc, threads: int) -> Dict[str, object]:
    """Per-boundary quantization error (PC INT8 vs PC FP32) and runtime error (chip vs PC INT8)."""
    bounds = boundaries(model)
    fp32_values, sources = None, {}
    if fp32 is not None:
        try:
            sources = fp32_sources(model, bounds, fp32)
            fp32_values = run_pc(expose(fp32, list(sources.values())), "FP32 model", names, arrays, threads)
        except Exception as exc:  # the table is a by-product: the FP32 model's failure must not stop it
            log.warning("per-layer quantization error left out: %s", exc)
    return layer_errors(model, bounds, pc, chip, fp32_values, sources)


def _locate(model, names, arrays, board: Board, tol, bisect: bool, threads: int, chip_final: Outputs,
            result: Localisation) -> Optional[Outputs]:
    bounds = boundaries(model)
    exposed = expose(model, [b.tensor for b in bounds])
    pc = run_pc(exposed, "INT8 model with its boundaries exposed", names, arrays, threads)
    result.pc = pc
    values = _values(pc, names, arrays)
    chip = None
    if not bisect:
        chip, error = board.run(exposed, "int8-exposed", names, arrays)
        outs = [o.name for o in model.graph.output]
        if chip is None:
            result.notes.append(f"the runtime refused the model with its boundaries exposed ({error}): bisection")
        elif _departs(chip_final, chip, outs, tolerance_for("CPUExecutionProvider")):
            result.notes.append("exposing the boundaries changed the chip's outputs: bisection")
            chip = None
    if chip is not None:
        result.method = "expose"
        found = first_divergence(bounds, pc, chip, tol, result.compared)
    else:
        result.method = "bisect"
        found = _bisect(model, bounds, values, board, tol, threads)
    if found is None:
        result.status = "not-found"
        result.notes.append("no boundary departs although the outputs do")
        return chip
    result.boundary = found
    confirmed, bundle, error = _confirm(model, found, values, board, tol, threads, result.method == "bisect")
    result.confirm = bundle
    result.status = "localised" if confirmed else "unconfirmed"
    if error:
        result.notes.append(error)
    elif not confirmed:
        result.notes.append("the cut subgraph fed the PC's tensors agrees with the PC on the chip")
    return chip
