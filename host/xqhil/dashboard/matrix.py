"""Runtime release x (model, board) matrix: which chip-runtime release broke or slowed what, and where.

One cell per release and section: the worst state among that release's runs (bug > regression > warn >
ok) with short notes such as ``INT8 +18%`` or ``chip INT8 -9.5 pts``.
"""
from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from xqhil.dashboard.model import Point, Section
from xqhil.history import doc as docs

RANK = {"ok": 0, "warn": 1, "regression": 2, "bug": 3}


@dataclass
class Cell:
    status: str = "ok"
    notes: list[str] = field(default_factory=list)
    runs: list[int] = field(default_factory=list)

    def add(self, status: str, notes: Sequence[str], run_id: int) -> None:
        if RANK[status] > RANK[self.status]:
            self.status = status
        self.notes += [n for n in notes if n not in self.notes]
        self.runs.append(run_id)


def regression_note(item: Mapping[str, Any]) -> str:
    """``INT8 +18%``, ``chip_int8 -4.0 pts``, ``SNR -24 dB``."""
    base, cur = item.get("baseline"), item.get("current")
    if base is None or cur is None:
        return str(item.get("kind"))
    metric = str(item.get("metric", ""))
    if item.get("kind") == "latency":
        precision = metric.split(".")[1].upper() if metric.count(".") >= 1 else "latency"
        return f"{precision} {100 * (cur - base) / base:+.0f}%" if base else precision
    if item.get("kind") == "fidelity":
        return f"SNR {cur - base:+.0f} dB"
    return f"{metric.split('.')[-1].replace('_', ' ')} {cur - base:+.1f} pts"


def point_state(point: Point) -> tuple[str, list[str]]:
    d = point.run.doc
    notes = []
    if docs.is_chip_bug(d):
        drop = docs.accuracy(d, "drop_points")
        notes.append("chip bug" + (f" {-drop:+.1f} pts" if drop else "")
                     if docs.section(d, "accuracy").get("status") == "bug" else "verify failed")
    bug = docs.is_chip_bug(d)
    notes += [regression_note(r) for r in point.regressions if not (bug and r.get("kind") == "accuracy")]
    if bug:
        return "bug", notes
    if point.regressions:
        return "regression", notes
    return ("warn", ["warn"]) if point.run.verdict == "warn" else ("ok", [])


def release_matrix(sections: Sequence[Section]) -> tuple[list[str], dict[tuple[str, str], Cell]]:
    """Releases in order of first appearance, and the cell of each (release, section anchor)."""
    first_seen: dict[str, int] = {}
    cells: dict[tuple[str, str], Cell] = {}
    for section in sections:
        for point in section.points:
            version = point.run.runtime_version or "?"
            first_seen[version] = min(first_seen.get(version, point.run.id), point.run.id)
            status, notes = point_state(point)
            cells.setdefault((version, section.anchor), Cell()).add(status, notes, point.run.id)
    return sorted(first_seen, key=lambda v: first_seen[v]), cells
