"""The history database schema, as an ordered list of migrations.

A database at version N has had migrations 1..N applied; ``schema_version`` holds N in its one row.
A fresh database runs the same migrations as an old one, so the upgrade path is exercised on every open.
Migrations run inside the caller's write transaction: either all pending ones apply or none does.

Version history:

1. ``runs``: created, board, model, config hash, verdict and the whole verify document (JSON).
2. Queryable columns on ``runs`` (hashes, runtime version, fingerprint, accuracy, latency, reports),
   back-filled from the stored documents; indexes; ``baselines`` (pinned baseline per model/board/config).
3. ``regressions``: what each run's regression check found, with the runtime version where it appeared.

The migrations are written once, in SQLite's dialect, and run on both backends through the backend's
``execute`` and ``ddl`` (:mod:`xqhil.history.backends`): PostgreSQL gets identity columns, BIGINT and
DOUBLE PRECISION for SQLite's INTEGER and REAL, and COALESCE for IFNULL.
"""
from __future__ import annotations

import json
import logging
from typing import Any, Callable, Protocol

from xqhil.history import doc as docs
from xqhil.history.errors import HistoryError

log = logging.getLogger(__name__)


class Database(Protocol):
    """What a migration needs from a backend."""

    def execute(self, sql: str, params: Any = ()) -> Any: ...
    def ddl(self, sql: str) -> str: ...
    def tables(self) -> list[str]: ...
    def columns(self, table: str) -> list[str]: ...

V1_SQL = """
CREATE TABLE IF NOT EXISTS schema_version (version INTEGER NOT NULL);
CREATE TABLE runs (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    created TEXT NOT NULL,
    board TEXT NOT NULL,
    model TEXT NOT NULL,
    config_sha256 TEXT,
    verdict TEXT NOT NULL,
    doc TEXT NOT NULL
);
"""

V2_COLUMNS = (
    ("recorded_at", "TEXT"), ("board_kind", "TEXT"), ("fp32_sha256", "TEXT"), ("int8_sha256", "TEXT"),
    ("runtime_version", "TEXT"), ("execution_provider", "TEXT"), ("emulated", "INTEGER"),
    ("fingerprint", "TEXT"), ("accuracy_status", "TEXT"), ("chip_int8_acc", "REAL"),
    ("pc_int8_acc", "REAL"), ("drop_points", "REAL"), ("int8_p50_ms", "REAL"), ("fp32_p50_ms", "REAL"),
    ("speedup", "REAL"), ("min_snr_db", "REAL"), ("report_md", "TEXT"), ("report_json", "TEXT"),
)

V2_SQL = """
CREATE INDEX IF NOT EXISTS runs_key ON runs (model, board, config_sha256, id);
CREATE INDEX IF NOT EXISTS runs_runtime ON runs (runtime_version);
CREATE TABLE baselines (
    model TEXT NOT NULL,
    fp32_sha256 TEXT,
    board TEXT NOT NULL,
    config_sha256 TEXT,
    run_id INTEGER NOT NULL REFERENCES runs(id),
    pinned_at TEXT NOT NULL
);
CREATE UNIQUE INDEX baselines_key ON baselines (model, IFNULL(fp32_sha256, ''), board, IFNULL(config_sha256, ''));
"""

V3_SQL = """
CREATE TABLE regressions (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    run_id INTEGER NOT NULL REFERENCES runs(id),
    baseline_run INTEGER REFERENCES runs(id),
    kind TEXT NOT NULL,
    metric TEXT NOT NULL,
    baseline REAL,
    current REAL,
    threshold REAL,
    runtime_version TEXT,
    appeared_run INTEGER,
    message TEXT NOT NULL
);
CREATE INDEX regressions_run ON regressions (run_id);
"""


def _script(db: Database, script: str) -> None:
    for statement in script.split(";"):
        if statement.strip():
            db.execute(db.ddl(statement))


def _v1(db: Database) -> None:
    _script(db, V1_SQL)


def _v2(db: Database) -> None:
    for name, kind in V2_COLUMNS:
        db.execute(db.ddl(f"ALTER TABLE runs ADD COLUMN {name} {kind}"))
    _script(db, V2_SQL)
    _backfill_columns(db)


def _backfill_columns(conn: Database) -> None:
    """Fill the version-2 columns of rows written by version 1 from their stored documents."""
    names = [name for name, _ in V2_COLUMNS if name != "recorded_at"]
    rows = conn.execute("SELECT id, doc, created FROM runs").fetchall()
    for run_id, text, created in rows:
        try:
            values = docs.columns(json.loads(text))
        except (ValueError, TypeError, AttributeError) as exc:
            log.warning("run %s: stored document unreadable (%s); its new columns stay empty", run_id, exc)
            continue
        assignments = ", ".join(f"{name} = ?" for name in names)
        conn.execute(f"UPDATE runs SET {assignments}, recorded_at = ? WHERE id = ?",
                     [values[name] for name in names] + [created, run_id])
    if rows:
        log.info("migrated %d run(s) to schema version 2", len(rows))


def _v3(db: Database) -> None:
    _script(db, V3_SQL)


MIGRATIONS: list[tuple[int, Callable[[Database], None]]] = [(1, _v1), (2, _v2), (3, _v3)]
CURRENT_VERSION = MIGRATIONS[-1][0]


RUNS_V1_COLUMNS = ("id", "created", "board", "model", "config_sha256", "verdict", "doc")


def identify(db: Database, path: object) -> int:
    """The schema version of an xqhil history (0: an empty database, no table at all); read-only.

    Raises HistoryError (exit 2) for a database of another application, before anything is changed:
    xqhil's tables are ``schema_version(version)`` with one row and ``runs`` with the version-1 columns.
    """
    tables = sorted(db.tables())
    if not tables:
        return 0
    ours = ("schema_version" in tables and "runs" in tables
            and db.columns("schema_version") == ["version"]
            and set(RUNS_V1_COLUMNS) <= set(db.columns("runs")))
    version = read_version(db) if ours else 0
    if not ours or version < 1:
        shown = ", ".join(tables[:5]) + (", ..." if len(tables) > 5 else "")
        raise HistoryError(f"{path} is not an xqhil history database (another application's database, "
                           f"tables: {shown}); it was left unchanged: pass --db PATH to a history file "
                           "or to a new path")
    return version


def read_version(db: Database) -> int:
    """The schema version of an open database; 0 for an empty one."""
    if "schema_version" not in db.tables():
        return 0
    row = db.execute("SELECT MAX(version) FROM schema_version").fetchone()
    return int(row[0]) if row and row[0] is not None else 0


def migrate(conn: Database) -> tuple[int, int]:
    """Apply pending migrations inside the caller's transaction; return (old, new) versions."""
    old = read_version(conn)
    for version, step in MIGRATIONS:
        if version > old:
            step(conn)
            conn.execute("DELETE FROM schema_version")
            conn.execute("INSERT INTO schema_version (version) VALUES (?)", (version,))
    return old, max(old, CURRENT_VERSION)


def refuse_newer(version: int, where: object) -> None:
    if version > CURRENT_VERSION:
        raise HistoryError(f"history database {where} has schema version {version}, newer than this "
                           f"xqhil understands ({CURRENT_VERSION}): upgrade xqhil")


def log_migration(where: object, old: int, new: int) -> None:
    if old == 0:
        log.debug("history database %s created (schema version %d)", where, new)
    elif old != new:
        log.info("history database %s: schema version %d -> %d", where, old, new)
