"""issue 9: quantize-and-verify with an FP16 (precision_level 4) or dynamically quantized (precision_level 3)
model: run beside FP32 on the PC and the board, judged with the mode's own per-provider limits, the limits
and the speedup over FP32 stated in the report; on the host and on real riscv64 onnxruntime under qemu."""
from __future__ import annotations

from pathlib import Path

import pytest
from xqhil_testlib import leftovers, verify

from modes_testlib import make_seq_project
from xqhil.compare import RuntimeLimits, runtime_summary
from xqhil.compare.runtime import MODE_SNR_DB

LIMITS = {"fp16": (60.0, 40.0), "dynq": (40.0, 30.0)}  # CPUExecutionProvider: (warn, bug) SNR dB
LABELS = {"fp16": "FP16", "dynq": "DYNQ"}
LEVELS = {"fp16": 4, "dynq": 3}


def check_mode_report(report: dict, mode: str, out: Path) -> None:
    assert report["mode"] == mode and report["verdict"] == "pass", report["reasons"]
    dep = report["runtime"]["departure"]
    assert (dep["warn_snr_db"], dep["fail_snr_db"]) == LIMITS[mode] and dep["status"] == "pass"
    assert dep["expect_identical"] is False and dep["snr_db"] >= LIMITS[mode][0]
    pairs = report["fidelity"]["outputs"]["logits"]
    assert pairs["pc_int8_vs_pc_fp32"]["snr_db"] >= (60.0 if mode == "fp16" else 30.0)  # the mode's own loss
    assert report["latency"]["speedup"] > 0 and report["latency"]["int8"]["p50_ms"] > 0
    label = LABELS[mode]
    md = (out / "verify.md").read_text()
    assert f"## Chip {label} vs PC {label} (CPUExecutionProvider)" in md
    assert f"warn: SNR below {LIMITS[mode][0]} dB; bug: SNR below {LIMITS[mode][1]} dB" in md
    assert f"- {label} speedup over FP32 (p50)" in md and f"| {label.lower()}" not in md.split("## Output")[0]
    # what xquant kept float32 and why: the seq model's plain FP16 reads under 60 dB on its worst calibration
    # sample, so the default floor keeps its first ops FP32, each named in verify.json and grouped in verify.md
    conversion = report["conversion"]
    assert f"## {label} conversion (xquant)" in md
    if mode == "fp16":
        floor, kept = conversion["floor"], conversion["fp32_ops"]
        assert floor["default"] and floor["kept_prefix"] > 0 and floor["prefix_ends"][0] == "proj_in"
        assert "in the float32 prefix that keeps the model at 60 dB" in kept["proj_in"] and "lstm" in kept
        assert "FP16 floor 60 dB (the default): the first" in md and "`proj_in`" in md
        assert "| in the float32 prefix that keeps the model at 60 dB (fp16_min_snr_db) |" in md
    else:
        assert conversion["quantized"] and "- dynamically quantized: " in md


@pytest.mark.parametrize("mode", ["fp16", "dynq"])
def test_mode_verifies_on_host_with_its_own_limits(mode, tmp_path):
    config = make_seq_project(tmp_path / "proj", LEVELS[mode])
    code, report, stdout, stderr = verify(config, "host", tmp_path / "out", "--remote-dir", str(tmp_path))
    assert code == 0, stderr
    check_mode_report(report, mode, tmp_path / "out")
    assert f"PASS on host: chip {LABELS[mode]}" in stdout and f"{LABELS[mode]} speedup" in stdout
    assert leftovers(tmp_path) == []


@pytest.mark.hil
@pytest.mark.parametrize("mode", ["fp16", "dynq"])
def test_mode_verifies_on_qemu_riscv64(mode, rootfs, tmp_path):
    """Debian riscv64 onnxruntime 1.21 under qemu against x86 onnxruntime 1.32 (measured: FP16 104 dB,
    dynamic quantization 52 dB chip vs PC on this model: close, not bit-identical)."""
    config = make_seq_project(tmp_path / "proj", LEVELS[mode])
    code, report, _, stderr = verify(config, f"qemu:{rootfs}", tmp_path / "out", "--remote-dir", str(tmp_path))
    assert code == 0, stderr
    assert report["device"]["arch"] == "riscv64" and report["latency"]["emulated"] is True
    check_mode_report(report, mode, tmp_path / "out")
    assert leftovers(tmp_path) == []


def test_simplify_only_has_nothing_to_verify(tmp_path):
    config = make_seq_project(tmp_path / "proj", 100)
    code, report, _, stderr = verify(config, "host", tmp_path / "out")
    assert code == 2 and report is None
    assert stderr.strip().count("\n") == 0 and "precision_level 100 only simplifies" in stderr


def _runtime(mode: str, snr: float) -> dict:
    fidelity = {"outputs": {"y": {"chip_int8_vs_pc_int8": {"cosine": 0.9999, "snr_db": snr, "max_abs": 0.01}}}}
    accuracy = {"top1_agreement": {"chip_int8_vs_pc_int8": None}}
    return runtime_summary(accuracy, fidelity, "CPUExecutionProvider", RuntimeLimits(mode=mode))["departure"]


@pytest.mark.parametrize("mode,snr,status", [
    ("int8", 45.0, "warn"), ("int8", 35.0, "bug"),  # INT8 on the CPU provider: any difference warns
    ("dynq", 45.0, "pass"), ("dynq", 35.0, "warn"), ("dynq", 25.0, "bug"),
    ("fp16", 70.0, "pass"), ("fp16", 50.0, "warn"), ("fp16", 35.0, "bug"),
])
def test_runtime_limits_are_per_mode(mode, snr, status):
    assert _runtime(mode, snr)["status"] == status
    assert set(MODE_SNR_DB) == {"int8", "dynq", "fp16"}
