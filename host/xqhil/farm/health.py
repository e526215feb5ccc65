"""Board health in the farm: the probe after acquire, quarantine tags, the sweeper, and the status table."""
from __future__ import annotations

import logging
import os
from typing import Dict, List

from ..boards.spec import BoardSpec
from ..errors import XqhilError
from ..transport import Deadlines
from .coordinator import QUARANTINE_TAG, Coordinator, holder_pid

log = logging.getLogger(__name__)


def probe_board(spec: BoardSpec, deadlines: Deadlines, retries: int) -> Dict[str, object]:
    """Agent start and device fingerprint; raises the harness's errors (a board that fails is not used)."""
    from ..runone import probe

    return probe(spec, deadlines, retries)


def fingerprint(probed: Dict[str, object]) -> Dict[str, object]:
    device = dict(probed.get("device") or {})
    keep = ("arch", "cpu", "os", "python", "numpy", "onnxruntime", "providers", "emulated")
    return {k: device[k] for k in keep if k in device} | {"agent_version": probed.get("agent_version")}


def quarantine(coord: Coordinator, place: str, reason: str) -> None:
    """Tag ``place`` out of the pool (shown by ``farm status``) until ``farm check`` passes."""
    coord.set_tags(place, {QUARANTINE_TAG: reason})
    log.warning("board %s quarantined: %s", place, reason)


def unquarantine(coord: Coordinator, place: str) -> None:
    coord.set_tags(place, {QUARANTINE_TAG: ""})


def pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:  # a zombie (killed, not yet reaped) is dead too
        with open(f"/proc/{pid}/stat", encoding="ascii", errors="replace") as handle:
            return handle.read().rpartition(")")[2].split()[0] != "Z"
    except (OSError, IndexError):
        return True


def sweep(coord: Coordinator) -> List[str]:
    """Release places held by xqhil job processes of this host that no longer run. Returns their names."""
    freed = []
    for name, place in coord.places().items():
        pid = holder_pid(place.acquired or "")
        if pid is not None and not pid_alive(pid):
            coord.release(name, holder=place.acquired)
            log.warning("released place %s held by dead job process %d", name, pid)
            freed.append(name)
    return freed


def status_rows(coord: Coordinator) -> List[Dict[str, str]]:
    rows = []
    for name, place in coord.places().items():
        pid = holder_pid(place.acquired or "")
        holder = place.acquired or "-"
        if pid is not None and not pid_alive(pid):
            holder += " (dead: farm sweep releases it)"
        tags = ",".join(f"{k}={v}" for k, v in sorted(place.tags.items()) if k != QUARANTINE_TAG)
        rows.append({"place": name, "tags": tags or "-", "held by": holder,
                     "health": f"quarantined: {place.quarantined}" if place.quarantined else "ok"})
    return rows


def format_rows(rows: List[Dict[str, str]]) -> str:
    if not rows:
        return "no places"
    keys = list(rows[0])
    widths = {k: max(len(k), *(len(r[k]) for r in rows)) for k in keys}
    lines = ["  ".join(k.ljust(widths[k]) for k in keys)]
    lines += ["  ".join(r[k].ljust(widths[k]) for k in keys) for r in rows]
    return "\n".join(lines)


def check_places(coord: Coordinator, places: List[str], template_for, deadlines: Deadlines,
                 retries: int) -> Dict[str, str]:
    """Acquire, probe and release each place; lift the quarantine of those that pass. place -> outcome."""
    from .provider import spec_for

    outcome = {}
    for name in places:
        coord.acquire(name)
        try:
            probe_board(spec_for(name, coord.endpoint(name), template_for(name)), deadlines, retries)
            if coord.place(name).quarantined:
                unquarantine(coord, name)
            outcome[name] = "ok"
        except XqhilError as exc:
            outcome[name] = f"failed: {exc.one_line()}"
        finally:
            coord.release(name)
    return outcome
