"""A team-scale synthetic history for the dashboard tests (not installed): 12 models x 4 boards x 14 runtime
releases with a story in the newest release, and documents of jobs that failed for infrastructure reasons
(verdict INFRA), in the shape the farm records them."""
from __future__ import annotations

from history_testlib import make_doc


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
