"""SIGTERM / SIGHUP of xqhil (a CI job's timeout, a closed terminal) unwind like Ctrl-C: the board's agent is
killed (its whole process group, locally or on the ssh board), its work folder removed, no verify.json is
left, and the exit code is 128 + the signal with one line saying so. Real processes and a real sshd."""
from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path
from typing import List, Optional

import pytest

from xqhil_testlib import demo_config, fault_python, leftovers, wait_for

REPO = Path(__file__).resolve().parents[2]
SLOW = fault_python(sys.executable, "sleep:120")  # the agent hangs far longer than the test may take


@pytest.fixture(scope="module")
def demo(tmp_path_factory) -> dict:
    """The demo config quantized once (xquant); each test verifies it with --qmodel."""
    import xquant

    folder = tmp_path_factory.mktemp("demo")
    config = demo_config(folder)
    xquant.quantize_onnx_model(str(config))
    qmodels = list((folder / "work").glob("*.onnx"))
    assert len(qmodels) == 1, qmodels
    return {"config": config, "qmodel": qmodels[0]}


def start_xqhil(demo: dict, board: str, out: Path, *extra: str) -> subprocess.Popen:
    env = dict(os.environ, PYTHONPATH=str(REPO / "host"))
    return subprocess.Popen([sys.executable, "-m", "xqhil", "quantize-and-verify", str(demo["config"]), "--board",
                             board, "--qmodel", str(demo["qmodel"]), "--out", str(out), "-q", *extra],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env,
                            start_new_session=True)


def agent_pids(remote: Path) -> List[int]:
    """Live, non-zombie processes running the agent out of a work folder under ``remote``."""
    found = []
    for proc in Path("/proc").iterdir():
        try:
            cmdline = (proc / "cmdline").read_bytes().decode("utf-8", "replace")
            stat = (proc / "stat").read_text()
        except (OSError, ValueError):
            continue
        if f"{remote}/xqhil." in cmdline and "xqhil_agent.py" in cmdline and stat.rsplit(")", 1)[1].split()[0] != "Z":
            found.append(int(proc.name))
    return found


def group_members(pgid: int) -> List[int]:
    """Live, non-zombie processes of process group ``pgid``."""
    members = []
    for proc in Path("/proc").iterdir():
        if proc.name.isdigit():
            try:
                fields = (proc / "stat").read_text().rsplit(")", 1)[1].split()
            except (OSError, IndexError):
                continue
            if int(fields[2]) == pgid and fields[0] != "Z":
                members.append(int(proc.name))
    return members


def stop_while_agent_runs(proc: subprocess.Popen, remote: Path, signum: int) -> tuple:
    """Wait (with a deadline) for the agent to start under ``remote``, send ``signum`` to xqhil alone; returns
    (exit code, stderr, the agent's process group)."""
    pgid: Optional[int] = None
    try:
        def started() -> bool:
            assert proc.poll() is None, f"xqhil ended before the agent started: {proc.communicate()}"
            return bool(agent_pids(remote))

        wait_for(started, 120, "the start of the agent")
        pgid = os.getpgid(agent_pids(remote)[0])
        assert pgid != os.getpgid(proc.pid), "the agent shares xqhil's process group: the test proves nothing"
        proc.send_signal(signum)  # xqhil only, not its group: like a timeout that kills one process
        _, err = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.communicate()
    return proc.returncode, err, pgid


def assert_stopped_cleanly(code: int, err: str, pgid: int, remote: Path, out: Path, signum: int) -> None:
    try:
        wait_for(lambda: not group_members(pgid), 5, f"the end of the agent's process group {pgid}")
    finally:  # a failing test must not leave its sleeping agent behind either
        if group_members(pgid):
            os.killpg(pgid, signal.SIGKILL)
    assert code == 128 + signum, err
    assert err.strip() == f"xqhil: stopped by {signal.Signals(signum).name}", err  # one line, no traceback
    assert agent_pids(remote) == []
    assert leftovers(remote) == []
    assert not (out / "verify.json").exists() and not (out / "verify.md").exists()
    assert list(out.glob(".xquant-*")) == []  # nor an atomic write's temporary file


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGHUP])
def test_signal_on_host_board_kills_the_agent(demo, tmp_path, signum):
    remote, out = tmp_path / "board", tmp_path / "out"
    remote.mkdir()
    proc = start_xqhil(demo, "host", out, "--python", SLOW, "--remote-dir", str(remote))
    code, err, pgid = stop_while_agent_runs(proc, remote, signum)
    assert_stopped_cleanly(code, err, pgid, remote, out, signum)


def test_sigterm_on_qemu_board_kills_the_emulated_agent(demo, rootfs, qemu_python, tmp_path):
    remote, out = tmp_path / "board", tmp_path / "out"
    remote.mkdir()
    proc = start_xqhil(demo, f"qemu:{rootfs}", out, "--python", fault_python(qemu_python, "sleep:120"),
                       "--remote-dir", str(remote))
    code, err, pgid = stop_while_agent_runs(proc, remote, signal.SIGTERM)
    assert_stopped_cleanly(code, err, pgid, remote, out, signal.SIGTERM)


def test_sigterm_on_ssh_board_kills_the_remote_agent(demo, sshd, tmp_path):
    remote, out = tmp_path / "board", tmp_path / "out"
    remote.mkdir()
    proc = start_xqhil(demo, sshd.url, out, "--ssh-key", str(sshd.key), "--known-hosts", str(sshd.known_hosts),
                       "--python", SLOW, "--remote-dir", str(remote), "--connect-timeout", "10")
    code, err, pgid = stop_while_agent_runs(proc, remote, signal.SIGTERM)
    assert_stopped_cleanly(code, err, pgid, remote, out, signal.SIGTERM)



def test_nohup_keeps_sighup_ignored_and_sigterm_still_stops(tmp_path):
    """A signal ignored from the start (``nohup xqhil ...``) stays ignored; the others still unwind."""
    script = ("import os, signal, sys\n"
              "from xquant.cli_support import run_guarded\n"
              "signal.signal(signal.SIGHUP, signal.SIG_IGN)\n"
              "def work():\n"
              "    os.kill(os.getpid(), signal.SIGHUP)\n"
              "    print('survived SIGHUP', flush=True)\n"
              "    try:\n"
              "        os.kill(os.getpid(), signal.SIGTERM)\n"
              "        signal.pause()\n"
              "    finally:\n"
              "        print('finally ran', flush=True)\n"
              "sys.exit(run_guarded('prog', work, False, ()))\n")
    env = dict(os.environ, PYTHONPATH=str(REPO / "host"))
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, env=env, timeout=60)
    assert done.returncode == 143, done
    assert done.stdout.splitlines() == ["survived SIGHUP", "finally ran"]
    assert done.stderr == "prog: stopped by SIGTERM\n"
