"""Issue 13: models exported by other frameworks, each quirk reproduced as a class by a tiny model
(``realworld_models.py``) and run through the command line (``xquant.cli.main``, what ``python -m xquant``
runs) where the bug was user-visible."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import onnx
import pytest

from issue3_fixtures import demo_images, image_config
from realworld_models import (CLASSES, FRAMES, HIDDEN, build_audio_lstm, build_byte_classifier, build_old_opset_net,
                              build_conv_net, build_if_model, build_loop_model, mel_like, npy_config,
                              save_external)
from xquant.cli import main
from xquant_testlib import run_model


def cli(cfg: dict, folder: Path, *extra: str) -> int:
    path = folder / "cfg.json"
    path.write_text(json.dumps(cfg))
    return main(["-c", str(path), *extra])


def snr_db(ref: np.ndarray, test: np.ndarray) -> float:
    return float(10 * np.log10(np.sum(ref.astype(np.float64) ** 2) / np.sum((ref - test).astype(np.float64) ** 2)))


def quant_inputs(model: onnx.ModelProto) -> set:
    return {n.input[0] for n in model.graph.node if n.op_type == "QuantizeLinear"}


@pytest.mark.parametrize("batch", ["N", -1, 0, None, 1, 4], ids=["symbolic", "minus1", "zero", "nodim", "fixed1",
                                                                 "fixed4"])
def test_every_batch_dim_runs_every_stage(batch, tmp_path, capsys):
    # Paddle2ONNX writes a free batch as dim_value -1 (bias correction crashed: step -1) or 0; fixed-batch
    # exports crashed in the summary (a batch of 8 fed to a batch-1 model) after writing the .q.onnx
    cfg = image_config(build_conv_net(batch=batch), tmp_path, samples=10, finetune_level=1, analysis_enable=True)
    if batch == 4:
        cfg["calibration_parameters"]["input_parametres"][0]["input_shape"] = [4, 1, 28, 28]
    assert cli(cfg, tmp_path) == 0, capsys.readouterr().err
    out = capsys.readouterr().out
    assert "bias correction" in out or "no pass kept" in out
    q = onnx.load(tmp_path / "conv_net.q.onnx")
    assert (tmp_path / "conv_net_report.md").exists()
    n = 4 if batch == 4 else 1
    x = demo_images(n, start=100)
    ref, got = run_model(build_conv_net(batch=batch if batch not in (0,) else "N"), {"x": x})[0], \
        run_model(q, {"x": x})[0]
    assert snr_db(ref, got) > 25


def test_a_failure_after_quantizing_leaves_no_output(tmp_path, capsys):
    # the report cannot be written (a folder holds its name): the run fails and takes the .q.onnx with it
    cfg = image_config(build_conv_net(batch=1), tmp_path, samples=8, analysis_enable=True)
    (tmp_path / "conv_net_report.json").mkdir()
    assert cli(cfg, tmp_path) != 0
    assert not (tmp_path / "conv_net.q.onnx").exists()
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".xquant-")]


@pytest.mark.parametrize("prefix", ["conv_net", "conv_net.q", "conv_net.q.onnx"])
def test_output_prefix_never_doubles_q(prefix, tmp_path, capsys):
    # the vendor tool's own default prefix is '<model>.q' (it writes '<prefix>.onnx')
    cfg = image_config(build_conv_net(), tmp_path, samples=8)
    cfg["model_parameters"]["output_prefix"] = prefix
    assert cli(cfg, tmp_path, "-q") == 0
    assert (tmp_path / "conv_net.q.onnx").exists()
    assert not (tmp_path / "conv_net.q.q.onnx").exists()
    from xquant.config.loader import output_name

    assert output_name(prefix) == "conv_net.q.onnx"


def test_a_list_of_missing_files_says_the_faq_line_first(tmp_path, capsys):
    cfg = image_config(build_conv_net(), tmp_path, samples=8)
    lst = tmp_path / "gone.txt"
    lst.write_text("nowhere/a.png\nnowhere/b.png\n")
    cfg["calibration_parameters"]["input_parametres"][0]["data_list_path"] = str(lst)
    assert cli(cfg, tmp_path) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("xquant: error: Calibration input x finds 0 items. ")
    assert "file on line 1 of" in err and "2 of 2 listed file(s) are missing" in err
    assert len(err.splitlines()) == 1


def audio_inputs(count: int, seed: int = 0, h0_full_shape: bool = False) -> dict:
    rng = np.random.default_rng(seed)
    h0_shape = (1, 1, HIDDEN) if h0_full_shape else (1, HIDDEN)
    return {"mel": list(mel_like(count, seed)),
            "h0": [rng.normal(0, 0.5, h0_shape).astype(np.float32) for _ in range(count)],
            "sample_rate": [np.array(rng.choice([16000, 22050]), np.int64) for _ in range(count)],
            "mask": [rng.random(FRAMES) > 0.2 for _ in range(count)]}


@pytest.mark.parametrize("h0_full_shape", [False, True], ids=["h0_sample", "h0_with_batch_1"])
def test_audio_model_with_integer_scalar_and_state_inputs(h0_full_shape, tmp_path, capsys):
    # int64 sample-rate scalar, bool mask, recurrent state [layers, batch, hidden]: fed, never quantized
    model = build_audio_lstm()
    cfg = npy_config(model, tmp_path, audio_inputs(64, h0_full_shape=h0_full_shape), analysis_enable=True)
    assert cli(cfg, tmp_path) == 0, capsys.readouterr().err
    q = onnx.load(tmp_path / "audio_lstm.q.onnx")
    types = {v.name: v.type.tensor_type.elem_type for v in q.graph.input}
    assert types["sample_rate"] == onnx.TensorProto.INT64 and types["mask"] == onnx.TensorProto.BOOL
    assert not quant_inputs(q) & {"mel", "h0", "sample_rate", "mask"}
    held, refs, gots = audio_inputs(16, seed=7), [], []
    for i in range(16):
        feeds = {"mel": held["mel"][i][None], "h0": held["h0"][i].reshape(1, 1, HIDDEN),
                 "sample_rate": held["sample_rate"][i], "mask": held["mask"][i][None]}
        refs.append(run_model(model, feeds)[0])
        gots.append(run_model(q, feeds)[0])
    assert refs[0].shape == (1, CLASSES)
    assert snr_db(np.concatenate(refs), np.concatenate(gots)) > 20  # bad layouts: ~0 dB


def test_analysis_runs_on_a_model_with_a_bool_output(tmp_path, capsys):
    # zoo arabic_encoder passes its bool mask through as an output: the analysis probe model declared
    # every reference output float and onnxruntime refused to load it (exit 3 after quantizing)
    model = build_audio_lstm()
    model.graph.node.append(onnx.helper.make_node("Identity", ["mask"], ["mask_out"], name="mask_out"))
    model.graph.output.append(onnx.helper.make_tensor_value_info("mask_out", onnx.TensorProto.BOOL,
                                                                 ["batch", FRAMES]))
    cfg = npy_config(model, tmp_path, audio_inputs(16), analysis_enable=True)
    assert cli(cfg, tmp_path, "-q") == 0, capsys.readouterr().err
    assert "scores" in (tmp_path / "audio_lstm_report.md").read_text()


def test_int32_byte_ids_pass_through(tmp_path, capsys):
    rng = np.random.default_rng(0)
    model = build_byte_classifier()
    cfg = npy_config(model, tmp_path, {"ids": [rng.integers(0, 256, 24).astype(np.int32) for _ in range(16)]})
    assert cli(cfg, tmp_path, "-q") == 0, capsys.readouterr().err
    q = onnx.load(tmp_path / "byte_classifier.q.onnx")
    assert q.graph.input[0].type.tensor_type.elem_type == onnx.TensorProto.INT32
    ids = rng.integers(0, 256, (4, 24)).astype(np.int32)
    assert snr_db(run_model(model, {"ids": ids})[0], run_model(q, {"ids": ids})[0]) > 25


def test_int_input_refuses_fractional_data(tmp_path, capsys):
    cfg = npy_config(build_byte_classifier(), tmp_path, {"ids": [np.full(24, 3.5, np.float32)] * 4})
    assert cli(cfg, tmp_path) == 2
    assert "int32 input 'ids' cannot take exactly" in capsys.readouterr().err


def test_data_movement_between_float_ops_stays_float(tmp_path, capsys):
    # mel power spectrogram -> Transpose -> LSTM (float): one INT8 range over the input wiped most bins
    model = build_audio_lstm(side_inputs=False)
    cfg = npy_config(model, tmp_path, {"mel": list(mel_like(64))})
    assert cli(cfg, tmp_path, "-q") == 0, capsys.readouterr().err
    q = onnx.load(tmp_path / "mel_lstm.q.onnx")
    assert not quant_inputs(q) & {"mel", "mel_t"}
    assert {"y", "y_sq", "y_bt"} <= quant_inputs(q)  # movement into the INT8 MatMul stays INT8
    mel = mel_like(64, seed=6)  # held out
    assert snr_db(run_model(model, {"mel": mel})[0], run_model(q, {"mel": mel})[0]) > 38  # 26.6 dB before


@pytest.mark.parametrize("opset", [7, 8, 9, 10])
def test_old_opsets_are_upgraded_with_a_notice(opset, tmp_path, capsys, caplog):
    model = build_old_opset_net(opset)
    cfg = image_config(model, tmp_path, samples=8)
    assert cli(cfg, tmp_path) == 0, capsys.readouterr().err
    assert f"the model has opset {opset}; converting it to opset 13" in caplog.text
    q = onnx.load(tmp_path / "old_opset_net.q.onnx")
    x = demo_images(1, start=200)
    assert snr_db(run_model(model, {"x": x})[0], run_model(q, {"x": x})[0]) > 25


@pytest.mark.parametrize("opset, kwargs, needle", [
    (9, {"upsample": "linear"}, "changes its results: Upsample node 'upsample' computes differently"),
    (7, {"upsample": "linear"}, "changes its results: Upsample node 'upsample' computes differently"),
    (7, {"bn_spatial": 0}, "BatchNormalization node 'bn' has no conversion (Attribute spatial must have value 1)"),
], ids=["upsample_linear9", "upsample_linear7", "bn_spatial0"])
def test_an_upgrade_that_fails_or_changes_results_is_refused(opset, kwargs, needle, tmp_path, capsys):
    cfg = image_config(build_old_opset_net(opset, **kwargs), tmp_path, samples=4)
    assert cli(cfg, tmp_path) == 2
    err = capsys.readouterr().err.strip().splitlines()[-1]
    assert err.startswith("xquant: error: ") and needle in err
    assert not (tmp_path / "old_opset_net.q.onnx").exists()


def test_opset_6_is_refused_in_one_line(tmp_path, capsys):
    model = build_old_opset_net(7)
    model.opset_import[0].version = 6
    cfg = image_config(model, tmp_path, samples=4)
    assert cli(cfg, tmp_path) == 2
    assert "Model opset 6 is older than opset 7" in capsys.readouterr().err


def test_a_float_ops_output_is_remedied_at_its_int8_readers(tmp_path):
    # the LSTM's output is quantized only because the INT8 MatMul reads it (through Squeeze/Transpose):
    # keeping the LSTM float (already float) changed nothing; keeping its INT8 readers float does
    from xquant.analysis.judge import OutputJudge
    from xquant.analysis.remedy import MIN_GAIN_DB, suggest
    from xquant.analysis.report import analysis_batches
    from xquant.data import CalibrationData
    from xquant.quantize import run_quantization

    cfg = npy_config(build_audio_lstm(side_inputs=False), tmp_path, {"mel": list(mel_like(64))})
    r = run_quantization(cfg, show_progress=False, summary=False)
    judge = OutputJudge(r.fp32_model, analysis_batches(r.fp32_model, r.config, CalibrationData(r.config)))
    base = judge.errors(r.model)
    result = suggest(r.fp32_model, r.config, r.plan, r.stats, ["y"], judge, base)
    fallback = result["ignore_op_names"]
    assert fallback["names"] == ["squeeze_dirs", "to_batch_major", "classifier"]
    assert fallback["helped"] == (fallback["snr_db"] >= result["baseline_db"] + MIN_GAIN_DB)
    assert fallback["snr_db"] > result["baseline_db"]


def test_model_inputs_are_culprit_candidates(tmp_path):
    rng = np.random.default_rng(0)
    arrays = []
    for _ in range(32):
        a = rng.exponential(0.05, (1, 28, 28)).astype(np.float32)  # mostly tiny values, one loud bin
        a[0, rng.integers(28), rng.integers(28)] = 40.0
        arrays.append(a)
    cfg = npy_config(build_conv_net(), tmp_path, {"x": arrays}, analysis_enable=True)
    from xquant.quantize import run_quantization

    report = run_quantization(cfg, show_progress=False, summary=False).report
    rows = {r["tensor"]: r for r in report["tensors"]}
    assert rows["x"]["op"] == "input"
    blamed = [c["tensor"] for c in report["summary"]["culprits"]]
    assert "x" in blamed, blamed  # excluded before: the input's own quantization error was never blamed


def test_a_fallback_that_does_not_help_is_not_presented_as_the_fix():
    from xquant.analysis.render import _suggestion

    sug = {"baseline_db": 10.07, "trials": [], "custom_setting": None,
           "ignore_op_names": {"names": ["lstm"], "snr_db": 10.04, "helped": False, "outputs": {}}}
    text = "\n".join(_suggestion(sug, 10.07))
    assert "was tried and did not help: 10.04 dB against 10.07 dB" in text
    assert '"ignore_op_names": ["lstm"]' not in text and "**10.04 dB**" not in text


def _body_ops(model: onnx.ModelProto) -> list:
    ops = []
    for node in model.graph.node:
        for attr in node.attribute:
            for body in ([attr.g] if attr.type == onnx.AttributeProto.GRAPH else list(attr.graphs)):
                ops += [n.op_type for n in body.node]
    return ops


@pytest.mark.parametrize("builder, tensor", [(build_if_model, "branch"), (build_loop_model, "looped")],
                         ids=["if", "loop"])
def test_subgraph_models_quantize_the_main_graph_and_analyse_right(builder, tensor, tmp_path, capsys):
    from xquant.calibration.session import with_outputs
    from xquant.data import CalibrationData
    from xquant.analysis.report import analysis_batches
    from xquant.config import load_config

    model = builder()
    cfg = image_config(model, tmp_path, samples=12, finetune_level=1, analysis_enable=True)
    assert cli(cfg, tmp_path) == 0, capsys.readouterr().err
    q = onnx.load(tmp_path / f"{model.graph.name}.q.onnx")
    assert "Conv" in _body_ops(q) or "Neg" in _body_ops(q)
    assert not {"QuantizeLinear", "DequantizeLinear"} & set(_body_ops(q))  # bodies stay float
    assert "QuantizeLinear" in {n.op_type for n in q.graph.node}
    xs = [demo_images(1, start=i) for i in range(0, 64, 4)]  # the If model's batch is fixed to 1
    ref = np.concatenate([run_model(model, {"x": x})[0] for x in xs])
    assert snr_db(ref, np.concatenate([run_model(q, {"x": x})[0] for x in xs])) > 25
    assert "mean_x" not in quant_inputs(q)  # it only decides the branch: a quantization step could flip it
    # the report's error at the subgraph's output is the real one: the FP32 reference inside the analysis
    # probe must read the FP32 tensors in its bodies, not the quantized graph's
    report = json.loads((tmp_path / f"{model.graph.name}_report.json").read_text())
    row = next(r for r in report["tensors"] if r["tensor"] == tensor)
    config, _ = load_config(cfg)
    batches = analysis_batches(model, config, CalibrationData(config))
    ref = np.concatenate([run_model(with_outputs(model, [tensor]), b)[-1] for b in batches])
    dq = next(n.output[0] for n in q.graph.node
              if n.op_type == "DequantizeLinear" and n.input[0] == f"{tensor}_quantized")
    got = np.concatenate([run_model(with_outputs(q, [dq]), b)[-1] for b in batches])
    assert abs(row["accumulated"]["snr_db"] - snr_db(ref, got)) < 0.05


def test_external_data_model_loads_quantizes_and_writes(tmp_path, capsys):
    model = build_conv_net()
    cfg = image_config(model, tmp_path, samples=8)
    save_external(build_conv_net(), Path(cfg["model_parameters"]["onnx_model"]))
    assert (tmp_path / "conv_net.onnx.data").stat().st_size > 1000
    assert cli(cfg, tmp_path, "-q") == 0, capsys.readouterr().err
    q = onnx.load(tmp_path / "conv_net.q.onnx")
    x = demo_images(2, start=50)
    assert snr_db(run_model(model, {"x": x})[0], run_model(q, {"x": x})[0]) > 30


def test_a_model_over_the_protobuf_limit_is_one_line(tmp_path, capsys, monkeypatch):
    # a real > 2 GiB model is too big for a unit test: lower the limit to this model's size
    import xquant.prepare

    monkeypatch.setattr(xquant.prepare, "PROTO_LIMIT", 1000)
    cfg = image_config(build_conv_net(), tmp_path, samples=4)
    assert cli(cfg, tmp_path) == 2
    assert "xquant runs models in memory, which protobuf limits to 2 GiB" in capsys.readouterr().err


def test_a_hard_coded_batch_is_pinned_to_1(tmp_path, capsys, caplog):
    # the model says its batch is free, but a Reshape to [1, 8] makes it run one sample at a time
    from realworld_models import build_hard_coded_batch_net

    model = build_hard_coded_batch_net()
    cfg = image_config(model, tmp_path, samples=12, finetune_level=1, analysis_enable=True)
    assert cli(cfg, tmp_path) == 0, capsys.readouterr().err
    assert "declares a free batch but fails on 2 samples and runs on 1" in caplog.text
    q = onnx.load(tmp_path / "conv_net.q.onnx")
    xs = [demo_images(1, start=i) for i in range(0, 40, 5)]
    ref = np.concatenate([run_model(model, {"x": x})[0] for x in xs])
    assert snr_db(ref, np.concatenate([run_model(q, {"x": x})[0] for x in xs])) > 25


def test_a_free_width_is_not_the_batch(tmp_path, capsys):
    # OCR recognisers: [1, 1, 64, 'image_width']: the batch is the fixed 1, the free dim is a size
    from realworld_models import build_free_width_net

    model = build_free_width_net()
    cfg = image_config(model, tmp_path, samples=8, finetune_level=1)
    assert cli(cfg, tmp_path, "-q") == 0, capsys.readouterr().err
    q = onnx.load(tmp_path / "conv_net.q.onnx")
    x = demo_images(1, start=7)
    assert snr_db(run_model(model, {"x": x})[0], run_model(q, {"x": x})[0]) > 25


def test_a_model_importing_a_custom_domain_opset(tmp_path, capsys):
    # Paddle2ONNX lists ('Paddle', 1) among the opsets: the IR version check must only read the ONNX one
    model = build_old_opset_net(10)
    model.opset_import.append(onnx.helper.make_opsetid("Paddle", 1))
    cfg = image_config(model, tmp_path, samples=4)
    assert cli(cfg, tmp_path, "-q") == 0, capsys.readouterr().err


def test_tail_may_read_what_the_main_part_computes_from_shapes(tmp_path, capsys):
    # YOLOv8 exports compute anchor grids from Shape in the main part and read them in the decode tail;
    # such tensors carry no input values: they are constant-like, never quantized
    from realworld_models import build_shape_anchor_net

    model = build_shape_anchor_net()
    cfg = image_config(model, tmp_path, samples=8, truncate_var_names=["c2"])
    cfg["model_parameters"]["skip_onnxsim"] = True  # keep the Shape chain (the simplifier folds it here)
    assert cli(cfg, tmp_path, "-q") == 0, capsys.readouterr().err
    q = onnx.load(tmp_path / "shape_anchor_net.q.onnx")
    assert not quant_inputs(q) & {"width_f", "grid"}
    x = demo_images(4, start=9)
    assert snr_db(run_model(model, {"x": x})[0], run_model(q, {"x": x})[0]) > 30


def test_a_stale_declared_output_shape_is_not_baked_into_a_reshape(tmp_path, capsys):
    # ddddocr's recogniser declares its time-major output [T, 1, C] as [1, seqlen]: the simplifier turned the
    # computed Reshape shape into the constant [1, -1], and the INT8 output came out [1, T*C]
    from realworld_models import build_time_major_head

    model = build_time_major_head()
    rng = np.random.default_rng(3)
    calib = [rng.normal(0, 1, (1, 1, 4, 12)).astype(np.float32) for _ in range(8)]
    cfg = npy_config(model, tmp_path, {"x": calib}, shapes={"x": [1, 1, 4, 12]})
    assert cli(cfg, tmp_path, "-q") == 0, capsys.readouterr().err
    q = onnx.load(tmp_path / "time_major_head.q.onnx")
    assert [d.dim_param or d.dim_value for d in q.graph.output[0].type.tensor_type.shape.dim] == [1, "seqlen"]
    for width in (12, 20):  # the width the calibration saw, and another (the width stays free)
        x = rng.normal(0, 1, (1, 1, 4, width)).astype(np.float32)
        ref, got = run_model(model, {"x": x})[0], run_model(q, {"x": x})[0]
        assert got.shape == ref.shape == (width, 1, 6)
        assert snr_db(ref, got) > 25



def _fine_tuning_parts(model: onnx.ModelProto, folder: Path, samples: int, batch: int):
    """(fp32, plan, params, samples) as fine-tuning gets them, calibrated on ``samples`` demo images."""
    from xquant_testlib import fine_tuning_parts

    cfg_dict = image_config(model, folder, samples=samples, finetune_level=1)
    cfg_dict["calibration_parameters"]["input_parametres"][0]["input_shape"] = [batch, 1, 28, 28]
    return fine_tuning_parts(cfg_dict)


def test_a_fixed_batch_model_fine_tunes_on_the_free_batch_models_samples(tmp_path):
    # the same weights exported with batch 4 must fit bias correction on the same samples as the free-batch
    # export: 10 calibration samples at batch 4 fitted on 8 (orientation_b8: 8 of 12, 21.2 vs 23.8 dB)
    free = _fine_tuning_parts(build_conv_net(batch="N"), tmp_path / "free", 10, 1)[3]
    fixed = _fine_tuning_parts(build_conv_net(batch=4), tmp_path / "fixed", 10, 4)[3]
    assert fixed.fixed_batch == 4 and free.fixed_batch == 0
    for part in ("fit", "held"):
        want, got = getattr(free, part)["x"], getattr(fixed, part)["x"]
        assert got.shape[0] % 4 == 0  # whole batches the model can run
        assert {s.tobytes() for s in got} == {s.tobytes() for s in want}, part


def test_a_fixed_batch_model_gets_the_free_batch_models_bias_correction(tmp_path):
    # the shifts are means over the real samples: the fill of a short last batch (10 samples at batch 4:
    # 7 fit samples filled to 8) must not weigh a sample twice, nor the old cut drop one
    from xquant.finetune import bias

    got = []
    for batch, shape in (("N", 1), (4, 4)):
        fp32, plan, params, samples = _fine_tuning_parts(build_conv_net(batch=batch), tmp_path / str(batch), 10,
                                                         shape)
        model, changed = bias.correct_biases(fp32, fp32, plan, params, samples, "cpu")
        assert changed >= 2
        got.append({t.name: onnx.numpy_helper.to_array(t) for t in model.graph.initializer})
    for name in ("b1", "b2", "bf"):
        np.testing.assert_allclose(got[1][name], got[0][name], rtol=0, atol=1e-6, err_msg=name)


def test_a_fixed_batch_model_gets_the_free_batch_models_ranges(tmp_path):
    # calibration fills a short last batch (10 samples at batch 4: 2 repeated): the statistics must count
    # each sample once, so the ranges are the free-batch export's
    free = _fine_tuning_parts(build_conv_net(batch="N"), tmp_path / "free", 10, 1)[2]
    fixed = _fine_tuning_parts(build_conv_net(batch=4), tmp_path / "fixed", 10, 4)[2]
    assert free.keys() == fixed.keys() and free
    for name in free:
        np.testing.assert_allclose(np.asarray(fixed[name].scale), np.asarray(free[name].scale), rtol=1e-6,
                                   err_msg=name)
