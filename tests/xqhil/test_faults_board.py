"""Board faults end fast, named and clean (findings D1-D4, D12, D14), against a real loopback OpenSSH server.

Each row of TABLE is one fault: how it is made (a fake peer, a throttling/dropping/freezing TCP proxy in
front of sshd, sshd's per-connection processes killed or stopped, an agent killed, a tiny tmpfs), the exit
code, a fragment of the one-line error, and the leftovers expected: the board's work folder removed (or
named in the error), no agent process left, no "Traceback" on stderr. xqhil runs as a subprocess, as a user
runs it, so paramiko's thread output and the wall time are what a user sees.
"""
from __future__ import annotations

import contextlib
import os
import re
import signal
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Dict, List, Optional

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper
from xqhil_testlib import FAULTS as FAULTS_DIR
from xqhil_testlib import FakePeer, LinkProxy, processes_mentioning, sshd_session_pids, wait_for

REPO = Path(__file__).resolve().parents[2]
pytestmark = pytest.mark.hil


@dataclass
class Fault:
    name: str
    code: int
    message: str  # fragments of the error line, in order, joined by " ... " ("" for a run that must succeed)
    peer: str = "sshd"  # sshd | proxy | close | silent | http
    proxy: Dict[str, object] = field(default_factory=dict)  # LinkProxy settings
    agent_fault: str = ""  # $XQHIL_FAULT of the agent's interpreter (tests/xqhil/faults)
    during: Optional[Callable[["Ctx"], None]] = None  # runs while xqhil runs
    args: List[str] = field(default_factory=list)
    env: Dict[str, str] = field(default_factory=dict)
    tmpfs: str = ""  # size of a tmpfs mounted as the remote folder
    model: bool = False  # `xqhil run` a 300 kB model instead of `boards --probe`
    max_s: float = 60.0
    quiet: bool = True
    left_named: bool = False  # the board cannot be reached to clean up: the folder left must be named
    log: str = ""  # a fragment stderr must also hold (e.g. why a retry happened)
    never: str = "Traceback"  # a fragment stderr must not hold


@dataclass
class Ctx:
    sshd: object
    remote: Path


def work_file(ctx: Ctx, name: str, size: int = 0) -> Optional[Path]:
    for path in ctx.remote.glob(f"xqhil.*/{name}"):
        if path.is_file() and path.stat().st_size >= size:
            return path
    return None


def agent_pids(ctx: Ctx) -> List[int]:
    """The agent's interpreter (not its shell): argv ends with .../xqhil_agent.py .../request.json."""
    pids = []
    for proc in Path("/proc").iterdir():
        try:
            argv = (proc / "cmdline").read_bytes().split(b"\0")[:-1]
        except OSError:
            continue
        if len(argv) >= 2 and argv[-1].endswith(b"request.json") and str(ctx.remote).encode() in argv[-1]:
            pids.append(int(proc.name))
    return pids


def signal_sessions(sig: int) -> Callable[[Ctx], None]:
    def act(ctx: Ctx) -> None:
        for pid in sshd_session_pids(ctx.sshd):
            os.kill(pid, sig)
    return act


def when(ready: Callable[[Ctx], object], act: Callable[[Ctx], None]) -> Callable[[Ctx], None]:
    def during(ctx: Ctx) -> None:
        wait_for(lambda: ready(ctx), 30, "the fault's trigger")
        act(ctx)
    return during


def kill_agent(sig: int) -> Callable[[Ctx], None]:
    def act(ctx: Ctx) -> None:
        wait_for(lambda: agent_pids(ctx), 40, "the agent's start")
        for pid in agent_pids(ctx):
            os.kill(pid, sig)
    return act


def full_pid_file(ctx: Ctx) -> None:
    """agent.pid made a link to /dev/full, which answers every write with ENOSPC, as a full disk does."""
    os.symlink("/dev/full", next(ctx.remote.glob("xqhil.*")) / "agent.pid")


def fill_disk(ctx: Ctx) -> None:
    """Fill the (small tmpfs) remote folder while the agent sleeps: its response cannot be written."""
    with open(ctx.remote / "filler", "wb", buffering=0) as handle:
        with contextlib.suppress(OSError):
            for _ in range(1024):
                handle.write(b"\0" * 4096)


AGENT_STARTED = (lambda ctx: work_file(ctx, "agent.pid"))
FOLDER_MADE = (lambda ctx: list(ctx.remote.glob("xqhil.*")))
UPLOADING = (lambda ctx: work_file(ctx, "xqhil_agent.py", 8000))
FAST = {"XQHIL_TRANSFER_TIMEOUT": "3"}

TABLE = [
    # D1: handshake failures: one line naming the cause, no paramiko traceback, with or without -q
    Fault("peer-closes", 3, "closed the connection before sending an SSH banner", peer="close"),
    Fault("peer-closes-not-quiet", 3, "closed the connection before sending an SSH banner", peer="close",
          quiet=False),
    Fault("peer-silent", 3, "no SSH banner within 2 s", peer="silent", max_s=45),
    Fault("peer-silent-not-quiet", 3, "no SSH banner within 2 s", peer="silent", max_s=45, quiet=False),
    Fault("peer-not-ssh", 3, "'HTTP/1.1 400 Bad Request' instead of an SSH banner", peer="http", quiet=False),
    # D2a: the link drops mid-upload: named as lost; cleanup reconnects; a retry uses a new connection
    Fault("drop-mid-upload", 3, "connection lost to ssh:// ... while uploading xqhil_agent.py", peer="proxy",
          proxy=dict(rate=100_000, fault="drop", fault_after=20_000, fault_on={0})),
    Fault("drop-then-board-unreachable", 3, "connection lost to ssh:// ... while uploading", peer="proxy",
          left_named=True,
          proxy=dict(rate=100_000, fault="drop", fault_after=20_000, max_connections=1)),
    Fault("drop-mid-upload-retried", 0, "", peer="proxy", args=["--retries", "1"], quiet=False,
          log="(attempt 1 of 2): connection lost to ssh://",
          proxy=dict(rate=100_000, fault="drop", fault_after=20_000, fault_on={0})),
    # D4: a frozen link: one deadline per whole transfer, every retry on a new connection, bounded cleanup
    Fault("freeze-every-connection", 3, "stopped answering while uploading xqhil_agent.py: no end within "
          "the deadline of 3 s", peer="proxy", env=FAST, args=["--retries", "1"], max_s=45,
          proxy=dict(rate=100_000, fault="freeze", fault_after=20_000, fault_on={0, 1})),
    # 6 s: the retry must carry the ~34 KB agent through the 10 kB/s proxy well within its deadline
    Fault("sshd-sessions-stopped-retried", 0, "", peer="proxy", env={"XQHIL_TRANSFER_TIMEOUT": "6"},
          args=["--retries", "1"], max_s=60,
          quiet=False, log="stopped answering while uploading ... no end within the deadline of 6 s; retrying on a "
          "new connection",
          proxy=dict(rate=10_000), during=when(UPLOADING, signal_sessions(signal.SIGSTOP))),
    # D2b/D3: the link drops while the agent runs; a killed agent is named with its real signal
    Fault("drop-while-agent-runs", 3, "connection lost to ssh:// ... while the agent ran", agent_fault="sleep:30",
          during=when(AGENT_STARTED, signal_sessions(signal.SIGKILL))),
    Fault("agent-sigkilled", 3, "was killed by signal 9", agent_fault="sleep:30", during=kill_agent(9)),
    Fault("agent-sigterm", 3, "was killed by signal 15", agent_fault="sleep:30", during=kill_agent(15)),
    # D14: a full disk on the board is named, not retried
    Fault("disk-full-upload", 3, "disk full on the board: uploading model.onnx", tmpfs="96k", model=True,
          args=["--retries", "2"], max_s=45, quiet=False, never="attempt 1 of 3"),  # not retried
    Fault("disk-full-agent-pid", 3, "disk full on the board: the agent ... agent.pid", peer="proxy",
          proxy=dict(rate=20_000), during=when(FOLDER_MADE, full_pid_file)),
    Fault("disk-full-agent-response", 3, "disk full on the board: the agent ... cannot write the response",
          tmpfs="256k", agent_fault="sleep:4", during=when(AGENT_STARTED, fill_disk)),
]


def pattern(fragments: str) -> str:
    """'a ... b' -> a regex for a, then b later on the same line."""
    return ".*".join(map(re.escape, fragments.split(" ... ")))


def big_model(path: Path) -> None:
    """x [N, 256] -> MatMul(256 x 300) -> y: about 300 kB of weights."""
    w = np.random.default_rng(0).standard_normal((256, 300)).astype(np.float32)
    graph = helper.make_graph([helper.make_node("MatMul", ["x", "w"], ["y"])], "big",
                              [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 256])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 300])],
                              [numpy_helper.from_array(w, "w")])
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=8), str(path))


def xqhil(args: List[str], env: Dict[str, str], during: Optional[Callable[[], None]], timeout: float):
    """Run the CLI of this checkout as a subprocess; ``during`` runs in a thread meanwhile."""
    full_env = dict(os.environ, PYTHONPATH=str(REPO / "host"), **env)
    start = time.monotonic()
    proc = subprocess.Popen([sys.executable, "-m", "xqhil", *args], env=full_env, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    errors: List[BaseException] = []

    def guarded() -> None:
        try:
            during()
        except BaseException as exc:  # reported after the run
            errors.append(exc)

    helper_thread = threading.Thread(target=guarded, daemon=True) if during else None
    if helper_thread:
        helper_thread.start()
    try:
        out, err = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        out, err = proc.communicate()
        err += f"\n(test: xqhil still ran after {timeout} s)"
    if helper_thread:
        helper_thread.join(5)
    assert not errors, errors
    return proc.returncode, out, err, time.monotonic() - start


@pytest.fixture
def tmpfs_mount():
    mounted: List[Path] = []

    def mount(path: Path, size: str) -> None:
        done = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size},mode=0700", "tmpfs", str(path)],
                              capture_output=True, text=True)
        if done.returncode != 0:
            pytest.skip(f"cannot mount a tmpfs for the disk-full fault: {done.stderr.strip()}")
        mounted.append(path)

    yield mount
    for path in mounted:
        subprocess.run(["umount", "-l", str(path)], check=False)


def board_for(row: Fault, sshd, stack: List[object]) -> str:
    if row.peer == "sshd":
        return sshd.url
    if row.peer == "proxy":
        proxy = LinkProxy(sshd.port, **row.proxy)  # type: ignore[arg-type]
        stack.append(proxy)
        return f"ssh://{sshd.user}@127.0.0.1:{proxy.port}"
    peer = FakePeer(row.peer)
    stack.append(peer)
    return f"ssh://{sshd.user}@127.0.0.1:{peer.port}"


@pytest.mark.parametrize("row", TABLE, ids=[row.name for row in TABLE])
def test_board_fault(row: Fault, sshd, tmp_path, tmpfs_mount):
    remote = tmp_path / "remote"
    remote.mkdir()
    if row.tmpfs:
        tmpfs_mount(remote, row.tmpfs)
    stack: List[object] = []
    known = sshd.known_hosts
    if row.peer not in ("sshd",):  # the proxy/peer listens on another port: same host key, another entry
        known = tmp_path / "known_hosts"
    board = board_for(row, sshd, stack)
    if row.peer != "sshd":
        key = sshd.known_hosts.read_text().split(None, 1)[1]
        known.write_text(f"[127.0.0.1]:{board.rsplit(':', 1)[1]} {key}")
    python = sys.executable
    if row.agent_fault:
        python = f"env PYTHONPATH={FAULTS_DIR} XQHIL_FAULT={row.agent_fault} {python}"
    args = ["--board", board, "--ssh-key", str(sshd.key), "--known-hosts", str(known), "--python", python,
            "--remote-dir", str(remote), "--connect-timeout", "2", "--retries", "0", *row.args]
    if row.model:
        big_model(tmp_path / "model.onnx")
        command = ["run", str(tmp_path / "model.onnx"), "--out", str(tmp_path / "out"), "--repeat", "1"]
    else:
        command = ["boards", "--probe"]
    ctx = Ctx(sshd, remote)
    try:
        code, out, err, seconds = xqhil([*command, *args, *(["-q"] if row.quiet else [])], row.env,
                                        (lambda: row.during(ctx)) if row.during else None, row.max_s + 30)
    finally:
        stopped = sshd_session_pids(sshd)
        for pid in stopped:  # sessions this fault stopped or left: end them so nothing outlives the test
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        for thing in stack:
            thing.stop()  # type: ignore[attr-defined]
    print(f"{row.name}: exit {code} in {seconds:.1f} s: {err.strip().splitlines()[-1:]}")
    assert code == row.code, err
    assert "Traceback" not in err and "paramiko" not in err, err
    assert seconds < row.max_s, f"took {seconds:.1f} s: {err}"
    if row.code:
        errors = [line for line in err.splitlines() if line.startswith("xqhil: error:")]
        assert len(errors) == 1 and re.search(pattern(row.message), errors[0]), err
    assert re.search(pattern(row.log), err) and row.never not in err, err
    left = sorted(p.name for p in remote.glob("xqhil.*"))
    if row.left_named:
        assert len(left) == 1 and f"{remote}/{left[0]} was left on" in err, err
    assert left == [] or row.left_named, f"{left} left on the board: {err}"
    wait_for(lambda: not processes_mentioning(str(remote)), 10, "the end of every agent process")


def test_remote_dir_root_leaves_no_folder_at_the_root(sshd, tmp_path):
    """D12: mktemp under '/' prints '//xqhil.X'; the path is normalised and the folder removed."""
    if not os.access("/", os.W_OK):
        pytest.skip("the loopback board's user cannot write in '/'")
    before = set(Path("/").glob("xqhil.*"))
    try:
        code, out, err, _ = xqhil(["boards", "--probe", "--board", sshd.url, "--ssh-key", str(sshd.key),
                                   "--known-hosts", str(sshd.known_hosts), "--python", sys.executable,
                                   "--remote-dir", "/", "--retries", "0", "-q"], {}, None, 90)
        assert code == 0, err
        assert set(Path("/").glob("xqhil.*")) == before
    finally:
        for path in set(Path("/").glob("xqhil.*")) - before:
            subprocess.run(["rm", "-rf", "--", str(path)], check=False)
