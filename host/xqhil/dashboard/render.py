"""Write the dashboard: ``index.html`` reads like a release report (what the newest runtime release changed,
board health, the model x release matrix per board, the newest flagged runs), and one page per
model/board/config under ``pages/`` with the charts, loaded only when opened. Static files: inline CSS,
inline SVG, a few lines of inline script; nothing is fetched from anywhere; every string from the
database is escaped. Built from the runs' indexed columns; documents are read only for what a page shows
in detail, so the pages stay small at 100,000 runs."""
from __future__ import annotations

import logging
import os
from collections.abc import Sequence
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from xqhil.dashboard.health import BoardHealth, board_health
from xqhil.dashboard.html import document, h, links, table, verdict
from xqhil.dashboard.matrix import Change, Line, Matrix, changes, release_matrix
from xqhil.dashboard.model import key_page, report_links
from xqhil.dashboard.pages import PAGES, fingerprints_html, key_page_html
from xqhil.dashboard.rows import RunRow, anchor, group_by_key, load_rows, regressions_by_run
from xqhil.history import doc as docs
from xqhil.history.errors import HistoryError
from xqhil.history.store import RunStore
from xquant.model_io import write_text_atomic

log = logging.getLogger(__name__)

VISIBLE_RELEASES = 8  # newest releases with a column of their own; older ones share one column
FLAGGED_SHOWN = 50  # newest flagged runs listed on the index


def _page_href(anchor: str) -> str:
    return f"{PAGES}/{anchor}.html"


def _board_id(board: str) -> str:
    return "b-" + "".join(c if c.isalnum() else "-" for c in board)


def _tiles(rows: Sequence[RunRow], matrix: Matrix, found: Sequence[Change]) -> str:
    infra = sum(r.infra for r in rows)
    new = sum(c.kind in ("new bug", "new regression") for c in found)
    items = [("runs", len(rows), ""), ("infra failures", infra, "bad" if infra else ""),
             ("models", len({line.key.model for line in matrix.lines}), ""), ("boards", len(matrix.boards()), ""),
             ("runtime releases", len(matrix.releases), ""), ("new in newest release", new, "bad" if new else "")]
    return '<div class="tiles">' + "".join(
        f'<div class="tile {cls}"><b>{value}</b>{h(name)}</div>' for name, value, cls in items) + "</div>"


def _header(db: str, title: str, tiles: str) -> str:
    generated = datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    nav = "".join(f'<a href="#{a}">{t}</a>' for a, t in (("changes", "What changed"), ("boards", "Boards"),
                                                         ("releases", "Releases"), ("flagged", "Flagged runs")))
    nav += f'<a href="{PAGES}/fingerprints.html">Device fingerprints</a>'
    return (f"<header><h1>{h(title)}</h1><div class=\"meta\">database {h(db)} · generated {h(generated)}</div>"
            f"{tiles}<nav>{nav}</nav></header>")


def _change_row(c: Change) -> str:
    k = c.line.key
    was = "-" if c.was is None else f'{h(c.before)}: <span class="st-{c.was.status}">{h(c.was.label)}</span>'
    return (f'<tr class="change" data-change="{h(c.kind)}"><td class="ch-{c.kind.replace(" ", "-")}">'
            f'{h(c.kind)}</td><td><a href="{_page_href(c.line.anchor)}">{h(k.model)}</a></td><td>{h(k.board)}</td>'
            f'<td class="st-{c.now.status}">{h(c.now.label)}</td><td>{was}</td></tr>')


def _changes(matrix: Matrix, found: Sequence[Change], unmeasured: Sequence[Line]) -> str:
    if not matrix.releases:
        return ('<h2 id="changes">What changed</h2><p class="empty">No runs recorded yet: run xqhil '
                "quantize-and-verify.</p>" if not matrix.lines else
                '<h2 id="changes">What changed</h2><p class="empty">No measurement yet: every run recorded '
                "failed for infrastructure reasons (see Boards).</p>")
    newest = matrix.releases[0]
    against = f" against {h(matrix.releases[1])} and earlier" if len(matrix.releases) > 1 else ""
    rows = [_change_row(c) for c in found]
    out = (f'<h2 id="changes">What changed in onnxruntime {h(newest)}<span class="meta"> (newest release,'
           f"{against})</span></h2><div class=\"card\">"
           + table(["change", "model", "board", f"with {newest}", "before"], rows,
                   f"nothing broke and nothing recovered in {newest}", cls="changes"))
    if unmeasured:
        names = ", ".join(f"{line.key.model} on {line.key.board}" for line in unmeasured[:12])
        more = f" and {len(unmeasured) - 12} more" if len(unmeasured) > 12 else ""
        out += (f'<p class="meta" id="unmeasured">not measured with {h(newest)} yet ({len(unmeasured)}): '
                f"{h(names)}{h(more)}</p>")
    return out + "</div>"


def _health_row(b: BoardHealth) -> str:
    quarantined = "-" if b.quarantined is None else ("yes" if b.quarantined else "no")
    measured = "-" if b.last_measured is None else f"#{b.last_measured.id} ({h(b.last_measured.when)})"
    return (f'<tr data-board="{h(b.board)}"><td><a href="#{_board_id(b.board)}">{h(b.board)}</a></td>'
            f'<td>{h(b.kind)}</td><td class="health-{b.state}">{h(b.state)}</td>'
            f"<td>#{b.last.id} ({h(b.last.when)})</td><td>{verdict(b.last.verdict)}</td>"
            f'<td class="num">{b.infra_streak}</td><td>{quarantined}</td><td>{h(b.last_error)}</td>'
            f"<td>{measured}</td><td class=\"num\">{b.runs} ({b.infra_runs} infra)</td></tr>")


def _health(health: Sequence[BoardHealth]) -> str:
    headers = ["board", "kind", "health", "last run", "last verdict", "infra failures in a row", "quarantined",
               "last infra error", "last measurement", "runs"]
    return (f'<h2 id="boards">Boards</h2><div class="card">'
            f'{table(headers, map(_health_row, health), "no runs recorded", cls="health")}</div>')


def _cell(matrix: Matrix, release: str, line: Line) -> str:
    cell = matrix.cell(release, line)
    if cell is None:
        return '<td class="st-none"></td>'
    runs = cell.runs
    title = f"{len(runs)} run(s): #{runs[0]}" + (f" ... #{runs[-1]}" if len(runs) > 1 else "")
    if cell.infra:
        title += f", {cell.infra} infrastructure failure(s)"
    return f'<td class="st-{cell.status}" title="{h(title)}">{h(cell.label)}</td>'


def _older_cell(matrix: Matrix, older: Sequence[str], line: Line) -> str:
    cells = [(r, matrix.cell(r, line)) for r in older]
    measured = [(r, c) for r, c in cells if c is not None and c.status != "none"]
    bugs = [r for r, c in measured if c.status == "bug"]
    slow = [r for r, c in measured if c.status == "regression"]
    if not measured:
        return '<td class="st-none"></td>'
    text = f"{len(measured)} releases" + (f": {len(bugs)} bug" if bugs else "") + (
        f"{', ' if bugs else ': '}{len(slow)} regr." if slow else (" ok" if not bugs else ""))
    title = "; ".join(x for x in (f"bug in {', '.join(bugs[:20])}" if bugs else "",
                                  f"regression in {', '.join(slow[:20])}" if slow else "") if x)
    return f'<td class="st-old" title="{h(title or "no bug, no regression")}">{h(text)}</td>'


def _matrix(matrix: Matrix) -> str:
    if not matrix.releases:
        return ""
    visible, older = matrix.releases[:VISIBLE_RELEASES], matrix.releases[VISIBLE_RELEASES:]
    head = '<th class="model">model</th>' + "".join(f"<th>{h(v)}</th>" for v in visible)
    head += f"<th>older ({len(older)} releases)</th>" if older else ""
    configs: dict[tuple[str, str], int] = {}
    for line in matrix.lines:
        configs[(line.key.model, line.key.board)] = configs.get((line.key.model, line.key.board), 0) + 1
    groups = []
    for board in matrix.boards():
        rows = []
        for line in (x for x in matrix.lines if x.key.board == board):
            extra = (f' <span class="hash">{h(docs.short_hash(line.key.config_sha256))}</span>'
                     if configs[(line.key.model, board)] > 1 else "")
            cells = "".join(_cell(matrix, v, line) for v in visible)
            cells += _older_cell(matrix, older, line) if older else ""
            rows.append(f'<tr><th class="model"><a href="{_page_href(line.anchor)}">{h(line.key.model)}</a>'
                        f"{extra}</th>{cells}</tr>")
        groups.append(f'<div class="card board-group" id="{_board_id(board)}" data-board="{h(board)}">'
                      f'<h3>{h(board)}</h3><table class="matrix"><thead><tr>{head}</tr></thead>'
                      f'<tbody>{"".join(rows)}</tbody></table></div>')
    options = "".join(f'<option value="{h(b)}">{h(b)}</option>' for b in matrix.boards())
    return (f'<h2 id="releases">Runtime releases, newest first</h2><label class="meta">board '
            f'<select id="board-filter"><option value="">all boards</option>{options}</select></label>'
            f'{"".join(groups)}')


def _flag_items(doc: dict[str, Any], regressions: Sequence[dict[str, Any]]) -> list[tuple[str, str]]:
    items = []
    if docs.is_chip_bug(doc):
        reasons = "; ".join(str(r) for r in doc.get("reasons") or []) or "verdict fail"
        status = docs.section(doc, "accuracy").get("status")
        items.append(("chip bug" if status == "bug" else "verify failed", reasons))
    return items + [(f"{item['kind']} regression", str(item["message"])) for item in regressions]


def _flagged(store: RunStore, rows: Sequence[RunRow], regs: dict[int, list[dict[str, Any]]], out: Path) -> str:
    flagged = [r for r in reversed(rows) if not r.infra and (r.chip_bug or r.id in regs)]
    lines = []
    for row in flagged[:FLAGGED_SHOWN]:
        doc = store.get(row.id).doc
        items = _flag_items(doc, regs.get(row.id, []))
        kinds = "<br>".join(h(kind) for kind in dict.fromkeys(k for k, _ in items))
        what = "".join(f"<li>{h(message)}</li>" for _, message in items)
        lines.append(f'<tr class="flagged" data-flag-run="{row.id}"><td><a href="{_page_href(anchor(row.key))}">'
                     f"#{row.id}</a></td><td>{h(row.when)}</td><td>{h(row.model)}</td><td>{h(row.board)}</td>"
                     f'<td>{h(row.runtime)}</td><td class="kind-bad">{kinds}</td><td><ul class="what">{what}</ul>'
                     f"</td><td>{links(report_links(doc, out))}</td></tr>")
    more = (f'<p class="meta">the newest {FLAGGED_SHOWN} of {len(flagged)} flagged runs; the others are on '
            "their model pages</p>" if len(flagged) > FLAGGED_SHOWN else "")
    body = table(["run", "created (UTC)", "model", "board", "runtime", "kind", "what", "reports"], lines,
                 "nothing flagged: no chip-runtime bug and no regression recorded")
    return (f'<h2 id="flagged">Flagged chip-runtime bugs and regressions, newest first</h2>'
            f'<div class="card">{body}{more}</div>')


def _write(path: Path, text: str) -> None:
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        write_text_atomic(str(path), text)
    except OSError as exc:
        raise HistoryError(f"cannot write the dashboard to {path.parent}: {exc}", exit_code=3) from exc


def _write_pages(store: RunStore, rows: Sequence[RunRow], by_key: dict[docs.RunKey, list[RunRow]],
                 regs: dict[int, list[dict[str, Any]]], out: Path, title: str) -> None:
    """One page per model/board/config and the fingerprints page; stale pages of an earlier render go."""
    pages, pinned = out / PAGES, store.pinned_run_ids()
    written = set()
    for key_rows in by_key.values():
        page = key_page(store, key_rows, regs, pages)
        _write(pages / f"{page.anchor}.html", key_page_html(page, pinned, title))
        written.add(f"{page.anchor}.html")
    _write(pages / "fingerprints.html", fingerprints_html(rows, lambda i: store.get(i).doc, title))
    written.add("fingerprints.html")
    for stale in pages.glob("*.html"):
        if stale.name not in written:
            stale.unlink()


def index_html(store: RunStore, rows: Sequence[RunRow], by_key: dict[docs.RunKey, list[RunRow]],
               regs: dict[int, list[dict[str, Any]]], out: Path, title: str) -> str:
    matrix = release_matrix(by_key, regs)
    found, unmeasured = changes(matrix)
    health = board_health(rows, lambda i: store.get(i).doc)
    body = (f"{_header(str(store.path), title, _tiles(rows, matrix, found))}<main>"
            f"{_changes(matrix, found, unmeasured)}{_health(health) if rows else ''}{_matrix(matrix)}"
            f"{_flagged(store, rows, regs, out)}</main>")
    return document(title, body)


def render_dashboard(db_path: str | os.PathLike[str], out_dir: str | os.PathLike[str],
                     title: str = "xqhil run history") -> Path:
    """Write ``out_dir/index.html`` and ``out_dir/pages/*.html`` from the history; return the index path.
    The index is written last, so it never links to a page that is not there yet."""
    out = Path(out_dir)
    with RunStore.open(db_path, readonly=True) as store:
        rows = load_rows(store)
        regs, by_key = regressions_by_run(store), group_by_key(rows)
        html = index_html(store, rows, by_key, regs, out, title)
        _write_pages(store, rows, by_key, regs, out, title)
    _write(out / "index.html", html)
    log.info("dashboard of %s written to %s", store.path, out / "index.html")  # store.path: no password
    return out / "index.html"
