"""CI's skip policy (tests/ci_policy.py) and the log check of .ci/run (ci/check_pytest_log.py), on a small
real pytest suite run in a subprocess with and without XQHIL_REQUIRE_HIL=1."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

TESTS = Path(__file__).resolve().parent
REPO = TESTS.parent
sys.path.insert(0, str(REPO / "ci"))

import check_pytest_log  # noqa: E402

SUITE = {
    "pytest.ini": "[pytest]\naddopts = -ra\n",
    "conftest.py": (
        "import pytest\npytest_plugins = ['ci_policy']\n\n"
        "@pytest.fixture\ndef gadget():\n    from ci_policy import hil_missing\n    hil_missing('no gadget here')\n"),
    "test_mixed.py": (
        "import pytest\n\n"
        "def test_ok():\n    assert True\n\n"
        "def test_plain_skip():\n    pytest.skip('not today')\n\n"
        "def test_allowed_skip():\n    pytest.skip('allowed in CI: this machine has CUDA')\n\n"
        "@pytest.mark.skipif(True, reason='a skipif mark')\ndef test_skipif():\n    assert False\n\n"
        "def test_needs_gadget(gadget):\n    assert True\n\n"
        "@pytest.mark.xfail(reason='known bug')\ndef test_xfail():\n    assert False\n"),
}
IMPORTS = "import pytest\npytest.importorskip('no_such_module_xqhil')\n\ndef test_x():\n    pass\n"


def run_suite(tmp_path: Path, required: bool, *args: str):
    for name, text in SUITE.items():
        (tmp_path / name).write_text(text)
    env = {k: v for k, v in os.environ.items() if k != "XQHIL_REQUIRE_HIL"}
    env["PYTHONPATH"] = os.pathsep.join([str(TESTS), env.get("PYTHONPATH", "")])
    if required:
        env["XQHIL_REQUIRE_HIL"] = "1"
    proc = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", *args], cwd=tmp_path,
                          env=env, capture_output=True, text=True, timeout=120)
    return proc.returncode, proc.stdout


def test_without_the_switch_skips_stay_skips(tmp_path):
    code, log = run_suite(tmp_path, required=False)
    assert code == 0, log
    assert check_pytest_log.summary(log.splitlines()) == {"passed": 1, "skipped": 4, "xfailed": 1}
    assert "no gadget here" in log
    problems = check_pytest_log.problems(log)
    assert problems[0].startswith("3 skipped test(s) without an 'allowed in CI:' reason: SKIPPED")
    assert "not today" in problems[0] and "allowed in CI: this machine" not in problems[0]
    assert problems[1] == "1 xfailed test(s) without an 'allowed in CI:' reason" and len(problems) == 2


def test_with_the_switch_every_unexplained_skip_fails(tmp_path):
    code, log = run_suite(tmp_path, required=True)
    assert code == 1, log
    counts = check_pytest_log.summary(log.splitlines())
    # failed: the plain skip and the xfail (call phase); errors: the skipif and the gadget fixture (setup)
    assert counts == {"passed": 1, "skipped": 1, "failed": 2, "error": 2}, log
    assert "XQHIL_REQUIRE_HIL=1 but no gadget here" in log
    assert "a skip without a reason starting with 'allowed in CI:' is a failure in CI: not today" in log
    assert check_pytest_log.problems(log) == ["2 test(s) failed", "2 test(s) error"]


@pytest.mark.parametrize("required, code, summary", [(False, 5, {"skipped": 1}), (True, 2, {"error": 1})])
def test_a_module_level_importorskip_fails_with_the_switch(tmp_path, required, code, summary):
    (tmp_path / "test_imports.py").write_text(IMPORTS)
    got, log = run_suite(tmp_path, required, "test_imports.py")
    assert got == code and check_pytest_log.summary(log.splitlines()) == summary, log
    assert ("could not import 'no_such_module_xqhil'" in log) and (("is a failure in CI" in log) is required)


def test_log_check_rejects_deselected_and_empty_runs(tmp_path):
    code, log = run_suite(tmp_path, False, "test_mixed.py", "-k", "ok or allowed")
    assert code == 0
    assert check_pytest_log.problems(log) == ["4 test(s) deselected: CI runs every test (check PYTEST_ARGS)"]
    code, log = run_suite(tmp_path, False, "test_mixed.py", "-k", "allowed")
    assert check_pytest_log.problems(log)[0] == "no test passed"
    assert check_pytest_log.problems("make: *** [test] Error 2\n") == [
        "no pytest summary line in the log: did pytest run?"]


@pytest.mark.parametrize("log, ok", [
    ("....s\nSKIPPED [1] tests/a.py:3: allowed in CI: CUDA present\n4 passed, 1 skipped in 2.01s\n", True),
    ("....s\nSKIPPED [1] tests/a.py:3: rootfs missing\n4 passed, 1 skipped in 2.01s\n", False),
    ("....s\n4 passed, 1 skipped in 2.01s\n", False),  # reasons not printed (-ra overridden)
])
def test_log_check_on_skip_lines(tmp_path, log, ok):
    (tmp_path / "log").write_text(log)
    proc = subprocess.run([sys.executable, str(REPO / "ci" / "check_pytest_log.py"), str(tmp_path / "log")],
                          capture_output=True, text=True, timeout=30)
    assert (proc.returncode == 0) is ok and (proc.stderr == "") is ok, proc.stderr
