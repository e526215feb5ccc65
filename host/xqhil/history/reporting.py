"""quantize-and-verify and the history: check the database before the run, then record the report, check
it against the baseline, and add the outcome to the run's verify.json (key ``history``) and verify.md
(section ``## History``).

A database that cannot be used is refused before the run (:func:`check_history_db`: exit 2, or 3 for a
full disk), not after minutes of work. A problem after the verdict (the disk fills while writing) never
hides the verdict: the run is reported as not recorded, with the reason, and the exit code stays the
verdict's."""
from __future__ import annotations

import json
import logging
import os
from collections.abc import Mapping
from typing import Any

from pathlib import Path

from xqhil.history.check import format_summary, record_and_check
from xqhil.history.confirm import Confirmer
from xqhil.history.errors import HistoryError
from xqhil.history.dsn import redact
from xqhil.history.store import PathLike, RunStore, default_db
from xqhil.report import write_atomic

log = logging.getLogger(__name__)

MD_HEADING = "## History"


def history_markdown(summary: Mapping[str, Any]) -> str:
    lines = [MD_HEADING, ""] + [f"- {line}" for line in format_summary(summary).splitlines()]
    return "\n".join(lines) + "\n"


def add_to_reports(report: dict, summary: Mapping[str, Any]) -> None:
    """Put ``summary`` into the report and into its verify.json and verify.md (when they exist)."""
    report["history"] = dict(summary)
    paths = report.get("reports") or {}
    if paths.get("json") and os.path.isfile(paths["json"]):
        write_atomic(paths["json"], json.dumps(report, indent=2, allow_nan=False) + "\n")
    md = paths.get("md")
    if md and os.path.isfile(md):
        with open(md, encoding="utf-8") as handle:
            text = handle.read().split(f"\n{MD_HEADING}\n")[0].rstrip("\n")
        write_atomic(md, f"{text}\n\n{history_markdown(summary)}")


def check_history_db(db_path: PathLike | None = None) -> Path | str:
    """Open (creating it if needed) and check the history before a run; raise HistoryError if unusable.
    Returns what reopens it (a path, or a URL with its password: pass it on, never print it)."""
    with RunStore.open(db_path) as store:
        store.check()
    return store.target


def record_verify_report(report: dict, db_path: PathLike | None = None,
                         confirmer: Confirmer | None = None) -> dict[str, Any]:
    """Record ``report`` (a verify.json document already written) and return the regression summary;
    ``confirmer`` measures the board again when the latency looks regressed (history/confirm.py).

    Never raises for the database or the report files: a failure is logged as a warning and returned as
    ``{"recorded": False, "db", "error"}``, which also goes into verify.json and verify.md."""
    try:
        summary = {"recorded": True, **record_and_check(report, db_path, confirmer=confirmer)}
    except HistoryError as exc:
        summary = {"recorded": False, "db": redact(db_path or default_db()), "error": exc.one_line()}
        log.warning("%s", format_summary(summary))
    try:
        add_to_reports(report, summary)
    except OSError as exc:
        log.warning("history: could not add the history outcome to %s: %s",
                    (report.get("reports") or {}).get("json"), exc)
    return summary
