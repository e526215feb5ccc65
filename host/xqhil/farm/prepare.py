"""The work every board of a matrix shares, done once in the farm process rather than once per job: each
model quantized once, and its PC side (config, data, FP32 and INT8 outputs on the PC: ``verify.host_side``)
once per model x threads. A worker gets a PC side with its first job of that key and keeps it.

A PC side that fails here (bad data, a model the PC cannot run) is left to the jobs: each reports the error
itself, as a job without a shared PC side would."""
from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from typing import Any, Dict, Iterable, List, Tuple

from xquant.errors import XQuantError

from ..errors import XqhilError
from ..verify import HostSide, VerifyOptions, host_side
from .matrix import Job, Matrix
from .records import model_section

log = logging.getLogger(__name__)


@dataclass
class Shared:
    qmodels: Dict[str, str] = field(default_factory=dict)  # config -> its quantized model
    models: Dict[str, Dict[str, Any]] = field(default_factory=dict)  # config -> history "model" section
    hosts: Dict[str, HostSide] = field(default_factory=dict)  # host_key -> PC side
    made: List[Dict[str, Any]] = field(default_factory=list)  # what was computed, in order, with seconds


def host_key(matrix: Matrix, job: Job, place: str) -> str:
    """Jobs with the same key share a PC side: same config, same threads (the job's, else the place's)."""
    return f"{job.model}|threads={job.threads}|place_threads={matrix.spec_template(place).threads}"


def quantize(shared: Shared, job: Job) -> None:
    from xquant.config import load_config

    if job.model in shared.qmodels:
        return
    cfg = load_config(job.model)[0]
    t = time.perf_counter()
    if job.qmodel:
        shared.qmodels[job.model] = job.qmodel
    else:
        import xquant

        xquant.quantize_onnx_model(job.model)
        shared.qmodels[job.model] = cfg.model.output_model
        shared.made.append({"what": "quantize", "config": job.model, "s": round(time.perf_counter() - t, 3)})
    shared.models[job.model] = model_section(job.model, cfg.model.onnx_model, shared.qmodels[job.model])


def prepare(matrix: Matrix, pairs: Iterable[Tuple[Job, str]], shared: Shared) -> None:
    """Every model of the matrix quantized (once), and one PC side per key of the (job, place) pairs given."""
    for job in matrix.jobs:
        quantize(shared, job)
    for job, place in pairs:
        key = host_key(matrix, job, place)
        if key in shared.hosts:
            continue
        t = time.perf_counter()
        opts = VerifyOptions(config=job.model, board=matrix.spec_template(place), qmodel=shared.qmodels[job.model],
                             out=matrix.out, quiet=True, threads=job.threads)
        try:
            shared.hosts[key] = host_side(opts)
        except (XqhilError, XQuantError) as exc:
            log.debug("PC side of %s left to its jobs: %s", key, exc)
            continue
        shared.made.append({"what": "pc", "key": key, "s": round(time.perf_counter() - t, 3)})
