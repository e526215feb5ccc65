"""The written QDQ model: scheme the chip runtime expects, shared scales, opsets, numerics on real data."""
from __future__ import annotations

import os
from collections import Counter

import numpy as np
import onnx
import pytest
from onnx import numpy_helper

from xquant_testlib import build_cnn, build_two_input, run_model, write_npy_list
from xquant import quantize_onnx_model
from xquant.errors import DataError, GraphError, ModelError
from xquant.quantize import run_quantization


def inits(model):
    return {t.name: numpy_helper.to_array(t) for t in model.graph.initializer}


def dq_of(model, tensor):
    return next(n for n in model.graph.node if n.op_type == "DequantizeLinear" and tensor in n.output)


def consumer_inputs(model, op_name):
    return list(next(n for n in model.graph.node if n.name == op_name).input)


def test_scheme_int8_asym_activations_per_channel_conv_per_tensor_gemm(tiny_cnn):
    qm = quantize_onnx_model(tiny_cnn(model_parameters={"skip_onnxsim": True}))
    onnx.checker.check_model(qm)
    values = inits(qm)
    conv_w = dq_of(qm, "w1")
    assert values["w1_quantized"].dtype == np.int8 and values["w1_scale"].shape == (8,)
    assert {a.name: a.i for a in conv_w.attribute}.get("axis", 1) == 0
    assert not values["w1_zero_point"].any()
    assert values["wf_scale"].shape == () and values["wf_quantized"].dtype == np.int8
    act_zps = [v for k, v in values.items() if k.endswith("_zero_point") and k[:-11] in ("x", "p1", "cat", "logits")]
    assert all(z.dtype == np.int8 for z in act_zps) and len(act_zps) == 4
    assert values["x_zero_point"] != 0  # asymmetric: a normal input is not centred exactly
    assert "b1" in values and values["b1"].dtype == np.float32  # biases stay float by default


def test_relu_after_conv_is_fused_and_data_movement_shares_scales(tiny_cnn):
    qm = quantize_onnx_model(tiny_cnn(model_parameters={"skip_onnxsim": True}))
    values = inits(qm)
    assert "c1_scale" not in values and "c2_scale" not in values  # Conv -> Relu: no Q/DQ in between
    assert values["r1_scale"] == values["p1_scale"]  # MaxPool shares its input's scale
    assert values["r1_zero_point"] == -128  # ReLU output: range starts at exactly 0
    assert values["cat_scale"] == values["r2_scale"] == values["c3_scale"]  # Concat: one scale
    assert values["gap_scale"] != values["cat_scale"]  # GlobalAveragePool computes: own scale
    assert values["flat_scale"] == values["gap_scale"]  # Flatten only moves data


def test_int32_bias_option(tiny_cnn):
    qm = quantize_onnx_model(tiny_cnn(model_parameters={"skip_onnxsim": True},
                                      quantization_parameters={"bias_dtype": "int32"}))
    values = inits(qm)
    assert values["b1_quantized"].dtype == np.int32
    np.testing.assert_allclose(values["b1_scale"], values["x_scale"] * values["w1_scale"], rtol=1e-6)
    assert "b1" not in values


def test_qdq_model_runs_and_agrees_with_fp32(tiny_cnn):
    cfg = tiny_cnn()
    qm = quantize_onnx_model(cfg)
    x = np.random.default_rng(9).normal(size=(4, 3, 16, 16)).astype(np.float32)
    ref = run_model(onnx.load(cfg["model_parameters"]["onnx_model"]), {"x": x})[0]
    got = run_model(qm, {"x": x})[0]
    assert got.shape == ref.shape == (4, 10)  # symbolic batch kept
    noise = np.sum((ref - got) ** 2) / np.sum(ref ** 2)
    assert noise < 0.01  # > 20 dB on a random-weight net


def test_demo_model_on_real_images_matches_fp32(demo_config, demo_eval):
    """Real Fashion-MNIST: INT8 logits within 25 dB SNR of FP32 and top-1 accuracy within 1 point."""
    qm = quantize_onnx_model(demo_config)
    fp32 = onnx.load(demo_config["model_parameters"]["onnx_model"])
    ref = run_model(fp32, {"input": demo_eval["input"]})[0]
    got = run_model(qm, {"input": demo_eval["input"]})[0]
    snr_db = 10 * np.log10(np.sum(ref ** 2) / np.sum((ref - got) ** 2))
    assert snr_db > 25
    acc_fp32 = np.mean(ref.argmax(1) == demo_eval["labels"])
    acc_int8 = np.mean(got.argmax(1) == demo_eval["labels"])
    assert acc_fp32 > 0.8 and abs(acc_fp32 - acc_int8) <= 0.01


@pytest.mark.parametrize("method", ["minmax", "percentile", "kl", "mse", "default"])
def test_every_calibration_type_on_real_data(demo_config, demo_eval, method):
    demo_config["calibration_parameters"]["calibration_type"] = method
    demo_config["calibration_parameters"]["calibration_step"] = 100
    qm = quantize_onnx_model(demo_config)
    ref = run_model(onnx.load(demo_config["model_parameters"]["onnx_model"]), {"input": demo_eval["input"]})[0]
    got = run_model(qm, {"input": demo_eval["input"]})[0]
    assert np.mean(ref.argmax(1) == got.argmax(1)) > 0.95


def test_output_goes_to_working_dir_with_model_stem(tiny_cnn, tmp_path):
    cfg = tiny_cnn()
    quantize_onnx_model(cfg)
    assert os.path.exists(tmp_path / "tiny_op17.q.onnx")
    leftovers = [p for p in os.listdir(tmp_path) if p.endswith(".tmp")]
    assert leftovers == []


def test_api_takes_a_model_proto_and_an_output(tiny_cnn, tmp_path):
    out = tmp_path / "nested" / "net.q.onnx"
    qm = quantize_onnx_model(tiny_cnn(), build_cnn(seed=4), str(out))
    assert isinstance(qm, onnx.ModelProto) and out.exists()
    assert onnx.load(out).graph.node[0].op_type == qm.graph.node[0].op_type


@pytest.mark.parametrize("opset", [11, 13, 21])
def test_opsets_11_to_21(tiny_cnn, opset):
    cfg = tiny_cnn(opset=opset)
    qm = quantize_onnx_model(cfg)
    version = next(o.version for o in qm.opset_import if o.domain in ("", "ai.onnx"))
    assert version == max(opset, 13)
    x = np.random.default_rng(0).normal(size=(1, 3, 16, 16)).astype(np.float32)
    assert run_model(qm, {"x": x})[0].shape == (1, 10)


def test_two_inputs_two_outputs_and_activation_matmul(tmp_path):
    onnx.save(build_two_input(), tmp_path / "two.onnx")
    rng = np.random.default_rng(0)
    la = write_npy_list(tmp_path, "a", [rng.normal(size=(1, 1, 12, 12)) for _ in range(16)])
    lb = write_npy_list(tmp_path, "b", [rng.normal(size=(1, 1, 12, 12)) for _ in range(16)])
    cfg = {"model_parameters": {"onnx_model": str(tmp_path / "two.onnx")},
           "calibration_parameters": {"input_parametres": [
               {"file_type": "npy", "data_list_path": str(la)}, {"file_type": "npy", "data_list_path": str(lb)}]},
           "quantization_parameters": {"finetune_level": 0}}
    qm = quantize_onnx_model(cfg)
    assert [o.name for o in qm.graph.output] == ["logits", "feat"]
    assert [i.name for i in qm.graph.input] == ["a", "b"]
    values = inits(qm)
    assert values["wm_scale"].shape == ()  # MatMul weight: per-tensor
    assert "sum_scale" not in values and "feat_scale" in values  # Add -> Relu fused; its output quantized
    feeds = {"a": rng.normal(size=(1, 1, 12, 12)).astype(np.float32),
             "b": rng.normal(size=(1, 1, 12, 12)).astype(np.float32)}
    ref = run_model(build_two_input(), feeds)
    got = run_model(qm, feeds)
    for r, g in zip(ref, got):
        assert np.sum((r - g) ** 2) / np.sum(r ** 2) < 0.01


def test_already_quantized_model_is_refused(tiny_cnn, tmp_path):
    cfg = tiny_cnn()
    quantize_onnx_model(cfg)
    cfg["model_parameters"]["onnx_model"] = str(tmp_path / "tiny_op17.q.onnx")
    cfg["model_parameters"]["output_prefix"] = "again"
    with pytest.raises(GraphError, match=r"already quantized \(it contains DequantizeLinear x\d+"):
        quantize_onnx_model(cfg)
    assert not (tmp_path / "again.q.onnx").exists()


def test_failure_leaves_no_output(tiny_cnn, tmp_path):
    cfg = tiny_cnn()
    cfg["calibration_parameters"]["input_parametres"][0]["input_shape"] = [1, 3, 16, 16]
    bad_list = tmp_path / "bad.txt"
    bad_list.write_text("calib17/0000.npy\n")
    np.save(tmp_path / "calib17" / "0000.npy", np.zeros((1, 3, 8, 8), np.float32))
    cfg["calibration_parameters"]["input_parametres"][0]["data_list_path"] = str(bad_list)
    with pytest.raises(DataError, match=r"has shape \[1, 3, 8, 8\]"):
        quantize_onnx_model(cfg)
    assert sorted(p.name for p in tmp_path.iterdir() if "q.onnx" in p.name or p.suffix == ".tmp") == []


def test_model_onnxruntime_cannot_run_is_a_model_error(tiny_cnn, tmp_path):
    cfg = tiny_cnn()
    model = build_cnn()
    model.graph.node[0].attribute[0].ints[:] = [1, 1]  # pads of the wrong length for a 2-D Conv
    with pytest.raises(ModelError, match="onnxruntime"):
        quantize_onnx_model(cfg, model, str(tmp_path / "o.q.onnx"))
    assert not (tmp_path / "o.q.onnx").exists()


def test_streaming_keeps_memory_bounded(tiny_cnn):
    """Statistics are fixed-size: 600 samples leave the same state size as 30."""
    from xquant.calibration.stats import NUM_BINS

    res = run_quantization(tiny_cnn(samples=60, calibration_parameters={"calibration_step": 60}), summary=False)
    assert res.num_samples == 60 and NUM_BINS == 8192
    assert Counter(n.op_type for n in res.model.graph.node)["QuantizeLinear"] == len(
        {k for k in res.params})
