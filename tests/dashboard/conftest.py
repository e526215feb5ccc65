"""Make ``host/`` importable when the package is not installed; the test history database fixture."""
import sys
from pathlib import Path

import pytest

HOST = Path(__file__).resolve().parents[2] / "host"
try:
    import xqhil.history  # noqa: F401
except ImportError:
    sys.path.insert(0, str(HOST))


@pytest.fixture
def history_db(tmp_path):
    """A database with 7 runs on 2 model/board pairs: a slowdown in 1.21.0 and a chip bug in 1.22.0.

    Each run's verify.md exists under tmp_path/runs/N/, so report links can be checked.
    """
    from xqhil.history import record_and_check
    from history_testlib import make_doc

    db = tmp_path / "history.sqlite3"
    plan = [("mobilenet_v2", "k1-lab-01", "1.20.1", {}), ("mobilenet_v2", "k1-lab-01", "1.20.1", {}),
            ("mobilenet_v2", "k1-lab-01", "1.21.0", {"int8_ms": 14.6}),
            ("mobilenet_v2", "k1-lab-01", "1.22.0", {"verdict": "fail", "status": "bug", "chip_int8": 58.0,
                                                      "snr_db": 16.0,
                                                      "reasons": ["chip INT8 accuracy 13 points below PC"]}),
            ("resnet<8>", "qemu-rv64", "1.21.0", {"emulated": True, "board_kind": "qemu", "int8_ms": 900.0,
                                                   "fp32_ms": 2400.0, "chip_int8": None, "n": 5}),
            ("resnet<8>", "qemu-rv64", "1.21.0", {"emulated": True, "board_kind": "qemu", "int8_ms": 905.0,
                                                   "fp32_ms": 2390.0, "chip_int8": None, "n": 5}),
            ("mobilenet_v2", "k1-lab-01", "1.22.1", {})]
    for seed, (model, board, runtime, extra) in enumerate(plan, start=1):
        reports = tmp_path / "runs" / str(seed)
        reports.mkdir(parents=True)
        (reports / "verify.md").write_text(f"# run {seed}\n")
        record_and_check(make_doc(model=model, board=board, runtime=runtime, seed=seed,
                                  reports_dir=str(reports), **extra), db)
    return db


TEAM_MODELS = ["mobilenet_v2", "resnet18", "efficientnet_lite0_per_channel_calibrated_v2", "squeezenet1_1",
               "yolov8n", "bert_tiny", "ghostnet", "densenet121", "shufflenet_v2", "regnet_x_400mf",
               "inception_v3", "unet_small"]
TEAM_BOARDS = [("k1-lab-01", "ssh"), ("k1-lab-02", "ssh"), ("k1-lab-03", "ssh"),
               ("qemu-rv64-debian-trixie-onnxruntime", "qemu")]
TEAM_RELEASES = [f"1.{18 + i // 4}.{i % 4}" for i in range(14)]  # newest: 1.21.1, before it 1.21.0


def team_effect(model: str, board: str, r: int) -> str | None:
    """The story of the newest release (index 13) against the one before (12), on k1-lab-01:
    resnet18 gets a new chip bug, yolov8n a new INT8 slowdown, mobilenet_v2 recovers from a chip bug,
    squeezenet1_1 stays slow (since 12); bert_tiny had a chip bug in release 2 only (an old one)."""
    if board != "k1-lab-01":
        return None
    story = {("resnet18", 13): "bug", ("yolov8n", 13): "slow", ("mobilenet_v2", 12): "bug",
             ("squeezenet1_1", 12): "slow", ("squeezenet1_1", 13): "slow", ("bert_tiny", 2): "bug"}
    return story.get((model, r))


def team_doc(model: str, board: str, kind: str, r: int, seed: int) -> tuple[dict, list]:
    from history_testlib import make_doc

    what = team_effect(model, board, r)
    bug = what == "bug"
    doc = make_doc(model=model, board=board, board_kind=kind, runtime=TEAM_RELEASES[r], seed=seed,
                   int8_ms=12.0 * (1.3 if what == "slow" else 1.0), emulated=kind == "qemu", n=12,
                   chip_int8=61.0 if bug else 71.3, snr_db=16.0 if bug else 42.0,
                   verdict="fail" if bug else "pass", status="bug" if bug else "pass",
                   reasons=["chip INT8 accuracy 10.4 points below PC INT8"] if bug else [])
    found = []
    if what == "slow":
        cur = doc["latency"]["int8"]["p50_ms"]
        found = [{"kind": "latency", "metric": "latency.int8.p50_ms", "baseline": cur / 1.3, "current": cur,
                  "threshold": 0.5, "runtime_version": TEAM_RELEASES[r], "appeared_run": None,
                  "message": f"latency regression: INT8 +30% with onnxruntime {TEAM_RELEASES[r]}"}]
    return doc, found


def infra_doc(model: str, board: str, seed: int, quarantined: bool) -> dict:
    from history_testlib import make_doc

    doc = make_doc(model=model, board=board, seed=seed)
    for part in ("device", "accuracy", "fidelity", "latency"):
        doc.pop(part)
    doc.update(verdict="INFRA", reasons=[], infra={"error": "ssh: connection reset by peer", "exit": 3},
               farm={"quarantined": quarantined})
    return doc


def record_plain(db, items) -> list[int]:
    """Record (doc, regressions) pairs in one transaction, without a regression check (fast)."""
    from xqhil.history import RunStore

    ids = []
    with RunStore.open(db) as store, store.write():
        for doc, found in items:
            ids.append(store.record(doc))
            if found:
                store.save_regressions(ids[-1], None, found)
    return ids


@pytest.fixture(scope="module")
def team_db(tmp_path_factory):
    """12 models x 4 boards x 14 runtime releases (672 measured runs; inception_v3 not yet measured on
    k1-lab-02 with the newest release), then k1-lab-03 fails three jobs in a row for infrastructure
    reasons and is quarantined."""
    db = tmp_path_factory.mktemp("team") / "history.sqlite3"
    items, seed = [], 0
    for r in range(len(TEAM_RELEASES)):
        for board, kind in TEAM_BOARDS:
            for model in TEAM_MODELS:
                if r == 13 and (model, board) == ("inception_v3", "k1-lab-02"):
                    continue
                seed += 1
                items.append(team_doc(model, board, kind, r, seed))
    items += [(infra_doc("resnet18", "k1-lab-03", seed + i, quarantined=i == 3), []) for i in (1, 2, 3)]
    record_plain(db, items)
    return db
