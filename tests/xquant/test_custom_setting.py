"""custom_setting: subgraphs captured by boundary edges (the seed's n2 / n7 -> y example), per-subgraph
precision_level, calibration_type and max_percentile, the overlap rule and the error messages."""
from __future__ import annotations

import pytest

from issue3_fixtures import assert_written_as_planned, build_seed_block, image_config
from xquant.errors import ConfigError
from xquant.plan.graph import GraphIndex
from xquant.plan.subgraph import enclosed_nodes
from xquant.quantize import run_quantization

ALL = {"conv0", "conv_a", "relu_a", "conv_b", "sigmoid_b", "mul_b", "conv_side", "add", "sigmoid_y", "gap",
       "flatten", "fc"}
SEED_SUBGRAPH = {"conv_a", "relu_a", "conv_b", "sigmoid_b", "mul_b", "add"}


def quantize(tmp_path, custom, **quant):
    cfg = image_config(build_seed_block(), tmp_path, custom_setting=custom, **quant)
    return run_quantization(cfg, summary=False)


def test_boundary_edges_enclose_the_seed_subgraph():
    index = GraphIndex(build_seed_block())
    assert enclosed_nodes(index, ["n2", "n7"], ["y"], "here") == SEED_SUBGRAPH
    # the side input only bounds the subgraph: leaving it out does not pull conv_side (or conv0) in
    assert enclosed_nodes(index, ["n2"], ["y"], "here") == SEED_SUBGRAPH
    assert enclosed_nodes(index, ["n4"], ["n6"], "here") == {"conv_b", "sigmoid_b", "mul_b"}


def test_precision_level_2_inside_the_subgraph_only(tmp_path):
    result = quantize(tmp_path, [{"input_names": ["n2", "n7"], "output_names": ["y"], "precision_level": 2}])
    # inside: Sigmoid and the parameter-free Mul/Add stay float; outside, sigmoid_y stays INT8 (global level 0)
    assert result.plan.quantized_nodes == ALL - {"sigmoid_b", "mul_b", "add"}
    assert_written_as_planned(result.model, ALL - {"sigmoid_b", "mul_b", "add"})


def test_subgraph_can_lower_the_precision_level_below_the_global_one(tmp_path):
    result = quantize(tmp_path, [{"input_names": ["n4"], "output_names": ["n6"], "precision_level": 0}],
                      precision_level=2)
    float_at_2 = {"sigmoid_b", "mul_b", "add", "sigmoid_y"}
    expected = ALL - (float_at_2 - {"sigmoid_b", "mul_b"})
    assert result.plan.quantized_nodes == expected
    assert_written_as_planned(result.model, expected)


def test_calibration_type_and_max_percentile_apply_to_tensors_made_inside(tmp_path):
    custom = [{"input_names": ["n2"], "output_names": ["n4"], "calibration_type": "percentile",
               "max_percentile": 0.99}]
    result = quantize(tmp_path / "a", custom)
    specs = result.plan.activations
    assert (specs["n4"].method, specs["n4"].max_percentile) == ("percentile", 0.99)
    assert (specs["n2"].method, specs["n2"].max_percentile) == ("default", 0.9999)  # made outside (by conv0)
    assert specs["n5"].method == "default"
    glob = run_quantization(_global(tmp_path / "b", "percentile", 0.99), summary=False)
    assert result.params["n4"] == glob.params["n4"]  # same range as a global percentile 0.99 run
    assert result.params["n2"] != glob.params["n2"]


def _global(folder, method, pct):
    cfg = image_config(build_seed_block(), folder, max_percentile=pct)
    cfg["calibration_parameters"]["calibration_type"] = method
    return cfg


@pytest.mark.parametrize("order", ["outer_first", "inner_first"])
def test_overlapping_settings_the_later_one_wins_field_by_field(tmp_path, order):
    outer = {"input_names": ["n2", "n7"], "output_names": ["y"], "precision_level": 2,
             "calibration_type": "minmax"}
    inner = {"input_names": ["n4"], "output_names": ["n6"], "precision_level": 0}
    custom = [outer, inner] if order == "outer_first" else [inner, outer]
    result = quantize(tmp_path, custom)
    # outer first: inner (later) sets level 0 on conv_b, sigmoid_b, mul_b; add keeps level 2.
    # inner first: outer (later) covers inner entirely.
    expected = ALL - ({"add"} if order == "outer_first" else {"sigmoid_b", "mul_b", "add"})
    assert result.plan.quantized_nodes == expected
    assert_written_as_planned(result.model, expected)
    # calibration_type comes from outer in both orders: inner does not set it
    assert result.plan.activations["n4"].method == "minmax"


@pytest.mark.parametrize("custom,needle", [
    ({"input_names": ["n22"], "output_names": ["y"]},
     r"custom_setting\[0\]: tensor 'n22' does not exist in the model\. Close matches: 'n2'"),
    ({"input_names": ["n2"], "output_names": ["why"]}, r"tensor 'why' does not exist"),
    ({"input_names": ["n7"], "output_names": ["n4"]},
     r"custom_setting\[0\]: output 'n4' is not reachable from input_names \['n7'\]"),
    ({"input_names": ["y"], "output_names": ["n2"]}, r"output 'n2' is not reachable"),
])
def test_bad_edges_are_one_line_config_errors(tmp_path, custom, needle):
    with pytest.raises(ConfigError, match=needle) as err:
        quantize(tmp_path, [custom])
    assert "\n" not in str(err.value)
    assert not list(tmp_path.glob("*.q.onnx"))


def test_custom_setting_on_the_demo_model(demo_config):
    stem = "/stem/stem.0/stem.0.2/Relu_output_0"
    demo_config["quantization_parameters"].update(finetune_level=0, custom_setting=[
        {"input_names": ["input"], "output_names": [stem], "calibration_type": "minmax"}])
    result = run_quantization(demo_config, summary=False)
    assert result.plan.activations[stem].method == "minmax"
    assert result.plan.activations["/stem/stem.2/stem.2.2/Relu_output_0"].method == "default"
