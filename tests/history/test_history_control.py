"""The within-run control of the latency check (INT8 against FP32 of the same run) and the confirmation
record, on synthetic verify documents (the real-board behaviour: test_history_real_board.py)."""
from history_testlib import make_doc
from xqhil.history import confirm, record_and_check
from xqhil.history import regression as R


def _history(n=5, **kw):
    """``n`` clean runs of one runtime, oldest first, and their noise history."""
    runs = [make_doc(seed=s, n=100, jitter=0.01, **kw) for s in range(n)]
    return runs, R.noise_history(runs)


def test_board_wide_slowdown_moves_both_precisions_and_is_not_a_regression():
    runs, history = _history()
    slow = make_doc(runtime="1.21.0", int8_ms=18.0, fp32_ms=45.0, seed=9, n=100, jitter=0.01)  # both x1.5
    assert R.find_regressions(slow, runs[-1], history) == []
    old_rule = R.find_regressions(slow, runs[-1], history, R.Policy(latency_control=False))
    assert sorted(f.metric for f in old_rule) == ["latency.fp32.p50_ms", "latency.int8.p50_ms"]


def test_int8_slowdown_against_fp32_is_flagged_and_fp32_is_not():
    runs, history = _history()
    slow = make_doc(runtime="1.21.0", int8_ms=14.4, seed=9, n=100, jitter=0.01)
    [finding] = R.find_regressions(slow, runs[-1], history)
    assert finding.metric == "latency.int8.p50_ms" and "against FP32 in the same run" in finding.detail
    assert "over 5 clean runs" in finding.detail or "floor" in finding.detail


def test_fp32_slowdown_against_int8_is_flagged_as_fp32():
    runs, history = _history()
    slow = make_doc(runtime="1.21.0", fp32_ms=36.0, seed=9, n=100, jitter=0.01)
    assert [f.metric for f in R.find_regressions(slow, runs[-1], history)] == ["latency.fp32.p50_ms"]


def test_before_five_clean_runs_the_ratio_must_move_ten_percent():
    runs, history = _history(n=2)
    assert R.find_regressions(make_doc(runtime="1.21.0", int8_ms=12.9, seed=9, n=100, jitter=0.01),
                              runs[-1], history) == []  # +7.5%: within the first-runs allowance
    [finding] = R.find_regressions(make_doc(runtime="1.21.0", int8_ms=14.4, seed=9, n=100, jitter=0.01),
                                   runs[-1], history)
    assert "first runs: 10%" in finding.detail


def test_a_stored_rejection_keeps_the_run_clean_and_says_why(tmp_path):
    db = tmp_path / "h.sqlite3"
    for seed in range(5):
        record_and_check(make_doc(seed=seed, n=100, jitter=0.01), db)
    slow = make_doc(runtime="1.21.0", int8_ms=14.4, seed=9, n=100, jitter=0.01)
    slow["latency"]["confirmation"] = {"baseline_run": 5, "decisions": {"latency.int8.p50_ms": {
        "confirmed": False, "by": "re-runs", "detail": "3 runs pooled stay within the run-to-run scatter"}}}
    summary = record_and_check(slow, db)
    assert summary["regressions"] == []
    [note] = summary["unconfirmed"]
    assert note["by"] == "re-runs" and "not confirmed, decided by re-runs" in note["message"]
    # the next run still compares with the last clean run, which the rejected one now is
    assert record_and_check(make_doc(runtime="1.21.0", seed=10, n=100, jitter=0.01), db)["baseline_run"] == 6


def test_a_confirmation_against_another_baseline_is_ignored():
    doc = make_doc()
    doc["latency"]["confirmation"] = {"baseline_run": 3, "decisions": {}}
    assert confirm.confirmation_of(doc, 4) is None and confirm.confirmation_of(doc, 3) is not None


def test_a_board_that_fails_during_confirmation_leaves_the_single_run_verdict(tmp_path):
    db = tmp_path / "h.sqlite3"
    for seed in range(5):
        record_and_check(make_doc(seed=seed, n=100, jitter=0.01), db)

    def gone(python):
        raise OSError("board unreachable")

    slow = make_doc(runtime="1.21.0", int8_ms=14.4, seed=9, n=100, jitter=0.01)
    summary = record_and_check(slow, db, confirmer=confirm.Confirmer(gone))
    assert [r["metric"] for r in summary["regressions"]] == ["latency.int8.p50_ms"]
    assert "board unreachable" in slow["latency"]["confirmation"]["error"]


def _side(fp32_ms: float, int8_ms: float, version: str) -> dict:
    """One side of an A/B round as the history keeps it (CPU-time medians)."""
    return {"fp32": {"p50_ms": fp32_ms, "cpu_p50_ms": fp32_ms, "timed_runs": 40},
            "int8": {"p50_ms": int8_ms, "cpu_p50_ms": int8_ms, "timed_runs": 40}, "onnxruntime": version}


def test_an_ab_round_timed_under_load_compares_int8_against_fp32_of_the_same_run():
    """The new runtime (B) is 50% slower in INT8 in every round; in the second round the baseline's (A)
    whole measurement ran on a busy machine (FP32 and INT8 alike 60% slower). Judged on INT8 alone, that
    round says B is faster and vetoes the confirmation (a real-board test failed so under load); judged
    as INT8/FP32 of each side's own run, as the check judged the finding, every round shows the +50%."""
    finding = R.Finding("latency", "latency.int8.p50_ms", 4.0, 6.0, 0.1, "INT8 +50% against FP32", relative=0.5)
    rounds = [(_side(10.0, 4.0, "1.20"), _side(10.0, 6.0, "1.21")),
              (_side(16.0, 6.4, "1.20"), _side(10.0, 6.0, "1.21")),
              (_side(10.0, 4.0, "1.20"), _side(10.0, 6.1, "1.21"))]
    decision = confirm._ab_decision({"rounds": rounds, "current": "1.21", "baseline": "1.20"}, finding, "int8")
    assert decision["confirmed"], decision["detail"]
    assert "+50.0%, +50.0%, +52.5%" in decision["detail"]
    absolute = R.Finding("latency", "latency.int8.p50_ms", 4.0, 6.0, 0.1, "INT8 +50%")  # no within-run control
    assert not confirm._ab_decision({"rounds": rounds, "current": "1.21", "baseline": "1.20"}, absolute,
                                    "int8")["confirmed"]
