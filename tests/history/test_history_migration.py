"""Opening a database written by an older xqhil migrates it to the current schema without losing runs."""
import json
import sqlite3

from xqhil.history import RunStore, record_and_check
from xqhil.history.schema import CURRENT_VERSION
from history_testlib import make_doc

# The version-1 schema exactly as the first release wrote it (raw SQL, independent of the code under test).
V1 = """
CREATE TABLE schema_version (version INTEGER NOT NULL);
INSERT INTO schema_version (version) VALUES (1);
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


def _v1_database(path, docs):
    conn = sqlite3.connect(path)
    conn.executescript(V1)
    for doc in docs:
        conn.execute("INSERT INTO runs (created, board, model, config_sha256, verdict, doc) VALUES (?, ?, ?, ?, ?, ?)",
                     (doc["created"], doc["board"]["name"], doc["model"]["name"], doc["model"]["config_sha256"],
                      doc["verdict"], json.dumps(doc)))
    conn.commit()
    conn.close()


def _old_docs():
    old = make_doc(runtime="1.19.0", seed=1)
    del old["latency"]["int8"]["samples_ms"]  # the first release did not keep samples
    del old["fidelity"]
    return [old, make_doc(runtime="1.20.1", seed=2), make_doc(runtime="1.20.1", verdict="fail", status="bug",
                                                               chip_int8=60.0, seed=3)]


def test_v1_database_is_migrated_and_keeps_its_runs(tmp_path):
    db = tmp_path / "v1.sqlite3"
    docs = _old_docs()
    _v1_database(db, docs)
    with RunStore.open(db) as store:
        assert store.schema_version == CURRENT_VERSION
        runs = store.list()
        assert [r.doc for r in runs] == docs
        assert [r.recorded_at for r in runs] == [d["created"] for d in docs]  # back-filled from created
        assert [r.id for r in store.list(runtime="1.20.1")] == [2, 3]  # column back-filled from the doc
        assert [r.id for r in store.list(verdict="fail")] == [3]
        assert store.regressions() == []
    conn = sqlite3.connect(db)
    row = conn.execute("SELECT fp32_sha256, int8_p50_ms, chip_int8_acc, accuracy_status FROM runs WHERE id = 3"
                       ).fetchone()
    assert row[0] == docs[2]["model"]["fp32_sha256"]
    assert row[1] == docs[2]["latency"]["int8"]["p50_ms"]
    assert row[2:] == (60.0, "bug")
    tables = {r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
    assert {"runs", "baselines", "regressions", "schema_version"} <= tables
    conn.close()


def test_migrated_database_takes_new_runs_and_checks_them(tmp_path):
    db = tmp_path / "v1.sqlite3"
    _v1_database(db, _old_docs())
    summary = record_and_check(make_doc(runtime="1.21.0", int8_ms=15.0, seed=4), db)
    assert summary["run_id"] == 4
    assert summary["baseline_run"] == 2  # run 3 failed, run 1 is older
    assert [r["metric"] for r in summary["regressions"]] == ["latency.int8.p50_ms"]
    assert summary["regressions"][0]["runtime_version"] == "1.21.0"


def test_unreadable_stored_document_does_not_block_the_migration(tmp_path):
    db = tmp_path / "v1.sqlite3"
    _v1_database(db, [make_doc(seed=1)])
    conn = sqlite3.connect(db)
    conn.execute("INSERT INTO runs (created, board, model, verdict, doc) VALUES ('2025', 'b', 'm', 'pass', '{oops')")
    conn.commit()
    conn.close()
    with RunStore.open(db) as store:
        assert store.schema_version == CURRENT_VERSION
        assert store.list(runtime="1.20.1")[0].id == 1
        broken = store.list()[1]
        assert broken.key.model == "m" and "unreadable" in broken.doc["reasons"][0]


def test_reopening_is_idempotent(tmp_path):
    db = tmp_path / "v1.sqlite3"
    _v1_database(db, _old_docs())
    for _ in range(3):
        with RunStore.open(db) as store:
            assert len(store.list()) == 3
    conn = sqlite3.connect(db)
    assert conn.execute("SELECT version FROM schema_version").fetchall() == [(CURRENT_VERSION,)]
    conn.close()


def test_reading_an_old_database_leaves_the_file_as_it_was(tmp_path):
    """Read commands never write: an old history is read through a migrated copy in memory."""
    db = tmp_path / "v1.sqlite3"
    docs = _old_docs()
    _v1_database(db, docs)
    before = db.read_bytes()
    with RunStore.open(db, readonly=True) as store:
        assert store.schema_version == CURRENT_VERSION
        assert [r.id for r in store.list(runtime="1.20.1")] == [2, 3] and store.regressions() == []
    assert db.read_bytes() == before and sorted(p.name for p in tmp_path.iterdir()) == ["v1.sqlite3"]
    conn = sqlite3.connect(db)
    assert conn.execute("SELECT version FROM schema_version").fetchall() == [(1,)]
    assert conn.execute("PRAGMA journal_mode").fetchone() == ("delete",)
    conn.close()
