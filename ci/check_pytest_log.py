"""Check the output of CI's pytest run (`.ci/run` calls this on the log of `make test`).

The run proves what it should only if tests passed, none failed or errored, none was deselected, and every
skipped or xfailed test gives a reason that starts with 'allowed in CI:' (pytest prints the reasons with -ra,
which pyproject.toml sets). tests/ci_policy.py enforces the same rule inside pytest; this is the outside check
that also holds when the plugin was not loaded.

    python3 ci/check_pytest_log.py LOG      -> exit 0, or exit 1 with one line per problem on stderr
"""
from __future__ import annotations

import re
import sys
from typing import Dict, List, Optional

ALLOWED = "allowed in CI:"
COUNT = re.compile(r"(\d+) (passed|failed|skipped|deselected|errors?|xfailed|xpassed|warnings?)\b")
FINAL = re.compile(r"\d+ (passed|failed|skipped|deselected|errors?|xfailed|xpassed)\b.* in [\d.]+s")
SKIPPED = re.compile(r"^SKIPPED \[(\d+)\] \S+?:\d+: (.*)$")
XFAIL = re.compile(r"^XFAIL \S+(?: - (.*))?$")


def summary(lines: List[str]) -> Optional[Dict[str, int]]:
    """Counts of pytest's last summary line ('12 passed, 1 skipped in 3.4s'), or None."""
    for line in reversed(lines):
        if FINAL.search(line) or "no tests ran" in line:
            return {word.rstrip("s") if word in ("errors", "warnings") else word: int(n)
                    for n, word in COUNT.findall(line)}
    return None


def allowed(reason: str) -> bool:
    reason = reason.strip()
    return reason.removeprefix("Skipped: ").startswith(ALLOWED)


def problems(text: str) -> List[str]:
    lines = text.splitlines()
    counts = summary(lines)
    if counts is None:
        return ["no pytest summary line in the log: did pytest run?"]
    found = []
    if counts.get("passed", 0) == 0:
        found.append("no test passed")
    for word in ("failed", "error"):
        if counts.get(word):
            found.append(f"{counts[word]} test(s) {word}")
    if counts.get("deselected"):
        found.append(f"{counts['deselected']} test(s) deselected: CI runs every test (check PYTEST_ARGS)")
    skips = [(line, SKIPPED.match(line)) for line in lines if line.startswith("SKIPPED [")]
    ok_skips = sum(int(m.group(1)) for _, m in skips if m and allowed(m.group(2)))
    if counts.get("skipped", 0) > ok_skips:
        bad = [line for line, m in skips if not (m and allowed(m.group(2)))]
        found.append(f"{counts['skipped'] - ok_skips} skipped test(s) without an '{ALLOWED}' reason"
                     + (": " + "; ".join(bad) if bad else " (run pytest with -ra to see them)"))
    ok_xfails = sum(1 for m in map(XFAIL.match, lines) if m and allowed(m.group(1) or ""))
    if counts.get("xfailed", 0) > ok_xfails:
        found.append(f"{counts['xfailed'] - ok_xfails} xfailed test(s) without an '{ALLOWED}' reason")
    return found


def main(argv: List[str]) -> int:
    if len(argv) != 1:
        print("usage: python3 ci/check_pytest_log.py LOG", file=sys.stderr)
        return 2
    with open(argv[0], encoding="utf-8", errors="replace") as handle:
        found = problems(handle.read())
    for problem in found:
        print(f"CI: {problem}", file=sys.stderr)
    return 1 if found else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
