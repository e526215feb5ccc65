"""``fp16_min_snr_db`` (60 dB by default with calibration data): an FP16 model that stays at or above a floor
SNR against FP32, by keeping the shortest run of its first float16 nodes (graph order) in float32.

Some networks amplify float16's rounding beyond what any float16 treatment repairs: on the PaddleOCR models
the activations' rounding alone, with every weight exact, keeps the output at 40-50 dB (docs/quantizer.md).
There only float32 regions help, and the early layers are where an error is amplified most: keeping the
first k% of the nodes in float32 reached 60 dB where keeping the last layers did nothing. So the floor
searches the smallest such prefix: one conversion per step of a bisection over the float16 nodes in graph
order (to within 4% of them), each measured against FP32 on up to 32 calibration samples, without the bias
correction (which runs once on the result, so the floor is met before it and usually beaten after). The
measure is the worst sample's error against the output's mean energy per sample (of the worst float output),
not the SNR summed over samples: an FP16 model's error moves from sample to sample (ppocr_v6_rec held out:
38-90 dB), and 16 calibration samples summed read 60.6 dB where 16 held-out ones read 48.4. (Each sample's
own SNR would not do either: a wake-word model's output on silence is near zero, so its SNR is low whatever
the precision, and the floor kept all of oww_alexa_op7 float32.) The floor holds on the calibration data;
held-out data unlike it can still read lower (docs/quantizer.md). A prefix in graph order keeps the float32
part together (ppocr_v4_rec: 26 Casts for 231 float32 nodes), not scattered through the graph. Every node it
keeps is named in the summary's kept list.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Callable, Dict, List, Optional, Sequence, Tuple

import numpy as np
import onnx

from ..calibration.session import make_session

log = logging.getLogger(__name__)
# the bias correction is dropped when the worst calibration sample it was not fitted on loses more than this
# (ppocr_cls: 65.2 -> 62.1 dB, and 83 -> 59 held out); smaller moves go either way held out (ddddocr_rec)
CORRECTION_SLACK_DB = 1.0
# a model this far above its floor without the float16 bias correction is not corrected: the correction's
# channel means, estimated on 8 samples, then cost unseen inputs more than it gains (orientation: 80 dB on its
# worst calibration image either way, held out 64.83 dB without it and 60.73 with it)
CLEAR_OF_FLOOR_DB = 15.0
# the bisection stops when the prefix is known to within 4% of the float16 nodes (2% took ppocr_v4_rec 15
# conversions instead of 9 for the same prefix, and kept 1-2% fewer ops FP32 on ppocr_v4_det and layout_cdla)
STEP_SHARE = 0.04
# a plain conversion this close to the floor tries the shortest prefix first (ddddocr_det: 59.0 dB, and 10 of its
# 268 nodes meet 60, where the bisection's midpoints met it one after the other: 5 conversions on 8 samples each)
NEAR_FLOOR_DB = 3.0
HARD_SAMPLES = 8  # the bisection's steps are judged on the samples the plain conversion did worst on

Convert = Callable[[Sequence[str]], Tuple[onnx.ModelProto, object]]  # extra float32 node names -> (model, info)


@dataclass
class FloorResult:
    floor_db: float
    kept: List[str]  # the float32 prefix (graph order), empty when the plain conversion met the floor
    of: int  # float16 nodes of the plain conversion
    snr_db: float  # of the returned model on the calibration samples, before the bias correction
    plain_snr_db: float
    conversions: int
    measure: "WorstSample" = field(repr=False)  # against FP32 on the calibration samples
    scores: Dict[int, float] = field(repr=False)  # the returned model's SNR per calibration sample (position)

    correction: str = "not checked"  # the bias correction on the calibration samples it was not fitted on
    plain_or_less: bool = False  # plain_snr_db is the first sample found short, not the worst (it stopped there)

    def summary(self) -> Dict[str, object]:
        return {"floor_db": self.floor_db, "samples": len(self.measure.batches), "kept_prefix": len(self.kept),
                "of": self.of, "prefix_ends": self.kept[:1] + self.kept[1:][-1:],
                "calibration_snr_db": _shown(self.snr_db), "plain_snr_db": _shown(self.plain_snr_db),
                "plain_or_less": self.plain_or_less,
                "conversions": self.conversions, "bias_correction": self.correction}

    def rescore(self, model: onnx.ModelProto) -> None:
        """The returned model changed (layers after the prefix kept float32 too): its scores again."""
        self.scores = self.measure.scores(model)
        self.snr_db = min(self.scores.values(), default=float("inf"))

    def wants_correction(self) -> bool:
        """Whether the bias correction is tried at all: not on a model CLEAR_OF_FLOOR_DB above the floor."""
        if self.snr_db < self.floor_db + CLEAR_OF_FLOOR_DB:
            return True
        self.correction = (f"not applied: {self.snr_db:.2f} dB on the worst calibration sample without it, "
                           f"{CLEAR_OF_FLOOR_DB:g} dB or more above the floor")
        return False

    def correction_holds(self, before: onnx.ModelProto, after: onnx.ModelProto, fitted: int) -> bool:
        """Whether the bias correction, fitted on the first calibration samples, leaves the worst of the
        others within CORRECTION_SLACK_DB of where it was (ppocr_cls: fitted on 8 crops it took the held-out
        SNR from 83.3 to 59.4 dB, its FP32 prefix in place; ddddocr_rec: its worst unseen crop 61.6 -> 57.8 dB,
        below a 60 dB floor); ``fitted``: how many of the first samples it was fitted on. The outcome goes
        into the summary."""
        unseen = self.measure.after(fitted)
        if not unseen.batches:
            return True
        known = [self.scores[p] for p in unseen.positions if p in self.scores]
        was = min(known) if len(known) == len(unseen.positions) else unseen(before)
        now = unseen(after, stop_below=was - CORRECTION_SLACK_DB)
        holds = now >= was - CORRECTION_SLACK_DB
        self.correction = (f"{'kept' if holds else 'dropped'}: worst of {len(unseen.batches)} calibration samples it "
                           f"was not fitted on {_shown(was):.2f} -> {_shown(now):.2f} dB{'' if holds else ' or less'}")
        if not holds:
            log.warning("FP16 floor: the float16 bias correction lowers the calibration samples it was not fitted "
                        "on (worst %.1f -> %.1f dB or less): dropped", was, now)
        return holds


def _shown(snr: float) -> float:
    """An SNR for the summary: 200 dB stands for identical outputs (as the bench prints them)."""
    return round(min(float(snr), 200.0), 2)


def floor_line(floor: dict) -> str:
    """What fp16_min_snr_db did, naming the float32 prefix by its first and last op."""
    head = f"FP16 floor {floor['floor_db']:g} dB" + (" (the default)" if floor.get("default") else "")
    if not floor["kept_prefix"]:
        return (f"{head}: met by the plain conversion ({floor['plain_snr_db']:.2f} dB on the worst of "
                f"{floor['samples']} calibration samples); bias correction {floor['bias_correction']}")
    ends = " .. ".join(floor["prefix_ends"])
    plain = f"{floor['plain_snr_db']:.2f} dB" + (" or less" if floor.get("plain_or_less") else "")
    return (f"{head}: the first {floor['kept_prefix']} of {floor['of']} FP16 ops kept FP32 ({ends}): "
            f"{floor['calibration_snr_db']:.2f} dB on the worst of {floor['samples']} calibration samples before "
            f"the bias correction, {plain} without the prefix ({floor['conversions']} conversions); bias "
            f"correction {floor['bias_correction']}"
            + ("; fp16_min_snr_db: 0 (--fp16_min_snr_db 0) converts every op instead" if floor.get("default")
               else ""))


class WorstSample:
    """The worst float output's SNR (dB) on its worst sample: that sample's error against the output's mean
    energy per sample, so a sample whose output is near zero (a wake-word model on silence) is judged by its
    error, not by its own tiny signal. A subset keeps the whole set's mean energy and each sample's position."""

    def __init__(self, ref: List[list], batches: Sequence[Dict[str, np.ndarray]], device: str,
                 positions: Optional[Sequence[int]] = None, energy: Optional[Dict[int, float]] = None) -> None:
        self.ref, self.batches, self.device = ref, batches, device
        self.positions = list(range(len(ref)) if positions is None else positions)
        first = ref[0] if ref else []
        self.floats = [k for k, v in enumerate(first) if np.issubdtype(np.asarray(v).dtype, np.floating)]
        self.energy = energy if energy is not None else {
            k: float(np.mean([np.sum(np.square(r[k], dtype=np.float64)) for r in self.ref])) for k in self.floats}

    @classmethod
    def against(cls, fp32: onnx.ModelProto, batches: Sequence[Dict[str, np.ndarray]], device: str,
                known: Sequence[list] = ()) -> WorstSample:
        """Measured against ``fp32``'s outputs on ``batches`` (one FP32 pass); ``known``: its outputs on the
        first batches, already run (the float16 range check's pass)."""
        ref = list(known[:len(batches)])
        if len(ref) < len(batches):
            session = make_session(fp32, device, "FP32 model (FP16 floor)", parallel=True)
            ref += session.run_each(batches[len(ref):])
        return cls(ref, batches, device)

    def subset(self, indices: Sequence[int]) -> WorstSample:
        """The same measure on the samples at ``indices`` (in that order), the FP32 outputs reused."""
        indices = list(indices)
        return WorstSample([self.ref[i] for i in indices], [self.batches[i] for i in indices], self.device,
                           [self.positions[i] for i in indices], self.energy)

    def first(self, position: int) -> WorstSample:
        """The same samples with the one at ``position`` (a calibration sample's position) judged first."""
        at = self.positions.index(position)
        return self.subset([at] + [i for i in range(len(self.positions)) if i != at])

    def after(self, start: int) -> WorstSample:
        """The samples from ``start`` on."""
        return self.subset(range(start, len(self.ref)))

    def sample(self, ref: list, got: list) -> float:
        worst = float("inf")
        for k in self.floats:
            if self.energy[k] > 0:
                noise = float(np.sum(np.square(ref[k].astype(np.float64) - got[k])))
                worst = min(worst, 10.0 * np.log10(self.energy[k] / max(noise, 1e-300)))
        return worst

    def scores(self, model: onnx.ModelProto, stop_below: float = -float("inf")) -> Dict[int, float]:
        """Each sample's SNR by its position, in this measure's order; stops after the first sample below
        ``stop_below`` (a bisection step that fails needs no more)."""
        session = make_session(model, self.device, "FP16 model (FP16 floor)", parallel=True)
        found: Dict[int, float] = {}
        for position, ref, got in zip(self.positions, self.ref, session.run_each(self.batches)):
            found[position] = self.sample(ref, got)
            if found[position] < stop_below:
                break
        return found

    def __call__(self, model: onnx.ModelProto, stop_below: float = -float("inf")) -> float:
        """The worst sample's SNR (of those measured before one fell below ``stop_below``)."""
        return min(self.scores(model, stop_below).values(), default=float("inf"))


def keep_prefix(fp32: onnx.ModelProto, convert: Convert, batches: Sequence[Dict[str, np.ndarray]],
                floor_db: float, device: str,
                known: Sequence[list] = ()) -> Tuple[onnx.ModelProto, object, FloorResult]:
    """(model, info, result): the plain conversion if it meets ``floor_db`` on ``batches``, else the one
    with the shortest float32 prefix of float16 nodes found to meet it; ``known``: ``fp32``'s outputs on the
    first batches.

    The bisection judges each step on the HARD_SAMPLES samples the plain conversion did worst on (a step that
    fails usually fails on the first), then the prefix it finds on the others; should one of them fall short
    there, it joins the judging samples and the bisection goes on above that prefix. With no more samples
    than that, all of them judge, so the plain conversion stops at the first that falls short (layout_cdla's 8
    at 800x608 px: 8 runs -> 2) and its SNR is that sample's, the worst's at most."""
    measure = WorstSample.against(fp32, batches, device, known)
    model, info = convert(())
    scores = measure.scores(model, stop_below=-float("inf") if len(batches) > HARD_SAMPLES else floor_db)
    plain = min(scores.values(), default=float("inf"))
    order: List[str] = list(info.fp16_nodes)
    result = FloorResult(floor_db, [], len(order), plain, plain, 1, measure, scores,
                         plain_or_less=len(scores) < len(batches))
    if plain >= floor_db or not order:
        return model, info, result
    ranked = sorted(range(len(batches)), key=lambda i: scores.get(i, float("inf")))  # the plain's worst first
    hard, low, high = ranked[:HARD_SAMPLES], 0, len(order)
    near = plain >= floor_db - NEAR_FLOOR_DB
    while True:
        low, high, best = _bisect(convert, order, measure.subset(hard), floor_db, low, high, result, near)
        if best is None:
            break
        rest = measure.subset([i for i in ranked if i not in hard]).scores(best[0], stop_below=floor_db)
        short = [i for i, snr in rest.items() if snr < floor_db]
        if not short:
            best = (best[0], best[1], {**best[2], **rest})
            break
        hard, low, high = hard + short, high, len(order)  # the sample it missed judges the steps from now on
    if best is None:  # every prefix tried fell short: the one at the bisection's upper end
        trial, trial_info = convert(order[:high])
        best = (trial, trial_info, measure.scores(trial))
        result.conversions += 1
    model, info, result.scores = best
    result.snr_db = min(result.scores.values())
    result.kept = order[:high]
    measured = f"{plain:.1f} dB{' or less' if result.plain_or_less else ''} on the worst calibration sample"
    if high == len(order):
        log.warning("FP16 floor %g dB: every float16 op had to stay float32 (the plain conversion measured %s): "
                    "this model does not hold the floor in float16; the output is an FP32 model", floor_db, measured)
    log.info("FP16 floor %g dB: %s without a prefix; the first %d of %d float16 nodes stay float32 (worst of %d "
             "samples %.1f dB, %d conversions)", floor_db, measured, len(result.kept), len(order), len(batches),
             result.snr_db, result.conversions)
    if 0 < len(order) - high < len(order) / 2:
        log.warning("FP16 floor %g dB keeps %d of the %d float16 ops float32 (%.0f%%): this model runs at nearly "
                    "FP32 speed; fp16_min_snr_db 0 converts them all (%s)", floor_db, high, len(order),
                    100.0 * high / len(order), measured)
    return model, info, result


def _bisect(convert: Convert, order: List[str], judge: WorstSample, floor_db: float, low: int, high: int,
            result: FloorResult, shortest_first: bool = False):
    """(low, high, best): the prefix ``low`` falls short on ``judge``, ``high`` is taken to meet it (all of
    ``order``: FP32); best, the (model, info, scores on ``judge``) of the shortest prefix a step found to meet
    it, or None. ``shortest_first``: the prefix one step above ``low`` is tried before the bisection, which
    goes on as without it should it fall short. A sample that fails a step judges the next steps first (the
    plain conversion's worst are not always the prefixes' worst: layout_cdla's failing steps ran 4 samples
    each, then 1 or 2; the order changes no outcome)."""
    best, step = None, max(1, int(STEP_SHARE * len(order)))

    def meets(prefix: int) -> bool:
        nonlocal best, judge
        trial, trial_info = convert(order[:prefix])
        scores = judge.scores(trial, stop_below=floor_db)
        result.conversions += 1
        if min(scores.values()) >= floor_db:
            best = (trial, trial_info, scores)
            return True
        judge = judge.first(list(scores)[-1])
        return False

    if shortest_first and high - low > step and meets(low + step):
        return low, low + step, best
    while high - low > step:
        mid = (low + high) // 2
        if meets(mid):
            high = mid
        else:
            low = mid
    return low, high, best
