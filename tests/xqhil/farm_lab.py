"""A real labgrid lab on loopback for the farm tests: labgrid-coordinator, one exporter whose NetworkService
resources point at loopback sshd boards, and places matched to them (created through the coordinator)."""
from __future__ import annotations

import contextlib
import os
import re
import shutil
import socket
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Dict, List, Optional

from xqhil_testlib import free_port


def labgrid_bin(name: str) -> str:
    found = shutil.which(name) or os.path.join(os.path.dirname(sys.executable), name)
    if not os.path.exists(found):
        import pytest

        pytest.skip(f"{name} is not installed (pip install 'xqhil[farm]')")
    return found


def wait_port(port: int, proc: subprocess.Popen, log: Path, timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), timeout=1):
            return
        if proc.poll() is not None:
            break
        time.sleep(0.1)
    raise RuntimeError(f"labgrid-coordinator did not start: {log.read_text()[-2000:]}")


@dataclass
class Lab:
    folder: Path
    port: int
    coordinator: subprocess.Popen
    exporters: List[subprocess.Popen] = field(default_factory=list)

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    @property
    def log(self) -> Path:
        return self.folder / "coordinator.log"

    def start_exporter(self, name: str, boards: Dict[str, tuple]) -> subprocess.Popen:
        """``boards``: group name -> (host, port, user). The config is a Jinja2 template (comments are ##)."""
        lines = ["## xqhil farm test exporter"]
        for group, (host, port, user) in boards.items():
            lines += [f"{group}:", "  NetworkService:", f"    address: '{host}'", f"    username: '{user}'",
                      f"    port: {port}"]
        config = self.folder / f"exporter-{name}.yaml"
        config.write_text("\n".join(lines) + "\n")
        log = open(self.folder / f"exporter-{name}.log", "w")
        proc = subprocess.Popen([labgrid_bin("labgrid-exporter"), "-c", self.address, "-n", name,
                                 "--hostname", "127.0.0.1", str(config)], stdout=log, stderr=subprocess.STDOUT,
                                cwd=self.folder)
        self.exporters.append(proc)
        return proc

    def add_place(self, name: str, match: str, tags: Optional[Dict[str, str]] = None) -> None:
        from xqhil.farm.coordinator import Coordinator

        with Coordinator(self.address) as coord:
            pb2 = coord.pb2
            coord._rpc("AddPlace", pb2.AddPlaceRequest(name=name), "add place")
            coord._rpc("AddPlaceMatch", pb2.AddPlaceMatchRequest(placename=name, pattern=match), "add match")
            if tags:
                coord.set_tags(name, tags)

    def wait_resources(self, count: int, timeout: float = 30.0) -> None:
        from xqhil.farm.coordinator import Coordinator

        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            with Coordinator(self.address) as coord:
                have = sum(len(g) for groups in coord.session.resources.values() for g in groups.values())
            if have >= count:
                return
            time.sleep(0.3)
        raise RuntimeError(f"exporter did not register {count} resources: {self.log.read_text()[-2000:]}")

    def acquisitions(self) -> List[tuple]:
        """(event, place, holder) from the coordinator's own log, in order."""
        text = self.log.read_text()
        return [(m.group(2), m.group(1), m.group(3) or "") for m in
                re.finditer(r"^(\S+): place (acquired|released)(?: by (\S+))?", text, re.M)]

    def stop(self) -> None:
        for proc in self.exporters + [self.coordinator]:
            proc.terminate()
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                proc.kill()


def start_lab(folder: Path) -> Lab:
    folder.mkdir(parents=True, exist_ok=True)
    port = free_port()
    log = folder / "coordinator.log"
    env = dict(os.environ, PYTHONUNBUFFERED="1")
    proc = subprocess.Popen([labgrid_bin("labgrid-coordinator"), "-l", f"127.0.0.1:{port}"], cwd=folder, env=env,
                            stdout=open(log, "w"), stderr=subprocess.STDOUT)
    wait_port(port, proc, log)
    return Lab(folder, port, proc)


def assert_one_job_per_board(lab: Lab) -> int:
    """From the coordinator's log: a place is never acquired again before it was released. Returns the
    number of acquisitions."""
    held: Dict[str, str] = {}
    count = 0
    for event, place, holder in lab.acquisitions():
        if event == "acquired":
            assert place not in held, f"place {place} acquired by {holder} while held by {held.get(place)}"
            held[place] = holder
            count += 1
        else:
            held.pop(place, None)
    return count
