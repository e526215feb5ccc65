"""The pages behind the index: one per model/board/config (``pages/<anchor>.html``: charts, the newest runs,
older releases aggregated) and the device fingerprints (``pages/fingerprints.html``)."""
from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

from xqhil.dashboard.charts import charts
from xqhil.dashboard.html import document, h, links, num, table, verdict
from xqhil.dashboard.matrix import Cell, run_state
from xqhil.dashboard.model import KEEP_RUNS, Aggregate, KeyPage, Point, chart_points, median
from xqhil.dashboard.rows import RunRow
from xqhil.history import doc as docs

PAGES = "pages"  # folder of these pages, under the dashboard folder


def _band(band: tuple | None) -> str:
    return "-" if band is None else f"{band[1]:.4g} [{band[0]:.4g}-{band[2]:.4g}]"


def _notes(p: Point, pinned: Sequence[int]) -> list[str]:
    d = p.run.doc
    if p.infra:
        infra = docs.section(d, "infra")
        return [f"infrastructure failure: {infra.get('error') or '?'} (exit {infra.get('exit', 3)})"]
    notes = [f"{r['kind']} regression" for r in p.regressions]
    if docs.is_chip_bug(d):
        notes.insert(0, "chip bug" if docs.section(d, "accuracy").get("status") == "bug" else "failed")
    return notes + (["pinned baseline"] if p.run.id in pinned else [])


def _run_row(p: Point, pinned: Sequence[int]) -> str:
    run, d = p.run, p.run.doc
    cls = ' class="flagged"' if p.flagged else (' class="infra"' if p.infra else "")
    cells = [f"#{run.id}", h(str(d.get("created") or run.recorded_at)[:16].replace("T", " ")),
             h(run.runtime_version), f'<span class="hash">{h(docs.fingerprint(d)["id"])}</span>',
             verdict(run.verdict)]
    nums = [_band(p.int8), _band(p.fp32), num(docs.number(docs.section(d, "latency").get("speedup")), 3),
            num(docs.accuracy(d, "pc_int8")), num(docs.accuracy(d, "chip_int8")),
            num(docs.accuracy(d, "drop_points"), 3), num(docs.min_snr(d), 3)]
    if p.infra:
        nums = ["-"] * len(nums)
    body = "".join(f"<td>{c}</td>" for c in cells) + "".join(f'<td class="num">{h(c)}</td>' for c in nums)
    return (f'<tr{cls} data-run="{run.id}">{body}<td class="kind-bad">{h(", ".join(_notes(p, pinned)))}</td>'
            f"<td>{links(p.links)}</td></tr>")


RUN_HEADERS = ["run", "created (UTC)", "runtime", "fingerprint", "verdict", "INT8 p50 [p10-p90] ms",
               "FP32 p50 [p10-p90] ms", "speedup", "PC INT8 %", "chip INT8 %", "drop pts", "min SNR dB",
               "flags", "reports"]


def _median_text(rows: Sequence[RunRow], attr: str, digits: int = 4) -> str:
    return num(median([getattr(r, attr) for r in rows]), digits)


def _older_row(agg: Aggregate, regressions: dict[int, list[dict[str, Any]]]) -> str:
    cell = Cell()
    for row in agg.rows:
        status, notes = run_state(row, () if row.infra else regressions.get(row.id, ()))
        cell.add(status, notes, row.id)
    m = agg.measured
    values = [_median_text(m, "int8_p50"), _median_text(m, "fp32_p50"), _median_text(m, "speedup", 3),
              _median_text(m, "chip_int8"), _median_text(m, "min_snr", 3)]
    return (f"<tr><td>{h(agg.release)}</td><td>#{agg.rows[0].id}-#{agg.rows[-1].id}</td>"
            f'<td class="num">{len(m)}</td><td class="num">{cell.infra}</td>'
            f'<td class="st-{cell.status}">{h(cell.label)}</td>'
            + "".join(f'<td class="num">{h(v)}</td>' for v in values) + "</tr>")


OLDER_HEADERS = ["runtime", "runs", "measured", "infra", "worst state", "INT8 p50 ms (median)",
                 "FP32 p50 ms (median)", "speedup", "chip INT8 %", "min SNR dB"]


def key_page_html(page: KeyPage, pinned: Sequence[int], title: str) -> str:
    k = page.key
    kind = next((docs.section(p.run.doc, "board").get("kind") for p in page.points), None)
    older = sum(len(a.rows) for a in page.older)
    meta = (f'board kind {h(kind)} · FP32 <span class="hash">{h(docs.short_hash(k.fp32_sha256, 12))}</span>'
            f' · config <span class="hash">{h(docs.short_hash(k.config_sha256, 12))}</span> · '
            f"{page.total} run(s)" + (f": the newest {KEEP_RUNS} one by one, {older} older ones aggregated "
                                      f"per runtime release" if older else ""))
    rows = [_run_row(p, pinned) for p in reversed(page.points)]
    olds = [_older_row(a, page.regressions) for a in reversed(page.older)]
    body = (f'<header><div class="meta"><a href="../index.html">&larr; {h(title)}</a></div>'
            f"<h1>{h(k.model)} on {h(k.board)}</h1><div class=\"meta\">{meta}</div></header>"
            f'<main><section class="card" id="{h(page.anchor)}" data-key="{h(k.model)} {h(k.board)}">'
            f"{charts(chart_points(page), page.emulated)}"
            f'<h2>Newest runs</h2><div class="scroll">{table(RUN_HEADERS, rows, "no runs")}</div>'
            + (f'<h2>Older runs, per runtime release</h2><div class="scroll">'
               f'{table(OLDER_HEADERS, olds, "none")}</div>' if olds else "")
            + "</section></main>")
    return document(f"{k.model} on {k.board} · {title}", body)


FINGERPRINT_HEADERS = ["fingerprint", "boards", "arch", "cpu", "cores", "os", "python", "numpy", "onnxruntime",
                       "providers", "execution provider", "emulated", "runs"]


def _fingerprint_row(fields: dict[str, Any], boards: list[str], runs: list[int]) -> str:
    cells = [f'<span class="hash">{h(fields["id"])}</span>', h(", ".join(boards))]
    cells += [h(fields.get(name)) for name in ("arch", "cpu", "cores", "os", "python", "numpy", "onnxruntime")]
    providers = fields.get("providers")
    cells.append(h(", ".join(map(str, providers)) if isinstance(providers, list) else providers))
    emulated = fields.get("emulated")
    cells += [h(fields.get("execution_provider")), h(None if emulated is None else ("yes" if emulated else "no")),
              h(f"{len(runs)} (#{runs[0]}-#{runs[-1]})")]
    return "<tr>" + "".join(f"<td>{c}</td>" for c in cells) + "</tr>"


def fingerprints_html(rows: Sequence[RunRow], get_doc: Callable[[int], dict[str, Any]], title: str) -> str:
    """Every distinct device (newest first) with its boards and runs; one document read per device."""
    found: dict[str, tuple[list[str], list[int]]] = {}
    for row in rows:
        if row.infra:
            continue
        boards, runs = found.setdefault(row.fingerprint or "-", ([], []))
        if row.board not in boards:
            boards.append(row.board)
        runs.append(row.id)
    ordered = sorted(found.values(), key=lambda x: -x[1][-1])
    lines = [_fingerprint_row(docs.fingerprint(get_doc(runs[0])), boards, runs) for boards, runs in ordered]
    body = (f'<header><div class="meta"><a href="../index.html">&larr; {h(title)}</a></div>'
            f'<h1>Device fingerprints</h1><div class="meta">{len(lines)} distinct devices, newest first</div>'
            f'</header><main><div class="card scroll" id="fingerprints">'
            f'{table(FINGERPRINT_HEADERS, lines, "no runs recorded")}</div></main>')
    return document(f"Device fingerprints · {title}", body)
