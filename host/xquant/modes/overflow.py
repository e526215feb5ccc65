"""Which ops float16 cannot represent, measured on the calibration data and the weights.

* Overflow: the largest magnitude of every float tensor; a node that reads or writes a tensor at
  ``OVERFLOW_LIMIT`` or beyond stays float32.
* Lost precision: the SNR of every float tensor against its own float16 rounding. A normal float16 keeps 11
  significant bits (about 77 dB for spread-out values); values below float16's smallest normal number
  (6.1e-5) are subnormal and keep fewer, down to zero under 6e-8. A node that reads or writes a tensor whose
  rounding SNR is below ``PRECISION_SNR_DB`` (tiny outputs such as probabilities near 1e-6, tiny weights)
  stays float32. Magnitude alone is no reason: float16's relative precision is the same at 3000 as at 3.
* Sensitive weights: a Conv/Gemm/MatMul whose weights rounded to float16, alone (everything else float32),
  put the model's output below ``SENSITIVE_SNR_DB`` stays float32: no float16 conversion of the model can
  reach that level while it rounds them (oww_embedding's first Conv: 53.0 dB alone; kept, the whole
  conversion goes 59.3 -> 62.9 dB held out)."""
from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Dict, Iterable, List, Optional

import numpy as np
import onnx
from onnx import TensorProto, numpy_helper

from ..calibration.session import make_session, with_outputs
from ..calibration.stats import channel_means

log = logging.getLogger(__name__)
FP16_MAX = 65504.0
OVERFLOW_LIMIT = FP16_MAX / 4  # head-room for inputs larger than the calibration data's
ROUNDING_SAMPLE = 1 << 13  # values per tensor and sample the rounding SNR is measured on
PRECISION_SNR_DB = 66.0  # a normal tensor rounds at ~77 dB; below 66 dB most of its energy is subnormal
SENSITIVE_SNR_DB = 60.0  # the output SNR an FP16 model should reach (the bar for float16)
# a group of layers clears them only this far above the limit (roundings can partly cancel)
GROUP_MARGIN_DB = 3.0
SENSITIVE_SAMPLES = 2  # calibration samples the weights' sensitivity is measured on
WEIGHT_OPS = frozenset({"Conv", "ConvTranspose", "Gemm", "MatMul"})


@dataclass
class TensorStats:
    """Per float tensor: largest finite |x|, and the energy of the tensor and of its float16 rounding error."""

    peaks: Dict[str, float] = field(default_factory=dict)
    signal: Dict[str, float] = field(default_factory=dict)
    noise: Dict[str, float] = field(default_factory=dict)
    means: Dict[str, List[np.ndarray]] = field(default_factory=dict)  # per batch: [samples, channels] means
    outputs: List[List[np.ndarray]] = field(default_factory=list)  # per batch: the graph's outputs, when kept

    def channel_means(self) -> Dict[str, np.ndarray]:
        """Tensor -> [samples, channels] channel means over the batches, for the tensors asked for."""
        return {name: np.concatenate(parts) for name, parts in self.means.items()}

    def note(self, name: str, value: np.ndarray) -> None:
        if not (value.size and np.issubdtype(value.dtype, np.floating)):
            return
        flat = value.ravel()
        peak = max(float(flat.max()), -float(flat.min()))  # NaN when any is; 2.5x faster than np.abs(flat).max()
        if value.dtype == np.float32 and peak < FP16_MAX:  # the common case, in float32: no copies to float64
            # the rounding SNR on an evenly strided sample: numpy's float16 casts cost ~0.1 us per value, and
            # ppocr_v4_det's 350 tensors x 8 samples hold 10^9 values
            sample = flat[::max(1, flat.size // ROUNDING_SAMPLE)]
            with np.errstate(over="ignore"):
                error = sample.astype(np.float16).astype(np.float32) - sample  # exact in float32
            scale = flat.size / sample.size
            self._add(name, peak, scale * float(np.dot(sample, sample)), scale * float(np.dot(error, error)))
            return
        finite = value[np.isfinite(value)].astype(np.float64)
        if not finite.size:
            return
        small = finite[np.abs(finite) < FP16_MAX]  # overflow is the other check's
        with np.errstate(over="ignore"):
            error = small.astype(np.float16).astype(np.float64) - small
        self._add(name, float(np.abs(finite).max()), float(np.dot(small, small)), float(np.dot(error, error)))

    def _add(self, name: str, peak: float, signal: float, noise: float) -> None:
        self.peaks[name] = max(self.peaks.get(name, 0.0), peak)
        self.signal[name] = self.signal.get(name, 0.0) + signal
        self.noise[name] = self.noise.get(name, 0.0) + noise

    def rounding_snr(self) -> Dict[str, float]:
        """Tensor -> SNR (dB) of its float16 rounding, for tensors that are not all zero."""
        return {name: 10.0 * np.log10(sig / max(self.noise[name], 1e-300))
                for name, sig in self.signal.items() if sig > 0.0}


def _float_tensors(model: onnx.ModelProto) -> list:
    known = {v.name: v.type.tensor_type.elem_type for v in list(model.graph.value_info) + list(model.graph.output)}
    return [o for n in model.graph.node for o in n.output if o and known.get(o) == TensorProto.FLOAT]


def tensor_stats(model: onnx.ModelProto, batches: Iterable[Dict[str, np.ndarray]],
                 device: str = "cpu", means_of: Iterable[str] = (), keep_outputs: bool = False) -> TensorStats:
    """``TensorStats`` of every float tensor (intermediate, graph input, weight) over ``batches``, and the
    per-sample channel means of the tensors ``means_of`` (the float16 bias correction's reference: the
    same FP32 pass, not a second one); ``keep_outputs``: the graph's outputs of each batch too (the FP16
    floor's FP32 reference on these samples)."""
    means_of = set(means_of)
    stats = TensorStats()
    for init in model.graph.initializer:
        if init.data_type == TensorProto.FLOAT:
            stats.note(init.name, numpy_helper.to_array(init))
    batches = list(batches)
    if not batches:
        return stats
    names = _float_tensors(model)
    session = make_session(with_outputs(model, names), device, "FP32 model (float16 range check)")
    wanted = [o.name for o in session.get_outputs()]
    keep = len(model.graph.output) if keep_outputs else 0  # with_outputs appends after the graph's outputs
    for batch in batches:  # one run's tensors at a time (ppocr_v4_det: 350 tensors)
        _note_run(stats, list(batch.items()), list(zip(wanted, session.run(wanted, batch))), means_of, keep)
    return stats


def _note_run(stats: TensorStats, inputs: list, named: list, means_of: set, keep: int) -> None:
    """One run's inputs and ``named`` (name, value) tensors into ``stats``; the first ``keep`` of ``named``
    (the graph's outputs) copied into ``stats.outputs``."""
    if keep:
        stats.outputs.append([np.array(value) for _, value in named[:keep]])
    for name, value in inputs + named:
        stats.note(name, np.asarray(value))
        if name in means_of and np.ndim(value) >= 2:
            stats.means.setdefault(name, []).append(channel_means([np.asarray(value)]))


def tensor_peaks(model: onnx.ModelProto, batches: Iterable[Dict[str, np.ndarray]],
                 device: str = "cpu") -> Dict[str, float]:
    """Largest finite |x| of every float tensor (intermediate, graph input, weight) over ``batches``."""
    return tensor_stats(model, batches, device).peaks


def _worst(model: onnx.ModelProto, per_tensor: Dict[str, float], bad, pick) -> Dict[str, float]:
    found: Dict[str, float] = {}
    for node in model.graph.node:
        values = [per_tensor[t] for t in list(node.input) + list(node.output) if t in per_tensor]
        if values and bad(pick(values)):
            found[node.name] = pick(values)
    return found


def _say(found: Dict[str, float], what: str, fmt: str) -> None:
    if found:
        log.warning("%d op(s) %s and stay float32: %s", len(found), what,
                    ", ".join(f"{name} ({fmt.format(v)})" for name, v in list(found.items())[:8])
                    + (", ..." if len(found) > 8 else ""))


def overflowing_nodes(model: onnx.ModelProto, peaks: Dict[str, float],
                      limit: float = OVERFLOW_LIMIT) -> Dict[str, float]:
    """Node name -> the largest magnitude it reads or writes, for nodes at ``limit`` or beyond."""
    found = _worst(model, peaks, lambda v: v >= limit, max)
    _say(found, "overflow float16", "|x| {:.4g}")
    return found


def imprecise_nodes(model: onnx.ModelProto, snr: Dict[str, float],
                    limit: float = PRECISION_SNR_DB) -> Dict[str, float]:
    """Node name -> the lowest float16 rounding SNR (dB) of a tensor it reads or writes, for nodes below
    ``limit`` (tensors mostly in float16's subnormal range)."""
    found = _worst(model, snr, lambda v: v < limit, min)
    _say(found, "lose precision in float16 (tiny values)", "rounding SNR {:.1f} dB")
    return found


def output_snr_db(ref: List[np.ndarray], test: List[np.ndarray]) -> float:
    """The worst SNR (dB) over float outputs, each summed over the samples."""
    worst = float("inf")
    for k in range(len(ref[0]) if ref else 0):
        if not np.issubdtype(np.asarray(ref[0][k]).dtype, np.floating):
            continue
        signal = sum(float(np.sum(np.square(r[k], dtype=np.float64))) for r in ref)
        noise = sum(float(np.sum(np.square(r[k].astype(np.float64) - t[k]))) for r, t in zip(ref, test))
        if signal > 0:
            worst = min(worst, 10.0 * np.log10(signal / max(noise, 1e-300)))
    return worst


def sensitive_weights(model: onnx.ModelProto, batches: Iterable[Dict[str, np.ndarray]], device: str = "cpu",
                      limit: float = SENSITIVE_SNR_DB, only: Optional[Iterable[str]] = None) -> Dict[str, float]:
    """Node name -> the output SNR (dB) with only its float32 weights rounded to float16, for weight layers
    below ``limit``: one session with the weights as inputs, rounded weights fed in. Independent roundings add
    their noise, so a group of layers whose weights rounded together keep the output GROUP_MARGIN_DB above
    ``limit`` is taken to have no layer below it alone, and the other groups are halved until single layers
    are measured (ppocr_v6_det: 7 runs instead of 65, 4.4 -> 0.5 s). Not always so: ppocr_v6_rec reads 67.0
    dB with every weight rounded and 58.6 with one Conv's alone, which this no longer finds. ``only``: the
    nodes to test (all weight layers when None)."""
    batches = list(batches)[:SENSITIVE_SAMPLES]
    inits = {t.name: t for t in model.graph.initializer if t.data_type == TensorProto.FLOAT}
    layers = [(n.name, n.input[1]) for n in model.graph.node
              if n.op_type in WEIGHT_OPS and n.domain in ("", "ai.onnx") and len(n.input) > 1 and n.input[1] in inits
              and (only is None or n.name in only)]
    if not batches or not layers:
        return {}
    moved = {w for _, w in layers}
    probe = onnx.ModelProto()
    probe.CopyFrom(model)
    kept = [t for t in probe.graph.initializer if t.name not in moved]
    del probe.graph.initializer[:]
    probe.graph.initializer.extend(kept)
    weights = {w: numpy_helper.to_array(inits[w]) for w in moved}
    probe.graph.input.extend(onnx.helper.make_tensor_value_info(w, TensorProto.FLOAT, list(inits[w].dims))
                             for w in weights)
    session = make_session(probe, device, "FP32 model (float16 weight sensitivity)", parallel=True)
    ref = list(session.run_each(batches, weights))

    def snr_of(group: List[tuple]) -> float:  # the weights of every layer in ``group`` rounded at once
        rounded = dict(weights)
        with np.errstate(over="ignore"):
            rounded.update((w, weights[w].astype(np.float16).astype(np.float32)) for _, w in group)
        return output_snr_db(ref, list(session.run_each(batches, rounded)))

    found: Dict[str, float] = {}
    groups = [layers]
    while groups:  # group testing: a group at or above the limit clears its layers, else it is halved
        group = groups.pop()
        snr = snr_of(group)
        if snr >= limit + (GROUP_MARGIN_DB if len(group) > 1 else 0.0):
            continue
        if len(group) == 1:
            found[group[0][0]] = snr
        else:
            groups += [group[: len(group) // 2], group[len(group) // 2:]]
    _say(found, f"have weights whose float16 rounding alone puts the output below {limit:.0f} dB",
         "output SNR {:.1f} dB")
    return found
