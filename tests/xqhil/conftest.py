"""Fixtures of the harness tests: tiny models, xquant projects on .npy data, boards (qemu rootfs, sshd)."""
from __future__ import annotations

import json
import os
import shutil
import sys
from pathlib import Path

import numpy as np
import pytest

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(Path(__file__).resolve().parent))

from xqhil_testlib import build_cnn, start_sshd  # noqa: E402


def rootfs_path() -> Path:
    return Path(os.environ.get("XQHIL_RISCV64_ROOTFS", REPO / "ci" / ".cache" / "riscv64-rootfs"))


@pytest.fixture(scope="session")
def rootfs() -> Path:
    root = rootfs_path()
    if not (root / "usr" / "bin" / "python3").is_file():
        pytest.skip(f"riscv64 rootfs missing at {root}: run bash ci/build-rootfs.sh")
    if shutil.which("qemu-riscv64-static") is None:
        pytest.skip("qemu-riscv64-static not installed: run bash ci/install-system-deps.sh")
    return root


@pytest.fixture(scope="session")
def qemu_python(rootfs: Path) -> str:
    return f"qemu-riscv64-static -L {rootfs} {rootfs}/usr/bin/python3"


def make_project(folder: Path, n_calib: int = 24, n_eval: int = 24, labels: bool = True,
                 data_list: bool = True, verify: dict | None = None, seed: int = 0) -> Path:
    """A tiny CNN, .npy samples, list files and an XQuant config with verify_parameters; returns the config."""
    folder.mkdir(parents=True, exist_ok=True)
    model = folder / "tiny.onnx"
    build_cnn(model, seed=seed)
    rng = np.random.default_rng(seed + 1)
    (folder / "data").mkdir(exist_ok=True)
    names = []
    for i in range(n_calib + n_eval):
        name = f"data/s{i:04d}.npy"
        np.save(folder / name, rng.standard_normal((1, 8, 8)).astype(np.float32))
        names.append(name)
    (folder / "calib_list.txt").write_text("\n".join(names[:n_calib]) + "\n")
    (folder / "eval_list.txt").write_text("\n".join(names[n_calib:]) + "\n")
    section = {"max_samples": n_eval, "warmup": 1, "repeat": 3}
    if data_list:
        section["data_list_path"] = ["eval_list.txt"]
    if labels and data_list:
        import onnxruntime as ort

        sess = ort.InferenceSession(str(model), providers=["CPUExecutionProvider"])
        x = np.stack([np.load(folder / n) for n in names[n_calib:]])
        preds = sess.run(None, {"input": x})[0].argmax(axis=1)
        (folder / "eval_labels.txt").write_text("\n".join(str(int(p)) for p in preds) + "\n")
        section["label_list_path"] = "eval_labels.txt"
    section.update(verify or {})
    config = {
        "model_parameters": {"onnx_model": "tiny.onnx", "output_prefix": "tiny", "working_dir": "work"},
        "calibration_parameters": {
            "calibration_step": n_calib,
            "input_parametres": [{"input_name": "input", "input_shape": [1, 1, 8, 8], "file_type": "npy",
                                  "data_list_path": "calib_list.txt"}],
        },
        "quantization_parameters": {"precision_level": 0, "finetune_level": 0},
        "verify_parameters": section,
    }
    path = folder / "cfg.json"
    path.write_text(json.dumps(config, indent=1))
    return path


@pytest.fixture
def project(tmp_path: Path) -> Path:
    return make_project(tmp_path / "proj")


@pytest.fixture(scope="session")
def quantized(tmp_path_factory) -> dict:
    """One quantized tiny project shared by the slower board tests (quantized once with xquant)."""
    import xquant

    folder = tmp_path_factory.mktemp("shared") / "proj"
    config = make_project(folder)
    xquant.quantize_onnx_model(str(config))
    qmodel = folder / "work" / "tiny.q.onnx"
    return {"config": config, "qmodel": qmodel, "folder": folder}


@pytest.fixture(scope="session")
def sshd(tmp_path_factory):
    """A real OpenSSH server on 127.0.0.1 with its own host key, user key and known_hosts."""
    if not Path("/usr/sbin/sshd").exists():
        pytest.skip("openssh-server not installed: run bash ci/install-system-deps.sh")
    server = start_sshd(tmp_path_factory.mktemp("sshd"))
    yield server
    server.stop()
