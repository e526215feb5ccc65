"""One farm worker process per place: its own labgrid session (labgrid allows one per process).

A job runs on a *lease*: one acquisition of the place, probed (agent start + fingerprint) right after the
acquire. With ``probe = "lease"`` (the default) the lease carries on over the worker's next jobs while the
scheduler has more for it, and ends (release) when the scheduler says so, after an infrastructure failure,
or when the worker stops; with ``probe = "each-job"`` every job gets its own acquire, probe and release.
SIGTERM and SIGINT unwind through ``finally`` blocks, so a stopped job does not keep its board."""
from __future__ import annotations

import logging
import os
import time
from typing import Any, Dict, Optional

from xquant.cli_support import Stopped, stop_signals

from ..errors import EXIT_BAD_INPUT, EXIT_FAILED, EXIT_INFRA, EXIT_OK, BadInput, XqhilError
from ..transport import Deadlines

log = logging.getLogger(__name__)
RELEASE = "release"  # scheduler -> worker: end the lease (no job for this place now)


def worker_main(coordinator: str, place: str, template, settings: Dict[str, Any], jobs, results) -> None:
    try:
        with stop_signals():  # the CLI's own SIGTERM path: unwind like Ctrl-C
            _serve(coordinator, place, template, settings, jobs, results)
    except Stopped as exc:
        raise SystemExit(exc.exit_code) from None  # the process's exit code, without a traceback


def _serve(coordinator: str, place: str, template, settings: Dict[str, Any], jobs, results) -> None:
    logging.basicConfig(level=logging.WARNING, format=f"xqhil farm [{place}]: %(message)s")
    from .coordinator import Coordinator

    try:
        coord = Coordinator(coordinator)
    except XqhilError as exc:
        results.put(("dead", place, os.getpid(), exc.one_line()))
        return
    lease = Lease(coord, place, template, settings, results)
    try:
        if settings.get("probe") != "each-job":
            lease.open_early()  # while the scheduler computes the PC side: the first job finds its board probed
        results.put(("ready", place, os.getpid(), {"held": lease.held}))
        while True:
            job = jobs.get()
            if job is None:
                return
            if job == RELEASE:
                lease.end()
                continue
            result = run_job(lease, job)
            if settings.get("probe") == "each-job" or result["exit"] == EXIT_INFRA:
                lease.end()  # a board that failed is acquired and probed afresh before its next job
            results.put(("done", place, os.getpid(), {**result, "held": lease.held}))
    finally:
        lease.end()
        coord.close()


class Lease:
    """The place acquired and probed once, for one or more jobs; ``end`` releases it and reports its timings."""

    def __init__(self, coord, place: str, template, settings: Dict[str, Any], results) -> None:
        self.coord, self.place, self.template, self.settings, self.results = coord, place, template, settings, results
        self.held = False
        self.spec = None
        self.agent = None  # the AgentLease: connection and running agent, reused by the lease's jobs
        self.hosts: Dict[str, Any] = {}  # PC sides (verify.HostSide) by key, kept across leases
        self.fingerprint: Dict[str, Any] = {}
        self.info: Dict[str, Any] = {}
        self.count = 0
        self.early: Optional[Dict[str, Any]] = None  # what open_early found, for the first job to report

    def open_early(self) -> None:
        """Acquire and probe before the first job comes. A failure is kept (the board released) and becomes
        the first job's result, as if that job had started the lease: retries and quarantine see it as before."""
        self.early = {"timings": {"acquire_s": 0.0, "probe_s": 0.0}}
        failed = self.start(self.early)
        if failed is not None:
            self.early = failed
            self.end()

    def host_side(self, job: Dict[str, Any]):
        """The job's PC side: sent with the first job of its key, kept for the next ones (None: compute it)."""
        if job.get("host") is not None:
            self.hosts[job["host_key"]] = job["host"]
        return self.hosts.get(job.get("host_key"))

    def deadlines(self) -> Deadlines:
        return Deadlines(connect=self.settings["connect_timeout"], run=self.settings["step_timeout"])

    def start(self, result: Dict[str, Any]) -> Optional[Dict[str, Any]]:
        """Acquire and probe (start the lease's agent: its fingerprint); None when the lease is ready, else the
        job's failure result."""
        from ..session_lease import AgentLease
        from .health import fingerprint
        from .provider import spec_for

        self.count += 1
        self.info = {"lease": self.count, "place": self.place, "jobs": 0}
        t0 = time.perf_counter()
        try:
            self.coord.acquire(self.place)
        except XqhilError as exc:
            return {**result, "status": "acquire", "exit": EXIT_INFRA, "message": exc.one_line()}
        self.held = True
        t1 = time.perf_counter()
        try:
            self.spec = spec_for(self.place, self.coord.endpoint(self.place), self.template)
            self.info["acquire_s"] = round(t1 - t0, 4)
            result["board"] = self.spec.public()
            self.agent = AgentLease(self.spec, self.deadlines(), self.settings["retries"])
            self.fingerprint = fingerprint(self.agent.start())
            return None
        except XqhilError as exc:
            return {**result, "status": "probe", "exit": EXIT_INFRA, "message": exc.one_line()}
        finally:
            self.info["probe_s"] = round(time.perf_counter() - t1, 4)
            result["timings"].update({k: self.info[k] for k in ("acquire_s", "probe_s") if k in self.info})

    def end(self) -> None:
        if not self.held:
            return
        self.held = False
        if self.early is not None and "status" not in self.early:
            self.early = None  # an early lease ended before any job used it
        t = time.perf_counter()
        if self.agent is not None:
            self.agent.close()
            self.agent = None
        self.info["stop_s"] = round(time.perf_counter() - t, 4)
        t = time.perf_counter()
        try:
            self.coord.release(self.place)
        except XqhilError as exc:
            log.warning("%s", exc.one_line())
        self.info["release_s"] = round(time.perf_counter() - t, 4)
        try:
            self.results.put(("lease", self.place, os.getpid(), dict(self.info)))
        except (OSError, ValueError):  # the scheduler is gone (killed): the place is released all the same
            pass


def _exit_of(exc: BaseException) -> int:
    if isinstance(exc, BadInput):
        return EXIT_BAD_INPUT
    return EXIT_INFRA


def run_job(lease: Lease, job: Dict[str, Any]) -> Dict[str, Any]:
    """The job on the lease's board (starting the lease first when none is held)."""
    result: Dict[str, Any] = {"job": job["index"], "attempt": job["attempt"], "place": lease.place,
                              "timings": {"acquire_s": 0.0, "probe_s": 0.0}}
    early, lease.early = lease.early, None
    if early is not None:  # the lease was started (or failed to start) before this job came
        result["timings"].update(early["timings"])
        if "status" in early:
            return {**early, **{k: result[k] for k in ("job", "attempt", "place")}}
    if not lease.held:
        failed = lease.start(result)
        if failed is not None:
            return failed
    result["board"] = lease.spec.public()
    result["fingerprint"] = lease.fingerprint
    result["lease"] = lease.count
    lease.info["jobs"] += 1
    try:
        return {**result, **_verify(lease, job)}
    except XqhilError as exc:
        return {**result, "status": "infra" if _exit_of(exc) == EXIT_INFRA else "bad-input",
                "exit": _exit_of(exc), "message": exc.one_line()}
    except Exception as exc:  # an internal error is reported with the job, the farm goes on
        log.exception("job %s on %s", job["index"], lease.place)
        return {**result, "status": "infra", "exit": EXIT_INFRA, "message": f"internal error: {exc!r}"}


def _verify(lease: Lease, job: Dict[str, Any]) -> Dict[str, Any]:
    from xquant.errors import XQuantError

    from ..verify import VerifyOptions, quantize_and_verify

    t = time.perf_counter()
    host = lease.host_side(job)
    opts = VerifyOptions(config=job["config"], board=lease.spec, qmodel=job["qmodel"], out=job["out"],
                         deadlines=lease.deadlines(), retries=lease.settings["retries"], quiet=True,
                         threads=job["threads"], providers=job["providers"], session=lease.agent, host=host)
    try:
        report = quantize_and_verify(opts)
    except XQuantError as exc:
        return {"status": "bad-input", "exit": EXIT_BAD_INPUT, "message": exc.one_line()}
    verdict = report["verdict"]
    return {"status": verdict, "exit": EXIT_FAILED if verdict == "fail" else EXIT_OK,
            "message": "; ".join(report["reasons"]), "report": os.path.join(job["out"], "verify.json"),
            "run_s": round(time.perf_counter() - t, 3), "pc_side": "shared" if host is not None else "own"}
