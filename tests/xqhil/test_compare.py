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


def test_tensor_metrics_leave_out_nonfinite_positions():
    ref = np.array([[1.0, 2.0, 3.0]], np.float32)
    chip = np.array([[np.nan, 2.0, 3.0]], np.float32)
    assert tensor_metrics(ref, chip) == {"cosine": 1.0, "snr_db": 200.0, "max_abs": 0.0, "nonfinite": 1}
    assert tensor_metrics(ref, np.full_like(ref, np.inf)) == {"cosine": None, "snr_db": None, "max_abs": None,
                                                              "nonfinite": 3}


def test_nonfinite_reasons_count_only_beyond_the_pc():
    from xqhil.compare import nonfinite_reasons, nonfinite_summary

    pc = [np.zeros((4, 3), np.float32)]
    chip = [pc[0].copy()]
    chip[0][0, :2] = np.nan
    chip[0][1, 0] = -np.inf
    found = nonfinite_summary(["y"], {"pc_int8": pc, "chip_int8": chip, "chip_fp32": None})
    assert found == {"chip_int8": {"y": {"nan": 2, "inf": 1, "values": 12}}}
    assert nonfinite_reasons(found) == ["chip INT8 output 'y' holds 2 NaN and 1 infinite value(s) of 12 (the PC's: "
                                        "0 NaN, 0 infinite)"]
    assert nonfinite_reasons({"pc_int8": found["chip_int8"], "chip_int8": found["chip_int8"]}) == []


def test_shape_problems_name_the_shape():
    from xqhil.compare import shape_problems

    pc = [np.zeros((32, 10), np.float32)]
    assert shape_problems(["logits"], {"pc_int8": pc, "chip_int8": [pc[0][:1]]}) == {
        "chip_int8": "chip INT8 output 'logits' has shape (1, 10) where the PC's has (32, 10) (32 samples first)"}
    assert "returned 0 output(s), the PC's 1" in shape_problems(["y"], {"pc_fp32": pc, "chip_fp32": []})["chip_fp32"]


def runtime_for(snr, max_abs, provider, **limits):
    from xqhil.compare import RuntimeLimits, runtime_summary

    fidelity = {"outputs": {"y": {"chip_int8_vs_pc_int8": {"cosine": 1.0, "snr_db": snr, "max_abs": max_abs}}}}
    accuracy = {"top1_agreement": {"chip_int8_vs_pc_int8": 100.0}, "samples_differing": 0, "samples": 100}
    return runtime_summary(accuracy, fidelity, provider, RuntimeLimits(**limits))["departure"]


@pytest.mark.parametrize("snr, max_abs, provider, status", [
    (200.0, 0.0, "CPUExecutionProvider", "pass"),  # bit-identical
    (150.0, 1e-6, "CPUExecutionProvider", "warn"),  # any difference on the CPU provider
    (39.9, 0.1, "CPUExecutionProvider", "bug"),
    (35.0, 0.1, "SpaceMITExecutionProvider", "pass"),
    (25.0, 0.1, "SpaceMITExecutionProvider", "warn"),
    (19.9, 0.1, "SpaceMITExecutionProvider", "bug"),
    (None, None, "SpaceMITExecutionProvider", "bug"),  # no finite value to compare
])
def test_int8_runtime_limits_per_provider(snr, max_abs, provider, status):
    assert runtime_for(snr, max_abs, provider)["status"] == status


def test_int8_runtime_limits_can_be_overridden():
    assert runtime_for(150.0, 1e-6, "CPUExecutionProvider", snr_warn_db=100.0)["status"] == "pass"
    assert runtime_for(45.0, 0.1, "SpaceMITExecutionProvider", snr_fail_db=50.0)["status"] == "bug"


@pytest.mark.parametrize("agree, differing, status", [(100.0, 0, "pass"), (99.5, 1, "pass"), (99.0, 2, "warn"),
                                                      (98.0, 4, "bug"), (50.0, 1, "warn")])
def test_agreement_rule_uses_the_seed_manual_numbers(agree, differing, status):
    from xqhil.compare import runtime_summary

    accuracy = {"top1_agreement": {"chip_int8_vs_pc_int8": agree}, "samples_differing": differing, "samples": 200}
    runtime = runtime_summary(accuracy, {"outputs": {}}, "CPUExecutionProvider")
    assert runtime["agreement"]["status"] == status and runtime["agreement"]["disagreement_points"] == 100.0 - agree
    verdict, reasons = decide(acc_with("pass"), fid(1.0), {}, runtime=runtime)
    assert verdict == {"pass": "pass", "warn": "warn", "bug": "fail"}[status]
    assert all("disagrees with PC INT8" in r for r in reasons)


def test_nonfinite_latency_is_nulled_and_listed():
    nan = float("nan")
    fp32 = {"p50_ms": 10.0, "samples_ms": [10.0]}
    lat = latency_summary(fp32, {"p50_ms": nan, "mean_ms": 4.0, "samples_ms": [4.0, nan]}, 1, False)
    assert lat["int8"] == {"p50_ms": None, "mean_ms": 4.0, "samples_ms": [4.0, None]} and lat["speedup"] is None
    assert lat["nonfinite"] == {"int8": ["p50_ms", "samples_ms (1 of 2)"]}
