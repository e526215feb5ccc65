"""The embedded backend: one SQLite file, WAL mode, a busy timeout, every write one ``BEGIN IMMEDIATE``.

Several processes can record at the same time without losing a row. A read command opens the file
read-only (``mode=ro``; ``immutable`` on read-only media) and reads an older schema through a migrated
copy in memory, so the file is never written by a read.
"""
from __future__ import annotations

import logging
import sqlite3
import time
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from pathlib import Path
from typing import Any

from xqhil.history import schema
from xqhil.history.dberrors import FULL_BELOW_BYTES, db_error, free_bytes, readonly_reason
from xqhil.history.dsn import ENV_DB, redact
from xqhil.history.errors import HistoryError

log = logging.getLogger(__name__)

BUSY_TIMEOUT_S = 30.0


class SqliteBackend:
    """A SQLite connection with what the store and the migrations need (see :class:`schema.Database`)."""

    name = "sqlite"
    errors: tuple[type[BaseException], ...] = (OSError, sqlite3.Error)

    def __init__(self, conn: sqlite3.Connection, path: Path, readonly: bool) -> None:
        self.conn = conn
        self.path = path  # what messages show
        self.target = path  # what reopens it
        self.readonly = readonly

    @classmethod
    def open(cls, path: Path, create: bool, readonly: bool) -> SqliteBackend:
        _check_path(path, create and not readonly)
        try:
            conn = _connect_readonly(path) if readonly else _connect(path)
        except (OSError, sqlite3.Error) as exc:
            raise db_error(path, exc) from exc
        backend = cls(conn, path, readonly)
        try:
            backend._prepare()
        except (OSError, sqlite3.Error) as exc:
            backend.conn.close()
            raise db_error(path, exc) from exc
        except BaseException:
            backend.conn.close()
            raise
        return backend

    # ---- what schema.Database asks for
    def execute(self, sql: str, params: Any = ()) -> Any:
        return self.conn.execute(sql, params)

    def ddl(self, sql: str) -> str:
        return sql

    def tables(self) -> list[str]:
        return [str(r[0]) for r in self.conn.execute(
            "SELECT name FROM sqlite_master WHERE type = 'table' AND name NOT LIKE 'sqlite_%'").fetchall()]

    def columns(self, table: str) -> list[str]:
        return [str(row[1]) for row in self.conn.execute(f"PRAGMA table_info({table})").fetchall()]

    def insert_many(self, sql: str, rows: list[list[Any]]) -> list[int]:
        """``INSERT ... RETURNING id`` once per row; the new ids in order."""
        return [int(self.conn.execute(sql, row).fetchall()[0][0]) for row in rows]

    def error(self, exc: BaseException) -> HistoryError:
        return db_error(self.path, exc)

    # ---- opening, checking, writing
    def _prepare(self) -> None:
        self.conn.execute(f"PRAGMA busy_timeout = {int(BUSY_TIMEOUT_S * 1000)}")
        version = schema.identify(self, self.path)  # another application's file: refused untouched
        schema.refuse_newer(version, self.path)
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
            old, new = schema.migrate(self)
        schema.log_migration(self.path, old, new)

    def _migrate_in_memory(self) -> None:
        """Read an older history through a migrated copy in memory: the file is never written."""
        memory = sqlite3.connect(":memory:", isolation_level=None)
        self.conn.backup(memory)
        self.conn.close()
        self.conn = memory
        with self.write():
            schema.migrate(self)

    def check(self) -> None:
        """Every page readable (quick_check) and a write lock obtainable."""
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

    @contextmanager
    def write(self) -> Iterator[SqliteBackend]:
        """One write transaction, taken IMMEDIATE so concurrent writers queue instead of deadlocking;
        nested use joins the open transaction."""
        if self.conn.in_transaction:
            yield self
            return
        try:
            _retry_locked(lambda: self.conn.execute("BEGIN IMMEDIATE"))
        except sqlite3.Error as exc:
            raise db_error(self.path, exc) from exc
        try:
            yield self
            self.conn.execute("COMMIT")
        except BaseException as exc:
            if self.conn.in_transaction:
                with suppress(sqlite3.Error):
                    self.conn.execute("ROLLBACK")
            if isinstance(exc, sqlite3.Error):
                raise db_error(self.path, exc) from exc
            raise

    def close(self) -> None:
        self.conn.close()


def _check_path(db: Path, create: bool) -> None:
    """A read (or ``create=False``) needs an existing, non-empty file; only a write may start one."""
    hint = f"run 'xqhil quantize-and-verify' first or pass --db PATH (or set {ENV_DB})"
    if db.parts and db.parts[0].lower() in ("postgresql:", "postgres:"):
        # a URL turned into a path ('//' collapsed): a SQLite file would be made under ./postgresql:/
        url = redact(db.parts[0] + "//" + "/".join(db.parts[1:]))
        raise HistoryError(f"history {url} is a PostgreSQL URL that lost its '//' on the way "
                           "(passed as a file path): pass it as a string, e.g. --db postgresql://user@host/db")
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
