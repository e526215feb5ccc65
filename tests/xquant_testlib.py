"""Test helpers shared by the xquant tests: the bundled demo's real data and tiny graphs built with onnx.helper.

Imported by name (``from xquant_testlib import ...``), never through ``conftest`` (several folders have one)."""
from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Dict, List, Sequence

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

REPO = Path(__file__).resolve().parents[1]
DEMO_CONFIG = REPO / "configs" / "demo.json"
DEMO_MODEL = REPO / "demo" / "model" / "fashion_cnn.onnx"


def demo_eval_batch(limit: int = 200) -> Dict[str, np.ndarray]:
    """Real held-out Fashion-MNIST images (the demo's eval split) preprocessed like the demo config."""
    import cv2

    cfg = json.loads(DEMO_CONFIG.read_text())
    param = cfg["calibration_parameters"]["input_parametres"][0]
    folder = REPO / "demo" / "data"
    names = (folder / "eval_list.txt").read_text().split()[:limit]
    labels = np.array([int(x) for x in (folder / "eval_labels.txt").read_text().split()[:limit]])
    imgs = [cv2.imread(str(folder / n), cv2.IMREAD_GRAYSCALE).astype(np.float32) for n in names]
    x = (np.stack(imgs)[:, None] - param["mean_value"][0]) / param["std_value"][0]
    return {"input": x.astype(np.float32), "labels": labels}

def run_model(model, feeds: Dict[str, np.ndarray]) -> List[np.ndarray]:
    import onnxruntime as ort

    data = model.SerializeToString() if isinstance(model, onnx.ModelProto) else str(model)
    sess = ort.InferenceSession(data, providers=["CPUExecutionProvider"])
    return sess.run(None, feeds)

def _init(name: str, array: np.ndarray) -> TensorProto:
    return numpy_helper.from_array(np.asarray(array), name)

def build_cnn(opset: int = 17, batch="N", with_concat: bool = True, seed: int = 0) -> onnx.ModelProto:
    """Conv-Relu -> MaxPool -> [Conv-Relu, Conv] -> Concat -> Reshape/Flatten -> Gemm: every op family."""
    rng = np.random.default_rng(seed)
    inits = [
        _init("w1", rng.normal(0, 0.3, (8, 3, 3, 3)).astype(np.float32)),
        _init("b1", rng.normal(0, 0.1, 8).astype(np.float32)),
        _init("w2", rng.normal(0, 0.2, (8, 8, 3, 3)).astype(np.float32)),
        _init("b2", rng.normal(0, 0.1, 8).astype(np.float32)),
        _init("w3", rng.normal(0, 0.2, (8, 8, 1, 1)).astype(np.float32)),
        _init("b3", rng.normal(0, 0.1, 8).astype(np.float32)),
        _init("wf", rng.normal(0, 0.1, (10, 16 if with_concat else 8)).astype(np.float32)),
        _init("bf", rng.normal(0, 0.1, 10).astype(np.float32)),
    ]
    nodes = [
        helper.make_node("Conv", ["x", "w1", "b1"], ["c1"], pads=[1, 1, 1, 1], name="conv1"),
        helper.make_node("Relu", ["c1"], ["r1"], name="relu1"),
        helper.make_node("MaxPool", ["r1"], ["p1"], kernel_shape=[2, 2], strides=[2, 2], name="pool1"),
        helper.make_node("Conv", ["p1", "w2", "b2"], ["c2"], pads=[1, 1, 1, 1], name="conv2"),
        helper.make_node("Relu", ["c2"], ["r2"], name="relu2"),
        helper.make_node("Conv", ["p1", "w3", "b3"], ["c3"], name="conv3"),
    ]
    merged = "r2"
    if with_concat:
        nodes.append(helper.make_node("Concat", ["r2", "c3"], ["cat"], axis=1, name="concat"))
        merged = "cat"
    nodes += [
        helper.make_node("GlobalAveragePool", [merged], ["gap"], name="gap"),
        helper.make_node("Flatten", ["gap"], ["flat"], axis=1, name="flatten"),
        helper.make_node("Gemm", ["flat", "wf", "bf"], ["logits"], transB=1, name="fc"),
    ]
    graph = helper.make_graph(
        nodes, "tiny_cnn",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [batch, 3, 16, 16])],
        [helper.make_tensor_value_info("logits", TensorProto.FLOAT, [batch, 10])], inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])
    model.ir_version = min(model.ir_version, 8 if opset <= 17 else 10)
    onnx.checker.check_model(model)
    return model

def build_two_input(seed: int = 0) -> onnx.ModelProto:
    """Two inputs (image a, image b), two outputs (logits, features), MatMul with an activation operand."""
    rng = np.random.default_rng(seed)
    inits = [_init("wa", rng.normal(0, 0.3, (4, 1, 3, 3)).astype(np.float32)),
             _init("wb", rng.normal(0, 0.3, (4, 1, 3, 3)).astype(np.float32)),
             _init("wm", rng.normal(0, 0.2, (8, 5)).astype(np.float32))]
    nodes = [
        helper.make_node("Conv", ["a", "wa"], ["ca"], pads=[1, 1, 1, 1], name="conv_a"),
        helper.make_node("Conv", ["b", "wb"], ["cb"], pads=[1, 1, 1, 1], name="conv_b"),
        helper.make_node("Add", ["ca", "cb"], ["sum"], name="add"),
        helper.make_node("Relu", ["sum"], ["feat"], name="relu"),
        helper.make_node("Concat", ["ca", "cb"], ["cat"], axis=1, name="concat"),
        helper.make_node("GlobalAveragePool", ["cat"], ["gap"], name="gap"),
        helper.make_node("Flatten", ["gap"], ["flat"], name="flatten"),
        helper.make_node("MatMul", ["flat", "wm"], ["logits"], name="matmul"),
    ]
    graph = helper.make_graph(
        nodes, "two_input",
        [helper.make_tensor_value_info("a", TensorProto.FLOAT, [1, 1, 12, 12]),
         helper.make_tensor_value_info("b", TensorProto.FLOAT, [1, 1, 12, 12])],
        [helper.make_tensor_value_info("logits", TensorProto.FLOAT, [1, 5]),
         helper.make_tensor_value_info("feat", TensorProto.FLOAT, [1, 4, 12, 12])], inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    return model

def write_npy_list(folder: Path, name: str, arrays: Sequence[np.ndarray]) -> Path:
    """Save arrays as .npy files under folder/name/ and a list file with relative entries."""
    sub = folder / name
    sub.mkdir(parents=True, exist_ok=True)
    lines = []
    for i, arr in enumerate(arrays):
        np.save(sub / f"{i:04d}.npy", arr.astype(np.float32))
        lines.append(f"{name}/{i:04d}.npy")
    list_path = folder / f"{name}_list.txt"
    list_path.write_text("\n".join(lines) + "\n")
    return list_path

def env_without_pythonpath() -> Dict[str, str]:
    env = dict(os.environ)
    env.pop("PYTHONPATH", None)
    return env


def fine_tuning_parts(cfg_dict: dict):
    """(fp32, plan, activation params, samples) of a config as fine-tuning gets them: prepared, planned and
    calibrated on the config's own data."""
    from xquant.calibration.ranges import activation_params
    from xquant.config import load_config
    from xquant.data import CalibrationData
    from xquant.finetune.samples import load_samples
    from xquant.plan.policy import plan_model
    from xquant.prepare import prepare_model
    from xquant.quantize import calibration_stats

    cfg, proto = load_config(cfg_dict)
    data = CalibrationData(cfg)
    fp32 = prepare_model(proto, cfg.model.skip_onnxsim)
    plan = plan_model(fp32, cfg)
    params = activation_params(plan, calibration_stats(fp32, cfg, plan, data, False))
    return fp32, plan, params, load_samples(fp32, cfg, data)
