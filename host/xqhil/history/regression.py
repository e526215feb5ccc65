"""Regression checks of one run against its baseline: pure functions on verify documents.

Accuracy and fidelity are deterministic for a fixed model, input set and runtime, so any drop beyond a
small tolerance is real. Latency is noisy, so a slowdown counts only when the shift of the median is
larger than every noise scale measured for it, and significant:

* ``shift = median(current) - median(baseline)`` of the timed-run samples (``samples_ms``);
* ``threshold = max(noise, min_effect * jitter, min_relative * base, min_absolute)`` where
  ``noise = hypot(t_k * SE(shift), t_k' * sqrt(2) * excess)``: SE(shift) is the sampling error of the two
  medians (robust sigma of the samples, MAD), ``excess`` the run-to-run noise of a run's median measured
  from consecutive earlier clean runs of the same model/board/config (at least three) beyond what their
  sampling error explains, and the t factors widen the z-score ``k`` for few samples or few runs;
  ``jitter`` is the pooled robust sigma of the per-inference samples (a minimum effect size);
* and a one-sided Mann-Whitney U test with ``p < alpha`` (when both runs have enough samples), on the
  samples without their spikes (more than 6 robust sigmas above the run's own median).

When both runs timed FP32 and INT8, the INT8/FP32 latency ratio of each run is a within-run control
(:mod:`xqhil.history.control`): a slowdown is flagged only when the precision slowed against the other one
beyond the run-to-run scatter of that ratio, whatever the board-wide level did; a board-wide slowdown moves
both and is not a regression. The thresholds above then do not apply: board-wide drift dominates them.

The ``min_relative`` floor only matters on very quiet boards before any run-to-run history exists. The
``min_absolute`` floor (20 us) is the scale below which a shift of a whole run's median is scheduling,
not the model: on a busy machine a run of a 44 us model moved by 10 us (+23%) with nothing changed,
and with few earlier runs no measured noise can cover that yet (see docs/history.md).
"""
from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from typing import Any

import numpy as np

from xqhil.history import doc as docs
from xqhil.history import stats
from xqhil.history.control import ControlShift, check_control

Doc = Mapping[str, Any]
PRECISIONS = ("int8", "fp32")
ACCURACY_FIELDS = ("chip_int8", "chip_fp32")
AGREEMENT_PAIRS = ("chip_int8_vs_pc_int8", "chip_fp32_vs_pc_fp32")
SNR_PAIRS = ("chip_int8_vs_pc_int8", "chip_fp32_vs_pc_fp32")


@dataclass(frozen=True)
class Policy:
    """Thresholds of the regression checks."""

    accuracy_tolerance: float | None = None  # points; None: the document's accuracy.tolerance, else 0.5
    snr_drop_db: float = 3.0  # a 3 dB drop doubles the error power
    snr_cap_db: float = 60.0  # SNRs above this (or infinite) count as identical outputs
    latency_k: float = 4.0  # z-score the noise must be exceeded by (t-corrected for few samples)
    latency_min_effect: float = 1.0  # in pooled robust sigmas of the per-inference jitter
    latency_min_relative: float = 0.02  # practical-significance floor, fraction of the baseline median
    latency_min_absolute_ms: float = 0.02  # scheduling-noise floor of a run's median shift (20 us)
    latency_needs_change: bool = True  # flag a slowdown only when something recorded changed (see below)
    latency_run_k: float = 3.0  # z-score for the measured run-to-run noise (t-corrected for few runs)
    latency_alpha: float = 1e-2  # one-sided Mann-Whitney U level
    latency_min_samples: int = 8  # below this a side, skip the rank test (the thresholds still apply)
    latency_control: bool = True  # judge a precision against the other one of the same run (control.py)
    latency_ratio_k: float = 3.0  # z-score the ratio's shift must exceed (t-corrected for few runs)
    latency_ratio_floor: float = 0.02  # smallest ratio shift worth flagging
    latency_ratio_first: float = 0.10  # the ratio shift to exceed before latency_ratio_runs clean runs exist
    latency_cpu_clock: bool = False  # also judge the control on CPU time (see docs/history.md: off, measured)
    latency_ratio_runs: int = 5  # clean runs before the scatter of the ratio is measured (t, 4 df)
    latency_ratio_robust: bool = False  # median and MAD of the earlier ratios (the confirmation's screen)
    latency_confirm_alpha: float = 0.01  # false-alarm rate of a confirmation by re-runs (sequential.py)


@dataclass(frozen=True)
class Finding:
    """One metric that got worse than its threshold allows."""

    kind: str  # "latency" | "accuracy" | "fidelity"
    metric: str
    baseline: float
    current: float
    threshold: float
    detail: str
    relative: float | None = None  # latency against the within-run control: the relative slowdown it shows


@dataclass(frozen=True)
class LatencySummary:
    median: float
    sigma: float
    samples: tuple[float, ...]

    @property
    def n(self) -> int:
        return len(self.samples)

    @property
    def se(self) -> float:
        return stats.MEDIAN_SE * self.sigma / math.sqrt(self.n) if self.n >= 2 else 0.0


def summarize_latency(doc: Doc, precision: str) -> LatencySummary | None:
    """Median and robust sigma from ``samples_ms``; older documents fall back to p50 and std. When the
    samples are a subsample (``timed_runs`` more than them) the median is the agent's ``p50_ms`` of every
    timed run: agents before 0.4.1 kept every k-th sample, and an even k over interleaved ABBA rounds kept
    only the runs that followed the same model (the demo's median 4-5% off, back and forth with k)."""
    samples = docs.latency_samples(doc, precision)
    entry = docs.latency(doc, precision)
    if len(samples) >= 2:
        median = float(np.median(samples))
        p50, runs = docs.number(entry.get("p50_ms")), docs.number(entry.get("timed_runs"))
        if p50 is not None and p50 > 0 and runs is not None and runs > len(samples):
            median = p50
        return LatencySummary(median, stats.robust_sigma(samples), tuple(samples))
    p50 = docs.number(entry.get("p50_ms", entry.get("mean_ms")))
    if p50 is None:
        return None
    return LatencySummary(p50, docs.number(entry.get("std_ms")) or 0.0, ())


def latencies_comparable(base: Doc, cur: Doc) -> bool:
    """Emulated and real runs, runs with different thread counts, and runs timed differently (FP32 and INT8
    interleaved, agent 0.4, against one block after the other, older agents: missing means blocks) do
    not compare: the timing method alone moved the demo's INT8 p50 by +70%."""
    b, c = docs.section(base, "latency"), docs.section(cur, "latency")
    for field in ("emulated", "threads"):
        if b.get(field) is not None and c.get(field) is not None and b.get(field) != c.get(field):
            return False
    return bool(b.get("interleaved")) == bool(c.get("interleaved"))


def _noise(se: float, k: float, history_medians: Sequence[float], policy: Policy) -> tuple[float, str]:
    """k-sigma of the shift from sampling error and from the run-to-run noise measured on earlier runs.

    The medians of earlier runs scatter by their own sampling error plus the run-level offsets; only the
    excess over the sampling error is added (no double counting), with a Student-t factor for the few
    runs it was measured on.
    """
    sampling = k * se
    measured = stats.successive_noise(history_medians)
    excess = math.sqrt(max(0.0, measured ** 2 - se ** 2 / 2.0))
    runs = k_t = 0.0
    if excess > 0:
        k_t = stats.t_quantile(policy.latency_run_k, len(history_medians) - 1)
        runs = k_t * math.sqrt(2.0) * excess
    return math.hypot(sampling, runs), ("run-to-run noise" if runs > sampling else "sampling error")


def latency_threshold(base: LatencySummary, cur: LatencySummary, history_medians: Sequence[float],
                      policy: Policy) -> tuple[float, str]:
    """The threshold for the shift of medians, and the name of the noise scale that set it."""
    if base.n >= 2 and cur.n >= 2:
        jitter = stats.pooled_sigma(base.samples, cur.samples)
        se = stats.MEDIAN_SE * jitter * math.sqrt(1.0 / base.n + 1.0 / cur.n)
        k = stats.t_quantile(policy.latency_k, base.n + cur.n - 2)
    else:  # summaries only (older documents): no sampling error to speak of
        jitter, se, k = math.sqrt((base.sigma ** 2 + cur.sigma ** 2) / 2.0), 0.0, policy.latency_k
    noise, noise_name = _noise(se, k, history_medians, policy)
    terms = {
        noise_name: noise,
        "per-inference jitter": policy.latency_min_effect * jitter,
        "practical floor": policy.latency_min_relative * base.median,
        "absolute floor": policy.latency_min_absolute_ms,
    }
    name = max(terms, key=lambda t: terms[t])
    return terms[name], name


CLOCKS = ("cpu", "wall")  # the control's clocks: CPU time of the agent's process, wall time


def clock_median(doc: Doc, precision: str, clock: str) -> float | None:
    """A run's median latency of one precision on one clock (CPU: agent 0.4+)."""
    if clock == "wall":
        summary = summarize_latency(doc, precision)
        return summary.median if summary is not None else None
    return docs.number(docs.latency(doc, precision).get("cpu_p50_ms"))


def log_ratio(doc: Doc, clock: str = "wall") -> float | None:
    """log(median INT8 / median FP32) of one run on ``clock``, None without both."""
    i, f = clock_median(doc, "int8", clock), clock_median(doc, "fp32", clock)
    if i is None or f is None or i <= 0 or f <= 0:
        return None
    return math.log(i / f)


def controlled_shift(base: Doc, currents: Sequence[Doc], precision: str, history: Mapping[str, Sequence[float]],
                     policy: Policy) -> ControlShift | None:
    """The precision's slowdown against its within-run control, None when a run lacks either precision.

    Wall time; with ``policy.latency_cpu_clock`` also CPU time when the runs have it (either flags)."""
    if not policy.latency_control or "ratio" not in history:
        return None
    shifts = []
    for clock in CLOCKS if policy.latency_cpu_clock else ("wall",):
        base_ratio, current = log_ratio(base, clock), [log_ratio(d, clock) for d in currents]
        if base_ratio is None or None in current:
            continue
        shift = check_control([x for x in current if x is not None], base_ratio,
                              history.get(f"ratio.{clock}", ()), precision, policy)
        shifts.append(replace(shift, basis=f"{clock} time; {shift.basis}"))
    if not shifts:
        return None
    return max(shifts, key=lambda s: s.shift - s.threshold)


def check_latency(base: Doc, cur: Doc, precision: str, history_medians: Sequence[float] = (),
                  policy: Policy = Policy(), history: Mapping[str, Sequence[float]] | None = None,
                  reruns: Sequence[Doc] = ()) -> Finding | None:
    """A latency regression of ``cur`` against ``base`` for one precision, or None.

    ``history``: the noise history of the earlier clean runs (:func:`noise_history`; with its ratios, the
    within-run control applies); ``reruns``: re-measurements of the current run pooled with it."""
    b, c = summarize_latency(base, precision), summarize_latency(cur, precision)
    if b is None or c is None or b.median <= 0 or not latencies_comparable(base, cur):
        return None
    control = controlled_shift(base, [cur, *reruns], precision, history or {}, policy)
    if control is not None:
        return _controlled_finding(b, c, control, precision)
    threshold, basis = latency_threshold(b, c, history_medians, policy)
    shift = c.median - b.median
    if shift <= threshold:
        return None
    p_text = ""
    if min(b.n, c.n) >= policy.latency_min_samples:
        p_value = stats.mann_whitney_greater(stats.drop_spikes(c.samples), stats.drop_spikes(b.samples))
        if p_value >= policy.latency_alpha:
            return None
        p_text = f", Mann-Whitney p={p_value:.1g}"
    detail = (f"{precision.upper()} p50 latency {b.median:.4g} ms -> {c.median:.4g} ms "
              f"(+{100 * shift / b.median:.1f}%), above the noise threshold +{threshold:.3g} ms "
              f"({basis}{p_text})")
    return Finding("latency", f"latency.{precision}.p50_ms", b.median, c.median, threshold, detail)


def _controlled_finding(b: LatencySummary, c: LatencySummary, control: ControlShift,
                        precision: str) -> Finding | None:
    if not control.exceeded:  # whatever the board-wide level did: the INT8 speedup (or FP32's) dropped
        return None
    other = "FP32" if precision == "int8" else "INT8"
    pooled = f", {control.runs} runs pooled" if control.runs > 1 else ""
    detail = (f"{precision.upper()} p50 latency {b.median:.4g} ms -> {c.median:.4g} ms "
              f"(+{100 * (c.median / b.median - 1):.1f}%), +{100 * control.shift:.1f}% against {other} in the "
              f"same run{pooled}, above the threshold +{100 * control.threshold:.1f}% ({control.basis})")
    return Finding("latency", f"latency.{precision}.p50_ms", b.median, c.median, b.median * control.threshold,
                   detail, control.shift)  # the threshold in ms, as the relative one of the control


def accuracy_tolerance(cur: Doc, policy: Policy) -> float:
    if policy.accuracy_tolerance is not None:
        return policy.accuracy_tolerance
    value = docs.number(docs.section(cur, "accuracy").get("tolerance"))
    return value if value is not None and value > 0 else 0.5


def sampling_points(base: Doc, cur: Doc, base_value: float) -> float:
    """3 sigma of a binomial accuracy difference (points) when the two runs used different sample sets."""
    n1 = docs.number(docs.section(base, "accuracy").get("samples"))
    n2 = docs.number(docs.section(cur, "accuracy").get("samples"))
    if not n1 or not n2 or n1 == n2:
        return 0.0
    p = min(max(base_value / 100.0, 0.0), 1.0)
    return 300.0 * math.sqrt(p * (1 - p) * (1 / n1 + 1 / n2))


def check_accuracy(base: Doc, cur: Doc, policy: Policy = Policy()) -> list[Finding]:
    """Drops of chip accuracy and of chip-vs-PC top-1 agreement, in percentage points."""
    tolerance = accuracy_tolerance(cur, policy)
    pairs = [(f"accuracy.{f}", docs.accuracy(base, f), docs.accuracy(cur, f)) for f in ACCURACY_FIELDS]
    pairs += [(f"agreement.{p}", docs.agreement(base, p), docs.agreement(cur, p)) for p in AGREEMENT_PAIRS]
    found = []
    for metric, b, c in pairs:
        if b is None or c is None:
            continue
        threshold = max(tolerance, sampling_points(base, cur, b))
        if b - c > threshold:
            found.append(Finding("accuracy", metric, b, c, threshold,
                                 f"{metric} {b:.2f}% -> {c:.2f}% ({c - b:+.2f} points, "
                                 f"tolerance {threshold:.2f})"))
    return found


def capped_snr(value: float | None, cap: float) -> float | None:
    return None if value is None else min(value, cap)


def check_fidelity(base: Doc, cur: Doc, policy: Policy = Policy()) -> list[Finding]:
    """Drops of chip-vs-PC SNR per output, beyond ``snr_drop_db``."""
    found = []
    for output in sorted(set(docs.fidelity_outputs(base)) & set(docs.fidelity_outputs(cur))):
        for pair in SNR_PAIRS:
            b = capped_snr(docs.snr(base, output, pair), policy.snr_cap_db)
            c = capped_snr(docs.snr(cur, output, pair), policy.snr_cap_db)
            if b is None or c is None or b - c <= policy.snr_drop_db:
                continue
            metric = f"fidelity.{output}.{pair}.snr_db"
            found.append(Finding("fidelity", metric, b, c, policy.snr_drop_db,
                                 f"{output} {pair.replace('_', ' ')} SNR {b:.1f} dB -> {c:.1f} dB "
                                 f"(-{b - c:.1f} dB, tolerance {policy.snr_drop_db:g} dB)"))
    return found


CHANGE_FIELDS = docs.FINGERPRINT_FIELDS + ("kernel",)


def recorded_changes(base: Doc, cur: Doc) -> list[str]:
    """What the two documents record differently about the device (runtime version, OS, kernel, ...) and
    the INT8 model; the model, board and config are equal within a comparison."""
    b, c = docs.section(base, "device"), docs.section(cur, "device")
    changed = [name for name in CHANGE_FIELDS if b.get(name) != c.get(name)]
    if docs.section(base, "model").get("int8_sha256") != docs.section(cur, "model").get("int8_sha256"):
        changed.append("int8 model")
    return changed


def find_regressions(cur: Doc, base: Doc, history: Mapping[str, Sequence[float]] | None = None,
                     policy: Policy = Policy(), reruns: Sequence[Doc] = ()) -> list[Finding]:
    """Everything in ``cur`` that is worse than in ``base``.

    ``history`` maps a precision to the medians of earlier comparable runs (run-to-run noise), and
    ``"ratio.cpu"``/``"ratio.wall"`` to their log INT8/FP32 ratios (the within-run control); ``reruns``
    are re-measurements of the current run's latency, pooled with it (a confirmation). A latency
    shift between runs that record the same device, runtime and INT8 model is the board's run-to-run
    noise (load, temperature, frequency), not a regression to blame on a release: with
    ``policy.latency_needs_change`` it is not flagged, and it feeds the measured noise instead.
    """
    history = history or {}
    found = check_accuracy(base, cur, policy) + check_fidelity(base, cur, policy)
    if policy.latency_needs_change and not recorded_changes(base, cur):
        return found
    for precision in PRECISIONS:
        finding = check_latency(base, cur, precision, history.get(precision, ()), policy, history, reruns)
        if finding is not None:
            found.append(finding)
    return found


def noise_history(runs: Sequence[Doc]) -> dict[str, list[float]]:
    """Per precision, the latency medians of ``runs`` (oldest first) for run-to-run noise, and under
    ``"ratio"`` their log INT8/FP32 ratios (runs that timed both)."""
    out: dict[str, list[float]] = {}
    for precision in PRECISIONS:
        medians = [summarize_latency(run, precision) for run in runs]
        out[precision] = [m.median for m in medians if m is not None]
    out["ratio"] = []  # marks a history the within-run control may use
    for clock in CLOCKS:
        ratios = [log_ratio(run, clock) for run in runs]
        out[f"ratio.{clock}"] = [x for x in ratios if x is not None]
    return out


def first_appearance(findings: Sequence[Finding], base: Doc, later: Sequence[Doc],
                     history: Mapping[str, Sequence[float]] | None = None,
                     policy: Policy = Policy()) -> list[int]:
    """For each finding of the current run (the last of ``later``: the runs after the baseline, oldest
    first), the index in ``later`` where it appeared: the start of the unbroken streak of runs, ending at
    the current one, that all show it against ``base``."""
    shown = [{(f.kind, f.metric) for f in find_regressions(run, base, history, policy)}
             for run in later[:-1]]
    out = []
    for finding in findings:
        start = len(later) - 1
        while start > 0 and (finding.kind, finding.metric) in shown[start - 1]:
            start -= 1
        out.append(start)
    return out
