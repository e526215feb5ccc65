"""What one model/board/config page shows, computed from the history store (no HTML here).

The newest :data:`KEEP_RUNS` runs are read in full (their documents: latency samples, accuracies, SNRs,
report links); older runs are aggregated per runtime release from their indexed columns (median and
p10-p90 of the runs' medians), so a page stays small however long the history grows. Runs whose job
failed for infrastructure reasons are listed but never charted: they measured nothing.
"""
from __future__ import annotations

import math
import os
import statistics
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional

from xqhil.dashboard.rows import RunRow, anchor
from xqhil.history import doc as docs
from xqhil.history.store import RunRecord, RunStore

SNR_DISPLAY_CAP_DB = 60.0  # identical outputs (infinite SNR) plot at this height
KEEP_RUNS = 40  # newest runs of one model/board/config shown one by one
CHART_RELEASES = 30  # older releases charted (one aggregated point each); the page's table lists them all

Band3 = Optional[tuple[float, float, float]]


@dataclass
class Link:
    label: str
    href: str
    exists: bool


@dataclass
class Point:
    """One run read in full, as the run table of its page sees it."""

    run: RunRecord
    int8: Band3
    fp32: Band3
    links: list[Link]
    regressions: list[dict[str, Any]]

    @property
    def infra(self) -> bool:
        return docs.is_infra(self.run.doc)

    @property
    def flagged(self) -> bool:
        return not self.infra and (bool(self.regressions) or docs.is_chip_bug(self.run.doc))


@dataclass
class ChartPoint:
    """One x position of the charts: a run, or the older runs of one release aggregated."""

    label: str
    release: str
    tip: str
    int8: Band3 = None
    fp32: Band3 = None
    values: dict[str, float | None] = field(default_factory=dict)  # speedup, pc_int8, chip_int8, ...
    regressions: list[tuple[str, str]] = field(default_factory=list)  # (kind, metric)
    bug: bool = False
    labelled: bool = True


@dataclass
class Aggregate:
    """The older runs of one release on one page."""

    release: str
    rows: list[RunRow]

    @property
    def measured(self) -> list[RunRow]:
        return [r for r in self.rows if not r.infra]


@dataclass
class KeyPage:
    key: docs.RunKey
    anchor: str
    total: int
    points: list[Point]  # the newest runs, oldest first (INFRA runs included: the table lists them)
    older: list[Aggregate]  # older runs per release, oldest release first
    regressions: dict[int, list[dict[str, Any]]]  # of the older runs
    emulated: bool


def band(values: Sequence[float]) -> tuple[float, float, float]:
    """p10, p50, p90 as numpy's default (linear) percentile, without its overhead on a few dozen values."""
    xs = sorted(values)
    out = []
    for q in (0.1, 0.5, 0.9):
        pos = q * (len(xs) - 1)
        low = int(pos)
        high = min(low + 1, len(xs) - 1)
        out.append(xs[low] + (xs[high] - xs[low]) * (pos - low))
    return out[0], out[1], out[2]


def latency_band(doc: Mapping[str, Any], precision: str) -> Band3:
    """p10, p50, p90 of the timed runs; from the stored summary when samples are missing."""
    samples = docs.latency_samples(doc, precision)
    if samples:
        return band(samples)
    entry = docs.latency(doc, precision)
    p50 = docs.number(entry.get("p50_ms", entry.get("mean_ms")))
    if p50 is None:
        return None
    low = docs.number(entry.get("min_ms"))
    high = docs.number(entry.get("p90_ms"))
    return (low if low is not None else p50), p50, (high if high is not None else p50)


def report_links(doc: Mapping[str, Any], page_dir: Path) -> list[Link]:
    """Links to the run's reports (and its localisation's repro bundle), relative to the page's folder so
    the dashboard and the reports can move together."""
    links = []
    targets = [(label, raw) for label, raw in sorted(docs.section(doc, "reports").items())]
    loc = docs.section(doc, "localization")
    if isinstance(loc.get("bundle"), str) and loc["bundle"]:
        targets.append((f"repro {loc.get('op') or ''}".strip(), os.path.join(loc["bundle"], "README.md")))
    for label, raw in targets:
        if not isinstance(raw, str) or not raw:
            continue
        target = os.path.abspath(os.path.expanduser(raw))
        try:
            href = os.path.relpath(target, os.path.abspath(page_dir))
        except ValueError:  # another drive on Windows
            href = Path(target).as_uri()
        links.append(Link(label, Path(href).as_posix(), os.path.isfile(target)))
    return links


def snr_for_display(value: float | None) -> float | None:
    if value is None:
        return None
    return SNR_DISPLAY_CAP_DB if math.isinf(value) and value > 0 else min(value, SNR_DISPLAY_CAP_DB)


def point(run: RunRecord, page_dir: Path, regressions: Sequence[dict[str, Any]]) -> Point:
    if docs.is_infra(run.doc):
        return Point(run, None, None, report_links(run.doc, page_dir), [])
    return Point(run, latency_band(run.doc, "int8"), latency_band(run.doc, "fp32"),
                 report_links(run.doc, page_dir), list(regressions))


def key_page(store: RunStore, rows: Sequence[RunRow], regressions: Mapping[int, list[dict[str, Any]]],
             page_dir: Path) -> KeyPage:
    """The page of one model/board/config from its rows (oldest first)."""
    recent, old = rows[-KEEP_RUNS:], rows[:-KEEP_RUNS]
    points = [point(store.get(r.id), page_dir, regressions.get(r.id, [])) for r in recent]
    older: dict[str, Aggregate] = {}
    for row in old:
        older.setdefault(row.release, Aggregate(row.release, [])).rows.append(row)
    return KeyPage(rows[0].key, anchor(rows[0].key), len(rows), points, list(older.values()),
                   {r.id: regressions[r.id] for r in old if r.id in regressions},
                   any(r.emulated for r in rows))


def _finite(values: Sequence[float | None]) -> list[float]:
    return [v for v in values if v is not None and math.isfinite(v)]


def median(values: Sequence[float | None]) -> float | None:
    xs = _finite(values)
    return statistics.median(xs) if xs else None


def _spread(values: Sequence[float | None]) -> Band3:
    xs = _finite(values)
    return band(xs) if xs else None


def aggregate_point(agg: Aggregate, regressions: Mapping[int, list[dict[str, Any]]]) -> ChartPoint | None:
    rows = agg.measured
    if not rows:
        return None
    values = {"speedup": median([r.speedup for r in rows]), "pc_int8": median([r.pc_int8 for r in rows]),
              "chip_int8": median([r.chip_int8 for r in rows]),
              "snr_int8": snr_for_display(median([r.min_snr for r in rows]))}
    found = [(str(i["kind"]), str(i["metric"])) for r in rows for i in regressions.get(r.id, [])]
    tip = (f"{len(rows)} runs with onnxruntime {agg.release} (#{rows[0].id}-#{rows[-1].id}), "
           f"medians of the runs' medians")
    return ChartPoint(f"{agg.release} x{len(rows)}", agg.release, tip, _spread([r.int8_p50 for r in rows]),
                      _spread([r.fp32_p50 for r in rows]), values, found, any(r.chip_bug for r in rows),
                      labelled=values["chip_int8"] is not None)


def run_point(p: Point) -> ChartPoint:
    d = p.run.doc
    pair = "chip_{0}_vs_pc_{0}"
    values = {"speedup": docs.number(docs.section(d, "latency").get("speedup")),
              "pc_int8": docs.accuracy(d, "pc_int8"), "chip_int8": docs.accuracy(d, "chip_int8"),
              "pc_fp32": docs.accuracy(d, "pc_fp32"), "chip_fp32": docs.accuracy(d, "chip_fp32"),
              "agreement": docs.agreement(d, pair.format("int8")),
              "snr_int8": snr_for_display(docs.min_snr(d, pair.format("int8"))),
              "snr_fp32": snr_for_display(docs.min_snr(d, pair.format("fp32")))}
    tip = (f"run {p.run.id} · {str(d.get('created') or '')[:16]} · onnxruntime "
           f"{p.run.runtime_version or '?'} · {p.run.verdict}")
    return ChartPoint(f"#{p.run.id}", p.run.runtime_version or "?", tip, p.int8, p.fp32, values,
                      [(str(r["kind"]), str(r["metric"])) for r in p.regressions], docs.is_chip_bug(d),
                      labelled=bool(docs.section(d, "accuracy").get("labelled", True)))


def chart_points(page: KeyPage) -> list[ChartPoint]:
    """The newest older releases aggregated, then the newest runs one by one (INFRA runs left out)."""
    older = [aggregate_point(a, page.regressions) for a in page.older[-CHART_RELEASES:]]
    return [c for c in older if c is not None] + [run_point(p) for p in page.points if not p.infra]
