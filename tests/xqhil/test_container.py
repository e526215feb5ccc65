"""Dockerfile.riscv, built and run: the riscv64 container is a board reached over SSH on loopback.

ci/build-image.sh builds the image with podman (`make test` runs it first; cached by a content hash). The
container shares the host's network namespace and its sshd listens on 127.0.0.1 only; the host key is
verified against the image's own key file, never trusted on first use.
"""
from __future__ import annotations

import os
import re
import shutil
import subprocess
import time
from pathlib import Path

import onnxruntime
import pytest
from ci_policy import hil_missing
from xqhil_testlib import FAULTS, free_port, int8_differences, keygen, verify

REPO = Path(__file__).resolve().parents[2]
BOARD_FAULTS = "/opt/xqhil-faults"  # tests/xqhil/faults, mounted read-only in the container
pytestmark = pytest.mark.hil


def build_script(mode: str) -> subprocess.CompletedProcess:
    return subprocess.run(["bash", str(REPO / "ci" / "build-image.sh"), mode], capture_output=True, text=True,
                          timeout=120)


@pytest.fixture(scope="session")
def image() -> dict:
    """The up-to-date image tag and the podman environment (CONTAINERS_CONF) of ci/build-image.sh."""
    if shutil.which("podman") is None:
        hil_missing("podman not installed: run bash ci/install-system-deps.sh")
    check = build_script("--check")
    if check.returncode != 0:
        hil_missing(check.stderr.strip()[-300:] or "riscv64 image not built: run bash ci/build-image.sh")
    env = dict(os.environ)
    key, _, value = build_script("--env").stdout.strip().removeprefix("export ").partition("=")
    env[key] = value
    return {"tag": check.stdout.split()[-1], "env": env}


def podman(image: dict, *args: str, timeout: float = 60) -> subprocess.CompletedProcess:
    return subprocess.run(["podman", *args], capture_output=True, text=True, timeout=timeout, env=image["env"])


def host_key_line(image: dict, name: str, port: int, deadline_s: float = 90) -> str:
    """known_hosts line for the container's sshd once it answers, checked against the image's key file."""
    expected = podman(image, "exec", name, "cat", "/etc/ssh/ssh_host_ed25519_key.pub").stdout.split()[:2]
    assert len(expected) == 2 and expected[0] == "ssh-ed25519", expected
    deadline = time.monotonic() + deadline_s
    while time.monotonic() < deadline:
        scan = subprocess.run(["ssh-keyscan", "-T", "5", "-t", "ed25519", "-p", str(port), "127.0.0.1"],
                              capture_output=True, text=True, timeout=30)
        for line in scan.stdout.splitlines():
            host, *key = line.split()
            if host == f"[127.0.0.1]:{port}":
                assert key[:2] == expected, "the sshd on the port is not the container's"
                return f"{host} {key[0]} {key[1]}\n"
        time.sleep(1)
    logs = podman(image, "logs", name).stdout + podman(image, "logs", name).stderr
    raise AssertionError(f"the container's sshd did not answer on 127.0.0.1:{port}: {logs[-1500:]}")


def remove_stale_containers(image: dict) -> None:
    """Containers of earlier test sessions that were killed before their finalizer ran (their pid is gone)."""
    names = podman(image, "ps", "--all", "--format", "{{.Names}}").stdout.split()
    for name in names:
        match = re.fullmatch(r"xqhil-test-(\d+)-\d+", name)
        if match and not Path(f"/proc/{match.group(1)}").exists():
            podman(image, "rm", "--force", "--time", "0", name)


@pytest.fixture(scope="module")
def container(image, tmp_path_factory, request) -> dict:
    """A running container of the image: sshd on 127.0.0.1:<free port> in the host's network namespace."""
    remove_stale_containers(image)
    folder = tmp_path_factory.mktemp("container")
    keygen(folder / "userkey")
    port = free_port()
    name = f"xqhil-test-{os.getpid()}-{port}"
    request.addfinalizer(lambda: podman(image, "rm", "--force", "--time", "0", name))
    run = podman(image, "run", "--detach", "--network=host", "--platform", "linux/riscv64", "--name", name,
                 "-v", f"{folder / 'userkey.pub'}:/root/.ssh/authorized_keys:ro",
                 "-v", f"{FAULTS}:{BOARD_FAULTS}:ro", image["tag"],
                 "/usr/sbin/sshd", "-D", "-e", "-p", str(port), "-o", "ListenAddress=127.0.0.1")
    assert run.returncode == 0, run.stderr
    (folder / "known_hosts").write_text(host_key_line(image, name, port))
    return {"name": name, "url": f"ssh://root@127.0.0.1:{port}", "key": folder / "userkey",
            "known_hosts": folder / "known_hosts"}


def ssh_args(container: dict) -> list:
    return ["--ssh-key", str(container["key"]), "--known-hosts", str(container["known_hosts"]), "--remote-dir",
            "/tmp", "--connect-timeout", "30"]


def test_quantize_and_verify_in_the_riscv64_container(container, image, project, tmp_path):
    code, report, stdout, stderr = verify(project, container["url"], tmp_path / "out", *ssh_args(container))
    assert code == 0, stderr
    assert report["verdict"] == "pass", report["reasons"]
    assert report["board"]["kind"] == "ssh" and report["board"]["address"] == container["url"]
    device = report["device"]
    assert device["arch"] == "riscv64" and device["emulated"] is True
    assert device["onnxruntime"] != onnxruntime.__version__  # the image's Debian runtime, not the PC's
    assert report["accuracy"]["top1_agreement"]["chip_int8_vs_pc_int8"] == 100.0
    assert int8_differences(report) == {}  # README: INT8 outputs identical to the PC's
    assert "(emulated)" in stdout
    left = podman(image, "exec", container["name"], "sh", "-c", "ls -d /tmp/xqhil.* 2>/dev/null || true")
    assert left.returncode == 0 and left.stdout == ""


def test_int8_drift_in_the_container_breaks_the_identity(container, quantized, tmp_path):
    """Control: noise of 0.1% of the output's spread on the container's INT8 outputs is caught."""
    python = f"env PYTHONPATH={BOARD_FAULTS} XQHIL_FAULT=perturb-int8:0.001 python3"
    code, report, _, stderr = verify(quantized["config"], container["url"], tmp_path / "out", "--qmodel",
                                     str(quantized["qmodel"]), "--python", python, *ssh_args(container))
    assert report is not None and report["device"]["arch"] == "riscv64", stderr
    drift = int8_differences(report)
    assert list(drift) == ["logits"] and 0 < drift["logits"]["max_abs"] and drift["logits"]["cosine"] < 1
