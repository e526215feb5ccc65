"""The verify.json -> history contract on a REAL report: a real ``quantize-and-verify --board host`` run of a
tiny project is recorded, and what the history, ``xqhil history show`` and the dashboard read from it is
checked against the report itself and against this machine (not against a hand-written copy).

It also keeps the synthetic documents of the other history tests honest: ``make_doc`` may hold no field
that a real report lacks.
"""
from __future__ import annotations

import json
import platform
import sqlite3
import sys
from pathlib import Path

import onnxruntime
import pytest
from history_testlib import make_doc

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "xqhil"))
from xqhil_testlib import make_project, run_cli  # noqa: E402

from xqhil.history import RunStore  # noqa: E402
from xqhil.history import doc as docs  # noqa: E402


def xqhil(*argv: str) -> tuple:
    return run_cli(list(argv))


@pytest.fixture(scope="module")
def recorded(tmp_path_factory) -> dict:
    folder = tmp_path_factory.mktemp("real")
    config = make_project(folder / "proj")  # verify_parameters: warmup 1, repeat 3
    db = folder / "history.sqlite3"
    code, out, err = xqhil("quantize-and-verify", str(config), "--board", "host", "--out", str(folder / "out"),
                           "--db", str(db), "-q")
    assert code == 0, err
    report = json.loads((folder / "out" / "verify.json").read_text())
    return {"db": db, "report": report, "out": out, "folder": folder}


def key_paths(value: object, prefix: str = "") -> set:
    """Dotted paths of every dict key; the per-output fidelity names are data, not layout (``*``)."""
    if not isinstance(value, dict):
        return set()
    paths = set()
    for key, item in value.items():
        path = "fidelity.outputs.*" if prefix == "fidelity.outputs" else f"{prefix}.{key}" if prefix else key
        paths.add(path)
        paths |= key_paths(item, path)
    return paths


def test_the_stored_document_is_the_report(recorded):
    report = recorded["report"]
    with RunStore.open(recorded["db"], readonly=True) as store:
        [run] = store.list()
    stored = dict(run.doc)
    assert stored.pop("history", None) is None  # recorded before the outcome was added to verify.json
    assert stored == {k: v for k, v in report.items() if k != "history"}
    assert report["history"] == {"recorded": True, "run_id": run.id, "db": str(recorded["db"]),
                                 "baseline_run": None, "baseline_pinned": False,
                                 "baseline_runtime_version": None, "regressions": []}


def test_history_reads_what_the_board_reported(recorded):
    report = recorded["report"]
    with RunStore.open(recorded["db"], readonly=True) as store:
        [run] = store.list()
    assert run.verdict == report["verdict"] == "pass"
    assert run.key.board == "host" and run.doc["board"]["python"] == sys.executable  # a command, not a version
    assert run.key.model == "tiny" and run.key.fp32_sha256 == report["model"]["fp32_sha256"]
    assert run.runtime_version == onnxruntime.__version__  # the host board runs this interpreter's runtime
    fingerprint = docs.fingerprint(run.doc)
    assert fingerprint["arch"] == platform.machine() and fingerprint["onnxruntime"] == onnxruntime.__version__
    assert fingerprint["python"] == platform.python_version() and fingerprint["emulated"] is False
    assert fingerprint["execution_provider"] == "CPUExecutionProvider"
    assert "CPUExecutionProvider" in fingerprint["providers"]
    for precision in ("int8", "fp32"):
        samples = docs.latency_samples(run.doc, precision)
        assert len(samples) == 3 and all(x > 0 for x in samples)  # repeat = 3 timed runs
        assert samples == report["latency"][precision]["samples_ms"]
    conn = sqlite3.connect(recorded["db"])
    row = conn.execute("SELECT board, board_kind, verdict, runtime_version, execution_provider, emulated, "
                       "fingerprint, int8_p50_ms, fp32_p50_ms, chip_int8_acc FROM runs").fetchone()
    conn.close()
    assert row == ("host", "host", "pass", onnxruntime.__version__, "CPUExecutionProvider", 0, fingerprint["id"],
                   report["latency"]["int8"]["p50_ms"], report["latency"]["fp32"]["p50_ms"],
                   report["accuracy"]["chip_int8"])


def test_show_and_dashboard_present_the_real_run(recorded):
    code, out, _ = xqhil("history", "show", "1", "--db", str(recorded["db"]), "--json")
    shown = json.loads(out)
    assert code == 0 and shown["doc"]["device"]["onnxruntime"] == onnxruntime.__version__
    code, _, err = xqhil("dashboard", "--db", str(recorded["db"]), "--out", str(recorded["folder"] / "dash"))
    assert code == 0, err
    dash = recorded["folder"] / "dash"
    index = (dash / "index.html").read_text()
    assert f"What changed in onnxruntime {onnxruntime.__version__}" in index and ">tiny</a>" in index
    page = (dash / "pages" / "s-tiny-host-" f"{docs.short_hash(recorded['report']['model']['config_sha256'])}.html")
    fingerprint = docs.fingerprint(recorded["report"])["id"]
    assert 'data-run="1"' in page.read_text() and fingerprint in page.read_text()
    devices = (dash / "pages" / "fingerprints.html").read_text()
    assert fingerprint in devices and f"<td>{platform.machine()}</td>" in devices


def test_synthetic_documents_have_no_field_a_real_report_lacks(recorded):
    real = key_paths(recorded["report"])
    for kind in ("ssh", "host", "qemu"):
        invented = key_paths(make_doc(board_kind=kind)) - real
        assert not invented, f"make_doc has fields a real verify.json does not: {sorted(invented)}"
    assert make_doc()["board"]["python"] == "python3"  # an interpreter command, as spec.public() writes it
