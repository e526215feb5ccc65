"""RunStore: recording, querying, pinning, paths and errors, on SQLite and on PostgreSQL (``db``)."""
import sqlite3
from pathlib import Path

import pytest
from xqhil.history import HistoryError, RunStore, default_db_path
from xqhil.history.schema import CURRENT_VERSION
from history_testlib import make_doc


@pytest.fixture
def db(history_db):
    return history_db


def test_record_and_get_round_trip(db):
    doc = make_doc(seed=3)
    with RunStore.open(db) as store:
        run_id = store.record(doc)
        run = store.get(run_id)
    assert run.doc == doc
    assert run.key.model == "mobilenet_v2" and run.key.board == "k1-lab-01"
    assert run.runtime_version == "1.20.1"
    assert run.recorded_at.endswith("Z")


def test_database_uses_wal_and_current_schema(tmp_path):
    db = tmp_path / "runs.sqlite3"
    with RunStore.open(db) as store:
        store.record(make_doc())
        assert store.schema_version == CURRENT_VERSION
    conn = sqlite3.connect(db)
    assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    assert conn.execute("SELECT version FROM schema_version").fetchall() == [(CURRENT_VERSION,)]
    conn.close()


def test_list_filters(db):
    with RunStore.open(db) as store:
        store.record(make_doc(model="resnet18", runtime="1.20.1", seed=1))
        store.record(make_doc(model="resnet18", runtime="1.21.0", board="k1-lab-02", seed=2))
        store.record(make_doc(model="mobilenet_v2", runtime="1.21.0", verdict="fail", status="bug", seed=3))
        assert [r.id for r in store.list()] == [1, 2, 3]
        assert [r.id for r in store.list(model="resnet18")] == [1, 2]
        assert [r.id for r in store.list(runtime="1.21.0")] == [2, 3]
        assert [r.id for r in store.list(board="k1-lab-02")] == [2]
        assert [r.id for r in store.list(verdict="fail")] == [3]
        assert [r.id for r in store.list(model="resnet18", runtime="1.21.0")] == [2]
        assert [r.id for r in store.list(limit=2)] == [2, 3]
        assert store.list(model="nope") == []


def test_unlabelled_and_sparse_documents_are_recorded(db):
    unlabelled = make_doc(chip_int8=None)
    sparse = {"schema": "xqhil.verify/1", "verdict": "warn", "model": {"name": "tiny"}, "board": {"name": "qemu"}}
    with RunStore.open(db) as store:
        a, b = store.record(unlabelled), store.record(sparse)
        assert store.get(a).doc["accuracy"]["pc_int8"] is None
        assert store.get(b).key.config_sha256 is None
        assert [r.id for r in store.list(model="tiny")] == [b]


@pytest.mark.parametrize("bad, words", [
    ([1, 2], "JSON object"),
    ({"schema": "other/1", "verdict": "pass", "model": {"name": "m"}, "board": {"name": "b"}}, "schema"),
    ({"verdict": "pass", "model": {}, "board": {"name": "b"}}, "model.name"),
    ({"verdict": "maybe", "model": {"name": "m"}, "board": {"name": "b"}}, "verdict"),
])
def test_invalid_documents_are_rejected_in_one_line(db, bad, words):
    with RunStore.open(db) as store:
        with pytest.raises(HistoryError) as info:
            store.record(bad)
        assert store.list() == []
    assert words in str(info.value) and "\n" not in str(info.value)
    assert info.value.exit_code == 2


def test_unknown_run_is_bad_input(db):
    with RunStore.open(db) as store, pytest.raises(HistoryError, match="no run 42") as info:
        store.get(42)
    assert info.value.exit_code == 2


def test_missing_database_is_not_created_when_reading(tmp_path):
    path = tmp_path / "absent.sqlite3"
    with pytest.raises(HistoryError, match="no history database"):
        RunStore.open(path, create=False)
    assert not path.exists()


def test_a_url_turned_into_a_path_is_refused_without_a_file_or_its_password(tmp_path, monkeypatch):
    # Path() collapses '//': a SQLite file named after the URL, password and all, was once made (and
    # committed) under ./postgresql:/ by a test run
    monkeypatch.chdir(tmp_path)
    for create in (True, False):
        with pytest.raises(HistoryError, match="lost its '//'") as info:
            RunStore.open(Path("postgresql://xqhil:s3cret-pw@127.0.0.1:5/hist"), create=create)
        assert "s3cret-pw" not in str(info.value) and "postgresql://xqhil:***@127.0.0.1:5/hist" in str(info.value)
        assert info.value.exit_code == 2
    assert list(tmp_path.iterdir()) == []


def test_file_that_is_not_a_database(tmp_path):
    path = tmp_path / "notes.sqlite3"
    path.write_text("these are not the pages you are looking for\n" * 100)
    with pytest.raises(HistoryError, match="not a readable xqhil history database"):
        RunStore.open(path)


def test_newer_schema_is_refused(db):
    with RunStore.open(db) as store, store.write() as backend:
        backend.execute("UPDATE schema_version SET version = 99")
    with pytest.raises(HistoryError, match="schema version 99, newer"):
        RunStore.open(db)
    with pytest.raises(HistoryError, match="schema version 99, newer"):
        RunStore.open(db, readonly=True)


def test_pin_and_unpin_baseline(db):
    with RunStore.open(db) as store:
        first = store.record(make_doc(seed=1))
        store.record(make_doc(seed=2))
        other = store.record(make_doc(model="resnet18", seed=3))
        key = store.get(first).key
        assert store.pinned_baseline(key) is None
        store.pin_baseline(first)
        assert store.pinned_baseline(key) == first
        assert store.pinned_baseline(store.get(other).key) is None
        store.pin_baseline(2)  # re-pinning replaces the pin
        assert store.pinned_baseline(key) == 2
        assert store.unpin_baseline(2) is True
        assert store.unpin_baseline(2) is False
        assert store.pinned_baseline(key) is None


def test_default_db_path(monkeypatch, tmp_path):
    monkeypatch.setenv("XQHIL_DB", str(tmp_path / "env.sqlite3"))
    assert default_db_path() == tmp_path / "env.sqlite3"
    monkeypatch.delenv("XQHIL_DB")
    monkeypatch.setenv("XDG_DATA_HOME", str(tmp_path / "data"))
    assert default_db_path() == tmp_path / "data" / "xqhil" / "history.sqlite3"
    monkeypatch.delenv("XDG_DATA_HOME")
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    assert default_db_path() == tmp_path / "home" / ".local" / "share" / "xqhil" / "history.sqlite3"


def test_open_without_path_uses_the_environment(monkeypatch, tmp_path):
    monkeypatch.setenv("XQHIL_DB", str(tmp_path / "deep" / "env.sqlite3"))
    with RunStore.open() as store:
        store.record(make_doc())
    assert (tmp_path / "deep" / "env.sqlite3").is_file()


def test_a_check_reads_only_the_runs_it_needs(history_db, monkeypatch):
    """record_and_check reads the baseline and the noise window, not every earlier run of its key (at
    100,000 runs reading them all took 0.4 s a run); a run that regressed is still never the baseline."""
    from xqhil.history import check, record_and_check
    from xqhil.history import store as store_module

    with RunStore.open(history_db) as store, store.write():
        for seed in range(40):
            store.record(make_doc(seed=seed, n=100, jitter=0.01))
        slow = store.record(make_doc(runtime="1.21.0", int8_ms=30.0, seed=40, n=100, jitter=0.01))
        store.save_regressions(slow, 40, [{"kind": "latency", "metric": "latency.int8.p50_ms", "message": "slow"}])
    read = []
    original = store_module._record
    monkeypatch.setattr(store_module, "_record", lambda row: read.append(int(row[0])) or original(row))
    summary = record_and_check(make_doc(runtime="1.21.0", seed=41, n=100, jitter=0.01), history_db)
    assert summary["baseline_run"] == 40 and summary["regressions"] == []
    assert len(read) <= 1 + check.NOISE_WINDOW + 1  # the baseline, the noise window, the recorded run
    assert slow not in read
