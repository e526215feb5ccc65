"""truncate_var_names on a YOLO-style detector with a real decode tail (Sigmoid, grid Add, stride Mul, Exp,
corner Sub/Add, Concat), cut at the Concat and Sigmoid outputs as in the seed's yolov6 example."""
from __future__ import annotations

import json

import numpy as np
import onnx
import onnxruntime as ort
import pytest

from issue3_fixtures import build_detector, demo_images, image_config
from xquant.cli import main
from xquant.errors import GraphError
from xquant.quantize import run_quantization

CUT = ["raw_boxes", "scores"]
MAIN = {"backbone1", "backbone1_relu", "backbone2", "backbone2_relu", "backbone3", "backbone3_relu", "head1",
        "head2", "head1_reshape", "head2_reshape", "head1_transpose", "head2_transpose", "head1_split",
        "head2_split", "box_concat", "cls_concat", "cls_sigmoid"}


def quantize(tmp_path, names=CUT, **quant):
    return run_quantization(image_config(build_detector(), tmp_path, truncate_var_names=names, **quant))


def session(model: onnx.ModelProto) -> ort.InferenceSession:
    return ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])


def io_signature(model):
    sig = lambda values: [(v.name, v.type.tensor_type.elem_type) for v in values]
    inits = {t.name for t in model.graph.initializer}
    return sig([v for v in model.graph.input if v.name not in inits]), sig(model.graph.output)


def test_main_part_is_int8_tail_is_float_and_io_is_unchanged(tmp_path):
    result = quantize(tmp_path)
    assert result.plan.quantized_nodes == MAIN
    assert io_signature(result.model) == io_signature(build_detector())
    tail = [n for n in result.model.graph.node if n.name.startswith("decode")]
    assert len(tail) == 13
    made_by = {o: n.op_type for n in result.model.graph.node for o in n.output}
    for node in tail:  # nothing quantized in the tail: it reads the hand-over DQs, its own tensors, constants
        for name in node.input:
            assert made_by.get(name) != "DequantizeLinear" or name in ("raw_boxes_dequantized", "scores_dequantized")
    assert not any(n.op_type == "QuantizeLinear" and made_by.get(n.input[0], "").startswith("decode")
                   for n in result.model.graph.node)


def test_float_tail_outputs_are_identical_to_fp32_for_the_same_inputs(tmp_path):
    result = quantize(tmp_path)
    handover = ["raw_boxes_dequantized", "scores_dequantized"]
    exposed = onnx.ModelProto()
    exposed.CopyFrom(result.model)
    exposed.graph.output.extend(onnx.helper.make_tensor_value_info(n, onnx.TensorProto.FLOAT, None) for n in handover)
    x = demo_images(16, start=100)
    detections, boxes, scores = session(exposed).run(["detections"] + handover, {"x": x})
    fp32_tail = onnx.utils.Extractor(result.fp32_model).extract_model(CUT, ["detections"])
    reference, = session(fp32_tail).run(["detections"], {"raw_boxes": boxes, "scores": scores})
    np.testing.assert_array_equal(detections, reference)
    # and the hand-over itself is the INT8 main part's output: close to, not equal to, FP32
    fp32_boxes, = session(result.fp32_model).run(["detections"], {"x": x})
    assert not np.array_equal(fp32_boxes, detections)


def test_truncation_beats_quantizing_the_decode_tail(tmp_path):
    whole = run_quantization(image_config(build_detector(), tmp_path / "whole"))
    cut = quantize(tmp_path / "cut")
    assert {"decode_exp", "decode_concat"} <= whole.plan.quantized_nodes
    assert cut.fidelity["detections"]["snr_db"] > whole.fidelity["detections"]["snr_db"] + 3.0


@pytest.mark.parametrize("names,needle", [
    (["raw_boxs", "scores"], r"^truncate graph failed\. Tensor 'raw_boxs' in quantization_parameters"
                             r"\.truncate_var_names does not exist in the model\. Close matches: 'raw_boxes'"),
    (["raw_boxes"], r"^truncate graph failed\. The names in .* do not cut the graph in two: node 'decode_concat' "
                    r"after the cut also reads 'scores', which is computed before it\. Add 'scores' to"),
    (["x"], r"^truncate graph failed\. 'x' .* is a model input"),
    (["detections"], r"^truncate graph failed\. 'detections' .* is not read by any node"),
    (CUT + ["xy"], r"^truncate graph failed\. 'xy' .* lies after the cut"),
])
def test_names_that_do_not_cut_are_errors(tmp_path, names, needle):
    with pytest.raises(GraphError, match=needle):
        quantize(tmp_path, names)
    assert not list(tmp_path.glob("*.q.onnx"))


def test_cli_reports_truncation_failure_in_one_line_exit_2(tmp_path, capsys):
    cfg = image_config(build_detector(), tmp_path, truncate_var_names=["raw_boxes"])
    path = tmp_path / "cfg.json"
    path.write_text(json.dumps(cfg))
    assert main(["-c", str(path), "-q"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("xquant: error: truncate graph failed.") and "\n" not in err
