"""What the dashboard shows, computed from the history store (no HTML here).

Runs are grouped by comparable key (model, FP32 model hash, board, config hash); within a group they are
ordered oldest first. Flagged items are chip bugs (verdict fail, accuracy status bug) and the stored
regression findings.
"""
from __future__ import annotations

import math
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from xqhil.history import doc as docs
from xqhil.history.store import RunRecord, RunStore

SNR_DISPLAY_CAP_DB = 60.0  # identical outputs (infinite SNR) plot at this height


@dataclass
class Link:
    label: str
    href: str
    exists: bool


@dataclass
class Point:
    """One run as the charts and tables of its section see it."""

    run: RunRecord
    int8: tuple[float, float, float] | None  # p10, p50, p90 in ms
    fp32: tuple[float, float, float] | None
    links: list[Link]
    regressions: list[dict[str, Any]]

    @property
    def flagged(self) -> bool:
        return bool(self.regressions) or docs.is_chip_bug(self.run.doc)


@dataclass
class Section:
    key: docs.RunKey
    points: list[Point] = field(default_factory=list)

    @property
    def anchor(self) -> str:
        raw = f"{self.key.model}-{self.key.board}-{docs.short_hash(self.key.config_sha256)}"
        return "s-" + "".join(c if c.isalnum() else "-" for c in raw)


@dataclass
class Flag:
    """A run with something to look at: (kind, message) per chip bug or regression."""

    point: Point
    items: list[tuple[str, str]]


@dataclass
class Fingerprint:
    fields: dict[str, Any]
    boards: list[str]
    runs: list[int]


@dataclass
class Dashboard:
    db_path: str
    sections: list[Section]
    flags: list[Flag]
    fingerprints: list[Fingerprint]
    run_count: int
    pinned: list[int]


def latency_band(doc: Mapping[str, Any], precision: str) -> tuple[float, float, float] | None:
    """p10, p50, p90 of the timed runs; from the stored summary when samples are missing."""
    samples = docs.latency_samples(doc, precision)
    if samples:
        p10, p50, p90 = np.percentile(samples, [10, 50, 90])
        return float(p10), float(p50), float(p90)
    entry = docs.latency(doc, precision)
    p50 = docs.number(entry.get("p50_ms", entry.get("mean_ms")))
    if p50 is None:
        return None
    low = docs.number(entry.get("min_ms"))
    high = docs.number(entry.get("p90_ms"))
    return (low if low is not None else p50), p50, (high if high is not None else p50)


def report_links(doc: Mapping[str, Any], out_dir: Path) -> list[Link]:
    """Links to the run's reports (and its localisation's repro bundle), relative to the dashboard folder so
    the pair can move together."""
    links = []
    targets = [(label, raw) for label, raw in sorted(docs.section(doc, "reports").items())]
    loc = docs.section(doc, "localization")
    if isinstance(loc.get("bundle"), str) and loc["bundle"]:
        targets.append((f"repro {loc.get('op') or ''}".strip(), os.path.join(loc["bundle"], "README.md")))
    for label, raw in targets:
        if not isinstance(raw, str) or not raw:
            continue
        target = Path(raw).expanduser().resolve()
        try:
            href = os.path.relpath(target, out_dir.resolve())
        except ValueError:  # another drive on Windows
            href = target.as_uri()
        links.append(Link(label, Path(href).as_posix(), target.is_file()))
    return links


def snr_for_display(value: float | None) -> float | None:
    if value is None:
        return None
    return SNR_DISPLAY_CAP_DB if math.isinf(value) and value > 0 else min(value, SNR_DISPLAY_CAP_DB)


def _point(run: RunRecord, out_dir: Path, regressions: Sequence[dict[str, Any]]) -> Point:
    return Point(run, latency_band(run.doc, "int8"), latency_band(run.doc, "fp32"),
                 report_links(run.doc, out_dir), list(regressions))


def _flag(p: Point) -> Flag | None:
    items = []
    if docs.is_chip_bug(p.run.doc):
        reasons = "; ".join(str(r) for r in p.run.doc.get("reasons") or []) or "verdict fail"
        status = docs.section(p.run.doc, "accuracy").get("status")
        items.append(("chip bug" if status == "bug" else "verify failed", reasons))
    items += [(f"{item['kind']} regression", str(item["message"])) for item in p.regressions]
    return Flag(p, items) if items else None


def _flags(points: Sequence[Point]) -> list[Flag]:
    return [f for f in map(_flag, points) if f is not None]


def _fingerprints(runs: Sequence[RunRecord]) -> list[Fingerprint]:
    found: dict[str, Fingerprint] = {}
    for run in runs:
        fields = docs.fingerprint(run.doc)
        entry = found.setdefault(fields["id"], Fingerprint(fields, [], []))
        if run.key.board not in entry.boards:
            entry.boards.append(run.key.board)
        entry.runs.append(run.id)
    return sorted(found.values(), key=lambda f: (f.boards, f.runs[0]))


def build(store: RunStore, out_dir: Path) -> Dashboard:
    runs = store.list()
    by_run: dict[int, list[dict[str, Any]]] = {}
    for item in store.regressions():
        by_run.setdefault(int(item["run_id"]), []).append(item)
    sections: dict[docs.RunKey, Section] = {}
    points = []
    for run in runs:
        point = _point(run, out_dir, by_run.get(run.id, []))
        sections.setdefault(run.key, Section(run.key)).points.append(point)
        points.append(point)
    # Sections with flagged runs first: problems are what the page is for.
    ordered = sorted(sections.values(), key=lambda s: (not any(p.flagged for p in s.points), s.key.model,
                                                        s.key.board, s.points[0].run.id))
    return Dashboard(str(store.path), ordered, _flags(points), _fingerprints(runs), len(runs),
                     store.pinned_run_ids())
