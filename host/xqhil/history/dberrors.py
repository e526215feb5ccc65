"""Turn a SQLite error on the history database into one line that names the file and the real cause.

SQLite reports a full disk as "disk I/O error" as often as "database or disk is full", and a read-only
file system as "unable to open database file" or "attempt to write a readonly database"; the file
system is asked which it is. Exit code 2 when the file itself is the problem (not a database, corrupt,
read-only, another application's), 3 when the machine is (full disk, I/O error, locked for too long).
"""
from __future__ import annotations

import os
import shutil
from pathlib import Path

from xqhil.errors import EXIT_BAD_INPUT, EXIT_INFRA
from xqhil.history.errors import HistoryError

FULL_BELOW_BYTES = 1 << 20  # an I/O error with less than this free is a full disk
ELSEWHERE = "pass --db PATH or set XQHIL_DB to use another file"


def existing_folder(path: Path) -> Path:
    """The nearest folder of ``path`` that exists (the file or its folders may not exist yet)."""
    folder = path.parent
    while not folder.exists() and folder != folder.parent:
        folder = folder.parent
    return folder


def free_bytes(path: Path) -> int | None:
    try:
        return shutil.disk_usage(existing_folder(path)).free
    except OSError:
        return None


def readonly_reason(path: Path) -> str | None:
    """Why ``path`` cannot be written, or None when it can."""
    folder = existing_folder(path)
    try:
        if os.statvfs(folder).f_flag & os.ST_RDONLY:
            return "read-only file system"
    except OSError:
        pass
    if path.exists() and not os.access(path, os.W_OK):
        return "read-only file"
    if not os.access(folder, os.W_OK):
        return f"read-only folder {folder}"
    return None


def db_error(path: Path, exc: BaseException) -> HistoryError:
    """One-line HistoryError for ``exc`` raised while using the history database at ``path``."""
    text = str(exc)
    name = str(getattr(exc, "sqlite_errorname", ""))
    if "malformed" in text or name.startswith("SQLITE_CORRUPT"):
        return HistoryError(f"history database {path} is corrupt: database disk image is malformed; restore "
                            f"a backup, or move it aside to start a new history; {ELSEWHERE}")
    if "not a database" in text or name == "SQLITE_NOTADB":
        return HistoryError(f"{path} is not a readable xqhil history database: file is not a database; "
                            f"{ELSEWHERE}")
    free = free_bytes(path)
    io_error = "I/O error" in text or name.startswith("SQLITE_IOERR") or "unable to open" in text
    nearly_full = free is not None and free < FULL_BELOW_BYTES
    if "full" in text or "No space left" in text or name == "SQLITE_FULL" or (io_error and nearly_full):
        left = "" if free is None else f", {free // 1024} KiB free"
        return HistoryError(f"cannot write history database {path}: disk is full ({text}{left}); free some "
                            f"space or {ELSEWHERE}", EXIT_INFRA)
    reason = readonly_reason(path)
    denied = "readonly" in text or "Read-only" in text or "Permission denied" in text
    if reason and (denied or name.startswith("SQLITE_READONLY") or io_error):
        readable = "'xqhil history' and 'xqhil dashboard' can still read it; " if path.is_file() else ""
        return HistoryError(f"cannot write history database {path}: {reason} ({text}); {readable}{ELSEWHERE}")
    if "locked" in text or name.startswith("SQLITE_BUSY"):
        return HistoryError(f"history database {path} stayed locked by another process: {text}", EXIT_INFRA)
    if io_error:
        return HistoryError(f"cannot use history database {path}: {text}", EXIT_INFRA)
    return HistoryError(f"history database {path}: {text}", EXIT_BAD_INPUT)
