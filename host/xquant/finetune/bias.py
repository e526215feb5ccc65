"""Empirical bias correction, layer by layer in graph order: shift an INT8 layer's float bias by the
per-channel mean of its output error (QDQ model minus FP32) on the fit samples, then move on to the next
layer with this one corrected, so no shift is corrected twice. The QDQ model is written once and
cut after every corrected layer and run segment by segment (finetune/segments.py): a layer's
shift is subtracted from its cached output before the next segment runs, which is exactly what rerunning
the corrected model would give, so every node runs once per sample. Only systematic shifts are corrected: a
channel's mean error must exceed SIGNIFICANCE standard errors of that mean (over samples)."""
from __future__ import annotations

from typing import Dict, List, Optional, Tuple

import numpy as np
import onnx
from onnx import helper

from ..calibration.ranges import QParams
from ..calibration.stats import channel_means
from ..export.qdq_writer import write_qdq
from ..plan.planner import QuantPlan
from .layers import Layer, initializers, weighted_layers, with_initializers
from ..calibration.session import make_session, with_outputs
from .samples import Samples, run_session, run_tensors
from .segments import SegmentRunner, supported

SIGNIFICANCE = 3.0
REF_BATCH = 8  # samples per FP32 reference run: every layer output of a batch is alive at once
FIT_SAMPLES = 64  # measured: the same SNR as 100-256 samples within 0.25 dB, at half the time


def _qdq_name(qdq: onnx.ModelProto, name: str) -> str:
    produced = {o for n in qdq.graph.node for o in n.output}
    return name if name in produced else f"{name}_prequant"


def systematic_shift(got: np.ndarray, ref: np.ndarray) -> np.ndarray:
    """Per-channel (axis 1) mean of ``got - ref``, zero where it is within SIGNIFICANCE standard errors of 0.
    Per-sample channel means are taken before the float64 statistics: no float64 copy of whole activations."""
    per_sample = channel_means([got]) - channel_means([ref])
    return shift_of(per_sample)


def shift_of(per_sample: np.ndarray) -> np.ndarray:
    """From [samples, channels] mean errors: their mean where it is SIGNIFICANCE standard errors from 0."""
    mean = per_sample.mean(axis=0)
    stderr = per_sample.std(axis=0) / np.sqrt(max(per_sample.shape[0] - 1, 1))
    return np.where(np.abs(mean) > SIGNIFICANCE * stderr, mean, 0.0)


def biases_as_inputs(qdq: onnx.ModelProto, biases: List[str], outputs: List[str]) -> onnx.ModelProto:
    """A copy of ``qdq`` whose float bias initializers are graph inputs (fed per run) and that exposes
    ``outputs``: one session serves every step of the correction."""
    model = with_outputs(qdq, outputs)
    keep = [t for t in model.graph.initializer if t.name not in biases]
    moved = {t.name: t for t in model.graph.initializer if t.name in biases}
    del model.graph.initializer[:]
    model.graph.initializer.extend(keep)
    for name in biases:
        model.graph.input.append(helper.make_tensor_value_info(name, moved[name].data_type, list(moved[name].dims)))
    return model


def reference_means(fp32: onnx.ModelProto, fit: Dict[str, np.ndarray], names: List[str], batch: int,
                    device: str) -> Dict[str, np.ndarray]:
    """{layer output: [samples, channels] means} of the FP32 model: one pass, each batch reduced at once
    (REF_BATCH samples when the batch is free), so no layer's whole activation is kept."""
    sess = make_session(with_outputs(fp32, names), device, "FP32 model for bias correction")
    total, step = int(next(iter(fit.values())).shape[0]), batch or REF_BATCH
    parts: Dict[str, List[np.ndarray]] = {n: [] for n in names}
    for start in range(0, total, step):
        values = sess.run(names, {k: v[start:start + step] for k, v in fit.items()})
        for name, value in zip(names, values):
            if isinstance(value, np.ndarray) and value.ndim >= 2:
                parts[name].append(channel_means([value]))
    return {n: np.concatenate(v) for n, v in parts.items() if v}


def correctable_layers(model: onnx.ModelProto, plan: QuantPlan) -> List[Layer]:
    """The layers bias correction shifts: a float bias initializer (int32 biases are not fed as floats)."""
    layers = [layer for layer in weighted_layers(model, plan) if layer.bias is not None]
    return [layer for layer in layers if layer.bias not in plan.biases]


def calibration_request(model: onnx.ModelProto, plan: QuantPlan, level: int) -> Dict[str, List[np.ndarray]]:
    """{layer output: []} for calibration to fill with per-sample channel means (``collect_stats``'s
    ``means``), so bias correction needs no FP32 pass of its own; empty at finetune_level 0."""
    if level < 1 or not plan.weights:
        return {}
    return {layer.output: [] for layer in correctable_layers(model, plan)}


def calibration_means(request: Dict[str, List[np.ndarray]], samples: int) -> Dict[str, np.ndarray]:
    """{layer output: [calibration samples, channels]} from a filled request (a fixed batch's fill dropped)."""
    return {name: np.concatenate(parts)[:samples] for name, parts in request.items() if parts}


def _reference(fp32: onnx.ModelProto, fit: Dict[str, np.ndarray], layers: List[Layer], samples: Samples,
               device: str, known: Optional[Dict[str, np.ndarray]]) -> Dict[str, np.ndarray]:
    """FP32 per-sample channel means of the layers on the fit samples: taken from calibration's (``known``,
    indexed by the fit samples' calibration index) when it has them all, else one FP32 pass."""
    count = int(next(iter(fit.values())).shape[0])
    index = samples.fit_index
    if known and index is not None and all(layer.output in known for layer in layers):
        if int(index[:count].max()) < min(len(v) for v in known.values()):
            return {layer.output: known[layer.output][index[:count]] for layer in layers}
    return reference_means(fp32, fit, [layer.output for layer in layers], samples.fixed_batch, device)


def real_rows(rows: int, real: int, count: int) -> int:
    """How many of a layer output's ``rows`` (axis 0) come from the first ``real`` of ``count`` fit samples
    (the rest is the fill of a fixed batch): all of them when nothing was filled. Axis 0 is not always the
    sample axis: a transformer's projections fold time into it ([T*N, C] after a Reshape), so rows are
    counted per sample (slicing ``real`` rows there kept 2 of 12 samples' first steps: zoo khmer_segmenter
    lost its bias correction, 35.93 -> 35.34 dB)."""
    return rows if real >= count or count <= 0 else rows * real // count


def correct_biases(fp32: onnx.ModelProto, model: onnx.ModelProto, plan: QuantPlan, params: Dict[str, QParams],
                   samples: Samples, device: str, known: Optional[Dict[str, np.ndarray]] = None
                   ) -> Tuple[onnx.ModelProto, int]:
    """(copy of ``model`` with corrected biases, number of layers whose bias changed). ``known``: the FP32
    reference calibration took (``calibration_means``)."""
    layers = correctable_layers(model, plan)
    if not layers:
        return model, 0
    batch = samples.fixed_batch
    limit = max(batch, FIT_SAMPLES - FIT_SAMPLES % batch) if batch > 1 else FIT_SAMPLES  # whole batches
    fit = {k: v[:limit] for k, v in samples.fit.items()}
    count = min(samples.num_fit, limit)
    real = min(samples.real_fit or count, count)  # the shifts are means over real samples, never the fill
    qdq = write_qdq(model, plan, params)
    if not (supported(qdq) and supported(fp32)):
        return _correct_by_whole_runs(fp32, model, qdq, layers, fit, samples.fixed_batch, device, (real, count))
    values = initializers(model)
    names = [_qdq_name(qdq, layer.output) for layer in layers]
    ref = _reference(fp32, fit, layers, samples, device, known)
    got_run = SegmentRunner(qdq, [[n] for n in names], fit, samples.fixed_batch, device,
                            "segment of the model for bias correction")
    updates: Dict[str, np.ndarray] = {}
    for layer, name in zip(layers, names):
        got = got_run.step()[name]
        bias = values[layer.bias or ""]
        if got[0].ndim < 2 or got[0].shape[1] != bias.shape[0] or layer.output not in ref:
            continue
        diff = channel_means(got) - ref[layer.output]
        shift = shift_of(diff[:real_rows(len(diff), real, count)])
        if np.any(shift):
            updates[layer.bias or ""] = (bias - shift).astype(np.float32)
            for chunk in got:  # what the corrected layer gives, for the segments after it
                chunk -= shift.astype(chunk.dtype).reshape((1, -1) + (1,) * (chunk.ndim - 2))
    return (with_initializers(model, updates) if updates else model), len(updates)


def _correct_by_whole_runs(fp32: onnx.ModelProto, model: onnx.ModelProto, qdq: onnx.ModelProto,
                           layers: List[Layer], fit: Dict[str, np.ndarray], batch: int,
                           device: str, real: Optional[Tuple[int, int]] = None) -> Tuple[onnx.ModelProto, int]:
    """The same rule for graphs with subgraph nodes (no segments): one whole-model run per layer."""
    ref = run_tensors(fp32, fit, [layer.output for layer in layers], batch, device)
    values = initializers(model)
    names = {layer.output: _qdq_name(qdq, layer.output) for layer in layers}
    biases = sorted({layer.bias or "" for layer in layers})
    sess = make_session(biases_as_inputs(qdq, biases, sorted(set(names.values()))), device,
                        "model for bias correction")
    feeds = {name: values[name].astype(np.float32) for name in biases}
    changed = 0
    for layer in layers:
        bias = layer.bias or ""
        name = names[layer.output]
        got = run_session(sess, fit, [name], batch, feeds)[name]
        if got.ndim < 2 or got.shape[1] != feeds[bias].shape[0]:
            continue
        rows = real_rows(len(got), *real) if real else len(got)
        shift = systematic_shift(got[:rows], ref[layer.output][:rows])
        if np.any(shift):
            feeds[bias] = (feeds[bias] - shift).astype(np.float32)
            changed += 1
    updates = {name: feeds[name] for name in biases if not np.array_equal(feeds[name], values[name])}
    return (with_initializers(model, updates) if updates else model), changed
