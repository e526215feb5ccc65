"""Every run as a small row of indexed columns (no document): what the index page is computed from.

At 100,000 runs the documents (with every timed sample) are hundreds of megabytes; these rows are a few
dozen. Full documents are read only for what a page shows in detail (``store.get``).
"""
from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from xqhil.history import doc as docs
from xqhil.history.store import SUMMARY_COLUMNS, RunStore


@dataclass(frozen=True, slots=True)
class RunRow:
    id: int
    recorded_at: str
    created: str
    model: str
    board: str
    board_kind: str | None
    fp32_sha256: str | None
    config_sha256: str | None
    verdict: str
    runtime: str | None
    emulated: int | None
    fingerprint: str | None
    accuracy_status: str | None
    drop_points: float | None
    chip_int8: float | None
    pc_int8: float | None
    int8_p50: float | None
    fp32_p50: float | None
    speedup: float | None
    min_snr: float | None

    @property
    def key(self) -> docs.RunKey:
        return docs.RunKey(self.model, self.fp32_sha256, self.board, self.config_sha256)

    @property
    def infra(self) -> bool:
        return self.verdict == docs.INFRA

    @property
    def chip_bug(self) -> bool:
        return not self.infra and (self.verdict == "fail" or self.accuracy_status == "bug")

    @property
    def when(self) -> str:
        """``2026-03-02 08:30`` (UTC) from the document's creation time, else the recording time."""
        return str(self.created or self.recorded_at)[:16].replace("T", " ")

    @property
    def release(self) -> str:
        return self.runtime or "?"


assert len(RunRow.__dataclass_fields__) == len(SUMMARY_COLUMNS)


def anchor(key: docs.RunKey) -> str:
    """A file- and URL-safe name of one model/board/config."""
    raw = f"{key.model}-{key.board}-{docs.short_hash(key.config_sha256)}"
    return "s-" + "".join(c if c.isalnum() else "-" for c in raw)


def load_rows(store: RunStore) -> list[RunRow]:
    return [RunRow(*row) for row in store.summaries()]


def regressions_by_run(store: RunStore) -> dict[int, list[dict[str, Any]]]:
    out: dict[int, list[dict[str, Any]]] = {}
    for item in store.regressions():
        out.setdefault(int(item["run_id"]), []).append(item)
    return out


def group_by_key(rows: Sequence[RunRow]) -> dict[docs.RunKey, list[RunRow]]:
    """Rows per comparable key, oldest first, keys in order of first appearance."""
    out: dict[docs.RunKey, list[RunRow]] = {}
    for row in rows:
        out.setdefault(row.key, []).append(row)
    return out


def regression_note(item: Mapping[str, Any]) -> tuple[str, float, str]:
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
