"""How the A/B rule of the latency confirmation (xqhil/history/confirm.py) decides: on the real rounds the
tests keep (tests/history/ab_rounds.json, host board, clean and INT8 slowed 20%), and on a model of a board
that changes speed state between A and B in a share q of the rounds (a changed round reads +-15..24%, others
within a 3% sigma; q up to 1/2, as when each side's state is a coin flip).

Rules: ``median of 7`` (one block, confirmed when the median is above the level: the rule before) and
``blocks`` (what ships: a block decides when at least ``AB_AGREE`` of the rounds are on one side of the level,
otherwise another block of 7, up to 28 rounds, then the median).

    python bench/ab_rule.py [--trials 20000]
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np
from tabulate import tabulate

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "host"))

from xqhil.history.confirm import AB_AGREE, AB_FLOOR, Confirmer, _ab_verdict  # noqa: E402

BLOCK, MAX_ROUNDS = Confirmer.ab_rounds, Confirmer.ab_max_rounds
ROUNDS = REPO / "tests" / "history" / "ab_rounds.json"


def blocks(draw) -> tuple[bool, int]:
    """The shipped rule on rounds drawn a block at a time: (confirmed, rounds taken)."""
    changes: list[float] = []
    while True:
        changes += list(draw(BLOCK))
        verdict = _ab_verdict(changes, AB_FLOOR, final=len(changes) >= MAX_ROUNDS)
        if verdict is not None:
            return verdict, len(changes)


def recorded_table() -> list[list]:
    data = json.loads(ROUNDS.read_text())
    sets = {"clean, 5 rounds": data["clean_5"], "INT8 +20%, 5 rounds": data["slowed_5"],
            "clean, 7 rounds": data["clean_7"], "INT8 +20%, 7 rounds": data["slowed_7"],
            "clean, CI failure": [data["ci_split"]["rounds"]]}
    rows = []
    for label, found in sets.items():
        verdicts = [_ab_verdict([c / 100 for c in s], AB_FLOOR, final=False) for s in found]
        rows.append([label, len(found), sum(np.median(s) / 100 > AB_FLOOR for s in found),
                     verdicts.count(True), verdicts.count(False), verdicts.count(None)])
    return rows


def model_table(trials: int, seed: int) -> list[list]:
    rng = np.random.default_rng(seed)

    def draw(n, delta, q):
        changed = rng.random(n) < q
        return delta + changed * rng.choice([-1, 1], n) * rng.uniform(0.15, 0.24, n) + rng.normal(0, 0.03, n)

    rows = []
    for q in (0.0, 0.2, 0.35, 0.5):
        for delta in (0.0, 0.10, 0.20):
            median7 = np.mean([np.median(draw(BLOCK, delta, q)) > AB_FLOOR for _ in range(trials)])
            runs = [blocks(lambda n, d=delta, p=q: draw(n, d, p)) for _ in range(trials)]
            flagged, taken = np.mean([r[0] for r in runs]), np.mean([r[1] for r in runs])
            rows.append([f"{q:.2f}", "clean" if delta == 0 else f"+{100 * delta:.0f}%",
                         f"{100 * median7:.2f}%", f"{100 * flagged:.2f}%", f"{taken:.1f}"])
    return rows


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--trials", type=int, default=20000)
    parser.add_argument("--seed", type=int, default=1)
    args = parser.parse_args()
    print(f"Recorded rounds ({ROUNDS.relative_to(REPO)}), level +{100 * AB_FLOOR:.0f}%, agreement "
          f"{100 * AB_AGREE:.0f}% of the rounds:")
    print(tabulate(recorded_table(), ["sets", "n", "median of the set flags", "blocks: confirmed",
                                      "blocks: cleared", "blocks: another block"], tablefmt="github"))
    print(f"\nModel, {args.trials} trials a row (flagged: clean rows are false alarms):")
    print(tabulate(model_table(args.trials, args.seed), ["q (rounds that change state)", "B", "median of 7",
                                                         f"blocks to {MAX_ROUNDS}", "rounds taken"],
                   tablefmt="github"))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
