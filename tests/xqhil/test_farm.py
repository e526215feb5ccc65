"""The board farm on a real labgrid lab on loopback: labgrid-coordinator, an exporter, loopback sshd boards."""
from __future__ import annotations

import contextlib
import json
import os
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest
from farm_lab import assert_one_job_per_board, start_lab
from xqhil_testlib import fault_python, run_cli, start_sshd

pytest.importorskip("labgrid", reason="labgrid is not installed (pip install 'xqhil[farm]')")
pytestmark = pytest.mark.hil


def share_keys(boards) -> Path:
    """One user key for all boards (the first one's) and one known_hosts holding every host key."""
    first = boards[0]
    for sshd in boards[1:]:
        sshd.folder.joinpath("authorized_keys").write_text(first.folder.joinpath("userkey.pub").read_text())
    known = first.folder.parent / "known_hosts_all"
    known.write_text("".join(s.known_hosts.read_text() for s in boards))
    return known


@pytest.fixture
def lab(tmp_path):
    sshds = []
    lab = start_lab(tmp_path / "lab")
    try:
        for i in range(3):
            folder = tmp_path / f"board{i}"
            folder.mkdir()
            sshds.append(start_sshd(folder))
        known = share_keys(sshds)
        lab.start_exporter("exp", {f"rv{i}": ("127.0.0.1", s.port, s.user) for i, s in enumerate(sshds)})
        for i in range(3):
            lab.add_place(f"rv-{i}", f"exp/rv{i}/NetworkService/*", {"soc": "k1", "slot": f"s{i}"})
        lab.wait_resources(3)
        lab.sshds, lab.known = sshds, known
        yield lab
    finally:
        for sshd in sshds:
            sshd.stop()
        lab.stop()


def board_flags(lab, remote: Path):
    remote.mkdir(exist_ok=True)
    return ["--ssh-key", str(lab.sshds[0].key), "--known-hosts", str(lab.known), "--python", sys.executable,
            "--remote-dir", str(remote)]


def test_labgrid_place_is_probed_over_our_ssh_and_released(lab, tmp_path):
    code, out, err = run_cli(["boards", "--probe", "--board", f"labgrid://{lab.address}/rv-1",
                              *board_flags(lab, tmp_path / "remote")])
    assert code == 0, err
    assert f"127.0.0.1:{lab.sshds[1].port}" in out and "labgrid:rv-1" in out
    events = lab.acquisitions()
    assert [e[:2] for e in events] == [("acquired", "rv-1"), ("released", "rv-1")]
    assert assert_one_job_per_board(lab) == 1


def test_labgrid_tag_filter_reserves_a_matching_place(lab, project, tmp_path):
    code, out, err = run_cli(["quantize-and-verify", str(project), "--board", f"labgrid://{lab.address}/?slot=s2",
                              "--out", str(tmp_path / "out"), "--db", str(tmp_path / "h.sqlite3"), "-q",
                              *board_flags(lab, tmp_path / "remote")])
    assert code == 0, err
    assert [e[:2] for e in lab.acquisitions()] == [("acquired", "rv-2"), ("released", "rv-2")]
    assert "labgrid:rv-2" in (tmp_path / "out" / "verify.json").read_text()


def test_unknown_place_is_bad_input_and_nothing_stays_acquired(lab, tmp_path):
    code, out, err = run_cli(["boards", "--probe", "--board", f"labgrid://{lab.address}/rv-9",
                              *board_flags(lab, tmp_path / "remote")])
    assert code == 2 and "rv-9" in err and "rv-0" in err
    assert lab.acquisitions() == []


def test_acquire_with_exporter_down_is_an_infrastructure_failure(lab, tmp_path):
    lab.exporters[0].terminate()
    lab.exporters[0].wait(timeout=10)
    code, out, err = run_cli(["boards", "--probe", "--board", f"labgrid://{lab.address}/rv-0",
                              *board_flags(lab, tmp_path / "remote")])
    assert code == 3, err
    events = [e[:2] for e in lab.acquisitions()]
    assert events in ([], [("acquired", "rv-0"), ("released", "rv-0")])


@pytest.mark.parametrize("url", ["labgrid://127.0.0.1/rv-0", "labgrid://127.0.0.1:1/a/?x=1",
                                 "labgrid://127.0.0.1:1/?Bad=1", "labgrid://127.0.0.1:1/"])
def test_bad_labgrid_urls_are_bad_input(url, tmp_path):
    code, out, err = run_cli(["boards", "--probe", "--board", url])
    assert code == 2 and err.count("\n") == 1, err


def write_matrix(lab, tmp_path: Path, project: Path, boards, repeat: int, places=None, **extra) -> Path:
    remote = tmp_path / "remote"
    remote.mkdir(exist_ok=True)
    lines = [f'coordinator = "{lab.address}"', f"boards = {json.dumps(boards)}", f"repeat = {repeat}",
             f'out = "{tmp_path / "farm-out"}"', f'db = "{tmp_path / "history.sqlite3"}"']
    lines += [f"{k} = {json.dumps(v)}" for k, v in extra.items()]
    lines += ["[[models]]", f'config = "{project}"', "[board]", f'python = "{sys.executable}"',
              f'ssh_key = "{lab.sshds[0].key}"', f'known_hosts = "{lab.known}"', f'workdir = "{remote}"']
    for name, python in (places or {}).items():
        lines += [f'[places."{name}"]', f"python = {json.dumps(python)}"]
    path = tmp_path / "matrix.toml"
    path.write_text("\n".join(lines) + "\n")
    return path


def history_docs(db: Path):
    with sqlite3.connect(str(db)) as conn:
        return [json.loads(d) for (d,) in conn.execute("SELECT doc FROM runs ORDER BY id")]


def test_farm_matrix_retries_flaky_board_elsewhere_quarantines_it_and_flags_the_wrong_one(lab, project, tmp_path,
                                                                                       qemu_python):
    """rv-0: host python, drops the run (flaky); rv-1: the agent under qemu-riscv64; rv-2: numerically wrong."""
    flaky = fault_python(sys.executable, "kill-after:1")  # the agent dies mid-run: the connection's run is lost
    wrong = fault_python(sys.executable, "perturb-int8:3.0")  # a numerically wrong chip
    matrix = write_matrix(lab, tmp_path, project, ["?soc=k1"], 6, {"rv-0": flaky, "rv-1": qemu_python, "rv-2": wrong},
                          retries=2, quarantine_after=2)
    code, out, err = run_cli(["farm", "run", str(matrix), "--json"])
    summary = json.loads(out)
    jobs = summary["jobs"]
    assert len(jobs) == 6 and sorted(j["job"] for j in jobs) == list(range(1, 7)), err  # nothing lost
    assert summary["quarantined"] == {"rv-0": "infra_2_in_a_row"}
    attempts = summary["attempts"]
    on_flaky = [a for a in attempts if a["place"] == "rv-0"]
    assert len(on_flaky) == 2 and all(a["exit"] == 3 for a in on_flaky)
    for a in on_flaky:  # retried, and on another board
        final = next(j for j in jobs if j["job"] == a["job"])
        assert final["place"] != "rv-0" and final["attempt"] == 2
    for j in jobs:
        assert j["status"] == ("fail" if j["place"] == "rv-2" else "pass"), j
        if j["place"] == "rv-2":  # a numeric failure is never retried
            assert [a["place"] for a in attempts if a["job"] == j["job"]][-1] == "rv-2"
            assert sum(1 for a in attempts if a["job"] == j["job"] and a["exit"] == 1) == 1
    assert any(j["place"] == "rv-2" for j in jobs) and any(j["place"] == "rv-1" for j in jobs)
    assert code == 1
    assert all(j["recorded"] for j in jobs) and all(a["recorded"] for a in on_flaky)
    docs = history_docs(tmp_path / "history.sqlite3")
    measured = [d for d in docs if d["verdict"] != "INFRA"]
    assert len(measured) == 6 and len(docs) == 8  # every job, and both infrastructure failures of rv-0
    for d in measured:
        assert d["farm"]["quarantined"] is False and d["board"]["name"] == "labgrid:" + d["farm"]["place"]
        assert d["device"]["arch"] == ("riscv64" if d["farm"]["place"] == "rv-1" else os.uname().machine)
    infra = [d for d in docs if d["verdict"] == "INFRA"]
    assert [d["board"]["name"] for d in infra] == ["labgrid:rv-0"] * 2
    assert [d["infra"]["exit"] for d in infra] == [3, 3] and all(d["infra"]["error"] for d in infra)
    assert [d["farm"]["quarantined"] for d in infra] == [False, True]  # the second one tagged it out
    assert infra[0]["model"]["fp32_sha256"] == measured[0]["model"]["fp32_sha256"]  # same run key as the jobs
    assert assert_one_job_per_board(lab) == len(summary["leases"])  # from the coordinator's own log
    assert all(e[0] == "released" for e in lab.acquisitions()[-1:])
    code, out, err = run_cli(["farm", "status", lab.address])
    assert code == 0 and "quarantined: infra_2_in_a_row" in out.splitlines()[1], out
    code, out, err = run_cli(["farm", "check", str(matrix), "rv-0"])  # the probe passes: back in the pool
    assert code == 0 and "rv-0: ok" in out, err
    code, out, err = run_cli(["farm", "status", lab.address])
    assert "quarantined" not in out, out


def counting_python(folder: Path) -> tuple:
    """A board interpreter that appends a line to a file at each start: (command, file). Counts real agent
    process starts on the board."""
    starts = folder / "agent-starts.txt"
    wrapper = folder / "python-counting"
    wrapper.write_text(f"#!/bin/sh\necho start >> {starts}\nexec {sys.executable} \"$@\"\n")
    wrapper.chmod(0o755)
    return str(wrapper), starts


@pytest.mark.parametrize("probe, acquisitions", [("lease", 1), ("each-job", 3)])
def test_a_lease_acquires_probes_and_starts_the_agent_once_for_its_jobs(lab, project, tmp_path, probe, acquisitions):
    """Three jobs on one place: a lease acquires and probes it once (each-job: three times), the probe starts
    the lease's agent and the jobs reuse it (agent processes started on the board: one per lease), and the
    coordinator's own log shows exactly those acquisitions, each released."""
    python, starts = counting_python(tmp_path)
    matrix = write_matrix(lab, tmp_path, project, ["?slot=s1"], 3, {"rv-1": python}, probe=probe)
    code, out, err = run_cli(["farm", "run", str(matrix), "--json"])
    summary = json.loads(out)
    assert code == 0 and [j["status"] for j in summary["jobs"]] == ["pass"] * 3, err
    leases = summary["leases"]
    assert len(leases) == acquisitions and sum(x["jobs"] for x in leases) == 3
    assert all(x["place"] == "rv-1" and x["probe_s"] > 0 and "release_s" in x for x in leases)
    probed = [a for a in summary["attempts"] if a["timings"]["probe_s"] > 0]
    assert len(probed) == acquisitions and all(a["fingerprint"]["agent_version"] for a in summary["attempts"])
    assert starts.read_text().count("start") == acquisitions
    assert assert_one_job_per_board(lab) == acquisitions and held_now(lab) == []
    assert list((tmp_path / "remote").iterdir()) == []  # every lease's work folder removed


def test_a_matrix_quantizes_and_runs_the_pc_side_once_and_records_every_job_with_its_board(lab, project, tmp_path,
                                                                                          monkeypatch):
    """Four jobs on two boards: the model is quantized once and its PC FP32/INT8 outputs computed once (in
    the farm process; the workers take them as they are), and every job's run is still recorded with its
    board, the board's fingerprint and the same INT8 model."""
    import xquant
    from xqhil import verify

    calls = {"quantize": 0, "pc": 0}

    def counted(name, real):
        def call(*args, **kwargs):
            calls[name] += 1
            return real(*args, **kwargs)
        return call

    monkeypatch.setattr(xquant, "quantize_onnx_model", counted("quantize", xquant.quantize_onnx_model))
    monkeypatch.setattr(verify, "run_on_pc", counted("pc", verify.run_on_pc))
    matrix = write_matrix(lab, tmp_path, project, ["rv-0", "rv-2"], 2)
    code, out, err = run_cli(["farm", "run", str(matrix), "--json"])
    summary = json.loads(out)
    assert code == 0 and [j["status"] for j in summary["jobs"]] == ["pass"] * 4, err
    assert calls == {"quantize": 1, "pc": 2}  # one model: one quantization, one FP32 and one INT8 PC run
    assert [m["what"] for m in summary["prepared"]] == ["quantize", "pc"]
    assert all(j["pc_side"] == "shared" for j in summary["jobs"])
    docs = history_docs(tmp_path / "history.sqlite3")
    assert sorted(d["farm"]["place"] for d in docs) == ["rv-0", "rv-0", "rv-2", "rv-2"]
    for d in docs:
        assert d["board"]["name"] == "labgrid:" + d["farm"]["place"] and d["verdict"] == "pass"
        assert d["device"]["arch"] == os.uname().machine and d["device"]["onnxruntime"]
        assert d["harness"]["run_s"] > 0 and d["fidelity"]["outputs"]
    assert len({d["model"]["int8_sha256"] for d in docs}) == 1


def start_farm(matrix: Path) -> subprocess.Popen:
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(sys.path))
    return subprocess.Popen([sys.executable, "-m", "xqhil", "farm", "run", str(matrix)], env=env,
                            start_new_session=True, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def wait_held(lab, count: int, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if len(held_now(lab)) >= count:
            return
        time.sleep(0.2)
    raise AssertionError(f"{count} places were not acquired: {lab.acquisitions()}")


def held_now(lab):
    held = {}
    for event, place, _holder in lab.acquisitions():
        held[place] = event == "acquired"
    return sorted(p for p, h in held.items() if h)


def test_ctrl_c_releases_every_board(lab, project, tmp_path):
    slow = fault_python(sys.executable, "sleep:60")  # every board hangs in the probe
    matrix = write_matrix(lab, tmp_path, project, ["?soc=k1"], 3, {f"rv-{i}": slow for i in range(3)})
    proc = start_farm(matrix)
    try:
        wait_held(lab, 3)
        os.killpg(proc.pid, signal.SIGINT)  # Ctrl-C reaches the whole process group
        proc.wait(timeout=60)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
    err = proc.stderr.read()
    assert proc.returncode == 130, err
    assert held_now(lab) == [], err
    assert_one_job_per_board(lab)


def slow_matrix(lab, tmp_path, project):
    """Three jobs, one per board, whose agents sleep 60 s: every board is held while the test acts."""
    slow = fault_python(sys.executable, "sleep:60")
    return write_matrix(lab, tmp_path, project, ["?soc=k1"], 3, {f"rv-{i}": slow for i in range(3)})


def test_sigterm_of_the_farm_releases_every_board(lab, project, tmp_path):
    """A CI timeout signals the farm process alone: it unwinds like Ctrl-C and stops its workers."""
    proc = start_farm(slow_matrix(lab, tmp_path, project))
    try:
        wait_held(lab, 3)
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=60)
    finally:  # workers left behind (by a farm that died at once) would hold stderr open: end them too
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
    err = proc.stderr.read()
    assert proc.returncode == 143, err
    assert "xqhil: stopped by SIGTERM" in err.splitlines(), err
    assert held_now(lab) == [], err


def test_killed_farm_does_not_keep_its_boards(lab, project, tmp_path):
    proc = start_farm(slow_matrix(lab, tmp_path, project))
    try:
        wait_held(lab, 3)
    finally:
        os.killpg(proc.pid, signal.SIGKILL)  # no finally runs anywhere
        proc.wait(timeout=30)
    assert len(held_now(lab)) == 3
    code, out, err = run_cli(["farm", "status", lab.address])
    assert out.count("(dead: farm sweep releases it)") == 3, out
    code, out, err = run_cli(["farm", "status", lab.address, "--sweep"])
    assert code == 0 and out.count("released rv-") == 3, out
    assert held_now(lab) == []


@pytest.mark.parametrize("text, what", [
    ('coordinator = "127.0.0.1:1"\nboards = ["rv-0"]\nmodles = []\n', "unknown key(s) modles"),
    ('coordinator = "127.0.0.1:1"\nboards = ["rv-0"]\n[[models]]\nconfig = "missing.json"\n', "missing.json"),
    ('coordinator = "127.0.0.1:1"\nboards = ["?Soc=k1"]\n[[models]]\nconfig = "cfg.json"\n', "tag filter"),
    ('boards = ["rv-0"]\n[[models]]\nconfig = "cfg.json"\n', "coordinator"),
    ('coordinator = "127.0.0.1:1"\nboards = ["rv-0"]\nrepeat = 0\n[[models]]\nconfig = "cfg.json"\n', "repeat"),
    ('coordinator = "127.0.0.1:1"\nboards = ["rv-0"]\n[[models]]\nconfig = "cfg.json"\n[board]\naddress = "x"\n',
     "without kind/address"),
])
def test_bad_matrix_is_one_line_bad_input(text, what, project, tmp_path):
    matrix = project.parent / "matrix.toml"
    matrix.write_text(text)
    code, out, err = run_cli(["farm", "run", str(matrix)])
    assert code == 2 and what in err and err.count("\n") == 1, err


def test_a_place_held_by_someone_else_is_skipped_not_quarantined(lab, project, tmp_path):
    env = dict(os.environ, LG_COORDINATOR=lab.address)
    subprocess.run([str(Path(sys.executable).parent / "labgrid-client"), "-p", "rv-0", "acquire"], env=env,
                   check=True, capture_output=True, timeout=60)
    matrix = write_matrix(lab, tmp_path, project, ["?soc=k1"], 3)
    code, out, err = run_cli(["farm", "run", str(matrix), "--json"])
    summary = json.loads(out)
    assert code == 0, err
    assert {j["status"] for j in summary["jobs"]} == {"pass"} and len(summary["jobs"]) == 3
    assert "rv-0" not in {a["place"] for a in summary["attempts"]} and summary["quarantined"] == {}
    assert held_now(lab) == ["rv-0"]  # still the other user's
    assert_one_job_per_board(lab)
