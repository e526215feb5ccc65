"""History and dashboard at team scale: record and render at 1k, 10k and 100k runs.

One history grows through the scales (the first 1,000 runs, then up to 10,000, then up to 100,000), so the
same command works on any store ``--db`` names: a SQLite path (default: a fresh file under --out) or, with
a PostgreSQL backend, its DSN (the store must be empty). The documents are synthetic but shaped like real
ones (tests/history_testlib.make_doc: 40 timed samples a side, 8 on the emulated board): 32 models x 5
boards, three runs per model and board per runtime release, a 25% INT8 slowdown or an INT8 chip bug in
about 2% of model/release pairs (lasting one or two releases), and one flaky board whose jobs fail for
infrastructure reasons (verdict INFRA) now and then, quarantined after three in a row.

At each scale it prints:
- fill: the bulk-record rate (``store.record`` in transactions of 500 runs, with the regressions a
  check would have found) that grows the history,
- record: ``record_and_check`` per run (the quantize-and-verify path: record, baseline, regression check,
  its own transaction) for the last ``--check-runs`` runs of the scale,
- render: ``xqhil dashboard --db DB --out DIR`` as a separate process: wall and CPU time (on a machine
  shared with other work the wall time is mostly waiting for a core), its peak memory (RSS), the total
  size of the pages and the largest page.

    python bench/history_scale.py [--scales 1000,10000,100000] [--db PATH|DSN] [--out DIR] [--check-runs 20]
                                  [--screenshot docs/img/dashboard-100k.png]
"""
from __future__ import annotations

import argparse
import hashlib
import logging
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "host"))
sys.path.insert(0, str(ROOT / "tests"))  # test-only helpers (history_testlib)

from xqhil.history import RunStore, record_and_check  # noqa: E402
from history_testlib import make_doc  # noqa: E402

MODELS = ["mobilenet_v2", "mobilenet_v3_small", "mobilenet_v3_large", "resnet18", "resnet34", "resnet50",
          "efficientnet_b0", "efficientnet_lite0", "squeezenet1_1", "shufflenet_v2_x1_0", "mnasnet1_0",
          "regnet_x_400mf", "densenet121", "googlenet", "inception_v3", "vgg11_bn", "alexnet", "ghostnet",
          "mobilevit_xs", "convnext_tiny", "yolov5n", "yolov8n", "ssd_mobilenet_v1", "deeplabv3_mbv2",
          "unet_small", "bert_tiny", "distilbert_base", "whisper_tiny_encoder", "fashion_cnn", "lenet5",
          "mobileone_s0", "levit_128s"]
BOARDS = [("k1-lab-01", "ssh", False), ("k1-lab-02", "ssh", False), ("k1-lab-03", "ssh", False),
          ("k3-dev-01", "ssh", False), ("qemu-rv64", "qemu", True)]
FLAKY = "k1-lab-03"
REPEATS = 3
BATCH = 500
T0 = datetime(2025, 1, 6, 8, 0, tzinfo=timezone.utc)


def _unit(*parts: object) -> float:
    """A stable pseudo-random number in [0, 1) from ``parts``."""
    return int(hashlib.sha256(repr(parts).encode()).hexdigest()[:8], 16) / 2 ** 32


def release(i: int) -> str:
    return f"1.{16 + i // 5}.{i % 5}"


def effect(model: str, r: int) -> str | None:
    """``slow`` or ``bug`` for a model in release ``r`` (on every real board), lasting one or two releases."""
    for start in (r, r - 1):
        u = _unit(model, start)
        if u < 0.01 and (start == r or _unit(model, start, "long") < 0.5):
            return "bug"
        if u < 0.025 and (start == r or _unit(model, start, "long") < 0.5):
            return "slow"
    return None


@dataclass
class Job:
    seq: int
    r: int
    model: str
    board: str
    kind: str
    emulated: bool


def jobs() -> Iterator[Job]:
    seq, r = 0, 0
    while True:
        for _ in range(REPEATS):
            for board, kind, emulated in BOARDS:
                for model in MODELS:
                    yield Job(seq, r, model, board, kind, emulated)
                    seq += 1
        r += 1


class Flaky:
    """The flaky board: an infrastructure failure now and then, quarantined after three in a row."""

    def __init__(self) -> None:
        self.streak = 0

    def fails(self, job: Job) -> bool:
        if job.board != FLAKY:
            return False
        failed = _unit("infra", job.seq) < (0.6 if self.streak else 0.04)
        self.streak = self.streak + 1 if failed else 0
        return failed


def measured_doc(job: Job) -> tuple[dict, str | None]:
    ms = 4.0 + 40.0 * _unit(job.model, "ms")
    acc = 60.0 + 30.0 * _unit(job.model, "acc")
    what = None if job.emulated else effect(job.model, job.r)
    speed = 1.0 - 0.002 * job.r
    bug = what == "bug"
    chip_int8 = round(acc - 0.1 - (6.0 + 6.0 * _unit(job.model, job.r, "drop") if bug else 0.0), 2)
    doc = make_doc(model=job.model, board=job.board, board_kind=job.kind, runtime=release(job.r),
                   seed=job.seq, created=T0 + timedelta(minutes=2 * job.seq),
                   int8_ms=ms * speed * (1.25 if what == "slow" else 1.0) * (20 if job.emulated else 1),
                   fp32_ms=2.6 * ms * speed * (20 if job.emulated else 1), emulated=job.emulated,
                   n=8 if job.emulated else 40, jitter=0.03, run_offset=0.005, pc_int8=acc, chip_int8=chip_int8,
                   pc_fp32=acc + 0.6, chip_fp32=acc + 0.6, snr_db=17.0 if bug else 40.0,
                   verdict="fail" if bug else "pass", status="bug" if bug else "pass",
                   reports_dir=f"/nonexistent/runs/{job.seq}",
                   reasons=["chip INT8 accuracy below PC INT8 beyond the bug threshold"] if bug else [])
    return doc, what


def infra_doc(job: Job, quarantined: bool) -> dict:
    doc = make_doc(model=job.model, board=job.board, board_kind=job.kind, seed=job.seq,
                   created=T0 + timedelta(minutes=2 * job.seq))
    for part in ("device", "accuracy", "fidelity", "latency", "harness", "data"):
        doc.pop(part)
    doc.update(verdict="INFRA", reasons=["board unreachable"],
               infra={"error": "connection to 127.0.0.1:2222 lost during upload", "exit": 3},
               farm={"quarantined": quarantined})
    return doc


def regressions_for(doc: dict, what: str | None) -> list[dict]:
    """What the check reports for a slowed-down run or a chip bug, in the stored shape."""
    if what is None:
        return []
    version = doc["device"]["onnxruntime"]
    if what == "slow":
        cur = doc["latency"]["int8"]["p50_ms"]
        return [{"kind": "latency", "metric": "latency.int8.p50_ms", "baseline": cur / 1.25, "current": cur,
                 "threshold": cur * 0.05, "runtime_version": version, "appeared_run": None,
                 "message": f"latency regression: INT8 p50 +25% with onnxruntime {version}"}]
    if what == "bug":
        acc = doc["accuracy"]
        return [{"kind": "accuracy", "metric": "accuracy.chip_int8", "baseline": acc["pc_int8"] - 0.1,
                 "current": acc["chip_int8"], "threshold": 0.5, "runtime_version": version, "appeared_run": None,
                 "message": f"accuracy regression: chip INT8 {acc['chip_int8']} with onnxruntime {version}"}]


class History:
    def __init__(self, db: str) -> None:
        self.db, self.jobs, self.flaky, self.count = db, jobs(), Flaky(), 0

    def _next(self) -> tuple[dict, str | None]:
        job = next(self.jobs)
        self.count += 1
        if self.flaky.fails(job):
            return infra_doc(job, quarantined=self.flaky.streak >= 3), None
        doc, what = measured_doc(job)
        if job.board == FLAKY:  # back in the pool: a health check passed
            doc["farm"] = {"quarantined": False}
        return doc, what

    def fill(self, upto: int) -> tuple[int, float]:
        """Bulk-record runs until the history holds ``upto``; (runs added, seconds)."""
        added, start = 0, time.perf_counter()
        with open_store(self.db) as store:
            while self.count < upto:
                with store.write():
                    for _ in range(min(BATCH, upto - self.count)):
                        doc, what = self._next()
                        run_id = store.record(doc)
                        found = regressions_for(doc, what)
                        if found:
                            store.save_regressions(run_id, None, found)
                        added += 1
        return added, time.perf_counter() - start

    def check(self, n: int) -> list[float]:
        """``record_and_check`` ``n`` runs, one at a time, as quantize-and-verify does; seconds each."""
        times = []
        for _ in range(n):
            doc, _ = self._next()
            start = time.perf_counter()
            record_and_check(doc, self.db)
            times.append(time.perf_counter() - start)
        return times


def open_store(db: str) -> RunStore:
    """The store ``--db`` names, opened as quantize-and-verify opens it (created when missing)."""
    return RunStore.open(db)


def render(db: str, out: Path) -> tuple[float, float, float]:
    """``xqhil dashboard`` in its own process: (wall seconds, CPU seconds, peak RSS in MiB)."""
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(ROOT / "host"), os.environ.get("PYTHONPATH", "")]))
    start = time.perf_counter()
    proc = subprocess.Popen([sys.executable, "-c", "import sys; from xqhil.cli import main; sys.exit(main())",
                             "dashboard", "-q", "--db", db, "--out", str(out)], env=env, stdout=subprocess.DEVNULL)
    _, status, usage = os.wait4(proc.pid, 0)
    seconds = time.perf_counter() - start
    proc.returncode = os.waitstatus_to_exitcode(status)
    if proc.returncode != 0:
        raise SystemExit(f"xqhil dashboard exited with {proc.returncode}")
    return seconds, usage.ru_utime + usage.ru_stime, usage.ru_maxrss / 1024


def shoot(index: Path, png: Path) -> None:
    """A 1280 x 1400 screenshot of ``index`` (headless Chromium), in 64 colours (small for the README)."""
    from browser_testlib import screenshot

    screenshot(index, png, width=1280, height=1400, colors=64)


def page_sizes(out: Path) -> tuple[int, int, int, str]:
    """(pages, total bytes, largest bytes, largest page name)."""
    pages = sorted((p.stat().st_size, p.relative_to(out).as_posix()) for p in out.rglob("*.html"))
    return len(pages), sum(s for s, _ in pages), pages[-1][0], pages[-1][1]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--scales", default="1000,10000,100000", help="run counts, ascending (default %(default)s)")
    parser.add_argument("--db", help="history to grow: a SQLite path or a DSN; must be new or empty "
                                     "(default: OUT/history.sqlite3, recreated)")
    parser.add_argument("--out", default="/tmp/xqhil-history-scale", help="folder for the database and pages")
    parser.add_argument("--check-runs", type=int, default=20, help="runs recorded with record_and_check per scale")
    parser.add_argument("--screenshot", metavar="PNG", help="a 1280 x 1400 screenshot of the last scale's index")
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    db = args.db or str(out / "history.sqlite3")
    if args.db is None:
        for suffix in ("", "-wal", "-shm"):
            Path(db + suffix).unlink(missing_ok=True)
    scales = [int(s) for s in args.scales.split(",")]
    history = History(db)
    with open_store(db) as store:
        shown = store.path  # as the store names itself: a PostgreSQL URL without its password
    print(f"history {shown}; {len(MODELS)} models x {len(BOARDS)} boards, {REPEATS} runs per release", flush=True)
    print("| runs | releases | fill ms/run | record_and_check ms/run (median, max) | render s (CPU s) "
          "| render peak MiB | pages | total MB | largest page MB |")
    print("|---|---|---|---|---|---|---|---|---|")
    for scale in scales:
        added, fill_s = history.fill(scale - args.check_runs)
        checks = sorted(history.check(args.check_runs))
        render_s, render_cpu, peak = render(db, out / f"dashboard-{scale}")
        pages, total, largest, name = page_sizes(out / f"dashboard-{scale}")
        releases = (history.count - 1) // (REPEATS * len(BOARDS) * len(MODELS)) + 1
        median = checks[len(checks) // 2] * 1000 if checks else float("nan")
        worst = checks[-1] * 1000 if checks else float("nan")
        print(f"| {history.count:,} | {releases} | {1000 * fill_s / max(added, 1):.2f} | {median:.1f}, {worst:.1f} "
              f"| {render_s:.1f} ({render_cpu:.1f}) | {peak:.0f} | {pages} | {total / 1e6:.1f} "
              f"| {largest / 1e6:.2f} ({name}) |",
              flush=True)
    if args.screenshot:
        shoot(out / f"dashboard-{scales[-1]}" / "index.html", Path(args.screenshot))
    return 0


if __name__ == "__main__":
    sys.exit(main())
