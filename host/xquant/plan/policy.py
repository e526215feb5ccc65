"""The whole marking step for a config: truncation tail, custom_setting subgraphs, ignored ops -> QuantPlan."""
from __future__ import annotations

import logging
from collections import Counter

import onnx

from ..config.schema import XQuantConfig
from ..errors import ConfigError
from ..suggest import closest
from .graph import GraphIndex
from .custom import resolve_custom_settings
from .ops import rule_for
from .planner import QuantPlan, build_plan
from .truncate import float_tail

log = logging.getLogger(__name__)


def check_ignored(index: GraphIndex, cfg: XQuantConfig) -> None:
    """Unknown ignore_op_names are errors (they name this model's nodes); unused ignore_op_types warn."""
    names = {n.name for n in index.nodes}
    for name in cfg.quantization.ignore_op_names:
        if name not in names:
            close = closest(name, names, limit=3)
            hint = f" Close matches: {', '.join(repr(c) for c in close)}." if close else ""
            raise ConfigError(f"quantization_parameters.ignore_op_names: node '{name}' does not exist in the "
                              f"model.{hint}", "Use node names (not tensor names) as netron shows them.")
    types = {n.op_type for n in index.nodes}
    for op_type in cfg.quantization.ignore_op_types:
        if op_type not in types:
            log.warning("ignore_op_types: the model has no %s node", op_type)


def plan_model(model: onnx.ModelProto, cfg: XQuantConfig) -> QuantPlan:
    """Mark what ``cfg`` quantizes in ``model`` (prepared: named nodes, inferred types)."""
    index = GraphIndex(model)
    quant = cfg.quantization
    check_ignored(index, cfg)
    tail = float_tail(index, quant.truncate_var_names)
    if tail:
        log.info("truncation: %d node(s) after %s stay float", len(tail), list(quant.truncate_var_names))
    settings = resolve_custom_settings(index, quant.custom_setting)
    plan = build_plan(model, cfg, float_nodes=tail, settings=settings)
    if not _warn_subgraphs(index, plan):
        _warn_nothing_quantized(index, plan)
    return plan


def _warn_nothing_quantized(index: GraphIndex, plan: QuantPlan) -> None:
    """One line naming what computes, when no op is INT8 (an LSTM model whose head is a detector's)."""
    if plan.quantized_nodes:
        return
    ops = Counter(n.op_type for n in index.nodes if n.op_type not in ("Constant", "Shape", "Cast")
                  and getattr(rule_for(n.op_type), "kind", "compute") == "compute")  # not data movement
    log.warning("nothing is quantized: every op stays float (%s), having no INT8 rule or a rule that keeps "
                "it float (docs/quantizer.md, 'The INT8 scheme'); the .q.onnx computes as the FP32 model does",
                ", ".join(f"{op} x{n}" for op, n in ops.most_common(5)))


def _body_ops(node: onnx.NodeProto) -> int:
    count = 0
    for attr in node.attribute:
        for body in ([attr.g] if attr.type == onnx.AttributeProto.GRAPH else list(attr.graphs)):
            count += sum(1 + _body_ops(inner) for inner in body.node)
    return count


def _warn_subgraphs(index: GraphIndex, plan: QuantPlan) -> bool:
    inside = sum(_body_ops(n) for n in index.nodes)
    if inside:
        log.warning("%d op(s) inside If/Loop/Scan bodies stay float: xquant quantizes the main graph only%s",
                    inside, " (here: nothing; the model computes inside its bodies)" if not plan.quantized_nodes
                    else "")
    return bool(inside)
