"""SQLite store of quantize-and-verify runs.

One file per team or machine (``--db PATH``; default :func:`default_db_path`). The database runs in WAL
mode with a busy timeout and every write is one ``BEGIN IMMEDIATE`` transaction, so several verify runs
(processes) can record at the same time without losing a row. The schema is versioned and migrated on
open (:mod:`xqhil.history.schema`).
"""
from __future__ import annotations

import builtins
import functools
import json
import logging
import os
import sqlite3
import time
from collections.abc import Iterable, Iterator, Mapping
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Callable, TypeVar, Union

from xqhil.history import doc as docs
from xqhil.history import schema
from xqhil.history.dberrors import FULL_BELOW_BYTES, db_error, free_bytes, readonly_reason
from xqhil.history.errors import HistoryError

log = logging.getLogger(__name__)

ENV_DB = "XQHIL_DB"
SELECT_RUN = "SELECT id, recorded_at, doc, model, board, verdict"
# What a dashboard reads for every run without parsing its document (indexed columns of schema version 2).
SUMMARY_COLUMNS = ("id", "recorded_at", "created", "model", "board", "board_kind", "fp32_sha256", "config_sha256",
                   "verdict", "runtime_version", "emulated", "fingerprint", "accuracy_status", "drop_points",
                   "chip_int8_acc", "pc_int8_acc", "int8_p50_ms", "fp32_p50_ms", "speedup", "min_snr_db")
BUSY_TIMEOUT_S = 30.0
PathLike = Union[str, "os.PathLike[str]"]
T = TypeVar("T")


def default_db_path() -> Path:
    """``$XQHIL_DB`` if set, else ``$XDG_DATA_HOME/xqhil/history.sqlite3`` (``~/.local/share`` default)."""
    if os.environ.get(ENV_DB):
        return Path(os.environ[ENV_DB]).expanduser()
    data_home = os.environ.get("XDG_DATA_HOME") or str(Path.home() / ".local" / "share")
    return Path(data_home).expanduser() / "xqhil" / "history.sqlite3"


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
    """Turn the SQLite and OS errors of a store method into a one-line HistoryError."""
    @functools.wraps(method)
    def wrapped(self: RunStore, *args: Any, **kwargs: Any) -> T:
        try:
            return method(self, *args, **kwargs)
        except (OSError, sqlite3.Error) as exc:
            raise db_error(self.path, exc) from exc
    return wrapped


class RunStore:
    """Open with :meth:`open`; use as a context manager to close.

    Every method turns a SQLite or OS error into a one-line HistoryError naming the file and the cause.
    """

    def __init__(self, conn: sqlite3.Connection, path: Path, readonly: bool = False) -> None:
        self.conn = conn
        self.path = path
        self.readonly = readonly

    @classmethod
    def open(cls, path: PathLike | None = None, create: bool = True, readonly: bool = False) -> RunStore:
        """Open the history at ``path`` (default :func:`default_db_path`).

        ``readonly``: for read commands; the file must hold an xqhil history and is opened read-only
        (``mode=ro``, ``immutable`` on read-only media), never migrated in place nor switched to WAL.
        Otherwise it is opened for writing and migrated; ``create`` allows a new (missing or empty) file.
        """
        db = Path(path) if path is not None else default_db_path()
        _check_path(db, create and not readonly)
        try:
            conn = _connect_readonly(db) if readonly else _connect(db)
        except (OSError, sqlite3.Error) as exc:
            raise db_error(db, exc) from exc
        store = cls(conn, db, readonly)
        try:
            store._prepare()
        except (OSError, sqlite3.Error) as exc:
            conn.close()
            raise db_error(db, exc) from exc
        except BaseException:
            conn.close()
            raise
        return store

    def _prepare(self) -> None:
        self.conn.execute(f"PRAGMA busy_timeout = {int(BUSY_TIMEOUT_S * 1000)}")
        version = schema.identify(self.conn, self.path)  # another application's file: refused untouched
        if version > schema.CURRENT_VERSION:
            raise HistoryError(f"history database {self.path} has schema version {version}, newer than this "
                               f"xqhil understands ({schema.CURRENT_VERSION}): upgrade xqhil")
        if self.readonly:
            if version == 0:
                raise HistoryError(f"{self.path} holds no xqhil history (an empty database): run "
                                   "'xqhil quantize-and-verify' to record runs, or pass --db PATH")
            if version < schema.CURRENT_VERSION:
                self._migrate_in_memory()
            return
        self.conn.execute("PRAGMA foreign_keys = ON")
        _retry_locked(lambda: self.conn.execute("PRAGMA journal_mode = WAL").fetchone())
        if version == schema.CURRENT_VERSION:
            return
        with self.write():
            old, new = schema.migrate(self.conn)
        if old == 0:
            log.debug("history database %s created (schema version %d)", self.path, new)
        elif old != new:
            log.info("history database %s: schema version %d -> %d", self.path, old, new)

    def _migrate_in_memory(self) -> None:
        """Read an older history through a migrated copy in memory: the file is never written."""
        memory = sqlite3.connect(":memory:", isolation_level=None)
        self.conn.backup(memory)
        self.conn.close()
        self.conn = memory
        with self.write():
            schema.migrate(memory)

    def check(self) -> None:
        """Before a run records into it: every page readable (quick_check) and a write lock obtainable."""
        try:
            row = self.conn.execute("PRAGMA quick_check(1)").fetchone()
        except sqlite3.Error as exc:
            raise db_error(self.path, exc) from exc
        if not row or row[0] != "ok":
            raise db_error(self.path, sqlite3.DatabaseError(f"database disk image is malformed ({row and row[0]})"))
        try:  # a write that is rolled back: SQLite opens a read-only file without a word until then
            _retry_locked(lambda: self.conn.execute("BEGIN IMMEDIATE"))
            try:
                self.conn.execute("UPDATE schema_version SET version = version")
            finally:
                self.conn.execute("ROLLBACK")
        except sqlite3.Error as exc:
            raise db_error(self.path, exc) from exc

    def close(self) -> None:
        self.conn.close()

    def __enter__(self) -> RunStore:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    @contextmanager
    def write(self) -> Iterator[sqlite3.Connection]:
        """One write transaction; taken IMMEDIATE so concurrent writers queue instead of deadlocking.

        Nested use joins the open transaction, so several writes can commit (or roll back) as one."""
        if self.conn.in_transaction:
            yield self.conn
            return
        try:
            _retry_locked(lambda: self.conn.execute("BEGIN IMMEDIATE"))
        except sqlite3.Error as exc:
            raise db_error(self.path, exc) from exc
        try:
            yield self.conn
            self.conn.execute("COMMIT")
        except BaseException as exc:
            if self.conn.in_transaction:
                with suppress(sqlite3.Error):
                    self.conn.execute("ROLLBACK")
            if isinstance(exc, sqlite3.Error):
                raise db_error(self.path, exc) from exc
            raise

    @property
    @_guard
    def schema_version(self) -> int:
        return schema.read_version(self.conn)

    @_guard
    def record(self, doc: Mapping[str, Any]) -> int:
        """Store one verify document; return the new run id."""
        document = dict(docs.validate(doc))
        values = docs.columns(document)
        values["recorded_at"] = _now()
        values["doc"] = json.dumps(document, sort_keys=True, allow_nan=True)
        names = ", ".join(values)
        marks = ", ".join("?" for _ in values)
        with self.write() as conn:
            cursor = conn.execute(f"INSERT INTO runs ({names}) VALUES ({marks})", list(values.values()))
        run_id = int(cursor.lastrowid or 0)
        log.debug("recorded run %d (%s) in %s", run_id, docs.run_key(document).label(), self.path)
        return run_id

    @_guard
    def get(self, run_id: int) -> RunRecord:
        row = self.conn.execute(f"{SELECT_RUN} FROM runs WHERE id = ?", (run_id,)).fetchone()
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
        rows = self.conn.execute(sql, params).fetchall()
        return [_record(row) for row in reversed(rows)]

    @_guard
    def summaries(self) -> builtins.list[tuple]:
        """Every run's :data:`SUMMARY_COLUMNS` (no document), oldest first: cheap at 100,000 runs."""
        return self.conn.execute(f"SELECT {', '.join(SUMMARY_COLUMNS)} FROM runs ORDER BY id").fetchall()

    @_guard
    def runs_for_key(self, key: docs.RunKey, before: int | None = None) -> builtins.list[RunRecord]:
        """Comparable runs (same model, FP32 hash, board and config), oldest first."""
        sql = (f"{SELECT_RUN} FROM runs WHERE model = ? AND fp32_sha256 IS ? AND board = ? "
               "AND config_sha256 IS ?")
        params: list[Any] = [key.model, key.fp32_sha256, key.board, key.config_sha256]
        if before is not None:
            sql += " AND id < ?"
            params.append(before)
        rows = self.conn.execute(sql + " ORDER BY id", params).fetchall()
        return [_record(row) for row in rows]

    @_guard
    def pin_baseline(self, run_id: int) -> RunRecord:
        """Make ``run_id`` the baseline of its model/board/config, whatever runs come later."""
        run = self.get(run_id)
        key = run.key
        with self.write() as conn:
            conn.execute("DELETE FROM baselines WHERE model = ? AND fp32_sha256 IS ? AND board = ? "
                         "AND config_sha256 IS ?", (key.model, key.fp32_sha256, key.board, key.config_sha256))
            conn.execute("INSERT INTO baselines (model, fp32_sha256, board, config_sha256, run_id, pinned_at) "
                         "VALUES (?, ?, ?, ?, ?, ?)",
                         (key.model, key.fp32_sha256, key.board, key.config_sha256, run_id, _now()))
        return run

    @_guard
    def unpin_baseline(self, run_id: int) -> bool:
        """Drop the pin of ``run_id``'s model/board/config; True when there was one."""
        key = self.get(run_id).key
        with self.write() as conn:
            cursor = conn.execute("DELETE FROM baselines WHERE model = ? AND fp32_sha256 IS ? AND board = ? "
                                  "AND config_sha256 IS ?",
                                  (key.model, key.fp32_sha256, key.board, key.config_sha256))
        return cursor.rowcount > 0

    @_guard
    def pinned_baseline(self, key: docs.RunKey) -> int | None:
        row = self.conn.execute("SELECT run_id FROM baselines WHERE model = ? AND fp32_sha256 IS ? "
                                "AND board = ? AND config_sha256 IS ?",
                                (key.model, key.fp32_sha256, key.board, key.config_sha256)).fetchone()
        return int(row[0]) if row else None

    @_guard
    def pinned_run_ids(self) -> builtins.list[int]:
        return [int(r[0]) for r in self.conn.execute("SELECT run_id FROM baselines").fetchall()]

    @_guard
    def save_regressions(self, run_id: int, baseline_run: int | None,
                         regressions: Iterable[Mapping[str, Any]]) -> None:
        """Replace the stored regression findings of ``run_id``."""
        fields = ("kind", "metric", "baseline", "current", "threshold", "runtime_version", "appeared_run",
                  "message")
        with self.write() as conn:
            conn.execute("DELETE FROM regressions WHERE run_id = ?", (run_id,))
            for item in regressions:
                conn.execute(f"INSERT INTO regressions (run_id, baseline_run, {', '.join(fields)}) "
                             f"VALUES (?, ?, {', '.join('?' for _ in fields)})",
                             [run_id, baseline_run] + [item.get(f) for f in fields])

    @_guard
    def regressions(self, run_id: int | None = None) -> builtins.list[dict[str, Any]]:
        """Stored regression findings (of one run, or all), oldest first."""
        sql = ("SELECT run_id, baseline_run, kind, metric, baseline, current, threshold, runtime_version, "
               "appeared_run, message FROM regressions")
        params: list[Any] = []
        if run_id is not None:
            sql += " WHERE run_id = ?"
            params.append(run_id)
        cursor = self.conn.execute(sql + " ORDER BY id", params)
        names = [d[0] for d in cursor.description]
        return [dict(zip(names, row)) for row in cursor.fetchall()]

    @_guard
    def regressed_run_ids(self) -> set:
        return {int(r[0]) for r in self.conn.execute("SELECT DISTINCT run_id FROM regressions").fetchall()}


def _check_path(db: Path, create: bool) -> None:
    """A read (or ``create=False``) needs an existing, non-empty file; only a write may start one."""
    hint = f"run 'xqhil quantize-and-verify' first or pass --db PATH (or set {ENV_DB})"
    if db.is_dir():
        raise HistoryError(f"history database {db} is a folder, not a file: pass --db PATH to a file")
    if not db.exists():
        if not create:
            raise HistoryError(f"no history database at {db}: {hint}")
        return
    if not create and db.stat().st_size == 0:
        raise HistoryError(f"{db} is empty (0 bytes), not an xqhil history database: {hint}")


def _connect(db: Path) -> sqlite3.Connection:
    db.parent.mkdir(parents=True, exist_ok=True)
    return sqlite3.connect(str(db), timeout=BUSY_TIMEOUT_S, isolation_level=None)


def _connect_readonly(db: Path) -> sqlite3.Connection:
    """``mode=ro``; where SQLite cannot make a WAL file's ``-shm`` (read-only media, a full disk: no
    writer can change the file there either), ``immutable=1``."""
    uri = db.resolve().as_uri()
    conn = sqlite3.connect(f"{uri}?mode=ro", uri=True, timeout=BUSY_TIMEOUT_S, isolation_level=None)
    try:
        conn.execute("SELECT COUNT(*) FROM sqlite_master").fetchone()
        return conn
    except sqlite3.OperationalError as exc:
        conn.close()
        free = free_bytes(db)
        if readonly_reason(db) is None and (free is None or free >= FULL_BELOW_BYTES):
            raise
        log.debug("%s: %s; reading it as immutable (read-only media)", db, exc)
    return sqlite3.connect(f"{uri}?mode=ro&immutable=1", uri=True, isolation_level=None)


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


def _retry_locked(action: Any, deadline_s: float = BUSY_TIMEOUT_S) -> Any:
    """Run ``action``, retrying while SQLite reports the database locked (the busy handler does not
    cover every case, e.g. switching journal mode or BEGIN IMMEDIATE during another's migration)."""
    end = time.monotonic() + deadline_s
    delay = 0.01
    while True:
        try:
            return action()
        except sqlite3.OperationalError as exc:
            if "locked" not in str(exc) or time.monotonic() > end:
                raise
            time.sleep(delay)
            delay = min(delay * 2, 0.25)
