"""History database faults, one table row each (reliability findings D9-D11).

Each row: a database condition, an xqhil command, the exit code, a fragment of the one-line message, and
what must be unchanged afterwards. The commands run in-process through ``xqhil.cli.main``;
``quantize-and-verify`` runs for real on ``--board host`` (a tiny project, quantized once).

Read-only media and full disks are real mounts (a read-only bind mount, a tiny tmpfs): they need root
and mount(8); where either is missing those rows skip, saying so.
"""
from __future__ import annotations

import contextlib
import json
import os
import shutil
import sqlite3
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Optional

import pytest
from history_testlib import make_doc

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "xqhil"))
from xqhil_testlib import fault_python, make_project, run_cli  # noqa: E402

from xqhil.history import record_and_check  # noqa: E402

CORRUPT = b"\xab" * 8192  # two pages


# ----------------------------------------------------------------------------------------- conditions
def _history(path: Path) -> Path:
    record_and_check(make_doc(seed=1), path)
    record_and_check(make_doc(seed=2), path)
    return path


def random_bytes(folder: Path) -> Path:
    path = folder / "random.db"
    path.write_bytes(os.urandom(100_000))
    return path


def corrupt_pages(folder: Path) -> Path:
    """Valid header and schema: the open succeeds, the pages holding the runs (the last two) are garbage."""
    path = _history(folder / "corrupt.db")
    with open(path, "r+b") as handle:
        handle.seek(path.stat().st_size - len(CORRUPT))
        handle.write(CORRUPT)
    return path


def _sqlite_file(path: Path, *statements: str) -> Path:
    """A SQLite database at ``path`` made by ``statements`` (another application's file)."""
    conn = sqlite3.connect(path)
    for sql in statements:
        conn.execute(sql)
    conn.commit()
    conn.close()
    return path


def other_app(folder: Path) -> Path:
    return _sqlite_file(folder / "app.db", "CREATE TABLE customers (id INTEGER, name TEXT)",
                        "INSERT INTO customers VALUES (1, 'ada')")


def other_app_with_runs(folder: Path) -> Path:
    """Another application that has a ``runs`` table of its own (once: WAL switched, then refused)."""
    return _sqlite_file(folder / "app-runs.db", "CREATE TABLE runs (id INTEGER, started TEXT)")


def empty_file(folder: Path) -> Path:
    path = folder / "empty.db"
    path.write_bytes(b"")
    return path


def missing(folder: Path) -> Path:
    return folder / "missing.db"


def valid(folder: Path) -> Path:
    return _history(folder / "valid.db")


# ----------------------------------------------------------------------------------------- what stays
def snapshot(path: Path) -> dict:
    """The file's bytes, its journal mode (header byte 18) and, unless it is a WAL database, the side
    files beside it: reading a WAL database safely next to writers takes its -shm index, which SQLite
    creates when missing, so those two may appear; nothing else may."""
    state = {"exists": path.exists()}
    if path.is_file():
        state["bytes"] = path.read_bytes()
        if state["bytes"][:16] == b"SQLite format 3\x00":
            state["journal_mode"] = {1: "delete", 2: "wal"}.get(state["bytes"][18])
    if state.get("journal_mode") != "wal":
        state["siblings"] = sorted(p.name for p in path.parent.glob(path.name + "-*"))
    return state


def xqhil(*argv: str) -> tuple:
    return run_cli(list(argv))


@pytest.fixture(scope="module")
def project(tmp_path_factory) -> dict:
    import xquant

    config = make_project(tmp_path_factory.mktemp("faults") / "proj")
    xquant.quantize_onnx_model(str(config))
    return {"config": config, "qmodel": config.parent / "work" / "tiny.q.onnx"}


def command(name: str, db: Path, project: dict, out: Path) -> list:
    if name == "history":
        return ["history", "--db", str(db)]
    if name == "show":
        return ["history", "show", "1", "--db", str(db)]
    if name == "pin":
        return ["history", "pin", "1", "--db", str(db)]
    if name == "dashboard":
        return ["dashboard", "--db", str(db), "--out", str(out / "dash")]
    python = fault_python(sys.executable, "perturb-int8:3") if name == "verify-fail" else sys.executable
    return ["quantize-and-verify", str(project["config"]), "--board", "host", "--qmodel", str(project["qmodel"]),
            "--out", str(out / "run"), "--db", str(db), "--python", python, "-q"]


@dataclass(frozen=True)
class Row:
    condition: Callable[[Path], Path]
    command: str
    code: int
    fragment: str
    unchanged: bool = True  # the file (bytes, journal mode, side files) is as before


ROWS = [
    Row(random_bytes, "history", 2, "file is not a database"),
    Row(random_bytes, "verify", 2, "file is not a database"),
    Row(random_bytes, "verify-fail", 2, "file is not a database"),  # D9: refused before the run, not after
    Row(corrupt_pages, "history", 2, "database disk image is malformed"),
    Row(corrupt_pages, "show", 2, "database disk image is malformed"),
    Row(corrupt_pages, "dashboard", 2, "database disk image is malformed"),
    Row(corrupt_pages, "verify", 2, "database disk image is malformed"),
    Row(other_app, "history", 2, "not an xqhil history database"),
    Row(other_app, "show", 2, "not an xqhil history database"),
    Row(other_app, "dashboard", 2, "not an xqhil history database"),
    Row(other_app, "pin", 2, "not an xqhil history database"),
    Row(other_app, "verify", 2, "not an xqhil history database"),
    Row(other_app_with_runs, "verify", 2, "tables: runs"),
    Row(empty_file, "history", 2, "empty (0 bytes)"),
    Row(empty_file, "show", 2, "empty (0 bytes)"),
    Row(empty_file, "dashboard", 2, "empty (0 bytes)"),
    Row(empty_file, "verify", 0, "history: run 1 recorded", unchanged=False),  # a write command may start one
    Row(missing, "history", 2, "no history database"),
    Row(missing, "show", 2, "no history database"),
    Row(missing, "dashboard", 2, "no history database"),
    Row(missing, "pin", 2, "no history database"),
    Row(missing, "verify", 0, "history: run 1 recorded", unchanged=False),
]


def _id(row: Row) -> str:
    return f"{row.condition.__name__}-{row.command}"


@pytest.mark.parametrize("row", ROWS, ids=_id)
def test_database_condition(row: Row, project, tmp_path):
    folder = tmp_path / "db"
    folder.mkdir()
    db = row.condition(folder)
    before = snapshot(db)
    code, out, err = xqhil(*command(row.command, db, project, tmp_path))
    assert code == row.code, (out, err)
    assert row.fragment in (err if code else out)
    assert "internal error" not in err and "Traceback" not in err
    if code:
        assert err.count("\n") == 1, err  # one line
        assert str(db) in err  # names the file
        assert not (tmp_path / "run" / "verify.json").exists()  # quantize-and-verify: refused before the run
    if row.unchanged:
        assert snapshot(db) == before


# ----------------------------------------------------------------------------------------- real mounts
@pytest.fixture
def mounts():
    """Mount helpers that undo themselves; skip (saying why) where this process cannot mount."""
    done: list = []

    def mount(*args: str) -> None:
        if os.geteuid() != 0 or shutil.which("mount") is None:
            pytest.skip("needs root and mount(8) for a real read-only or full file system")
        result = subprocess.run(["mount", *args], capture_output=True, text=True)
        if result.returncode != 0:
            pytest.skip(f"mount {' '.join(args)} refused: {result.stderr.strip()}")
        done.append(args[-1])

    yield mount
    for target in reversed(done):
        subprocess.run(["umount", target], check=False)


def readonly_copy(src: Path, target: Path, mount: Callable, whole_folder: bool) -> Path:
    """``src`` seen through a read-only bind mount of its folder (or of the file alone)."""
    if whole_folder:
        target.mkdir()
        mount("--bind", str(src.parent), str(target))
        mount("-o", "remount,bind,ro", str(target))
        return target / src.name
    target.mkdir()
    view = target / src.name
    view.write_bytes(b"")
    mount("--bind", str(src), str(view))
    mount("-o", "remount,bind,ro", str(view))
    return view


@pytest.mark.parametrize("whole_folder", [True, False], ids=["read-only-folder", "read-only-file"])
@pytest.mark.parametrize("name, code, fragment", [
    ("history", 0, "k1-lab-01"),
    ("show", 0, "verdict"),
    ("dashboard", 0, "dashboard written"),
    ("pin", 2, "read-only"),
    ("verify", 2, "read-only"),
])
def test_read_only_database(whole_folder, name, code, fragment, mounts, project, tmp_path):
    (tmp_path / "src").mkdir()
    db = readonly_copy(valid(tmp_path / "src"), tmp_path / "ro", mounts, whole_folder)
    before = snapshot(db)
    code_, out, err = xqhil(*command(name, db, project, tmp_path))
    assert code_ == code, (out, err)
    assert fragment in (err if code else out)
    if code:
        assert err.count("\n") == 1 and str(db) in err
        assert not (tmp_path / "run" / "verify.json").exists()
    assert snapshot(db) == before


def fill(folder: Path, leave: int = 0) -> None:
    """Fill the file system of ``folder`` up to ``leave`` bytes free."""
    with open(folder / "filler", "wb") as handle:
        with contextlib.suppress(OSError):
            while shutil.disk_usage(folder).free > leave:
                handle.write(b"\0" * min(4096, max(1, shutil.disk_usage(folder).free - leave)))
                handle.flush()


@pytest.fixture
def tiny_disk(mounts, tmp_path) -> Path:
    folder = tmp_path / "tiny"
    folder.mkdir()
    mounts("-t", "tmpfs", "-o", "size=512k", "tmpfs", str(folder))
    return folder


@pytest.mark.parametrize("name, code", [("verify", 3), ("pin", 3)])
def test_full_disk_is_named_before_the_run(name, code, tiny_disk, project, tmp_path):
    db = valid(tiny_disk)
    fill(tiny_disk)
    code_, out, err = xqhil(*command(name, db, project, tmp_path))
    assert code_ == code, (out, err)
    assert "disk is full" in err and str(db) in err and err.count("\n") == 1
    assert not (tmp_path / "run" / "verify.json").exists()


@pytest.mark.parametrize("name, fragment", [("history", "k1-lab-01"), ("show", "verdict"),
                                            ("dashboard", "dashboard written")])
def test_full_disk_can_still_be_read(name, fragment, tiny_disk, project, tmp_path):
    db = valid(tiny_disk)
    fill(tiny_disk)
    before = snapshot(db)
    code, out, err = xqhil(*command(name, db, project, tmp_path))
    assert code == 0 and fragment in out, err
    assert snapshot(db) == before


@pytest.mark.parametrize("name, verdict_code", [("verify", 0), ("verify-fail", 1)])
def test_disk_filling_during_the_write_keeps_the_verdict(name, verdict_code, tiny_disk, project, tmp_path):
    """The check before the run passes; the disk is full when the run is recorded (another process keeps
    the database open, so its side files exist): a warning, the verdict's exit code, verify.json says why."""
    db = valid(tiny_disk)
    reader = sqlite3.connect(db)
    reader.execute("SELECT COUNT(*) FROM runs").fetchone()
    fill(tiny_disk)
    try:
        code, out, err = xqhil(*command(name, db, project, tmp_path))
    finally:
        reader.close()
    assert code == verdict_code, (out, err)
    assert ("PASS on host" if verdict_code == 0 else "FAIL on host") in out
    assert "history: run NOT recorded" in err and "disk is full" in err and "internal error" not in err
    report = json.loads((tmp_path / "run" / "verify.json").read_text())
    assert report["history"]["recorded"] is False and "disk is full" in report["history"]["error"]
    assert "run NOT recorded" in (tmp_path / "run" / "verify.md").read_text()
    (tiny_disk / "filler").unlink()
    conn = sqlite3.connect(db)
    assert conn.execute("PRAGMA integrity_check").fetchone() == ("ok",)
    assert conn.execute("SELECT COUNT(*) FROM runs").fetchone() == (2,)  # nothing half-written
    conn.close()


def _journal_mode(path: Path) -> Optional[str]:
    conn = sqlite3.connect(f"{path.resolve().as_uri()}?mode=ro", uri=True)
    try:
        return conn.execute("PRAGMA journal_mode").fetchone()[0]
    finally:
        conn.close()


def test_other_application_keeps_its_journal_mode_and_tables(tmp_path, project):
    db = other_app(tmp_path)
    for name in ("history", "pin", "verify"):
        assert xqhil(*command(name, db, project, tmp_path))[0] == 2
    assert _journal_mode(db) == "delete"
    conn = sqlite3.connect(db)
    tables = [r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'")]
    conn.close()
    assert tables == ["customers"]
