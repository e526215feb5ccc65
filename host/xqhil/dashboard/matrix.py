"""The release report: model (per board) x runtime release matrix, and what the newest release changed.

One cell per release and model/board/config: the worst state among that release's measurements (bug >
regression > warn > ok) with short notes such as ``INT8 +18%`` or ``chip bug -9.5 pts``. Runs whose job
failed for infrastructure reasons (verdict ``INFRA``) are no measurement: they never set a cell's state,
a cell with nothing else reads "no result".
"""
from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from xqhil.dashboard.rows import RunRow, anchor, regression_note
from xqhil.history import doc as docs

RANK = {"ok": 0, "warn": 1, "regression": 2, "bug": 3}
BROKEN = ("bug", "regression")

Note = tuple[str, float, str]  # category, signed size, unit


@dataclass
class Cell:
    status: str = "none"  # none: no measurement (only infrastructure failures)
    worst: dict[str, tuple[float, str]] = field(default_factory=dict)  # category -> (size, unit)
    runs: list[int] = field(default_factory=list)
    infra: int = 0

    def add(self, status: str, notes: Sequence[Note], run_id: int) -> None:
        self.runs.append(run_id)
        if status == "infra":
            self.infra += 1
            return
        if self.status == "none" or RANK[status] > RANK[self.status]:
            self.status = status
        for category, size, unit in notes:
            if category not in self.worst or abs(size) > abs(self.worst[category][0]):
                self.worst[category] = (size, unit)

    @property
    def notes(self) -> list[str]:
        """The worst value per category over the cell's runs: ``INT8 +18%``, ``chip bug -9.7 pts``."""
        out = []
        for category, (size, unit) in self.worst.items():
            digits = 1 if unit == " pts" else 0
            out.append(category if size == 0 else f"{category} {size:+.{digits}f}{unit}")
        return out

    @property
    def label(self) -> str:
        return "no result (infra)" if self.status == "none" else (", ".join(self.notes) or self.status)


def run_state(row: RunRow, regressions: Sequence[Mapping[str, Any]]) -> tuple[str, list[Note]]:
    """``infra``, ``bug``, ``regression``, ``warn`` or ``ok``, with the notes of a bug or regression."""
    if row.infra:
        return "infra", []
    notes: list[Note] = []
    if row.chip_bug:
        is_bug = row.accuracy_status == "bug"
        notes.append(("chip bug", -(row.drop_points or 0.0), " pts") if is_bug else ("verify failed", 0.0, ""))
        notes += [regression_note(r) for r in regressions if r.get("kind") != "accuracy"]
        return "bug", notes
    if regressions:
        return "regression", [regression_note(r) for r in regressions]
    return ("warn", [("warn", 0.0, "")]) if row.verdict == "warn" else ("ok", [])


@dataclass
class Line:
    """One row of the matrix: a model (and config) on a board."""

    key: docs.RunKey
    anchor: str
    runs: int


@dataclass
class Matrix:
    releases: list[str]  # newest first: ordered by each release's first measured run
    lines: list[Line]  # by board, then model
    cells: dict[tuple[str, str], Cell]

    def cell(self, release: str, line: Line) -> Cell | None:
        return self.cells.get((release, line.anchor))

    def boards(self) -> list[str]:
        return list(dict.fromkeys(line.key.board for line in self.lines))


def release_matrix(by_key: Mapping[docs.RunKey, Sequence[RunRow]],
                   regressions: Mapping[int, Sequence[Mapping[str, Any]]]) -> Matrix:
    first_seen: dict[str, int] = {}
    cells: dict[tuple[str, str], Cell] = {}
    lines = []
    for key, rows in by_key.items():
        line = Line(key, anchor(key), len(rows))
        lines.append(line)
        for row in rows:
            status, notes = run_state(row, () if row.infra else regressions.get(row.id, ()))
            if status != "infra":
                first_seen[row.release] = min(first_seen.get(row.release, row.id), row.id)
            cells.setdefault((row.release, line.anchor), Cell()).add(status, notes, row.id)
    releases = sorted(first_seen, key=lambda v: -first_seen[v])
    lines.sort(key=lambda x: (x.key.board, x.key.model, x.key.config_sha256 or ""))
    return Matrix(releases, lines, cells)


@dataclass
class Change:
    """What the newest release did to one line, against the line's latest earlier measured release."""

    kind: str  # new bug, new regression, still broken, recovered
    line: Line
    now: Cell
    before: str | None = None
    was: Cell | None = None


KINDS = ("new bug", "new regression", "still broken", "recovered")


def _previous(matrix: Matrix, line: Line) -> tuple[str | None, Cell | None]:
    for release in matrix.releases[1:]:
        cell = matrix.cell(release, line)
        if cell is not None and cell.status != "none":
            return release, cell
    return None, None


def _kind(now: Cell, was: Cell | None) -> str | None:
    was_status = was.status if was is not None else None
    if now.status == "bug" and was_status != "bug":
        return "new bug"
    if now.status == "regression" and was_status not in BROKEN:
        return "new regression"
    if now.status in BROKEN:
        return "still broken"
    return "recovered" if was_status in BROKEN else None


def changes(matrix: Matrix) -> tuple[list[Change], list[Line]]:
    """The changes of the newest release (new bugs first), and the lines it has not measured yet."""
    if not matrix.releases:
        return [], []
    newest, found, unmeasured = matrix.releases[0], [], []
    for line in matrix.lines:
        now = matrix.cell(newest, line)
        before, was = _previous(matrix, line)
        if now is None or now.status == "none":
            if was is not None:
                unmeasured.append(line)
            continue
        kind = _kind(now, was)
        if kind is not None:
            found.append(Change(kind, line, now, before, was))
    found.sort(key=lambda c: KINDS.index(c.kind))
    return found, unmeasured
