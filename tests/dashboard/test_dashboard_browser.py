"""The dashboard in a real headless Chromium: its pages load without errors and show the test runs, the
index answers "what broke in the newest release" in the first screen without scrolling sideways at
1280 px, and a screenshot is produced. Skipped (with the reason) where no Chromium is installed; a
failure in CI (XQHIL_REQUIRE_HIL=1, see tests/ci_policy.py)."""
import re
import struct

import pytest
from ci_policy import hil_missing
from xqhil.dashboard import render_dashboard
from browser_testlib import find_chromium, load, screenshot

# Appended to a copy of the index: the layout as the browser computed it, after the page's own script.
MEASURE = ("<script>(function () { var d = document.documentElement, r = document.querySelector("
           "'tr[data-change=\"new bug\"]'); d.setAttribute('data-layout', d.scrollWidth + ' ' + window.innerWidth"
           " + ' ' + window.innerHeight + ' ' + (r ? Math.ceil(r.getBoundingClientRect().bottom) : -1)); })();"
           "</script></body>")


@pytest.fixture(autouse=True)
def _chromium() -> None:
    if find_chromium() is None:
        hil_missing("no Chromium installed (ci/install-system-deps.sh installs it)")


@pytest.fixture
def index(history_db, tmp_path):
    return render_dashboard(history_db, tmp_path / "dash")


def test_pages_load_without_errors_and_show_every_run(index):
    page = load(index)
    assert page.console == []
    assert re.search(r'<html[^>]* data-runs-rendered="0"', page.dom)  # set by the page script, last
    assert "What changed in onnxruntime 1.22.1" in page.dom
    seen = set()
    for path in sorted((index.parent / "pages").glob("s-*.html")):
        loaded = load(path)
        assert loaded.console == []
        count = int(re.search(r'<html[^>]* data-runs-rendered="(\d+)"', loaded.dom).group(1))
        runs = set(map(int, re.findall(r'data-run="(\d+)"', loaded.dom)))
        assert count == len(runs) and loaded.dom.count("<svg") >= 5
        seen |= runs
    assert sorted(seen) == list(range(1, 8))


def test_script_errors_would_be_caught(index, tmp_path):
    """Control: the same page with a failing call in its script is caught by both signals."""
    broken = tmp_path / "broken.html"
    broken.write_text(index.read_text().replace("(function () {", "missingFunction(); (function () {", 1))
    page = load(broken)
    assert not re.search(r"<html[^>]* data-runs-rendered=", page.dom)
    assert any("missingFunction" in line for line in page.console)


def _layout(index, tmp_path, width: int, height: int = 900) -> tuple[int, int, int, int]:
    probe = tmp_path / "probe.html"
    probe.write_text(index.read_text().replace("</body>", MEASURE, 1))
    page = load(probe, width=width, height=height)
    assert page.console == []
    return tuple(map(int, re.search(r'data-layout="([-\d ]+)"', page.dom).group(1).split()))


def test_first_screen_says_what_broke_without_scrolling_sideways(team_db, tmp_path):
    """672 runs, 12 models x 4 boards x 14 releases: at 1280 x 900 the page is no wider than the window and
    the new chip bug of the newest release is on the first screen."""
    index = render_dashboard(team_db, tmp_path / "dash")
    scroll_width, width, height, new_bug_bottom = _layout(index, tmp_path, 1280)
    assert width == 1280 and scroll_width <= width
    assert 0 < new_bug_bottom <= height


def test_sideways_scrolling_would_be_caught(team_db, tmp_path):
    """Control: the same measurement on a page wider than the window reports it."""
    index = render_dashboard(team_db, tmp_path / "dash")
    wide = tmp_path / "wide.html"
    wide.write_text(index.read_text().replace("<main>", '<main><div style="width:2000px">wide</div>', 1))
    scroll_width, width, _, _ = _layout(wide, tmp_path, 1280)
    assert scroll_width > width == 1280


def test_screenshot(team_db, tmp_path):
    index = render_dashboard(team_db, tmp_path / "dash")
    png = screenshot(index, tmp_path / "dashboard.png", width=1280, height=900)
    data = png.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    assert struct.unpack(">II", data[16:24]) == (1280, 900)
    assert len(data) > 20_000  # a rendered page, not a blank one
