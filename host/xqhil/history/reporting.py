"""After quantize-and-verify: record its report in the history, check it against the baseline, and add
the outcome to the run's verify.json (key ``history``) and verify.md (section ``## History``)."""
from __future__ import annotations

import json
import logging
import os
from collections.abc import Mapping
from typing import Any

from xqhil.history.check import format_summary, record_and_check
from xqhil.history.store import PathLike
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


def record_verify_report(report: dict, db_path: PathLike | None = None) -> dict[str, Any]:
    """Record ``report`` (a verify.json document already written) and return the regression summary."""
    summary = record_and_check(report, db_path)
    add_to_reports(report, summary)
    return summary
