"""Transports against real boards: a local subprocess, qemu-riscv64 and OpenSSH on loopback.

`xqhil boards --probe` runs the agent with an empty request (deploy, run, fetch, clean up), so these tests
exercise every step of each transport without inference.
"""
from __future__ import annotations

import json
import platform
import sys
from pathlib import Path

import pytest
from xqhil_testlib import leftovers, run_cli

from xqhil.reference import agent_module


def probe(board: str, *extra: str):
    code, out, err = run_cli(["boards", "--probe", "--board", board, "-q", *extra])
    return code, (json.loads(out) if code == 0 else None), err


def test_probe_host_board(tmp_path):
    code, data, err = probe("host", "--remote-dir", str(tmp_path))
    assert code == 0, err
    assert data["device"]["python"] == ".".join(map(str, sys.version_info[:3]))
    assert data["protocol"] == agent_module().PROTOCOL
    assert set(data["harness"]) >= {"upload_s", "run_s", "fetch_s", "cleanup_s"}
    assert leftovers(tmp_path) == []


@pytest.mark.hil
def test_probe_qemu_board_runs_riscv64_onnxruntime(rootfs, tmp_path):
    code, data, err = probe(f"qemu:{rootfs}", "--remote-dir", str(tmp_path))
    assert code == 0, err
    device = data["device"]
    assert device["arch"] == "riscv64" and device["emulated"] is True
    assert device["onnxruntime"].startswith("1.") and "CPUExecutionProvider" in device["providers"]
    assert "Schema error" not in err
    assert leftovers(tmp_path) == []


def test_qemu_without_rootfs_is_an_infrastructure_error(tmp_path, monkeypatch):
    monkeypatch.setenv("XQHIL_RISCV64_ROOTFS", str(tmp_path / "missing"))
    code, _, err = probe("qemu")
    assert code == 3 and "ci/build-rootfs.sh" in err and err.count("\n") == 1


def test_missing_interpreter_is_an_infrastructure_error(tmp_path):
    code, _, err = probe("host", "--python", str(tmp_path / "no-python"), "--remote-dir", str(tmp_path))
    assert code == 3 and "cannot start the agent's interpreter" in err
    assert leftovers(tmp_path) == []


def ssh_args(sshd, remote: Path, python: str = sys.executable, known_hosts=None, key=None):
    return ["--ssh-key", str(key or sshd.key), "--known-hosts", str(known_hosts or sshd.known_hosts),
            "--python", python, "--remote-dir", str(remote), "--connect-timeout", "5", "--retries", "1"]


@pytest.mark.hil
def test_probe_over_ssh(sshd, tmp_path):
    code, data, err = probe(sshd.url, *ssh_args(sshd, tmp_path))
    assert code == 0, err
    assert data["board"]["kind"] == "ssh" and data["board"]["address"] == sshd.url
    assert data["device"]["arch"] == platform.machine() and data["device"]["emulated"] is False  # this machine
    assert str(sshd.key) not in json.dumps(data)
    assert leftovers(tmp_path) == []


@pytest.mark.hil
def test_ssh_unreachable_host(tmp_path):
    from xqhil_testlib import free_port

    url = f"ssh://nobody@127.0.0.1:{free_port()}"
    (tmp_path / "known_hosts").write_text("")
    code, _, err = probe(url, "--connect-timeout", "2", "--retries", "1", "--known-hosts",
                         str(tmp_path / "known_hosts"))
    assert code == 3
    assert "connecting to" in err and "failed after 2 attempt(s)" in err and err.count("\n") == 1


@pytest.mark.hil
def test_ssh_wrong_host_key_is_refused(sshd, tmp_path):
    from xqhil_testlib import keygen

    keygen(tmp_path / "other")
    pub = (tmp_path / "other.pub").read_text().split()
    (tmp_path / "known_hosts").write_text(f"[127.0.0.1]:{sshd.port} {pub[0]} {pub[1]}\n")
    remote = tmp_path / "remote"
    remote.mkdir()
    code, _, err = probe(sshd.url, *ssh_args(sshd, remote, known_hosts=tmp_path / "known_hosts"))
    assert code == 3 and "does not match" in err
    assert leftovers(remote) == []


@pytest.mark.hil
def test_ssh_unknown_host_key_needs_the_explicit_flag(sshd, tmp_path):
    (tmp_path / "empty_known_hosts").write_text("")
    args = ssh_args(sshd, tmp_path, known_hosts=tmp_path / "empty_known_hosts")
    code, _, err = probe(sshd.url, *args)
    assert code == 3 and "not in known_hosts" in err and "--accept-unknown-host-key" in err
    code, data, err = probe(sshd.url, *args, "--accept-unknown-host-key")
    assert code == 0, err
    assert leftovers(tmp_path) == []


@pytest.mark.hil
def test_ssh_failed_authentication(sshd, tmp_path):
    from xqhil_testlib import keygen

    keygen(tmp_path / "stranger")
    code, _, err = probe(sshd.url, *ssh_args(sshd, tmp_path, key=tmp_path / "stranger"))
    assert code == 3 and "authentication" in err.lower()
    assert "--ssh-key" in err and str(tmp_path / "stranger") not in err and err.count("\n") == 1


def test_missing_key_file_is_bad_input(tmp_path):
    (tmp_path / "known_hosts").write_text("")
    code, _, err = probe("ssh://nobody@127.0.0.1:1", "--ssh-key", str(tmp_path / "nokey"), "--known-hosts",
                         str(tmp_path / "known_hosts"), "--retries", "0")
    assert code == 2 and "--ssh-key" in err


def test_transfer_deadline_from_the_environment_is_checked(tmp_path, monkeypatch):
    from xqhil.transport import Deadlines

    monkeypatch.setenv("XQHIL_TRANSFER_TIMEOUT", "2.5")
    assert Deadlines().transfer == 2.5
    monkeypatch.setenv("XQHIL_TRANSFER_TIMEOUT", "soon")
    code, _, err = probe("host", "--remote-dir", str(tmp_path))
    assert code == 2 and "$XQHIL_TRANSFER_TIMEOUT must be a positive number" in err and err.count("\n") == 1


def test_retries_name_a_reason_even_when_the_error_has_no_message(caplog):
    """str(TimeoutError()) is empty: the log and the error name the class instead (finding D4)."""
    from xqhil.errors import HilError
    from xqhil.transport.base import with_retries

    attempts, drops = [], []

    def fail():
        attempts.append(1)
        raise TimeoutError()

    caplog.set_level("INFO", logger="xqhil.transport.base")
    with pytest.raises(HilError) as info:
        with_retries(fail, "uploading x to board", 2, lambda e: isinstance(e, OSError),
                     before_retry=lambda: drops.append(1), delay=0.01)
    assert len(attempts) == 3 and len(drops) == 2  # a new connection before each retry
    assert str(info.value).endswith("failed after 3 attempt(s): TimeoutError")
    lines = [r.getMessage() for r in caplog.records]
    assert lines[0].endswith("(attempt 1 of 3): TimeoutError; retrying on a new connection")
    assert lines[-1].endswith("(attempt 3 of 3): TimeoutError")
