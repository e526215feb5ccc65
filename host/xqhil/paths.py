"""Where the harness finds its own files: the device agent and the default riscv64 rootfs."""
from __future__ import annotations

import os
import sys
from pathlib import Path

from .errors import HilError

REPO_ROOT = Path(__file__).resolve().parents[2]


def agent_path() -> str:
    """The device agent file: ``$XQHIL_AGENT``, else the copy next to the sources (a checkout), else the
    one a wheel installs under ``<prefix>/share/xqhil``."""
    override = os.environ.get("XQHIL_AGENT")
    candidates = [Path(override)] if override else [REPO_ROOT / "device" / "xqhil_agent.py",
                                                     Path(sys.prefix) / "share" / "xqhil" / "xqhil_agent.py"]
    path = next((c for c in candidates if c.is_file()), candidates[0])
    if not path.is_file():
        raise HilError(f"device agent not found at '{path}'.",
                       "Run xqhil from a source checkout, or set XQHIL_AGENT to the path of xqhil_agent.py.")
    return str(path)


def default_rootfs() -> str:
    """The riscv64 rootfs that ``ci/build-rootfs.sh`` builds (``$XQHIL_RISCV64_ROOTFS`` overrides)."""
    override = os.environ.get("XQHIL_RISCV64_ROOTFS")
    return os.path.abspath(override) if override else str(REPO_ROOT / "ci" / ".cache" / "riscv64-rootfs")
