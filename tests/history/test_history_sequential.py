"""The sequential confirmation of a latency regression (xqhil/history/sequential.py): the exact rank test,
its looks, and the two-stage procedure's false-alarm and detection rates on stated synthetic noise and on
real recorded INT8/FP32 ratio series. Nothing here times anything: the series are data."""
from __future__ import annotations

import math

import numpy as np
import pytest
from history_testlib import make_doc

from xqhil.history import confirm, format_summary, record_and_check
from xqhil.history import sequential as S

FLOOR = 0.02
ALPHA = 0.01

# log(median INT8 / median FP32) of real runs of the demo model on this project's host board (agent 0.4,
# interleaved, min_time_s 1), one agent visit each, measured alternately clean and with the faults fixture's
# slow-int8:20, 2 cores shared by 5 sessions, load average 3.6-6.2.
HOST_CLEAN = [0.8011, 0.8954, 0.8331, 0.8564, 0.842, 0.8193, 0.8763, 0.901, 0.9221, 0.8899, 0.9379, 0.8394,
              0.8033, 0.963]
HOST_SLOW20 = [1.0263, 1.0024, 1.0472, 1.0467, 1.0682, 1.0571, 1.0177, 1.0416, 1.0926, 1.0929, 1.0464,
               1.0395, 1.0178, 1.0348]
# The same bench at load average 12.6-32 (the previous stop): clean and board-wide +30% runs, two states
# (0.64-0.71 and 0.77-0.89) mixed.
LOADED_CLEAN = [0.6475, 0.8521, 0.8248, 0.7128, 0.6449, 0.8925, 0.8252, 0.7937, 0.8666, 0.7889, 0.6725, 0.6728,
                0.8347, 0.6853, 0.8212, 0.8447, 0.8397, 0.8301, 0.8185, 0.7673]


def test_rank_p_is_the_exact_mann_whitney_tail():
    assert S.rank_p(5, 5, 25) == pytest.approx(1 / math.comb(10, 5))  # every current run above every earlier
    assert S.rank_p(5, 9, 0) == 1.0
    assert sum(S._orderings(5, 9, u) for u in range(46)) == math.comb(14, 5)
    assert S.rank_p(5, 5, 23.5) == S.rank_p(5, 5, 23)  # a tie counts half, rounded down: conservative
    assert S.u_statistic([2.0, 3.0], [1.0, 2.0, 4.0]) == 1 + 0.5 + 2


def test_plan_splits_alpha_over_the_looks_that_can_reach_it():
    assert S.plan(5, 8, ALPHA) == S.Plan((5, 9), ALPHA / 2)
    assert S.plan(5, 4, ALPHA) == S.Plan((5,), ALPHA)  # 3 runs cannot reach 0.5%: one look at 1%
    assert S.plan(5, 2, ALPHA) is None  # 3 runs against 5 reach 1/56 at best
    assert S.plan(4, 8, ALPHA) == S.Plan((9,), ALPHA)


def run_procedure(earlier, stream, budget=8):
    """The two stages as confirm.py runs them: the screen, then one re-run at a time. (flagged, re-runs)"""
    scr = S.screen(earlier, FLOOR)
    current = [next(stream)]
    if current[0] - scr.center <= scr.threshold:
        return False, 0
    while True:
        step = S.decide(earlier, current, budget, ALPHA, FLOOR)
        if step.verdict != "more":
            return step.verdict == "flag", len(current) - 1
        current.append(next(stream))


def rates(make_clean, shift, trials=1000, seed=7):
    """False alarms, detections and mean re-runs (clean, shifted) of the procedure on ``make_clean(rng, k)``."""
    rng = np.random.default_rng(seed)
    fa = hit = cost_clean = cost_slow = 0
    for _ in range(trials):
        earlier = list(make_clean(rng, 5))
        flagged, cost = run_procedure(earlier, iter(make_clean(rng, 9)))
        fa, cost_clean = fa + flagged, cost_clean + cost
        flagged, cost = run_procedure(earlier, iter(make_clean(rng, 9) + shift))
        hit, cost_slow = hit + flagged, cost_slow + cost
    return fa / trials, hit / trials, cost_clean / trials, cost_slow / trials


def normal(sigma):
    return lambda rng, k: rng.normal(0.8, sigma, k)


def two_state(sigma, other, rate):
    """Most runs near 0.8 (sigma), a fraction ``rate`` in another state ``other`` away (log ratio)."""
    return lambda rng, k: rng.normal(0.8, sigma, k) + other * (rng.random(k) < rate)


@pytest.mark.parametrize("sigma", [0.02, 0.05])
def test_normal_noise_false_alarms_at_most_one_percent_and_twenty_percent_found(sigma):
    fa, hit, cost_clean, cost_slow = rates(normal(sigma), math.log(1.2))
    assert fa <= ALPHA
    assert hit >= 0.95
    assert cost_clean < 1.0 and cost_slow <= 8  # a clean run costs under one re-run on average


@pytest.mark.parametrize("other", [-0.15, 0.15])
def test_two_state_noise_of_a_shared_board(other):
    """Clean runs near one level (2% scatter) with one run in five in another state 15% off, below or
    above: no false alarm beyond 1%. A slowed run in the low state is only 3% above the usual level, so
    the screen lets some through: about 87% of 20% slowdowns are found under this model (the limit the
    docs state), against 50-70% with the mean and SD of the earlier rule on the loaded machine."""
    fa, hit, _, _ = rates(two_state(0.02, other, 0.2), math.log(1.2))
    assert fa <= ALPHA
    assert hit >= 0.85


def resampled(clean, slow, trials=1500, seed=3):
    """Real series: 5 earlier runs drawn from ``clean`` without replacement, the current runs a permutation
    of the rest (clean: exchangeable, so the rank test's level holds exactly) or of ``slow``."""
    rng = np.random.default_rng(seed)
    fa = hit = 0
    for _ in range(trials):
        order = rng.permutation(clean)
        earlier, rest = list(order[:5]), list(order[5:])
        fa += run_procedure(earlier, iter(rest + rest))[0]
        if slow:
            hit += run_procedure(earlier, iter(rng.permutation(slow)))[0]
    return fa / trials, hit / trials


def test_real_host_series_at_load_4_to_6():
    fa, hit = resampled(HOST_CLEAN, HOST_SLOW20)
    assert fa <= ALPHA and hit >= 0.95


def test_real_series_at_load_20_raise_no_false_alarm():
    """At load 13-32 the clean ratio sits in two states 15-20% apart: no false alarm (detection is lower
    there, docs/history.md)."""
    fa, _ = resampled(LOADED_CLEAN, None)
    assert fa <= ALPHA


def test_decide_names_its_evidence():
    earlier = [0.83, 0.85, 0.80, 0.88, 0.84]
    flag = S.decide(earlier, [1.02, 1.04, 1.03, 1.05, 1.01], 8, ALPHA, FLOOR, "INT8 ratio (wall time)")
    assert flag.verdict == "flag" and flag.runs == 5 and flag.p_value == pytest.approx(1 / 252)
    assert "5 runs (this run and 4 re-runs) against 5 earlier clean runs" in flag.detail
    assert "exact rank test U=25 of 25" in flag.detail and "1% over 2 looks" in flag.detail
    back = S.decide(earlier, [0.90, 0.84, 0.83], 8, ALPHA, FLOOR)
    assert back.verdict == "clear" and "back within the suspicion threshold" in back.detail
    spent = S.decide(earlier, [0.9, 0.95, 0.84, 0.95, 0.86, 0.95, 0.83, 0.95, 0.85], 8, ALPHA, FLOOR)
    assert spent.verdict == "clear" and "the budget is spent" in spent.detail
    assert S.decide(earlier, [0.95], 8, ALPHA, FLOOR).verdict == "more"


def test_a_small_shift_with_perfect_ranks_is_not_flagged_under_the_floor():
    earlier = [0.800, 0.801, 0.802, 0.803, 0.804]
    step = S.decide(earlier, [0.81] * 5, 8, ALPHA, FLOOR)
    assert step.p_value <= ALPHA / 2 and step.verdict != "flag"


def measurer(docs):
    """A confirmation's measure: the next of ``docs`` (what the board would time), counting the calls."""
    it = iter(docs)
    calls = []

    def measure(python):
        calls.append(python)
        return next(it)

    return measure, calls


def clean_history(tmp_path, ratios=(12.0, 12.2, 11.8, 12.1, 11.9)):
    db = tmp_path / "h.sqlite3"
    for seed, int8 in enumerate(ratios):
        record_and_check(make_doc(seed=seed, int8_ms=int8, n=100, jitter=0.01), db)
    return db


def test_record_and_check_flags_after_four_reruns_and_says_which_evidence_decided(tmp_path):
    db = clean_history(tmp_path)
    slow = [make_doc(runtime="1.21.0", int8_ms=14.4, seed=20 + i, n=100, jitter=0.01) for i in range(9)]
    measure, calls = measurer(slow[1:])
    summary = record_and_check(slow[0], db, confirmer=confirm.Confirmer(measure))
    [finding] = summary["regressions"]
    assert len(calls) == 4  # the first look decides: no more re-runs than needed
    assert "confirmed, decided by re-runs: 5 runs (this run and 4 re-runs)" in finding["message"]
    decision = slow[0]["latency"]["confirmation"]["decisions"]["latency.int8.p50_ms"]
    assert decision["runs"] == 5 and decision["p_value"] <= ALPHA / 2


def test_a_transient_slowdown_clears_after_two_reruns(tmp_path):
    db = clean_history(tmp_path)
    doc = make_doc(runtime="1.21.0", int8_ms=14.4, seed=30, n=100, jitter=0.01)
    measure, calls = measurer([make_doc(runtime="1.21.0", seed=31 + i, n=100, jitter=0.01) for i in range(8)])
    summary = record_and_check(doc, db, confirmer=confirm.Confirmer(measure))
    assert summary["regressions"] == [] and len(calls) == 2
    [note] = summary["unconfirmed"]
    assert note["by"] == "re-runs" and "back within the suspicion threshold" in note["message"]


def test_a_clean_run_is_not_measured_again(tmp_path):
    db = clean_history(tmp_path)
    measure, calls = measurer([])
    summary = record_and_check(make_doc(runtime="1.21.0", seed=40, n=100, jitter=0.01), db,
                               confirmer=confirm.Confirmer(measure))
    assert summary["regressions"] == [] and calls == []
    assert "latency: decided by this run alone: " in format_summary(summary)
    assert "within the suspicion threshold" in summary["latency_evidence"]
    same = record_and_check(make_doc(runtime="1.21.0", seed=41, n=100, jitter=0.01), db)
    assert same["latency_evidence"].startswith("not compared: nothing recorded changed since the baseline")


def test_short_history_falls_back_to_the_pooled_rule(tmp_path):
    db = clean_history(tmp_path, ratios=(12.0, 12.1))
    slow = [make_doc(runtime="1.21.0", int8_ms=14.4, seed=50 + i, n=100, jitter=0.01) for i in range(5)]
    measure, calls = measurer(slow[1:])
    [finding] = record_and_check(slow[0], db, confirmer=confirm.Confirmer(measure, reruns=4))["regressions"]
    assert len(calls) == 4 and "decided by re-runs: 5 runs pooled" in finding["message"]
