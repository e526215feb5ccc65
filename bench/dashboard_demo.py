"""Build a demo history database, render the dashboard and screenshot it (the README's docs/dashboard.png).

The runs are synthetic but shaped like real ones: three models on a RISC-V board reached over SSH and on
QEMU, seven chip-runtime releases, one release (1.21.0) that slows INT8 MobileNetV2 down by about 20% and
one (1.22.0) with an INT8 kernel bug that costs accuracy on the chip only.

    python bench/dashboard_demo.py [--out out/dashboard-demo] [--screenshot docs/dashboard.png]
"""
from __future__ import annotations

import argparse
import json
import logging
import sys
from datetime import datetime, timedelta, timezone
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "host"))
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))  # test-only helpers (history_testlib)

from xqhil.dashboard import render_dashboard
from browser_testlib import find_chromium, screenshot
from xqhil.history import format_summary, record_and_check
from history_testlib import make_doc

RELEASES = ["1.19.2", "1.20.0", "1.20.1", "1.21.0", "1.21.1", "1.22.0", "1.22.1"]
MODELS = {  # model: (board, board kind, INT8 ms, FP32 ms, PC INT8 %, emulated)
    "mobilenet_v2": ("k1-lab-01", "ssh", 11.8, 29.5, 71.4, False),
    "resnet18": ("k1-lab-01", "ssh", 24.0, 71.0, 69.3, False),
    "fashion_cnn": ("qemu-rv64", "qemu", 41.0, 58.0, 90.6, True),
}


def release_effects(model: str, release: str) -> dict:
    """What a release does to a model: the slowdown of 1.21.0 and the chip bug of 1.22.0."""
    if release == "1.21.0" and model == "mobilenet_v2":
        return {"slow": 1.21}
    if release == "1.22.0" and model in ("mobilenet_v2", "resnet18"):
        return {"bug": 9.5 if model == "mobilenet_v2" else 4.1}
    return {}


def demo_doc(model: str, release: str, repeat: int, seed: int, when: datetime, reports: Path) -> dict:
    board, kind, int8_ms, fp32_ms, pc_int8, emulated = MODELS[model]
    effect = release_effects(model, release)
    speed = 1.0 - 0.012 * RELEASES.index(release)  # releases get a little faster
    chip_int8 = round(pc_int8 - 0.1 - 0.1 * (seed % 2) - effect.get("bug", 0.0), 2)
    bug = "bug" in effect
    return make_doc(
        model=model, board=board, board_kind=kind, runtime=release, seed=seed, created=when,
        int8_ms=int8_ms * speed * effect.get("slow", 1.0), fp32_ms=fp32_ms * speed, emulated=emulated,
        n=8 if emulated else 40, jitter=0.06 if emulated else 0.03, run_offset=0.005,
        pc_int8=pc_int8, chip_int8=chip_int8, pc_fp32=pc_int8 + 0.6, chip_fp32=pc_int8 + 0.6,
        snr_db=17.5 if bug else 41.0 + repeat * 0.4, verdict="fail" if bug else "pass",
        status="bug" if bug else "pass", reports_dir=str(reports),
        reasons=[f"chip INT8 accuracy {effect['bug']:.1f} points below PC INT8 (bug threshold 2.0)"]
        if bug else [])


def build_database(db: Path, out: Path) -> int:
    if db.exists():
        db.unlink()
    when, seed = datetime(2026, 3, 2, 8, 30, tzinfo=timezone.utc), 0
    for release in RELEASES:
        for repeat in range(2):
            for model in MODELS:
                seed += 1
                reports = out / "runs" / f"{seed:03d}"
                reports.mkdir(parents=True, exist_ok=True)
                doc = demo_doc(model, release, repeat, seed, when, reports)
                (reports / "verify.md").write_text(f"# {model} on {doc['board']['name']}, onnxruntime {release}\n\n"
                                                   f"verdict: {doc['verdict']}\n")
                (reports / "verify.json").write_text(json.dumps(doc, indent=2))
                summary = record_and_check(doc, db)
                if summary["regressions"]:
                    print(format_summary(summary))
                when += timedelta(hours=5)
        when += timedelta(days=6)
    return seed


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default="out/dashboard-demo", help="folder for the database, reports and page")
    parser.add_argument("--screenshot", metavar="PNG", help="also write a screenshot of the page here")
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)
    out = Path(args.out)
    runs = build_database(out / "history.sqlite3", out)
    index = render_dashboard(out / "history.sqlite3", out, title="xqhil run history (demo)")
    print(f"{runs} runs recorded; dashboard: {index}")
    if args.screenshot:
        if find_chromium() is None:
            print("no Chromium found: no screenshot", file=sys.stderr)
            return 3
        print(f"screenshot: {screenshot(index, Path(args.screenshot), width=1280, height=1400, colors=64)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
