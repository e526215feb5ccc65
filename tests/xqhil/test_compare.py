"""Pure comparison functions and the verdict rules."""
from __future__ import annotations

import numpy as np
import pytest

from xqhil.compare import accuracy_summary, decide, fidelity_summary, latency_summary, tensor_metrics, top1


def test_tensor_metrics():
    ref = np.array([[1.0, 2.0, 3.0]], np.float32)
    same = tensor_metrics(ref, ref.copy())
    assert same == {"cosine": 1.0, "snr_db": 200.0, "max_abs": 0.0}
    noisy = tensor_metrics(ref, ref + np.array([[0.1, 0.0, 0.0]], np.float32))
    assert 0.99 < noisy["cosine"] < 1.0 and noisy["max_abs"] == pytest.approx(0.1, rel=1e-5)
    assert noisy["snr_db"] == pytest.approx(10 * np.log10(14 / 0.01), rel=1e-4)
    assert tensor_metrics(ref, -ref)["cosine"] == pytest.approx(-1.0)
    zero = np.zeros((1, 3), np.float32)
    assert tensor_metrics(zero, zero)["cosine"] == 1.0
    with pytest.raises(ValueError):
        tensor_metrics(ref, ref[:, :2])


def test_fidelity_summary_skips_runs_that_failed():
    out = [np.ones((2, 3), np.float32)]
    summary = fidelity_summary(["y"], {"pc_fp32": out, "pc_int8": out, "chip_fp32": out, "chip_int8": None})
    assert set(summary["outputs"]["y"]) == {"chip_fp32_vs_pc_fp32", "pc_int8_vs_pc_fp32"}


def test_top1_flattens_each_sample():
    assert top1(np.array([[0, 3, 1], [5, 0, 0]])).tolist() == [1, 0]
    assert top1(np.zeros((2, 1, 1, 4)) + np.arange(4)).tolist() == [3, 3]


def preds(pc_int8, chip_int8, n=100):
    base = np.zeros(n, np.int64)
    return {"pc_fp32": base, "pc_int8": pc_int8, "chip_fp32": base, "chip_int8": chip_int8}


@pytest.mark.parametrize("wrong_chip, status", [(0, "pass"), (1, "pass"), (2, "warn"), (3, "bug"), (10, "bug")])
def test_labelled_status_thresholds(wrong_chip, status):
    labels = np.zeros(200, np.int64)
    pc = labels.copy()
    chip = labels.copy()
    chip[:wrong_chip * 2] = 1  # every 2 wrong samples = 1 point on 200 samples
    acc = accuracy_summary(preds(pc, chip, 200), labels, tolerance=1.0, bug_threshold=3.0)
    assert acc["drop_points"] == pytest.approx(wrong_chip) and acc["status"] == status
    assert acc["labelled"] and acc["pc_int8"] == 100.0


def test_a_single_differing_sample_is_never_called_a_bug():
    labels = np.zeros(10, np.int64)
    chip = labels.copy()
    chip[0] = 1  # 10 points on 10 samples, but one sample
    acc = accuracy_summary(preds(labels.copy(), chip, 10), labels, 0.5, 2.0)
    assert acc["drop_points"] == 10.0 and acc["status"] == "warn"


def test_unlabelled_uses_agreement_with_pc_fp32():
    pc = np.zeros(100, np.int64)
    chip = pc.copy()
    chip[:5] = 1
    acc = accuracy_summary(preds(pc, chip), None, 0.5, 2.0)
    assert not acc["labelled"] and acc["pc_fp32"] == 100.0 and acc["chip_int8"] == 95.0
    assert acc["drop_points"] == 5.0 and acc["status"] == "bug"
    assert acc["top1_agreement"]["chip_int8_vs_pc_int8"] == 95.0


def fid(cos_int8, cos_fp32=1.0):
    def m(c):
        return {"cosine": c, "snr_db": 30.0, "max_abs": 0.1}
    return {"outputs": {"y": {"chip_int8_vs_pc_int8": m(cos_int8), "chip_fp32_vs_pc_fp32": m(cos_fp32)}}}


def acc_with(status, chip=90.0):
    return {"status": status, "labelled": True, "chip_int8": chip, "pc_int8": 90.0, "drop_points": 0.0,
            "samples": 100, "samples_differing": 0, "tolerance": 0.5, "bug_threshold": 2.0}


def test_verdict_rules():
    assert decide(acc_with("pass"), fid(1.0), {}) == ("pass", [])
    verdict, reasons = decide(acc_with("warn"), fid(1.0), {})
    assert verdict == "warn" and "drop" in reasons[0]
    assert decide(acc_with("pass"), fid(0.995), {})[0] == "warn"
    verdict, reasons = decide(acc_with("pass"), fid(0.5), {})
    assert verdict == "fail" and "INT8 output 'y'" in reasons[0]
    assert decide(acc_with("pass"), fid(1.0, cos_fp32=0.9), {})[0] == "fail"
    assert decide(acc_with("bug"), fid(1.0), {})[1][0].startswith("chip-runtime bug")
    verdict, reasons = decide(acc_with("bug", chip=None), fid(1.0), {"INT8 model": "load failed: opset"})
    assert verdict == "fail" and reasons == ["the chip could not run the INT8 model: load failed: opset"]


def test_latency_speedup_uses_medians():
    fp32, int8 = {"p50_ms": 10.0}, {"p50_ms": 4.0}
    assert latency_summary(fp32, int8, 2, True) == {"emulated": True, "threads": 2, "fp32": fp32, "int8": int8,
                                                    "speedup": 2.5}
    assert latency_summary(fp32, None, 0, False)["speedup"] is None
