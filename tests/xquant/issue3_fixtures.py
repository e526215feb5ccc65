"""Models and helpers for the precision, custom_setting, truncation, fine-tune and report tests.

Every model takes real Fashion-MNIST images (the demo's calibration PNGs) as input [N, 1, 28, 28]."""
from __future__ import annotations

from pathlib import Path
from typing import Dict, List, Optional, Sequence, Set

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

REPO = Path(__file__).resolve().parents[2]
DEMO_LIST = REPO / "demo" / "data" / "calib_list.txt"
DEMO_MEAN, DEMO_STD = 72.9404, 90.0212
FUSED = ("Relu", "Clip")


def require_demo() -> None:
    if not DEMO_LIST.exists():
        pytest.skip("bundled demo data missing (demo/data/calib_list.txt; run bench/train_demo.py)")


def image_config(model: onnx.ModelProto, tmp_path: Path, samples: int = 32, **quant) -> Dict:
    """Config dict: ``model`` saved under tmp_path, calibrated on ``samples`` real demo images."""
    require_demo()
    tmp_path.mkdir(parents=True, exist_ok=True)
    path = tmp_path / f"{model.graph.name}.onnx"
    onnx.save(model, path)
    name = model.graph.input[0].name
    return {
        "model_parameters": {"onnx_model": str(path), "working_dir": str(tmp_path)},
        "calibration_parameters": {"calibration_step": samples, "input_parametres": [{
            "input_name": name, "input_shape": [1, 1, 28, 28], "file_type": "img", "mean_value": [DEMO_MEAN],
            "std_value": [DEMO_STD], "data_list_path": str(DEMO_LIST)}]},
        "quantization_parameters": {"finetune_level": 0, **quant},
    }


def demo_images(count: int, start: int = 0) -> np.ndarray:
    """``count`` real calibration images, normalised like the demo config, [count, 1, 28, 28]."""
    import cv2

    require_demo()
    names = DEMO_LIST.read_text().split()[start:start + count]
    imgs = [cv2.imread(str(DEMO_LIST.parent / n), cv2.IMREAD_GRAYSCALE) for n in names]
    return ((np.stack(imgs).astype(np.float32) - DEMO_MEAN) / DEMO_STD)[:, None]


def node(model: onnx.ModelProto, name: str) -> onnx.NodeProto:
    return next(n for n in model.graph.node if n.name == name)


def _maps(model: onnx.ModelProto):
    producer = {o: n for n in model.graph.node for o in n.output}
    consumers: Dict[str, List[onnx.NodeProto]] = {}
    for n in model.graph.node:
        for i in n.input:
            consumers.setdefault(i, []).append(n)
    return producer, consumers


def int8_ops(model: onnx.ModelProto) -> Set[str]:
    """Nodes a QDQ runtime runs in INT8: every float input comes from a DequantizeLinear and every output
    goes into a QuantizeLinear (directly or through a fused Relu/Clip); a Gemm or MatMul may hand a float
    output on (onnxruntime's QGemm without y_scale, MatMulIntegerToFloat)."""
    producer, consumers = _maps(model)

    def quantized_out(tensor: str, allow_fused: bool = True) -> bool:
        users = consumers.get(tensor, [])
        return bool(users) and all(u.op_type == "QuantizeLinear" or (allow_fused and u.op_type in FUSED and all(
            quantized_out(o, False) for o in u.output)) for u in users)

    graph_inputs = {v.name for v in model.graph.input}
    result = set()
    for n in model.graph.node:
        if n.op_type in ("QuantizeLinear", "DequantizeLinear"):
            continue
        data = [i for i in n.input if i and (i in producer or i in graph_inputs)]
        from_dq = all(i in producer and producer[i].op_type == "DequantizeLinear" for i in data)
        float_out_ok = n.op_type in ("Gemm", "MatMul")
        if data and from_dq and (float_out_ok or all(quantized_out(o) for o in n.output if o)):
            result.add(n.name)
    for n in model.graph.node:  # a Relu/Clip fused into the INT8 op before it
        if n.op_type in FUSED and producer.get(n.input[0], n).name in result and all(
                quantized_out(o, False) for o in n.output):
            result.add(n.name)
    return result


def assert_written_as_planned(model: onnx.ModelProto, int8: Set[str]) -> None:
    """The QDQ model runs exactly ``int8`` in INT8: those ops read dequantized inputs and write quantized
    outputs; every other op computes in float and its output is quantized only when an INT8 op reads it."""
    producer, consumers = _maps(model)
    seen = int8_ops(model)
    for n in model.graph.node:
        if n.op_type in ("QuantizeLinear", "DequantizeLinear"):
            continue
        if n.name in int8:
            assert n.name in seen, f"{n.name} should run in INT8"
            continue
        for out in n.output:
            quant = [c for c in consumers.get(out, []) if c.op_type == "QuantizeLinear"]
            readers = {r.name for q in quant for d in consumers.get(q.output[0], [])
                       for r in consumers.get(d.output[0], [])}
            plain = {c.name for c in consumers.get(out, []) if c.op_type != "QuantizeLinear"}
            assert not (plain & int8), f"INT8 op(s) {plain & int8} read the float output of {n.name}"
            assert not quant or readers & int8, f"float op {n.name}: its output is quantized for no INT8 reader"


def _init(name: str, array) -> TensorProto:
    return numpy_helper.from_array(np.asarray(array), name)


def _model(nodes, inits, outputs: Sequence[str], name: str, out_shapes: Optional[dict] = None) -> onnx.ModelProto:
    outs = [helper.make_tensor_value_info(o, TensorProto.FLOAT, (out_shapes or {}).get(o, ["N", None]))
            for o in outputs]
    graph = helper.make_graph(nodes, name, [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 1, 28, 28])],
                              outs, inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.checker.check_model(model)
    return model


def build_precision_model(seed: int = 0) -> onnx.ModelProto:
    """One op of every precision class: Conv/Relu/Gemm (always INT8 by type), a Mul by a constant,
    parameter-free Mul/Add/Sub, Sigmoid, Softmax and a Div by a constant (fragile)."""
    rng = np.random.default_rng(seed)
    inits = [_init("w1", rng.normal(0, 0.4, (4, 1, 3, 3)).astype(np.float32)),
             _init("b1", rng.normal(0, 0.1, 4).astype(np.float32)),
             _init("gain", rng.uniform(0.5, 2.0, (1, 4, 1, 1)).astype(np.float32)),
             _init("wf", rng.normal(0, 0.5, (10, 4)).astype(np.float32)),
             _init("bf", np.zeros(10, np.float32)), _init("temp", np.float32(0.5))]
    nodes = [
        helper.make_node("Conv", ["x", "w1", "b1"], ["c1"], pads=[1, 1, 1, 1], name="conv"),
        helper.make_node("Relu", ["c1"], ["r"], name="relu"),
        helper.make_node("Sigmoid", ["r"], ["sig"], name="sigmoid"),
        helper.make_node("Mul", ["r", "sig"], ["m"], name="mul_act"),
        helper.make_node("Mul", ["m", "gain"], ["mc"], name="mul_const"),
        helper.make_node("Add", ["mc", "r"], ["a"], name="add_act"),
        helper.make_node("Sub", ["a", "sig"], ["s"], name="sub_act"),
        helper.make_node("GlobalAveragePool", ["s"], ["gap"], name="gap"),
        helper.make_node("Flatten", ["gap"], ["flat"], name="flatten"),
        helper.make_node("Gemm", ["flat", "wf", "bf"], ["logits"], transB=1, name="fc"),
        helper.make_node("Softmax", ["logits"], ["probs"], axis=1, name="softmax"),
        helper.make_node("Div", ["probs", "temp"], ["scaled"], name="div_const"),
    ]
    return _model(nodes, inits, ["scaled"], "precision_ops", {"scaled": ["N", 10]})


def build_seed_block(seed: int = 0) -> onnx.ModelProto:
    """The seed manual's custom_setting picture: Conv on n2 ... Add with the side input n7 -> y, then a head.

    x -> conv0 -> n2 -> conv_a -> relu_a -> conv_b -> sigmoid_b (n5) -> mul_b (n6)
    x -> conv_side -> n7;  add(n6, n7) -> y -> sigmoid_y -> gap -> flatten -> fc -> logits"""
    rng = np.random.default_rng(seed)
    w = lambda name, shape, s=0.3: _init(name, rng.normal(0, s, shape).astype(np.float32))
    inits = [w("w0", (4, 1, 3, 3)), w("wa", (4, 4, 3, 3)), w("wb", (4, 4, 1, 1)), w("ws", (4, 1, 3, 3)),
             w("wf", (10, 4)), _init("bf", np.zeros(10, np.float32))]
    nodes = [
        helper.make_node("Conv", ["x", "w0"], ["n2"], pads=[1, 1, 1, 1], name="conv0"),
        helper.make_node("Conv", ["n2", "wa"], ["n3"], pads=[1, 1, 1, 1], name="conv_a"),
        helper.make_node("Relu", ["n3"], ["n4"], name="relu_a"),
        helper.make_node("Conv", ["n4", "wb"], ["n5a"], name="conv_b"),
        helper.make_node("Sigmoid", ["n5a"], ["n5"], name="sigmoid_b"),
        helper.make_node("Mul", ["n5a", "n5"], ["n6"], name="mul_b"),
        helper.make_node("Conv", ["x", "ws"], ["n7"], pads=[1, 1, 1, 1], name="conv_side"),
        helper.make_node("Add", ["n6", "n7"], ["y"], name="add"),
        helper.make_node("Sigmoid", ["y"], ["z"], name="sigmoid_y"),
        helper.make_node("GlobalAveragePool", ["z"], ["gap"], name="gap"),
        helper.make_node("Flatten", ["gap"], ["flat"], name="flatten"),
        helper.make_node("Gemm", ["flat", "wf", "bf"], ["logits"], transB=1, name="fc"),
    ]
    return _model(nodes, inits, ["logits"], "seed_block", {"logits": ["N", 10]})


GRID1, GRID2 = 7, 4
NUM_CLASSES = 3


def _grid(size: int) -> np.ndarray:
    ys, xs = np.meshgrid(np.arange(size), np.arange(size), indexing="ij")
    return np.stack([xs.ravel(), ys.ravel()], axis=-1).astype(np.float32)  # [size*size, 2]


def build_detector(seed: int = 0) -> onnx.ModelProto:
    """A two-level YOLO-style detector with its real decode tail.

    Main part: conv backbone, one head per level (4 box + 3 class channels), Concat of both levels:
    ``raw_boxes`` [N, 65, 4] (Concat output) and ``scores`` [N, 65, 3] (Sigmoid output).
    Tail: xy = (sigmoid(t_xy) * 2 - 0.5 + grid) * stride, wh = exp(t_wh) * anchor * stride,
    xyxy corners, Concat with the scores -> ``detections`` [N, 65, 7]."""
    rng = np.random.default_rng(seed)
    w = lambda name, shape, s: _init(name, rng.normal(0, s, shape).astype(np.float32))
    b = lambda name, n: _init(name, rng.normal(0, 0.05, n).astype(np.float32))
    cells = GRID1 * GRID1 + GRID2 * GRID2
    grid = np.concatenate([_grid(GRID1), _grid(GRID2)])[None]
    stride = np.concatenate([np.full((GRID1 * GRID1, 1), 4.0), np.full((GRID2 * GRID2, 1), 7.0)])[None]
    inits = [w("w1", (8, 1, 3, 3), 0.5), b("b1", 8), w("w2", (16, 8, 3, 3), 0.2), b("b2", 16),
             w("w3", (16, 16, 3, 3), 0.15), b("b3", 16), w("wh1", (7, 16, 1, 1), 0.3), b("bh1", 7),
             w("wh2", (7, 16, 1, 1), 0.3), b("bh2", 7),
             _init("shape1", np.array([0, 7, -1], np.int64)), _init("perm_split", np.array([4, 3], np.int64)),
             _init("box_split", np.array([2, 2], np.int64)), _init("two", np.float32(2.0)),
             _init("half", np.float32(0.5)), _init("grid", grid.astype(np.float32)),
             _init("stride", stride.astype(np.float32)), _init("anchor", np.float32(1.5))]
    nodes = [
        helper.make_node("Conv", ["x", "w1", "b1"], ["f1"], pads=[1, 1, 1, 1], strides=[2, 2], name="backbone1"),
        helper.make_node("Relu", ["f1"], ["f1r"], name="backbone1_relu"),
        helper.make_node("Conv", ["f1r", "w2", "b2"], ["f2"], pads=[1, 1, 1, 1], strides=[2, 2], name="backbone2"),
        helper.make_node("Relu", ["f2"], ["f2r"], name="backbone2_relu"),
        helper.make_node("Conv", ["f2r", "w3", "b3"], ["f3"], pads=[1, 1, 1, 1], strides=[2, 2], name="backbone3"),
        helper.make_node("Relu", ["f3"], ["f3r"], name="backbone3_relu"),
        helper.make_node("Conv", ["f2r", "wh1", "bh1"], ["h1"], name="head1"),
        helper.make_node("Conv", ["f3r", "wh2", "bh2"], ["h2"], name="head2"),
        helper.make_node("Reshape", ["h1", "shape1"], ["h1f"], name="head1_reshape"),
        helper.make_node("Reshape", ["h2", "shape1"], ["h2f"], name="head2_reshape"),
        helper.make_node("Transpose", ["h1f"], ["h1t"], perm=[0, 2, 1], name="head1_transpose"),
        helper.make_node("Transpose", ["h2f"], ["h2t"], perm=[0, 2, 1], name="head2_transpose"),
        helper.make_node("Split", ["h1t", "perm_split"], ["box1", "cls1"], axis=2, name="head1_split"),
        helper.make_node("Split", ["h2t", "perm_split"], ["box2", "cls2"], axis=2, name="head2_split"),
        helper.make_node("Concat", ["box1", "box2"], ["raw_boxes"], axis=1, name="box_concat"),
        helper.make_node("Concat", ["cls1", "cls2"], ["cls"], axis=1, name="cls_concat"),
        helper.make_node("Sigmoid", ["cls"], ["scores"], name="cls_sigmoid"),
        # ---- post-processing (decode) tail
        helper.make_node("Split", ["raw_boxes", "box_split"], ["t_xy", "t_wh"], axis=2, name="decode_split"),
        helper.make_node("Sigmoid", ["t_xy"], ["s_xy"], name="decode_sigmoid"),
        helper.make_node("Mul", ["s_xy", "two"], ["s_xy2"], name="decode_mul2"),
        helper.make_node("Sub", ["s_xy2", "half"], ["s_xy3"], name="decode_sub"),
        helper.make_node("Add", ["s_xy3", "grid"], ["cell_xy"], name="decode_add_grid"),
        helper.make_node("Mul", ["cell_xy", "stride"], ["xy"], name="decode_mul_stride"),
        helper.make_node("Exp", ["t_wh"], ["e_wh"], name="decode_exp"),
        helper.make_node("Mul", ["e_wh", "anchor"], ["a_wh"], name="decode_mul_anchor"),
        helper.make_node("Mul", ["a_wh", "stride"], ["wh"], name="decode_mul_wh_stride"),
        helper.make_node("Mul", ["wh", "half"], ["half_wh"], name="decode_half_wh"),
        helper.make_node("Sub", ["xy", "half_wh"], ["x1y1"], name="decode_x1y1"),
        helper.make_node("Add", ["xy", "half_wh"], ["x2y2"], name="decode_x2y2"),
        helper.make_node("Concat", ["x1y1", "x2y2", "scores"], ["detections"], axis=2, name="decode_concat"),
    ]
    return _model(nodes, inits, ["detections"], "detector", {"detections": ["N", cells, 4 + NUM_CLASSES]})


def build_gate_difference(seed: int = 0) -> onnx.ModelProto:
    """A model with one layer known to quantize badly: ``y = a * sigmoid(u) - a * hardsigmoid(u)``.

    The two products are almost equal, so their difference is small: quantizing each product to INT8
    (a step of ~1/128 of its range) leaves a difference made mostly of rounding noise. Everything before
    is well behaved; everything after only inherits the error. Keeping the gate (Sigmoid, HardSigmoid,
    the two parameter-free Mul and the Sub) float, as precision_level 2 does, removes the error."""
    rng = np.random.default_rng(seed)
    w = lambda name, shape, s: _init(name, rng.normal(0, s, shape).astype(np.float32))
    inits = [w("w0", (4, 1, 3, 3), 0.5), _init("b0", np.zeros(4, np.float32)), w("wu", (4, 4, 1, 1), 0.6),
             w("wa", (4, 4, 3, 3), 0.3), w("wo", (8, 4, 3, 3), 2.0), w("wf", (10, 8), 0.5),
             _init("bf", np.zeros(10, np.float32))]
    nodes = [
        helper.make_node("Conv", ["x", "w0", "b0"], ["c0"], pads=[1, 1, 1, 1], name="conv0"),
        helper.make_node("Relu", ["c0"], ["r0"], name="relu0"),
        helper.make_node("Conv", ["r0", "wu"], ["u"], name="conv_u"),
        helper.make_node("Conv", ["r0", "wa"], ["a"], pads=[1, 1, 1, 1], name="conv_a"),
        helper.make_node("Sigmoid", ["u"], ["g1"], name="gate_sigmoid"),
        helper.make_node("HardSigmoid", ["u"], ["g2"], name="gate_hardsigmoid"),
        helper.make_node("Mul", ["a", "g1"], ["p1"], name="gate_mul1"),
        helper.make_node("Mul", ["a", "g2"], ["p2"], name="gate_mul2"),
        helper.make_node("Sub", ["p1", "p2"], ["y"], name="gate_sub"),
        helper.make_node("Conv", ["y", "wo"], ["c1"], pads=[1, 1, 1, 1], name="conv_out"),
        helper.make_node("Relu", ["c1"], ["r1"], name="relu_out"),
        helper.make_node("GlobalAveragePool", ["r1"], ["gap"], name="gap"),
        helper.make_node("Flatten", ["gap"], ["flat"], name="flatten"),
        helper.make_node("Gemm", ["flat", "wf", "bf"], ["logits"], transB=1, name="fc"),
    ]
    return _model(nodes, inits, ["logits"], "gate_difference", {"logits": ["N", 10]})
