"""A small client of a labgrid coordinator (labgrid >= 24, gRPC): places, acquire/release, reservations, tags.

labgrid allows one client session per process, so the scheduler runs each job in its own process. Each
session names itself ``HOST-pidPID/USER``: the coordinator's ``acquired`` field then says which process holds
a place, and the sweeper can release places whose process is gone."""
from __future__ import annotations

import asyncio
import getpass
import logging
import os
import socket
import time
from dataclasses import dataclass
from typing import Dict, List, Optional, Tuple

from ..errors import BadInput, HilError

log = logging.getLogger(__name__)
QUARANTINE_TAG = "xqhil_quarantine"


def labgrid_missing() -> HilError:
    return HilError("labgrid is not installed.", "Install the farm extra: pip install 'xqhil[farm]'.", step="acquire")


def holder_name() -> str:
    return f"{socket.gethostname()}-pid{os.getpid()}"


def holder_pid(acquired: str) -> Optional[int]:
    """The pid of a holder named by ``holder_name`` on this host, else None."""
    host, _, _ = (acquired or "").partition("/")
    prefix = f"{socket.gethostname()}-pid"
    if host.startswith(prefix) and host[len(prefix):].isdigit():
        return int(host[len(prefix):])
    return None


@dataclass(frozen=True)
class PlaceInfo:
    name: str
    tags: Dict[str, str]
    acquired: Optional[str]
    comment: str = ""
    reservation: Optional[str] = None

    @property
    def quarantined(self) -> Optional[str]:
        return self.tags.get(QUARANTINE_TAG)


@dataclass(frozen=True)
class Endpoint:
    host: str
    port: int
    user: str


class Coordinator:
    """One session with the coordinator at ``address`` (HOST:PORT). Use as a context manager."""

    def __init__(self, address: str, connect_timeout: float = 10.0) -> None:
        try:
            from labgrid.remote import client as lgclient
            from labgrid.remote.generated import labgrid_coordinator_pb2 as pb2
        except ImportError:
            raise labgrid_missing() from None
        self.pb2 = pb2
        self.address = address
        # one loop per process, kept open: grpc.aio binds channels to the current loop and its poller still
        # calls into the loop after a channel is closed
        self.loop = lgclient.ensure_event_loop()

        class Session(lgclient.ClientSession):
            def gethostname(self) -> str:
                return holder_name()

            def getuser(self) -> str:
                return getpass.getuser()

        self.session = Session(address, self.loop)
        try:
            self.loop.run_until_complete(asyncio.wait_for(self.session.start(), connect_timeout))
        except Exception as exc:  # grpc/labgrid raise several types for an unreachable coordinator
            self.close()
            raise HilError(f"cannot reach the labgrid coordinator at {address}: {exc or type(exc).__name__}.",
                           "Check that labgrid-coordinator runs there (labgrid-coordinator -l HOST:PORT).",
                           step="acquire") from None

    def __enter__(self) -> "Coordinator":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        try:
            if getattr(self.session, "pump_task", None) is not None:
                self.loop.run_until_complete(self.session.stop())
            self.loop.run_until_complete(self.session.close())
        except Exception:  # closing must not hide the real error
            pass

    def _rpc(self, name: str, request, what: str):
        import grpc

        try:
            response = self.loop.run_until_complete(getattr(self.session.stub, name)(request))
            self.loop.run_until_complete(self.session.sync_with_coordinator())
            return response
        except grpc.aio.AioRpcError as exc:
            raise HilError(f"{what} on {self.address}: {exc.details()}", step="acquire") from None

    # ------------------------------------------------------------------ reading
    def places(self) -> Dict[str, PlaceInfo]:
        """The places as the coordinator has them now (the session's view is brought up to date first)."""
        self.loop.run_until_complete(self.session.sync_with_coordinator())
        return {name: PlaceInfo(name, dict(p.tags), p.acquired, p.comment or "", p.reservation or None)
                for name, p in sorted(self.session.places.items())}

    def place(self, name: str) -> PlaceInfo:
        places = self.places()
        if name not in places:
            raise BadInput(f"labgrid place {name!r} does not exist on {self.address}.",
                           f"Known places: {', '.join(places) or 'none'}.")
        return places[name]

    def endpoint(self, name: str) -> Endpoint:
        """The NetworkService of the acquired place ``name`` (an acquire can succeed with none: exporter down)."""
        place = self.session.places[name]
        found: List[Tuple[str, dict]] = []
        for path in place.acquired_resources:
            exporter, group, cls, res_name = path
            resource = self.session.resources.get(exporter, {}).get(group, {}).get(res_name)
            if resource is not None and cls == "NetworkService" and resource.avail:
                found.append((res_name, dict(resource.args)))
        if len(found) != 1:
            have = len(place.acquired_resources)
            raise HilError(f"labgrid place {name!r} was acquired with {have} resource(s) and {len(found)} available "
                           "NetworkService(s); one is needed.",
                           "Check that the place's exporter runs and exports exactly one NetworkService.",
                           step="acquire")
        args = found[0][1]
        return Endpoint(str(args["address"]), int(args.get("port", 22)), str(args["username"]))

    # ------------------------------------------------------------------ acting
    def acquire(self, name: str) -> None:
        self.place(name)
        self._rpc("AcquirePlace", self.pb2.AcquirePlaceRequest(placename=name), f"cannot acquire place {name!r}")

    def release(self, name: str, holder: Optional[str] = None) -> None:
        request = self.pb2.ReleasePlaceRequest(placename=name)
        if holder:
            request = self.pb2.ReleasePlaceRequest(placename=name, fromuser=holder)
        self._rpc("ReleasePlace", request, f"cannot release place {name!r}")

    def set_tags(self, name: str, tags: Dict[str, str]) -> None:
        self._rpc("SetPlaceTags", self.pb2.SetPlaceTagsRequest(placename=name, tags=tags),
                  f"cannot tag place {name!r}")

    def reserve(self, tags: Dict[str, str], timeout: float) -> Tuple[str, str]:
        """Reserve a place whose tags match; wait up to ``timeout`` s for it. Returns (token, place)."""
        pb2 = self.pb2
        request = pb2.CreateReservationRequest(filters={"main": pb2.Reservation.Filter(filter=tags)}, prio=0.0)
        token = self._rpc("CreateReservation", request, "cannot reserve a place").reservation.token
        deadline = time.monotonic() + timeout
        try:
            while True:
                res = self._rpc("PollReservation", pb2.PollReservationRequest(token=token),
                                "cannot poll the reservation").reservation
                if res.allocations.get("main"):
                    return token, res.allocations["main"]
                if time.monotonic() > deadline:
                    raise HilError(f"no labgrid place matching {tags} became free within {timeout:g} s.",
                                   "Check the place tags (labgrid-client places -v) or wait.", step="acquire")
                time.sleep(0.2)
        except BaseException:
            self.cancel(token)
            raise

    def cancel(self, token: str) -> None:
        try:
            self._rpc("CancelReservation", self.pb2.CancelReservationRequest(token=token), "cannot cancel")
        except HilError as exc:
            log.warning("%s", exc.one_line())
