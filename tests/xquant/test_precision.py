"""precision_level 0/1/2, ignore_op_types and ignore_op_names: the written model runs exactly the defined
ops in INT8."""
from __future__ import annotations

import re

import pytest

from issue3_fixtures import REPO, assert_written_as_planned, build_precision_model, image_config
from xquant.errors import ConfigError
from xquant.plan.precision import FRAGILE, LEVEL2_FLOAT, PARAMETER_FREE_ARITH
from xquant.quantize import run_quantization

ALL = {"conv", "relu", "sigmoid", "mul_act", "mul_const", "add_act", "sub_act", "gap", "flatten", "fc",
       "softmax", "div_const"}
FLOAT_AT = {
    0: set(),
    1: {"softmax", "div_const"},  # fragile: Softmax, Div
    2: {"softmax", "div_const", "sigmoid", "mul_act", "add_act", "sub_act"},  # + Sigmoid, parameter-free arithmetic
}


def quantize(tmp_path, **quant):
    return run_quantization(image_config(build_precision_model(), tmp_path, **quant), summary=False)


@pytest.mark.parametrize("level", [0, 1, 2])
def test_each_level_runs_exactly_its_ops_in_int8(tmp_path, level):
    result = quantize(tmp_path, precision_level=level)
    assert result.plan.quantized_nodes == ALL - FLOAT_AT[level]
    assert_written_as_planned(result.model, ALL - FLOAT_AT[level])


def test_float_ops_read_dequantized_tensors_and_write_float(tmp_path):
    model = quantize(tmp_path, precision_level=2).model
    readers = {n.name: n.op_type for n in model.graph.node if "sig" in n.input}
    assert readers == {"mul_act": "Mul", "sub_act": "Sub"}  # no QuantizeLinear on the float Sigmoid's output
    sigmoid = next(n for n in model.graph.node if n.name == "sigmoid")
    producer = next(n for n in model.graph.node if sigmoid.input[0] in n.output)
    assert producer.op_type == "DequantizeLinear"  # it reads the INT8 Relu output, dequantized


def test_ignore_op_types_and_names_keep_ops_float_at_every_level(tmp_path):
    result = quantize(tmp_path, precision_level=0, ignore_op_types=["Sigmoid"], ignore_op_names=["mul_act"])
    assert result.plan.quantized_nodes == ALL - {"sigmoid", "mul_act"}
    assert_written_as_planned(result.model, ALL - {"sigmoid", "mul_act"})
    readers = {n.name: list(n.input) for n in result.model.graph.node if n.name in ("mul_act", "sub_act")}
    assert "sig" in readers["mul_act"]  # float -> float: the edge stays float
    assert "sig_dequantized" in readers["sub_act"]  # float -> INT8: quantized on that edge only
    assert "m_dequantized" in next(n for n in result.model.graph.node if n.name == "mul_const").input


def test_a_float_op_between_int8_ops_sees_quantized_tensors(tmp_path):
    """Documented semantics: the INT8 neighbours quantize the tensors they read and write, so a lone float
    op sits between a DequantizeLinear and a QuantizeLinear; keep a chain float to keep its tensors float."""
    result = quantize(tmp_path, precision_level=0, ignore_op_names=["sigmoid"])
    assert "sigmoid" not in result.plan.quantized_nodes
    tensors = {n.input[0] for n in result.model.graph.node if n.op_type == "QuantizeLinear"}
    assert {"r", "sig"} <= tensors


def test_unknown_ignore_op_name_is_an_error_with_close_matches(tmp_path):
    with pytest.raises(ConfigError, match=r"ignore_op_names: node 'mul_cnst' does not exist.*'mul_const'"):
        quantize(tmp_path, ignore_op_names=["mul_cnst"])


def test_docs_define_every_level_with_the_op_types_the_code_uses():
    text = (REPO / "docs" / "precision.md").read_text()
    for op in sorted(FRAGILE | LEVEL2_FLOAT | PARAMETER_FREE_ARITH):
        assert re.search(rf"\b{op}\b", text), f"docs/precision.md does not name {op}"
    for level in (0, 1, 2):
        assert f"precision_level {level}" in text or f"Level {level}" in text
