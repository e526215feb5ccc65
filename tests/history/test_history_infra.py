"""Runs with verdict INFRA (a farm job's board failed: exit 3) are recorded, but never used as measurements:
no baseline, no regression check, no pin; ``xqhil history --verdict INFRA`` lists them."""
import pytest
from history_testlib import make_doc
from xqhil.cli import main
from xqhil.farm.records import infra_doc
from xqhil.history import record_and_check
from xqhil.history.store import RunStore


def board_failure(quarantined: bool = False) -> dict:
    """What the farm records when a job's agent died on a board (the job's model section, the board's name)."""
    good = make_doc(model="resnet18", seed=1)
    result = {"job": 3, "attempt": 1, "place": "k1-lab-01", "status": "infra", "exit": 3,
              "message": "the agent on 127.0.0.1:2222 was killed by signal 9 before writing its response.",
              "board": good["board"], "fingerprint": {"arch": "riscv64"}, "timings": {"acquire_s": 0.02}}
    return infra_doc(result, good["model"], quarantined)


@pytest.fixture
def db(tmp_path):
    path = tmp_path / "h.sqlite3"
    record_and_check(make_doc(model="resnet18", seed=1), path)
    infra = record_and_check(board_failure(quarantined=True), path)
    assert infra["baseline_run"] is None and infra["regressions"] == []  # nothing measured, nothing compared
    return path


def test_infra_run_is_recorded_with_its_error_and_never_becomes_a_baseline(db):
    later = record_and_check(make_doc(model="resnet18", seed=2), db)
    assert later["baseline_run"] == 1  # not the INFRA run 2 in between
    with RunStore.open(db) as store:
        first, run = store.get(1), store.get(2)
    assert run.verdict == "INFRA" and run.key == first.key  # lines up with the board's measurements
    assert run.doc["infra"]["exit"] == 3 and "killed by signal 9" in run.doc["infra"]["error"]
    assert run.doc["farm"] == {"place": "k1-lab-01", "job": 3, "attempt": 1, "quarantined": True}


def test_infra_run_cannot_be_pinned(db, capsys):
    code = main(["history", "--db", str(db), "pin", "2"])
    err = capsys.readouterr().err
    assert code == 2 and "infrastructure failure" in err and err.count("\n") == 1, err
    assert main(["history", "--db", str(db), "pin", "1"]) == 0


def test_history_lists_infra_runs_and_filters_them(db, capsys):
    assert main(["history", "--db", str(db), "--verdict", "INFRA", "--json"]) == 0
    out = capsys.readouterr().out
    assert '"verdict": "INFRA"' in out and '"id": 1' not in out
    assert main(["history", "--db", str(db)]) == 0
    rows = [line.split() for line in capsys.readouterr().out.splitlines()[2:]]
    assert [r[0] for r in rows] == ["1", "2"] and rows[1][6] == "INFRA"
