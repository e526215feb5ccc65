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


@pytest.fixture(scope="module")
def team_db(tmp_path_factory):
    """12 models x 4 boards x 14 runtime releases (672 measured runs; inception_v3 not yet measured on
    k1-lab-02 with the newest release), then k1-lab-03 fails three jobs in a row for infrastructure
    reasons and is quarantined."""
    from dashboard_testlib import TEAM_BOARDS, TEAM_MODELS, TEAM_RELEASES, infra_doc, record_plain, team_doc

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
