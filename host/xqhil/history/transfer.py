"""``xqhil history export`` / ``import``: a whole history as JSON lines, between SQLite and PostgreSQL.

The file holds one JSON object a line: a header (``{"format": "xqhil.history-export/1", ...}``), then
every run (``"type": "run"``: its id, created and recorded times and the stored document as the exact
text the store holds), every pinned baseline and every regression finding, in id order. Import appends
to the target in one transaction (all or nothing), gives each run a new id and rewrites every reference
to it (baseline pins, a finding's run, baseline run and appeared run, and the ``run N`` in its message)
so the imported history reads as the exported one. A pin for a key the target pins already is kept
if it is newer than the imported one. Importing the same file twice holds every run twice.
"""
from __future__ import annotations

import json
import os
import re
import sys
from collections.abc import Iterable, Iterator
from contextlib import nullcontext
from typing import IO, Any, ContextManager

from xqhil.history.errors import HistoryError
from xqhil.history.store import REGRESSION_FIELDS, RunStore

FORMAT = "xqhil.history-export/1"
BATCH = 500
RUN_IN_MESSAGE = re.compile(r"(\(run |baseline run )(\d+)")


def export_items(store: RunStore) -> Iterator[dict[str, Any]]:
    """The header, then every run (read in batches), baseline pin and regression finding."""
    yield {"format": FORMAT, "schema_version": store.schema_version, "source": str(store.path)}
    for kind, rows in (("run", store.raw_runs(BATCH)), ("baseline", store.raw_baselines()),
                       ("regression", store.regressions())):
        for row in rows:
            yield {"type": kind, **row}


def write_export(store: RunStore, out: IO[str]) -> dict[str, int]:
    """Write the history to ``out`` as JSON lines; return how many runs, baselines and regressions."""
    counts = {"run": 0, "baseline": 0, "regression": 0}
    for item in export_items(store):
        out.write(json.dumps(item, sort_keys=True, allow_nan=True) + "\n")
        if item.get("type") in counts:
            counts[item["type"]] += 1
    return counts


def import_lines(store: RunStore, lines: Iterable[str], where: str) -> dict[str, int]:
    """Append the exported history ``lines`` to ``store`` in one transaction; return what was added."""
    ids: dict[int, int] = {}
    counts = {"run": 0, "baseline": 0, "regression": 0}
    pending: list[dict[str, Any]] = []  # runs are inserted BATCH at a time (one round trip on PostgreSQL)

    def flush() -> None:
        ids.update(zip((item["id"] for item in pending), store.insert_raw_runs(pending)))
        pending.clear()

    with store.write():
        for number, item in _parse(lines, where):
            kind = item.get("type")
            if kind == "run":
                _text(item, "doc", where, number)
                _int(item, "id", where, number)
                pending.append(item)
                if len(pending) >= BATCH:
                    flush()
                counts[kind] += 1
                continue
            flush()
            if kind == "baseline":
                store.import_pin({**item, "run_id": _mapped(ids, item.get("run_id"), where, number)})
            elif kind == "regression":
                store.insert_regression(_remap_regression(item, ids, where, number))
            else:
                raise HistoryError(f"{where} line {number}: unknown record type {kind!r} (run, baseline or "
                                   "regression): is this an 'xqhil history export' file?")
            counts[kind] += 1
        flush()
    return counts


def _parse(lines: Iterable[str], where: str) -> Iterator[tuple[int, dict[str, Any]]]:
    try:
        yield from _parse_lines(lines, where)
    except UnicodeDecodeError as exc:
        raise HistoryError(f"{where}: not UTF-8 text ({exc}): pass a file written by 'xqhil history export'") from exc


def _parse_lines(lines: Iterable[str], where: str) -> Iterator[tuple[int, dict[str, Any]]]:
    header = False
    for number, text in enumerate(lines, 1):
        if not text.strip():
            continue
        try:
            item = json.loads(text)
        except ValueError as exc:
            raise HistoryError(f"{where} line {number}: not JSON ({exc}): pass a file written by "
                               "'xqhil history export'") from exc
        if not isinstance(item, dict):
            raise HistoryError(f"{where} line {number}: not a JSON object")
        if not header:
            if item.get("format") != FORMAT:
                raise HistoryError(f"{where} line {number}: not an xqhil history export (expected a header "
                                   f"with format {FORMAT!r}, got {item.get('format')!r})")
            header = True
            continue
        yield number, item
    if not header:
        raise HistoryError(f"{where} is empty: pass a file written by 'xqhil history export'")


def _int(item: dict[str, Any], name: str, where: str, number: int) -> int:
    value = item.get(name)
    if isinstance(value, bool) or not isinstance(value, int):
        raise HistoryError(f"{where} line {number}: {name} must be an integer, got {value!r}")
    return value


def _text(item: dict[str, Any], name: str, where: str, number: int) -> str:
    value = item.get(name)
    if not isinstance(value, str):
        raise HistoryError(f"{where} line {number}: {name} must be the stored document as a string")
    return value


def _mapped(ids: dict[int, int], old: Any, where: str, number: int) -> int:
    if old not in ids:
        raise HistoryError(f"{where} line {number}: refers to run {old!r}, which is not earlier in the file")
    return ids[old]


def _remap_regression(item: dict[str, Any], ids: dict[int, int], where: str, number: int) -> dict[str, Any]:
    row = {name: item.get(name) for name in ("run_id", "baseline_run") + REGRESSION_FIELDS}
    row["run_id"] = _mapped(ids, row["run_id"], where, number)
    for name in ("baseline_run", "appeared_run"):
        if row[name] is not None:
            row[name] = _mapped(ids, row[name], where, number)
    if isinstance(row["message"], str):
        row["message"] = RUN_IN_MESSAGE.sub(lambda m: m.group(1) + str(ids.get(int(m.group(2)), m.group(2))),
                                            row["message"])
    return row


def open_export_input(path: str) -> ContextManager[IO[str]]:
    """The export file ('-': stdin, left open), or a one-line HistoryError when it cannot be read."""
    if path == "-":
        return nullcontext(sys.stdin)
    if not os.path.isfile(path):
        raise HistoryError(f"no export file at {path}: pass a file written by 'xqhil history export'")
    return open(path, encoding="utf-8")
