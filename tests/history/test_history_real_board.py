"""Latency regressions judged on REAL runs of the host board (the demo model, FP32 and INT8 timed
interleaved by the agent), with slowdowns injected into the board's onnxruntime by the faults fixture
(tests/xqhil/faults/sitecustomize.py: ``slow-int8:P``, ``slow-all:P``, ``XQHIL_FAULT_ORT_VERSION``).

Five clean runs make the history; the checked run is a "new release" (its runtime reports another
version, so it records a change). Nothing here asserts a time: each test asserts what the check decided.
The injected slowdowns are 50%, far beyond the run-to-run scatter of the INT8/FP32 ratio even on a
machine shared by several test runs; bench/regression_real.py measures the rates at 10-30%.
"""
from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "xqhil"))
from xqhil_testlib import FAULTS, demo_config  # noqa: E402

from xqhil.boards.spec import BoardSpec  # noqa: E402
from xqhil.history import record_and_check  # noqa: E402
from xqhil.history.confirm import Confirmer  # noqa: E402
from xqhil.protocol import sha256_file  # noqa: E402
from xqhil.remeasure import LatencyProbe  # noqa: E402
from xqhil.runone import read_inputs  # noqa: E402

CLEAN_RUNS = 5


@pytest.fixture(scope="module")
def board(tmp_path_factory):
    """A host board running the demo model pair, whose interpreter takes a fault."""
    import xquant

    folder = tmp_path_factory.mktemp("demo")
    config = demo_config(folder)
    cfg = json.loads(config.read_text())
    cfg["quantization_parameters"].update(finetune_level=0)
    config.write_text(json.dumps(cfg))
    xquant.quantize_onnx_model(str(config))
    fp32 = cfg["model_parameters"]["onnx_model"]
    int8 = str(next((folder / "work").glob("*.q.onnx")))
    return HostBoard(fp32, int8)


class HostBoard:
    def __init__(self, fp32: str, int8: str) -> None:
        self.models = {"fp32": fp32, "int8": int8}
        self.names, self.arrays = read_inputs(fp32, None)
        self.version = None

    def command(self, fault: str = "none", release: str | None = None) -> str:
        label = f" XQHIL_FAULT_ORT_VERSION={release}" if release else ""
        return f"env PYTHONPATH={FAULTS} XQHIL_FAULT={fault}{label} {sys.executable}"

    def probe(self) -> LatencyProbe:
        return LatencyProbe(BoardSpec("host", "host", python=(sys.executable,)), self.models, self.names,
                            self.arrays, warmup=5, repeat=50, threads=1, min_time_s=1.0)

    def run(self, fault: str = "none", release: str | None = None) -> dict:
        measured = self.probe().measure(self.command(fault, release))
        device = dict(measured["device"], execution_provider="CPUExecutionProvider")
        return {"schema": "xqhil.verify/1", "verdict": "pass", "board": {"kind": "host", "name": "host"},
                "device": device, "latency": measured["latency"],
                "model": {"name": "fashion_cnn", "fp32_sha256": sha256_file(self.models["fp32"]),
                          "int8_sha256": sha256_file(self.models["int8"]), "config_sha256": "test"}}

    def history(self, db: Path) -> str:
        """Record CLEAN_RUNS clean runs; return the version a new release reports."""
        for _ in range(CLEAN_RUNS):
            doc = self.run()
            assert record_and_check(doc, db)["regressions"] == []  # same runtime: never a latency regression
        return f"{doc['device']['onnxruntime']}+next"

    def again(self, fault: str, release: str):
        """What a confirmation measures: the board as it is now (``fault``), or another interpreter."""
        return lambda python: self.probe().measure(python or self.command(fault, release))

    def ab_checked(self, db: Path, fault: str, again: str, reruns: int) -> tuple[dict, dict]:
        """History, then a run on a new release timed with ``fault``, checked with the baseline's interpreter at
        hand while the board measures again with ``again``; the run's document and the check's summary."""
        release = self.history(db)
        doc = self.run(fault, release)
        confirmer = Confirmer(self.again(again, release), reruns=reruns, baseline_python=self.command())
        return doc, record_and_check(doc, db, confirmer=confirmer)


def latency_findings(summary: dict) -> list:
    return [item for item in summary["regressions"] if item["kind"] == "latency"]


def test_injected_int8_slowdown_is_flagged_after_five_clean_runs(board, tmp_path):
    db = tmp_path / "h.sqlite3"
    release = board.history(db)
    doc = board.run("slow-int8:50", release)
    summary = record_and_check(doc, db, confirmer=Confirmer(board.again("slow-int8:50", release)))
    [finding] = latency_findings(summary)
    assert finding["metric"] == "latency.int8.p50_ms" and finding["runtime_version"] == release
    assert "against FP32 in the same run" in finding["message"]
    assert "confirmed, decided by re-runs: " in finding["message"] and "exact rank test" in finding["message"]
    record = doc["latency"]["confirmation"]
    assert record["decisions"]["latency.int8.p50_ms"]["confirmed"]
    assert len(record["reruns"]) in (5, 10)  # flagged at a look: 6 or 11 runs (the default budget of 10)


def test_a_transient_int8_slowdown_is_cleared_by_reruns(board, tmp_path):
    """The checked run was slowed, the board measured again is not (a transient disturbance): the
    sequential re-runs clear it, within the budget, and the summary says which evidence decided."""
    db = tmp_path / "h.sqlite3"
    release = board.history(db)
    doc = board.run("slow-int8:50", release)
    summary = record_and_check(doc, db, confirmer=Confirmer(board.again("none", release)))
    assert latency_findings(summary) == []
    [note] = summary["unconfirmed"]
    assert note["by"] == "re-runs" and "not confirmed" in note["message"] and "exact rank test" in note["message"]
    # cleared at the earliest once a re-run ranks so low that no later look can reach its level
    assert 1 <= len(doc["latency"]["confirmation"]["reruns"]) <= 10


def test_board_wide_slowdown_of_fp32_and_int8_alike_is_not_flagged(board, tmp_path):
    db = tmp_path / "h.sqlite3"
    release = board.history(db)
    doc = board.run("slow-all:50", release)
    summary = record_and_check(doc, db, confirmer=Confirmer(board.again("slow-all:50", release)))
    assert latency_findings(summary) == [] and summary["baseline_run"] == CLEAN_RUNS


def test_ab_against_the_baseline_runtime_decides(board, tmp_path):
    db = tmp_path / "h.sqlite3"
    release = board.history(db)
    doc = board.run("slow-int8:50", release)
    confirmer = Confirmer(board.again("slow-int8:50", release), reruns=0, baseline_python=board.command())
    [finding] = latency_findings(record_and_check(doc, db, confirmer=confirmer))
    assert "confirmed, decided by A/B" in finding["message"] and "7 alternating rounds" in finding["message"]
    assert f"onnxruntime {release} vs {release[:-len('+next')]}" in finding["message"]


def test_a_transient_int8_slowdown_is_not_confirmed_by_the_ab(board, tmp_path):
    """The checked run was slowed, but the board measured again is not (a transient disturbance): the A/B
    against the baseline runtime finds no difference, so nothing is flagged and the summary says why."""
    _doc, summary = board.ab_checked(tmp_path / "h.sqlite3", "slow-int8:50", "none", reruns=0)
    assert latency_findings(summary) == []
    notes = {n["metric"]: n for n in summary["unconfirmed"]}
    note = notes["latency.int8.p50_ms"]
    assert note["by"] == "A/B" and note["message"].startswith("suspected ") and "not confirmed" in note["message"]
    # the precision the screen did not suspect is A/B'd too (a new runtime, the baseline's at hand)
    assert set(notes) <= {"latency.int8.p50_ms", "latency.fp32.p50_ms"}
    assert all(n["message"].startswith("checked ") for m, n in notes.items() if m != "latency.int8.p50_ms")


def test_a_new_runtime_is_ab_tested_even_when_its_run_hid_the_slowdown(board, tmp_path):
    """The run on the new runtime looks clean (as one timed while the board sat in a faster state does):
    the screen does not suspect it, but with the baseline's interpreter at hand the release is A/B'd
    against it, and the A/B, timing both runtimes at the same moment, finds INT8 50% slower."""
    doc, summary = board.ab_checked(tmp_path / "h.sqlite3", "none", "slow-int8:50", reruns=10)
    [finding] = latency_findings(summary)
    assert finding["metric"] == "latency.int8.p50_ms" and finding["runtime_version"].endswith("+next")
    assert "confirmed, decided by A/B" in finding["message"] and "7 alternating rounds" in finding["message"]
    record = doc["latency"]["confirmation"]
    if "latency.int8.p50_ms" not in record["suspected"]:  # the clean run may still be suspected by chance
        assert "on a new runtime" in finding["message"]
    assert record["release"] and len(record["ab"]["rounds"]) == 7  # +50% in every round: the first block decides
    assert record["reruns"] == []


def test_a_new_runtime_that_is_not_slower_passes_its_ab_and_says_so(board, tmp_path):
    doc, summary = board.ab_checked(tmp_path / "h.sqlite3", "none", "none", reruns=10)
    assert latency_findings(summary) == []
    notes = summary["unconfirmed"]
    assert {n["metric"] for n in notes} == {"latency.int8.p50_ms", "latency.fp32.p50_ms"}
    suspected = set(doc["latency"]["confirmation"]["suspected"])  # a clean run may be suspected by chance
    assert all(n["by"] == "A/B" and "not confirmed" in n["message"] for n in notes)
    assert all(n["message"].startswith("suspected " if n["metric"] in suspected else "checked ") for n in notes)
    assert doc["latency"]["confirmation"]["reruns"] == []  # the A/B decided: no re-runs
