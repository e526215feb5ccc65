"""Run history: every quantize-and-verify run in SQLite or PostgreSQL, and regression checks against baselines.

``record_and_check(doc, db_path)`` is the entry point for quantize-and-verify; ``RunStore`` the store;
:mod:`xqhil.history.regression` the pure checks; :mod:`xqhil.history.cli` the ``xqhil history`` and
``xqhil dashboard`` subcommands.
"""
from xqhil.history.check import check_run, format_summary, record_and_check
from xqhil.history.errors import HistoryError
from xqhil.history.store import RunRecord, RunStore, default_db, default_db_path, open_store

__all__ = ["HistoryError", "RunRecord", "RunStore", "check_run", "default_db", "default_db_path", "format_summary",
           "open_store", "record_and_check"]
