"""Streaming statistics and the observers' ranges on distributions with known answers."""
from __future__ import annotations

import numpy as np
import onnx
import pytest

from xquant.calibration.stats import TensorStats
from xquant.errors import ConfigError
from xquant.observers import ObserverOptions, get_observer, names
from xquant.observers.mse import ErrorModel
from xquant.observers.registry import register

OPTS = ObserverOptions(max_percentile=0.999)


def stats_of(*chunks) -> TensorStats:
    s = TensorStats()
    for c in chunks:
        s.update(np.asarray(c, np.float32))
    return s


def test_histogram_growth_is_exact():
    rng = np.random.default_rng(0)
    small, big = rng.normal(0, 0.1, 50_000), rng.normal(0, 40, 50_000)
    s = stats_of(small, big)
    assert s.count == 100_000 and s.hist.sum() == 100_000
    assert s.min == pytest.approx(min(small.min(), big.min()), rel=1e-6)
    assert s.radius >= max(abs(s.min), abs(s.max)) and s.radius < 2 * max(abs(s.min), abs(s.max))
    edges = -s.radius + np.arange(s.hist.size + 1) * s.bin_width
    direct, _ = np.histogram(np.concatenate([small, big]).astype(np.float32), bins=edges)
    # identical up to values that sit on a bin edge (float32 rounding moves them one bin over)
    assert np.abs(np.cumsum(s.hist) - np.cumsum(direct)).max() <= 2
    assert np.abs(s.hist - direct).sum() <= 0.001 * s.count


def test_merge_equals_streaming_both():
    rng = np.random.default_rng(1)
    a, b = rng.normal(0, 1, 10_000), rng.normal(3, 9, 10_000)
    merged = stats_of(a).merge(stats_of(b))
    both = stats_of(a, b)
    assert merged.radius == both.radius and merged.count == both.count
    np.testing.assert_array_equal(merged.hist, both.hist)


def test_nan_and_inf_are_ignored():
    s = stats_of([1.0, np.nan, -2.0, np.inf])
    assert (s.min, s.max, s.count) == (-2.0, 1.0, 2)


def test_minmax_is_the_extremes_and_holds_zero():
    lo, hi = get_observer("minmax")(stats_of([0.5, 3.0, 1.0]), OPTS)
    assert (lo, hi) == (0.0, 3.0)


def test_percentile_matches_numpy_quantiles():
    x = np.random.default_rng(2).normal(0, 1, 400_000)
    lo, hi = get_observer("percentile")(stats_of(x), OPTS)
    assert hi == pytest.approx(np.quantile(x, 0.999), abs=0.01)
    assert lo == pytest.approx(np.quantile(x, 0.001), abs=0.01)


def quant_error(x, lo, hi):
    scale = (hi - lo) / 255
    q = np.clip(np.round((x - lo) / scale), 0, 255)
    return np.mean((x - (q * scale + lo)) ** 2)


def test_mse_error_model_predicts_the_real_error():
    x = np.random.default_rng(3).laplace(0, 1, 200_000)
    model = ErrorModel(stats_of(x))
    for lo, hi in [(-3, 3), (-6, 8), (x.min(), x.max())]:
        assert model.errors(lo, hi, 256) / x.size == pytest.approx(quant_error(x, lo, hi), rel=0.05)


def test_mse_finds_the_best_clipping_range():
    """Against a brute-force search of the real error over ranges: within 3% of the best, and below minmax."""
    rng = np.random.default_rng(4)
    x = np.concatenate([rng.laplace(0, 1, 200_000), rng.normal(-2, 0.5, 50_000)])
    s = stats_of(x)
    err_mse = quant_error(x, *get_observer("mse")(s, OPTS))
    grid = [(lo, hi) for lo in np.linspace(-12, -3, 37) for hi in np.linspace(3, 12, 37)]
    best = min(quant_error(x, lo, hi) for lo, hi in grid)
    assert err_mse <= 1.03 * best
    assert err_mse < 0.8 * quant_error(x, *get_observer("minmax")(s, OPTS))


def test_kl_clips_outliers_but_not_the_bulk_and_ignores_the_zero_spike():
    rng = np.random.default_rng(5)
    relu = np.maximum(rng.normal(0, 1, 200_000), 0)  # half the values exactly 0
    relu[:20] = 40.0
    lo, hi = get_observer("kl")(stats_of(relu), OPTS)
    assert lo == 0.0 and 2.5 < hi < 20


def test_default_is_registered_and_unknown_names_are_refused():
    assert set(names()) == {"default", "kl", "minmax", "mse", "percentile"}
    with pytest.raises(ConfigError, match="Did you mean 'minmax'"):
        get_observer("minmx")
    with pytest.raises(ValueError, match="registered twice"):
        register("mse")(lambda s, o: (0.0, 1.0))


def test_default_keeps_the_extremes_unless_clipping_pays_off_clearly():
    """default = mse's range only where it divides the modelled error by CLIP_GAIN: a bell-shaped tensor
    (mse would clip its tails for a modest gain) keeps its extremes; a long heavy tail (Student t, 2 degrees
    of freedom, 2M values: mse's error 4x lower) is clipped exactly as mse clips it."""
    rng = np.random.default_rng(6)
    bell = stats_of(rng.normal(0, 1, 200_000))
    assert get_observer("mse")(bell, OPTS)[1] < 0.9 * bell.max  # what the old default did
    assert get_observer("default")(bell, OPTS) == (bell.min, bell.max)
    heavy = stats_of(rng.standard_t(2, 2_000_000))
    assert get_observer("default")(heavy, OPTS) == get_observer("mse")(heavy, OPTS)
    assert get_observer("default")(heavy, OPTS)[1] < 0.5 * heavy.max


def test_default_keeps_the_extremes_a_later_layer_reads(tmp_path):
    """Conv -> GlobalMaxPool: the output is each sample's largest value, the tail of the Conv output's
    distribution. mse's range (the old default) clips that tail for a modestly lower error of the Conv
    output itself and saturates the output; the default keeps it (zoo orientation: 13 -> 24 dB)."""
    from onnx import TensorProto, helper

    from xquant.analysis.metrics import snr_db
    from xquant_testlib import run_model, write_npy_list
    from xquant.quantize import run_quantization

    w = helper.make_tensor("w", TensorProto.FLOAT, [1, 1, 1, 1], [1.0])
    graph = helper.make_graph(
        [helper.make_node("Conv", ["x", "w"], ["c"], name="conv"),
         helper.make_node("GlobalMaxPool", ["c"], ["y"], name="gmax")], "tail",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 1, 64, 64])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 1, 1, 1])], [w])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    rng = np.random.default_rng(7)
    calib = write_npy_list(tmp_path, "calib", [rng.normal(0, 1, (1, 1, 64, 64)) for _ in range(16)])
    held = rng.normal(0, 1, (64, 1, 64, 64)).astype(np.float32)
    ref = run_model(model, {"x": held})[0]
    snr = {}
    for method in ("mse", "default"):
        cfg = {"model_parameters": {"onnx_model": str(tmp_path / "tail.onnx"), "working_dir": str(tmp_path)},
               "calibration_parameters": {"calibration_type": method, "input_parametres": [
                   {"file_type": "npy", "data_list_path": str(calib)}]},
               "quantization_parameters": {"finetune_level": 0}}
        onnx.save(model, tmp_path / "tail.onnx")
        qdq = run_quantization(cfg, output=str(tmp_path / f"{method}.q.onnx"), summary=False).model
        snr[method] = snr_db(ref, run_model(qdq, {"x": held})[0])
    assert snr["default"] > snr["mse"] + 5, snr  # 35.7 vs 27.9 dB
