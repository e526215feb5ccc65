"""A throwaway PostgreSQL server for the history tests (test-only, not installed).

Debian's ``postgresql`` package (``ci/install-system-deps.sh``) provides ``initdb``, ``pg_ctl`` and
``postgres`` under ``/usr/lib/postgresql/VERSION/bin`` (``$XQHIL_PG_BIN`` overrides). The cluster lives in
a fresh temp folder: fsync off, listening on a Unix socket in that folder and on 127.0.0.1 at a free
port, password (SCRAM) authentication on TCP. PostgreSQL refuses to run as root, so under root the
cluster is made and run by an unprivileged user (``$XQHIL_PG_USER``, default ``nobody``) via
``runuser``, and the temp folder is handed to that user.
"""
from __future__ import annotations

import glob
import os
import pwd
import shutil
import socket
import subprocess
import tempfile
from pathlib import Path

USER = "xqhil"
PASSWORD = "pg-test-secret-5f3a"


def find_bin() -> Path | None:
    """The folder with initdb/pg_ctl: $XQHIL_PG_BIN, else Debian's newest /usr/lib/postgresql/*/bin."""
    if os.environ.get("XQHIL_PG_BIN"):
        return Path(os.environ["XQHIL_PG_BIN"])
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"), key=lambda p: int(Path(p).parts[-3]))
    if found:
        return Path(found[-1]).parent
    initdb = shutil.which("initdb")
    return Path(initdb).parent if initdb else None


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class PgServer:
    """``start()``, then ``new_database()`` per test (a fresh, empty database), ``stop()`` at the end."""

    def __init__(self, bindir: Path) -> None:
        self.bindir = bindir
        self.root = Path(tempfile.mkdtemp(prefix="xqhil-pg-"))
        self.port = _free_port()
        self.runas: list[str] = []
        self.count = 0
        self.admin = None

    def _cmd(self, *argv: str) -> list[str]:
        return self.runas + [str(self.bindir / argv[0]), *argv[1:]]

    def start(self) -> None:
        if os.geteuid() == 0:
            user = os.environ.get("XQHIL_PG_USER", "nobody")
            entry = pwd.getpwnam(user)
            os.chown(self.root, entry.pw_uid, entry.pw_gid)
            self.runas = ["runuser", "-u", user, "--"]
        pwfile = self.root / "pw"
        pwfile.write_text(PASSWORD + "\n")
        if self.runas:
            os.chown(pwfile, pwd.getpwnam(self.runas[2]).pw_uid, -1)
        subprocess.run(self._cmd("initdb", "-D", str(self.root / "data"), "-U", USER, f"--pwfile={pwfile}",
                                 "--auth-local=trust", "--auth-host=scram-sha-256", "-E", "UTF8",
                                 "--locale=C", "--no-sync"),
                       check=True, capture_output=True, timeout=120)
        options = (f"-k {self.root} -h 127.0.0.1 -p {self.port} -c fsync=off -c synchronous_commit=off "
                   "-c full_page_writes=off -c max_connections=60")
        subprocess.run(self._cmd("pg_ctl", "-D", str(self.root / "data"), "-l", str(self.root / "log"), "-w",
                                 "-t", "60", "-o", options, "start"), check=True, capture_output=True, timeout=90)
        import psycopg

        self.admin = psycopg.connect(self.dsn("postgres"), autocommit=True)

    def dsn(self, database: str, password: str = PASSWORD) -> str:
        return f"postgresql://{USER}:{password}@127.0.0.1:{self.port}/{database}"

    def new_database(self) -> str:
        """A fresh empty database; its URL (with the password)."""
        self.count += 1
        name = f"hist{self.count}"
        self.admin.execute(f"CREATE DATABASE {name}")
        return self.dsn(name)

    def log_tail(self) -> str:
        try:
            return (self.root / "log").read_text()[-2000:]
        except OSError:
            return ""

    def stop(self) -> None:
        if self.admin is not None:
            self.admin.close()
        subprocess.run(self._cmd("pg_ctl", "-D", str(self.root / "data"), "-m", "immediate", "stop"),
                       capture_output=True, timeout=60)
        shutil.rmtree(self.root, ignore_errors=True)
