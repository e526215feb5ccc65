"""The board farm on a real labgrid lab on loopback: throughput of a 12-job matrix on 1, 2 and 3 boards,
the farm's own overhead per job (acquire + probe + release), and the time to get back the boards of a
SIGKILLed farm.

    python bench/farm.py [--jobs 12] [--boards 1,2,3] [--rounds 1] [--min-time 3] [--skip-recovery]

Boards are loopback sshd's running the host Python: a real board computes on itself, a loopback board on
this machine's CPUs. Two things bound the speed-up, and the bench measures both: the serial part of a run
(start until the first job, end after the last; no board count shortens it) and the CPUs (the CPU seconds
of the farm and of the lab per run, over wall and CPUs). --min-time S makes each job time each model for S
seconds on its board (verify_parameters.min_time_s: real inference, for a fixed time, as a real board
spends its own time). The default, 3 s, is the bench matrix: shorter than a real board's verify job (the
agent times each precision for at least min_time_s, 1 s by default, after the accuracy batch), long enough
that the jobs are the boards' time. With 0 the jobs are pure CPU work on this machine's CPUs, which 3
loopback boards share with the farm: that measures the CPU count (2), not the farm.
Needs labgrid (pip install 'xqhil[farm]') and /usr/sbin/sshd.
"""
from __future__ import annotations

import argparse
import json
import os
import resource
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from tabulate import tabulate

REPO = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(REPO / "host"), str(REPO / "tests" / "xqhil")]

from farm_lab import assert_one_job_per_board, start_lab  # noqa: E402
from xqhil_testlib import fault_python, make_project, start_sshd  # noqa: E402

from xqhil.farm.coordinator import Coordinator  # noqa: E402
from xqhil.farm.health import sweep  # noqa: E402


def write_matrix(folder: Path, lab, sshds, known: Path, project: Path, jobs: int, python: str,
                 probe: str = "lease") -> Path:
    remote = folder / "remote"
    remote.mkdir(exist_ok=True)
    text = "\n".join([
        f'coordinator = "{lab.address}"', 'boards = ["?bench=yes"]', f"repeat = {jobs}", f'probe = "{probe}"',
        f'out = "{folder / "out"}"', f'db = "{folder / "history.sqlite3"}"', "[[models]]", f'config = "{project}"',
        "[board]", f"python = {json.dumps(python)}", f'ssh_key = "{sshds[0].key}"', f'known_hosts = "{known}"',
        f'workdir = "{remote}"']) + "\n"
    path = folder / "matrix.toml"
    path.write_text(text)
    return path


def farm(matrix: Path, wait: bool = True) -> subprocess.Popen:
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(sys.path))
    proc = subprocess.Popen([sys.executable, "-m", "xqhil", "farm", "run", str(matrix), "--json", "-q"], env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True)
    if wait:
        proc.wait()
    return proc


def use_boards(lab, count: int) -> None:
    with Coordinator(lab.address) as coord:
        for i in range(3):
            coord.set_tags(f"rv-{i}", {"bench": "yes" if i < count else "no"})


def cpu_times() -> tuple:
    """(busy, total) jiffies of all CPUs from /proc/stat (the whole machine, other sessions too)."""
    with open("/proc/stat", encoding="ascii") as handle:
        values = [int(v) for v in handle.readline().split()[1:]]
    idle = values[3] + values[4]  # idle + iowait
    return sum(values) - idle, sum(values)


def proc_cpu(pid: int) -> float:
    """CPU seconds of process ``pid`` and of its children it has waited for (utime+stime+cutime+cstime)."""
    with open(f"/proc/{pid}/stat", encoding="ascii") as handle:
        fields = handle.read().rpartition(")")[2].split()
    return sum(int(v) for v in fields[11:15]) / os.sysconf("SC_CLK_TCK")


def lab_cpu(lab, sshds) -> float:
    """CPU seconds so far of the lab's own processes: coordinator, exporter, and each sshd with the sessions
    and agents it has reaped (sshd -D waits for its connection processes, they for the agents)."""
    return sum(proc_cpu(p.pid) for p in [lab.coordinator, *lab.exporters, *(s.proc for s in sshds)])


def run_matrix(lab, sshds, matrix: Path, count: int):
    """Run the matrix on ``count`` boards; the summary with the run's wall clock and CPU seconds: of the farm
    (its process tree, from rusage once it is waited for) and of the lab (boards' sshd + agents, labgrid)."""
    use_boards(lab, count)
    farm0, lab0 = resource.getrusage(resource.RUSAGE_CHILDREN), lab_cpu(lab, sshds)
    start, cpu0 = time.perf_counter(), cpu_times()
    proc = farm(matrix)
    wall = time.perf_counter() - start
    cpu1, farm1 = cpu_times(), resource.getrusage(resource.RUSAGE_CHILDREN)
    summary = json.loads(proc.stdout.read())
    bad = [j for j in summary["jobs"] if j["status"] != "pass"]
    if bad:
        raise SystemExit(f"bench: {len(bad)} job(s) did not pass: {bad[0]}")
    summary["wall"] = wall
    summary["machine_busy"] = (cpu1[0] - cpu0[0]) / max(1, cpu1[1] - cpu0[1])
    summary["farm_cpu_s"] = farm1.ru_utime + farm1.ru_stime - farm0.ru_utime - farm0.ru_stime
    summary["lab_cpu_s"] = lab_cpu(lab, sshds) - lab0
    summary["load"] = os.getloadavg()[0]
    return summary


def overhead(summary, boards: int) -> dict:
    """Per job, two ways. ``lease_s``: the acquire, probe and release of every lease, summed, over the jobs.
    ``idle_s``: board-seconds not spent on the jobs' own work, over the jobs: (boards x wall of the whole
    ``xqhil farm run`` command - sum of every attempt's ``run_s``) / jobs, where ``run_s`` is the job on its
    leased board (verify: upload, agent run, fetch, compare, report). It holds everything else: the CLI's
    start, quantizing and the PC references (once per matrix), worker start, acquire, probe, release,
    dispatch and history, and time a board waited for work."""
    leases, jobs = summary["leases"], len(summary["jobs"])
    per_job = {k: sum(x.get(k, 0.0) for x in leases) / jobs for k in ("acquire_s", "probe_s", "stop_s", "release_s")}
    per_job["lease_s"] = sum(per_job.values())
    per_job["leases"] = len(leases)
    per_job["probe_each_s"] = statistics.mean(x.get("probe_s", 0.0) for x in leases)
    work = sum(a.get("run_s", 0.0) for a in summary["attempts"])
    per_job["work_s"] = work / jobs
    per_job["idle_s"] = (boards * summary["wall"] - work) / jobs
    return per_job


def recovery(lab, matrix: Path) -> float:
    """SIGKILL a farm holding every board; seconds from the kill until a sweep has every board free."""
    use_boards(lab, 3)
    proc = farm(matrix, wait=False)
    deadline = time.monotonic() + 120
    with Coordinator(lab.address) as coord:
        while sum(1 for p in coord.places().values() if p.acquired) < 3 and time.monotonic() < deadline:
            time.sleep(0.1)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    killed = time.perf_counter()
    with Coordinator(lab.address) as coord:  # the job processes die a moment after the farm process
        while any(p.acquired for p in coord.places().values()) and time.monotonic() < deadline:
            sweep(coord)
            time.sleep(0.05)
        if any(p.acquired for p in coord.places().values()):
            raise SystemExit("bench: the sweeper did not free every board")
    return time.perf_counter() - killed


def serial_s(run) -> float:
    """The part of a run no board count shortens: from the command's start to the first job's dispatch
    (CLI start, quantizing, PC side, workers), and from the last job's end to the command's exit."""
    timeline = run.get("timeline") or {}
    if "first_job" not in timeline or "last_job" not in timeline:
        return float("nan")  # a farm from before the timeline
    cli = run["wall"] - run["wall_s"]
    return cli + timeline["first_job"] + (run["wall_s"] - timeline["last_job"])


def throughput_rows(runs):
    """One row per run: wall clock, speed-up over the mean 1-board wall and its bound, CPU seconds and use."""
    ones = [r for b, r in runs if b == 1]
    base = statistics.mean(r["wall"] for r in ones)
    serial = statistics.mean(serial_s(r) for r in ones)
    cores = os.cpu_count() or 1
    rows = []
    for boards, r in runs:
        cpu = r["farm_cpu_s"] + r["lab_cpu_s"]
        rows.append([boards, f"{r['wall']:.1f}", f"{base / r['wall']:.2f}x", f"{serial_s(r):.1f}",
                     f"{base / (serial + (base - serial) / boards):.2f}x", f"{r['farm_cpu_s']:.1f}",
                     f"{r['lab_cpu_s']:.1f}", f"{cpu / r['wall'] / cores:.0%}", f"{r['machine_busy']:.0%}",
                     f"{r['load']:.1f}"])
    return rows


def overhead_rows(runs):
    rows = []
    for boards, r in runs:
        o = overhead(r, boards)
        rows.append([boards, o["leases"], f"{o['probe_each_s']:.2f}", f"{o['work_s']:.2f}", f"{o['lease_s']:.3f}",
                     f"{o['idle_s']:.2f}", f"{r['load']:.1f}"])
    return rows


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--jobs", type=int, default=12)
    ap.add_argument("--boards", default="1,2,3", help="board counts to run, in this order, each round")
    ap.add_argument("--rounds", type=int, default=1, help="repeat the board counts (side by side in time)")
    ap.add_argument("--min-time", type=float, default=3.0,
                    help="verify_parameters.min_time_s of the model: each board times each model this long (real "
                         "inference on the board, as a real board spends its own time; 0: the jobs are pure CPU)")
    ap.add_argument("--skip-recovery", action="store_true")
    args = ap.parse_args()
    counts = [int(c) for c in args.boards.split(",")]
    with tempfile.TemporaryDirectory(prefix="xqhil-bench-farm-") as tmp:
        folder = Path(tmp)
        lab = start_lab(folder / "lab")
        sshds = []
        try:
            for i in range(3):
                (folder / f"b{i}").mkdir()
                sshds.append(start_sshd(folder / f"b{i}"))
            for s in sshds[1:]:
                (s.folder / "authorized_keys").write_text((sshds[0].folder / "userkey.pub").read_text())
            known = folder / "known_hosts"
            known.write_text("".join(s.known_hosts.read_text() for s in sshds))
            lab.start_exporter("exp", {f"rv{i}": ("127.0.0.1", s.port, s.user) for i, s in enumerate(sshds)})
            for i in range(3):
                lab.add_place(f"rv-{i}", f"exp/rv{i}/NetworkService/*", {"soc": "k1"})
            lab.wait_resources(3)
            project = make_project(folder / "proj", verify={"min_time_s": args.min_time})
            matrix = write_matrix(folder, lab, sshds, known, project, args.jobs, sys.executable)
            runs = [(count, run_matrix(lab, sshds, matrix, count)) for _ in range(args.rounds) for count in counts]
            print(f"{args.jobs}-job matrix (min_time_s {args.min_time:g}) on loopback boards (sshd + the host "
                  f"Python: a board's work runs on this machine's {os.cpu_count()} CPUs). wall: the whole 'xqhil "
                  "farm run' command; serial: its start until the first job and its end after the last; bound: "
                  "the 1-board wall with the rest divided by the boards; farm/lab CPU: CPU seconds of the "
                  "farm's process tree and of the lab (sshd sessions + agents, labgrid); CPU used: (farm + lab) "
                  "/ wall / CPUs; machine busy: every process (other sessions too):")
            print(tabulate(throughput_rows(runs),
                           ["boards", "wall s", "speed-up", "serial s", "bound", "farm CPU s", "lab CPU s",
                            "CPU used", "machine busy", "load 1m"], tablefmt="github"))
            one = next(r for b, r in runs if b == 1)
            marks = ", ".join(f"{k} {v:.1f}" for k, v in sorted(one.get("timeline", {}).items(), key=lambda kv: kv[1]))
            print(f"\nserial part of the first 1-board run: the CLI's start {one['wall'] - one['wall_s']:.1f} s, then "
                  f"(s from the farm's start) {marks}, exit {one['wall_s']:.1f}")
            print("\nper job: work = the job on its leased board (run_s: upload, agent run, fetch, compare, "
                  "report); lease = acquire + probe + agent stop + release, summed over the leases; idle = "
                  "(boards x wall - sum of work) / jobs:")
            print(tabulate(overhead_rows(runs), ["boards", "leases", "one probe s", "work s/job", "lease s/job",
                                                 "idle s/job", "load 1m"], tablefmt="github"))
            if not args.skip_recovery:
                slow = write_matrix(folder, lab, sshds, known, project, 3, fault_python(sys.executable, "sleep:60"))
                print(f"\nrecovery after SIGKILL of a farm holding 3 boards: {recovery(lab, slow):.2f} s "
                      "(kill -> every board free through the sweeper)")
            print(f"\n{assert_one_job_per_board(lab)} acquisitions in all, never two at once on one board "
                  "(from the coordinator's log)")
        finally:
            for s in sshds:
                s.stop()
            lab.stop()


if __name__ == "__main__":
    main()
