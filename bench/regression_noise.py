"""False-alarm and detection rates of the latency regression check on synthetic timed runs.

Samples: log-normal jitter (sigma = jitter), 3% outliers of 1.5-4x, optional run-level offsets (sigma =
offset, relative). For each setting and seed: two runs from the same distribution (false alarm?), and a
baseline against a run 20% slower (detected?); with "history", the medians of 8 earlier runs measure
run-to-run noise as the store does.

    python bench/regression_noise.py [--seeds 1000]
"""
from __future__ import annotations

import argparse
import sys
from itertools import product
from pathlib import Path

import numpy as np
from tabulate import tabulate

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "host"))
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))  # test-only helpers (history_testlib)

from xqhil.history.regression import check_latency
from history_testlib import timed_samples


def _doc(samples: list) -> dict:
    return {"latency": {"int8": {"samples_ms": samples}}}


def rates(n: int, jitter: float, offset: float, history: bool, seeds: int) -> tuple:
    false, hits = 0, 0
    for seed in range(seeds):
        rng = np.random.default_rng(seed)
        runs = [timed_samples(rng, 10.0, n, jitter, run_offset=offset) for _ in range(9 if history else 2)]
        medians = [float(np.median(r)) for r in runs[:-1]] if history else []
        slow = timed_samples(rng, 12.0, n, jitter, run_offset=offset)
        false += check_latency(_doc(runs[-2]), _doc(runs[-1]), "int8", medians) is not None
        hits += check_latency(_doc(runs[-2]), _doc(slow), "int8", medians) is not None
    return false / seeds, hits / seeds


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, default=1000)
    args = parser.parse_args()
    rows = []
    for n, jitter, offset, history in product((5, 10, 30, 100), (0.01, 0.05, 0.15), (0.0, 0.01), (False, True)):
        false, hits = rates(n, jitter, offset, history, args.seeds)
        rows.append([n, f"{jitter:.0%}", f"{offset:.0%}", "yes" if history else "no", f"{false:.2%}",
                     f"{hits:.1%}"])
    print(tabulate(rows, headers=["samples", "jitter", "run offset", "history", "false alarms",
                                  "20% slowdown found"], tablefmt="github"))
    return 0


if __name__ == "__main__":
    sys.exit(main())
