"""Drive a headless Chromium over a local dashboard page: the DOM after scripts ran, console messages,
and a screenshot. Used by the browser test and bench/dashboard_demo.py (not installed); the page never
needs a browser to be written.

Chromium runs without network (every host name resolves to nothing) and with a throw-away profile.
"""
from __future__ import annotations

import logging
import re
import shutil
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path

from xqhil.history.errors import HistoryError

log = logging.getLogger(__name__)

CANDIDATES = ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable")
FLAGS = ("--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
         "--disable-component-update", "--disable-sync", "--no-first-run", "--disable-quic",
         "--disable-dev-shm-usage", "--hide-scrollbars", "--host-resolver-rules=MAP * ~NOTFOUND")
CONSOLE = re.compile(r":CONSOLE(?:\(\d+\))?[:\]].*")


@dataclass(frozen=True)
class PageLoad:
    dom: str  # the serialised DOM after the page's scripts ran
    console: list[str]  # console messages and uncaught errors, one per line


def find_chromium() -> str | None:
    """Path of a Chromium-family browser, or None."""
    for name in CANDIDATES:
        path = shutil.which(name)
        if path:
            return path
    return None


def _run(args: list[str], timeout_s: float) -> subprocess.CompletedProcess:
    browser = find_chromium()
    if browser is None:
        raise HistoryError("no Chromium found: install it (ci/install-system-deps.sh does)", exit_code=3)
    with tempfile.TemporaryDirectory(prefix="xqhil-chromium-") as profile:
        command = [browser, *FLAGS, f"--user-data-dir={profile}", *args]
        log.info("running %s", " ".join(command))
        try:
            return subprocess.run(command, capture_output=True, text=True, timeout=timeout_s, check=False)
        except subprocess.TimeoutExpired as exc:
            raise HistoryError(f"Chromium did not finish within {timeout_s:.0f} s", exit_code=3) from exc


def load(index: Path, timeout_s: float = 120.0, width: int = 1280, height: int = 900) -> PageLoad:
    """Open ``index`` in a ``width`` x ``height`` window and return its DOM and console output."""
    done = _run(["--enable-logging=stderr", "--v=0", "--virtual-time-budget=5000", f"--window-size={width},{height}",
                 "--dump-dom", Path(index).resolve().as_uri()], timeout_s)
    if done.returncode != 0:
        raise HistoryError(f"Chromium exited with {done.returncode}: {done.stderr.strip()[-300:]}", exit_code=3)
    console = [m.group(0) for m in map(CONSOLE.search, done.stderr.splitlines()) if m]
    return PageLoad(done.stdout, console)


def screenshot(index: Path, png: Path, width: int = 1400, height: int = 1800, timeout_s: float = 120.0,
               colors: int | None = None) -> Path:
    """Write a PNG of ``index`` as a ``width`` x ``height`` window shows it; ``colors``: shrink it to a
    palette of that many colours (for the docs; needs Pillow, the dev extra)."""
    png = Path(png).resolve()
    png.parent.mkdir(parents=True, exist_ok=True)
    done = _run([f"--window-size={width},{height}", f"--screenshot={png}", "--virtual-time-budget=5000",
                 Path(index).resolve().as_uri()], timeout_s)
    if done.returncode != 0 or not png.is_file():
        raise HistoryError(f"Chromium wrote no screenshot (exit {done.returncode}): "
                           f"{done.stderr.strip()[-300:]}", exit_code=3)
    if colors:
        from PIL import Image

        Image.open(png).convert("RGB").quantize(colors=colors).save(png, optimize=True)
    return png
