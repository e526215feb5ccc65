"""The board resource: a frozen description, parsed from ``--board`` or a named inventory entry.

Parsing checks only the text; what this machine needs to use a board (key files, a qemu rootfs) is
checked by ``check_usable`` when the board is picked, so an inventory loads on any machine."""
from __future__ import annotations

import getpass
import os
import re
import shlex
import shutil
import sys
from dataclasses import dataclass, replace
from typing import Dict, Optional, Sequence, Tuple

from xquant.suggest import did_you_mean, edit_distance

from ..errors import BadInput, HilError
from ..paths import default_rootfs

KINDS = ("host", "qemu", "ssh")
# \Z, not $: $ also matches before a final newline ("root\n" would pass)
HOST_RE = re.compile(r"^(?:[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?)(?:\.[A-Za-z0-9-]{1,63})*\Z")
USER_RE = re.compile(r"^[A-Za-z_][A-Za-z0-9_.-]{0,31}\Z")
REMOTE_DIR_RE = re.compile(r"^/[A-Za-z0-9._/-]*\Z")
SSH_URL_RE = re.compile(r"^ssh://(?:(?P<user>[^@/]+)@)?(?P<host>\[[0-9A-Fa-f:.]+\]|[^:/@\[\]]+)"
                        r"(?::(?P<port>\d{1,5}))?/?\Z")


@dataclass(frozen=True)
class BoardSpec:
    kind: str  # host | qemu | ssh
    name: str
    address: Optional[str] = None  # ssh://user@host:port for ssh boards
    user: Optional[str] = None
    host: Optional[str] = None
    port: int = 22
    python: Tuple[str, ...] = ()  # interpreter command that runs the agent there
    rootfs: Optional[str] = None  # qemu: riscv64 root filesystem
    ssh_key: Optional[str] = None  # never reported
    known_hosts: Optional[str] = None
    accept_unknown_host_key: bool = False
    workdir: Optional[str] = None  # folder under which the per-run work folder is made
    providers: Optional[Tuple[str, ...]] = None
    threads: Optional[int] = None
    emulated: Optional[bool] = None  # None: ask the agent
    env: Tuple[Tuple[str, str], ...] = ()  # environment set on the board before onnxruntime loads
    provider_options: Tuple[Tuple[str, Tuple[Tuple[str, str], ...]], ...] = ()  # provider -> ((key, value), ...)

    @property
    def python_text(self) -> str:
        return " ".join(shlex.quote(p) for p in self.python)

    def public(self) -> Dict[str, object]:
        """What reports may show (never the key)."""
        return {"kind": self.kind, "name": self.name, "address": self.address, "python": self.python_text}


def split_python(command: str, where: str) -> Tuple[str, ...]:
    if any(ch in command for ch in "\n\r\0"):
        raise BadInput(f"{where}: the interpreter command contains a control character.")
    try:
        parts = tuple(shlex.split(command))
    except ValueError as exc:
        raise BadInput(f"{where}: cannot parse interpreter command {command!r}: {exc}.") from exc
    if not parts:
        raise BadInput(f"{where}: the interpreter command is empty.", "Example: --python python3")
    return parts


def check_remote_dir(path: str, where: str) -> str:
    if not REMOTE_DIR_RE.match(path) or "/../" in f"{path}/" or "/./" in f"{path}/":
        raise BadInput(f"{where}: remote work folder {path!r} must be an absolute path of letters, digits, "
                       "'.', '_', '-' and '/'.", "Example: /tmp")
    return path.rstrip("/") or "/"


def parse_ssh_url(text: str, where: str) -> Tuple[str, str, int]:
    match = SSH_URL_RE.match(text)
    if not match:
        raise BadInput(f"{where}: {text!r} is not an SSH address.", "Use ssh://user@host[:port].")
    user = match.group("user") or getpass.getuser()
    host = match.group("host").strip("[]")
    port = int(match.group("port") or 22)
    if not USER_RE.match(user):
        raise BadInput(f"{where}: user name {user!r} has characters an SSH user name cannot have.")
    if ":" not in host and not HOST_RE.match(host):
        raise BadInput(f"{where}: host {host!r} is not a valid host name or IP address.")
    if not 0 < port < 65536:
        raise BadInput(f"{where}: port {port} is out of range (1-65535).")
    return user, host, port


def qemu_python(rootfs: str) -> Tuple[str, ...]:
    return ("qemu-riscv64-static", "-L", rootfs, os.path.join(rootfs, "usr", "bin", "python3"))


def builtin_board(text: str, where: str = "--board") -> Optional[BoardSpec]:
    """``host``, ``qemu``, ``qemu:ROOTFS`` or ``ssh://user@host[:port]``; None for other names."""
    if text == "host":
        return BoardSpec("host", "host", python=(sys.executable,))
    if text == "qemu" or text.startswith("qemu:"):
        explicit = text[len("qemu:"):] if text.startswith("qemu:") else ""
        if text.startswith("qemu:") and not explicit:
            raise BadInput(f"{where}: 'qemu:' needs a rootfs path after the colon.", "Example: qemu:/srv/rv64")
        rootfs = os.path.abspath(os.path.expanduser(explicit)) if explicit else default_rootfs()
        return BoardSpec("qemu", "qemu", rootfs=rootfs, python=qemu_python(rootfs), emulated=True)
    if text.startswith("ssh://"):
        user, host, port = parse_ssh_url(text, where)
        shown = f"[{host}]" if ":" in host else host
        address = f"ssh://{user}@{shown}" + (f":{port}" if port != 22 else "")
        return BoardSpec("ssh", shown, address=address, user=user, host=host, port=port, python=("python3",))
    return None


def resolve_board(text: str, inventory: Optional[Dict[str, BoardSpec]] = None,
                  inventory_path: Optional[str] = None, python: Optional[str] = None,
                  **overrides: object) -> BoardSpec:
    """The board named on the command line, with ``--python`` and other flags applied over it."""
    spec = builtin_board(text)
    if spec is None:
        boards = inventory or {}
        if text not in boards:
            close = did_you_mean(text, list(boards) + ["host", "qemu"])
            hint = f"Did you mean '{close}'? " if close else ""
            source = f"inventory '{inventory_path}'" if inventory_path else "no inventory (--inventory FILE)"
            raise BadInput(f"--board {text!r} is not host, qemu, qemu:ROOTFS, ssh://user@host[:port] or a "
                           f"board of {source}.", f"{hint}Known boards: {', '.join(sorted(boards)) or 'none'}.")
        spec = boards[text]
    if python is not None:
        spec = replace(spec, python=split_python(python, "--python"))
    changes = {k: v for k, v in overrides.items() if v is not None}
    if changes.get("workdir"):
        changes["workdir"] = check_remote_dir(str(changes["workdir"]), "--remote-dir")
    return replace(spec, **changes) if changes else spec


def check_qemu(rootfs: str) -> None:
    """A qemu board needs a riscv64 rootfs with python3 and qemu-riscv64-static (else exit 3)."""
    if not os.path.isfile(os.path.join(rootfs, "usr", "bin", "python3")):
        raise HilError(f"no riscv64 rootfs with python3 at '{rootfs}'.",
                       "Build it with: bash ci/build-rootfs.sh (or pass --board qemu:ROOTFS).", step="open")
    if shutil.which("qemu-riscv64-static") is None:
        raise HilError("qemu-riscv64-static is not installed.",
                       "Install it with: bash ci/install-system-deps.sh", step="open")


def check_usable(spec: BoardSpec) -> BoardSpec:
    """Before any work, what this machine must hold to use ``spec``: its key and known_hosts files
    (bad input, exit 2) and, for qemu, the rootfs and qemu (infrastructure, exit 3)."""
    for what, path in (("ssh key", spec.ssh_key), ("known_hosts", spec.known_hosts)):
        if path and not os.path.isfile(path):
            raise BadInput(f"{what} file '{path}' of board '{spec.name}' not found.",
                           "Check --ssh-key / --known-hosts or the inventory entry.")
    if spec.kind == "qemu":
        check_qemu(spec.rootfs or "")
    return spec


def known_providers() -> Tuple[str, ...]:
    """Execution providers onnxruntime knows of (built here or not), and the vendor ones the agent prefers."""
    import onnxruntime

    from ..reference import agent_module

    return tuple(onnxruntime.get_all_providers()) + tuple(agent_module().VENDOR_PROVIDERS)


def check_providers(names: Sequence[str], where: str) -> Tuple[str, ...]:
    """Reject what cannot be a provider name, or is one typo away from a known one (exit 2). Other
    ``*ExecutionProvider`` names pass: a vendor build may have its own; the board says if it lacks one."""
    known = known_providers()
    for name in names:
        if name in known:
            continue
        close = did_you_mean(name, known)
        typo = close is not None and edit_distance(name.lower(), close.lower()) <= 2
        if typo or not name.endswith("ExecutionProvider"):
            hint = (f"Did you mean '{close}'?" if close else "Names end in 'ExecutionProvider', e.g. "
                    "CPUExecutionProvider; 'xqhil boards --probe --board B' lists the board's.")
            raise BadInput(f"{where}: {name!r} is not an execution provider name.", hint)
    return tuple(names)
