"""Several processes recording into one history at once lose nothing, on SQLite (WAL + busy timeout +
BEGIN IMMEDIATE) and on PostgreSQL (one advisory lock per write transaction), and racing pins never
leave two baselines for one key."""
import multiprocessing
import sqlite3

from xqhil.history import RunStore, record_and_check
from history_testlib import make_doc

PROCESSES = 8
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


def _pinner(db, worker, start, errors):
    try:
        start.wait(timeout=60)
        for i in range(RECORDS):
            with RunStore.open(db) as store:
                store.pin_baseline(1 + (worker + i) % 4)  # runs 1-4 share one key
    except BaseException as exc:
        errors.put(f"pinner {worker}: {type(exc).__name__}: {exc}")
        raise


def _run_processes(target, db):
    ctx = multiprocessing.get_context("fork")
    start, errors = ctx.Barrier(PROCESSES), ctx.Queue()
    procs = [ctx.Process(target=target, args=(str(db), w, start, errors)) for w in range(PROCESSES)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(timeout=300)
    failures = []
    while not errors.empty():
        failures.append(errors.get())
    assert failures == []
    assert [p.exitcode for p in procs] == [0] * PROCESSES


def _assert_every_record_present(db):
    with RunStore.open(db) as store:
        runs = store.list()
        assert store.schema_version >= 3
    assert len(runs) == PROCESSES * RECORDS
    assert len({r.id for r in runs}) == len(runs)
    seen = {tuple(r.doc["reasons"]) for r in runs}
    assert seen == {(f"worker {w} record {i}",) for w in range(PROCESSES) for i in range(RECORDS)}


def test_concurrent_writers_on_a_fresh_database(history_db):
    """All processes race to create and migrate the same new history, then write."""
    _run_processes(_writer, history_db)
    _assert_every_record_present(history_db)
    with RunStore.open(history_db) as store:
        assert store._query("SELECT COUNT(*) FROM schema_version").fetchone()[0] == 1
    if store.kind == "sqlite":
        conn = sqlite3.connect(history_db)
        assert conn.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
        conn.close()


def test_concurrent_writers_on_an_existing_database(history_db):
    RunStore.open(history_db).close()
    _run_processes(_writer, history_db)
    _assert_every_record_present(history_db)


def test_racing_pins_leave_one_baseline_per_key(history_db):
    with RunStore.open(history_db) as store:
        for seed in range(4):
            store.record(make_doc(seed=seed))
    _run_processes(_pinner, history_db)
    with RunStore.open(history_db, readonly=True) as store:
        assert len(store.pinned_run_ids()) == 1
        assert store.pinned_baseline(store.get(1).key) in (1, 2, 3, 4)
