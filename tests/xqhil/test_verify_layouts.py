"""quantize-and-verify on models whose inputs are not all float [N, ...] (issue 13, harness half): a recurrent
state with the batch on axis 1, an int64 scalar (a sample rate), int32 token ids. The host reads each input's
batch axis with xquant.model_io.graph_inputs and sends it in the request (protocol 2); PC and board lay the
samples out on it, feed integer inputs as the model declares them and run scalar inputs one sample at a time."""
from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Dict, List

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper
from xqhil_testlib import verify

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "xquant"))
from realworld_models import build_conv_net, build_hard_coded_batch_net  # noqa: E402

LAYERS, WIDTH, CLASSES, LENGTH = 2, 16, 4, 12


def _init(name: str, array: np.ndarray) -> TensorProto:
    return onnx.numpy_helper.from_array(array, name)


def build_state_model(seed: int = 0) -> onnx.ModelProto:
    """x [N, 16] float, state [2, N, 16] float (batch on axis 1), sr int64 scalar -> logits [N, 4] scaled by
    sr / 16000, stateN [2, N, 16] = tanh(state + x)."""
    rng = np.random.default_rng(seed)
    inits = [_init("w", rng.normal(0, 0.5, (WIDTH, CLASSES)).astype(np.float32)),
             _init("axes0", np.array([0], np.int64)), _init("rate_ref", np.array(16000.0, np.float32))]
    nodes = [helper.make_node("ReduceSum", ["state", "axes0"], ["s"], keepdims=0),
             helper.make_node("Add", ["x", "s"], ["xs"]),
             helper.make_node("MatMul", ["xs", "w"], ["raw"]),
             helper.make_node("Cast", ["sr"], ["sr_f"], to=TensorProto.FLOAT),
             helper.make_node("Div", ["sr_f", "rate_ref"], ["gain"]),
             helper.make_node("Mul", ["raw", "gain"], ["logits"]),
             helper.make_node("Unsqueeze", ["x", "axes0"], ["x_u"]),
             helper.make_node("Add", ["state", "x_u"], ["st"]),
             helper.make_node("Tanh", ["st"], ["stateN"])]
    graph = helper.make_graph(
        nodes, "state_scalar",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", WIDTH]),
         helper.make_tensor_value_info("state", TensorProto.FLOAT, [LAYERS, "N", WIDTH]),
         helper.make_tensor_value_info("sr", TensorProto.INT64, [])],
        [helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["N", CLASSES]),
         helper.make_tensor_value_info("stateN", TensorProto.FLOAT, [LAYERS, "N", WIDTH])], inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)])
    model.ir_version = 9
    onnx.checker.check_model(model, full_check=True)
    return model


def build_token_model(seed: int = 0) -> onnx.ModelProto:
    """int32 ids [N, 12] -> Gather(embedding) -> MatMul -> Relu -> ReduceMean -> Gemm -> logits [N, 3]."""
    rng = np.random.default_rng(seed)
    inits = [_init("embed", rng.normal(0, 1.0, (256, 8)).astype(np.float32)),
             _init("w1", rng.normal(0, 0.4, (8, 8)).astype(np.float32)), _init("axes", np.array([1], np.int64)),
             _init("wf", rng.normal(0, 0.4, (3, 8)).astype(np.float32)), _init("bf", np.zeros(3, np.float32))]
    nodes = [helper.make_node("Gather", ["embed", "ids"], ["emb"], axis=0),
             helper.make_node("MatMul", ["emb", "w1"], ["h"]), helper.make_node("Relu", ["h"], ["hr"]),
             helper.make_node("ReduceMean", ["hr", "axes"], ["pooled"], keepdims=0),
             helper.make_node("Gemm", ["pooled", "wf", "bf"], ["logits"], transB=1)]
    graph = helper.make_graph(nodes, "token_ids", [helper.make_tensor_value_info("ids", TensorProto.INT32,
                                                                                 ["N", LENGTH])],
                              [helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["N", 3])], inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)])
    model.ir_version = 9
    onnx.checker.check_model(model, full_check=True)
    return model


def make_layout_project(folder: Path, model: onnx.ModelProto, samples: Dict[str, List[np.ndarray]],
                        n_calib: int, external: bool = False) -> Path:
    """The model, one .npy per sample and input (first n_calib for calibration, the rest verify) and a config."""
    folder.mkdir(parents=True, exist_ok=True)
    onnx.save(model, folder / "model.onnx", save_as_external_data=external, location="model.onnx.data",
              size_threshold=1024)
    params, verify_lists = [], []
    for name, arrays in samples.items():
        (folder / "data").mkdir(exist_ok=True)
        files = []
        for i, array in enumerate(arrays):
            np.save(folder / "data" / f"{name}_{i:03d}.npy", array)
            files.append(f"data/{name}_{i:03d}.npy")
        (folder / f"calib_{name}.txt").write_text("\n".join(files[:n_calib]) + "\n")
        (folder / f"eval_{name}.txt").write_text("\n".join(files[n_calib:]) + "\n")
        params.append({"input_name": name, "file_type": "npy", "data_list_path": f"calib_{name}.txt"})
        verify_lists.append(f"eval_{name}.txt")
    config = {"model_parameters": {"onnx_model": "model.onnx", "output_prefix": "model", "working_dir": "work"},
              "calibration_parameters": {"calibration_step": n_calib, "input_parametres": params},
              "quantization_parameters": {"precision_level": 0, "finetune_level": 0},
              "verify_parameters": {"data_list_path": verify_lists, "warmup": 1, "repeat": 2,
                                    "min_time_s": 0}}  # 2 timed runs, no minimum time
    path = folder / "cfg.json"
    path.write_text(json.dumps(config, indent=1))
    return path


def state_project(folder: Path, n_calib: int = 16, n_eval: int = 8) -> Path:
    rng = np.random.default_rng(3)
    count = n_calib + n_eval
    rates = [8000, 16000]  # the scalar differs per sample: each sample must be run with its own
    return make_layout_project(folder, build_state_model(), {
        "x": [rng.standard_normal(WIDTH).astype(np.float32) for _ in range(count)],
        "state": [rng.normal(0, 0.5, (LAYERS, WIDTH)).astype(np.float32) for _ in range(count)],
        "sr": [np.array(rates[i % 2], np.int64) for i in range(count)]}, n_calib)


def token_project(folder: Path, n_calib: int = 16, n_eval: int = 8) -> Path:
    rng = np.random.default_rng(4)
    return make_layout_project(folder, build_token_model(), {
        "ids": [rng.integers(0, 256, LENGTH).astype(np.int32) for _ in range(n_calib + n_eval)]}, n_calib)


def pc_reference(model: onnx.ModelProto, feeds: Dict[str, np.ndarray]) -> List[np.ndarray]:
    import onnxruntime as ort

    sess = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    return sess.run(None, feeds)


def test_state_on_axis_1_and_int64_scalar_verify_on_host(tmp_path):
    config = state_project(tmp_path / "p")
    code, report, _, stderr = verify(config, "host", tmp_path / "out")
    assert code == 0, stderr
    assert report["verdict"] == "pass" and report["data"]["batch_size"] == 1  # a scalar input: one per run
    assert report["data"]["samples"] == 8
    outputs = report["fidelity"]["outputs"]
    assert set(outputs) == {"logits", "stateN"}
    for name in outputs:
        assert outputs[name]["chip_fp32_vs_pc_fp32"]["max_abs"] == 0.0
        assert outputs[name]["pc_int8_vs_pc_fp32"]["cosine"] > 0.99


def test_state_samples_keep_their_own_scalar(tmp_path):
    # the PC run of the harness gives, per sample, what the model gives that sample alone
    from xqhil.reference import input_layout, run_on_pc

    config = state_project(tmp_path / "p", n_calib=2, n_eval=4)
    model_path = str(config.parent / "model.onnx")
    names = ["x", "state", "sr"]
    arrays = [np.stack([np.load(config.parent / "data" / f"{n}_{i:03d}.npy") for i in range(2, 6)]) for n in names]
    assert arrays[2].dtype == np.int64
    axes = input_layout(model_path, names)
    assert axes == [0, 1, None]
    outputs, out_names = run_on_pc(model_path, "FP32 model", names, arrays, 1, batch_axes=axes)
    assert out_names == ["logits", "stateN"]
    assert outputs[0].shape == (4, CLASSES) and outputs[1].shape == (4, LAYERS, WIDTH)
    model = onnx.load(model_path)
    for i in range(4):
        logits, state = pc_reference(model, {"x": arrays[0][i:i + 1], "state": arrays[1][i][:, None],
                                             "sr": np.asarray(arrays[2][i])})
        np.testing.assert_array_equal(outputs[0][i], logits[0])
        np.testing.assert_array_equal(outputs[1][i], state[:, 0])


def test_int32_token_ids_verify_on_host(tmp_path):
    config = token_project(tmp_path / "p")
    code, report, _, stderr = verify(config, "host", tmp_path / "out")
    assert code == 0, stderr
    assert report["verdict"] == "pass" and report["data"]["samples"] == 8
    pair = report["fidelity"]["outputs"]["logits"]
    assert pair["chip_int8_vs_pc_int8"]["max_abs"] == 0.0 and pair["pc_int8_vs_pc_fp32"]["cosine"] > 0.99


def test_state_and_scalar_model_on_qemu_riscv64(rootfs, tmp_path):
    config = state_project(tmp_path / "p", n_calib=8, n_eval=3)
    code, report, _, stderr = verify(config, f"qemu:{rootfs}", tmp_path / "out", "--remote-dir", str(tmp_path))
    assert code == 0, stderr
    assert report["board"]["kind"] == "qemu" and report["verdict"] == "pass"
    assert report["fidelity"]["outputs"]["stateN"]["chip_fp32_vs_pc_fp32"]["cosine"] > 0.99999


@pytest.mark.parametrize("axes, words", [([0], "one integer >= 0"), (["batch", 0], "one integer >= 0"),
                                         ([-1, 0], "one integer >= 0")])
def test_agent_refuses_malformed_batch_axes(axes, words):
    from xqhil.reference import agent_module

    agent = agent_module()
    request = {"inputs": {"file": "inputs.npz", "names": ["a", "b"], "batch_axes": axes}, "tasks": []}
    with pytest.raises(agent.AgentError) as info:
        agent.check_request(request)
    assert "inputs.batch_axes" in info.value.message and words in info.value.message


def test_agent_refuses_batches_over_a_scalar_input(tmp_path):
    from xqhil.reference import agent_module

    agent = agent_module()
    config = state_project(tmp_path / "p", n_calib=2, n_eval=2)
    np_mod, ort = agent.import_runtime()
    session = agent.load_model(ort, str(config.parent / "model.onnx"), ["CPUExecutionProvider"], 0)
    arrays = [np.zeros((2, WIDTH), np.float32), np.zeros((2, LAYERS, WIDTH), np.float32), np.full(2, 8000, np.int64)]
    with pytest.raises(ValueError, match=r"\['sr'\] have no batch axis"):
        agent.run_accuracy(np_mod, session, ["x", "state", "sr"], arrays, 2, [0, 1, None])


def image_project(folder: Path, model: onnx.ModelProto, n_calib: int = 8, n_eval: int = 8) -> Path:
    rng = np.random.default_rng(5)
    return make_layout_project(folder, model, {
        "x": [rng.standard_normal((1, 28, 28)).astype(np.float32) for _ in range(n_calib + n_eval)]}, n_calib)


def test_fixed_batch_model_is_timed_with_its_batch(tmp_path):
    # orientation_b8: performance tasks fed 1 sample to a batch-8 model ("index 0 Got 1 Expected 8")
    config = image_project(tmp_path / "p", build_conv_net(batch=4))
    code, report, _, stderr = verify(config, "host", tmp_path / "out")
    assert code == 0, stderr
    assert report["verdict"] == "pass" and report["data"]["batch_size"] == 4
    assert len(report["latency"]["int8"]["samples_ms"]) == 2 and report["latency"]["speedup"] > 0


def test_free_declared_batch_hard_coded_to_one_verifies_with_batch_1(tmp_path, capfd):
    # khmer_segmenter: declares a free batch, a Reshape fixes it at 1; the output probe fed 2 samples
    # and its output declares 1 where the batch goes (emissions [1, seq, 2]): only a probe could tell
    model = build_hard_coded_batch_net()
    dim = model.graph.output[0].type.tensor_type.shape.dim[0]
    dim.Clear()
    dim.dim_value = 1
    config = image_project(tmp_path / "p", model)
    code, report, _, stderr = verify(config, "host", tmp_path / "out")
    assert code == 0, stderr
    # the handled batch-2 attempt printed onnxruntime's own error log on a passing run
    assert "onnxruntime" not in capfd.readouterr().err
    assert report["verdict"] == "pass" and report["data"]["batch_size"] == 1 and report["data"]["samples"] == 8
    assert report["fidelity"]["outputs"]["logits"]["chip_fp32_vs_pc_fp32"]["max_abs"] == 0.0


def test_model_with_external_data_runs_on_the_board(tmp_path):
    # khmer_segmenter: model.onnx + model.onnx.data; the board got model.onnx alone
    config = make_layout_project(tmp_path / "p", build_token_model(), {
        "ids": [np.random.default_rng(i).integers(0, 256, LENGTH).astype(np.int32) for i in range(12)]}, 8,
        external=True)
    assert (config.parent / "model.onnx.data").stat().st_size > 8000
    code, report, _, stderr = verify(config, "host", tmp_path / "out")
    assert code == 0, stderr
    assert report["verdict"] == "pass"
    assert report["fidelity"]["outputs"]["logits"]["chip_fp32_vs_pc_fp32"]["max_abs"] == 0.0


def test_a_protocol_1_agent_is_refused_clearly():
    # a stale agent would feed every input with the batch on axis 0: the host refuses its answer
    from xqhil.errors import HilError
    from xqhil.protocol import PROTOCOL_VERSION, check_response

    assert PROTOCOL_VERSION == 2
    with pytest.raises(HilError, match="the agent speaks version 1, the host speaks 2"):
        check_response({"protocol": 1, "ok": False, "error": {"type": "ProtocolMismatch", "message": "x"}},
                       "board")


def test_int8_model_that_changes_an_output_shape_is_one_line_exit_2(tmp_path):
    # ddddocr_rec: the INT8 model's output came back flattened; compare crashed with an internal error
    config = token_project(tmp_path / "p", n_calib=4, n_eval=4)
    changed = build_token_model()
    changed.graph.node[-1].output[0] = "logits_2d"
    changed.graph.initializer.append(_init("axes1", np.array([1], np.int64)))
    changed.graph.node.append(helper.make_node("Unsqueeze", ["logits_2d", "axes1"], ["logits"]))
    changed.graph.output[0].type.tensor_type.shape.dim.insert(1, onnx.TensorShapeProto.Dimension(dim_value=1))
    onnx.save(changed, tmp_path / "changed.onnx")
    code, report, _, stderr = verify(config, "host", tmp_path / "out", "--qmodel", str(tmp_path / "changed.onnx"))
    assert code == 2 and report is None
    assert stderr.strip().count("\n") == 0 and "output 'logits' has shape [1, 3] per sample" in stderr
    assert "the FP32 model's [3]" in stderr
