"""The PostgreSQL backend: a real throwaway server (tests/pg_testlib.py), never a mock.

A run recorded by one process is seen by ``xqhil history`` in another with its own environment; the
URL's password never reaches a message, a report or the dashboard; another application's tables and an
empty database are refused untouched; a version-1 schema is migrated in place."""
import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
from xqhil.cli import main
from xqhil.history import HistoryError, RunStore, record_and_check
from xqhil.history.doc import run_key
from xqhil.history.reporting import record_verify_report
from xqhil.history.schema import CURRENT_VERSION, V1_SQL
from history_testlib import make_doc
from pg_testlib import PASSWORD

HOST = Path(__file__).resolve().parents[2] / "host"


def _run(capsys, *argv):
    code = main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return code, out, err


def _clean_env(tmp_path, name, dsn):
    """A separate environment: its own HOME and data folder, the history only through $XQHIL_DB."""
    home = tmp_path / name
    home.mkdir()
    keep = {k: os.environ[k] for k in ("PATH", "LANG") if k in os.environ}
    return {**keep, "HOME": str(home), "XDG_DATA_HOME": str(home / "data"), "XQHIL_DB": dsn,
            "PYTHONPATH": str(HOST)}


def test_a_run_recorded_by_one_process_is_listed_by_another(pg_db, tmp_path):
    doc = make_doc(model="resnet18", runtime="1.21.0", seed=7)
    doc["reasons"] = ["recorded on machine A"]
    (tmp_path / "doc.json").write_text(json.dumps(doc))
    writer = ("import json, sys; from xqhil.history import record_and_check; "
              "print(record_and_check(json.load(open(sys.argv[1])))['run_id'])")
    a = subprocess.run([sys.executable, "-c", writer, str(tmp_path / "doc.json")], capture_output=True,
                       text=True, timeout=120, env=_clean_env(tmp_path, "a", pg_db))
    assert a.returncode == 0, a.stderr
    b = subprocess.run([sys.executable, "-m", "xqhil", "history", "--json"], capture_output=True, text=True,
                       timeout=120, env=_clean_env(tmp_path, "b", pg_db))
    assert b.returncode == 0, b.stderr
    runs = json.loads(b.stdout)
    assert [(r["id"], r["doc"]["reasons"]) for r in runs] == [(int(a.stdout), ["recorded on machine A"])]
    assert not (tmp_path / "a" / "data").exists() and not (tmp_path / "b" / "data").exists()  # no SQLite file
    assert PASSWORD not in a.stdout + a.stderr + b.stdout + b.stderr


@pytest.mark.parametrize("change, code, words", [
    (lambda dsn: dsn.replace(PASSWORD, "wrong-password-1234"), 2, "password authentication failed"),
    (lambda dsn: dsn.rsplit("/", 1)[0] + "/no_such_db", 2, "does not exist"),
    (lambda dsn: re.sub(r":\d+/", ":1/", dsn), 3, "cannot reach"),  # nothing listens on port 1
])
def test_connection_errors_are_one_line_without_the_password(pg_db, capsys, change, code, words):
    dsn = change(pg_db)
    got, out, err = _run(capsys, "history", "--db", dsn)
    assert got == code and out == ""
    assert err.count("\n") == 1 and words in err and "postgresql://xqhil:***@127.0.0.1" in err
    assert PASSWORD not in err and "wrong-password-1234" not in err


def test_unrecorded_run_names_the_server_without_the_password(pg_server, tmp_path):
    down = pg_server.dsn("x").replace(f":{pg_server.port}/", ":1/")
    summary = record_verify_report(make_doc(reports_dir=str(tmp_path / "gone")), down)
    assert summary["recorded"] is False and summary["db"] == "postgresql://xqhil:***@127.0.0.1:1/x"
    assert PASSWORD not in json.dumps(summary)


def test_summary_help_and_dashboard_hide_the_password(pg_db, tmp_path, capsys, monkeypatch):
    summary = record_and_check(make_doc(seed=1), pg_db)
    assert PASSWORD not in json.dumps(summary) and summary["db"].startswith("postgresql://xqhil:***@")
    code, out, _ = _run(capsys, "dashboard", "--db", pg_db, "--out", tmp_path / "dash")
    html = (tmp_path / "dash" / "index.html").read_text()
    assert code == 0 and PASSWORD not in html + out and "postgresql://xqhil:***@" in html
    monkeypatch.setenv("XQHIL_DB", pg_db)
    with pytest.raises(SystemExit):
        main(["history", "--help"])
    assert PASSWORD not in capsys.readouterr().out


def test_empty_database_is_not_a_history_for_read_commands(pg_db, capsys):
    for argv in (["history"], ["history", "pin", "1"], ["history", "export"]):
        code, _, err = _run(capsys, *argv, "--db", pg_db)
        assert code == 2 and "holds no xqhil history" in err
    with RunStore.open(pg_db, create=True) as store:  # a write command creates it
        assert store.schema_version == CURRENT_VERSION and store.list() == []


def test_another_applications_tables_are_refused_untouched(pg_db):
    import psycopg

    with psycopg.connect(pg_db, autocommit=True) as conn:
        conn.execute("CREATE TABLE invoices (id serial PRIMARY KEY, total numeric)")
        with pytest.raises(HistoryError, match="not an xqhil history database.*invoices") as info:
            RunStore.open(pg_db)
        assert info.value.exit_code == 2
        tables = [r[0] for r in conn.execute("SELECT table_name FROM information_schema.tables "
                                             "WHERE table_schema = 'public'").fetchall()]
    assert tables == ["invoices"]


def test_version_1_schema_is_migrated_in_place(pg_db):
    import psycopg

    from xqhil.history.pg_backend import PgBackend

    docs = [make_doc(runtime=v, seed=i) for i, v in enumerate(["1.20.0", "1.20.1", "1.20.1"])]
    with psycopg.connect(pg_db, autocommit=True) as conn:
        backend = PgBackend(conn, pg_db, readonly=False)
        for statement in V1_SQL.split(";"):
            if statement.strip():
                conn.execute(backend.ddl(statement))
        conn.execute("INSERT INTO schema_version VALUES (1)")
        for doc in docs:
            conn.execute("INSERT INTO runs (created, board, model, config_sha256, verdict, doc) VALUES "
                         "(%s, %s, %s, %s, %s, %s)", (doc["created"], doc["board"]["name"], doc["model"]["name"],
                                                      run_key(doc).config_sha256, doc["verdict"], json.dumps(doc)))
    with RunStore.open(pg_db, readonly=True) as store:  # a read command migrates a server's schema too
        assert store.schema_version == CURRENT_VERSION
        assert [r.id for r in store.list(runtime="1.20.1")] == [2, 3]
        assert [r.doc for r in store.list()] == docs
    summary = record_and_check(make_doc(runtime="1.21.0", seed=9), pg_db)
    assert summary["run_id"] == 4 and summary["baseline_run"] == 3


def test_check_before_a_run_and_a_read_only_user(pg_server, pg_db):
    import psycopg

    record_and_check(make_doc(seed=1), pg_db)
    with RunStore.open(pg_db) as store:
        store.check()
    name = pg_db.rsplit("/", 1)[1]
    with psycopg.connect(pg_db, autocommit=True) as conn:
        conn.execute("DROP ROLE IF EXISTS reader")
        conn.execute("CREATE ROLE reader LOGIN PASSWORD 'reader-pw-77'")
        conn.execute(f"GRANT CONNECT ON DATABASE {name} TO reader")
        conn.execute("GRANT SELECT ON ALL TABLES IN SCHEMA public TO reader")
    reader = pg_db.replace(f"xqhil:{PASSWORD}", "reader:reader-pw-77")
    with RunStore.open(reader, readonly=True) as store:
        assert len(store.list()) == 1
    with RunStore.open(reader) as store, pytest.raises(HistoryError, match="permission denied") as info:
        store.check()
    assert info.value.exit_code == 2 and "reader-pw-77" not in str(info.value)


def test_without_psycopg_a_url_is_one_line_saying_what_to_install(pg_db, capsys, monkeypatch):
    monkeypatch.setitem(sys.modules, "psycopg", None)  # as on a machine without the postgres extra
    code, out, err = _run(capsys, "history", "--db", pg_db)
    assert code == 2 and out == "" and err.count("\n") == 1 and "needs psycopg 3" in err and "[postgres]" in err
    assert PASSWORD not in err


def test_a_writer_that_stops_inside_a_write_does_not_block_the_others_forever(pg_db):
    """The advisory lock is transaction-scoped: a writer cut off mid-write (idle in transaction past the
    timeout, or its connection dropped) releases it; the others then write."""
    from xqhil.history import pg_backend

    with RunStore.open(pg_db) as stuck:
        stuck.backend.conn.execute("SET idle_in_transaction_session_timeout = '1s'")
        with pytest.raises(HistoryError) as info, stuck.write():
            stuck.record(make_doc(seed=1))
            import time

            time.sleep(2.5)  # the server ends this session; its transaction and lock go with it
            stuck.record(make_doc(seed=2))
    assert info.value.exit_code == 3 and PASSWORD not in str(info.value)
    assert record_and_check(make_doc(seed=3), pg_db)["run_id"] >= 1
    with RunStore.open(pg_db, readonly=True) as store:
        assert [r.doc["latency"]["int8"]["samples_ms"] for r in store.list()] == [
            make_doc(seed=3)["latency"]["int8"]["samples_ms"]]
    assert pg_backend.IDLE_WRITE_TIMEOUT_S >= 60
