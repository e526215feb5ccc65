"""The ``verify_parameters`` section of the config, and the verification data it names.

Keys: data_list_path (one list per model input, same rules and preprocessing as calibration),
label_list_path (one integer class per line, one line per data-list entry), max_samples, warmup, repeat,
min_time_s (default 1.0: the interleaved timed runs go on until they span this many seconds), threads,
accuracy_tolerance (default 0.5 points), bug_threshold (default 2.0 points), agreement_tolerance
(default 0.5 points), agreement_bug_threshold (default 2.0 points), runtime_snr_warn_db and
runtime_snr_fail_db (default: per execution provider, see compare/runtime.py), batch_size (accuracy mode;
default: 16 when the model's batch dimension is free, else 1), providers. Every threshold must be a finite
number of at least 0. Without a data list the held-back calibration files are used, and the report says so.
"""
from __future__ import annotations

import logging
import math
import os
from dataclasses import dataclass
from typing import Any, Dict, List, Optional, Tuple

import numpy as np
from xquant.model_io import read_text
from xquant.suggest import did_you_mean

from .boards.spec import check_providers
from .errors import BadInput

log = logging.getLogger(__name__)
SECTION = "verify_parameters"
KEYS = ("data_list_path", "label_list_path", "max_samples", "warmup", "repeat", "min_time_s", "threads",
        "accuracy_tolerance", "bug_threshold", "agreement_tolerance", "agreement_bug_threshold",
        "runtime_snr_warn_db", "runtime_snr_fail_db", "batch_size", "providers")


@dataclass(frozen=True)
class VerifyParams:
    data_list_path: Optional[Tuple[str, ...]] = None  # absolute, one per model input
    label_list_path: Optional[str] = None
    max_samples: int = 200
    warmup: int = 5
    repeat: int = 20
    min_time_s: float = 1.0  # the timed runs span at least this long: load changes average out (history.md)
    threads: int = 0
    accuracy_tolerance: float = 0.5
    bug_threshold: float = 2.0
    agreement_tolerance: float = 0.5  # points of chip INT8 vs PC INT8 top-1 disagreement: above -> warn
    agreement_bug_threshold: float = 2.0  # ... at or above -> chip-runtime bug
    runtime_snr_warn_db: Optional[float] = None  # chip INT8 vs PC INT8 SNR; None: the provider's default
    runtime_snr_fail_db: Optional[float] = None
    batch_size: Optional[int] = None
    providers: Optional[Tuple[str, ...]] = None


@dataclass
class VerifyData:
    names: List[str]  # model input names, in config order
    arrays: List[np.ndarray]  # [N, ...] per input, samples on axis 0, in the dtype the model declares
    labels: Optional[np.ndarray]
    source: str  # human description of where the samples come from
    notes: List[str]


def _number(body: dict, key: str, kind: type, default: Any, minimum: float) -> Any:
    value = body.get(key, default)
    where = f"{SECTION}.{key}"
    if value is None:
        return default
    if isinstance(value, bool) or not isinstance(value, (int, float)) or (kind is int and not isinstance(value, int)):
        raise BadInput(f"{where} must be a{'n integer' if kind is int else ' number'}, got {value!r}.")
    if not math.isfinite(value):
        raise BadInput(f"{where} must be a finite number, got {value!r}.", "NaN and Infinity are not thresholds.")
    if value < minimum:
        raise BadInput(f"{where} must be at least {minimum}, got {value!r}.")
    return kind(value)


def _path(value: Any, base_dir: str, where: str) -> str:
    if not isinstance(value, str) or not value.strip():
        raise BadInput(f"{where} must be a path string, got {value!r}.")
    path = os.path.normpath(os.path.join(base_dir, os.path.expanduser(value.strip())))
    if not os.path.isfile(path):
        raise BadInput(f"{where} not found: '{value}' (resolved to '{path}').",
                       "Relative paths are read from the config file's folder.")
    return path


def _lists(value: Any, base_dir: str, inputs: int) -> Optional[Tuple[str, ...]]:
    if value is None or value == "" or value == []:
        return None
    items = [value] if isinstance(value, str) else value
    if not isinstance(items, list):
        raise BadInput(f"{SECTION}.data_list_path must be a path or a list of paths (one per model input).")
    if len(items) != inputs:
        raise BadInput(f"{SECTION}.data_list_path lists {len(items)} file(s) but the model has {inputs} input(s).",
                       "Give one list per model input, in the order of calibration_parameters.input_parametres.")
    return tuple(_path(v, base_dir, f"{SECTION}.data_list_path[{i}]") for i, v in enumerate(items))


def parse_verify_params(raw: Any, base_dir: str, inputs: int) -> VerifyParams:
    """Validate the raw section; unknown keys are warned about with the closest known key."""
    body = {} if raw is None else raw
    if not isinstance(body, dict):
        raise BadInput(f"{SECTION} must be a JSON object, got {type(body).__name__}.")
    for key in body:
        if key not in KEYS:
            close = did_you_mean(key, KEYS)
            log.warning("unknown key '%s' in %s is ignored%s", key, SECTION,
                        f"; did you mean '{close}'?" if close else "")
    lists = _lists(body.get("data_list_path"), base_dir, inputs)
    labels = body.get("label_list_path")
    if labels and not lists:
        raise BadInput(f"{SECTION}.label_list_path needs {SECTION}.data_list_path (labels align with its lines).")
    tolerance = _number(body, "accuracy_tolerance", float, 0.5, 0.0)
    bug = _number(body, "bug_threshold", float, 2.0, 0.0)
    if bug < tolerance:
        raise BadInput(f"{SECTION}.bug_threshold ({bug}) must not be below accuracy_tolerance ({tolerance}).")
    agree = _number(body, "agreement_tolerance", float, 0.5, 0.0)
    agree_bug = _number(body, "agreement_bug_threshold", float, 2.0, 0.0)
    if agree_bug < agree:
        raise BadInput(f"{SECTION}.agreement_bug_threshold ({agree_bug}) must not be below agreement_tolerance "
                       f"({agree}).")
    snr_warn = _number(body, "runtime_snr_warn_db", float, None, 0.0)
    snr_fail = _number(body, "runtime_snr_fail_db", float, None, 0.0)
    if snr_warn is not None and snr_fail is not None and snr_fail > snr_warn:
        raise BadInput(f"{SECTION}.runtime_snr_fail_db ({snr_fail}) must not be above runtime_snr_warn_db "
                       f"({snr_warn}).")
    providers = body.get("providers")
    if providers is not None and (not isinstance(providers, list) or not all(isinstance(p, str) for p in providers)):
        raise BadInput(f"{SECTION}.providers must be a list of execution provider names.")
    batch = body.get("batch_size")
    return VerifyParams(
        data_list_path=lists,
        label_list_path=_path(labels, base_dir, f"{SECTION}.label_list_path") if labels else None,
        max_samples=_number(body, "max_samples", int, 200, 1), warmup=_number(body, "warmup", int, 5, 0),
        repeat=_number(body, "repeat", int, 20, 1), min_time_s=_number(body, "min_time_s", float, 1.0, 0.0),
        threads=_number(body, "threads", int, 0, 0),
        accuracy_tolerance=tolerance, bug_threshold=bug, agreement_tolerance=agree,
        agreement_bug_threshold=agree_bug, runtime_snr_warn_db=snr_warn, runtime_snr_fail_db=snr_fail,
        batch_size=_number(body, "batch_size", int, None, 1) if batch is not None else None,
        providers=check_providers(providers, f"{SECTION}.providers") if providers else None,
    )


@dataclass(frozen=True)
class LabelFile:
    """The label list: one integer class per data-list entry, with the line each came from."""

    path: str
    values: np.ndarray  # int64
    lines: Tuple[int, ...]

    def check_classes(self, classes: int, how: str) -> None:
        """Every label is a class of the model (0 .. classes-1); ``how`` says where the count came from."""
        bad = np.flatnonzero((self.values < 0) | (self.values >= classes))
        if bad.size:
            i = int(bad[0])
            raise BadInput(f"{SECTION}.label_list_path '{self.path}' line {self.lines[i]}: class "
                           f"{int(self.values[i])} is not one of the model's {classes} classes (0-{classes - 1}, "
                           f"{how}); {bad.size} label(s) out of range.",
                           "Labels are 0-based class indices of the model's first output.")


def _parse_labels(path: str) -> Tuple[List[int], List[int]]:
    values, lines = [], []
    for number, line in enumerate(read_text(path, f"{SECTION}.label_list_path").splitlines(), 1):
        text = line.strip()
        if not text:
            continue
        try:
            values.append(int(text))
        except ValueError:
            raise BadInput(f"{SECTION}.label_list_path '{path}' line {number}: {text!r} is not an integer "
                           "class index.", "Put one integer class per line.") from None
        lines.append(number)
    return values, lines


def read_label_file(params: VerifyParams) -> Optional[LabelFile]:
    """The labels, checked before anything runs: integers, none negative, exactly one per data-list entry."""
    if not params.label_list_path or not params.data_list_path:
        return None
    from xquant.data import read_list_file

    path, data_list = params.label_list_path, params.data_list_path[0]
    values, lines = _parse_labels(path)
    entries = len(read_list_file(data_list))
    if len(values) > entries:
        raise BadInput(f"{SECTION}.label_list_path '{path}' line {lines[entries]}: label {entries + 1} has no "
                       f"sample: the data list '{data_list}' has {entries} entries, the label list "
                       f"{len(values)}.", "Labels must align line by line with the data list.")
    if len(values) < entries:
        where = f"ends at line {lines[-1]}" if lines else "is empty"
        raise BadInput(f"{SECTION}.label_list_path '{path}' {where} with {len(values)} label(s), but the data list "
                       f"'{data_list}' has {entries} entries.", "Labels must align line by line with the data list.")
    labels = LabelFile(path, np.asarray(values, dtype=np.int64), tuple(lines))
    negative = np.flatnonzero(labels.values < 0)
    if negative.size:
        i = int(negative[0])
        raise BadInput(f"{SECTION}.label_list_path '{path}' line {lines[i]}: class {values[i]} is negative.",
                       "Labels are 0-based class indices of the model's first output.")
    return labels


def _files(cfg: Any, params: VerifyParams) -> Tuple[Dict[str, List[str]], str, List[str]]:
    from xquant.data import held_back_files, read_list_file, select_calibration_files

    names = [p.input_name for p in cfg.calibration.input_parameters]
    if params.data_list_path:
        files = {n: read_list_file(p)[:params.max_samples] for n, p in zip(names, params.data_list_path)}
        counts = {len(v) for v in files.values()}
        if len(counts) != 1 or 0 in counts:
            raise BadInput(f"{SECTION}.data_list_path lists are empty or of different lengths "
                           f"({', '.join(f'{n}: {len(v)}' for n, v in files.items())}).")
        return files, f"{SECTION}.data_list_path ({', '.join(params.data_list_path)})", []
    files = held_back_files(cfg, params.max_samples)
    if files and all(files.values()):
        count = len(next(iter(files.values())))
        note = (f"no {SECTION}.data_list_path: verified on {count} held-back calibration file(s) "
                "(listed for calibration but not used by it)")
        return files, "held-back calibration files", [note]
    files = {n: v[:params.max_samples] for n, v in select_calibration_files(cfg).items()}
    note = (f"no {SECTION}.data_list_path and every listed calibration file was used for calibration: "
            "verified on calibration files (add a data_list_path of unseen data)")
    return files, "calibration files (none held back)", [note]


def load_verify_data(cfg: Any, params: VerifyParams, labels: Optional[LabelFile] = None) -> VerifyData:
    """Preprocess the verification samples exactly as calibration does (xquant.data)."""
    from xquant.data import load_input_batch

    files, source, notes = _files(cfg, params)
    for name, paths in files.items():
        missing = [p for p in paths if not os.path.isfile(p)]
        if missing:
            raise BadInput(f"verification input '{name}': {len(missing)} listed file(s) not found, first "
                           f"'{missing[0]}'.", "Entries are relative to the list file's folder.")
    arrays = [load_input_batch(p, files[p.input_name]) for p in cfg.calibration.input_parameters]
    count = int(arrays[0].shape[0])
    labels = labels or read_label_file(params)
    return VerifyData([p.input_name for p in cfg.calibration.input_parameters], arrays,
                      None if labels is None else labels.values[:count], source, notes)
