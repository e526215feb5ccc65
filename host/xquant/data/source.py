"""Calibration data: which files, and batches of preprocessed inputs streamed from them."""
from __future__ import annotations

import logging
from typing import Dict, Iterator, List, Sequence

import numpy as np
import onnx

from ..config.schema import InputParameter, XQuantConfig
from ..errors import DataError
from ..model_io import fixed_batch, run_batch
from .hooks import run_hook
from .listfile import check_files_exist, choose_indices, read_aligned_lists
from .presets import PRESETS, run_preset
from .readers import READERS

log = logging.getLogger(__name__)


def load_input_batch(param: InputParameter, paths: Sequence[str]) -> np.ndarray:
    """Preprocess ``paths`` into one float32 batch [N, ...] for ``param`` (hook, preset or reader)."""
    spec = param.preprocess_file
    if spec in PRESETS:
        return run_preset(spec, paths, param)
    if spec:
        return run_hook(spec, paths, param)
    reader = READERS[param.file_type]
    return np.stack([reader(p, param) for p in paths]).astype(param.dtype)


def _list_paths(cfg: XQuantConfig) -> Dict[str, str]:
    paths = {}
    for param in cfg.calibration.input_parameters:
        if not param.data_list_path:
            raise DataError(f"Calibration input {param.input_name} finds 0 items.",
                            "Its data_list_path is empty: set it to a text file listing one data file per line.")
        paths[param.input_name] = param.data_list_path
    return paths


def _all_files(cfg: XQuantConfig) -> Dict[str, List[str]]:
    return read_aligned_lists(_list_paths(cfg))


def _chosen(cfg: XQuantConfig, lists: Dict[str, List[str]]) -> np.ndarray:
    total = len(next(iter(lists.values())))
    return choose_indices(total, cfg.calibration.calibration_step, cfg.calibration.seed)


def select_calibration_files(cfg: XQuantConfig) -> Dict[str, List[str]]:
    """The files used for calibration, per input: a seeded choice of calibration_step of the listed ones."""
    lists = _all_files(cfg)
    chosen = _chosen(cfg, lists)
    total = len(next(iter(lists.values())))
    if total < cfg.calibration.calibration_step:
        log.info("calibration lists hold %d sample(s), fewer than calibration_step %d: using all of them",
                 total, cfg.calibration.calibration_step)
    list_paths = _list_paths(cfg)
    for name, files in lists.items():
        check_files_exist(name, list_paths[name], files, chosen)
    return {name: [files[i] for i in chosen] for name, files in lists.items()}


def held_back_files(cfg: XQuantConfig, n: int) -> Dict[str, List[str]]:
    """Up to ``n`` listed files per input that calibration did NOT use (for verification)."""
    lists = _all_files(cfg)
    used = set(_chosen(cfg, lists).tolist())
    total = len(next(iter(lists.values())))
    rest = [i for i in range(total) if i not in used][:n]
    return {name: [files[i] for i in rest] for name, files in lists.items()}


class CalibrationData:
    """Streams batches of preprocessed calibration inputs. While all samples fit KEEP_BYTES, the decoded
    samples are kept, so calibration, fine-tuning and the summary decode each file once; past that only file
    names are held between batches."""

    # fine-tuning holds up to 256 samples in memory anyway; 40 samples at 800x608 (233 MiB) were decoded
    # twice under the old 64 MiB (4 s of a 84 s run)
    KEEP_BYTES = 256 * 1024 * 1024

    def __init__(self, cfg: XQuantConfig) -> None:
        self.params = {p.input_name: p for p in cfg.calibration.input_parameters}
        self.files = select_calibration_files(cfg)
        self.num_samples = len(next(iter(self.files.values())))
        self._kept: Dict[int, Dict[str, np.ndarray]] = {}  # sample index -> one-sample arrays
        self._keep = True

    def batches(self, batch_size: int, fill: bool = False) -> Iterator[Dict[str, np.ndarray]]:
        """Batches of ``batch_size`` samples (samples on axis 0); with ``fill`` (a model whose batch is
        fixed) a short last batch is filled up with the first samples again."""
        for start in range(0, self.num_samples, batch_size):
            index = list(range(start, min(start + batch_size, self.num_samples)))
            if fill:
                index += [i % self.num_samples for i in range(batch_size - len(index))]
            if all(i in self._kept for i in index):
                yield {name: np.concatenate([self._kept[i][name] for i in index]) for name in self.files}
                continue
            batch = {name: load_input_batch(self.params[name], [files[i] for i in index])
                     for name, files in self.files.items()}
            self._remember(index, batch)
            yield batch

    def _remember(self, index: List[int], batch: Dict[str, np.ndarray]) -> None:
        per_sample = sum(v.nbytes for v in batch.values()) / max(len(index), 1)
        self._keep = self._keep and per_sample * self.num_samples <= self.KEEP_BYTES
        if self._keep and all(v.shape[:1] == (len(index),) for v in batch.values()):
            for k, i in enumerate(index):
                self._kept[i] = {name: v[k:k + 1].copy() for name, v in batch.items()}

    def model_batches(self, model: onnx.ModelProto, preferred: int) -> Iterator[Dict[str, np.ndarray]]:
        """Batches ``model`` can run: its fixed batch size (short batches filled), 1 when an input has no
        batch axis, else ``preferred``."""
        return self.batches(run_batch(model, preferred), fill=fixed_batch(model) > 0)
