"""Per-board health from the history: last run, last verdict, infrastructure failures in a row, quarantine.

A board farm records a job that failed for infrastructure reasons (connection, timeout, agent crash) as
verdict ``INFRA`` with ``{"infra": {"error": ..., "exit": 3}}``, and may add ``{"farm": {"quarantined":
bool}}`` to a run's document: the newest run that says so decides the quarantine shown here, unless a
measurement came after it (the board is back in use).
"""
from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from xqhil.dashboard.rows import RunRow
from xqhil.history import doc as docs

QUARANTINE_LOOKBACK = 50  # newest runs of a board read in full to find its quarantine state


@dataclass
class BoardHealth:
    board: str
    kind: str | None
    runs: int
    infra_runs: int
    last: RunRow
    infra_streak: int  # consecutive INFRA runs, newest first
    quarantined: bool | None  # None: no run of the board says
    last_error: str | None  # the newest INFRA run's error, while the streak lasts
    last_measured: RunRow | None

    @property
    def state(self) -> str:
        if self.quarantined:
            return "quarantined"
        return "failing" if self.infra_streak else "ok"


def _streak(rows: Sequence[RunRow]) -> int:
    count = 0
    for row in reversed(rows):
        if not row.infra:
            break
        count += 1
    return count


def _farm_state(rows: Sequence[RunRow], get_doc: Callable[[int], dict[str, Any]]) -> tuple[bool | None, str | None]:
    """(quarantined, newest infrastructure error) from the newest documents of one board. A measurement
    newer than the run that quarantined the board means it is back in use: not quarantined."""
    quarantined, error, measured_since = None, None, False
    for row in list(reversed(rows))[:QUARANTINE_LOOKBACK]:
        doc = get_doc(row.id)
        if error is None and row.infra:
            infra = docs.section(doc, "infra")
            error = f"{infra.get('error') or 'infrastructure failure'} (exit {infra.get('exit', 3)})"
        farm = docs.section(doc, "farm")
        if isinstance(farm.get("quarantined"), bool):
            quarantined = farm["quarantined"] and not measured_since
            break
        measured_since = measured_since or not row.infra
    return quarantined, error


def board_health(rows: Sequence[RunRow], get_doc: Callable[[int], dict[str, Any]]) -> list[BoardHealth]:
    """One entry per board, by name; ``get_doc(run_id)`` reads a document (only a board's newest ones)."""
    by_board: dict[str, list[RunRow]] = {}
    for row in rows:
        by_board.setdefault(row.board, []).append(row)
    out = []
    for board in sorted(by_board):
        runs = by_board[board]
        streak = _streak(runs)
        quarantined, error = _farm_state(runs, get_doc)
        measured = next((r for r in reversed(runs) if not r.infra), None)
        out.append(BoardHealth(board, runs[-1].board_kind, len(runs), sum(r.infra for r in runs), runs[-1],
                               streak, quarantined, error if streak else None, measured))
    return out
