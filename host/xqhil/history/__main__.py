"""``python -m xqhil.history``: the history and dashboard commands without the rest of xqhil."""
import sys

from xqhil.history.cli import main

sys.exit(main())
