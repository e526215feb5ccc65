"""Several processes recording into one database at once lose nothing (WAL + busy timeout + IMMEDIATE)."""
import multiprocessing
import sqlite3

from xqhil.history import RunStore, record_and_check
from history_testlib import make_doc

PROCESSES = 6
RECORDS = 20


def _writer(db, worker, start, errors):
    try:
        start.wait(timeout=60)
        for i in range(RECORDS):
            doc = make_doc(model=f"model{worker % 2}", board=f"board{worker}", seed=worker * 1000 + i, n=20)
            doc["reasons"] = [f"worker {worker} record {i}"]
            if i % 2:
                record_and_check(doc, db)  # record + baseline query + regression insert
            else:
                with RunStore.open(db) as store:
                    store.record(doc)
    except BaseException as exc:  # reported to the parent, which fails the test
        errors.put(f"worker {worker}: {type(exc).__name__}: {exc}")
        raise


def _run_writers(db):
    ctx = multiprocessing.get_context("fork")
    start, errors = ctx.Barrier(PROCESSES), ctx.Queue()
    procs = [ctx.Process(target=_writer, args=(str(db), w, start, errors)) for w in range(PROCESSES)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(timeout=180)
    failures = []
    while not errors.empty():
        failures.append(errors.get())
    assert failures == []
    assert [p.exitcode for p in procs] == [0] * PROCESSES


def _assert_every_record_present(db):
    with RunStore.open(db) as store:
        runs = store.list()
    assert len(runs) == PROCESSES * RECORDS
    assert len({r.id for r in runs}) == len(runs)
    seen = {tuple(r.doc["reasons"]) for r in runs}
    assert seen == {(f"worker {w} record {i}",) for w in range(PROCESSES) for i in range(RECORDS)}


def test_concurrent_writers_on_a_fresh_database(tmp_path):
    """All processes race to create and migrate the same new file, then write."""
    db = tmp_path / "race.sqlite3"
    _run_writers(db)
    _assert_every_record_present(db)
    conn = sqlite3.connect(db)
    assert conn.execute("SELECT COUNT(*) FROM schema_version").fetchone()[0] == 1
    assert conn.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
    conn.close()


def test_concurrent_writers_on_an_existing_database(tmp_path):
    db = tmp_path / "existing.sqlite3"
    RunStore.open(db).close()
    _run_writers(db)
    _assert_every_record_present(db)
