"""After quantize-and-verify: the history outcome lands in verify.json and verify.md."""
import json

from xqhil.history.reporting import MD_HEADING, record_verify_report
from history_testlib import make_doc


def _written_report(folder, **kw):
    folder.mkdir(parents=True)
    doc = make_doc(reports_dir=str(folder), **kw)
    (folder / "verify.json").write_text(json.dumps(doc))
    (folder / "verify.md").write_text("# xqhil verify: mobilenet_v2 on k1-lab-01 -> PASS\n\n- every check passed\n")
    return doc


def test_outcome_is_added_to_both_reports(tmp_path, history_db):
    db = history_db
    first = record_verify_report(_written_report(tmp_path / "r1", seed=1), db)
    assert first["baseline_run"] is None
    doc = _written_report(tmp_path / "r2", runtime="1.21.0", int8_ms=14.5, seed=2)
    summary = record_verify_report(doc, db)
    assert len(summary["regressions"]) == 1
    saved = json.loads((tmp_path / "r2" / "verify.json").read_text())
    assert saved["history"]["run_id"] == 2 and saved["history"]["baseline_run"] == 1
    assert saved["history"]["regressions"][0]["runtime_version"] == "1.21.0"
    md = (tmp_path / "r2" / "verify.md").read_text()
    assert md.startswith("# xqhil verify") and md.count(MD_HEADING) == 1
    assert "- REGRESSION: latency regression on k1-lab-01" in md and "baseline run 1" in md


def test_markdown_section_is_replaced_not_repeated(tmp_path, history_db):
    db = history_db
    doc = _written_report(tmp_path / "r1", seed=1)
    record_verify_report(doc, db)
    record_verify_report(doc, db)  # the same report recorded again: a second run
    md = (tmp_path / "r1" / "verify.md").read_text()
    assert md.count(MD_HEADING) == 1 and "run 2 recorded" in md and "no regression against the baseline" in md


def test_report_without_files_is_still_recorded(tmp_path):
    doc = make_doc(reports_dir=str(tmp_path / "gone"))
    summary = record_verify_report(doc, tmp_path / "h.sqlite3")
    assert summary["run_id"] == 1 and doc["history"]["run_id"] == 1
    assert not (tmp_path / "gone").exists()  # only reports that exist are updated
