"""``xqhil history`` and ``xqhil dashboard`` run in-process; exit codes and one-line errors."""
import json

import pytest
from xqhil.history import record_and_check
from xqhil.cli import main
from history_testlib import make_doc


@pytest.fixture
def db(history_db):
    path = history_db
    record_and_check(make_doc(model="resnet18", runtime="1.20.1", seed=1), path)
    record_and_check(make_doc(model="resnet18", runtime="1.21.0", int8_ms=15.0, seed=2), path)
    record_and_check(make_doc(model="mobilenet_v2", board="k1-lab-02", runtime="1.21.0", verdict="fail",
                              status="bug", chip_int8=55.0, seed=3), path)
    return path


def _run(capsys, *argv):
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def test_history_lists_every_run(db, capsys):
    code, out, err = _run(capsys, "history", "--db", str(db))
    assert code == 0 and err == ""
    lines = out.splitlines()
    assert lines[0].split()[:4] == ["run", "created", "(UTC)", "model"]
    rows = [line.split() for line in lines[2:]]
    assert [r[0] for r in rows] == ["1", "2", "3"]
    assert rows[1][3:7] == ["resnet18", "k1-lab-01", "1.21.0", "pass"]
    assert rows[2][6] == "fail"


@pytest.mark.parametrize("flags, ids", [
    (["--model", "resnet18"], [1, 2]),
    (["--board", "k1-lab-02"], [3]),
    (["--runtime", "1.21.0"], [2, 3]),
    (["--verdict", "fail"], [3]),
    (["--model", "resnet18", "--runtime", "1.21.0"], [2]),
])
def test_history_filters(db, capsys, flags, ids):
    code, out, _ = _run(capsys, "history", "--db", str(db), "--json", *flags)
    assert code == 0
    assert [r["id"] for r in json.loads(out)] == ids
    code, out, _ = _run(capsys, "history", "list", "--db", str(db), "--json", *flags)
    assert [r["id"] for r in json.loads(out)] == ids


def test_history_list_json_counts_regressions(db, capsys):
    _, out, _ = _run(capsys, "history", "--db", str(db), "--json")
    assert [r["regressions"] for r in json.loads(out)] == [0, 1, 0]


def test_no_match_says_so(db, capsys):
    code, out, _ = _run(capsys, "history", "--db", str(db), "--model", "nope")
    assert code == 0 and out.strip() == "no runs match"


def test_history_show(db, capsys):
    code, out, _ = _run(capsys, "history", "--db", str(db), "show", "2")
    assert code == 0
    assert "verdict          pass" in out
    assert "onnxruntime         1.21.0" in out
    assert "latency regression on k1-lab-01" in out and "appeared with onnxruntime 1.21.0 (run 2)" in out
    assert "int8" in out and "samples" in out


def test_history_show_json(db, capsys):
    code, out, _ = _run(capsys, "history", "show", "3", "--db", str(db), "--json")
    data = json.loads(out)
    assert code == 0 and data["id"] == 3 and data["doc"]["accuracy"]["status"] == "bug"


def test_unknown_run_is_exit_2_with_one_line(db, capsys):
    code, out, err = _run(capsys, "history", "--db", str(db), "show", "99")
    assert code == 2 and out == ""
    assert err.count("\n") == 1 and "no run 99" in err


def test_missing_database_is_exit_2(tmp_path, capsys):
    code, _, err = _run(capsys, "history", "--db", str(tmp_path / "none.sqlite3"))
    assert code == 2 and "no history database" in err
    assert not (tmp_path / "none.sqlite3").exists()


def test_unreadable_database_is_exit_2(tmp_path, capsys):
    bad = tmp_path / "bad.sqlite3"
    bad.write_bytes(b"\x00garbage" * 500)
    code, _, err = _run(capsys, "history", "--db", str(bad))
    assert code == 2 and "not a readable xqhil history database" in err


def test_db_from_environment(db, capsys, monkeypatch):
    monkeypatch.setenv("XQHIL_DB", str(db))
    code, out, _ = _run(capsys, "history", "--json")
    assert code == 0 and len(json.loads(out)) == 3


def test_pin_and_unpin(db, capsys):
    code, out, _ = _run(capsys, "history", "--db", str(db), "pin", "1")
    assert code == 0 and "run 1 is now the baseline of resnet18 on k1-lab-01" in out
    _, out, _ = _run(capsys, "history", "--db", str(db), "show", "2")
    assert "pinned baseline  1" in out
    code, out, _ = _run(capsys, "history", "unpin", "1", "--db", str(db))
    assert code == 0 and out.startswith("unpinned")
    assert _run(capsys, "history", "--db", str(db), "pin", "7")[0] == 2


def test_dashboard_command(db, tmp_path, capsys):
    out_dir = tmp_path / "dash"
    code, out, _ = _run(capsys, "dashboard", "--db", str(db), "--out", str(out_dir))
    assert code == 0 and str(out_dir / "index.html") in out
    html = (out_dir / "index.html").read_text()
    assert "resnet18" in html and "What changed in onnxruntime" in html
    pages = "".join(p.read_text() for p in (out_dir / "pages").glob("s-*.html"))
    assert 'data-run="3"' in pages


def test_dashboard_missing_db_and_unwritable_out(tmp_path, capsys):
    assert _run(capsys, "dashboard", "--db", str(tmp_path / "x.sqlite3"), "--out", str(tmp_path / "d"))[0] == 2
    db = tmp_path / "h.sqlite3"
    record_and_check(make_doc(), db)
    blocker = tmp_path / "file"
    blocker.write_text("not a folder")
    code, _, err = _run(capsys, "dashboard", "--db", str(db), "--out", str(blocker / "sub"))
    assert code == 3 and "cannot write the dashboard" in err


def test_bad_arguments_exit_2(capsys):
    with pytest.raises(SystemExit) as info:
        main(["history", "show", "not-a-number"])
    assert info.value.code == 2


@pytest.mark.parametrize("argv", [["history", "-q"], ["history", "-v", "--json"], ["history", "show", "1", "-q"],
                                  ["history", "-q", "show", "1", "-v"], ["dashboard", "-v", "--out", "DASH"]])
def test_quiet_and_verbose_as_on_the_other_commands(db, capsys, tmp_path, argv):
    argv = [str(tmp_path / "dash") if a == "DASH" else a for a in argv]
    import logging

    code, _, _ = _run(capsys, *argv, "--db", str(db))
    assert code == 0
    expected = logging.DEBUG if "-v" in argv else logging.WARNING if "-q" in argv else logging.INFO
    assert logging.getLogger().level == expected


def test_the_installed_package_holds_no_test_only_code():
    import importlib.util

    for name in ("xqhil.history.synthetic", "xqhil.dashboard.browser", "xqhil.history.__main__"):
        assert importlib.util.find_spec(name) is None, name
