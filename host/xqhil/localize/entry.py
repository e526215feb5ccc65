"""``xqhil localize cfg.json`` and the automatic localisation after a failed ``quantize-and-verify``."""
from __future__ import annotations

import json
import os
from typing import Dict, List, Optional, Sequence

import numpy as np
import onnx

from ..errors import BadInput, HilError
from ..report import write_atomic
from .bundle import write_bundle
from .core import Localisation, localize
from .runs import Board


def _load_data(config: str):
    from xquant.config import load_config

    from ..verify_config import load_verify_data, parse_verify_params

    cfg, _ = load_config(config)
    params = parse_verify_params(cfg.extra_sections.get("verify_parameters"), cfg.base_dir,
                                 len(cfg.calibration.input_parameters))
    return cfg, load_verify_data(cfg, params, None)


def _finish(loc: Localisation, board: Board, board_arg: str, out: str) -> Dict[str, object]:
    summary = loc.summary()
    summary["bundle"] = None
    if loc.boundary is not None and loc.confirm:
        summary["bundle"] = write_bundle(os.path.abspath(os.path.join(out, "repro")), loc, board, board_arg)
    os.makedirs(out, exist_ok=True)
    write_atomic(os.path.join(out, "localize.json"), json.dumps(summary, indent=1, default=str) + "\n")
    return summary


def _run(model, names, arrays, board: Board, **kwargs) -> Localisation:
    try:
        return localize(model, names, arrays, board, **kwargs)
    except RuntimeError as exc:
        raise HilError(f"localisation on the board failed: {exc}", step="localize") from None


def localize_config(config: str, board: Board, board_arg: str, qmodel: Optional[str] = None,
                    out: Optional[str] = None, bisect: bool = False, top: int = 4) -> Dict[str, object]:
    cfg, data = _load_data(config)
    path = os.path.abspath(qmodel) if qmodel else cfg.model.output_model
    if not os.path.isfile(path):
        raise BadInput(f"INT8 model '{path}' not found.", "Pass --qmodel, or quantize first.")
    model = onnx.load(path)
    fp32 = _fp32(cfg.model.onnx_model)
    loc = _run(model, data.names, data.arrays, board, bisect=bisect, top=top, threads=board.threads, fp32=fp32)
    return _finish(loc, board, board_arg, out or cfg.model.working_dir)


def _fp32(path: Optional[str]) -> Optional[onnx.ModelProto]:
    return onnx.load(path) if path and os.path.isfile(path) else None


def localize_after_verify(int8_path: str, names: Sequence[str], arrays: Sequence[np.ndarray],
                          out_names: List[str], pc_int8: list, chip_int8: list, board: Board, board_arg: str,
                          out: str, fp32_path: Optional[str] = None, device: Optional[dict] = None
                          ) -> Dict[str, object]:
    """Localise from the verify run's own INT8 outputs (no extra run to pick samples); ``device``: the verify
    run's fingerprint (its execution provider sets the tolerance before the first localisation run)."""
    if device:
        board.device, board.provider = dict(device), str(device.get("execution_provider") or "")
    model = onnx.load(int8_path)
    loc = _run(model, names, arrays, board, pc_outputs=dict(zip(out_names, pc_int8)),
               chip_outputs=dict(zip(out_names, chip_int8)), threads=board.threads, fp32=_fp32(fp32_path))
    return _finish(loc, board, board_arg, out)
