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


Note = tuple[str, float, str]  # category, signed size, unit


@dataclass
class Cell:
    status: str = "ok"
    worst: dict[str, tuple[float, str]] = field(default_factory=dict)  # category -> (size, unit)
    runs: list[int] = field(default_factory=list)

    def add(self, status: str, notes: Sequence[Note], run_id: int) -> None:
        if RANK[status] > RANK[self.status]:
            self.status = status
        for category, size, unit in notes:
            if category not in self.worst or abs(size) > abs(self.worst[category][0]):
                self.worst[category] = (size, unit)
        self.runs.append(run_id)

    @property
    def notes(self) -> list[str]:
        """The worst value per category over the cell's runs: ``INT8 +18%``, ``chip bug -9.7 pts``."""
        out = []
        for category, (size, unit) in self.worst.items():
            digits = 1 if unit == " pts" else 0
            out.append(category if size == 0 else f"{category} {size:+.{digits}f}{unit}")
        return out


def regression_note(item: Mapping[str, Any]) -> Note:
    """(``INT8``, +18, ``%``), (``chip int8``, -4.0, `` pts``), (``SNR``, -24, `` dB``)."""
    base, cur = item.get("baseline"), item.get("current")
    kind, metric = str(item.get("kind")), str(item.get("metric", ""))
    if base is None or cur is None:
        return kind, 0.0, ""
    if kind == "latency":
        precision = metric.split(".")[1].upper() if metric.count(".") >= 1 else "latency"
        return precision, (100 * (cur - base) / base if base else 0.0), "%"
    if kind == "fidelity":
        return "SNR", cur - base, " dB"
    return metric.split(".")[-1].replace("_", " "), cur - base, " pts"


def point_state(point: Point) -> tuple[str, list[Note]]:
    d = point.run.doc
    bug = docs.is_chip_bug(d)
    notes: list[Note] = []
    if bug:
        drop = docs.accuracy(d, "drop_points")
        is_bug = docs.section(d, "accuracy").get("status") == "bug"
        notes.append(("chip bug", -(drop or 0.0), " pts") if is_bug else ("verify failed", 0.0, ""))
    notes += [regression_note(r) for r in point.regressions if not (bug and r.get("kind") == "accuracy")]
    if bug:
        return "bug", notes
    if point.regressions:
        return "regression", notes
    return ("warn", [("warn", 0.0, "")]) if point.run.verdict == "warn" else ("ok", [])


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
