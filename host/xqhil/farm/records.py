"""The farm's records in the run history: every verify report (with its place, job, attempt and whether the
board is quarantined), and every infrastructure failure of a job on a board as a run with verdict ``INFRA``
and ``{"infra": {"error", "exit", "status"}}`` (not a measurement: baselines, regression checks and pins
skip it; the dashboard shows it as board health). Runs keep the key (model, FP32 hash, board, config) of
the job's verify runs, so a board's failures line up with its measurements."""
from __future__ import annotations

import datetime as _dt
import json
import os
from typing import Any, Dict, Optional

from ..history.doc import INFRA
from ..protocol import sha256_file
from ..report import SCHEMA


def model_section(config: str, fp32: str, int8: str) -> Dict[str, Any]:
    """The ``model`` section a verify report of this job would carry (verify._model_section)."""
    name = os.path.basename(fp32)
    return {"name": name[:-5] if name.endswith(".onnx") else name, "fp32_path": fp32, "int8_path": int8,
            "fp32_sha256": sha256_file(fp32) if os.path.isfile(fp32) else None,
            "int8_sha256": sha256_file(int8) if os.path.isfile(int8) else None,
            "config_sha256": sha256_file(config)}


def _farm(result: Dict[str, Any], quarantined: bool) -> Dict[str, Any]:
    return {"place": result["place"], "job": result["job"], "attempt": result["attempt"],
            "quarantined": quarantined}


def _store(doc: Dict[str, Any], result: Dict[str, Any], db: Optional[str]) -> None:
    from ..history.reporting import record_verify_report

    summary = record_verify_report(doc, db)
    result["recorded"] = bool(summary.get("recorded"))
    result["run_id"] = summary.get("run_id")


def record_report(result: Dict[str, Any], db: Optional[str], quarantined: bool) -> None:
    """Record the verify report of a job that ran (pass, warn or fail)."""
    with open(result["report"], encoding="utf-8") as handle:
        report = json.load(handle)
    report.setdefault("farm", _farm(result, quarantined))
    _store(report, result, db)


def infra_doc(result: Dict[str, Any], model: Dict[str, Any], quarantined: bool) -> Dict[str, Any]:
    created = _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds").replace("+00:00", "Z")
    board = result.get("board") or {"kind": "ssh", "name": f"labgrid:{result['place']}"}
    return {"schema": SCHEMA, "verdict": INFRA, "reasons": [result["message"]], "created": created,
            "board": board, "device": dict(result.get("fingerprint") or {}), "model": dict(model),
            "infra": {"error": result["message"], "exit": result["exit"], "status": result["status"]},
            "farm": _farm(result, quarantined), "harness": dict(result.get("timings") or {})}


def record_infra(result: Dict[str, Any], model: Dict[str, Any], db: Optional[str], quarantined: bool) -> None:
    """Record an infrastructure failure of a job on a board (exit 3: probe, connection, agent killed)."""
    _store(infra_doc(result, model, quarantined), result, db)
