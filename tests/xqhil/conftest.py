"""Fixtures of the harness tests: tiny models, xquant projects on .npy data, boards (qemu rootfs, sshd)."""
from __future__ import annotations

import os
import shutil
import sys
from pathlib import Path

import pytest
from ci_policy import hil_missing

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(Path(__file__).resolve().parent))

from xqhil_testlib import make_project, start_sshd  # noqa: E402


def rootfs_path() -> Path:
    return Path(os.environ.get("XQHIL_RISCV64_ROOTFS", REPO / "ci" / ".cache" / "riscv64-rootfs"))


@pytest.fixture(scope="session")
def rootfs() -> Path:
    root = rootfs_path()
    if not (root / "usr" / "bin" / "python3").is_file():
        hil_missing(f"riscv64 rootfs missing at {root}: run bash ci/build-rootfs.sh")
    if shutil.which("qemu-riscv64-static") is None:
        hil_missing("qemu-riscv64-static not installed: run bash ci/install-system-deps.sh")
    return root


@pytest.fixture(scope="session")
def qemu_python(rootfs: Path) -> str:
    return f"qemu-riscv64-static -L {rootfs} {rootfs}/usr/bin/python3"


@pytest.fixture
def project(tmp_path: Path) -> Path:
    return make_project(tmp_path / "proj")


@pytest.fixture(scope="session")
def quantized(tmp_path_factory) -> dict:
    """One quantized tiny project shared by the slower board tests (quantized once with xquant)."""
    import xquant

    folder = tmp_path_factory.mktemp("shared") / "proj"
    config = make_project(folder)
    xquant.quantize_onnx_model(str(config))
    qmodel = folder / "work" / "tiny.q.onnx"
    return {"config": config, "qmodel": qmodel, "folder": folder}


@pytest.fixture(scope="session")
def sshd(tmp_path_factory):
    """A real OpenSSH server on 127.0.0.1 with its own host key, user key and known_hosts."""
    if not Path("/usr/sbin/sshd").exists():
        hil_missing("openssh-server not installed: run bash ci/install-system-deps.sh")
    server = start_sshd(tmp_path_factory.mktemp("sshd"))
    yield server
    server.stop()
