"""``xqhil history export`` / ``import``: every run, baseline and regression moves between SQLite and
PostgreSQL without loss; ids are remapped consistently when the target already holds runs."""
import json
import sqlite3

import pytest
from xqhil.cli import main
from xqhil.history import RunStore, record_and_check
from history_testlib import make_doc


def _run(capsys, *argv):
    code = main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return code, out, err


def _history(db):
    """Runs on two keys, a slowdown with two regression findings, a pin, and a run whose stored
    document is unreadable (it must still move as it is)."""
    for seed in range(3):
        record_and_check(make_doc(runtime="1.20.1", seed=seed), db)
    record_and_check(make_doc(runtime="1.21.0", int8_ms=14.4, seed=10), db)
    record_and_check(make_doc(runtime="1.21.1", int8_ms=14.5, seed=11), db)
    record_and_check(make_doc(model="resnet18", board="k1-lab-02", runtime="1.21.0", seed=12), db)
    record_and_check(make_doc(model="resnet18", board="k1-lab-02", runtime="1.22.0", verdict="fail", status="bug",
                              chip_int8=60.2, snr_db=17.0, seed=13), db)
    record_and_check(make_doc(model="resnet18", board="k1-lab-02", runtime="1.22.1", seed=14), db)
    with RunStore.open(db) as store:
        store.pin_baseline(2)
        store.pin_baseline(8)
        unreadable = store.record(make_doc(model="tiny", seed=15))
    conn = sqlite3.connect(db)
    conn.execute("UPDATE runs SET doc = ? WHERE id = ?", ('{"verdict": "pass", "model": {"name": "ti', unreadable))
    conn.commit()
    conn.close()


def _lines(path):
    return [json.loads(line) for line in path.read_text().splitlines()]


def _export(capsys, db, out):
    code, _, err = _run(capsys, "history", "export", "--db", db, "--out", out)
    assert code == 0, err
    return _lines(out)


def test_sqlite_to_postgresql_and_back_round_trips_everything(tmp_path, pg_db, capsys):
    source = tmp_path / "source.sqlite3"
    _history(source)
    original = _export(capsys, source, tmp_path / "a.jsonl")
    kinds = [item.get("type") for item in original[1:]]
    assert kinds.count("run") == 9 and kinds.count("baseline") == 2 and kinds.count("regression") >= 4

    code, out, _ = _run(capsys, "history", "import", tmp_path / "a.jsonl", "--db", pg_db)
    assert code == 0 and out.startswith(f"imported 9 runs, 2 baselines, {kinds.count('regression')} regressions")
    via_pg = _export(capsys, pg_db, tmp_path / "b.jsonl")
    assert via_pg[1:] == original[1:]  # a fresh target keeps the ids: every field of every line is equal

    back = tmp_path / "back.sqlite3"
    assert _run(capsys, "history", "import", tmp_path / "b.jsonl", "--db", back)[0] == 0
    assert _export(capsys, back, tmp_path / "c.jsonl")[1:] == original[1:]
    with RunStore.open(pg_db, readonly=True) as pg, RunStore.open(source, readonly=True) as lite:
        assert [(r.id, r.recorded_at, r.doc) for r in pg.list()] == [(r.id, r.recorded_at, r.doc) for r in lite.list()]
        assert pg.regressions() == lite.regressions()
        assert sorted(pg.pinned_run_ids()) == sorted(lite.pinned_run_ids()) == [2, 8]
        assert [r.id for r in pg.list(runtime="1.21.0")] == [4, 6]  # queryable columns rebuilt from the documents
        assert pg.list(model="tiny")[0].doc["reasons"][0].startswith("stored document unreadable")


def test_import_into_a_history_with_runs_remaps_every_reference(tmp_path, history_db, capsys):
    source = tmp_path / "source.sqlite3"
    _history(source)
    _export(capsys, source, tmp_path / "a.jsonl")
    record_and_check(make_doc(model="other", seed=90), history_db)
    record_and_check(make_doc(model="other", seed=91), history_db)
    assert _run(capsys, "history", "import", tmp_path / "a.jsonl", "--db", history_db)[0] == 0
    with RunStore.open(history_db, readonly=True) as target, RunStore.open(source, readonly=True) as lite:
        moved = [r for r in target.list() if r.doc.get("model", {}).get("name") != "other"]
        assert [r.id for r in moved] == [r.id + 2 for r in lite.list()]
        assert [(r.recorded_at, r.doc) for r in moved] == [(r.recorded_at, r.doc) for r in lite.list()]
        assert sorted(target.pinned_run_ids()) == [4, 10]
        shifted = [r for r in target.regressions() if r["run_id"] > 2]
        assert len(shifted) == len(lite.regressions()) >= 4
        for new, old in zip(shifted, lite.regressions()):
            assert (new["run_id"], new["baseline_run"], new["appeared_run"]) == (
                old["run_id"] + 2, old["baseline_run"] + 2, old["appeared_run"] + 2)
            assert f"(run {old['appeared_run'] + 2})" in new["message"]
            assert f"baseline run {old['baseline_run'] + 2} " in new["message"]


@pytest.mark.parametrize("lines, words", [
    (['{"type": "run"}'], "not an xqhil history export"),
    (['{"format": "xqhil.history-export/1"}', "not json"], "line 3: not JSON"),
    (['{"format": "xqhil.history-export/1"}', '{"type": "baseline", "run_id": 5, "model": "m", "board": "b"}'],
     "line 3: refers to run 5"),
    (['{"format": "xqhil.history-export/1"}', '{"type": "run", "id": 1, "doc": {"verdict": "pass"}}'],
     "line 3: doc must be the stored document as a string"),
    ([], "is empty"),
])
def test_bad_import_is_one_line_and_changes_nothing(tmp_path, history_db, capsys, lines, words):
    record_and_check(make_doc(seed=1), history_db)
    good = {"type": "run", "id": 1, "created": "2026-01-01T00:00:00Z", "recorded_at": "2026-01-01T00:00:00Z",
            "doc": json.dumps(make_doc(seed=2)), "model": "m", "board": "b", "verdict": "pass"}
    path = tmp_path / "bad.jsonl"
    path.write_text("\n".join(lines[:1] + [json.dumps(good)] + lines[1:] if lines[1:] else lines) + "\n")
    code, out, err = _run(capsys, "history", "import", path, "--db", history_db)
    assert code == 2 and out == "" and err.count("\n") == 1 and words in err
    with RunStore.open(history_db, readonly=True) as store:
        assert [r.id for r in store.list()] == [1]  # the good run before the bad line was rolled back too


def test_export_errors(tmp_path, capsys):
    assert _run(capsys, "history", "export", "--db", tmp_path / "none.sqlite3")[0] == 2
    db = tmp_path / "h.sqlite3"
    record_and_check(make_doc(), db)
    code, _, err = _run(capsys, "history", "export", "--db", db, "--out", tmp_path / "no" / "dir" / "x.jsonl")
    assert code == 3 and "cannot write the export" in err and not (tmp_path / "no").exists()
    assert _run(capsys, "history", "import", tmp_path / "absent.jsonl", "--db", db)[0] == 2


def test_export_to_a_reader_that_stops_early_is_not_an_error(tmp_path):
    import os
    import subprocess
    import sys
    from pathlib import Path

    db = tmp_path / "h.sqlite3"
    with RunStore.open(db) as store:
        for seed in range(60):  # about 200 kB: more than a pipe holds
            store.record(make_doc(seed=seed))
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[2] / "host")}
    proc = subprocess.Popen([sys.executable, "-m", "xqhil", "history", "export", "--db", str(db)],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env)
    assert json.loads(proc.stdout.readline())["format"] == "xqhil.history-export/1"
    proc.stdout.close()  # as `| head -1` does
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 0 and b"error" not in err
