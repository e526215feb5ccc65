"""Sequential confirmation of a suspected latency regression: re-run until the evidence decides.

The statistic is each run's within-run control ``x = log(median INT8 / median FP32)`` (for an FP32
regression its negative, :mod:`xqhil.history.control`). On a shared board ``x`` of clean runs is not
normal: it sits in one of two states (INT8 suffers more than FP32 from a contended cache, so a run that
met mostly contention has a ratio some 15-20% above one that did not), so a few earlier runs give a
wide standard deviation and a mean pulled by one odd run. The decision therefore uses ranks and medians:

1. **Screen** (the run alone, no extra cost): the run is suspected when its ``x`` is above the median of
   the ``n`` earlier clean runs by more than ``max(SUSPECT_K * s * sqrt(1 + 1/n), floor)``, ``s`` the
   robust sigma (MAD) of those runs: the board's own scatter.
2. **Re-runs**, one at a time, up to a budget ``B``: the ``m`` current runs (the run and its re-runs) are
   compared with the ``n`` earlier ones by the exact one-sided Mann-Whitney rank-sum test (no
   assumption on the distribution of ``x``, exact for any ``n`` and ``m``: under no change every ordering
   of the ``n + m`` ratios is equally likely).

   * flag at a *look* (``m`` = 1 + ceil(B/2) and 1 + B) when ``p <= alpha / looks`` and the median of
     the current runs is above the earlier runs' median by more than ``EFFECT_K`` (2) standard deviations
     of the earlier runs' ``x`` times ``sqrt(1 + 1/n)``, and at least ``floor``. The rank test alone
     assumes the re-runs meet the board as the earlier runs did; but consecutive re-runs share the
     board's state of the moment (which program shares the cache), and on the 2-core build machine at
     load 10-17 that moved the ratio of all re-runs by 4-9% together (2 of 40 clean runs flagged by ranks
     alone). The effect size asks for a shift beyond the swings the board's history itself showed in
     the direction of the shift (:func:`swings`: a run far below the others, in a faster state, is left
     out of that SD);
   * clear early when, from 3 runs on, the current runs' median is back within the screen's threshold
     (no longer suspicious), or when no remaining look can reach its level even if every further re-run
     ranked above every earlier run;
   * clear when the budget is spent.

The false-alarm rate over both stages is at most ``alpha``: a flag needs the final rank test to reject at
``alpha / looks`` at one of the looks (Bonferroni over the looks), and the screen and the early clears only
remove flags. Clean runs stay cheap: most are not suspected; a suspected clean run usually clears after 2
re-runs. With a budget that cannot reach ``alpha`` (fewer than 5 earlier runs, or fewer than 4 re-runs),
:func:`plan` is None and the caller falls back to the pooled rule of :mod:`xqhil.history.control`.
"""
from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from functools import lru_cache

import numpy as np

from xqhil.history import stats

SUSPECT_K = 1.0  # robust z-score of the screen (t-corrected for the few earlier runs)
FUTILITY_RUNS = 3  # from this many current runs on, a median back under the screen clears
EFFECT_K = 2.0  # a flag needs the shift beyond this many standard deviations of the earlier runs' ratio
FASTER_K = 3.0  # an earlier run this many robust sigmas below their median does not widen that SD


@lru_cache(maxsize=None)
def _orderings(n: int, m: int, u: int) -> int:
    """How many orderings of n earlier and m current values give a rank-sum statistic U = u."""
    if u < 0:
        return 0
    if n == 0 or m == 0:
        return 1 if u == 0 else 0
    return _orderings(n - 1, m, u - m) + _orderings(n, m - 1, u)


def rank_p(n: int, m: int, u: float) -> float:
    """Exact P(U >= u) under no change (ties counted half, rounded down: conservative)."""
    total = math.comb(n + m, n)
    return sum(_orderings(n, m, k) for k in range(max(0, math.floor(u)), n * m + 1)) / total


def u_statistic(current: Sequence[float], earlier: Sequence[float]) -> float:
    """Mann-Whitney U of ``current`` over ``earlier``: pairs where the current value is larger (ties 1/2)."""
    return float(sum((c > e) + 0.5 * (c == e) for c in current for e in earlier))


@dataclass(frozen=True)
class Plan:
    """Where a flag may be decided (numbers of current runs) and the level of each look."""

    looks: tuple[int, ...]
    alpha: float  # per look


def plan(n: int, budget: int, alpha: float) -> Plan | None:
    """Looks at 1 + ceil(B/2) and 1 + B current runs, alpha split evenly; a look that cannot reach its
    level even with every current run above every earlier one is dropped. None: no look can."""
    looks = sorted({1 + max(1, math.ceil(budget / 2)), 1 + budget}) if budget > 0 else []
    while looks and rank_p(n, looks[0], n * looks[0]) > alpha / len(looks):
        looks.pop(0)
    if not looks or n < 1:
        return None
    return Plan(tuple(looks), alpha / len(looks))


@dataclass(frozen=True)
class Screen:
    """The earlier runs' level and scatter, and the shift that makes a run suspect."""

    center: float  # median of the earlier runs' x
    sigma: float  # robust sigma of the earlier runs' x (the board's own scatter)
    threshold: float  # log shift


def screen(earlier: Sequence[float], floor: float, k: float = SUSPECT_K) -> Screen:
    """The suspicion threshold for one run against ``earlier`` (signed log ratios, at least 2)."""
    n = len(earlier)
    sigma = stats.robust_sigma(earlier)
    spread = stats.t_quantile(k, n - 1) * sigma * math.sqrt(1.0 + 1.0 / n)
    return Screen(float(np.median(earlier)), sigma, max(spread, math.log1p(floor)))


def swings(earlier: Sequence[float], k: float = FASTER_K) -> tuple[float, int]:
    """The standard deviation of the earlier runs' ``x`` (the swings a flag must exceed), leaving out runs
    more than ``k`` robust sigmas *below* their median: a run in a faster state of the board (on the quiet
    2-core build machine the demo's ratio fell 13-15% for a run in ten) shows how low a clean ratio can go,
    not how high, and one such run among 5 doubled the SD and hid a third of the 20% slowdowns. Runs
    above the median always count (a slower state is the swing a slowdown must beat). (SD, runs left out)"""
    values = np.asarray(earlier, dtype=float)
    center, sigma = float(np.median(values)), stats.robust_sigma(values)
    kept = values[values >= center - k * sigma] if sigma > 0 else values
    kept = kept if kept.size >= 3 else values
    return float(np.std(kept, ddof=1)), values.size - kept.size


@dataclass(frozen=True)
class Step:
    """What the evidence so far decides: ``flag``, ``clear`` or ``more`` (measure again)."""

    verdict: str
    detail: str
    runs: int
    p_value: float | None = None
    shift: float = 0.0  # relative: median of the current runs against the earlier runs' median


def _pct(log_shift: float) -> str:
    return f"{100 * math.expm1(log_shift):+.1f}%"


def decide(earlier: Sequence[float], current: Sequence[float], budget: int, alpha: float, floor: float,
           what: str = "ratio") -> Step:
    """One step of the sequential confirmation. ``earlier``: the clean runs' signed log ratios;
    ``current``: the run's and its re-runs' so far (the run first); ``budget``: re-runs allowed."""
    n, m = len(earlier), len(current)
    steps = plan(n, budget, alpha)
    if steps is None:
        raise ValueError(f"the rank test cannot reach {alpha:g} with {n} earlier runs and {budget} re-runs")
    scr = screen(earlier, floor)
    shift = float(np.median(current)) - scr.center
    u = u_statistic(current, earlier)
    p = rank_p(n, m, u)
    head = (f"{m} runs (this run and {m - 1} re-runs) against {n} earlier clean runs: median {what} "
            f"{_pct(shift)}, exact rank test U={u:g} of {n * m}, p={p:.2g}")
    sd, faster = swings(earlier)
    effect = max(math.log1p(floor), EFFECT_K * sd * math.sqrt(1.0 + 1.0 / n))
    left_out = f" but {faster} in a faster state" if faster else ""
    size = f"{_pct(effect)} ({EFFECT_K:g} SD of the earlier runs' {what}{left_out}, at least {floor:.0%})"
    level = f"{steps.alpha:.2g} ({alpha:.2%} over {len(steps.looks)} looks)"
    text = head
    if m in steps.looks and p <= steps.alpha:
        if shift > effect:
            return Step("flag", f"{head} <= {level}, and the shift above {size}", m, p, math.expm1(shift))
        text = f"{head} <= {level}, but the shift is not above {size}"
    elif m in steps.looks:
        text = f"{head}, not <= {level}"
    if m >= FUTILITY_RUNS and shift <= scr.threshold:
        return Step("clear", f"{text}; back within the suspicion threshold {_pct(scr.threshold)} (robust "
                             f"sigma {100 * scr.sigma:.1f}% of the earlier runs)", m, p, math.expm1(shift))
    later = [look for look in steps.looks if look > m]
    best = [rank_p(n, look, u + n * (look - m)) for look in later]
    if not later or min(best) > steps.alpha:
        why = "the budget is spent" if m >= 1 + budget else f"no later look can reach {level}"
        return Step("clear", f"{text}; {why}", m, p, math.expm1(shift))
    return Step("more", head, m, p, math.expm1(shift))
