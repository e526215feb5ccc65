"""Measured remedies for the layers most to blame: a ready-to-paste custom_setting (or, when none helps,
ignore_op_names), each with the output fidelity it gives on the analysis batches.

For a culprit tensor made by ops that precision_level 2 keeps float (parameter-free arithmetic, Sigmoid,
...), the subgraph is the whole run of such ops that ends at it, so the tensors inside it stay float;
otherwise it is the op alone and the candidates are other calibration types. Every candidate is
quantized and run: nothing is guessed. The models given are never changed."""
from __future__ import annotations

import logging
from dataclasses import replace
from typing import Dict, List, Optional, Sequence, Tuple

import numpy as np
import onnx

from ..calibration.ranges import activation_params
from ..calibration.session import make_session, with_outputs
from ..calibration.stats import TensorStats
from ..config.schema import CustomSetting, XQuantConfig
from ..errors import XQuantError
from ..export.qdq_writer import write_qdq
from ..plan.graph import GraphIndex
from ..plan.ops import ACTIVATIONS_FUSED, rule_for
from ..plan.planner import QuantPlan
from ..plan.policy import plan_model
from ..plan.precision import keeps_float
from .judge import OutputJudge, worst_db

log = logging.getLogger(__name__)
MAX_REGION = 8  # ops in one suggested precision_level 2 subgraph
MAX_TRIALS = 6  # quantize-and-run trials for all culprits together (bounded cost)
MIN_GAIN_DB = 0.5  # a remedy must raise the worst output SNR by this much
CALIBRATION_ALTERNATIVES = ("minmax", "percentile", "kl")


def _fill_stats(model: onnx.ModelProto, stats: Dict[str, TensorStats], names: List[str],
                batches: Sequence[Dict[str, np.ndarray]], device: str) -> Dict[str, TensorStats]:
    """``stats`` plus statistics of ``names`` it lacks, from the analysis batches."""
    missing = [n for n in names if n not in stats]
    if not missing:
        return stats
    sess = make_session(with_outputs(model, missing), device, "float model")
    extra = {n: TensorStats() for n in missing}
    for batch in batches:
        for name, value in zip(missing, sess.run(missing, batch)):
            extra[name].update(value)
    return {**stats, **{k: v for k, v in extra.items() if v.count}}


def trial_model(model: onnx.ModelProto, cfg: XQuantConfig, stats: Dict[str, TensorStats],
                batches: Sequence[Dict[str, np.ndarray]], device: str) -> onnx.ModelProto:
    """The QDQ model ``cfg`` gives for the float ``model`` with the calibration ``stats``."""
    plan = plan_model(model, cfg)
    full = _fill_stats(model, stats, list(plan.activations), batches, device)
    return write_qdq(model, plan, activation_params(plan, full))


def _level2_region(index: GraphIndex, plan: QuantPlan, tensor: str) -> Optional[Tuple[List[str], List[str]]]:
    """Boundary edges of the run of INT8 ops that precision_level 2 would keep float and that ends at ``tensor``."""
    start = index.producer.get(tensor)
    if start is None or start.name not in plan.quantized_nodes or not keeps_float(start, index, 2):
        return None
    region, todo, inputs = {start.name}, [start], []
    while todo:
        node = todo.pop()
        for name in node.input:
            if not name or not index.is_activation(name) or name in inputs:
                continue
            producer = index.producer.get(name)
            grow = (producer is not None and producer.name not in region and len(region) < MAX_REGION
                    and producer.name in plan.quantized_nodes and keeps_float(producer, index, 2))
            if grow:
                region.add(producer.name)
                todo.append(producer)
            elif producer is None or producer.name not in region:
                inputs.append(name)
    return inputs, [tensor]


def op_nodes(index: GraphIndex, plan: QuantPlan, tensor: str) -> List[onnx.NodeProto]:
    """The op that makes ``tensor``, preceded by the Conv/Gemm/... it is fused to when it is a Relu/Clip."""
    node = index.producer.get(tensor)
    if node is None:
        return []
    before = index.producer.get(node.input[0]) if node.input else None
    if (node.op_type in ACTIVATIONS_FUSED and node.input[0] not in plan.activations and before is not None
            and before.name in plan.quantized_nodes):
        return [before, node]
    return [node]


def float_nodes_for(index: GraphIndex, plan: QuantPlan, tensor: str) -> List[onnx.NodeProto]:
    """The INT8 ops to keep float so that ``tensor`` is no longer quantized: the INT8 op that makes it
    (with the op it is fused to), or, for a model input or a float op's output (quantized only because
    INT8 ops read it), those readers."""
    nodes = [n for n in op_nodes(index, plan, tensor) if n.name in plan.quantized_nodes]
    if nodes:
        return nodes
    found: Dict[str, onnx.NodeProto] = {}
    todo = [tensor]
    while todo:  # through INT8 data movement to the INT8 ops that compute on it
        for node in index.consumers.get(todo.pop(), []):
            rule = rule_for(node.op_type)
            if node.name in plan.quantized_nodes and node.name not in found and rule is not None:
                found[node.name] = node
                if rule.kind != "compute":
                    todo.extend(o for o in node.output if o)
    return list(found.values())


def _op_edges(index: GraphIndex, plan: QuantPlan, tensor: str) -> Optional[Tuple[List[str], List[str]]]:
    """Boundary edges of the op (with its fused Conv/Gemm/...) that makes ``tensor``."""
    nodes = op_nodes(index, plan, tensor)
    inputs = [i for i in nodes[0].input if i and index.is_activation(i) and index.is_float(i)] if nodes else []
    return (inputs, [tensor]) if inputs else None


def candidates(index: GraphIndex, plan: QuantPlan, tensor: str) -> List[CustomSetting]:
    region = _level2_region(index, plan, tensor)
    if region is not None:
        return [CustomSetting(tuple(region[0]), tuple(region[1]), precision_level=2)]
    edges = _op_edges(index, plan, tensor)
    if edges is None:
        return []
    current = plan.activations[tensor].method if tensor in plan.activations else ""
    return [CustomSetting(tuple(edges[0]), tuple(edges[1]), calibration_type=m)
            for m in CALIBRATION_ALTERNATIVES if m != current]


def as_json(setting: CustomSetting) -> dict:
    out = {"input_names": list(setting.input_names), "output_names": list(setting.output_names)}
    for key in ("precision_level", "calibration_type", "max_percentile"):
        if getattr(setting, key) is not None:
            out[key] = getattr(setting, key)
    return out


def _with(cfg: XQuantConfig, extra: Sequence[CustomSetting] = (), ignore: Sequence[str] = ()) -> XQuantConfig:
    quant = cfg.quantization
    return replace(cfg, quantization=replace(quant, custom_setting=tuple(quant.custom_setting) + tuple(extra),
                                             ignore_op_names=tuple(quant.ignore_op_names) + tuple(ignore)))


def suggest(model: onnx.ModelProto, cfg: XQuantConfig, plan: QuantPlan, stats: Dict[str, TensorStats],
            culprits: Sequence[str], judge: OutputJudge, baseline: Dict[str, dict]) -> dict:
    """{"custom_setting": [...] | None, "outputs": errors, "snr_db": worst, "baseline_db", "trials": [...],
    "ignore_op_names": ... (only when no custom_setting helps)}."""
    index = GraphIndex(model)
    base_db = worst_db(baseline)
    trials: List[dict] = []
    chosen: List[Tuple[float, CustomSetting, Dict[str, dict]]] = []
    measure = lambda c: judge.errors(trial_model(model, c, stats, judge.batches, judge.device))  # noqa: E731
    for tensor in culprits:
        best: Optional[Tuple[float, CustomSetting, Dict[str, dict]]] = None
        for setting in candidates(index, plan, tensor)[:max(0, MAX_TRIALS - len(trials))]:
            trial = {"tensor": tensor, "custom_setting": as_json(setting), "snr_db": None}
            trials.append(trial)
            try:
                errors = measure(_with(cfg, [setting]))
            except XQuantError as exc:  # a candidate that cannot be built is reported, not fatal
                trial["error"] = exc.one_line()
                log.warning("analysis: trial %s failed: %s", trial["custom_setting"], exc.one_line())
                continue
            db = trial["snr_db"] = worst_db(errors)
            if db >= base_db + MIN_GAIN_DB and (best is None or db > best[0]):
                best = (db, setting, errors)
        if best is not None:
            chosen.append(best)
    result: dict = {"baseline_db": base_db, "trials": trials, "custom_setting": None}
    if not chosen:
        return _float_fallback(model, cfg, index, plan, stats, culprits, judge, result)
    top = max(chosen, key=lambda c: c[0])
    settings, errors = [top[1]], top[2]
    if len(chosen) > 1:
        together = measure(_with(cfg, [c[1] for c in chosen]))
        if worst_db(together) >= top[0]:
            settings, errors = [c[1] for c in chosen], together
    result.update(custom_setting=[as_json(s) for s in settings], outputs=errors, snr_db=worst_db(errors))
    return result


def _float_fallback(model: onnx.ModelProto, cfg: XQuantConfig, index: GraphIndex, plan: QuantPlan,
                    stats: Dict[str, TensorStats], culprits: Sequence[str], judge: OutputJudge, result: dict) -> dict:
    """No custom_setting helped: measure keeping float the INT8 ops that quantize the culprits
    (ignore_op_names); ``helped`` says whether that raises the worst output SNR by MIN_GAIN_DB."""
    names = list(dict.fromkeys(n.name for tensor in culprits for n in float_nodes_for(index, plan, tensor)))
    if names:
        errors = judge.errors(trial_model(model, _with(cfg, ignore=names), stats, judge.batches, judge.device))
        db = worst_db(errors)
        result["ignore_op_names"] = {"names": names, "outputs": errors, "snr_db": db,
                                     "helped": db >= result["baseline_db"] + MIN_GAIN_DB}
    return result
