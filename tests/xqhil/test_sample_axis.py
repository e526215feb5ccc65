"""Outputs whose samples are not on axis 0 (a time-major CTC output [T, N, C]) are joined and compared on
their own sample axis, on the PC and on the board alike (device/xqhil_agent.py: output_batch_axes)."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper
from xqhil_testlib import make_project, verify

from xqhil.reference import agent_module

C, T, K = 4, 6, 5


def build_time_major(path: Path, batch) -> None:
    """input [batch, C, T] -> Conv1d(C->K, kernel 1) -> Transpose -> output [T, batch, K] (CTC layout)."""
    rng = np.random.default_rng(0)
    inits = [numpy_helper.from_array(rng.standard_normal((K, C, 1)).astype(np.float32), "w"),
             numpy_helper.from_array(rng.standard_normal(K).astype(np.float32), "b")]
    nodes = [helper.make_node("Conv", ["input", "w", "b"], ["c"], name="conv"),
             helper.make_node("Transpose", ["c"], ["logits"], perm=[2, 0, 1], name="time_major")]
    graph = helper.make_graph(nodes, "time_major",
                              [helper.make_tensor_value_info("input", TensorProto.FLOAT, [batch, C, T])],
                              [helper.make_tensor_value_info("logits", TensorProto.FLOAT, [T, batch, K])], inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=8)
    onnx.checker.check_model(model)
    onnx.save(model, str(path))


def time_major_project(folder: Path, batch) -> Path:
    config = make_project(folder, labels=False)
    build_time_major(folder / "tiny.onnx", batch)
    rng = np.random.default_rng(3)
    for sample in (folder / "data").glob("*.npy"):
        np.save(sample, rng.standard_normal((C, T)).astype(np.float32))
    cfg = json.loads(config.read_text())
    cfg["calibration_parameters"]["input_parametres"][0]["input_shape"] = [1, C, T]
    cfg["verify_parameters"]["label_list_path"] = "labels.txt"
    (folder / "labels.txt").write_text("".join(f"{i % (T * K)}\n" for i in range(24)))
    config.write_text(json.dumps(cfg))
    return config


@pytest.mark.parametrize("batch", [1, "batch"], ids=["fixed-batch-1", "free-batch"])
def test_time_major_output_is_verified_per_sample(tmp_path, batch):
    config = time_major_project(tmp_path / "p", batch)
    code, report, _, stderr = verify(config, "host", tmp_path / "out")
    assert code == 0, stderr
    acc = report["accuracy"]
    assert acc["samples"] == 24 and acc["labelled"]  # 24 samples, not 24 * T rows
    assert report["runtime"]["departure"]["identical"] is True


def test_sample_axis_rules():
    agent = agent_module()
    assert agent.declared_batch_axis(["batch", 10], "batch") == 0
    assert agent.declared_batch_axis([6, "n", 5], "n") == 1
    assert agent.declared_batch_axis([6, 1, 5], 1) == 1  # fixed batch: the first axis of that size
    assert agent.declared_batch_axis([1, 10], 1) == 0
    assert agent.declared_batch_axis([10], 1) is None  # no sample axis: one value set per sample, stacked
    assert agent.declared_batch_axis(["unk", 10], "batch") == agent.UNKNOWN
    assert agent.declared_batch_axis([], 1) == agent.UNKNOWN  # no declared shape: a run tells
    assert agent.probed_batch_axis((6, 1, 5), (6, 2, 5)) == 1
    assert agent.probed_batch_axis((), ()) is None  # a scalar per run: per sample only in batches of 1
    with pytest.raises(ValueError, match="cannot tell which axis"):
        agent.probed_batch_axis((6, 1, 5), (6, 2, 10))
    joined = agent.join_samples(np, [np.zeros((6, 2, 5)), np.ones((6, 1, 5))], 1)
    assert joined.shape == (3, 6, 5) and joined[2].min() == 1.0
    assert agent.join_samples(np, [np.zeros(10), np.ones(10)], None).shape == (2, 10)


def test_static_classes_use_the_sample_axis(tmp_path):
    from xqhil.reference import static_classes

    build_time_major(tmp_path / "tm.onnx", 1)
    assert static_classes(str(tmp_path / "tm.onnx")) == T * K
    build_time_major(tmp_path / "free.onnx", "batch")
    assert static_classes(str(tmp_path / "free.onnx")) == T * K
