"""``matrix.toml`` (or .json): models x configs x boards x repeat, expanded to jobs.

    coordinator = "127.0.0.1:20408"      # labgrid coordinator, HOST:PORT
    boards = ["rv-0", "?soc=k1"]          # places, or tag filters (any matching place)
    repeat = 1                            # each (model, config, board) this many times
    retries = 2                           # extra attempts after an infrastructure failure (exit 3) only
    quarantine_after = 2                  # consecutive infrastructure failures that quarantine a board
    probe = "lease"                       # acquire + probe a board once for a run of its jobs ("each-job": per job)
    out = "farm-out"                      # per-job report folders (default: next to the matrix)
    db = "history.sqlite3"                # run history (default: as quantize-and-verify)
    [[models]]                            # an XQuant config with verify_parameters; qmodel optional
    config = "cfg.json"
    [[configs]]                           # run variants (default: one, "default")
    name = "t1"
    threads = 1
    [board]                               # settings for every place (inventory fields, no address)
    python = "python3"
    ssh_key = "key"
    known_hosts = "known_hosts"
    [places.rv-2]                         # settings for one place, over [board]
    python = "env XQHIL_FAULT=... python3"
"""
from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import Any, Dict, List, Optional

from ..boards.inventory import _board, _read
from ..boards.spec import BoardSpec
from ..errors import BadInput
from .provider import PLACE_RE, TAG_KEY_RE, TAG_VAL_RE

PROBES = {"lease": "lease", "each-job": "each-job", "first": "lease"}  # "first": its name before leases
KEYS = ("coordinator", "boards", "repeat", "retries", "quarantine_after", "out", "db", "models", "configs",
        "board", "places", "wait", "probe")


@dataclass(frozen=True)
class Selector:
    """A place by name, or any place whose tags match."""
    place: Optional[str] = None
    tags: Dict[str, str] = field(default_factory=dict)

    def matches(self, name: str, tags: Dict[str, str]) -> bool:
        if self.place:
            return name == self.place
        return all(tags.get(k) == v for k, v in self.tags.items())

    def text(self) -> str:
        return self.place or "?" + "&".join(f"{k}={v}" for k, v in sorted(self.tags.items()))


@dataclass(frozen=True)
class Job:
    index: int
    model: str  # config path
    qmodel: Optional[str]
    variant: str
    threads: Optional[int]
    providers: Optional[tuple]
    board: Selector
    repeat: int

    @property
    def label(self) -> str:
        name = os.path.splitext(os.path.basename(self.model))[0]
        return f"#{self.index} {name}/{self.variant}@{self.board.text()} r{self.repeat}"


@dataclass
class Matrix:
    path: str
    coordinator: str
    jobs: List[Job]
    retries: int
    quarantine_after: int
    out: str
    db: Optional[str]
    template: BoardSpec
    places: Dict[str, BoardSpec]
    wait: float = 60.0
    probe: str = "lease"

    def spec_template(self, place: str) -> BoardSpec:
        return self.places.get(place, self.template)


def _selector(text: Any, where: str) -> Selector:
    if not isinstance(text, str) or not text:
        raise BadInput(f"{where} must be a place name or '?tag=value[&tag=value]', got {text!r}.")
    if text.startswith("?"):
        tags = dict(part.partition("=")[::2] for part in text[1:].split("&"))
        if not tags or any(not TAG_KEY_RE.match(k) or not v or not TAG_VAL_RE.match(v) for k, v in tags.items()):
            raise BadInput(f"{where}: tag filter {text!r} is not valid (keys [a-z][a-z0-9_]+, values [a-z0-9_]+).")
        return Selector(tags=tags)
    if not PLACE_RE.match(text):
        raise BadInput(f"{where}: {text!r} is not a valid place name.")
    return Selector(place=text)


def _int(raw: Dict[str, Any], key: str, default: int, low: int, where: str) -> int:
    value = raw.get(key, default)
    if isinstance(value, bool) or not isinstance(value, int) or value < low:
        raise BadInput(f"{where}: {key} must be an integer >= {low}, got {value!r}.")
    return value


def _list(raw: Dict[str, Any], key: str, where: str, default: Optional[list] = None) -> list:
    value = raw.get(key, default)
    if not isinstance(value, list) or not value:
        raise BadInput(f"{where}: {key} must be a non-empty list.")
    return value


def _board_spec(name: str, entry: Any, base: str, where: str) -> BoardSpec:
    if not isinstance(entry, dict) or "address" in entry or "kind" in entry:
        raise BadInput(f"{where} must be a table of board settings without kind/address (labgrid gives those).")
    return _board(name, {**entry, "kind": "ssh", "address": "ssh://xqhil@localhost"}, base, where)


def _jobs(raw: Dict[str, Any], base: str, where: str) -> List[Job]:
    models = _list(raw, "models", where)
    variants = _list(raw, "configs", where, [{"name": "default"}])
    boards = [_selector(b, f"{where}: boards[{i}]") for i, b in enumerate(_list(raw, "boards", where))]
    repeat = _int(raw, "repeat", 1, 1, where)
    jobs: List[Job] = []
    for i, model in enumerate(models):
        if not isinstance(model, dict) or not isinstance(model.get("config"), str):
            raise BadInput(f"{where}: models[{i}] needs config = \"cfg.json\".")
        config = os.path.normpath(os.path.join(base, model["config"]))
        if not os.path.isfile(config):
            raise BadInput(f"{where}: models[{i}].config '{config}' not found.")
        qmodel = os.path.normpath(os.path.join(base, model["qmodel"])) if model.get("qmodel") else None
        for j, variant in enumerate(variants):
            if not isinstance(variant, dict) or not isinstance(variant.get("name", "default"), str):
                raise BadInput(f"{where}: configs[{j}] must be a table with a name.")
            threads = variant.get("threads")
            providers = tuple(variant["providers"]) if variant.get("providers") else None
            for board in boards:
                for r in range(repeat):
                    jobs.append(Job(len(jobs) + 1, config, qmodel, variant.get("name", f"c{j}"), threads, providers,
                                    board, r + 1))
    return jobs


def load_matrix(path: str) -> Matrix:
    path = os.path.abspath(os.path.expanduser(path))
    raw = _read(path)
    where = os.path.basename(path)
    if not isinstance(raw, dict):
        raise BadInput(f"{where}: the matrix must be a table.")
    unknown = sorted(set(raw) - set(KEYS))
    if unknown:
        raise BadInput(f"{where}: unknown key(s) {', '.join(unknown)}.", f"Known: {', '.join(KEYS)}.")
    base = os.path.dirname(path)
    coordinator = raw.get("coordinator")
    if not isinstance(coordinator, str) or ":" not in coordinator:
        raise BadInput(f"{where}: coordinator must be \"HOST:PORT\" of the labgrid coordinator.")
    board = raw.get("board", {})
    template = _board_spec("labgrid", board, base, f"{where}: board")
    places = raw.get("places", {})
    if not isinstance(places, dict) or not all(isinstance(e, dict) for e in places.values()):
        raise BadInput(f"{where}: places must be a table of [places.NAME] settings.")
    overrides = {name: _board_spec(f"labgrid:{name}", {**board, **entry}, base, f"{where}: places.{name}")
                 for name, entry in places.items()}
    out = os.path.normpath(os.path.join(base, raw.get("out", "farm-out")))
    db = os.path.normpath(os.path.join(base, raw["db"])) if raw.get("db") else None
    wait = raw.get("wait", 60.0)
    probe = raw.get("probe", "lease")
    if probe not in PROBES:
        raise BadInput(f"{where}: probe must be \"lease\" or \"each-job\", got {probe!r}.")
    probe = PROBES[probe]
    return Matrix(path, coordinator, _jobs(raw, base, where), _int(raw, "retries", 2, 0, where),
                  _int(raw, "quarantine_after", 2, 1, where), out, db, template, overrides, float(wait), probe)
