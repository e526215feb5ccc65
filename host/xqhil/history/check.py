"""Record a verify run and check it against its baseline: the glue quantize-and-verify calls.

Baseline of a run: the pinned run of its model/board/config if one is pinned, else the last earlier
comparable run that passed verification and showed no regression itself (a slow run that passed must
not become the yardstick that hides the slowdown from the next run).
"""
from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from typing import Any

from xqhil.history import confirm, regression
from xqhil.history.confirm import Confirmer
from xqhil.history.doc import INFRA
from xqhil.history.store import PathLike, RunRecord, RunStore

log = logging.getLogger(__name__)

DEFAULT_POLICY = regression.Policy()
NOISE_WINDOW = 10  # earlier comparable runs used to measure run-to-run latency noise
PENDING_ID = 2 ** 62  # the id a run not recorded yet stands under (after every recorded run)


def select_baseline(store: RunStore, run: RunRecord) -> RunRecord | None:
    """The pinned baseline of ``run``'s key, else the last clean passing run before it."""
    pinned = store.pinned_baseline(run.key)
    if pinned is not None and pinned != run.id:
        return store.get(pinned)
    clean = store.runs_for_key(run.key, before=run.id, clean=True, limit=1)
    return clean[-1] if clean else None


def noise_runs(store: RunStore, run: RunRecord, baseline: RunRecord) -> list[RunRecord]:
    """Clean passing comparable runs up to and including the baseline (the latest NOISE_WINDOW)."""
    return store.runs_for_key(run.key, before=baseline.id + 1, clean=True, limit=NOISE_WINDOW)


def check_run(store: RunStore, run_id: int, policy: regression.Policy = DEFAULT_POLICY) -> dict[str, Any]:
    """Compare a recorded run with its baseline; return the regression summary (nothing is stored)."""
    return check_record(store, store.get(run_id), policy)


def check_record(store: RunStore, run: RunRecord, policy: regression.Policy = DEFAULT_POLICY) -> dict[str, Any]:
    """:func:`check_run` for a run record (also one not recorded yet: id PENDING_ID)."""
    baseline = None if run.verdict == INFRA else select_baseline(store, run)  # an INFRA run measured nothing
    summary: dict[str, Any] = {"run_id": run.id, "db": str(store.path), "baseline_run": None,
                               "baseline_pinned": False, "baseline_runtime_version": None,
                               "regressions": []}
    if baseline is None:
        log.debug("run %d: no baseline yet for %s", run.id, run.key.label())
        return summary
    summary.update(baseline_run=baseline.id, baseline_runtime_version=baseline.runtime_version,
                   baseline_pinned=store.pinned_baseline(run.key) == baseline.id)
    history = regression.noise_history([r.doc for r in noise_runs(store, run, baseline)])
    findings = regression.find_regressions(run.doc, baseline.doc, history, policy)
    record = confirm.confirmation_of(run.doc, baseline.id)
    if record is not None:
        suspects, checked = _all_suspects(run, baseline, history, policy, bool(record.get("release")))
        findings, summary["unconfirmed"] = confirm.apply(findings, suspects, record, checked)
    if not any(f.kind == "latency" for f in findings) and not summary.get("unconfirmed"):
        evidence = latency_evidence(run, baseline, history, policy)
        if evidence:
            summary["latency_evidence"] = evidence
    if findings:
        later = [r for r in store.runs_for_key(run.key, before=run.id, after=baseline.id)
                 if r.verdict != INFRA] + [run]
        starts = regression.first_appearance(findings, baseline.doc, [r.doc for r in later], history, policy)
        summary["regressions"] = [_describe(f, later[i], baseline) for f, i in zip(findings, starts)]
    return summary


def latency_evidence(run: RunRecord, baseline: RunRecord, history: Mapping[str, Sequence[float]],
                     policy: regression.Policy) -> str | None:
    """What decided that a run's latency is not a regression when the run alone decided it (verify.md)."""
    if policy.latency_needs_change and not regression.recorded_changes(baseline.doc, run.doc):
        return ("not compared: nothing recorded changed since the baseline (device, runtime, INT8 model), so a "
                "latency shift is the board's run-to-run noise")
    parts = []
    for precision, other in (("int8", "FP32"), ("fp32", "INT8")):
        shift = regression.controlled_shift(baseline.doc, [run.doc], precision, history,
                                            confirm.suspect_policy(policy))
        level = "the suspicion threshold"
        if shift is not None and shift.exceeded:  # suspected, but judged alone (no re-runs were possible)
            shift, level = regression.controlled_shift(baseline.doc, [run.doc], precision, history, policy), \
                "the single-run threshold"
        if shift is None:
            return None
        parts.append((shift.shift - shift.threshold, f"{precision.upper()} {100 * shift.shift:+.1f}% against "
                      f"{other} in the same run, within {level} +{100 * shift.threshold:.1f}% ({shift.basis})"))
    return "decided by this run alone: " + max(parts)[1]  # the precision nearest its threshold


def _suspects(run: RunRecord, baseline: RunRecord, history: Mapping[str, Sequence[float]],
              policy: regression.Policy) -> list[regression.Finding]:
    """Latency findings at the suspicion level: what a confirmation is asked to decide."""
    found = regression.find_regressions(run.doc, baseline.doc, history, confirm.suspect_policy(policy))
    return [f for f in found if f.kind == "latency"]


Findings = list[regression.Finding]


def _all_suspects(run: RunRecord, baseline: RunRecord, history: Mapping[str, Sequence[float]],
                  policy: regression.Policy, release: bool) -> tuple[Findings, Findings]:
    """The suspects, and with ``release`` (the baseline's interpreter at hand) the precisions of a run on a
    new runtime that the screen did not suspect, for the A/B alone."""
    suspects = _suspects(run, baseline, history, policy)
    if not release:
        return suspects, []
    have = {f.metric for f in suspects}
    fresh = confirm.release_suspects(run.doc, baseline.doc, history, policy)
    return suspects, [f for f in fresh if f.metric not in have]


def confirm_pending(doc: dict[str, Any], db_path: PathLike | None, policy: regression.Policy,
                    confirmer: Confirmer) -> None:
    """Before recording ``doc``: when its latency looks regressed at the suspicion level, measure again
    (``confirmer``) and store the decision in ``doc["latency"]["confirmation"]``."""
    with RunStore.open(db_path) as store:
        run = RunRecord(PENDING_ID, "", doc)
        baseline = select_baseline(store, run)
        if baseline is None:
            return
        history = regression.noise_history([r.doc for r in noise_runs(store, run, baseline)])
    suspects, checked = _all_suspects(run, baseline, history, policy, bool(confirmer.baseline_python))
    if not suspects and not checked:
        return
    log.info("%s: measuring again to confirm", ", ".join([f"suspected {f.metric}" for f in suspects]
                                                          + [f"new runtime, {f.metric}" for f in checked]))
    record = confirm.confirm(doc, baseline.doc, baseline.id, history, suspects, confirmer, policy, checked)
    if isinstance(doc.get("latency"), dict):
        doc["latency"]["confirmation"] = record


def _describe(finding: regression.Finding, appeared: RunRecord, baseline: RunRecord) -> dict[str, Any]:
    version = appeared.runtime_version
    message = (f"{finding.kind} regression on {appeared.key.board}: {finding.detail}; appeared with "
               f"onnxruntime {version or '?'} (run {appeared.id}), baseline run {baseline.id} "
               f"(onnxruntime {baseline.runtime_version or '?'})")
    return {"kind": finding.kind, "metric": finding.metric, "baseline": finding.baseline,
            "current": finding.current, "threshold": finding.threshold, "runtime_version": version,
            "appeared_run": appeared.id, "message": message}


def record_and_check(doc: Mapping[str, Any], db_path: PathLike | None = None,
                     policy: regression.Policy = DEFAULT_POLICY, confirmer: Confirmer | None = None) -> dict[str, Any]:
    """Record one verify document in the history and check it for regressions.

    With ``confirmer``, a suspected latency regression is measured again before the run is recorded
    (:mod:`xqhil.history.confirm`); the decision is added to ``doc`` (``latency.confirmation``), so pass the
    report dict itself to have it in verify.json too.

    Returns ``{"run_id", "db", "baseline_run", "baseline_pinned", "baseline_runtime_version",
    "regressions": [{kind, metric, baseline, current, threshold, runtime_version, appeared_run,
    message}]}``; raises HistoryError (exit code 2) for a document or database it cannot use.
    """
    if confirmer is not None and isinstance(doc, dict):
        confirm_pending(doc, db_path, policy, confirmer)
    with RunStore.open(db_path) as store, store.write():  # one transaction: the run and its findings, or nothing
        run_id = store.record(doc)
        summary = check_run(store, run_id, policy)
        store.save_regressions(run_id, summary["baseline_run"], summary["regressions"])
    for item in summary["regressions"]:
        log.debug("%s", item["message"])
    return summary


def format_summary(summary: Mapping[str, Any]) -> str:
    """A few human lines for the terminal and verify.md."""
    if summary.get("recorded") is False:
        return (f"history: run NOT recorded in {summary.get('db')}: {summary.get('error')} "
                "(the verdict stands)")
    head = f"history: run {summary.get('run_id')} recorded in {summary.get('db')}"
    if summary.get("baseline_run") is None:
        return head + "; no baseline yet for this model, board and config"
    pinned = " (pinned)" if summary.get("baseline_pinned") else ""
    lines = [(f"{head}; baseline run {summary['baseline_run']}{pinned} "
             f"(onnxruntime {summary.get('baseline_runtime_version') or '?'})")]
    items: Sequence[Mapping[str, Any]] = summary.get("regressions") or []
    lines += [f"REGRESSION: {item['message']}" for item in items] or ["no regression against the baseline"]
    lines += [f"not flagged: {item['message']}" for item in summary.get("unconfirmed") or []]
    if summary.get("latency_evidence"):
        lines.append(f"latency: {summary['latency_evidence']}")
    return "\n".join(lines)


__all__ = ["check_run", "format_summary", "record_and_check", "select_baseline"]
