"""Cost of the shipped default: bias correction runs each node about once per sample, calibration histograms
make no float64 or masked copies, and ``--profile`` / the report say where the time went."""
from __future__ import annotations

import tracemalloc

import numpy as np
import onnx
import onnxruntime as ort
import pytest

from xquant.calibration.stats import NUM_BINS, TensorStats
from xquant.config import load_config
from xquant.data import CalibrationData
from xquant.export.qdq_writer import write_qdq
from xquant.finetune import bias
from xquant.finetune.layers import initializers
from xquant_testlib import fine_tuning_parts


@pytest.fixture
def demo_parts(demo_config):
    """(fp32, plan, params, samples) of the bundled demo, calibrated on its real images."""
    demo_config["calibration_parameters"]["calibration_step"] = 100
    return fine_tuning_parts(demo_config)


class _CountingSession(ort.InferenceSession):
    """A real onnxruntime session that adds (nodes in its model) x (samples fed) to ``executed`` per run."""

    executed = 0

    def __init__(self, model, *args, **kwargs):
        proto = onnx.load_from_string(model) if isinstance(model, bytes) else onnx.load(model)
        self._nodes = len(proto.graph.node)
        super().__init__(model, *args, **kwargs)

    def run(self, output_names, input_feed, run_options=None):
        _CountingSession.executed += self._nodes * int(next(iter(input_feed.values())).shape[0])
        return super().run(output_names, input_feed, run_options)


def test_bias_correction_runs_each_node_about_once_per_sample(demo_parts, monkeypatch):
    fp32, plan, params, samples = demo_parts
    monkeypatch.setattr(ort, "InferenceSession", _CountingSession)
    _CountingSession.executed = 0
    _, changed = bias.correct_biases(fp32, fp32, plan, params, samples, "cpu")
    fit = min(samples.num_fit, bias.FIT_SAMPLES)
    one_pass = (len(write_qdq(fp32, plan, params).graph.node) + len(fp32.graph.node)) * fit
    assert changed >= 3  # several layers corrected, so a per-layer rerun would show
    assert _CountingSession.executed <= 1.5 * one_pass  # the old whole-model rerun per layer: ~3.5x


def test_segments_give_what_rerunning_the_corrected_model_gives(demo_parts):
    """The segment-wise correction equals the sequential rule run by whole-model reruns (same biases)."""
    fp32, plan, params, samples = demo_parts
    new, changed = bias.correct_biases(fp32, fp32, plan, params, samples, "cpu")
    layers = [layer for layer in bias.weighted_layers(fp32, plan) if layer.bias and layer.bias not in plan.biases]
    fit = {k: v[:bias.FIT_SAMPLES] for k, v in samples.fit.items()}
    old, old_changed = bias._correct_by_whole_runs(fp32, fp32, write_qdq(fp32, plan, params), layers, fit,
                                                   samples.fixed_batch, "cpu")
    assert changed == old_changed >= 3
    got, want, start = initializers(new), initializers(old), initializers(fp32)
    for layer in layers:
        moved = np.abs(want[layer.bias] - start[layer.bias]).max()
        np.testing.assert_allclose(got[layer.bias], want[layer.bias], rtol=0, atol=1e-3 * max(moved, 1e-6))


def test_histogram_update_copies_no_float64_or_masked_activation():
    rng = np.random.default_rng(0)
    x = rng.standard_normal(2_000_000).astype(np.float32)
    stats = TensorStats()
    stats.update(x[:10])  # the histogram's range is set: no regrowth inside the measured call
    stats.update(np.full(1, 8.0, np.float32))
    tracemalloc.start()
    stats.update(x)
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    assert peak <= 13 * x.size  # one float32 product + one index array; the old masked/int64 copies: ~21 B
    ref = np.clip(((x + stats.radius) * (NUM_BINS / (2 * stats.radius))).astype(np.int64), 0, NUM_BINS - 1)
    want = np.bincount(ref, minlength=NUM_BINS)
    first = TensorStats()
    first.update(x[:10])
    first.update(np.full(1, 8.0, np.float32))
    assert np.abs(stats.hist - first.hist - want).sum() <= 1e-5 * x.size  # bin edges: float rounding only
    assert stats.count == x.size + 11


def test_histogram_update_skips_nan_and_inf():
    stats = TensorStats()
    stats.update(np.array([1.0, np.nan, -2.0, np.inf, 0.5], np.float32))
    assert stats.count == 3 and (stats.min, stats.max) == (-2.0, 1.0) and stats.hist.sum() == 3


def test_profile_flag_and_report_show_the_stage_split(demo_config, tmp_path, capsys):
    import json

    from xquant.cli import main

    demo_config["quantization_parameters"].update(finetune_level=1, analysis_enable=True)
    demo_config["calibration_parameters"]["calibration_step"] = 100
    path = tmp_path / "cfg.json"
    path.write_text(json.dumps(demo_config))
    assert main(["-c", str(path), "-q", "--profile"]) == 0
    err = capsys.readouterr().err
    for stage in ("calibration", "fine-tuning", "bias correction", "writing", "analysis report", "total",
                  "peak memory"):
        assert stage in err
    report = next(tmp_path.glob("*_report.md")).read_text()
    assert "## Time by stage" in report and "bias correction" in report


def test_calibration_files_are_decoded_once_for_every_stage(demo_config, monkeypatch):
    from xquant.data import source

    cfg, _ = load_config(demo_config)
    data = CalibrationData(cfg)
    decoded = []
    real = source.load_input_batch
    monkeypatch.setattr(source, "load_input_batch", lambda p, files: decoded.extend(files) or real(p, files))
    first = np.concatenate([b["input"] for b in data.batches(32)])
    again = np.concatenate([b["input"] for b in data.batches(64)])  # fine-tuning's read, other batch size
    np.testing.assert_array_equal(first, again)
    assert len(decoded) == data.num_samples == first.shape[0]


def test_histogram_bins_a_strided_share_of_a_large_tensor_and_keeps_its_extremes():
    """Past HIST_ELEMENTS per sample only every k-th element is binned (and counted): the distribution is the
    same within a percent at every bin, min and max stay exact over every element."""
    from xquant.calibration.stats import HIST_ELEMENTS

    rng = np.random.default_rng(1)
    x = rng.standard_normal((2, 3 * HIST_ELEMENTS)).astype(np.float32)
    x[1, 12345], x[0, 7] = 9.5, -8.25  # extremes the strided share skips
    sub, full = TensorStats(), TensorStats()
    sub.update(x, samples=2)
    full.update(x)
    assert (sub.min, sub.max) == (full.min, full.max) == (-8.25, 9.5)
    assert sub.count == sub.hist.sum() == x[:, ::1].ravel()[::3].size == 2 * HIST_ELEMENTS
    assert full.count == x.size
    cdf = lambda s: np.cumsum(s.hist) / s.count  # noqa: E731
    assert np.abs(cdf(sub) - cdf(full)).max() < 0.01


@pytest.mark.parametrize("step", [100, 300])  # 200 spare files held out / every 4th calibration sample held out
def test_fit_samples_know_which_calibration_sample_they_are(demo_config, step):
    from xquant.finetune.samples import load_samples

    demo_config["calibration_parameters"]["calibration_step"] = step
    cfg, proto = load_config(demo_config)
    data = CalibrationData(cfg)
    samples = load_samples(proto, cfg, data)
    calibration = np.concatenate([b["input"] for b in data.batches(64)])
    assert samples.fit_index is not None and len(samples.fit_index) == samples.num_fit
    np.testing.assert_array_equal(samples.fit["input"], calibration[samples.fit_index])
    if step == 300:
        assert samples.num_fit < step  # every 4th sample is held out, not fitted


def test_bias_correction_takes_its_fp32_reference_from_the_calibration_pass(demo_config, monkeypatch):
    """At finetune_level 1 calibration records the corrected layers' FP32 per-sample channel means, so bias
    correction runs no FP32 pass of its own; its biases are those its own FP32 pass gives."""
    from xquant import quantize
    from xquant.calibration.ranges import activation_params
    from xquant.finetune.samples import load_samples
    from xquant.plan.policy import plan_model
    from xquant.prepare import prepare_model

    demo_config["calibration_parameters"]["calibration_step"] = 300  # fit on calibration samples, every 4th held
    demo_config["quantization_parameters"]["finetune_level"] = 1
    cfg, proto = load_config(demo_config)
    data = CalibrationData(cfg)
    fp32 = prepare_model(proto, cfg.model.skip_onnxsim)
    plan = plan_model(fp32, cfg)
    request = bias.calibration_request(fp32, plan, 1)
    params = activation_params(plan, quantize.calibration_stats(fp32, cfg, plan, data, False, request))
    samples = load_samples(fp32, cfg, data)
    want, want_changed = bias.correct_biases(fp32, fp32, plan, params, samples, "cpu")  # its own FP32 pass

    def no_fp32_pass(*args, **kwargs):
        raise AssertionError("bias correction ran an FP32 pass of its own")

    monkeypatch.setattr(bias, "reference_means", no_fp32_pass)
    known = bias.calibration_means(request, data.num_samples)
    got, changed = bias.correct_biases(fp32, fp32, plan, params, samples, "cpu", known)
    assert changed == want_changed >= 3
    got, want, start = initializers(got), initializers(want), initializers(fp32)
    for layer in bias.correctable_layers(fp32, plan):
        moved = np.abs(want[layer.bias] - start[layer.bias]).max()
        np.testing.assert_allclose(got[layer.bias], want[layer.bias], rtol=0, atol=1e-3 * max(moved, 1e-6))
    result = quantize.run_quantization(demo_config, summary=False)  # the pipeline hands calibration's means on
    assert [p["pass"] for p in result.finetune["passes"]] == ["bias correction"]


def test_parallel_session_runs_each_sample_once_in_order_and_stops_with_its_reader(monkeypatch):
    """``run_each`` of a parallel session (the FP16 floor's and weight check's runner): the outputs of each
    sample in the samples' order, the constants fed to every run, and a reader that stops after the first
    chunk leaves the later samples unrun."""
    from xquant.calibration import session as S

    fed = []  # one entry per sample run: list.append is atomic, the counter += of _CountingSession is not

    class Recording(ort.InferenceSession):
        def run(self, output_names, input_feed, run_options=None):
            fed.append(float(input_feed["x"][0, 0]))
            return super().run(output_names, input_feed, run_options)

    monkeypatch.setattr(S, "RUN_WORKERS", 2)
    monkeypatch.setattr(S.ort, "InferenceSession", Recording)
    x = onnx.helper.make_tensor_value_info("x", onnx.TensorProto.FLOAT, ["N", 3])
    w = onnx.helper.make_tensor_value_info("w", onnx.TensorProto.FLOAT, [3])
    y = onnx.helper.make_tensor_value_info("y", onnx.TensorProto.FLOAT, ["N", 3])
    graph = onnx.helper.make_graph([onnx.helper.make_node("Mul", ["x", "w"], ["y"])], "g", [x, w], [y])
    model = onnx.helper.make_model(graph, opset_imports=[onnx.helper.make_opsetid("", 17)])
    sess = S.make_session(model, "cpu", "test model", parallel=True)
    assert sess.workers == 2 and sess.session.get_session_options().intra_op_num_threads == max(1, S.CORES // 2)
    batches = [{"x": np.full((1, 3), float(i), np.float32)} for i in range(7)]
    weight = {"w": np.array([1.0, 2.0, 3.0], np.float32)}
    outs = list(sess.run_each(batches, weight))
    assert [float(o[0][0, 2]) for o in outs] == [3.0 * i for i in range(7)] and sorted(fed) == list(range(7))
    fed.clear()
    reader = sess.run_each(batches, weight)
    first = next(reader)
    reader.close()  # the reader stops: no later chunk starts (the chunk's second run may be cancelled unstarted)
    assert float(first[0][0, 1]) == 0.0 and 0.0 in fed and set(fed) <= {0.0, 1.0}  # at most one chunk of 2
