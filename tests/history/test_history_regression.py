"""Regression detection: noise must not alarm, real slowdowns and accuracy/fidelity drops must, and the
runtime version where a regression appeared is named."""
import math

import numpy as np
import pytest
from xqhil.history import RunStore, check_run, record_and_check, stats
from xqhil.history import check
from xqhil.history import regression as R
from history_testlib import make_doc, timed_samples


def _lat(samples):
    return {"latency": {"emulated": False, "threads": 4, "int8": {"samples_ms": list(samples)}}}


# ---- statistics ---------------------------------------------------------------------------------------

def test_average_ranks_share_ties():
    assert stats.average_ranks(np.array([3.0, 1.0, 3.0, 2.0])).tolist() == [3.5, 1.0, 3.5, 2.0]


def test_mann_whitney_matches_the_textbook_normal_approximation():
    # Fully separated samples of 10: U = 100, mean 50, sd sqrt(10*10*21/12) = 13.229.
    p = stats.mann_whitney_greater(np.arange(11, 21), np.arange(1, 11))
    assert p == pytest.approx(0.5 * math.erfc((100 - 50 - 0.5) / math.sqrt(175) / math.sqrt(2)))
    assert stats.mann_whitney_greater(np.arange(1, 11), np.arange(11, 21)) > 0.999
    assert stats.mann_whitney_greater([5.0] * 10, [5.0] * 10) == 1.0


def test_robust_sigma_ignores_outliers():
    rng = np.random.default_rng(0)
    x = rng.normal(10.0, 0.5, 400)
    spiked = np.concatenate([x, [60.0] * 12])
    assert stats.robust_sigma(x) == pytest.approx(0.5, rel=0.15)
    assert stats.robust_sigma(spiked) == pytest.approx(stats.robust_sigma(x), rel=0.1)
    assert np.std(spiked) > 5 * stats.robust_sigma(spiked)


def test_t_quantile_widens_for_few_samples():
    assert stats.t_quantile(4.0, 1e9) == pytest.approx(4.0)
    assert stats.t_quantile(4.0, 8) > 6.0  # few samples: much wider


# ---- latency: noise does not alarm, a real slowdown does ----------------------------------------------

@pytest.mark.parametrize("n, jitter", [(10, 0.03), (30, 0.05), (100, 0.02)])
def test_same_distribution_never_alarms(n, jitter):
    """Two runs from the same noisy distribution (log-normal jitter + 3% outliers), 300 seeds."""
    alarms = []
    for seed in range(300):
        rng = np.random.default_rng(seed)
        base, cur = (timed_samples(rng, 12.0, n, jitter) for _ in range(2))
        if R.check_latency(_lat(base), _lat(cur), "int8") is not None:
            alarms.append(seed)
    assert alarms == []


def test_run_to_run_offsets_are_absorbed_by_measured_history():
    """Boards drift between runs (1% sigma offsets); the medians of earlier runs measure that noise."""
    alarms = []
    for seed in range(300):
        rng = np.random.default_rng(seed)
        runs = [timed_samples(rng, 12.0, 30, 0.03, run_offset=0.01) for _ in range(9)]
        history = [float(np.median(r)) for r in runs[:-1]]
        if R.check_latency(_lat(runs[-2]), _lat(runs[-1]), "int8", history) is not None:
            alarms.append(seed)
    assert alarms == []


def test_a_subsampled_run_takes_its_median_from_every_timed_run():
    # samples_ms of an agent before 0.4.1 could hold only the runs after the same model (an even stride over
    # ABBA rounds): the median is the agent's p50_ms of all timed runs when the samples are a subsample
    doc = _lat([1.0] * 1000)
    doc["latency"]["int8"].update(p50_ms=1.05, timed_runs=2000)
    assert R.summarize_latency(doc, "int8").median == 1.05
    doc["latency"]["int8"]["timed_runs"] = 1000  # every run shown: its own median
    assert R.summarize_latency(doc, "int8").median == 1.0


def test_measured_run_to_run_noise_raises_the_threshold():
    rng = np.random.default_rng(1)
    base = R.summarize_latency(_lat(timed_samples(rng, 12.0, 30, 0.005)), "int8")
    cur = R.summarize_latency(_lat(timed_samples(rng, 12.0, 30, 0.005)), "int8")
    quiet, _ = R.latency_threshold(base, cur, [], R.Policy())
    noisy, basis = R.latency_threshold(base, cur, [12.0, 12.4, 11.7, 12.3, 11.8], R.Policy())
    assert noisy > 2 * quiet and basis == "run-to-run noise"


@pytest.mark.parametrize("n, jitter", [(10, 0.03), (30, 0.05), (100, 0.08)])
def test_twenty_percent_slowdown_always_alarms(n, jitter):
    missed = []
    for seed in range(100):
        rng = np.random.default_rng(seed)
        base, slow = timed_samples(rng, 12.0, n, jitter), timed_samples(rng, 14.4, n, jitter)
        finding = R.check_latency(_lat(base), _lat(slow), "int8")
        if finding is None:
            missed.append(seed)
        else:
            assert finding.metric == "latency.int8.p50_ms" and finding.current > finding.baseline
    assert missed == []


def test_microsecond_shift_of_a_fast_model_is_not_a_regression():
    """The second `make demo` on a busy machine: a 44 us model, a whole run 10 us (+23%) slower with
    tight per-inference jitter. Below the 20 us absolute floor: scheduling, not the model."""
    rng = np.random.default_rng(7)
    base, cur = timed_samples(rng, 0.0436, 50, 0.01), timed_samples(rng, 0.0537, 50, 0.01)
    assert R.check_latency(_lat(base), _lat(cur), "int8") is None
    threshold, basis = R.latency_threshold(R.summarize_latency(_lat(base), "int8"),
                                           R.summarize_latency(_lat(cur), "int8"), [], R.Policy())
    assert threshold == pytest.approx(0.02) and basis == "absolute floor"
    unfloored = R.Policy(latency_min_absolute_ms=0.0)
    assert R.check_latency(_lat(base), _lat(cur), "int8", policy=unfloored) is not None  # what it used to say
    slow = timed_samples(rng, 0.0700, 50, 0.01)  # +26 us: above the floor, still found
    assert R.check_latency(_lat(base), _lat(slow), "int8") is not None


def test_slowdown_with_nothing_recorded_changed_is_noise_not_a_regression(history_db):
    """Same device, runtime and INT8 model (a busy shared host): the run is slower, but there is no release
    to blame; it is not flagged, it becomes the baseline and its median feeds the measured run-to-run noise.
    A slowdown that comes with a runtime change is flagged."""
    db = history_db
    _record(db, runtime="1.20.1", seed=1)
    busy = _record(db, runtime="1.20.1", int8_ms=24.0, seed=2)  # 2x: a neighbour took the core
    assert busy["baseline_run"] == 1 and busy["regressions"] == []
    with RunStore.open(db, readonly=True) as store:
        assert [r.id for r in check.noise_runs(store, store.get(2), store.get(2))] == [1, 2]
    new_runtime = _record(db, runtime="1.21.0", int8_ms=40.0, seed=3)  # against run 2, the new baseline
    assert [r["metric"] for r in new_runtime["regressions"]] == ["latency.int8.p50_ms"]
    base, cur = make_doc(seed=1), make_doc(int8_ms=24.0, seed=2)
    assert R.recorded_changes(base, cur) == []
    assert R.find_regressions(cur, base) == []
    assert [f.metric for f in R.find_regressions(cur, base, policy=R.Policy(latency_needs_change=False))] == [
        "latency.int8.p50_ms"]
    cur["device"]["kernel"] = "6.6.40"
    assert R.recorded_changes(base, cur) == ["kernel"] and len(R.find_regressions(cur, base)) == 1


def test_speedup_is_not_a_regression():
    rng = np.random.default_rng(3)
    assert R.check_latency(_lat(timed_samples(rng, 12.0)), _lat(timed_samples(rng, 9.0)), "int8") is None


def test_summary_only_documents_still_compare():
    """Older documents without samples_ms: p50 and std only."""
    def summary(p50, std):
        return {"latency": {"int8": {"p50_ms": p50, "std_ms": std}}}
    assert R.check_latency(summary(12.0, 0.4), summary(12.3, 0.4), "int8") is None
    assert R.check_latency(summary(12.0, 0.4), summary(14.4, 0.4), "int8") is not None


def test_emulated_and_real_latencies_are_not_compared():
    rng = np.random.default_rng(4)
    base, slow = _lat(timed_samples(rng, 12.0)), _lat(timed_samples(rng, 30.0))
    slow["latency"]["emulated"] = True
    assert R.check_latency(base, slow, "int8") is None


def test_interleaved_and_block_timed_latencies_are_not_compared():
    """Agent 0.4 times FP32 and INT8 interleaved; a baseline timed in blocks by an older agent (no field) is
    another measurement: on the demo the method alone moved INT8 p50 from 0.15 to 0.25 ms."""
    rng = np.random.default_rng(5)
    base, slow = _lat(timed_samples(rng, 12.0)), _lat(timed_samples(rng, 30.0))
    assert R.check_latency(base, slow, "int8") is not None  # the same method: a 2.5x slowdown is flagged
    slow["latency"]["interleaved"] = True
    assert R.check_latency(base, slow, "int8") is None
    base["latency"]["interleaved"] = True
    assert R.check_latency(base, slow, "int8") is not None


# ---- accuracy and fidelity ----------------------------------------------------------------------------

def test_accuracy_drop_beyond_tolerance():
    base = make_doc(chip_int8=71.3, seed=1)
    assert R.check_accuracy(base, make_doc(chip_int8=71.0, seed=2)) == []  # 0.3 < tolerance 0.5
    found = R.check_accuracy(base, make_doc(chip_int8=68.1, seed=2))
    assert [f.metric for f in found] == ["accuracy.chip_int8"]
    assert found[0].baseline == 71.3 and found[0].current == 68.1 and found[0].threshold == 0.5


def test_unlabelled_runs_compare_top1_agreement():
    base, cur = make_doc(chip_int8=None, seed=1), make_doc(chip_int8=None, seed=2)
    assert R.check_accuracy(base, cur) == []
    cur["accuracy"]["top1_agreement"]["chip_int8_vs_pc_int8"] = 93.0
    assert [f.metric for f in R.check_accuracy(base, cur)] == ["agreement.chip_int8_vs_pc_int8"]


def test_fidelity_snr_drop():
    base = make_doc(snr_db=42.0, seed=1)
    assert R.check_fidelity(base, make_doc(snr_db=40.5, seed=2)) == []
    found = R.check_fidelity(base, make_doc(snr_db=30.0, seed=2))
    assert [f.metric for f in found] == ["fidelity.logits.chip_int8_vs_pc_int8.snr_db"]
    identical = make_doc(seed=3, fp32_snr_db=float("inf"))
    assert R.check_fidelity(identical, make_doc(seed=4, fp32_snr_db=70.0)) == []  # both above the cap


# ---- recorded runs: baselines and the runtime version where it appeared ------------------------------

def _record(db, **kw):
    return record_and_check(make_doc(**kw), db)


def test_recorded_runs_without_slowdown_raise_nothing(history_db):
    db = history_db
    summaries = [_record(db, runtime=v, seed=s) for s, v in enumerate(["1.20.0", "1.20.1", "1.21.0", "1.21.1"])]
    assert summaries[0]["baseline_run"] is None
    assert [s["baseline_run"] for s in summaries[1:]] == [1, 2, 3]
    assert all(s["regressions"] == [] for s in summaries)


def test_recorded_slowdown_names_the_runtime_version_where_it_appeared(history_db):
    db = history_db
    for seed in range(3):
        _record(db, runtime="1.20.1", seed=seed)
    first = _record(db, runtime="1.21.0", int8_ms=14.4, seed=10)
    later = _record(db, runtime="1.21.1", int8_ms=14.5, seed=11)
    for summary in (first, later):
        assert summary["baseline_run"] == 3  # the slow runs never become the baseline
        (item,) = summary["regressions"]
        assert item["kind"] == "latency" and item["metric"] == "latency.int8.p50_ms"
        assert item["runtime_version"] == "1.21.0" and item["appeared_run"] == 4
        assert "appeared with onnxruntime 1.21.0 (run 4)" in item["message"]
    fixed = _record(db, runtime="1.21.2", seed=12)
    assert fixed["regressions"] == [] and fixed["baseline_run"] == 3
    with RunStore.open(db) as store:
        assert [r["run_id"] for r in store.regressions()] == [4, 5]


def test_failed_runs_are_skipped_as_baselines_and_accuracy_bug_is_reported(history_db):
    db = history_db
    _record(db, runtime="1.20.1", seed=1)
    bug = _record(db, runtime="1.22.0", verdict="fail", status="bug", chip_int8=60.2, snr_db=17.0, seed=2)
    assert {r["kind"] for r in bug["regressions"]} == {"accuracy", "fidelity"}
    assert all(r["runtime_version"] == "1.22.0" for r in bug["regressions"])
    assert _record(db, runtime="1.22.1", seed=3)["baseline_run"] == 1


def test_pinned_baseline_wins(history_db):
    db = history_db
    _record(db, runtime="1.20.1", int8_ms=10.0, seed=1)
    _record(db, runtime="1.20.2", int8_ms=11.0, seed=2)  # passes: 10% slower, beyond noise -> regression
    with RunStore.open(db) as store:
        store.pin_baseline(1)
    summary = _record(db, runtime="1.20.3", int8_ms=12.0, seed=3)
    assert summary["baseline_run"] == 1 and summary["baseline_pinned"] is True
    (item,) = summary["regressions"]
    assert item["runtime_version"] == "1.20.2"  # the slowdown began at run 2 and never went away


def test_different_configs_and_boards_do_not_mix(history_db):
    db = history_db
    _record(db, board="k1-lab-01", seed=1)
    assert _record(db, board="k1-lab-02", int8_ms=20.0, seed=2)["baseline_run"] is None
    assert _record(db, config="per-channel", int8_ms=20.0, seed=3)["baseline_run"] is None
    with RunStore.open(db) as store:
        assert check_run(store, 1)["baseline_run"] is None
