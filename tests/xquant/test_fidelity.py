"""Issue 13, fidelity on real models: structures where xquant trailed onnxruntime on the zoo
(bench/zoo), reproduced by tiny models and checked by held-out output SNR against FP32."""
from __future__ import annotations

import json

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from realworld_models import finish_model, npy_config
from xquant.cli import main
from xquant_testlib import run_model


def quantize_tiny(model: onnx.ModelProto, tmp_path, capsys, feeds: dict, **quant) -> onnx.ModelProto:
    """``model`` quantized by the xquant command line on ``feeds`` (lists of samples), its .q.onnx loaded."""
    path = tmp_path / "cfg.json"
    path.write_text(json.dumps(npy_config(model, tmp_path, feeds, **quant)))
    assert main(["-c", str(path), "-q"]) == 0, capsys.readouterr().err
    return onnx.load(next(tmp_path.glob("*.q.onnx")))


def snr_db(ref: np.ndarray, test: np.ndarray) -> float:
    return float(10 * np.log10(np.sum(ref.astype(np.float64) ** 2) / np.sum((ref - test).astype(np.float64) ** 2)))


def build_clamped_leaky_net(blocks: int = 6, channels: int = 8, seed: int = 0) -> onnx.ModelProto:
    """Conv -> LeakyRelu(0.2) -> Max(x, -0.4) repeated, as TensorFlow exports openWakeWord's speech
    embedding model (a clamp written as tf.math.maximum with a constant, 19 times)."""
    rng = np.random.default_rng(seed)
    inits = [numpy_helper.from_array(np.array([[[[-0.4]]]], np.float32), "floor")]
    nodes, x, cin = [], "x", 1
    for i in range(blocks):
        inits += [numpy_helper.from_array(rng.normal(0, 1.2 / np.sqrt(cin * 3), (channels, cin, 1, 3))
                                          .astype(np.float32), f"w{i}"),
                  numpy_helper.from_array(rng.normal(0, 0.3, channels).astype(np.float32), f"b{i}")]
        nodes += [helper.make_node("Conv", [x, f"w{i}", f"b{i}"], [f"c{i}"], pads=[0, 1, 0, 1], name=f"conv{i}"),
                  helper.make_node("LeakyRelu", [f"c{i}"], [f"l{i}"], alpha=0.2, name=f"leaky{i}"),
                  helper.make_node("Max", [f"l{i}", "floor"], [f"m{i}"], name=f"max{i}")]
        x, cin = f"m{i}", channels
    nodes.append(helper.make_node("GlobalAveragePool", [x], ["y"], name="gap"))
    graph = helper.make_graph(nodes, "clamped_leaky",
                              [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 1, 8, 32])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", channels, 1, 1])], inits)
    return finish_model(graph)


def test_max_with_a_constant_shares_its_input_scale(tmp_path, capsys):
    # Max/Min give one of their inputs' values: a float Max between INT8 ops requantized every block on a
    # second grid (zoo oww_embedding: 19.0 dB, onnxruntime 20.2 dB; with one shared scale 23.6 dB)
    model = build_clamped_leaky_net()
    rng = np.random.default_rng(1)
    q = quantize_tiny(model, tmp_path, capsys, {"x": list(rng.normal(0, 1, (32, 1, 8, 32)).astype(np.float32))})
    scales = {n.input[0]: n.input[1] for n in q.graph.node if n.op_type == "QuantizeLinear"}
    inits = {i.name: numpy_helper.to_array(i) for i in q.graph.initializer}
    for i in range(6):
        assert f"m{i}" in scales and f"l{i}" in scales, f"block {i}: Max is not INT8"
        assert inits[scales[f"m{i}"]] == inits[scales[f"l{i}"]], f"block {i}: Max requantizes"
    x = np.random.default_rng(7).normal(0, 1, (32, 1, 8, 32)).astype(np.float32)  # held out
    assert snr_db(run_model(model, {"x": x})[0], run_model(q, {"x": x})[0]) > 30


def test_a_non_finite_constant_operand_stays_float(tmp_path, capsys):
    # jax2tf's softmax guard Max(-inf, ReduceMax(x)) (zoo magika): quantizing -inf crashed the writer
    rng = np.random.default_rng(2)
    inits = [numpy_helper.from_array(np.array(-np.inf, np.float32), "neg_inf"),
             numpy_helper.from_array(rng.normal(0, 0.5, (4, 1, 3, 3)).astype(np.float32), "w")]
    nodes = [helper.make_node("Conv", ["x", "w"], ["c"], pads=[1, 1, 1, 1], name="conv"),
             helper.make_node("ReduceMax", ["c"], ["m"], axes=[2, 3], keepdims=1, name="rmax"),
             helper.make_node("Max", ["neg_inf", "m"], ["g"], name="guard"),
             helper.make_node("Sub", ["c", "g"], ["y"], name="sub")]
    graph = helper.make_graph(nodes, "inf_guard",
                              [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 1, 6, 6])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 4, 6, 6])], inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    q = quantize_tiny(model, tmp_path, capsys, {"x": list(rng.normal(0, 1, (16, 1, 6, 6)).astype(np.float32))})
    assert "neg_inf" not in {n.input[0] for n in q.graph.node if n.op_type == "QuantizeLinear"}
    x = np.random.default_rng(8).normal(0, 1, (8, 1, 6, 6)).astype(np.float32)
    assert snr_db(run_model(model, {"x": x})[0], run_model(q, {"x": x})[0]) > 25


def build_masked_mean(channels: int = 16, seed: int = 0) -> onnx.ModelProto:
    """Gemm(sum_t(x * mask) / max(sum_t(mask), 1)): a sequence encoder's masked mean over its valid time
    steps (zoo arabic_encoder), the count of steps as the divisor."""
    rng = np.random.default_rng(seed)
    inits = [numpy_helper.from_array(np.array([1], np.int64), "axis_t"),
             numpy_helper.from_array(np.array(1.0, np.float32), "one"),
             numpy_helper.from_array(rng.normal(0, 0.5, (channels, channels)).astype(np.float32), "w")]
    nodes = [helper.make_node("Mul", ["x", "mask"], ["xm"], name="mask_mul"),
             helper.make_node("ReduceSum", ["xm", "axis_t"], ["total"], keepdims=0, name="sum_x"),
             helper.make_node("ReduceSum", ["mask", "axis_t"], ["count"], keepdims=0, name="sum_mask"),
             helper.make_node("Clip", ["count", "one"], ["count1"], name="at_least_one"),
             helper.make_node("Div", ["total", "count1"], ["mean"], name="mean"),
             helper.make_node("Gemm", ["mean", "w"], ["y"], name="bridge")]
    graph = helper.make_graph(nodes, "masked_mean",
                              [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 12, channels]),
                               helper.make_tensor_value_info("mask", TensorProto.FLOAT, ["N", 12, 1])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", channels])], inits)
    return finish_model(graph)


def masked_batch(count: int, longest: int, seed: int, bias: float = 0.0) -> dict:
    """``bias``: each channel's mean over time (a recurrent encoder's features), so sums grow with length."""
    rng = np.random.default_rng(seed)
    lengths = rng.integers(1, longest + 1, count)
    mask = (np.arange(12)[None, :] < lengths[:, None]).astype(np.float32)[..., None]
    x = rng.normal(0, 1, (count, 12, 16)) * 0.3 + bias * np.linspace(-1, 1, 16)
    return {"x": (x if bias else rng.normal(0, 1, (count, 12, 16))).astype(np.float32), "mask": mask}


def test_a_divisor_stays_float(tmp_path, capsys):
    # calibrated on sequences of at most 4 steps, run on up to 12: an INT8 count saturates at 4
    model = build_masked_mean()
    calib = masked_batch(32, 4, seed=1)
    q = quantize_tiny(model, tmp_path, capsys, {k: list(v) for k, v in calib.items()})
    assert not {"count", "count1"} & {n.input[0] for n in q.graph.node if n.op_type == "QuantizeLinear"}
    held = masked_batch(32, 12, seed=9)
    assert snr_db(run_model(model, held)[0], run_model(q, held)[0]) > 15  # 4.1 dB with an INT8 count, 19.4


def test_a_division_by_a_computed_divisor_stays_float(tmp_path, capsys):
    """The numerator of a Div whose divisor is computed (a masked mean's sum over time) gets no Q/DQ: the
    Div is a float op, and an INT8 sum calibrated on short sequences saturates on longer ones (zoo
    arabic_encoder 33.2 -> 39.0 dB). Its quotient, read by the INT8 Gemm, is still INT8."""
    model = build_masked_mean()
    calib = masked_batch(32, 4, seed=1, bias=0.6)
    q = quantize_tiny(model, tmp_path, capsys, {k: list(v) for k, v in calib.items()})
    quantized = {n.input[0] for n in q.graph.node if n.op_type == "QuantizeLinear"}
    assert "total" not in quantized and "mean" in quantized
    held = masked_batch(32, 12, seed=9, bias=0.6)
    assert snr_db(run_model(model, held)[0], run_model(q, held)[0]) > 25  # 11.3 dB with an INT8 sum, 32.5


def build_log_power(seed: int = 0) -> onnx.ModelProto:
    """10*log10(max(P @ W, 1e-10)): a mel filterbank over a power spectrum, then decibels (zoo
    oww_melspectrogram: STFT power -> MatMul(melW) -> Clip -> Log -> Mul)."""
    rng = np.random.default_rng(seed)
    inits = [numpy_helper.from_array(rng.uniform(0, 1, (16, 8)).astype(np.float32) ** 4, "mel_w"),
             numpy_helper.from_array(np.array(1e-10, np.float32), "floor"),
             numpy_helper.from_array(np.array(10 / np.log(10), np.float32), "to_db")]
    nodes = [helper.make_node("MatMul", ["power", "mel_w"], ["mel"], name="mel"),
             helper.make_node("Clip", ["mel", "floor"], ["mel_floor"], name="floor"),
             helper.make_node("Log", ["mel_floor"], ["ln"], name="log"),
             helper.make_node("Mul", ["ln", "to_db"], ["db"], name="decibels")]
    graph = helper.make_graph(nodes, "log_power",
                              [helper.make_tensor_value_info("power", TensorProto.FLOAT, ["N", 12, 16])],
                              [helper.make_tensor_value_info("db", TensorProto.FLOAT, ["N", 12, 8])], inits)
    return finish_model(graph)


def power_frames(count: int, seed: int) -> np.ndarray:
    """Power spectra [count, 12, 16] spanning ~70 dB: a few loud bins, most far below one INT8 step."""
    rng = np.random.default_rng(seed)
    return (10 ** rng.uniform(-5, 2, (count, 12, 16))).astype(np.float32)


def test_what_a_log_reads_stays_float(tmp_path, capsys):
    """A Log's absolute error is its input's relative error: on one linear INT8 grid most of a power
    spectrum rounds to 0 and its log to the floor (zoo oww_melspectrogram). The Log, and the ops whose
    output only it reads (through clamps), stay float; the decibels are INT8 again where INT8 ops read
    them."""
    model = build_log_power()
    q = quantize_tiny(model, tmp_path, capsys, {"power": list(power_frames(32, seed=1))})
    quantized = {n.input[0] for n in q.graph.node if n.op_type == "QuantizeLinear"}
    assert not {"mel", "mel_floor"} & quantized and "ln" in quantized
    held = {"power": power_frames(32, seed=9)}
    assert snr_db(run_model(model, held)[0], run_model(q, held)[0]) > 25  # 12.8 dB with mel INT8, 47.2


def build_tanh_head(seed: int = 0) -> onnx.ModelProto:
    """tanh(Gemm(x)) as the model output (zoo arabic_encoder's hidden_out bridge)."""
    rng = np.random.default_rng(seed)
    inits = [numpy_helper.from_array(rng.normal(0, 0.4, (16, 16)).astype(np.float32), "w"),
             numpy_helper.from_array(rng.normal(0, 0.2, 16).astype(np.float32), "b")]
    nodes = [helper.make_node("Gemm", ["x", "w", "b"], ["pre"], name="bridge"),
             helper.make_node("Tanh", ["pre"], ["y"], name="squash")]
    graph = helper.make_graph(nodes, "tanh_head",
                              [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 16])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 16])], inits)
    return finish_model(graph)


def test_tanh_stays_float(tmp_path, capsys):
    """Tanh is a float op, as the vendor's XQuant leaves it: an INT8 Tanh output only adds its rounding
    (zoo arabic_encoder -0.24 dB). The Gemm before it is INT8 and hands its output to the Tanh in float
    (QGemm's float output): requantizing it only added a rounding (zoo arabic_encoder 38.92 -> 42.68 dB)."""
    model = build_tanh_head()
    rng = np.random.default_rng(1)
    q = quantize_tiny(model, tmp_path, capsys, {"x": list(rng.normal(0, 1, (32, 16)).astype(np.float32))})
    quantized = {n.input[0] for n in q.graph.node if n.op_type == "QuantizeLinear"}
    assert "x" in quantized and not {"pre", "y", "y_prequant"} & quantized
    assert "w" in {n.output[0] for n in q.graph.node if n.op_type == "DequantizeLinear"}, "the Gemm is not INT8"
    x = np.random.default_rng(9).normal(0, 1, (32, 16)).astype(np.float32)
    assert snr_db(run_model(model, {"x": x})[0], run_model(q, {"x": x})[0]) > 36.3  # 35.5 with pre requantized


def build_folded_gemm(steps: int = 32, seed: int = 0) -> onnx.ModelProto:
    """x [N, steps, 16] -> Reshape [N*steps, 16] -> Gemm(w, b) -> Reshape back: a transformer projection
    exported with time folded into axis 0 (zoo khmer_segmenter's attention out_proj)."""
    rng = np.random.default_rng(seed)
    w = rng.normal(0, 0.5, (16, 16)).astype(np.float32)
    w[0, 0] = 8.0  # one large weight: a coarse per-tensor INT8 step, so a systematic output error
    inits = [numpy_helper.from_array(w, "w"),
             numpy_helper.from_array(rng.normal(0, 0.05, 16).astype(np.float32), "b"),
             numpy_helper.from_array(np.array([-1, 16], np.int64), "flat"),
             numpy_helper.from_array(np.array([-1, steps, 16], np.int64), "unflat")]
    nodes = [helper.make_node("Reshape", ["x", "flat"], ["rows"], name="fold"),
             helper.make_node("Gemm", ["rows", "w", "b"], ["proj"], name="out_proj"),
             helper.make_node("Reshape", ["proj", "unflat"], ["y"], name="unfold")]
    graph = helper.make_graph(nodes, "folded_gemm",
                              [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", steps, 16])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", steps, 16])], inits)
    return finish_model(graph)


def test_bias_correction_uses_every_samples_rows_when_time_is_folded_into_axis_0(tmp_path):
    """Bias correction's shift is a mean over every fit sample; a layer whose axis 0 holds samples x steps
    must not be cut to the first rows (only the first 2 of 12 samples counted: zoo khmer_segmenter lost
    its correction, 35.93 -> 35.34 dB). So the corrected bias cannot depend on the order of the samples."""
    from xquant.calibration.ranges import activation_params
    from xquant.config import load_config
    from xquant.data.source import CalibrationData
    from xquant.finetune.bias import correct_biases
    from xquant.finetune.layers import initializers
    from xquant.finetune.samples import Samples
    from xquant.plan.policy import plan_model
    from xquant.quantize import calibration_stats

    model = onnx.shape_inference.infer_shapes(build_folded_gemm())  # typed tensors, as prepare leaves them
    rng = np.random.default_rng(3)
    x = (rng.normal(0, 1, (12, 32, 16)) + 3.0).astype(np.float32)
    cfg_dict = npy_config(model, tmp_path, {"x": list(x)})
    cfg, _ = load_config(cfg_dict, None, None, None)
    plan = plan_model(model, cfg)
    params = activation_params(plan, calibration_stats(model, cfg, plan, CalibrationData(cfg), False))
    biases = []
    for order in (np.arange(12), np.arange(12)[::-1]):
        samples = Samples(fit={"x": x[order]}, held={"x": x[:2]}, fixed_batch=0)
        corrected, _ = correct_biases(model, model, plan, params, samples, "cpu")
        biases.append(initializers(corrected)["b"])
    assert not np.array_equal(biases[0], initializers(model)["b"])  # there is a shift to correct
    np.testing.assert_allclose(biases[0], biases[1], atol=1e-6)


def test_bias_correction_on_a_folded_axis_0_runs_through_the_whole_pipeline(tmp_path, capsys):
    """Calibration records each layer's FP32 per-sample channel means for bias correction; a layer whose
    axis 0 holds samples x steps has no per-sample rows there, so it must take its reference from an FP32
    pass of its own (taking calibration's rows crashed zoo khmer_segmenter: "operands could not be
    broadcast"), and be corrected exactly as the stand-alone rule corrects it."""
    from xquant.finetune.layers import initializers

    model = onnx.shape_inference.infer_shapes(build_folded_gemm())
    rng = np.random.default_rng(3)
    x = (rng.normal(0, 1, (12, 32, 16)) + 3.0).astype(np.float32)
    q = quantize_tiny(model, tmp_path, capsys, {"x": list(x)}, finetune_level=1)
    assert not np.array_equal(initializers(q)["b"], initializers(model)["b"])  # the shift was corrected


def build_decomposed_layernorm(seed: int = 0) -> onnx.ModelProto:
    """A LayerNorm as Paddle2ONNX writes it, after a Gemm-like MatMul whose output has two outlier
    channels: mean = ReduceMean(x); d = x - mean; var = ReduceMean(Pow(d, 2)); y = d / Sqrt(var + eps),
    then an affine MatMul (zoo ppocr_v6_rec's SVTR neck)."""
    rng = np.random.default_rng(seed)
    w = rng.normal(0, 0.3, (16, 32)).astype(np.float32)
    w[:, :2] *= 25.0  # two outlier channels, as in the real neck
    inits = [numpy_helper.from_array(w, "w"),
             numpy_helper.from_array(np.array(2.0, np.float32), "two"),
             numpy_helper.from_array(np.array(1e-5, np.float32), "eps"),
             numpy_helper.from_array(rng.normal(0, 0.3, (32, 8)).astype(np.float32), "w2")]
    nodes = [helper.make_node("MatMul", ["x", "w"], ["h"], name="proj"),
             helper.make_node("ReduceMean", ["h"], ["mean"], name="mean", axes=[-1]),
             helper.make_node("Sub", ["h", "mean"], ["d"], name="centre"),
             helper.make_node("Pow", ["d", "two"], ["sq"], name="square"),
             helper.make_node("ReduceMean", ["sq"], ["var"], name="variance", axes=[-1]),
             helper.make_node("Add", ["var", "eps"], ["var_eps"], name="eps"),
             helper.make_node("Sqrt", ["var_eps"], ["std"], name="std"),
             helper.make_node("Div", ["d", "std"], ["normed"], name="normalise"),
             helper.make_node("MatMul", ["normed", "w2"], ["y"], name="affine")]
    graph = helper.make_graph(nodes, "decomposed_layernorm",
                              [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 10, 16])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 10, 8])], inits)
    return finish_model(graph)


def test_a_layernorms_variance_branch_stays_float(tmp_path, capsys):
    """A decomposed LayerNorm's squared deviations feed only its divisor (ReduceMean -> Add eps -> Sqrt ->
    Div): beside a few outlier channels most of them round to 0 on one INT8 grid, and the variance, so
    every normalised value, comes out wrong (zoo ppocr_v6_rec 7.00 -> 15.42 dB with the branch float,
    onnxruntime 13.65). Pow, the variance ReduceMean and the epsilon Add stay float; the centred values
    the Div reads as its numerator are still INT8 where an INT8 op reads them."""
    model = build_decomposed_layernorm()
    x = np.random.default_rng(1).normal(0, 1, (32, 10, 16)).astype(np.float32)
    q = quantize_tiny(model, tmp_path, capsys, {"x": list(x)})
    quantized = {n.input[0] for n in q.graph.node if n.op_type == "QuantizeLinear"}
    assert not {"sq", "var", "var_eps"} & quantized and "h" in quantized
    held = {"x": np.random.default_rng(9).normal(0, 1, (32, 10, 16)).astype(np.float32)}
    assert snr_db(run_model(model, held)[0], run_model(q, held)[0]) > 20  # 16.5 dB with the branch INT8, 23.2


def build_moments_layernorm(seed: int = 0) -> onnx.ModelProto:
    """A LayerNorm as jax2tf writes it (zoo magika): mean = ReduceSum(h) * 1/n, var = Max(0, ReduceSum(h*h)
    * 1/n - mean*mean), reshaped, y = (h - mean) * Reciprocal(Sqrt(var + eps)), then a MatMul."""
    rng = np.random.default_rng(seed)
    inits = [numpy_helper.from_array(np.array([-1], np.int64), "axes"),
             numpy_helper.from_array(np.array(1 / 32, np.float32), "inv_n"),
             numpy_helper.from_array(np.array(0.0, np.float32), "zero"),
             numpy_helper.from_array(np.array([-1, 10, 1], np.int64), "shape"),
             numpy_helper.from_array(np.array(1e-6, np.float32), "eps"),
             numpy_helper.from_array(rng.normal(0, 0.3, (32, 8)).astype(np.float32), "w2")]
    nodes = [helper.make_node("ReduceSum", ["h", "axes"], ["sum"], name="sum", keepdims=1),
             helper.make_node("Mul", ["sum", "inv_n"], ["mean"], name="mean"),
             helper.make_node("Mul", ["h", "h"], ["sq"], name="square"),
             helper.make_node("ReduceSum", ["sq", "axes"], ["sum_sq"], name="sum_sq", keepdims=1),
             helper.make_node("Mul", ["sum_sq", "inv_n"], ["m2"], name="m2"),
             helper.make_node("Mul", ["mean", "mean"], ["mean_sq"], name="mean_sq"),
             helper.make_node("Sub", ["m2", "mean_sq"], ["var"], name="variance"),
             helper.make_node("Max", ["zero", "var"], ["var_pos"], name="clamp"),
             helper.make_node("Reshape", ["var_pos", "shape"], ["var_r"], name="reshape"),
             helper.make_node("Add", ["var_r", "eps"], ["var_eps"], name="eps"),
             helper.make_node("Sqrt", ["var_eps"], ["std"], name="std"),
             helper.make_node("Reciprocal", ["std"], ["inv_std"], name="rsqrt"),
             helper.make_node("Sub", ["h", "mean"], ["d"], name="centre"),
             helper.make_node("Mul", ["d", "inv_std"], ["normed"], name="normalise"),
             helper.make_node("MatMul", ["normed", "w2"], ["y"], name="affine")]
    graph = helper.make_graph(nodes, "moments_layernorm",
                              [helper.make_tensor_value_info("h", TensorProto.FLOAT, ["N", 10, 32])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 10, 8])], inits)
    return finish_model(graph)


def features_off_zero(count: int, seed: int) -> np.ndarray:
    """Rows centred near 1 (+-0.2) with a spread of 0.15: E[h^2] and E[h]^2 nearly cancel."""
    rng = np.random.default_rng(seed)
    return (1.0 + rng.normal(0, 0.2, (count, 10, 1)) + rng.normal(0, 0.15, (count, 10, 32))).astype(np.float32)


def test_a_variance_written_as_moments_stays_float(tmp_path, capsys):
    """jax2tf's LayerNorm takes the variance as E[h^2] - E[h]^2: two nearly equal terms whose INT8 errors
    land on their small difference, through a Max clamp and a Reshape before the Sqrt and Reciprocal.
    The squares, their sums and the Sub stay float, and so does the mean (squared on that path and also
    subtracted): zoo magika -1.98 -> 35.25 dB, top-1 agreement 8% -> 100% (onnxruntime -2.20 dB, 5.5%);
    here 15.4 -> 31.4 dB."""
    model = build_moments_layernorm()
    q = quantize_tiny(model, tmp_path, capsys, {"h": list(features_off_zero(32, 1))})
    quantized = {n.input[0] for n in q.graph.node if n.op_type == "QuantizeLinear"}
    assert not {"sq", "sum_sq", "m2", "mean_sq", "var"} & quantized and {"h", "d"} <= quantized
    assert list(next(n for n in q.graph.node if n.name == "mean_sq").input) == ["mean", "mean"], "E[h]^2 of INT8"
    held = {"h": features_off_zero(32, 9)}
    assert snr_db(run_model(model, held)[0], run_model(q, held)[0]) > 25


def build_ctc_head(seed: int = 0) -> onnx.ModelProto:
    """features [N, 32] -> Gemm(transB) -> [N, 1024] class scores, whose first row (a CTC blank class) is
    ~30x larger than the others (zoo ddddocr_rec: 8210 classes, 5.09 against a median row maximum of 0.18)."""
    rng = np.random.default_rng(seed)
    w = rng.normal(0, 0.05, (1024, 32)).astype(np.float32)
    w[0] *= 30.0
    inits = [numpy_helper.from_array(w, "w"), numpy_helper.from_array(np.zeros(1024, np.float32), "b")]
    nodes = [helper.make_node("Gemm", ["x", "w", "b"], ["scores"], name="head", transB=1)]
    graph = helper.make_graph(nodes, "ctc_head", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 32])],
                              [helper.make_tensor_value_info("scores", TensorProto.FLOAT, ["N", 1024])], inits)
    return finish_model(graph)


def test_a_per_tensor_weight_that_loses_its_small_rows_keeps_its_op_float(tmp_path, capsys):
    """Gemm and MatMul weights get one per-tensor scale (the vendor's scheme); where one row is tens of
    times the others, that grid leaves the rest a few levels (below 20 dB) and the op stays float, while
    an ordinary weight is quantized (zoo ddddocr_rec 18.56 -> 21.31 dB, onnxruntime per-channel 20.85)."""
    from xquant.export.weights import weight_snr_db
    from xquant.plan.planner import WEIGHT_FLOOR_DB

    model = build_ctc_head()
    w = numpy_helper.to_array(model.graph.initializer[0])
    assert weight_snr_db(w) < WEIGHT_FLOOR_DB < weight_snr_db(w[1:])
    x = np.random.default_rng(1).normal(0, 1, (32, 32)).astype(np.float32)
    q = quantize_tiny(model, tmp_path, capsys, {"x": list(x)})
    assert "w" in {i.name for i in q.graph.initializer} and not any(n.op_type == "DequantizeLinear" and n.input[0]
                                                                    .startswith("w") for n in q.graph.node)
    held = {"x": np.random.default_rng(9).normal(0, 1, (32, 32)).astype(np.float32)}
    assert snr_db(run_model(model, held)[0], run_model(q, held)[0]) > 40


def build_detector_head(seed: int = 0) -> onnx.ModelProto:
    """features [N, 16] -> Gemm -> Relu -> Gemm -> [N, 1] logit -> Sigmoid: a wake-word detector's MLP
    (zoo oww_alexa_op7, oww_hey_jarvis). Half the hidden units vote for the wake word, half against."""
    rng = np.random.default_rng(seed)
    w1 = (np.eye(16) + rng.normal(0, 0.05, (16, 16))).astype(np.float32)
    w2 = np.array([[1.0]] * 8 + [[-1.0]] * 8, np.float32)
    inits = [numpy_helper.from_array(w1, "w1"), numpy_helper.from_array(np.zeros(16, np.float32), "b1"),
             numpy_helper.from_array(w2, "w2"), numpy_helper.from_array(np.array([-8.0], np.float32), "b2")]
    nodes = [helper.make_node("Gemm", ["x", "w1", "b1"], ["h"], name="dense1"),
             helper.make_node("Relu", ["h"], ["r"], name="relu"),
             helper.make_node("Gemm", ["r", "w2", "b2"], ["logit"], name="dense2"),
             helper.make_node("Sigmoid", ["logit"], ["p"], name="prob")]
    graph = helper.make_graph(nodes, "detector", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 16])],
                              [helper.make_tensor_value_info("p", TensorProto.FLOAT, ["N", 1])], inits)
    return finish_model(graph)


def detector_features(count: int, seed: int, hits: bool) -> np.ndarray:
    """Negatives: every feature N(0, 1). Hits: each feature within the negatives' range, but all the
    voters up (2) and all the others down (-1), so the logit goes far past any negative's."""
    x = np.random.default_rng(seed).normal(0, 1, (count, 16)).astype(np.float32)
    if hits:
        x = np.clip(x * 0.2 + np.array([2.0] * 8 + [-1.0] * 8, np.float32), -2.5, 2.5)
    return x


def test_a_detectors_decision_head_stays_float(tmp_path, capsys):
    """Calibrated on negatives only (what users have: background audio), an INT8 logit clips at the
    largest logit calibration saw, so a hit can never reach 0.5 (zoo oww_hey_mycroft: every probability
    capped at 0.355, by onnxruntime too). The Sigmoid and the dense layer making its logit stay float."""
    model = build_detector_head()
    q = quantize_tiny(model, tmp_path, capsys, {"x": list(detector_features(32, 1, hits=False))})
    quantized = {n.input[0] for n in q.graph.node if n.op_type in ("QuantizeLinear", "DequantizeLinear")}
    assert "r" in quantized and not {"logit", "p"} & quantized, "the logit or the probability is INT8"
    assert next(n for n in q.graph.node if n.name == "dense2").input[1] == "w2", "the head's weight is INT8"
    hits = {"x": detector_features(32, 9, hits=True)}
    ref, got = run_model(model, hits)[0], run_model(q, hits)[0]
    assert (ref > 0.9).all() and (got > 0.5).all()
    assert snr_db(ref, got) > 30


def test_the_summary_comparison_summed_batch_by_batch_equals_the_whole_output_metrics():
    """``compare_models`` keeps no outputs (sums per batch) and must read what the metrics give on the
    concatenated outputs: a [N, classes] output (top-1 agreement) and a time-major [T, N, C] one, of a model
    against a copy whose weights moved, over 4 batches."""
    from xquant.analysis import metrics
    from xquant.analysis.fidelity import compare_models

    rng = np.random.default_rng(5)
    w = rng.standard_normal((6, 5)).astype(np.float32)
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 6])
    outs = [helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["N", 5]),
            helper.make_tensor_value_info("seq", TensorProto.FLOAT, [3, "N", 5])]

    def model(weights: np.ndarray) -> onnx.ModelProto:
        nodes = [helper.make_node("MatMul", ["x", "w"], ["logits"]),
                 helper.make_node("Unsqueeze", ["logits", "zero"], ["one"]),
                 helper.make_node("Concat", ["one", "one", "one"], ["seq"], axis=0)]
        graph = helper.make_graph(nodes, "g", [x], outs, [numpy_helper.from_array(weights, "w"),
                                                         numpy_helper.from_array(np.array([0], np.int64), "zero")])
        return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])

    fp32, moved = model(w), model(w + rng.normal(0, 0.05, w.shape).astype(np.float32))
    batches = [{"x": rng.standard_normal((8, 6)).astype(np.float32)} for _ in range(4)]
    rows = compare_models(fp32, moved, batches)
    ref, test = (np.concatenate([run_model(m, b)[0] for b in batches]) for m in (fp32, moved))
    logits = rows["logits"]
    assert abs(logits["snr_db"] - metrics.snr_db(ref, test)) < 1e-9 and 20.0 < logits["snr_db"] < 60.0
    assert abs(logits["cosine"] - metrics.cosine(ref, test)) < 1e-12
    assert logits["max_abs"] == metrics.max_abs(ref, test) and logits["samples"] == 32
    assert logits["top1_agreement"] == metrics.top1_agreement(ref, test)
    seq = rows["seq"]
    assert "top1_agreement" not in seq and abs(seq["snr_db"] - logits["snr_db"]) < 1e-9
