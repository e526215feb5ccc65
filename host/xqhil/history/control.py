"""The within-run control of a latency check: INT8 latency measured against FP32 latency of the same run.

A board-wide slowdown (a busy neighbour, a lower clock, a hot chip) moves FP32 and INT8 alike; a slower
INT8 kernel moves INT8 alone. So the statistic is ``x = log(median INT8 / median FP32)`` of one run (for an
FP32 regression, its negative): the agent times FP32 and INT8 interleaved over at least
``verify_parameters.min_time_s``, so both meet the same load. It is taken on wall time; the CPU time of
the agent's process (agent 0.4+, ``cpu_p50_ms``) is recorded and judged too with
``Policy(latency_cpu_clock=True)`` (off by default: it raised false alarms on a ms-scale model under
heavy load, docs/history.md).

The ratio still moves from run to run (load hits INT8 and FP32 kernels unequally), so its shift is judged
against the scatter of the ratio over the earlier clean runs (the baseline and up to 9 before it):

* ``delta = mean(x of the current run and its re-runs) - mean(x of the n earlier runs)``;
* ``threshold = max(t(k, n - 1) * s * sqrt(1/m + 1/n), floor)`` with ``s`` the standard deviation of the
  earlier runs' ``x``, ``m`` the current run and its re-runs, ``t`` the Student-t quantile at the tail of
  the z-score ``k`` (few runs widen it);
* with ``latency_ratio_robust`` (the suspicion screen of a confirmation, :mod:`xqhil.history.sequential`):
  the median of the earlier runs and their robust sigma instead of the mean and standard deviation;
* with fewer than ``latency_ratio_runs`` earlier runs, ``s`` is unknown: the shift against the baseline
  must exceed ``latency_ratio_first`` (10%).
"""
from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

import numpy as np

from xqhil.history import sequential, stats

Doc = Mapping[str, Any]


class ControlPolicy(Protocol):
    latency_ratio_k: float
    latency_ratio_floor: float
    latency_ratio_first: float
    latency_ratio_runs: int
    latency_ratio_robust: bool


@dataclass(frozen=True)
class ControlShift:
    """How much a precision slowed down against its control, and what that must exceed."""

    shift: float  # relative change of the precision's latency against the other precision's
    threshold: float  # relative
    basis: str
    runs: int  # current runs pooled (the run and its re-runs)

    @property
    def exceeded(self) -> bool:
        return self.shift > self.threshold


def signed_ratio(log_ratio: float, precision: str) -> float:
    """The log ratio of ``precision`` over its control (INT8/FP32 for int8, FP32/INT8 for fp32)."""
    return log_ratio if precision == "int8" else -log_ratio


def check_control(current: Sequence[float], base: float, earlier: Sequence[float], precision: str,
                  policy: ControlPolicy) -> ControlShift:
    """``current``: log INT8/FP32 ratios of the run (and its re-runs); ``base``: the baseline's;
    ``earlier``: the earlier clean runs' (oldest first, the baseline among them)."""
    cur = [signed_ratio(x, precision) for x in current]
    n, m = len(earlier), len(cur)
    floor = math.log1p(policy.latency_ratio_floor)
    if n < max(3, policy.latency_ratio_runs):
        delta = float(np.mean(cur)) - signed_ratio(base, precision)
        return ControlShift(math.expm1(delta), max(policy.latency_ratio_first, policy.latency_ratio_floor),
                            f"first runs: {policy.latency_ratio_first:.0%} until {policy.latency_ratio_runs} "
                            f"clean runs exist", m)
    ref = [signed_ratio(x, precision) for x in earlier]
    if policy.latency_ratio_robust:  # the screen of a confirmation (sequential.py): median and MAD
        scr = sequential.screen(ref, policy.latency_ratio_floor, policy.latency_ratio_k)
        delta = float(np.median(cur)) - scr.center
        return ControlShift(math.expm1(delta), math.expm1(scr.threshold),
                            f"robust scatter of the ratio over {n} clean runs (suspicion level)", m)
    delta = float(np.mean(cur)) - float(np.mean(ref))
    spread = float(np.std(ref, ddof=1)) * math.sqrt(1.0 / m + 1.0 / n)
    threshold = max(stats.t_quantile(policy.latency_ratio_k, n - 1) * spread, floor)
    basis = (f"run-to-run scatter of the ratio over {n} clean runs" if threshold > floor
             else f"{policy.latency_ratio_floor:.0%} floor")
    return ControlShift(math.expm1(delta), math.expm1(threshold), basis, m)
