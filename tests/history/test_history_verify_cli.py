"""The history inside ``xqhil``: quantize-and-verify records and checks each run (--db, --fail-on-regression),
and ``xqhil history`` / ``xqhil dashboard`` are subcommands of the main front end.

The verification itself is replaced by synthetic reports (its own tests run it for real): this checks
the wiring, the printed summary, the report files and the exit codes.
"""
import contextlib
import io
import json

import pytest
from history_testlib import make_doc

import xqhil.cli as cli


def _xqhil(*argv):
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        code = cli.main(list(argv))
    return code, out.getvalue(), err.getvalue()


@pytest.fixture
def fake_verify(monkeypatch, tmp_path):
    """verify_and_probe returns (and writes) the next synthetic report from a queue, with no latency probe
    (a suspected latency regression is judged on the single run)."""
    import xqhil.verify

    queue = []

    def fake(opts):
        doc = queue.pop(0)
        folder = tmp_path / f"run{len(list(tmp_path.glob('run*')))}"
        folder.mkdir()
        doc["reports"] = {"md": str(folder / "verify.md"), "json": str(folder / "verify.json")}
        (folder / "verify.json").write_text(json.dumps(doc))
        (folder / "verify.md").write_text("# xqhil verify\n")
        doc["accuracy"]["measure"] = "labelled accuracy"
        return doc

    monkeypatch.setattr(xqhil.verify, "verify_and_probe", lambda opts: (fake(opts), None))
    return queue


def _verify(db, *extra):
    return _xqhil("quantize-and-verify", "cfg.json", "--board", "host", "--db", str(db), "-q", *extra)


def test_runs_are_recorded_and_a_slowdown_is_reported(fake_verify, tmp_path, history_db):
    db = history_db
    fake_verify += [make_doc(seed=1), make_doc(runtime="1.21.0", int8_ms=14.6, seed=2),
                    make_doc(runtime="1.21.0", int8_ms=14.6, seed=3)]
    code, out, _ = _verify(db)
    assert code == 0 and "history: run 1 recorded" in out and "no baseline yet" in out
    code, out, _ = _verify(db)
    assert code == 0  # reported, not fatal without --fail-on-regression
    assert "REGRESSION: latency regression on k1-lab-01" in out and "appeared with onnxruntime 1.21.0" in out
    code, out, _ = _verify(db, "--fail-on-regression")
    assert code == 1 and "REGRESSION" in out
    saved = json.loads((tmp_path / "run2" / "verify.json").read_text())
    assert saved["history"]["regressions"][0]["appeared_run"] == 2
    assert "## History" in (tmp_path / "run2" / "verify.md").read_text()


def test_clean_run_with_fail_on_regression_exits_0(fake_verify, tmp_path, history_db):
    db = history_db
    fake_verify += [make_doc(seed=1), make_doc(seed=2)]
    assert _verify(db, "--fail-on-regression")[0] == 0
    code, out, _ = _verify(db, "--fail-on-regression")
    assert code == 0 and "no regression against the baseline" in out


def test_failed_verdict_is_still_recorded_and_exits_1(fake_verify, tmp_path):
    db = tmp_path / "h.sqlite3"
    fake_verify.append(make_doc(verdict="fail", status="bug", chip_int8=50.0))
    assert _verify(db)[0] == 1
    code, out, _ = _xqhil("history", "--db", str(db), "--verdict", "fail", "--json")
    assert code == 0 and [r["id"] for r in json.loads(out)] == [1]


def test_default_database_comes_from_the_environment(fake_verify, tmp_path, monkeypatch):
    monkeypatch.setenv("XQHIL_DB", str(tmp_path / "env.sqlite3"))
    fake_verify.append(make_doc())
    code, out, _ = _xqhil("quantize-and-verify", "cfg.json", "--board", "host", "-q")
    assert code == 0 and str(tmp_path / "env.sqlite3") in out
    assert (tmp_path / "env.sqlite3").is_file()


def test_unusable_database_is_exit_2_with_one_line_before_the_run(fake_verify, tmp_path):
    bad = tmp_path / "bad.sqlite3"
    bad.write_text("not sqlite " * 200)
    fake_verify.append(make_doc())
    code, out, err = _verify(bad)
    assert code == 2 and err.strip().count("\n") == 0 and "not a readable xqhil history database" in err
    assert len(fake_verify) == 1 and out == ""  # refused before quantize_and_verify ran


def test_each_regression_is_printed_once(fake_verify, tmp_path):
    db = tmp_path / "h.sqlite3"
    fake_verify += [make_doc(seed=1), make_doc(runtime="1.21.0", int8_ms=14.6, seed=2)]
    _xqhil("quantize-and-verify", "cfg.json", "--board", "host", "--db", str(db))
    code, out, err = _xqhil("quantize-and-verify", "cfg.json", "--board", "host", "--db", str(db))
    assert code == 0
    assert (out + err).count("latency regression on k1-lab-01") == 1 and out.count("REGRESSION:") == 1
    assert "recorded run" not in err  # the summary line is the only report of the recording


def test_history_and_dashboard_are_xqhil_subcommands(fake_verify, tmp_path, history_db):
    db = history_db
    fake_verify += [make_doc(seed=1), make_doc(runtime="1.21.0", int8_ms=14.6, seed=2)]
    _verify(db)
    _verify(db)
    code, out, _ = _xqhil("history", "--db", str(db))
    assert code == 0 and len(out.strip().splitlines()) == 4
    code, out, _ = _xqhil("history", "show", "2", "--db", str(db))
    assert code == 0 and "latency regression" in out
    assert _xqhil("history", "show", "9", "--db", str(db))[0] == 2
    code, out, _ = _xqhil("dashboard", "--db", str(db), "--out", str(tmp_path / "dash"))
    assert code == 0 and (tmp_path / "dash" / "index.html").is_file()


def test_postgresql_history_from_the_environment_never_shows_the_password(fake_verify, pg_server, pg_db,
                                                                          monkeypatch):
    from pg_testlib import PASSWORD

    monkeypatch.setenv("XQHIL_DB", pg_db)
    fake_verify += [make_doc(seed=1), make_doc()]
    code, out, err = _xqhil("quantize-and-verify", "cfg.json", "--board", "host")
    assert code == 0 and "history: run 1 recorded in postgresql://xqhil:***@127.0.0.1" in out
    assert PASSWORD not in out + err
    down = pg_server.dsn("gone").replace(f":{pg_server.port}/", ":1/")
    code, out, err = _verify(down)
    assert code == 3 and out == "" and err.strip().count("\n") == 0 and "cannot reach the PostgreSQL history" in err
    assert PASSWORD not in err and len(fake_verify) == 1  # refused before quantize_and_verify ran
