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
ALPHA = 0.01  # false alarms over both directions (INT8 slower, FP32 slower): 0.5% each, as confirm.py splits it
BUDGET = confirm.Confirmer(lambda python: {}).reruns  # the default budget of re-runs (10)

# log(median INT8 / median FP32) of real runs of the demo model on this project's host board (agent 0.4,
# interleaved, min_time_s 1), one agent visit each, measured alternately clean and with the faults fixture's
# slow-int8:20, 2 cores shared by 5 sessions, load average 3.6-6.2.
HOST_CLEAN = [0.8011, 0.8954, 0.8331, 0.8564, 0.842, 0.8193, 0.8763, 0.901, 0.9221, 0.8899, 0.9379, 0.8394,
              0.8033, 0.963]
HOST_SLOW20 = [1.0263, 1.0024, 1.0472, 1.0467, 1.0682, 1.0571, 1.0177, 1.0416, 1.0926, 1.0929, 1.0464,
               1.0395, 1.0178, 1.0348]
# The same, 70 pairs in the order measured, at load average 13.7-17.1 (kept in time order: consecutive
# runs share the board's state, as a confirmation's re-runs do).
LOADED_CLEAN = [
    0.8399, 0.8554, 0.7971, 0.8353, 0.8134, 0.7854, 0.7549, 0.8223, 0.8141, 0.7432, 0.8246, 0.8146, 0.7305,
    0.8122, 0.8157, 0.8416, 0.8082, 0.8552, 0.8238, 0.841, 0.8364, 0.8735, 0.7692, 0.818, 0.8096, 0.8321,
    0.8658, 0.848, 0.8264, 0.8298, 0.8049, 0.8303, 0.8138, 0.9025, 0.8718, 0.8399, 0.7738, 0.7776, 0.7736,
    0.7658, 0.8031, 0.8343, 0.826, 0.7548, 0.7731, 0.8451, 0.8285, 0.8159, 0.8198, 0.8347, 0.837, 0.752, 0.8532,
    0.8487, 0.7912, 0.8304, 0.8286, 0.8071, 0.7789, 0.8402, 0.8243, 0.8483, 0.7817, 0.8738, 0.8469, 0.7671,
    0.8195, 0.8274, 0.8483, 0.7356]
LOADED_SLOW20 = [
    1.0257, 0.9575, 1.0034, 0.9703, 1.0278, 1.0232, 1.0264, 1.0263, 0.9619, 1.028, 1.0594, 0.945, 1.0478,
    1.0677, 1.0173, 1.1087, 0.989, 1.0279, 1.0314, 0.9965, 1.0435, 1.0192, 1.0022, 1.0327, 1.0469, 1.0259,
    1.0049, 1.0462, 1.0028, 0.8803, 1.0588, 1.0131, 1.0297, 1.0955, 1.0341, 0.9832, 0.9966, 0.964, 1.0183,
    1.0082, 1.0019, 0.9974, 0.9829, 0.9204, 0.9924, 1.0312, 0.9915, 1.0134, 1.035, 0.9638, 1.0489, 0.9646,
    1.0184, 1.0549, 1.0295, 1.0508, 1.0066, 1.0297, 0.9226, 1.0575, 1.0329, 0.9741, 1.0169, 1.0622, 0.8757,
    1.0063, 0.9838, 1.0256, 0.9595, 0.9856]
# The demo on the host board on a quiet machine (no other session, load 1.0-1.8, --threads 1, min_time_s 1):
# one clean run in fifteen sat in a faster state of the board (0.65: the ratio 15% lower).
QUIET_CLEAN = [0.6522, 0.8157, 0.8238, 0.8292, 0.8273, 0.8447, 0.8219, 0.8123, 0.8404, 0.8767, 0.8372, 0.8399,
               0.8342, 0.8386, 0.8111]
QUIET_SLOW20 = [0.9455, 0.9218, 1.03, 1.0499, 0.9578, 0.9496, 1.0182, 1.013, 1.0094, 1.0439, 1.0049, 1.0255,
                1.0382, 1.0188, 1.0352]
# The bench of the previous stop at load average 12.6-32: clean and board-wide +30% runs, two states
# (0.64-0.71 and 0.77-0.89) mixed.
MIXED_CLEAN = [0.6475, 0.8521, 0.8248, 0.7128, 0.6449, 0.8925, 0.8252, 0.7937, 0.8666, 0.7889, 0.6725, 0.6728,
               0.8347, 0.6853, 0.8212, 0.8447, 0.8397, 0.8301, 0.8185, 0.7673]


def test_rank_p_is_the_exact_mann_whitney_tail():
    assert S.rank_p(5, 5, 25) == pytest.approx(1 / math.comb(10, 5))  # every current run above every earlier
    assert S.rank_p(5, 9, 0) == 1.0
    assert sum(S._orderings(5, 9, u) for u in range(46)) == math.comb(14, 5)
    assert S.rank_p(5, 5, 23.5) == S.rank_p(5, 5, 23)  # a tie counts half, rounded down: conservative
    assert S.u_statistic([2.0, 3.0], [1.0, 2.0, 4.0]) == 1 + 0.5 + 2


def test_plan_splits_alpha_over_the_looks_that_can_reach_it():
    assert S.plan(5, 10, ALPHA / 2) == S.Plan((6, 11), ALPHA / 4)  # the default: 0.5% a direction
    assert S.plan(5, 8, ALPHA) == S.Plan((5, 9), ALPHA / 2)
    assert S.plan(5, 4, ALPHA) == S.Plan((5,), ALPHA)  # 3 runs cannot reach 0.5%: one look at 1%
    assert S.plan(5, 2, ALPHA) is None  # 3 runs against 5 reach 1/56 at best
    assert S.plan(4, 8, ALPHA) == S.Plan((9,), ALPHA)


def one_direction(earlier, stream):
    """The two stages as confirm.py runs them for one direction: the screen, then one re-run at a time.
    (flagged, re-runs)"""
    scr = S.screen(earlier, FLOOR)
    current = [next(stream)]
    if current[0] - scr.center <= scr.threshold:
        return False, 0
    while True:
        step = S.decide(earlier, current, BUDGET, ALPHA / 2, FLOOR)
        if step.verdict != "more":
            return step.verdict == "flag", len(current) - 1
        current.append(next(stream))


def run_procedure(earlier, stream):
    """Flagged in either direction (INT8 or FP32 slower against the other), and the re-runs it took."""
    values = list(stream)
    up = one_direction(list(earlier), iter(values))
    down = one_direction([-x for x in earlier], iter([-x for x in values]))
    return up[0] or down[0], max(up[1], down[1])  # both directions judge the same re-runs


def rates(make_clean, shift, trials=1000, seed=7):
    """False alarms, detections and mean re-runs (clean, shifted) of the procedure on ``make_clean(rng, k)``."""
    rng = np.random.default_rng(seed)
    fa = hit = cost_clean = cost_slow = 0
    for _ in range(trials):
        earlier = list(make_clean(rng, 5))
        flagged, cost = run_procedure(earlier, make_clean(rng, BUDGET + 1))
        fa, cost_clean = fa + flagged, cost_clean + cost
        flagged, cost = run_procedure(earlier, make_clean(rng, BUDGET + 1) + shift)
        hit, cost_slow = hit + flagged, cost_slow + cost
    return fa / trials, hit / trials, cost_clean / trials, cost_slow / trials


def normal(sigma):
    return lambda rng, k: rng.normal(0.8, sigma, k)


def two_state(sigma, other, rate):
    """Most runs near 0.8 (sigma), a fraction ``rate`` in another state ``other`` away (log ratio)."""
    return lambda rng, k: rng.normal(0.8, sigma, k) + other * (rng.random(k) < rate)


@pytest.mark.parametrize("sigma, found", [(0.02, 0.95), (0.05, 0.90)])
def test_normal_noise_false_alarms_at_most_one_percent_and_twenty_percent_found(sigma, found):
    """Normal run-to-run noise of the ratio (s.d. 2% and 5%): false alarms within 1% in both directions
    together; a 20% INT8 slowdown found in 100% and 93% of trials; a clean run costs about one re-run."""
    fa, hit, cost_clean, cost_slow = rates(normal(sigma), math.log(1.2))
    assert fa <= ALPHA
    assert hit >= found
    assert cost_clean < 1.5 and cost_slow <= BUDGET


@pytest.mark.parametrize("other", [-0.15, 0.15])
def test_two_state_noise_of_a_shared_board(other):
    """Clean runs near one level (2% scatter) with one run in five in another state 15% off, below or
    above: no false alarm beyond 1%. The odd state widens the earlier runs' SD (the effect size a flag
    needs), and a slowed run in the low state is only 3% above the usual level: about 75% of 20%
    slowdowns are found under this model (the limit the docs state)."""
    fa, hit, _, _ = rates(two_state(0.02, other, 0.2), math.log(1.2))
    assert fa <= ALPHA
    assert hit >= 0.70


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


def test_a_faster_state_run_in_the_history_does_not_hide_a_slowdown():
    """Quiet host: with the one faster-state run among the 5 earlier ones, the SD of all 5 asked for a
    shift of +18% and missed 6% of the 20% slowdowns (a third in the bench's time-ordered histories); runs
    far below the median do not widen the effect size, runs above it still do."""
    fa, hit = resampled(QUIET_CLEAN, QUIET_SLOW20)
    assert fa <= ALPHA and hit >= 0.99
    earlier = [0.6522, 0.8157, 0.8238, 0.8292, 0.8273]
    assert S.swings(earlier) == (pytest.approx(np.std(earlier[1:], ddof=1)), 1)
    assert S.swings([-x for x in earlier])[1] == 0  # the same run is a slower state for the other direction


def test_real_series_in_time_order_at_load_14_to_17():
    """Sliding windows over the runs as measured: 5 clean runs, then the next ones as the run and its
    re-runs (clean: a false alarm if flagged; slowed 20%: a detection), so the re-runs share the board's
    state of the moment as a real confirmation's do."""
    windows = range(len(LOADED_CLEAN) - 5 - (BUDGET + 1))
    fa = sum(run_procedure(LOADED_CLEAN[i:i + 5], LOADED_CLEAN[i + 5:i + 6 + BUDGET])[0] for i in windows)
    hit = sum(run_procedure(LOADED_CLEAN[i:i + 5], LOADED_SLOW20[i + 5:i + 6 + BUDGET])[0] for i in windows)
    assert fa == 0 and hit >= 0.95 * len(windows)


def test_real_two_state_series_at_load_20_raise_no_false_alarm():
    """At load 13-32 the clean ratio sat in two states 15-20% apart: no false alarm (detection is lower
    there, docs/history.md)."""
    fa, _ = resampled(MIXED_CLEAN, None)
    assert fa <= ALPHA


def test_decide_names_its_evidence():
    earlier = [0.83, 0.85, 0.80, 0.88, 0.84]
    flag = S.decide(earlier, [1.02, 1.04, 1.03, 1.05, 1.01], 8, ALPHA, FLOOR, "INT8 ratio (wall time)")
    assert flag.verdict == "flag" and flag.runs == 5 and flag.p_value == pytest.approx(1 / 252)
    assert "5 runs (this run and 4 re-runs) against 5 earlier clean runs" in flag.detail
    assert "exact rank test U=25 of 25" in flag.detail and "1.00% over 2 looks" in flag.detail
    assert "2 SD of the earlier runs' INT8 ratio (wall time)" in flag.detail
    back = S.decide(earlier, [0.90, 0.84, 0.83], 8, ALPHA, FLOOR)
    assert back.verdict == "clear" and "back within the suspicion threshold" in back.detail
    spent = S.decide(earlier, [0.9, 0.95, 0.84, 0.95, 0.86, 0.95, 0.83, 0.95, 0.85], 8, ALPHA, FLOOR)
    assert spent.verdict == "clear" and "the budget is spent" in spent.detail
    assert S.decide(earlier, [0.95], 8, ALPHA, FLOOR).verdict == "more"


def test_runs_that_rank_above_but_within_the_history_swings_are_not_flagged():
    """Re-runs share the board's state: all of them can rank above 5 quiet earlier runs by a few percent
    (measured: +4% and +9% on clean runs at load 10-17). The shift must also exceed 2 SD of the earlier
    runs' ratio."""
    earlier = [0.80, 0.84, 0.78, 0.86, 0.82]  # SD 3.2%
    step = S.decide(earlier, [0.87, 0.88, 0.87, 0.89, 0.88], 8, ALPHA, FLOOR)
    assert step.p_value <= ALPHA / 2 and step.verdict != "flag"
    assert S.decide(earlier, [0.99, 1.0, 0.98, 1.01, 1.0], 8, ALPHA, FLOOR).verdict == "flag"


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


def test_record_and_check_flags_after_five_reruns_and_says_which_evidence_decided(tmp_path):
    db = clean_history(tmp_path)
    slow = [make_doc(runtime="1.21.0", int8_ms=14.4, seed=20 + i, n=100, jitter=0.01) for i in range(11)]
    measure, calls = measurer(slow[1:])
    summary = record_and_check(slow[0], db, confirmer=confirm.Confirmer(measure))
    [finding] = summary["regressions"]
    assert len(calls) == 5  # the first look (6 runs, 0.25%) decides: no more re-runs than needed
    assert "confirmed, decided by re-runs: 6 runs (this run and 5 re-runs)" in finding["message"]
    decision = slow[0]["latency"]["confirmation"]["decisions"]["latency.int8.p50_ms"]
    assert decision["runs"] == 6 and decision["p_value"] <= ALPHA / 4


def test_a_transient_slowdown_clears_after_two_reruns(tmp_path):
    db = clean_history(tmp_path)
    doc = make_doc(runtime="1.21.0", int8_ms=14.4, seed=30, n=100, jitter=0.01)
    measure, calls = measurer([make_doc(runtime="1.21.0", seed=31 + i, n=100, jitter=0.01) for i in range(10)])
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
