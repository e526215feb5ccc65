"""Make ``host/`` importable when the package is not installed (``pip install -e .`` makes this a no-op)."""
import sys
from pathlib import Path

HOST = Path(__file__).resolve().parents[2] / "host"
try:
    import xqhil.history  # noqa: F401
except ImportError:
    sys.path.insert(0, str(HOST))
