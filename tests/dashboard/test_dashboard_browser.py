"""The dashboard in a real headless Chromium: it loads without errors, shows the test runs, and a
screenshot is produced. Skipped (with the reason) where no Chromium is installed; a failure in CI
(XQHIL_REQUIRE_HIL=1, see tests/ci_policy.py)."""
import re
import struct

import pytest
from ci_policy import hil_missing
from xqhil.dashboard import render_dashboard
from browser_testlib import find_chromium, load, screenshot


@pytest.fixture(autouse=True)
def _chromium() -> None:
    if find_chromium() is None:
        hil_missing("no Chromium installed (ci/install-system-deps.sh installs it)")


@pytest.fixture
def index(history_db, tmp_path):
    return render_dashboard(history_db, tmp_path / "dash")


def test_page_loads_without_errors_and_shows_every_run(index):
    page = load(index)
    assert page.console == []
    assert re.search(r'<html[^>]* data-runs-rendered="7"', page.dom)  # set by the page script, last
    assert "<title>xqhil run history (7 runs)</title>" in page.dom
    assert sorted(set(map(int, re.findall(r'data-run="(\d+)"', page.dom)))) == list(range(1, 8))
    assert page.dom.count("<svg") >= 10 and "mobilenet_v2 on k1-lab-01" in page.dom


def test_script_errors_would_be_caught(index, tmp_path):
    """Control: the same page with a failing call in its script is caught by both signals."""
    broken = tmp_path / "broken.html"
    broken.write_text(index.read_text().replace("(function () {", "missingFunction(); (function () {", 1))
    page = load(broken)
    assert not re.search(r"<html[^>]* data-runs-rendered=", page.dom)
    assert any("missingFunction" in line for line in page.console)


def test_screenshot(index, tmp_path):
    png = screenshot(index, tmp_path / "dashboard.png", width=1200, height=900)
    data = png.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    assert struct.unpack(">II", data[16:24]) == (1200, 900)
    assert len(data) > 20_000  # a rendered page, not a blank one
