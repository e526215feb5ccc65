"""Transports act on boards: a local subprocess, qemu-user, or SSH/SFTP (paramiko)."""
from __future__ import annotations

from ..boards.spec import BoardSpec
from .base import Deadlines, ExecResult, Transport
from .local import LocalTransport, QemuTransport


def make_transport(spec: BoardSpec, deadlines: Deadlines, retries: int = 2) -> Transport:
    """The transport for ``spec.kind``."""
    if spec.kind == "host":
        return LocalTransport(spec.name, deadlines, retries, spec.workdir)
    if spec.kind == "qemu":
        return QemuTransport(f"qemu ({spec.rootfs})", deadlines, retries, spec.rootfs or "", spec.workdir)
    from .ssh import SshTransport

    return SshTransport(spec, deadlines, retries)


__all__ = ["Deadlines", "ExecResult", "Transport", "make_transport"]
