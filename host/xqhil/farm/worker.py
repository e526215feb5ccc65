"""One farm worker process per place: its own labgrid session (labgrid allows one per process). For each job
it acquires the place, probes the board, runs ``quantize_and_verify`` and releases the place in ``finally``.
SIGTERM and SIGINT unwind through those ``finally`` blocks, so a stopped job does not keep its board."""
from __future__ import annotations

import logging
import os
import signal
import time
from typing import Any, Dict

from ..errors import EXIT_BAD_INPUT, EXIT_FAILED, EXIT_INFRA, EXIT_OK, BadInput, XqhilError
from ..transport import Deadlines

log = logging.getLogger(__name__)
_HEALTHY: Dict[str, Dict[str, Any]] = {}  # place -> fingerprint of its last passed probe (probe = "first")


def _stop(signum: int, _frame: Any) -> None:
    raise SystemExit(128 + signum)


def worker_main(coordinator: str, place: str, template, settings: Dict[str, Any], jobs, results) -> None:
    signal.signal(signal.SIGTERM, _stop)
    logging.basicConfig(level=logging.WARNING, format=f"xqhil farm [{place}]: %(message)s")
    from .coordinator import Coordinator

    try:
        coord = Coordinator(coordinator)
    except XqhilError as exc:
        results.put(("dead", place, os.getpid(), exc.one_line()))
        return
    try:
        results.put(("ready", place, os.getpid(), ""))
        while True:
            job = jobs.get()
            if job is None:
                return
            results.put(("done", place, os.getpid(), run_job(coord, place, template, settings, job)))
    finally:
        coord.close()


def _exit_of(exc: BaseException) -> int:
    if isinstance(exc, BadInput):
        return EXIT_BAD_INPUT
    return EXIT_INFRA


def run_job(coord, place: str, template, settings: Dict[str, Any], job: Dict[str, Any]) -> Dict[str, Any]:
    from .health import fingerprint, probe_board
    from .provider import spec_for

    deadlines = Deadlines(connect=settings["connect_timeout"], run=settings["step_timeout"])
    result: Dict[str, Any] = {"job": job["index"], "attempt": job["attempt"], "place": place, "timings": {}}
    t0 = time.perf_counter()
    try:
        coord.acquire(place)
    except XqhilError as exc:
        return {**result, "status": "acquire", "exit": EXIT_INFRA, "message": exc.one_line()}
    try:
        spec = spec_for(place, coord.endpoint(place), template)
        result["timings"]["acquire_s"] = round(time.perf_counter() - t0, 4)
        t1 = time.perf_counter()
        try:
            if settings.get("probe") != "first" or not _HEALTHY.get(place):
                _HEALTHY[place] = fingerprint(probe_board(spec, deadlines, settings["retries"]))
            result["fingerprint"] = _HEALTHY[place]
        except XqhilError as exc:
            return {**result, "status": "probe", "exit": EXIT_INFRA, "message": exc.one_line()}
        finally:
            result["timings"]["probe_s"] = round(time.perf_counter() - t1, 4)
        outcome = _verify(spec, deadlines, settings, job)
        if outcome["exit"] == EXIT_INFRA:
            _HEALTHY.pop(place, None)
        return {**result, **outcome}
    except XqhilError as exc:
        _HEALTHY.pop(place, None)
        return {**result, "status": "infra" if _exit_of(exc) == EXIT_INFRA else "bad-input",
                "exit": _exit_of(exc), "message": exc.one_line()}
    except Exception as exc:  # an internal error is reported with the job, the farm goes on
        log.exception("job %s on %s", job["index"], place)
        return {**result, "status": "infra", "exit": EXIT_INFRA, "message": f"internal error: {exc!r}"}
    finally:
        t2 = time.perf_counter()
        try:
            coord.release(place)
        except XqhilError as exc:
            log.warning("%s", exc.one_line())
        result["timings"]["release_s"] = round(time.perf_counter() - t2, 4)


def _verify(spec, deadlines: Deadlines, settings: Dict[str, Any], job: Dict[str, Any]) -> Dict[str, Any]:
    from xquant.errors import XQuantError

    from ..verify import VerifyOptions, quantize_and_verify

    t = time.perf_counter()
    opts = VerifyOptions(config=job["config"], board=spec, qmodel=job["qmodel"], out=job["out"], deadlines=deadlines,
                         retries=settings["retries"], quiet=True, threads=job["threads"], providers=job["providers"])
    try:
        report = quantize_and_verify(opts)
    except XQuantError as exc:
        return {"status": "bad-input", "exit": EXIT_BAD_INPUT, "message": exc.one_line()}
    verdict = report["verdict"]
    return {"status": verdict, "exit": EXIT_FAILED if verdict == "fail" else EXIT_OK,
            "message": "; ".join(report["reasons"]), "report": os.path.join(job["out"], "verify.json"),
            "run_s": round(time.perf_counter() - t, 3)}
