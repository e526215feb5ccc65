"""The board farm on a real labgrid lab on loopback: throughput of a 12-job matrix on 1, 2 and 3 boards,
the farm's own overhead per job (acquire + probe + release), and the time to get back the boards of a
SIGKILLed farm.

    python bench/farm.py [--jobs 12] [--board-seconds 2.0]

Boards are loopback sshd's running the host Python. A real board computes on itself; a loopback board
computes on this machine's CPUs, so by default each board agent start also waits --board-seconds (the fault
``sleep:S``), standing for the time a board spends on its own; with 0 the jobs only compete for local CPUs.
Needs labgrid (pip install 'xqhil[farm]') and /usr/sbin/sshd.
"""
from __future__ import annotations

import argparse
import json
import os
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
    """(busy, total) jiffies of all CPUs from /proc/stat."""
    with open("/proc/stat", encoding="ascii") as handle:
        values = [int(v) for v in handle.readline().split()[1:]]
    idle = values[3] + values[4]  # idle + iowait
    return sum(values) - idle, sum(values)


def run_matrix(lab, matrix: Path, count: int):
    use_boards(lab, count)
    start, cpu0 = time.perf_counter(), cpu_times()
    proc = farm(matrix)
    wall = time.perf_counter() - start
    cpu1 = cpu_times()
    summary_cpu = (cpu1[0] - cpu0[0]) / max(1, cpu1[1] - cpu0[1])
    summary = json.loads(proc.stdout.read())
    bad = [j for j in summary["jobs"] if j["status"] != "pass"]
    if bad:
        raise SystemExit(f"bench: {len(bad)} job(s) did not pass: {bad[0]}")
    summary["cpu_busy"] = summary_cpu
    return wall, summary


def overhead(summary) -> dict:
    """Per job: the acquire, probe and release of every lease (acquisition), summed, over the jobs run."""
    leases, jobs = summary["leases"], len(summary["attempts"])
    per_job = {k: sum(x.get(k, 0.0) for x in leases) / jobs for k in ("acquire_s", "probe_s", "release_s")}
    per_job["total_s"] = sum(per_job.values())
    per_job["leases"] = len(leases)
    per_job["probe_each_s"] = statistics.mean(x.get("probe_s", 0.0) for x in leases)
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


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--jobs", type=int, default=12)
    ap.add_argument("--board-seconds", type=float, default=2.0)
    ap.add_argument("--skip-throughput", action="store_true", help="only the overhead and recovery figures")
    args = ap.parse_args()
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
            project = make_project(folder / "proj")
            python = fault_python(sys.executable, f"sleep:{args.board_seconds}") if args.board_seconds else \
                sys.executable
            matrix = write_matrix(folder, lab, sshds, known, project, args.jobs, python)
            rows, base = [], None
            for count in () if args.skip_throughput else (1, 2, 3):
                wall, summary = run_matrix(lab, matrix, count)
                base = base or wall
                rows.append([count, args.jobs, f"{wall:.1f}", f"{args.jobs / wall:.2f}", f"{base / wall:.2f}x",
                             f"{100 * summary['cpu_busy']:.0f}%", f"{os.getloadavg()[0]:.1f}"])
            if rows:
                print(f"{args.jobs}-job matrix, board time {args.board_seconds:g} s per agent start "
                      f"(wall clock of 'xqhil farm run', incl. one quantization and worker start; CPU busy: "
                      f"all {os.cpu_count()} CPUs of this machine, every process, during the run):")
                print(tabulate(rows, ["boards", "jobs", "wall s", "jobs/s", "speed-up", "CPU busy", "load 1m"],
                               tablefmt="github"))
            rows = []
            for probe in ("each-job", "lease"):
                plain = write_matrix(folder, lab, sshds, known, project, 12, sys.executable, probe)
                o = overhead(run_matrix(lab, plain, 3)[1])
                rows.append([probe, o["leases"], f"{o['probe_each_s']:.3f}"] +
                            [f"{o[k]:.3f}" for k in ("acquire_s", "probe_s", "release_s", "total_s")])
            print("\nfarm overhead per job on loopback (12 jobs on 3 boards, board = host python; the acquire, "
                  "probe and release of every acquisition, over the jobs):")
            print(tabulate(rows, ["probe", "acquisitions", "one probe s", "acquire s/job", "probe s/job",
                                  "release s/job", "total s/job"], tablefmt="github"))
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
