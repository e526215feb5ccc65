"""CI's skip policy, a pytest plugin loaded by tests/conftest.py.

With XQHIL_REQUIRE_HIL=1 (`.ci/run` sets it) a test may only be skipped, or marked xfail, for a reason
that starts with ALLOWED ("allowed in CI: this machine has CUDA, ..."); every other skip becomes a failure,
whether it comes from pytest.skip in a test or fixture, a skipif mark, or a module-level skip such as
pytest.importorskip. `hil_missing` is for fixtures that need a real component (qemu, sshd, Chromium,
podman): it fails outright in that mode, and skips with the reason elsewhere.
"""
from __future__ import annotations

import os

import pytest

ALLOWED = "allowed in CI:"
SWITCH = "XQHIL_REQUIRE_HIL"


def required() -> bool:
    return os.environ.get(SWITCH, "") not in ("", "0")


def hil_missing(reason: str) -> None:
    """A real component the test needs is missing: fail under XQHIL_REQUIRE_HIL=1, else skip."""
    if required():
        pytest.fail(f"{SWITCH}=1 but {reason}", pytrace=False)
    pytest.skip(reason)


def skip_reason(report) -> str:
    """The reason of a skipped or xfailed report, without pytest's 'Skipped: ' prefix."""
    if hasattr(report, "wasxfail"):
        return str(report.wasxfail)
    longrepr = report.longrepr
    reason = longrepr[2] if isinstance(longrepr, tuple) and len(longrepr) == 3 else str(longrepr)
    return reason[len("Skipped: "):] if reason.startswith("Skipped: ") else reason


def enforce(report) -> None:
    if required() and report.skipped and not skip_reason(report).startswith(ALLOWED):
        what = "xfail" if hasattr(report, "wasxfail") else "skip"
        report.outcome = "failed"
        report.longrepr = (f"{SWITCH}=1: a {what} without a reason starting with '{ALLOWED}' is a failure "
                           f"in CI: {skip_reason(report)}")
        if hasattr(report, "wasxfail"):
            del report.wasxfail


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    outcome = yield
    enforce(outcome.get_result())


@pytest.hookimpl(hookwrapper=True)
def pytest_make_collect_report(collector):
    outcome = yield
    enforce(outcome.get_result())
