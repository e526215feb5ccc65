"""Fault injection for the verdict: every way a board, a label file or a threshold can be wrong gets a named
outcome (exit code, message, what exists afterwards), never "internal error" and never a silent PASS.

Board faults run the real agent under a misbehaving runtime (faults/sitecustomize.py, $XQHIL_FAULT) or
tamper with what the real agent wrote (faults/tamper.py, $XQHIL_TAMPER). Config faults must stop the run
before anything runs: no quantized model, no report, no history row.
"""
from __future__ import annotations

import json
import math
import sqlite3
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Dict, Optional

import pytest
from xqhil_testlib import FAULTS, demo_config, fault_python, make_project, verify

TAMPER = FAULTS / "tamper.py"


def tamper_python(kind: str) -> str:
    return f"env XQHIL_TAMPER={kind} {sys.executable} {TAMPER}"


def history_verdicts(db: Path):
    if not db.exists():
        return []
    with sqlite3.connect(db) as conn:
        return [row[0] for row in conn.execute("SELECT verdict FROM runs ORDER BY id")]


@dataclass
class BoardFault:
    name: str
    python: str
    code: int
    words: str
    rule: Optional[str] = None  # the rule the report names (reports and a history row must exist)


BOARD_FAULTS = [
    BoardFault("nan-outputs", fault_python(sys.executable, "nonfinite-int8:nan"), 1,
               "chip INT8 output 'logits' holds 20 NaN and 0 infinite value(s) of 240", "nonfinite-output"),
    BoardFault("inf-outputs", fault_python(sys.executable, "nonfinite-int8:inf"), 1,
               "holds 0 NaN and 20 infinite value(s)", "nonfinite-output"),
    BoardFault("nan-latency", tamper_python("nan-latency"), 1, "the chip's INT8 latency holds NaN/Inf in p50_ms",
               "nonfinite-latency"),
    BoardFault("int8-shape", tamper_python("int8-shape"), 1,
               "chip INT8 output 'logits' has shape (1, 10) where the PC's has (24, 10)", "output-shape"),
    BoardFault("scaled-conv", fault_python(sys.executable, "scale-node:conv:1.02"), 1,
               "chip-runtime bug: chip INT8 output 'logits' departs from PC INT8", "int8-runtime"),
    BoardFault("no-output", tamper_python("no-output"), 3,
               "reported accuracy task 'int8-accuracy' as ok but with no 'output' entry"),
    BoardFault("no-latency", tamper_python("no-latency"), 3,
               "reported performance task 'int8-performance' as ok but with no 'latency' entry"),
    BoardFault("object-array", tamper_python("object-array"), 3,
               "out-int8-accuracy.npz from host is not a numeric outputs file: ValueError: Object arrays"),
    BoardFault("not-json", tamper_python("not-json"), 3, "wrote a response.json that is not valid JSON"),
]


@pytest.mark.parametrize("fault", BOARD_FAULTS, ids=[f.name for f in BOARD_FAULTS])
def test_board_fault_gets_a_named_outcome(quantized, tmp_path, fault):
    db = tmp_path / "h.db"
    code, report, stdout, stderr = verify(quantized["config"], "host", tmp_path / "out", "--qmodel",
                                          str(quantized["qmodel"]), "--python", fault.python, "--db", str(db))
    assert code == fault.code, stderr
    assert "internal error" not in stderr and "Traceback" not in stderr
    if fault.rule is None:  # a board error: one line, no report, no history row
        assert fault.words in stderr and stderr.count("\n") == 1
        assert report is None and history_verdicts(db) == []
        return
    assert report["verdict"] == "fail" and history_verdicts(db) == ["fail"]
    fired = [r["reason"] for r in report["rules"] if r["level"] == "fail" and r["rule"] == fault.rule]
    assert fired and fault.words in fired[0], report["rules"]
    md = (tmp_path / "out" / "verify.md").read_text()
    assert f"(rule `{fault.rule}`)" in md and fault.words in md and "FAIL" in stdout
    json.loads((tmp_path / "out" / "verify.json").read_text(), parse_constant=pytest.fail)  # no bare NaN


def test_nan_outputs_are_counted_and_the_json_stays_valid(quantized, tmp_path):
    code, report, _, _ = verify(quantized["config"], "host", tmp_path / "out", "--qmodel", str(quantized["qmodel"]),
                                "--python", fault_python(sys.executable, "nonfinite-int8:nan"))
    assert code == 1
    assert report["integrity"]["nonfinite_outputs"] == {"chip_int8": {"logits": {"nan": 20, "inf": 0, "values": 240}}}
    metrics = report["fidelity"]["outputs"]["logits"]["chip_int8_vs_pc_int8"]
    assert metrics["nonfinite"] == 20 and metrics["max_abs"] == 0.0  # the 22 finite samples are untouched


def test_a_nan_in_the_device_fingerprint_is_written_as_null(quantized, tmp_path):
    code, report, _, stderr = verify(quantized["config"], "host", tmp_path / "out", "--qmodel",
                                     str(quantized["qmodel"]), "--python", tamper_python("nan-device"))
    assert code == 0, stderr
    assert report["device"]["cores"] is None and any("device.cores written as null" in n for n in report["notes"])


def _long_labels(folder: Path) -> None:
    labels = folder / "eval_labels.txt"
    labels.write_text(labels.read_text() * 2)


def _free_output_shape(folder: Path) -> None:
    """The FP32 model declares no output shape: the class count comes from the PC FP32 outputs."""
    import onnx

    model = onnx.load(folder / "tiny.onnx")
    model.graph.output[0].type.tensor_type.ClearField("shape")
    onnx.save(model, folder / "tiny.onnx")
    (folder / "eval_labels.txt").write_text("3\n" * 23 + "10\n")


@dataclass
class ConfigFault:
    name: str
    words: str
    verify: Dict[str, object] = field(default_factory=dict)
    setup: Optional[Callable[[Path], None]] = None
    labels: Optional[str] = None  # the label file's text
    ran: bool = False  # True when the check needs the PC FP32 outputs (the quantizer ran; the board did not)


CONFIG_FAULTS = [
    ConfigFault("label-99", "eval_labels.txt' line 1: class 99 is not one of the model's 10 classes (0-9, from the "
                "FP32 model's output shape); 24 label(s) out of range", labels="99\n" * 24),
    ConfigFault("label-minus-1", "eval_labels.txt' line 3: class -1 is negative", labels="1\n2\n-1\n" + "0\n" * 21),
    ConfigFault("labels-too-long", "eval_labels.txt' line 25: label 25 has no sample: the data list",
                setup=_long_labels),
    ConfigFault("labels-too-short", "eval_labels.txt' ends at line 5 with 5 label(s), but the data list",
                labels="1\n2\n3\n4\n5\n"),
    ConfigFault("classes-from-pc-outputs", "line 24: class 10 is not one of the model's 10 classes (0-9, from the "
                "PC FP32 outputs)", setup=_free_output_shape, ran=True),
    ConfigFault("nan-tolerance", "verify_parameters.accuracy_tolerance must be a finite number, got nan",
                verify={"accuracy_tolerance": math.nan}),
    ConfigFault("infinite-bug-threshold", "verify_parameters.bug_threshold must be a finite number, got inf",
                verify={"bug_threshold": math.inf}),
    ConfigFault("nan-agreement", "verify_parameters.agreement_bug_threshold must be a finite number",
                verify={"agreement_bug_threshold": math.nan}),
    ConfigFault("negative-snr", "verify_parameters.runtime_snr_fail_db must be at least 0.0, got -3",
                verify={"runtime_snr_fail_db": -3}),
]


@pytest.mark.parametrize("fault", CONFIG_FAULTS, ids=[f.name for f in CONFIG_FAULTS])
def test_config_fault_is_exit_2_before_the_board_runs(tmp_path, fault):
    config = make_project(tmp_path / "p", verify=fault.verify)
    if fault.labels is not None:
        (config.parent / "eval_labels.txt").write_text(fault.labels)
    if fault.setup:
        fault.setup(config.parent)
    db = tmp_path / "h.db"
    code, report, _, stderr = verify(config, "host", tmp_path / "out", "--db", str(db))
    assert code == 2, stderr
    assert fault.words in stderr and stderr.count("\n") == 1 and "Traceback" not in stderr
    assert report is None and not (tmp_path / "out").exists() and history_verdicts(db) == []
    assert (config.parent / "work" / "tiny.q.onnx").exists() == fault.ran  # config faults stop before quantizing


def test_labels_in_range_and_aligned_still_pass(tmp_path):
    config = make_project(tmp_path / "p")
    (config.parent / "eval_labels.txt").write_text("\n".join(str(i % 10) for i in range(24)) + "\n\n")
    code, report, _, stderr = verify(config, "host", tmp_path / "out")
    assert code == 0, stderr
    assert report["accuracy"]["labelled"] and report["accuracy"]["samples"] == 24


REPO = Path(__file__).resolve().parents[2]
MID_CONV = "/head/head.1/head.1.0/Conv"  # the demo CNN's last Conv, before the pooling head


@pytest.fixture(scope="module")
def demo(tmp_path_factory) -> dict:
    """configs/demo.json (real Fashion-MNIST, 500 labelled samples) with absolute paths, quantized once."""
    folder = tmp_path_factory.mktemp("demo")
    config = demo_config(folder, warmup=1, repeat=3)
    code, report, _, stderr = verify(config, "host", folder / "clean")
    assert code == 0, stderr
    return {"config": config, "qmodel": folder / "work" / "fashion_cnn.q.onnx", "clean": report}


def test_demo_clean_run_passes_bit_identical(demo):
    report = demo["clean"]
    assert report["verdict"] == "pass" and report["rules"] == [] and report["accuracy"]["samples"] == 500
    assert report["runtime"]["departure"]["identical"] is True
    assert report["runtime"]["agreement"]["disagreement_points"] == 0.0


def test_demo_mid_network_conv_scaled_by_1_02_fails_although_accuracy_holds(demo, tmp_path):
    """A board whose runtime scales one mid-network Conv output by 1.02: labelled accuracy and top-1 agreement
    stay where they were, the INT8 outputs do not. That is a chip-runtime bug (exit 1), not a pass."""
    python = fault_python(sys.executable, f"scale-node:{MID_CONV}:1.02")
    code, report, stdout, _ = verify(demo["config"], "host", tmp_path / "out", "--qmodel", str(demo["qmodel"]),
                                     "--python", python)
    assert code == 1 and report["verdict"] == "fail"
    acc = report["accuracy"]
    assert acc["chip_int8"] >= acc["pc_int8"] - 0.2 and acc["status"] == "pass"  # accuracy hides it
    assert [(r["rule"], r["level"]) for r in report["rules"]][0] == ("int8-runtime", "fail")
    departure = report["runtime"]["departure"]
    assert departure["snr_db"] < 40.0 and departure["expect_identical"] and not departure["identical"]
    assert "(rule `int8-runtime`)" in (tmp_path / "out" / "verify.md").read_text() and "FAIL" in stdout
