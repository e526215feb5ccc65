"""The farm scheduler: matrix jobs onto labgrid places, one worker process per place (never two jobs on one
board: each job acquires its place at the coordinator), retries by error class, quarantine, history.

Error classes: exit 3 (infrastructure: acquire, probe, connection, agent killed) is retried, at most
``retries`` times and on another matching board where there is one; exit 1 (a verification failure, maybe a
chip bug) and exit 2 (bad input) are final. A board with ``quarantine_after`` consecutive infrastructure
failures is tagged out of the pool. A probe failure does not use up a job's retries (the job never ran)."""
from __future__ import annotations

import json
import logging
import multiprocessing
import os
import queue
import sys
import time
from collections import deque
from dataclasses import dataclass, field
from typing import Any, Deque, Dict, List, Optional

from ..errors import EXIT_BAD_INPUT, EXIT_FAILED, EXIT_INFRA, EXIT_OK, HilError
from .coordinator import Coordinator
from .health import quarantine, sweep
from .matrix import Job, Matrix
from .prepare import Shared, host_key, prepare, quantize
from .records import record_infra, record_report
from .worker import RELEASE

log = logging.getLogger(__name__)
DRAIN_WAIT = 0.02  # s: reading the joined workers' last messages
# imported once by the workers' fork server (labgrid's client and grpc start no thread on import: safe to fork)
WORKER_MODULES = ["xqhil.farm.worker", "xqhil.verify", "xqhil.session_lease", "xqhil.farm.coordinator",
                  "labgrid.remote.client", "labgrid.remote.generated.labgrid_coordinator_pb2"]


def stop_forkserver() -> None:
    """Stop the workers' fork server and reap it, so the farm leaves no process behind and its CPU time
    counts as the farm's (multiprocessing has no public call for this; without one the server ends with us)."""
    from multiprocessing import forkserver

    stop = getattr(getattr(forkserver, "_forkserver", None), "_stop", None)
    if stop is not None:
        stop()


@dataclass
class Worker:
    place: str
    proc: Any
    jobs: Any
    ready: bool = False
    busy: Optional[int] = None  # job index
    pid: Optional[int] = None
    holding: bool = False  # idle but still holding its place (a lease kept for the next job)


@dataclass
class State:
    pending: Deque[Job]
    attempts: Dict[int, int] = field(default_factory=dict)
    failed_on: Dict[int, set] = field(default_factory=dict)
    final: Dict[int, Dict[str, Any]] = field(default_factory=dict)
    history: List[Dict[str, Any]] = field(default_factory=list)  # every attempt
    infra_streak: Dict[str, int] = field(default_factory=dict)
    quarantined: Dict[str, str] = field(default_factory=dict)
    acquire_failures: Dict[str, int] = field(default_factory=dict)
    leases: List[Dict[str, Any]] = field(default_factory=list)  # acquire/probe/release timings per lease


class Farm:
    def __init__(self, matrix: Matrix, settings: Dict[str, Any], db: Optional[str], quiet: bool = False) -> None:
        self.m, self.settings, self.db, self.quiet = matrix, settings, db, quiet
        self.state = State(deque(matrix.jobs))
        self.workers: Dict[str, Worker] = {}
        # grpc sessions do not survive fork: workers fork from a fresh server process that imported the
        # harness once (not once per worker, as spawn would: ~1.5 s of CPU each)
        self.ctx = multiprocessing.get_context("forkserver")
        self.ctx.set_forkserver_preload(WORKER_MODULES)
        self.results = self.ctx.Queue()
        self.bar = None
        self.started = time.perf_counter()
        self.timeline: Dict[str, float] = {}  # seconds from the farm's start to each first event
        self.shared = Shared()
        self.sent: Dict[str, set] = {}  # place -> PC side keys its worker has

    # ------------------------------------------------------------------ setup
    def _eligible(self, coord: Coordinator) -> List[str]:
        places = coord.places()
        names = [n for n, p in places.items() if any(j.board.matches(n, p.tags) for j in self.m.jobs)]
        for name in names:
            if places[name].quarantined:
                self.state.quarantined[name] = places[name].quarantined
        return [n for n in names if n not in self.state.quarantined]

    def _start_workers(self, places: List[str]) -> None:
        from .worker import worker_main

        for place in places:
            jobs = self.ctx.Queue()
            proc = self.ctx.Process(target=worker_main, name=f"xqhil-farm-{place}", daemon=True,
                                    args=(self.m.coordinator, place, self.m.spec_template(place), self.settings,
                                          jobs, self.results))
            proc.start()
            self.workers[place] = Worker(place, proc, jobs)

    # ------------------------------------------------------------------ dispatch
    def _usable(self, place: str) -> bool:
        w = self.workers.get(place)
        return w is not None and place not in self.state.quarantined and w.proc.is_alive()

    def _pick(self, place: str, tags: Dict[str, Dict[str, str]]) -> Optional[Job]:
        for job in self.state.pending:
            if not job.board.matches(place, tags.get(place, {})):
                continue
            failed = self.state.failed_on.get(job.index, set())
            others = [p for p in self.workers if p != place and self._usable(p) and p not in failed
                      and job.board.matches(p, tags.get(p, {}))]
            if place in failed and others:
                continue  # retry on another board where one matches
            return job
        return None

    def _dispatch(self, tags: Dict[str, Dict[str, str]], taken: set) -> None:
        for place, w in sorted(self.workers.items()):
            if not w.ready or w.busy is not None or not self._usable(place) or (place in taken and not w.holding):
                continue  # a place someone else holds or reserved is skipped, not counted against the board
            job = self._pick(place, tags)
            if job is None:
                if w.holding:  # nothing for this board now: end its lease, so others can have it
                    w.jobs.put(RELEASE)
                    w.holding = False
                continue
            self.state.pending.remove(job)
            attempt = self.state.attempts.get(job.index, 0) + 1
            self.state.attempts[job.index] = attempt
            out = os.path.join(self.m.out, f"job{job.index:03d}-a{attempt}")
            w.busy = job.index
            key = host_key(self.m, job, place)
            host = self.shared.hosts.get(key) if key not in self.sent.setdefault(place, set()) else None
            if host is not None:
                self.sent[place].add(key)
            w.jobs.put({"index": job.index, "attempt": attempt, "config": job.model,
                        "qmodel": self.shared.qmodels[job.model], "threads": job.threads,
                        "providers": list(job.providers) if job.providers else None,
                        "out": out, "host_key": key, "host": host})
            self._mark("first_job")
            self._say(f"start {job.label} on {place} (attempt {attempt})")

    def _strand(self, tags: Dict[str, Dict[str, str]]) -> None:
        """Jobs no usable board can take end as infrastructure failures (nothing lost, nothing waits forever)."""
        for job in list(self.state.pending):
            if not any(self._usable(p) and job.board.matches(p, tags.get(p, {})) for p in self.workers):
                self.state.pending.remove(job)
                last = next((h for h in reversed(self.state.history) if h["job"] == job.index), None)
                why = "no usable board matches " + job.board.text()
                self._finish(job, {"job": job.index, "status": "no-board", "exit": EXIT_INFRA,
                                   "message": why + (f"; last error: {last['message']}" if last else "")})

    # ------------------------------------------------------------------ results
    def _mark(self, event: str) -> None:
        self.timeline.setdefault(event, round(time.perf_counter() - self.started, 3))

    def _job(self, index: int) -> Job:
        return self.m.jobs[index - 1]

    def _finish(self, job: Job, result: Dict[str, Any]) -> None:
        self.state.final[job.index] = result
        if self.bar is not None:
            self.bar.update(1)
        done = len(self.state.final)
        if done == len(self.m.jobs):
            self._mark("last_job")
        self._say(f"end   {job.label} on {result.get('place', '-')}: {result['status']} "
                  f"[{done}/{len(self.m.jobs)}] {result.get('message', '')[:160]}")

    def _handle(self, place: str, result: Dict[str, Any]) -> None:
        w = self.workers[place]
        w.busy = None
        w.holding = bool(result.pop("held", False))
        job = self._job(result["job"])
        self.state.history.append(result)
        if result.get("report"):
            record_report(result, self.db, place in self.state.quarantined)
        if result["status"] == "acquire":  # taken by someone else meanwhile: not the board's fault
            self.state.attempts[job.index] -= 1
            self.state.pending.appendleft(job)
            self.state.acquire_failures[place] = self.state.acquire_failures.get(place, 0) + 1
            if self.state.acquire_failures[place] >= 3:
                log.warning("place %s: 3 acquires failed (%s); not used in this run", place, result["message"])
                w.jobs.put(None)
            return
        self.state.acquire_failures[place] = 0
        if result["exit"] != EXIT_INFRA:
            self.state.infra_streak[place] = 0
            self._finish(job, result)
            return
        streak = self.state.infra_streak[place] = self.state.infra_streak.get(place, 0) + 1
        self.state.failed_on.setdefault(job.index, set()).add(place)
        if streak >= self.m.quarantine_after and place not in self.state.quarantined:
            reason = f"infra_{streak}_in_a_row"
            self.state.quarantined[place] = reason
            quarantine(self.coord, place, reason)
            w.jobs.put(None)
        record_infra(result, self.shared.models[job.model], self.db, place in self.state.quarantined)
        self._say(f"      {job.label} on {place}: {result['status']} (infrastructure) {result['message'][:160]}")
        if result["status"] == "probe":
            self.state.attempts[job.index] -= 1  # the job never ran
        if self.state.attempts[job.index] <= self.m.retries:
            self.state.pending.appendleft(job)
        else:
            self._finish(job, result)

    def _lost(self) -> None:
        """A worker that died mid-job: its job is an infrastructure failure, its place is swept."""
        for place, w in self.workers.items():
            if w.busy is not None and not w.proc.is_alive():
                job_index, w.holding = w.busy, False
                self._handle(place, {"job": job_index, "attempt": self.state.attempts[job_index], "place": place,
                                     "status": "worker-died", "exit": EXIT_INFRA,
                                     "message": f"the job process exited with {w.proc.exitcode}"})
                sweep(self.coord)

    # ------------------------------------------------------------------ main loop
    def _say(self, text: str) -> None:
        if self.bar is not None:
            self.bar.write(f"xqhil farm: {text}", file=sys.stderr)
        elif not self.quiet:
            print(f"xqhil farm: {text}", file=sys.stderr, flush=True)

    def _prepare(self, tags: Dict[str, Dict[str, str]]) -> None:
        """Quantizing and the PC references, once for the whole matrix (prepare.py), while workers start."""
        pairs = [(job, p) for job in self.m.jobs for p in self.workers if job.board.matches(p, tags.get(p, {}))]
        prepare(self.m, pairs, self.shared)

    def run(self) -> Dict[str, Any]:
        from multiprocessing import forkserver

        forkserver.ensure_running()  # the workers' server imports the harness while we quantize
        try:
            return self._run()
        finally:
            stop_forkserver()

    def _run(self) -> Dict[str, Any]:
        for job in self.m.jobs:  # a model that cannot be quantized is bad input before any board is held
            quantize(self.shared, job)
        self._mark("quantized")
        with Coordinator(self.m.coordinator) as coord:
            self.coord = coord
            sweep(coord)
            places = self._eligible(coord)
            if not places:
                raise HilError(f"no usable labgrid place on {self.m.coordinator} matches the matrix's boards "
                               f"(quarantined: {', '.join(self.state.quarantined) or 'none'}).",
                               "Check with 'xqhil farm status'; lift a quarantine with 'xqhil farm check'.")
            if not self.quiet and sys.stderr.isatty():
                from tqdm import tqdm

                self.bar = tqdm(total=len(self.m.jobs), desc="xqhil farm", unit="job", file=sys.stderr)
            try:
                self._start_workers(places)
                self._prepare({n: p.tags for n, p in coord.places().items()})
                self._mark("prepared")
                self._loop(coord)
            finally:
                self._stop_workers()
                if self.bar is not None:
                    self.bar.close()
        return self._summary()

    def _loop(self, coord: Coordinator) -> None:
        while len(self.state.final) < len(self.m.jobs):
            places = coord.places()
            tags = {n: p.tags for n, p in places.items()}
            self._dispatch(tags, {n for n, p in places.items() if p.acquired or p.reservation})
            if all(w.busy is None for w in self.workers.values()) and all(
                    w.ready or not w.proc.is_alive() for w in self.workers.values()):
                self._strand(tags)
            try:
                kind, place, pid, payload = self.results.get(timeout=0.5)
            except queue.Empty:
                self._lost()
                continue
            w = self.workers[place]
            if kind == "ready":
                w.ready, w.pid = True, pid
                w.holding = bool(payload.get("held"))  # its place acquired and probed ahead of its first job
                self._mark("worker_ready")
            elif kind == "lease":
                self.state.leases.append(payload)
            elif kind == "dead":
                log.warning("worker for %s could not start: %s", place, payload)
                w.proc.join(5)
            else:
                self._handle(place, payload)

    def _stop_workers(self) -> None:
        for w in self.workers.values():
            if w.proc.is_alive():
                if w.busy is not None:
                    w.proc.terminate()  # SIGTERM: the job unwinds and releases its place
                else:
                    w.jobs.put(None)
        deadline = time.monotonic() + 20
        for w in self.workers.values():
            w.proc.join(max(0.1, deadline - time.monotonic()))
            if w.proc.is_alive():
                w.proc.kill()
                w.proc.join(5)
        self._drain()
        try:
            sweep(self.coord)  # places of workers that had to be killed
        except HilError as exc:
            log.warning("%s", exc.one_line())

    def _drain(self) -> None:
        """The lease records the stopped workers sent on their way out (their last releases). The workers
        were joined, and a process flushes its queue's buffer before it exits, so what they sent is in the
        pipe already: a short wait (it was 0.2 s, at the end of every run) only covers a worker that was killed."""
        while True:
            try:
                kind, _place, _pid, payload = self.results.get(timeout=DRAIN_WAIT)
            except (queue.Empty, OSError, ValueError, EOFError):
                return
            if kind == "lease":
                self.state.leases.append(payload)

    def _summary(self) -> Dict[str, Any]:
        final = [self.state.final[j.index] | {"label": j.label} for j in self.m.jobs if j.index in self.state.final]
        codes = {r["exit"] for r in final}
        code = next((c for c in (EXIT_FAILED, EXIT_INFRA, EXIT_BAD_INPUT) if c in codes), EXIT_OK)
        summary = {"exit": code, "jobs": final, "attempts": self.state.history, "leases": self.state.leases,
                   "prepared": self.shared.made,
                   "quarantined": self.state.quarantined, "timeline": self.timeline,
                   "wall_s": round(time.perf_counter() - self.started, 3)}
        os.makedirs(self.m.out, exist_ok=True)
        with open(os.path.join(self.m.out, "farm.json"), "w", encoding="utf-8") as handle:
            json.dump(summary, handle, indent=1)
        return summary
