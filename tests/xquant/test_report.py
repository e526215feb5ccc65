"""The analysis report (analysis_enable): files, per-tensor accumulated and isolated error, flags, culprits,
a measured custom_setting, and the calibration input statistics with their warnings."""
from __future__ import annotations

import json
import math

import cv2
import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from issue3_fixtures import DEMO_LIST, build_gate_difference, image_config, require_demo
from xquant.analysis.inputs import input_statistics
from xquant.calibration.session import with_outputs
from xquant.config.schema import InputParameter
from xquant.quantize import run_quantization

UPSTREAM = {"x", "r0", "u", "a", "g1", "g2", "p1", "p2"}


@pytest.fixture(scope="module")
def gate_report(tmp_path_factory):
    folder = tmp_path_factory.mktemp("gate")
    result = run_quantization(image_config(build_gate_difference(), folder, analysis_enable=True), summary=False)
    return result, folder


def rows_by_tensor(report):
    return {r["tensor"]: r for r in report["tensors"]}


def test_report_files_hold_the_same_data(gate_report):
    result, folder = gate_report
    md = (folder / "gate_difference_report.md").read_text()
    data = json.loads((folder / "gate_difference_report.json").read_text())
    assert [r["tensor"] for r in data["tensors"]] == [r["tensor"] for r in result.report["tensors"]]
    for row in data["tensors"]:
        assert f"`{row['tensor']}`" in md
    assert "## Summary" in md and "## Calibration inputs" in md and "## Quantized tensors, worst first" in md
    assert not list(folder.glob(".xquant-*"))  # atomic writes leave no temp file


def test_rows_are_worst_first_with_xquant_snr_and_the_other_metrics(gate_report):
    report = gate_report[0].report
    snrs = [r["accumulated"]["snr"] for r in report["tensors"]]
    assert snrs == sorted(snrs, reverse=True)
    for row in report["tensors"]:
        acc = row["accumulated"]
        assert acc["snr_db"] == pytest.approx(-10 * math.log10(acc["snr"]))
        assert row["flagged"] == (acc["snr"] > 0.1 or acc["cosine"] < 0.99)
        assert {"op", "mse", "cosine"} <= set(row) | set(acc)
        assert len(row["histogram"]["counts"]) == 16 and sum(row["histogram"]["counts"]) > 0
        lo, hi = row["float_range"]
        assert lo <= hi and row["quant_range"][0] <= row["quant_range"][1]


def test_flags_blame_the_bad_layer_and_mark_downstream_error_as_inherited(gate_report):
    report = gate_report[0].report
    rows = rows_by_tensor(report)
    culprit = report["summary"]["culprits"][0]
    assert (culprit["tensor"], culprit["op"], culprit["node"], culprit["cause"]) == ("y", "Sub", "gate_sub", "own")
    assert rows["y"]["flagged"] and rows["y"]["isolated"]["snr"] > 0.03
    for name in ("r1", "logits"):  # after the bad layer: flagged, but their own error is small
        assert rows[name]["flagged"] and rows[name]["cause"] == "inherited"
        assert rows[name]["isolated"]["snr"] < 0.01 * rows[name]["accumulated"]["snr"]
    assert not any(rows[t]["flagged"] for t in UPSTREAM)
    assert report["summary"]["flagged"] == sum(r["flagged"] for r in report["tensors"])


def test_isolated_error_is_that_op_alone(gate_report):
    """Recompute y's isolated error by hand: FP32 p1, p2 quantized once, subtracted, quantized."""
    result, _ = gate_report
    import onnxruntime as ort

    from xquant.data import CalibrationData

    batches = list(CalibrationData(result.config).batches(8))  # the analysis batches: 4 of 8 samples

    sess = ort.InferenceSession(with_outputs(result.fp32_model, ["p1", "p2", "y"]).SerializeToString())
    signal = noise = 0.0
    fq = lambda v, p: (np.clip(np.round(v / np.float32(p.scale)) + p.zero_point, -128, 127) - p.zero_point) * \
        np.float32(p.scale)
    for batch in batches:
        p1, p2, y = sess.run(["p1", "p2", "y"], batch)
        est = fq(fq(p1, result.params["p1"]) - fq(p2, result.params["p2"]), result.params["y"])
        signal += float(np.sum(y.astype(np.float64) ** 2))
        noise += float(np.sum((y.astype(np.float64) - est) ** 2))
    assert rows_by_tensor(result.report)["y"]["isolated"]["snr"] == pytest.approx(noise / signal, rel=1e-3)


def test_suggested_custom_setting_is_measured_and_gives_what_it_says(gate_report, tmp_path):
    result, _ = gate_report
    sug = result.report["summary"]["suggestion"]
    (setting,) = sug["custom_setting"]
    assert set(setting["input_names"]) == {"a", "u"} and setting["output_names"] == ["y"]
    assert setting["precision_level"] == 2
    assert sug["snr_db"] > sug["baseline_db"] + 6.0
    assert sug["baseline_db"] == pytest.approx(result.report["summary"]["output_snr_db"])
    again = run_quantization(image_config(build_gate_difference(), tmp_path, analysis_enable=True,
                                          custom_setting=sug["custom_setting"]), summary=False)
    assert again.report["summary"]["output_snr_db"] == pytest.approx(sug["snr_db"], abs=1e-6)
    assert not again.report["summary"]["flagged"] or again.report["summary"]["flagged"] < result.report["summary"][
        "flagged"]


def test_analysis_never_changes_the_written_model(gate_report):
    result, folder = gate_report
    on_disk = onnx.load(str(folder / "gate_difference.q.onnx"))
    assert on_disk.SerializeToString() == result.model.SerializeToString()


def test_demo_report_on_real_data_flags_nothing(demo_config):
    demo_config["quantization_parameters"].update(analysis_enable=True, analysis_batches=2)
    result = run_quantization(demo_config, summary=False)
    report = result.report
    assert report["summary"]["flagged"] == 0 and report["summary"]["suggestion"] is None
    assert report["samples"] == 8 and report["summary"]["output_snr_db"] > 30
    assert report["inputs"]["input"]["warnings"] == []
    assert abs(report["inputs"]["input"]["overall"]["mean"][0]) < 0.3
    md = (result.config.report_stem + "_report.md")
    assert "Nothing is flagged" in open(md, encoding="utf-8").read()


# ---------------------------------------------------------------- calibration input statistics

def _param(**kw) -> InputParameter:
    return InputParameter(input_name="x", input_shape=(1, 3, 28, 28), **kw)


def tinted(gray: np.ndarray) -> np.ndarray:
    """Real grayscale pixels -> three channels with different means (as bench/models.py does), BGR order."""
    g = gray.astype(np.int32)
    return np.stack([g, 64 + g // 2, 255 - g], axis=-1).astype(np.uint8)


@pytest.fixture(scope="module")
def colour_list(tmp_path_factory):
    require_demo()
    folder = tmp_path_factory.mktemp("colour")
    names = DEMO_LIST.read_text().split()[:48]
    imgs = [tinted(cv2.imread(str(DEMO_LIST.parent / n), cv2.IMREAD_GRAYSCALE)) for n in names]
    lines = []
    for i, img in enumerate(imgs):
        cv2.imwrite(str(folder / f"{i:03d}.png"), img)
        lines.append(f"{i:03d}.png")
    (folder / "list.txt").write_text("\n".join(lines) + "\n")
    pixels = np.stack(imgs).reshape(-1, 3).astype(np.float64)
    return folder / "list.txt", pixels.mean(0).round(3).tolist(), pixels.std(0).round(3).tolist()


def colour_model() -> onnx.ModelProto:
    rng = np.random.default_rng(0)
    inits = [numpy_helper.from_array(rng.normal(0, 0.3, (4, 3, 3, 3)).astype(np.float32), "w"),
             numpy_helper.from_array(rng.normal(0, 0.3, (10, 4)).astype(np.float32), "wf"),
             numpy_helper.from_array(np.zeros(10, np.float32), "bf")]
    nodes = [helper.make_node("Conv", ["x", "w"], ["c"], pads=[1, 1, 1, 1], name="conv"),
             helper.make_node("Relu", ["c"], ["r"], name="relu"),
             helper.make_node("GlobalAveragePool", ["r"], ["g"], name="gap"),
             helper.make_node("Flatten", ["g"], ["f"], name="flatten"),
             helper.make_node("Gemm", ["f", "wf", "bf"], ["logits"], transB=1, name="fc")]
    graph = helper.make_graph(nodes, "colour",
                              [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 3, 28, 28])],
                              [helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["N", 10])], inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    return model


@pytest.mark.parametrize("color_format,warned", [("bgr", False), ("rgb", True)])
def test_channel_swap_is_warned_on_real_colour_images(tmp_path, colour_list, color_format, warned):
    list_path, mean, std = colour_list
    path = tmp_path / "colour.onnx"
    onnx.save(colour_model(), path)
    cfg = {"model_parameters": {"onnx_model": str(path)},
           "calibration_parameters": {"calibration_step": 48, "input_parametres": [{
               "input_shape": [1, 3, 28, 28], "color_format": color_format, "mean_value": mean, "std_value": std,
               "data_list_path": str(list_path)}]},
           "quantization_parameters": {"finetune_level": 0, "analysis_enable": True, "analysis_batches": 4}}
    report = run_quantization(cfg, summary=False).report
    warnings = report["inputs"]["x"]["warnings"]
    assert any("swapped" in w and "color_format" in w for w in warnings) == warned
    if not warned:
        assert warnings == [] and max(abs(m) for m in report["inputs"]["x"]["channels"]["mean"]) < 0.2


def test_wrong_normalisation_and_broken_data_are_warned():
    rng = np.random.default_rng(0)
    off = [{"x": rng.normal(3.0, 1.0, (8, 3, 4, 4)).astype(np.float32)}]
    assert any("far from 0" in w for w in input_statistics(off, [_param(mean_value=(0, 0, 0))])["x"]["warnings"])
    flat = [{"x": np.full((8, 3, 4, 4), 0.5, np.float32)}]
    assert "constant" in input_statistics(flat, [_param(mean_value=(1, 1, 1))])["x"]["warnings"][0]
    raw = [{"x": rng.uniform(0, 255, (8, 3, 4, 4)).astype(np.float32)}]
    assert "raw pixels" in input_statistics(raw, [_param()])["x"]["warnings"][0]
    good = [{"x": rng.normal(0, 1, (8, 3, 4, 4)).astype(np.float32)}]
    assert input_statistics(good, [_param(mean_value=(100, 110, 120), std_value=(50, 50, 50))])["x"]["warnings"] == []
