"""Write the dashboard: one self-contained ``index.html`` (inline CSS, inline SVG, a few lines of inline
script for filtering). Nothing is fetched from anywhere; every string from the database is escaped."""
from __future__ import annotations

import logging
import os
from collections.abc import Iterable, Sequence
from datetime import datetime, timezone
from html import escape
from pathlib import Path
from typing import Any

from xqhil.dashboard import assets, svg
from xqhil.dashboard.matrix import release_matrix
from xqhil.dashboard.model import Dashboard, Flag, Link, Point, Section, build, snr_for_display
from xqhil.history import doc as docs
from xqhil.history.errors import HistoryError
from xqhil.history.store import RunStore
from xquant.model_io import write_text_atomic

log = logging.getLogger(__name__)

INT8, FP32, PC, CHIP = "#1849a9", "#e04f16", "#667085", "#7a2e9e"


def h(value: Any) -> str:
    return escape("-" if value is None else str(value), quote=True)


def num(value: float | None, digits: int = 4) -> str:
    return "-" if value is None else f"{value:.{digits}g}"


def _table(headers: Sequence[str], rows: Iterable[str], empty: str) -> str:
    body = "\n".join(rows)
    if not body:
        return f'<p class="empty">{h(empty)}</p>'
    head = "".join(f"<th>{h(x)}</th>" for x in headers)
    return f"<table><thead><tr>{head}</tr></thead><tbody>\n{body}\n</tbody></table>"


def _links(links: Sequence[Link]) -> str:
    out = []
    for link in links:
        cls = "" if link.exists else ' class="missing" title="not found when the dashboard was written"'
        out.append(f'<a href="{h(link.href)}"{cls}>{h(link.label)}</a>')
    return " ".join(out) or "-"


def _verdict(verdict: str) -> str:
    return f'<span class="verdict v-{h(verdict)}">{h(verdict)}</span>'


def _tiles(dash: Dashboard) -> str:
    versions = {p.run.runtime_version for s in dash.sections for p in s.points}
    boards = {s.key.board for s in dash.sections}
    models = {s.key.model for s in dash.sections}
    items = [("runs", dash.run_count, ""), ("models", len(models), ""), ("boards", len(boards), ""),
             ("runtime versions", len(versions), ""), ("flagged runs", len(dash.flags), "bad" if dash.flags else "")]
    return '<div class="tiles">' + "".join(
        f'<div class="tile {cls}"><b>{value}</b>{h(name)}</div>' for name, value, cls in items) + "</div>"


def _header(dash: Dashboard, title: str) -> str:
    generated = datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    nav = " ".join(f'<a href="#{s.anchor}">{h(s.key.model)} @ {h(s.key.board)}</a>' for s in dash.sections)
    return (f"<header><h1>{h(title)}</h1><div class=\"meta\">database {h(dash.db_path)} · generated "
            f"{h(generated)}</div>{_tiles(dash)}<nav>{nav}</nav></header>")


def _flag_row(flag: Flag, section_of: dict) -> str:
    run = flag.point.run
    anchor = section_of.get(run.id, "")
    kinds = "<br>".join(h(kind) for kind in dict.fromkeys(k for k, _ in flag.items))
    what = "".join(f"<li>{h(message)}</li>" for _, message in flag.items)
    return (f'<tr class="flagged" data-flag-run="{run.id}"><td><a href="#{h(anchor)}">#{run.id}</a></td>'
            f"<td>{h(str(run.doc.get('created') or run.recorded_at)[:16].replace('T', ' '))}</td>"
            f"<td>{h(run.key.model)}</td><td>{h(run.key.board)}</td><td>{h(run.runtime_version)}</td>"
            f'<td class="kind-bad">{kinds}</td><td><ul class="what">{what}</ul></td>'
            f"<td>{_links(flag.point.links)}</td></tr>")


def _flags(dash: Dashboard) -> str:
    section_of = {p.run.id: s.anchor for s in dash.sections for p in s.points}
    rows = [_flag_row(f, section_of) for f in reversed(dash.flags)]
    table = _table(["run", "created (UTC)", "model", "board", "runtime", "kind", "what", "reports"], rows,
                   "nothing flagged: no chip-runtime bug and no regression recorded")
    return (f'<h2 id="flagged">Flagged chip-runtime bugs and regressions</h2><div class="card">'
            f"{table}</div>")


def _matrix(dash: Dashboard) -> str:
    versions, cells = release_matrix(dash.sections)
    if not versions:
        return ""
    head = "".join(f'<th><a href="#{h(s.anchor)}">{h(s.key.model)}</a><br><span class="meta">{h(s.key.board)}'
                   f"</span></th>" for s in dash.sections)
    rows = []
    for version in versions:
        row = [f"<th>{h(version)}</th>"]
        for s in dash.sections:
            cell = cells.get((version, s.anchor))
            if cell is None:
                row.append('<td class="st-none"></td>')
                continue
            runs = ", ".join(f"#{r}" for r in cell.runs)
            text = h(", ".join(cell.notes) or cell.status)
            row.append(f'<td class="st-{cell.status}" title="runs {h(runs)}">{text}</td>')
        rows.append("<tr>" + "".join(row) + "</tr>")
    return (f'<h2 id="releases">Chip-runtime releases</h2><div class="card"><table class="matrix"><thead><tr>'
            f'<th>onnxruntime</th>{head}</tr></thead><tbody>{"".join(rows)}</tbody></table></div>')


def _tips(section: Section) -> list[str]:
    return [f"run {p.run.id} · {str(p.run.doc.get('created') or '')[:16]} · onnxruntime "
            f"{p.run.runtime_version or '?'} · {p.run.verdict}" for p in section.points]


def _latency_chart(section: Section, axis: tuple, precision: str) -> str:
    bands = [getattr(p, precision) for p in section.points]
    color = INT8 if precision == "int8" else FP32
    series = [svg.Series(f"{precision.upper()} p50", [b[1] if b else None for b in bands], color,
                         [(b[0], b[2]) if b else None for b in bands])]
    return svg.line_chart(f"{precision.upper()} latency (p50, band p10-p90)", "ms", *axis, series=series,
                          tips=_tips(section), flagged=_flagged(section, "latency", metric=f".{precision}."))


def _speedup_chart(section: Section, axis: tuple) -> str:
    values = [docs.number(docs.section(p.run.doc, "latency").get("speedup")) for p in section.points]
    return svg.line_chart("INT8 speedup over FP32", "x", *axis, series=[svg.Series("speedup", values, INT8)],
                          tips=_tips(section), flagged=_flagged(section, "latency"))


def _accuracy_chart(section: Section, axis: tuple) -> str:
    d = [p.run.doc for p in section.points]
    series = [svg.Series("PC INT8", [docs.accuracy(x, "pc_int8") for x in d], PC, ring=False),
              svg.Series("chip INT8", [docs.accuracy(x, "chip_int8") for x in d], CHIP),
              svg.Series("PC FP32", [docs.accuracy(x, "pc_fp32") for x in d], PC, dashed=True, ring=False),
              svg.Series("chip FP32", [docs.accuracy(x, "chip_fp32") for x in d], CHIP, dashed=True)]
    labelled = all(docs.section(x, "accuracy").get("labelled", True) for x in d)
    title = "accuracy, PC vs chip" if labelled else "top-1 agreement with PC FP32, PC vs chip (no labels)"
    if all(v is None for s in series for v in s.values):
        series = [svg.Series("chip INT8 vs PC INT8", [docs.agreement(x, "chip_int8_vs_pc_int8") for x in d],
                             CHIP)]
        title = "top-1 agreement, chip vs PC (unlabelled data)"
    return svg.line_chart(title, "%", *axis, series=series, tips=_tips(section),
                          flagged=_flagged(section, "accuracy", "bug"))


def _snr_chart(section: Section, axis: tuple) -> str:
    d = [p.run.doc for p in section.points]
    series = [svg.Series(f"{name} chip vs PC", [snr_for_display(docs.min_snr(x, f"chip_{name.lower()}_vs_pc_"
                                                                          f"{name.lower()}")) for x in d], c)
              for name, c in (("INT8", INT8), ("FP32", FP32))]
    return svg.line_chart("fidelity: worst-output SNR, chip vs PC (capped at 60 dB)", "dB", *axis,
                          series=series, tips=_tips(section), flagged=_flagged(section, "fidelity", "bug"))


def _flagged(section: Section, *kinds: str, metric: str = "") -> list[int]:
    """Indexes of runs to ring on a chart: regressions of ``kinds`` (whose metric contains ``metric``);
    chip bugs too when "bug" is one of the kinds."""
    return [i for i, p in enumerate(section.points)
            if any(r["kind"] in kinds and metric in str(r["metric"]) for r in p.regressions)
            or ("bug" in kinds and docs.is_chip_bug(p.run.doc))]


def _charts(section: Section) -> str:
    axis = ([f"#{p.run.id}" for p in section.points], [p.run.runtime_version or "?" for p in section.points])
    emulated = any(docs.section(p.run.doc, "latency").get("emulated") for p in section.points)
    note = " (emulated: not chip latency)" if emulated else ""
    boxes = [(f"INT8 latency over runs{note}", _latency_chart(section, axis, "int8")),
             (f"FP32 latency over runs{note}", _latency_chart(section, axis, "fp32")),
             ("INT8 speedup over FP32", _speedup_chart(section, axis)),
             ("Accuracy, PC vs chip", _accuracy_chart(section, axis)),
             ("Chip-vs-PC fidelity", _snr_chart(section, axis))]
    inner = "".join(f'<div class="chart-box"><h4>{h(t)}</h4>{c}</div>' for t, c in boxes if c)
    return f'<div class="charts">{inner}</div>'


def _band_text(band: tuple | None) -> str:
    return "-" if band is None else f"{band[1]:.4g} [{band[0]:.4g}-{band[2]:.4g}]"


def _run_row(point: Point, pinned: Sequence[int]) -> str:
    run, d = point.run, point.run.doc
    notes = [f"{r['kind']} regression" for r in point.regressions]
    if docs.is_chip_bug(d):
        notes.insert(0, "chip bug" if docs.section(d, "accuracy").get("status") == "bug" else "failed")
    if run.id in pinned:
        notes.append("pinned baseline")
    cls = ' class="flagged"' if point.flagged else ""
    cells = [f"#{run.id}", h(str(d.get("created") or run.recorded_at)[:16].replace("T", " ")),
             h(run.runtime_version), f'<span class="hash">{h(docs.fingerprint(d)["id"])}</span>',
             _verdict(run.verdict)]
    nums = [_band_text(point.int8), _band_text(point.fp32),
            num(docs.number(docs.section(d, "latency").get("speedup")), 3),
            num(docs.accuracy(d, "pc_int8")), num(docs.accuracy(d, "chip_int8")),
            num(docs.accuracy(d, "drop_points"), 3), num(docs.min_snr(d), 3)]
    body = "".join(f"<td>{c}</td>" for c in cells) + "".join(f'<td class="num">{h(c)}</td>' for c in nums)
    return (f'<tr{cls} data-run="{run.id}">{body}<td class="kind-bad">{h(", ".join(notes))}</td>'
            f"<td>{_links(point.links)}</td></tr>")


RUN_HEADERS = ["run", "created (UTC)", "runtime", "fingerprint", "verdict", "INT8 p50 [p10-p90] ms",
               "FP32 p50 [p10-p90] ms", "speedup", "PC INT8 %", "chip INT8 %", "drop pts", "min SNR dB",
               "flags", "reports"]


def _section(section: Section, pinned: Sequence[int]) -> str:
    k = section.key
    first = section.points[0].run.doc
    kind = docs.section(first, "board").get("kind")
    meta = (f'board kind {h(kind)} · FP32 <span class="hash">{h(docs.short_hash(k.fp32_sha256, 12))}</span>'
            f' · config <span class="hash">{h(docs.short_hash(k.config_sha256, 12))}</span> · '
            f"{len(section.points)} run(s)")
    rows = [_run_row(p, pinned) for p in reversed(section.points)]
    return (f'<section class="card" id="{h(section.anchor)}" data-key="{h(k.model)} {h(k.board)}">'
            f"<h3>{h(k.model)} on {h(k.board)}</h3><div class=\"meta\">{meta}</div>{_charts(section)}"
            f"{_table(RUN_HEADERS, rows, 'no runs')}</section>")


FINGERPRINT_HEADERS = ["fingerprint", "boards", "arch", "cpu", "cores", "os", "python", "numpy", "onnxruntime",
                       "providers", "execution provider", "emulated", "runs"]


def _fingerprints(dash: Dashboard) -> str:
    rows = []
    for fp in dash.fingerprints:
        f = fp.fields
        cells = [f'<span class="hash">{h(f["id"])}</span>', h(", ".join(fp.boards))]
        cells += [h(f.get(name)) for name in ("arch", "cpu", "cores", "os", "python", "numpy", "onnxruntime")]
        providers = f.get("providers")
        cells.append(h(", ".join(map(str, providers)) if isinstance(providers, list) else providers))
        emulated = f.get("emulated")
        cells += [h(f.get("execution_provider")), h(None if emulated is None else ("yes" if emulated else "no")),
                  h(f"{len(fp.runs)} (#{fp.runs[0]}-#{fp.runs[-1]})")]
        rows.append("<tr>" + "".join(f"<td>{c}</td>" for c in cells) + "</tr>")
    table = _table(FINGERPRINT_HEADERS, rows, "no runs recorded")
    return f'<h2 id="fingerprints">Device fingerprints</h2><div class="card">{table}</div>'


def page(dash: Dashboard, title: str) -> str:
    """The whole HTML document."""
    sections = "\n".join(_section(s, dash.pinned) for s in dash.sections)
    if not sections:
        sections = '<p class="empty">No runs recorded yet: run xqhil quantize-and-verify.</p>'
    return (f'<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">'
            f'<meta name="viewport" content="width=device-width, initial-scale=1">'
            f"<title>{h(title)}</title><style>{assets.CSS}</style></head><body>"
            f"{_header(dash, title)}<main>{_matrix(dash)}{_flags(dash)}"
            f'<h2 id="models">Per model and board</h2>'
            f'<input id="filter" type="search" placeholder="filter by model or board">\n{sections}\n'
            f"{_fingerprints(dash)}</main><script>{assets.JS}</script></body></html>\n")


def render_dashboard(db_path: str | os.PathLike[str], out_dir: str | os.PathLike[str],
                     title: str = "xqhil run history") -> Path:
    """Write ``out_dir/index.html`` from the history database; return its path."""
    out = Path(out_dir)
    with RunStore.open(db_path, readonly=True) as store:
        html = page(build(store, out), title)
    try:
        write_text_atomic(str(out / "index.html"), html)
    except OSError as exc:
        raise HistoryError(f"cannot write the dashboard to {out}: {exc}", exit_code=3) from exc
    log.info("dashboard of %s written to %s", store.path, out / "index.html")  # store.path: no password
    return out / "index.html"
