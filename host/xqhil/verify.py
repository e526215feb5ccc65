"""``quantize-and-verify``: quantize (or reuse --qmodel), run FP32 and INT8 on the PC and on the board,
compare, and write verify.md / verify.json. Returns the report; the CLI turns its verdict into an exit code."""
from __future__ import annotations

import datetime as _dt
import hashlib
import json
import logging
import os
import time
from dataclasses import dataclass, field
from typing import Dict, List, Optional, Sequence, Tuple

import numpy as np
from xquant.errors import ModelError
from xquant.model_io import check_writable, load_model
from xquant.modes import LABELS, mode_of

from .boards.spec import BoardSpec
from .compare import (RuntimeLimits, accuracy_summary, fidelity_summary, judge, nonfinite_reasons,
                      nonfinite_summary, runtime_summary, shape_problems, top1, verdict_of)
from .errors import BadInput
from .progress import Stages
from .remeasure import LatencyProbe, board_latency
from .protocol import sha256_file, standard_tasks
from .reference import choose_batch, input_layout, run_on_pc, static_classes
from .report import SCHEMA, write_reports
from .session import BoardRun, BoardSession
from .transport import Deadlines
from .verify_config import LabelFile, VerifyData, VerifyParams, load_verify_data, parse_verify_params, read_label_file

log = logging.getLogger(__name__)
# the data is read before quantizing, so a bad data or label file costs no quantization
STAGES = ("load config", "load data", "quantize", "run on PC", "run on board", "compare", "write report")


@dataclass
class VerifyOptions:
    config: str
    board: BoardSpec
    qmodel: Optional[str] = None
    out: Optional[str] = None
    deadlines: Deadlines = field(default_factory=Deadlines)
    retries: int = 2
    quiet: bool = False
    threads: Optional[int] = None
    providers: Optional[Sequence[str]] = None
    localize: str = "auto"  # auto: localise a chip-runtime finding to its op (see xqhil/localize); never
    board_arg: Optional[str] = None  # the --board text, for the repro bundle's replay command
    runtime_options: tuple = ({}, {})  # (environment, provider options) for the board's runtime
    session: Optional[BoardSession] = None  # the board session to run on (a farm lease's); None: a new one
    host: Optional["HostSide"] = None  # the PC side already computed (host_side) for this config and threads


@dataclass
class HostSide:
    """What a verify computes on the PC before the board, the same for every board: the config, the data,
    the quantized model and the PC's FP32 and INT8 outputs. A farm computes it once per model x threads."""
    cfg: object
    params: VerifyParams
    mode: str
    data: VerifyData
    fp32: str
    int8: str
    batch: int
    fixed: bool
    axes: list
    threads: int
    pc_fp32: list
    pc_int8: list
    names: List[str]
    conversion: Optional[dict] = None  # FP16 / dynamic quantization: what xquant kept float32 and why


def _load(opts: VerifyOptions):
    """The config, its verify_parameters and its labels, all checked before anything runs."""
    from xquant.config import load_config

    cfg, _ = load_config(opts.config)
    params = parse_verify_params(cfg.extra_sections.get("verify_parameters"), cfg.base_dir,
                                 len(cfg.calibration.input_parameters))
    labels = read_label_file(params)
    classes = static_classes(cfg.model.onnx_model) if labels is not None else None
    if classes is not None:
        labels.check_classes(classes, "from the FP32 model's output shape")
    # where results go, before any work
    check_writable(opts.out or cfg.model.working_dir, "--out" if opts.out else
                   "model_parameters.working_dir (reports; or pass --out)", folder=True)
    if opts.qmodel:
        _check_qmodel(opts.qmodel)
    else:
        check_writable(cfg.model.output_model, "the quantized model (model_parameters.working_dir)")
    return cfg, params, labels, classes is not None


def _mode(cfg) -> str:
    """int8, dynq or fp16 (precision_level 0-2, 3, 4); simplify-only (100) has nothing to verify."""
    mode = mode_of(cfg.quantization.precision_level)
    if mode == "simplify":
        raise BadInput("precision_level 100 only simplifies the model: there is no quantized model to verify.",
                       "Use precision_level 0-2 (INT8), 3 (dynamic quantization) or 4 (FP16).")
    return mode


def _check_qmodel(qmodel: str) -> None:
    path = os.path.abspath(qmodel)
    if not os.path.isfile(path):
        raise BadInput(f"--qmodel '{qmodel}' not found (resolved to '{path}').")
    try:
        load_model(path, load_external_data=False)
    except ModelError as exc:
        raise BadInput(f"--qmodel: {exc.one_line()}") from None


def _quantize(opts: VerifyOptions, cfg) -> Tuple[str, Optional[dict]]:
    """The quantized model's path and, for the float modes, what the conversion kept float32 and why."""
    if opts.qmodel:
        return os.path.abspath(opts.qmodel), None
    from xquant.quantize import run_quantization

    result = run_quantization(opts.config, summary=False)
    info = getattr(result, "info", None)
    return cfg.model.output_model, (json.loads(json.dumps(info, default=str)) if info else None)


def _trim(data: VerifyData, batch: int) -> None:
    count = int(data.arrays[0].shape[0])
    keep = count - count % batch
    if keep == 0:
        raise BadInput(f"{count} verification sample(s) cannot fill one batch of {batch} (the model's fixed batch).")
    if keep != count:
        data.notes.append(f"{count - keep} sample(s) dropped to fill whole batches of {batch}")
        data.arrays = [a[:keep] for a in data.arrays]
        if data.labels is not None:
            data.labels = data.labels[:keep]


def _board_errors(run: BoardRun, label: str = "INT8") -> Dict[str, str]:
    errors = {}
    for model_id in ("fp32", "int8"):
        what = f"{label if model_id == 'int8' else 'FP32'} model"
        entry = run.model(model_id)
        if not entry.get("ok"):
            errors[what] = f"load failed: {entry.get('error')}"
            continue
        for mode in ("accuracy", "performance"):
            task = run.task(f"{model_id}-{mode}")
            if not task.get("ok"):
                errors[what] = f"{mode} run failed: {task.get('error')}"
                break
    return errors


def _integrity(names: List[str], runs: Dict[str, Optional[list]], latency: dict) -> dict:
    """Chip results that cannot be compared or trusted: a wrong output count or shape, NaN/Inf values."""
    shapes = shape_problems(names, runs)
    nonfinite = nonfinite_summary(names, runs)
    latencies = [f"the chip's {what.upper()} latency holds NaN/Inf in {', '.join(fields)}"
            for what, fields in latency.get("nonfinite", {}).items()]
    return {"output_shapes": shapes, "nonfinite_outputs": nonfinite,
            "broken": {"output-shape": list(shapes.values()), "nonfinite-output": nonfinite_reasons(nonfinite),
                       "nonfinite-latency": latencies}}


def _compare(params: VerifyParams, data: VerifyData, names: List[str], runs: Dict[str, Optional[list]],
             provider: str, latency: dict, mode: str = "int8"):
    integrity = _integrity(names, runs, latency)
    usable = {k: (None if k in integrity["output_shapes"] else v) for k, v in runs.items()}
    fidelity = fidelity_summary(names, usable)
    preds = {k: (top1(v[0]) if v is not None else None) for k, v in usable.items()}
    accuracy = accuracy_summary(preds, data.labels, params.accuracy_tolerance, params.bug_threshold)
    accuracy["top1_output"] = names[0]
    limits = RuntimeLimits(params.agreement_tolerance, params.agreement_bug_threshold, params.runtime_snr_warn_db,
                           params.runtime_snr_fail_db, mode)
    runtime = runtime_summary(accuracy, fidelity, provider, limits)
    return fidelity, accuracy, runtime, integrity


def _check_classes(labels: Optional[LabelFile], known: bool, pc_fp32: list) -> None:
    """Labels against the classes of the PC FP32 outputs, when the model's declared shape did not tell."""
    if labels is not None and not known:
        labels.check_classes(int(np.prod(pc_fp32[0].shape[1:])), "from the PC FP32 outputs")


def _device(run: BoardRun, spec: BoardSpec) -> dict:
    device = dict(run.device)
    int8 = run.model("int8") if run.model("int8").get("ok") else run.model("fp32")
    device["execution_provider"] = (int8.get("providers") or ["n/a"])[0]
    device["emulated"] = bool(spec.emulated) if spec.emulated is not None else bool(device.get("emulated"))
    return device


def _model_section(opts: VerifyOptions, fp32: str, int8: str) -> dict:
    config_sha = sha256_file(opts.config) if os.path.isfile(opts.config) else hashlib.sha256(
        json.dumps(opts.config, sort_keys=True).encode()).hexdigest()
    name = os.path.basename(fp32)
    return {"name": name[:-5] if name.endswith(".onnx") else name, "fp32_path": fp32, "int8_path": int8,
            "fp32_sha256": sha256_file(fp32), "int8_sha256": sha256_file(int8), "config_sha256": config_sha}


def _layout(fp32: str, int8: str, names: List[str]) -> List[Optional[int]]:
    """Each input's batch axis (None: no batch axis), the same for both models."""
    axes = input_layout(fp32, names)
    if input_layout(int8, names) != axes:
        raise BadInput(f"the FP32 and INT8 models stack samples on different input axes ({axes} vs "
                       f"{input_layout(int8, names)}).", "Verify the INT8 model quantized from this FP32 model.")
    return axes


def _pc_runs(stages: Stages, fp32: str, int8: str, data: VerifyData, batch: int, fixed: bool, threads: int,
             axes):
    """PC FP32 and INT8 outputs, their names and the batch size they ran with: a model that declares a free
    batch but only runs one sample (an export that hard-codes batch 1 in a Reshape; xquant pins it the same
    way) runs with batch 1, with a note."""
    try:
        return _pc_pair(stages, fp32, int8, data, batch, threads, axes) + (batch,)
    except BadInput as exc:
        if fixed or batch == 1:
            raise
        first = exc
    try:
        result = _pc_pair(stages, fp32, int8, data, 1, threads, axes)
    except BadInput:
        raise first from None
    reason = str(first.__cause__ or first).strip().splitlines()[0][:160]
    log.warning("the model declares a free batch but fails on %d samples and runs on 1 (%s): verifying with "
                "batch 1", batch, reason)
    data.notes.append(f"the model declares a free batch but fails on batches of {batch}: verified with batch 1")
    return result + (1,)


def _pc_pair(stages: Stages, fp32: str, int8: str, data: VerifyData, batch: int, threads: int, axes):
    stages.detail("FP32")
    pc_fp32, names = run_on_pc(fp32, "FP32 model", data.names, data.arrays, batch, threads, axes)
    stages.detail("INT8")
    pc_int8, int8_names = run_on_pc(int8, "INT8 model", data.names, data.arrays, batch, threads, axes)
    if len(int8_names) != len(names):
        raise BadInput(f"the INT8 model has {len(int8_names)} output(s) but the FP32 model has {len(names)}.",
                       "Quantize without truncation, or verify the truncated FP32 model.")
    for name, ref, got in zip(names, pc_fp32, pc_int8):
        if ref.shape != got.shape:
            raise BadInput(f"the INT8 model's output '{name}' has shape {list(got.shape[1:])} per sample on the PC, "
                           f"the FP32 model's {list(ref.shape[1:])}: the quantized model changed the output.",
                           "Re-quantize it (a quantizer defect when xquant made it) before verifying on a board.")
    return pc_fp32, pc_int8, names


RUNTIME_RULES = ("int8-agreement", "int8-runtime")



def _localize(opts: VerifyOptions, fp32: str, int8: str, data: VerifyData, names: List[str], runs: dict,
              providers, threads, findings: List[dict], out_dir: str, device: dict) -> Optional[dict]:
    """After a chip-runtime finding (fail or warn): the first divergent op and its repro bundle; the finding's
    reason names the op. A localisation that cannot run leaves the verdict as it was, with a note."""
    flagged = [f for f in findings if f["rule"] in RUNTIME_RULES]
    if opts.localize != "auto" or not flagged or runs.get("chip_int8") is None:
        return None
    from .errors import XqhilError
    from .localize import Board, localize_after_verify

    board = Board(opts.board, opts.deadlines, opts.retries, providers, threads, *opts.runtime_options)
    try:
        result = localize_after_verify(int8, data.names, data.arrays, names, runs["pc_int8"], runs["chip_int8"],
                                       board, opts.board_arg or opts.board.name, out_dir, fp32, device)
    except XqhilError as exc:
        return {"status": "error", "error": exc.one_line()}
    except Exception as exc:  # noqa: BLE001 - a localisation bug must not cost the verify report
        log.warning("localisation failed", exc_info=True)
        return {"status": "error", "error": f"{type(exc).__name__}: {exc}"}
    if result.get("op"):
        where = f"; localised to {result['op']} '{result['node']}' ({result['status']}"
        where += f", repro: {result['bundle']})" if result.get("bundle") else ")"
        for f in flagged:
            f["reason"] += where
    return result


def host_side(opts: VerifyOptions, stages: Optional[Stages] = None) -> HostSide:
    """Load the config and data, quantize (or take --qmodel) and run both models on the PC."""
    stages = stages or Stages(STAGES, True)
    stages.start("load config")
    cfg, params, labels, classes_known = _load(opts)
    mode = _mode(cfg)
    stages.start("load data")
    data = load_verify_data(cfg, params, labels)
    stages.start("quantize")
    int8, conversion = _quantize(opts, cfg)
    fp32 = cfg.model.onnx_model
    batch, fixed = choose_batch(fp32, int8, params.batch_size)
    axes = _layout(fp32, int8, data.names)
    if fixed:
        _trim(data, batch)
    threads = opts.threads if opts.threads is not None else (opts.board.threads or params.threads)
    stages.start("run on PC")
    pc_fp32, pc_int8, names, batch = _pc_runs(stages, fp32, int8, data, batch, fixed, threads, axes)
    _check_classes(labels, classes_known, pc_fp32)
    return HostSide(cfg, params, mode, data, fp32, int8, batch, fixed, axes, threads, pc_fp32, pc_int8, names,
                    conversion)


def quantize_and_verify(opts: VerifyOptions) -> dict:
    return verify_and_probe(opts)[0]


def verify_and_probe(opts: VerifyOptions) -> Tuple[dict, Optional[LatencyProbe]]:
    """The report, and the run's latency measurement to repeat (None when the board timed nothing)."""
    started, created = time.perf_counter(), _dt.datetime.now(_dt.timezone.utc)
    stages = Stages(STAGES, opts.quiet)
    try:
        if opts.host is None:
            host = host_side(opts, stages)
        else:
            host = opts.host
            check_writable(opts.out or host.cfg.model.working_dir, "--out", folder=True)
        cfg, params, mode, data, fp32, int8 = host.cfg, host.params, host.mode, host.data, host.fp32, host.int8
        batch, fixed, axes, threads, names = host.batch, host.fixed, host.axes, host.threads, host.names
        pc_fp32, pc_int8 = host.pc_fp32, host.pc_int8
        stages.start("run on board")
        session = opts.session or BoardSession(opts.board, opts.deadlines, opts.retries, progress=stages.detail)
        providers = opts.providers or opts.board.providers or params.providers
        perf_batch = batch if fixed else 1
        run = session.run({"fp32": fp32, "int8": int8}, data.names, data.arrays,
                          standard_tasks(params.warmup, params.repeat, batch, perf_batch=perf_batch,
                                         min_time_s=params.min_time_s),
                          providers, threads,
                          *opts.runtime_options, batch_axes=axes)
        probe = LatencyProbe(opts.board, {"fp32": fp32, "int8": int8}, list(data.names),
                             [a[:perf_batch] for a in data.arrays], params.warmup, params.repeat, threads,
                             params.min_time_s, providers, opts.runtime_options, axes, opts.deadlines, opts.retries)
        stages.start("compare")
        runs = {"pc_fp32": pc_fp32, "pc_int8": pc_int8, "chip_fp32": run.outputs.get("fp32-accuracy"),
                "chip_int8": run.outputs.get("int8-accuracy")}
        device = _device(run, opts.board)
        latency = board_latency(run, threads, device["emulated"])
        fidelity, accuracy, runtime, integrity = _compare(params, data, names, runs, device["execution_provider"],
                                                          latency, mode)
        findings = judge(accuracy, fidelity, _board_errors(run, LABELS[mode]), runtime=runtime,
                         broken=integrity.pop("broken"), label=LABELS[mode])
        if findings and opts.localize == "auto":
            stages.detail("localize")
        localization = _localize(opts, fp32, int8, data, names, runs, providers, threads, findings,
                                 opts.out or cfg.model.working_dir, device)
        stages.start("write report")
        report = {
            "schema": SCHEMA, "mode": mode, "verdict": verdict_of(findings), "reasons": [f["reason"] for f in findings],
            "rules": findings,
            "created": created.isoformat(timespec="seconds").replace("+00:00", "Z"), "duration_s": 0.0,
            "board": opts.board.public(), "device": device, "model": _model_section(opts, fp32, int8),
            "accuracy": accuracy, "fidelity": fidelity, "runtime": runtime, "integrity": integrity, "latency": latency,
            "localization": localization, "conversion": host.conversion,
            "data": {"source": data.source, "samples": int(data.arrays[0].shape[0]), "batch_size": batch},
            "harness": {k: round(v, 4) for k, v in run.timings.items()},
            "notes": data.notes + ([] if data.labels is not None else
                                   ["no labels: top-1 agreement with the PC FP32 model stands in for accuracy"]),
        }
        report["duration_s"] = round(time.perf_counter() - started, 3)
        write_reports(report, opts.out or cfg.model.working_dir)
        return report, probe
    finally:
        stages.close()

