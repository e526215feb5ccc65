"""The store of quantize-and-verify runs: one interface, two backends.

``RunStore.open(db)`` opens a SQLite file (a path: the embedded default, :func:`default_db`) or a
PostgreSQL database (a ``postgresql://`` URL, for a team's shared history), migrated to the current
schema (:mod:`xqhil.history.schema`). The queries are written once; the backend
(:mod:`~xqhil.history.sqlite_backend`, :mod:`~xqhil.history.pg_backend`) connects, runs each write as
one transaction that concurrent writers queue for, and turns its errors into one-line HistoryErrors.
``store.path`` is what messages show (a file path, or the URL without its password).
"""
from __future__ import annotations

import builtins
import functools
import json
import logging
import os
from collections.abc import Iterable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Callable, TypeVar, Union

from xqhil.history import doc as docs
from xqhil.history import schema
from xqhil.history.dsn import ENV_DB, default_db, is_dsn
from xqhil.history.errors import HistoryError
from xqhil.history.sqlite_backend import BUSY_TIMEOUT_S, SqliteBackend

log = logging.getLogger(__name__)

REGRESSION_FIELDS = ("kind", "metric", "baseline", "current", "threshold", "runtime_version", "appeared_run",
                     "message")
RAW_RUN = ("id", "created", "recorded_at", "doc", "model", "board", "verdict", "config_sha256")
SELECT_RUN = "SELECT id, recorded_at, doc, model, board, verdict"
KEY_MATCH = "model = ? AND fp32_sha256 IS ? AND board = ? AND config_sha256 IS ?"
# What a dashboard reads for every run without parsing its document (indexed columns of schema version 2).
SUMMARY_COLUMNS = ("id", "recorded_at", "created", "model", "board", "board_kind", "fp32_sha256", "config_sha256",
                   "verdict", "runtime_version", "emulated", "fingerprint", "accuracy_status", "drop_points",
                   "chip_int8_acc", "pc_int8_acc", "int8_p50_ms", "fp32_p50_ms", "speedup", "min_snr_db")
PathLike = Union[str, "os.PathLike[str]"]
T = TypeVar("T")
__all__ = ["BUSY_TIMEOUT_S", "ENV_DB", "RunRecord", "RunStore", "default_db", "default_db_path", "open_store"]


def default_db_path() -> Path | str:
    """The history used without ``--db``: see :func:`xqhil.history.dsn.default_db`."""
    return default_db()


@dataclass(frozen=True)
class RunRecord:
    """One recorded run: its id, when it was recorded, and the verify document as written."""

    id: int
    recorded_at: str
    doc: dict[str, Any]

    @property
    def key(self) -> docs.RunKey:
        return docs.run_key(self.doc)

    @property
    def verdict(self) -> str:
        return str(self.doc.get("verdict"))

    @property
    def runtime_version(self) -> str | None:
        return docs.runtime_version(self.doc)


def _guard(method: Callable[..., T]) -> Callable[..., T]:
    """Turn the backend's database and OS errors of a store method into a one-line HistoryError."""
    @functools.wraps(method)
    def wrapped(self: RunStore, *args: Any, **kwargs: Any) -> T:
        try:
            return method(self, *args, **kwargs)
        except self.backend.errors as exc:
            raise self.backend.error(exc) from exc
    return wrapped


class RunStore:
    """Open with :meth:`open`; use as a context manager to close.

    Every method turns a database or OS error into a one-line HistoryError naming the database and the cause.
    """

    def __init__(self, backend: Any) -> None:
        self.backend = backend

    @classmethod
    def open(cls, path: PathLike | None = None, create: bool = True, readonly: bool = False) -> RunStore:
        """Open the history at ``path`` (a file path or a ``postgresql://`` URL; default :func:`default_db`).

        ``readonly``: for read commands; the database must hold an xqhil history. A SQLite file is then
        opened read-only (``mode=ro``, ``immutable`` on read-only media), never migrated in place nor
        switched to WAL. Otherwise it is opened for writing and migrated; ``create`` allows a new (missing
        or empty) database.
        """
        db = path if path is not None else default_db()
        if is_dsn(db):
            from xqhil.history.pg_backend import PgBackend

            return cls(PgBackend.open(str(db), create, readonly))
        return cls(SqliteBackend.open(Path(db), create, readonly))

    @property
    def path(self) -> Any:
        """The database as messages show it: a file path, or the URL with its password hidden."""
        return self.backend.path

    @property
    def target(self) -> Any:
        """What :meth:`open` takes to open this database again (a URL keeps its password: do not print)."""
        return self.backend.target

    @property
    def conn(self) -> Any:
        """The backend's DB-API connection (sqlite3 or psycopg); queries through it are backend-specific."""
        return self.backend.conn

    @property
    def readonly(self) -> bool:
        return bool(self.backend.readonly)

    @property
    def kind(self) -> str:
        """``sqlite`` or ``postgresql``."""
        return str(self.backend.name)

    def check(self) -> None:
        """Before a run records into it: the database is readable and a write lock obtainable."""
        self.backend.check()

    def close(self) -> None:
        self.backend.close()

    def __enter__(self) -> RunStore:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    @contextmanager
    def write(self) -> Iterator[Any]:
        """One write transaction that concurrent writers queue for; nested use joins the open one, so
        several writes commit (or roll back) as one."""
        with self.backend.write() as backend:
            yield backend

    def _query(self, sql: str, params: Iterable[Any] = ()) -> Any:
        return self.backend.execute(sql, list(params))

    @property
    @_guard
    def schema_version(self) -> int:
        return schema.read_version(self.backend)

    @_guard
    def record(self, doc: Mapping[str, Any]) -> int:
        """Store one verify document; return the new run id."""
        document = dict(docs.validate(doc))
        values = docs.columns(document)
        values["recorded_at"] = _now()
        values["doc"] = json.dumps(document, sort_keys=True, allow_nan=True)
        run_id = self._insert("runs", values)
        log.debug("recorded run %d (%s) in %s", run_id, docs.run_key(document).label(), self.path)
        return run_id

    @_guard
    def get(self, run_id: int) -> RunRecord:
        row = self._query(f"{SELECT_RUN} FROM runs WHERE id = ?", (run_id,)).fetchone()
        if row is None:
            raise HistoryError(f"no run {run_id} in {self.path}: 'xqhil history' lists the run ids")
        return _record(row)

    @_guard
    def list(self, model: str | None = None, board: str | None = None, runtime: str | None = None,
             verdict: str | None = None, limit: int | None = None) -> builtins.list[RunRecord]:
        """Runs matching every given filter, oldest first (the newest ``limit`` when given)."""
        where, params = [], []  # type: List[str], List[Any]
        for column, value in (("model", model), ("board", board), ("runtime_version", runtime),
                              ("verdict", verdict)):
            if value is not None:
                where.append(f"{column} = ?")
                params.append(value)
        sql = f"{SELECT_RUN} FROM runs"
        if where:
            sql += " WHERE " + " AND ".join(where)
        sql += " ORDER BY id DESC"
        if limit is not None:
            sql += f" LIMIT {int(limit)}"
        rows = self._query(sql, params).fetchall()
        return [_record(row) for row in reversed(rows)]

    @_guard
    def summaries(self) -> builtins.list[tuple]:
        """Every run's :data:`SUMMARY_COLUMNS` (no document), oldest first: cheap at 100,000 runs."""
        return self._query(f"SELECT {', '.join(SUMMARY_COLUMNS)} FROM runs ORDER BY id").fetchall()

    @_guard
    def runs_for_key(self, key: docs.RunKey, before: int | None = None, after: int | None = None,
                     clean: bool = False, limit: int | None = None) -> builtins.list[RunRecord]:
        """Comparable runs (same model, FP32 hash, board and config), oldest first: ids between ``after``
        and ``before`` (both excluded); ``clean``: only runs that passed and showed no regression;
        ``limit``: only the newest that many (only their documents are read)."""
        sql = f"{SELECT_RUN} FROM runs WHERE {KEY_MATCH}"
        params: list[Any] = _key_params(key)
        for bound, op in ((before, "<"), (after, ">")):
            if bound is not None:
                sql += f" AND id {op} ?"
                params.append(bound)
        if clean:
            sql += " AND verdict = 'pass' AND id NOT IN (SELECT run_id FROM regressions)"
        sql += " ORDER BY id DESC" + (f" LIMIT {int(limit)}" if limit is not None else "")
        rows = self._query(sql, params).fetchall()
        return [_record(row) for row in reversed(rows)]

    @_guard
    def pin_baseline(self, run_id: int) -> RunRecord:
        """Make ``run_id`` the baseline of its model/board/config, whatever runs come later."""
        run = self.get(run_id)
        if run.verdict == docs.INFRA:
            raise HistoryError(f"run {run_id} is an infrastructure failure (verdict INFRA), not a measurement: "
                               "pin a run that passed")
        key = run.key
        with self.write():
            self._pin(key, run_id, _now())
        return run

    def _pin(self, key: docs.RunKey, run_id: int, pinned_at: str) -> None:
        self._query(f"DELETE FROM baselines WHERE {KEY_MATCH}", _key_params(key))
        self._query("INSERT INTO baselines (model, fp32_sha256, board, config_sha256, run_id, pinned_at) "
                    "VALUES (?, ?, ?, ?, ?, ?)", _key_params(key) + [run_id, pinned_at])

    @_guard
    def unpin_baseline(self, run_id: int) -> bool:
        """Drop the pin of ``run_id``'s model/board/config; True when there was one."""
        key = self.get(run_id).key
        with self.write():
            cursor = self._query(f"DELETE FROM baselines WHERE {KEY_MATCH}", _key_params(key))
        return cursor.rowcount > 0

    @_guard
    def pinned_baseline(self, key: docs.RunKey) -> int | None:
        row = self._query(f"SELECT run_id FROM baselines WHERE {KEY_MATCH}", _key_params(key)).fetchone()
        return int(row[0]) if row else None

    @_guard
    def pinned_run_ids(self) -> builtins.list[int]:
        return [int(r[0]) for r in self._query("SELECT run_id FROM baselines").fetchall()]

    @_guard
    def save_regressions(self, run_id: int, baseline_run: int | None,
                         regressions: Iterable[Mapping[str, Any]]) -> None:
        """Replace the stored regression findings of ``run_id``."""
        with self.write():
            self._query("DELETE FROM regressions WHERE run_id = ?", (run_id,))
            for item in regressions:
                self._insert("regressions", {"run_id": run_id, "baseline_run": baseline_run,
                                             **{f: item.get(f) for f in REGRESSION_FIELDS}})

    @_guard
    def regressions(self, run_id: int | None = None) -> builtins.list[dict[str, Any]]:
        """Stored regression findings (of one run, or all), oldest first."""
        sql = f"SELECT run_id, baseline_run, {', '.join(REGRESSION_FIELDS)} FROM regressions"
        params: list[Any] = []
        if run_id is not None:
            sql += " WHERE run_id = ?"
            params.append(run_id)
        cursor = self._query(sql + " ORDER BY id", params)
        names = [d[0] for d in cursor.description]
        return [dict(zip(names, row)) for row in cursor.fetchall()]

    def _insert(self, table: str, values: Mapping[str, Any]) -> int:
        """Insert one row inside a write transaction; return its new id."""
        names = ", ".join(values)
        marks = ", ".join("?" for _ in values)
        with self.write():
            rows = self._query(f"INSERT INTO {table} ({names}) VALUES ({marks}) RETURNING id", values.values())
            return int(rows.fetchall()[0][0])

    # ---- whole-history transfer (xqhil.history.transfer): rows as stored, ids as they are
    def raw_runs(self, batch: int = 500) -> Iterator[dict[str, Any]]:
        """Every run as stored (the document as its exact text), in id order, read ``batch`` at a time."""
        last = 0
        while True:
            rows = self._guarded_rows(f"SELECT {', '.join(RAW_RUN)} FROM runs WHERE id > ? ORDER BY id "
                                      f"LIMIT {int(batch)}", [last])
            yield from (dict(zip(RAW_RUN, row)) for row in rows)
            if len(rows) < batch:
                return
            last = rows[-1][0]

    @_guard
    def raw_baselines(self) -> builtins.list[dict[str, Any]]:
        names = ("run_id", "pinned_at", "model", "fp32_sha256", "board", "config_sha256")
        rows = self._query(f"SELECT {', '.join(names)} FROM baselines ORDER BY pinned_at, run_id").fetchall()
        return [dict(zip(names, row)) for row in rows]

    @_guard
    def insert_raw_runs(self, items: Iterable[Mapping[str, Any]]) -> builtins.list[int]:
        """Add runs exported by :meth:`raw_runs` (times and documents kept), in one write; their new ids."""
        rows = [_raw_columns(item) for item in items]
        if not rows:
            return []
        names = builtins.list(rows[0])
        sql = f"INSERT INTO runs ({', '.join(names)}) VALUES ({', '.join('?' for _ in names)}) RETURNING id"
        with self.write():
            return self.backend.insert_many(sql, [[row[n] for n in names] for row in rows])

    @_guard
    def import_pin(self, item: Mapping[str, Any]) -> None:
        """Pin ``item["run_id"]`` for ``item``'s key unless the key has a pin at least as new."""
        key = docs.RunKey(model=item["model"], fp32_sha256=item.get("fp32_sha256"), board=item["board"],
                          config_sha256=item.get("config_sha256"))
        with self.write():
            row = self._query(f"SELECT pinned_at FROM baselines WHERE {KEY_MATCH}", _key_params(key)).fetchone()
            if row is None or str(row[0]) < str(item.get("pinned_at") or ""):
                self._pin(key, int(item["run_id"]), str(item.get("pinned_at") or _now()))

    @_guard
    def insert_regression(self, row: Mapping[str, Any]) -> int:
        return self._insert("regressions", {name: row.get(name) for name in ("run_id", "baseline_run")
                                            + REGRESSION_FIELDS})

    def _guarded_rows(self, sql: str, params: Iterable[Any]) -> builtins.list[Any]:
        try:
            return list(self._query(sql, params).fetchall())
        except self.backend.errors as exc:
            raise self.backend.error(exc) from exc

    @_guard
    def regressed_run_ids(self) -> set:
        return {int(r[0]) for r in self._query("SELECT DISTINCT run_id FROM regressions").fetchall()}


def _record(row: Any) -> RunRecord:
    try:
        doc = json.loads(row[2])
    except ValueError as exc:  # keep listing the other runs; say what is wrong with this one
        log.warning("run %s: stored document unreadable (%s)", row[0], exc)
        doc = {"verdict": row[5], "model": {"name": row[3]}, "board": {"name": row[4]},
               "reasons": [f"stored document unreadable: {exc}"]}
    return RunRecord(int(row[0]), str(row[1] or ""), doc)


def _now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds").replace("+00:00", "Z")


def _raw_columns(item: Mapping[str, Any]) -> dict[str, Any]:
    """The row of an exported run: its stored fields, the queryable columns rebuilt from its document."""
    values = {name: item.get(name) for name in RAW_RUN if name != "id"}
    values.update({name: None for name, _ in schema.V2_COLUMNS if name != "recorded_at"})
    try:
        values.update(docs.columns(json.loads(str(values["doc"]))))
    except (ValueError, TypeError, AttributeError):  # an unreadable document keeps its stored columns
        for name in ("model", "board", "verdict", "config_sha256"):
            values[name] = item.get(name)
    values["created"] = item.get("created") or values.get("created") or ""
    return values


def _key_params(key: docs.RunKey) -> list[Any]:
    return [key.model, key.fp32_sha256, key.board, key.config_sha256]


def open_store(db: PathLike | None = None, create: bool = True, readonly: bool = False) -> RunStore:
    """:meth:`RunStore.open`: a SQLite path or a ``postgresql://user:password@host:port/dbname`` URL."""
    return RunStore.open(db, create=create, readonly=readonly)
