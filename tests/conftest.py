"""Shared fixtures: the bundled demo (real Fashion-MNIST data) and tiny graphs built with onnx.helper."""
from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Callable, Dict

import numpy as np
import onnx
import pytest

from xquant_testlib import DEMO_CONFIG, DEMO_MODEL, REPO, build_cnn, demo_eval_batch, write_npy_list

pytest_plugins = ["ci_policy"]  # XQHIL_REQUIRE_HIL=1: a skip without an 'allowed in CI:' reason fails


@pytest.fixture(scope="session")
def repo_root() -> Path:
    return REPO


@pytest.fixture
def demo_config(tmp_path: Path) -> Dict:
    """configs/demo.json as a dict with absolute paths, writing into tmp_path."""
    if not DEMO_MODEL.exists():
        pytest.skip("bundled demo model missing (run bench/train_demo.py)")
    cfg = json.loads(DEMO_CONFIG.read_text())
    base = DEMO_CONFIG.parent
    cfg["model_parameters"]["onnx_model"] = str((base / cfg["model_parameters"]["onnx_model"]).resolve())
    cfg["model_parameters"]["working_dir"] = str(tmp_path)
    for item in cfg["calibration_parameters"]["input_parametres"]:
        item["data_list_path"] = str((base / item["data_list_path"]).resolve())
    cfg["quantization_parameters"]["analysis_enable"] = False
    cfg.pop("verify_parameters", None)
    return cfg


@pytest.fixture(scope="session")
def demo_eval() -> Dict[str, np.ndarray]:
    if not DEMO_MODEL.exists():
        pytest.skip("bundled demo model missing (run bench/train_demo.py)")
    return demo_eval_batch()


@pytest.fixture
def tiny_cnn(tmp_path: Path) -> Callable[..., Dict]:
    """Factory: a tiny CNN saved under tmp_path with a real-image-like npy calibration list, as a config dict."""

    def make(opset: int = 17, samples: int = 24, **cfg_overrides) -> Dict:
        model = build_cnn(opset=opset)
        path = tmp_path / f"tiny_op{opset}.onnx"
        onnx.save(model, path)
        rng = np.random.default_rng(1)
        arrays = [rng.normal(0, 1, (1, 3, 16, 16)) for _ in range(samples)]
        lst = write_npy_list(tmp_path, f"calib{opset}", arrays)
        cfg = {
            "model_parameters": {"onnx_model": str(path)},
            "calibration_parameters": {"calibration_step": 100, "input_parametres": [
                {"file_type": "npy", "data_list_path": str(lst)}]},
            "quantization_parameters": {"finetune_level": 0},
        }
        for section, values in cfg_overrides.items():
            cfg.setdefault(section, {}).update(values)
        return cfg

    return make


@pytest.fixture
def copy_demo(tmp_path: Path) -> Path:
    """A private copy of the demo folder and config (for tests that write next to the model)."""
    if not DEMO_MODEL.exists():
        pytest.skip("bundled demo model missing")
    shutil.copytree(REPO / "demo", tmp_path / "demo")
    (tmp_path / "configs").mkdir()
    shutil.copy(DEMO_CONFIG, tmp_path / "configs" / "demo.json")
    return tmp_path / "configs" / "demo.json"


@pytest.fixture(scope="session", autouse=True)
def _session_history_db_in_tmp(tmp_path_factory: pytest.TempPathFactory):
    """Module- and session-scoped fixtures run before the per-test history below: the ones that verify a model
    (the demo's HIL runs) recorded into the user's own history, one run per CI run. They record here."""
    patch = pytest.MonkeyPatch()
    patch.setenv("XQHIL_DB", str(tmp_path_factory.mktemp("session-history") / "history.sqlite3"))
    yield
    patch.undo()


@pytest.fixture(autouse=True)
def _history_db_in_tmp(tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch) -> None:
    """quantize-and-verify records every run in the history ($XQHIL_DB): keep tests out of the user's data."""
    monkeypatch.setenv("XQHIL_DB", str(tmp_path_factory.mktemp("history") / "history.sqlite3"))


@pytest.fixture(autouse=True)
def _restore_logger_levels():
    """The CLIs run in-process set the 'xquant'/'xqhil' logger levels (-q -> WARNING) and the root logger's
    handler (xqhil's, on stderr): give every test the levels and root handlers it started with, so what a
    test reads on stderr or in its records does not depend on which tests ran before (an xqhil handler left
    by one test printed xquant's warnings into another's one-line error)."""
    import logging

    root = logging.getLogger()
    loggers = [logging.getLogger(name) for name in ("xquant", "xqhil", "paramiko")]
    levels, handlers, root_level = [logger.level for logger in loggers], list(root.handlers), root.level
    yield
    for logger, level in zip(loggers, levels):
        logger.setLevel(level)
    for handler in [h for h in root.handlers if h not in handlers]:
        if not type(handler).__module__.startswith("_pytest"):  # pytest's capture handlers come and go
            root.removeHandler(handler)
    root.setLevel(root_level)
