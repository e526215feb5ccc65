"""Make ``host/`` importable when the package is not installed (``pip install -e .`` makes this a no-op);
the history store fixtures: ``history_db`` runs a test on both backends, a SQLite file and a fresh
database on a throwaway PostgreSQL server (``pg_server``, one per session, see tests/pg_testlib.py)."""
import subprocess
import sys
from pathlib import Path

import pytest

HOST = Path(__file__).resolve().parents[2] / "host"
try:
    import xqhil.history  # noqa: F401
except ImportError:
    sys.path.insert(0, str(HOST))

from ci_policy import hil_missing  # noqa: E402
from pg_testlib import PgServer, find_bin  # noqa: E402

BACKENDS = ["sqlite", "postgresql"]


@pytest.fixture(scope="session")
def pg_server():
    try:
        import psycopg  # noqa: F401
    except ImportError:
        hil_missing("psycopg 3 is not installed (pip install -e '.[postgres]')")
    bindir = find_bin()
    if bindir is None:
        hil_missing("PostgreSQL server binaries (initdb, pg_ctl) not found: ci/install-system-deps.sh installs "
                    "Debian's postgresql")
    server = PgServer(bindir)
    try:
        server.start()
    except (OSError, subprocess.SubprocessError) as exc:
        detail = getattr(exc, "stderr", b"") or b""
        server.stop()
        pytest.fail(f"cannot start a throwaway PostgreSQL server: {exc} {detail.decode(errors='replace')[-500:]}")
    yield server
    server.stop()


@pytest.fixture
def pg_db(pg_server):
    """A fresh, empty PostgreSQL database: its URL (with the password)."""
    return pg_server.new_database()


@pytest.fixture(params=BACKENDS)
def history_db(request, tmp_path):
    """Where a test's history lives: a new SQLite file path, or a fresh PostgreSQL database URL."""
    if request.param == "sqlite":
        return tmp_path / "hist" / "runs.sqlite3"
    return request.getfixturevalue("pg_db")
