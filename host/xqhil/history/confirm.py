"""Confirm a suspected latency regression before flagging it.

One run is weak evidence on a board that other work shares: the check first *suspects* a slowdown at a
low robust z-score (``SUSPECT_K`` = 1 against the median and MAD of the earlier clean runs,
:mod:`xqhil.history.sequential`), then the board measures again and the evidence decides:

* **A/B** (where the board still has the baseline's runtime: ``Confirmer.baseline_python``, an interpreter
  whose onnxruntime reports the baseline's version): rounds, each timing the baseline runtime (A) and the
  current one (B) back to back, in alternating order (AB, BA, ...), so drift hits both alike, in blocks of
  ``ab_rounds`` (7). Confirmed when B's change is above what made the run suspect (the suspicion threshold)
  and above ``AB_FLOOR`` (5%) in at least ``AB_AGREE`` (80%) of the rounds, cleared when in at most 20%;
  rounds that split take another block, up to ``ab_max_rounds`` (28), then their median decides. A round
  in which the board changed speed state between A and B reads up to +-23% on a sub-ms model, and in some
  hours most rounds do: a clean A/B in CI once read -16.8, +22.9, +23.3, +21.9, -17.3, +0.1, +8.8% (median
  +8.8%). With a baseline interpreter, a run on another onnxruntime than its baseline's is A/B'd even when
  it does not look regressed (``release_suspects``): a board in a faster state can hide a slowdown from the
  history, not from the baseline runtime timed beside it.
* **re-runs** (otherwise, or when the A/B cannot run): up to ``reruns`` more measurements of the current
  run, one at a time, until the exact rank test of :mod:`xqhil.history.sequential` flags or clears (false
  alarms at most ``Policy.latency_confirm_alpha``, 1%, over both stages). Where it cannot reach that level
  (fewer than 5 earlier clean runs, fewer than 4 re-runs) all ``reruns`` are pooled with the run (their
  mean INT8/FP32 ratio, :mod:`xqhil.history.control`) and judged at ``CONFIRM_K`` (2.33, t-corrected).

The decision is stored in the run's document (``latency.confirmation``), so the history reproduces it:
``{"baseline_run", "suspected": [metric], "reruns": [latency summaries], "ab": {...} | null,
"decisions": {metric: {"confirmed", "by", "detail", "runs", "p_value"}}}`` (``runs``/``p_value``: sequential
re-runs only).
"""
from __future__ import annotations

import logging
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, replace
from typing import Any

import numpy as np

from xqhil.history import control, regression, sequential
from xqhil.history.regression import Finding, Policy

log = logging.getLogger(__name__)
Measure = Callable[[Any], Mapping[str, Any]]  # python command or None -> {"device", "latency"}
SUSPECT_K = sequential.SUSPECT_K  # robust z-score of the within-run control that makes a run suspect
CONFIRM_K = 2.33  # the pooled rule's z-score (short histories, small budgets; one-sided 1%, t-corrected)
# the least change of an A/B round that counts as slower: 80 clean sets of 7 rounds on the host board (the
# noisiest we have, sub-ms demo) had medians within -3.9% and +4.0% (slowed 20%: +14% or more), while
# single rounds reached +-23%
AB_FLOOR = 0.05
# the share of rounds on one side of the level that decides a block; with the rounds split, another block
# (bench/ab_rule.py, a board whose rounds change state with probability 1/2, the worst we saw: false alarms
# 9.5% for the median of 7, 0.7% with blocks up to 28; a 20% slowdown found 95.7% and 99.9%)
AB_AGREE = 0.8


@dataclass(frozen=True)
class Confirmer:
    """How to measure the board again: ``measure(None)`` re-times the current run; ``measure(python)``
    times it with another interpreter of the board (the baseline's runtime)."""

    measure: Measure
    reruns: int = 10
    baseline_python: str | None = None
    ab_rounds: int = 7  # rounds in a block
    ab_max_rounds: int = 28  # blocks are added while a finding's rounds split, up to this many rounds


def suspect_policy(policy: Policy) -> Policy:
    return replace(policy, latency_ratio_k=min(policy.latency_ratio_k, SUSPECT_K), latency_ratio_robust=True)


def summary_of(measured: Mapping[str, Any]) -> dict[str, Any]:
    """The part of a re-measurement the history keeps: per precision p50 and sample count."""
    latency = measured.get("latency") or {}
    out: dict[str, Any] = {k: latency.get(k) for k in ("threads", "emulated", "interleaved")}
    for precision in regression.PRECISIONS:
        entry = latency.get(precision) or {}
        out[precision] = {k: entry.get(k) for k in ("p50_ms", "cpu_p50_ms", "timed_runs")}
    out["onnxruntime"] = (measured.get("device") or {}).get("onnxruntime")
    return out


def _rerun_decision(doc: Mapping[str, Any], base: Mapping[str, Any], history: Mapping[str, Sequence[float]],
                    policy: Policy, reruns: list[dict[str, Any]], metric: str) -> dict[str, Any]:
    pooled = replace(policy, latency_ratio_k=min(policy.latency_ratio_k, CONFIRM_K))
    found = {f.metric: f for f in regression.find_regressions(doc, base, history, pooled, reruns_as_docs(reruns))
             if f.kind == "latency"}
    finding = found.get(metric)
    runs = 1 + len(reruns)
    if finding is not None:
        return {"confirmed": True, "by": "re-runs", "detail": f"{runs} runs pooled: {finding.detail}"}
    return {"confirmed": False, "by": "re-runs",
            "detail": f"{runs} runs pooled stay within the run-to-run scatter of the board"}


def reruns_as_docs(reruns: Sequence[Mapping[str, Any]]) -> list[dict[str, Any]]:
    return [{"latency": r} for r in reruns]


def _p50(summary: Mapping[str, Any], precision: str) -> float | None:
    """CPU-time median when measured (waits for a busy CPU do not count), else wall time."""
    entry = summary.get(precision) or {}
    for key in ("cpu_p50_ms", "p50_ms"):
        value = entry.get(key)
        if isinstance(value, (int, float)) and value > 0:
            return float(value)
    return None


def _round_change(a: Mapping[str, Any], b: Mapping[str, Any], precision: str, relative: bool) -> float | None:
    """B's latency change against A in one round; with ``relative`` (the finding was judged against the other
    precision in the same run) the precision's change against the other's in each side's own run, so load
    that shifts a whole measurement (one side timed during a busy moment) cancels, as in the check itself."""
    pa, pb = _p50(a, precision), _p50(b, precision)
    if pa is None or pb is None:
        return None
    if relative:
        other = "fp32" if precision != "fp32" else "int8"
        oa, ob = _p50(a, other), _p50(b, other)
        if oa and ob:
            return (pb / ob) / (pa / oa) - 1.0
    return pb / pa - 1.0


def _ab_changes(ab: Mapping[str, Any], finding: Finding, precision: str) -> list[float] | None:
    """B's change against A in each round (against the other precision when the finding was judged against
    it: INT8/FP32 ratios, not INT8 alone); None when a round has no latency."""
    changes = [_round_change(a, b, precision, finding.relative is not None) for a, b in ab["rounds"]]
    return None if any(c is None for c in changes) else [float(c) for c in changes]  # type: ignore[arg-type]


def _ab_needed(finding: Finding) -> tuple[float, float]:
    """The suspicion threshold (relative) and what an A/B must exceed: that and at least ``AB_FLOOR``."""
    suspicion = finding.threshold / finding.baseline if finding.baseline > 0 else 0.0
    return suspicion, max(suspicion, AB_FLOOR)


def _ab_verdict(changes: Sequence[float], needed: float, final: bool) -> bool | None:
    """Confirmed (True) or cleared (False) when at least ``AB_AGREE`` of the rounds are on one side of
    ``needed``; otherwise undecided (None), or with ``final`` the side of the rounds' median."""
    above = sum(c > needed for c in changes) / len(changes)
    if above >= AB_AGREE or above <= 1 - AB_AGREE:
        return above >= AB_AGREE
    return bool(np.median(changes) > needed) if final else None


def _ab_pending(ab: Mapping[str, Any], findings: Sequence[Finding]) -> bool:
    """Whether the rounds so far leave a finding undecided (the A/B takes another block)."""
    for finding in findings:
        changes = _ab_changes(ab, finding, finding.metric.split(".")[1])
        if changes and _ab_verdict(changes, _ab_needed(finding)[1], final=False) is None:
            return True
    return False


def _ab_decision(ab: Mapping[str, Any], finding: Finding, precision: str) -> dict[str, Any]:
    """Confirmed when the current runtime (B)'s change against the baseline's (A) is above the suspicion
    threshold (relative) and ``AB_FLOOR`` in at least ``AB_AGREE`` of the rounds, cleared when it is in at most
    1 - ``AB_AGREE``; rounds that split (the board changed state within several of them) are decided by
    their median once the A/B has taken all its blocks (``_run_ab``)."""
    if not ab["rounds"]:
        return {"confirmed": False, "by": "A/B", "detail": "no A/B round"}
    changes = _ab_changes(ab, finding, precision)
    if changes is None:
        return {"confirmed": False, "by": "A/B", "detail": "an A/B round has no latency"}
    suspicion, needed = _ab_needed(finding)
    confirmed = bool(_ab_verdict(changes, needed, final=True))
    above, median = sum(c > needed for c in changes), float(np.median(changes))
    how = "the rounds agree" if _ab_verdict(changes, needed, final=False) is not None else "the rounds split"
    text = ", ".join(f"{100 * c:+.1f}%" for c in changes)
    return {"confirmed": confirmed, "by": "A/B",
            "detail": (f"{precision.upper()} onnxruntime {ab['current']} vs {ab['baseline']} over "
                       f"{len(changes)} alternating rounds: {text}; {above} of {len(changes)} above "
                       f"+{100 * needed:.1f}% (the suspicion threshold +{100 * suspicion:.1f}%, at least "
                       f"{100 * AB_FLOOR:.0f}%), median {100 * median:+.1f}%, "
                       f"{'above' if confirmed else 'not above'} ({how})")}


def release_suspects(doc: Mapping[str, Any], base: Mapping[str, Any], history: Mapping[str, Sequence[float]],
                     policy: Policy) -> list[Finding]:
    """A run on another onnxruntime than its baseline's that does not look regressed: what an A/B is asked
    to decide anyway (each precision against the other, at the suspicion threshold). Empty when the runtime
    did not change or the runs lack the within-run control."""
    old, new = regression.docs.runtime_version(base), regression.docs.runtime_version(doc)
    if new is None or old is None or new == old:
        return []
    found = []
    for precision in regression.PRECISIONS:
        b, c = regression.summarize_latency(base, precision), regression.summarize_latency(doc, precision)
        shift = regression.controlled_shift(base, [doc], precision, history, suspect_policy(policy))
        if b is None or c is None or shift is None or b.median <= 0:
            continue
        other = "FP32" if precision == "int8" else "INT8"
        detail = (f"{precision.upper()} p50 latency {b.median:.4g} ms -> {c.median:.4g} ms, "
                  f"{100 * shift.shift:+.1f}% against {other} in the same run, on a new runtime (onnxruntime "
                  f"{old} -> {new})")
        found.append(Finding("latency", f"latency.{precision}.p50_ms", b.median, c.median,
                             b.median * shift.threshold, detail, shift.shift))
    return found


def _run_ab(confirmer: Confirmer, base_version: str | None,
            findings: Sequence[Finding]) -> dict[str, Any] | None:
    """Alternating rounds of the baseline runtime (A) and the current one (B), in blocks of ``ab_rounds``
    until every finding's rounds agree or ``ab_max_rounds`` are taken; None without a baseline interpreter."""
    if not confirmer.baseline_python or confirmer.ab_rounds < 1:
        return None
    rounds: list = []
    versions: set = set()
    ab: dict[str, Any] = {"rounds": rounds, "baseline": base_version}
    while not rounds or (len(rounds) < confirmer.ab_max_rounds and _ab_pending(ab, findings)):
        if rounds:
            log.info("A/B: the rounds split, %d more", confirmer.ab_rounds)
        for index in range(len(rounds), len(rounds) + confirmer.ab_rounds):
            order = ("a", "b") if index % 2 == 0 else ("b", "a")
            measured = {side: summary_of(confirmer.measure(confirmer.baseline_python if side == "a" else None))
                        for side in order}
            versions.add(measured["a"]["onnxruntime"])
            rounds.append((measured["a"], measured["b"]))
        ab["current"] = rounds[0][1]["onnxruntime"]
        if versions != {base_version}:
            return {"skipped": f"the baseline interpreter runs onnxruntime {sorted(map(str, versions))}, not the "
                               f"baseline's {base_version}", "rounds": [], "current": ab["current"],
                    "baseline": base_version}
    return {"rounds": rounds, "current": ab["current"], "baseline": base_version}


def _clock_step(doc: Mapping[str, Any], history: Mapping[str, Sequence[float]], reruns: Sequence[Mapping[str, Any]],
                precision: str, clock: str, budget: int, policy: Policy) -> sequential.Step | None:
    """The sequential decision on one clock's INT8/FP32 ratios; None when a run lacks them."""
    current = [regression.log_ratio(d, clock) for d in [doc, *reruns_as_docs(reruns)]]
    if None in current:
        return None
    earlier = [control.signed_ratio(x, precision) for x in history.get(f"ratio.{clock}", ())]
    return sequential.decide(earlier, [control.signed_ratio(x, precision) for x in current if x is not None],
                             budget, _alpha(policy), policy.latency_ratio_floor,
                             f"{precision.upper()} ratio ({clock} time)")


def _clocks(policy: Policy) -> tuple[str, ...]:
    return regression.CLOCKS if policy.latency_cpu_clock else ("wall",)


def _alpha(policy: Policy) -> float:
    """The level of one test: the false-alarm rate split over the clocks judged and the two directions
    (INT8 slower against FP32, FP32 slower against INT8), either of which would flag a clean run."""
    return policy.latency_confirm_alpha / (len(_clocks(policy)) * len(regression.PRECISIONS))


def _combined(steps: Sequence[sequential.Step]) -> sequential.Step:
    """Flag when a clock flags (alpha is split over the clocks), measure again while one needs more."""
    for verdict in ("flag", "more"):
        chosen = [s for s in steps if s.verdict == verdict]
        if chosen:
            return chosen[0]
    return sequential.Step("clear", "; ".join(s.detail for s in steps), max(s.runs for s in steps))


def sequential_ready(history: Mapping[str, Sequence[float]], budget: int, policy: Policy) -> bool:
    """Whether the earlier runs and the budget let the rank test reach its level on every clock."""
    alpha = _alpha(policy)
    return all(len(history.get(f"ratio.{c}", ())) >= policy.latency_ratio_runs
               and sequential.plan(len(history.get(f"ratio.{c}", ())), budget, alpha) is not None
               for c in _clocks(policy))


def _sequential_decisions(doc: Mapping[str, Any], history: Mapping[str, Sequence[float]],
                          suspects: Sequence[Finding], confirmer: Confirmer, policy: Policy,
                          reruns: list[dict[str, Any]]) -> dict[str, Any]:
    """Re-run one at a time until each suspect is flagged or cleared (sequential.py); ``reruns`` fills."""
    pending = {f.metric: f.metric.split(".")[1] for f in suspects}
    decisions: dict[str, Any] = {}
    while pending:
        for metric, precision in list(pending.items()):
            steps = [s for c in _clocks(policy)
                     if (s := _clock_step(doc, history, reruns, precision, c, confirmer.reruns, policy))]
            step = _combined(steps) if steps else sequential.Step("clear", "no INT8/FP32 ratio to judge", 1)
            if step.verdict != "more":
                decisions[metric] = {"confirmed": step.verdict == "flag", "by": "re-runs", "detail": step.detail,
                                     "runs": step.runs, "p_value": step.p_value}
                del pending[metric]
        if pending:
            reruns.append(summary_of(confirmer.measure(None)))
    return decisions


def _rerun_decisions(doc: Mapping[str, Any], base: Mapping[str, Any], history: Mapping[str, Sequence[float]],
                     suspects: Sequence[Finding], confirmer: Confirmer, policy: Policy,
                     reruns: list[dict[str, Any]]) -> dict[str, Any]:
    """Sequential re-runs where the rank test can decide, else all re-runs pooled (control.py's rule)."""
    if confirmer.reruns < 1:
        return {}
    if sequential_ready(history, confirmer.reruns, policy):
        return _sequential_decisions(doc, history, suspects, confirmer, policy, reruns)
    reruns.extend(summary_of(confirmer.measure(None)) for _ in range(confirmer.reruns))
    return {f.metric: _rerun_decision(doc, base, history, policy, reruns, f.metric) for f in suspects}


def confirm(doc: Mapping[str, Any], base: Mapping[str, Any], baseline_run: int,
            history: Mapping[str, Sequence[float]], suspects: Sequence[Finding], confirmer: Confirmer,
            policy: Policy, checked: Sequence[Finding] = ()) -> dict[str, Any]:
    """Measure again and decide each suspected latency finding; the ``latency.confirmation`` record.
    ``checked``: ``release_suspects`` the screen did not suspect, decided by the A/B only (no re-runs)."""
    reruns: list[dict[str, Any]] = []
    ab = None
    release = bool(checked)
    try:
        ab = _run_ab(confirmer, regression.docs.runtime_version(base), [*suspects, *checked])
        if ab is not None and ab.get("rounds"):
            decisions = {f.metric: _ab_decision(ab, f, f.metric.split(".")[1]) for f in [*suspects, *checked]}
        elif suspects:
            decisions = _rerun_decisions(doc, base, history, suspects, confirmer, policy, reruns)
        else:
            decisions = {}
    except Exception as exc:  # noqa: BLE001 - a board that fails now leaves the single run's verdict
        log.warning("could not measure again to confirm the latency regression: %s", exc)
        return {"baseline_run": baseline_run, "suspected": [f.metric for f in suspects], "reruns": reruns,
                "ab": ab, "decisions": {}, "release": release, "error": f"{type(exc).__name__}: {exc}"[:500]}
    return {"baseline_run": baseline_run, "suspected": [f.metric for f in suspects], "reruns": reruns,
            "ab": ab, "decisions": decisions, "release": release}


def confirmation_of(doc: Mapping[str, Any], baseline_run: int | None) -> Mapping[str, Any] | None:
    """The run's stored confirmation when it was made against ``baseline_run``."""
    record = regression.docs.section(doc, "latency").get("confirmation")
    if isinstance(record, dict) and record.get("baseline_run") == baseline_run:
        return record
    return None


def apply(findings: list[Finding], suspects: Sequence[Finding], record: Mapping[str, Any] | None,
          checked: Sequence[Finding] = ()) -> tuple[list[Finding], list[dict[str, Any]]]:
    """The findings as the confirmation decided: latency findings replaced by the confirmed suspects and
    ``checked`` release suspects (with the evidence in their detail); the rejected ones returned as notes."""
    if record is None:
        return findings, []
    kept = [f for f in findings if f.kind != "latency"]
    notes = []
    unsuspected = {f.metric for f in checked}
    for finding in [*suspects, *checked]:
        decision = (record.get("decisions") or {}).get(finding.metric)
        if decision is None:
            kept += [f for f in findings if f.metric == finding.metric]
            continue
        evidence = f"decided by {decision['by']}: {decision['detail']}"
        if decision.get("confirmed"):
            kept.append(replace(finding, detail=f"{finding.detail}; confirmed, {evidence}"))
        else:
            how = "checked" if finding.metric in unsuspected else "suspected"
            notes.append({"metric": finding.metric, "confirmed": False, "by": decision["by"],
                          "message": f"{how} {finding.detail}; not confirmed, {evidence}"})
    return kept, notes
