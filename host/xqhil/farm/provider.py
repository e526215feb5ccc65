"""``labgrid://COORDINATOR/PLACE`` and ``labgrid://COORDINATOR/?tag=value&...``: a labgrid place as a board.

``held_board`` reserves (for tags) and acquires the place, reads its NetworkService (address, port, user) and
yields the same ssh ``BoardSpec`` an ``ssh://`` board gives, so the session runs over xqhil's own paramiko
transport with host keys verified. Release, and cancelling the reservation, happen in ``finally``."""
from __future__ import annotations

import contextlib
import logging
import re
from dataclasses import dataclass, replace
from typing import Dict, Iterator, Optional
from urllib.parse import parse_qsl, urlsplit

from ..boards.spec import BoardSpec, builtin_board
from ..errors import BadInput
from .coordinator import Coordinator

log = logging.getLogger(__name__)
SCHEME = "labgrid://"
PLACE_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}\Z")
TAG_KEY_RE = re.compile(r"^[a-z][a-z0-9_]+\Z")
TAG_VAL_RE = re.compile(r"^[a-z0-9_]*\Z")
ADDR_RE = re.compile(r"^(?:\[[0-9A-Fa-f:.]+\]|[A-Za-z0-9.-]+):\d{1,5}\Z")


@dataclass(frozen=True)
class LabgridTarget:
    coordinator: str  # HOST:PORT
    place: Optional[str] = None
    tags: Optional[Dict[str, str]] = None

    def text(self) -> str:
        what = self.place or "?" + "&".join(f"{k}={v}" for k, v in sorted((self.tags or {}).items()))
        return f"{SCHEME}{self.coordinator}/{what}"


def parse_labgrid_url(text: str, where: str = "--board") -> LabgridTarget:
    hint = "Use labgrid://HOST:PORT/PLACE or labgrid://HOST:PORT/?tag=value[&tag=value]."
    parts = urlsplit(text)
    if parts.scheme != "labgrid" or not ADDR_RE.match(parts.netloc or ""):
        raise BadInput(f"{where}: {text!r} is not a labgrid address (the coordinator needs HOST:PORT).", hint)
    place = parts.path.strip("/")
    if parts.query:
        if place:
            raise BadInput(f"{where}: {text!r} names both a place and tags; give one.", hint)
        tags = dict(parse_qsl(parts.query, keep_blank_values=True, strict_parsing=False))
        bad = [f"{k}={v}" for k, v in tags.items() if not TAG_KEY_RE.match(k) or not TAG_VAL_RE.match(v) or not v]
        if not tags or bad:
            raise BadInput(f"{where}: tag filter {', '.join(bad) or parts.query!r} is not valid "
                           "(keys [a-z][a-z0-9_]+, values [a-z0-9_]+).", hint)
        return LabgridTarget(parts.netloc, tags=tags)
    if not PLACE_RE.match(place):
        raise BadInput(f"{where}: {text!r} names no valid place.", hint)
    return LabgridTarget(parts.netloc, place=place)


def spec_for(place: str, endpoint, template: BoardSpec) -> BoardSpec:
    """The ssh board spec of an acquired place: its endpoint, with python, keys, known_hosts from ``template``."""
    shown = f"[{endpoint.host}]" if ":" in endpoint.host else endpoint.host
    base = builtin_board(f"ssh://{endpoint.user}@{shown}:{endpoint.port}", f"labgrid place {place!r}")
    return replace(template, kind="ssh", name=f"labgrid:{place}", address=base.address, user=base.user,
                   host=base.host, port=base.port, python=template.python or base.python)


@contextlib.contextmanager
def held_place(coord: Coordinator, target: LabgridTarget, wait: float = 60.0) -> Iterator[str]:
    """The place of ``target`` reserved (tags) and acquired; released and the reservation cancelled after."""
    token = None
    if target.place:
        place = target.place
    else:
        token, place = coord.reserve(target.tags or {}, wait)
    try:
        coord.acquire(place)
        try:
            yield place
        finally:
            coord.release(place)
    finally:
        if token:
            coord.cancel(token)


@contextlib.contextmanager
def held_board(target: LabgridTarget, template: BoardSpec, wait: float = 60.0) -> Iterator[BoardSpec]:
    with Coordinator(target.coordinator) as coord, held_place(coord, target, wait) as place:
        spec = spec_for(place, coord.endpoint(place), template)
        log.info("board %s: labgrid place %s at %s", target.text(), place, spec.address)
        yield spec
