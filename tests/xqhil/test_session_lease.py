"""A farm lease's board session (host/xqhil/session_lease.py) against a real sshd on loopback: one agent
process for many verify runs, each run's files in a subfolder removed after it, nothing left on the board."""
from __future__ import annotations

import shlex
import sys
from dataclasses import replace
from pathlib import Path

import pytest
from xqhil_testlib import fault_python, processes_mentioning, wait_for

from xqhil.boards.spec import builtin_board
from xqhil.errors import HilError
from xqhil.session_lease import AgentLease
from xqhil.transport import Deadlines
from xqhil.verify import VerifyOptions, host_side, quantize_and_verify

pytestmark = pytest.mark.hil


def ssh_spec(sshd, remote: Path, python: str):
    remote.mkdir(exist_ok=True)
    return replace(builtin_board(sshd.url), ssh_key=str(sshd.key), known_hosts=str(sshd.known_hosts),
                   python=tuple(shlex.split(python)), workdir=str(remote))


def counting_python(folder: Path) -> tuple:
    """An interpreter that appends a line to a file at each start (agent processes started on the board)."""
    starts = folder / "starts.txt"
    wrapper = folder / "python-counting"
    wrapper.write_text(f"#!/bin/sh\necho start >> {starts}\nexec {sys.executable} \"$@\"\n")
    wrapper.chmod(0o755)
    return str(wrapper), starts


def test_one_agent_serves_every_run_of_a_lease_and_nothing_is_left(sshd, quantized, tmp_path):
    python, starts = counting_python(tmp_path)
    remote = tmp_path / "remote"
    spec = ssh_spec(sshd, remote, python)
    lease = AgentLease(spec, Deadlines(connect=20, run=120), retries=0)
    try:
        hello = lease.start()
        assert hello["loop"] is True and hello["agent_version"] and hello["device"]["onnxruntime"]
        [work] = list(remote.glob("xqhil.*"))
        host = host_side(VerifyOptions(config=str(quantized["config"]), board=spec, qmodel=str(quantized["qmodel"]),
                                       out=str(tmp_path / "o0"), quiet=True))
        for i in range(3):
            report = quantize_and_verify(VerifyOptions(config=str(quantized["config"]), board=spec,
                                                       qmodel=str(quantized["qmodel"]), out=str(tmp_path / f"o{i}"),
                                                       quiet=True, session=lease, host=host))
            assert report["verdict"] == "pass" and report["board"]["name"] == spec.name
            assert report["fidelity"]["outputs"] and report["device"]["arch"]
            assert sorted(p.name for p in work.iterdir()) == ["agent.pid", "xqhil_agent.py"]  # run folder gone
        assert starts.read_text().count("start") == 1
    finally:
        lease.close()
    assert list(remote.iterdir()) == []  # the agent's shell removed its folder when its input ended
    wait_for(lambda: not processes_mentioning(str(remote)), 10, "the end of the agent")


def test_an_agent_killed_mid_run_fails_the_run_and_its_lease_leaves_nothing(sshd, quantized, tmp_path):
    remote = tmp_path / "remote"
    spec = ssh_spec(sshd, remote, fault_python(sys.executable, "kill-after:1"))
    lease = AgentLease(spec, Deadlines(connect=20, run=120), retries=0)
    try:
        lease.start()
        with pytest.raises(HilError, match="killed by signal 9"):
            quantize_and_verify(VerifyOptions(config=str(quantized["config"]), board=spec,
                                              qmodel=str(quantized["qmodel"]), out=str(tmp_path / "o"), quiet=True,
                                              session=lease))
    finally:
        lease.close()
    assert list(remote.iterdir()) == []
    wait_for(lambda: not processes_mentioning(str(remote)), 10, "the end of the agent")
