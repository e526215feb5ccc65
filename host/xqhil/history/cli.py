"""``xqhil history`` and ``xqhil dashboard``: argparse subcommands for the xqhil front end.

``add_history_commands(subparsers)`` adds both to an existing ``add_subparsers()`` object; each parser
sets ``func`` to a handler ``(args) -> exit code``; ``xqhil.cli.main`` maps errors to exit codes: 0 ok,
2 bad input (unknown run id, missing, empty, corrupt or foreign database), 3 infrastructure (the output
folder cannot be written, a full disk). Read commands (list, show, dashboard) open the database read-only.

    xqhil history [--db PATH] [--model M] [--board B] [--runtime V] [--verdict V] [--limit N] [--json]
    xqhil history show RUN [--json]        everything recorded about one run
    xqhil history pin RUN | unpin RUN      pin (or unpin) RUN as the baseline of its model/board/config
    xqhil history export [--out FILE]      the whole history as JSON lines (default: stdout)
    xqhil history import FILE              append an exported history (new run ids, references remapped)
    xqhil dashboard [--db PATH] --out DIR  static offline DIR/index.html

``--db`` (or ``$XQHIL_DB``) is a SQLite file or a ``postgresql://`` URL; its password is never printed.
"""
from __future__ import annotations

import argparse
import json
import logging
import os
import sys
from pathlib import Path
from typing import Any

from xquant.cli_support import int_at_least

from xqhil.history import text, transfer
from xqhil.history.dsn import redact
from xqhil.history.errors import HistoryError
from xqhil.history.store import ENV_DB, RunStore, default_db

log = logging.getLogger(__name__)


def _db_option(parser: argparse.ArgumentParser, nested: bool = False) -> None:
    # Nested parsers use SUPPRESS so they never overwrite a --db given before the subcommand.
    parser.add_argument("--db", metavar="PATH|URL", default=argparse.SUPPRESS if nested else None,
                        help=f"history: a SQLite file or a postgresql:// URL (default: ${ENV_DB}, else "
                             f"{redact(default_db())})")


def _filters(parser: argparse.ArgumentParser, nested: bool = False) -> None:
    default = argparse.SUPPRESS if nested else None
    parser.add_argument("--model", default=default, help="only runs of this model name")
    parser.add_argument("--board", default=default, help="only runs on this board name")
    parser.add_argument("--runtime", default=default, metavar="VERSION",
                        help="only runs with this chip runtime (onnxruntime) version")
    parser.add_argument("--verdict", default=default, choices=["pass", "warn", "fail", "INFRA"])
    parser.add_argument("--limit", default=default, type=int_at_least(1), metavar="N", help="only the newest N runs")
    parser.add_argument("--json", default=argparse.SUPPRESS if nested else False, action="store_true",
                        help="print JSON instead of a table")


def _verbosity(parser: argparse.ArgumentParser, nested: bool = False) -> None:
    """-q/-v as on the other xqhil commands (nested: never overwrite one given before the subcommand)."""
    default = argparse.SUPPRESS if nested else False
    parser.add_argument("-q", "--quiet", action="store_true", default=default, help="warnings only")
    parser.add_argument("-v", "--verbose", "--debug", action="store_true", default=default,
                        help="debug logging (tracebacks of internal errors)")


def _run_argument(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("run", type=int, metavar="RUN", help="run id (see 'xqhil history')")
    _db_option(parser, nested=True)
    _verbosity(parser, nested=True)


def add_history_commands(subparsers: Any) -> None:
    """Add ``history`` (with ``list``, ``show``, ``pin``, ``unpin``) and ``dashboard``."""
    hist = subparsers.add_parser("history", help="list, inspect and pin recorded quantize-and-verify runs",
                                 description="Runs recorded by quantize-and-verify, oldest first.")
    _db_option(hist)
    _filters(hist)
    _verbosity(hist)
    hist.set_defaults(func=cmd_list)
    sub = hist.add_subparsers(dest="history_command", metavar="{list,show,pin,unpin,export,import}")
    listing = sub.add_parser("list", help="list runs (the default)")
    _db_option(listing, nested=True)
    _filters(listing, nested=True)
    _verbosity(listing, nested=True)
    listing.set_defaults(func=cmd_list)
    show = sub.add_parser("show", help="everything recorded about one run")
    _run_argument(show)
    show.add_argument("--json", action="store_true", default=argparse.SUPPRESS, help="print JSON")
    show.set_defaults(func=cmd_show)
    for name, handler, helptext in (("pin", cmd_pin, "pin RUN as the baseline of its model/board/config"),
                                    ("unpin", cmd_unpin, "go back to the last passing run as baseline")):
        parser = sub.add_parser(name, help=helptext)
        _run_argument(parser)
        parser.set_defaults(func=handler)
    _transfer_commands(sub)
    dash = subparsers.add_parser("dashboard", help="write a static offline HTML dashboard of the history")
    _db_option(dash)
    dash.add_argument("--out", required=True, metavar="DIR", help="output folder (DIR/index.html)")
    dash.add_argument("--title", default="xqhil run history", help="page title")
    _verbosity(dash)
    dash.set_defaults(func=cmd_dashboard)


def _transfer_commands(sub: Any) -> None:
    export = sub.add_parser("export", help="write the whole history as JSON lines (runs, pins, regressions)")
    export.add_argument("--out", metavar="FILE", default="-", help="output file (default: stdout)")
    _db_option(export, nested=True)
    _verbosity(export, nested=True)
    export.set_defaults(func=cmd_export)
    imp = sub.add_parser("import", help="append a history written by 'xqhil history export' (new run ids)")
    imp.add_argument("file", metavar="FILE", help="the export file ('-': stdin)")
    _db_option(imp, nested=True)
    _verbosity(imp, nested=True)
    imp.set_defaults(func=cmd_import)


def _open(args: argparse.Namespace, readonly: bool = True, create: bool = False) -> RunStore:
    """The history given by --db; read commands open it read-only, pin/unpin never create it."""
    return RunStore.open(getattr(args, "db", None) or default_db(), create=create, readonly=readonly)


def cmd_list(args: argparse.Namespace) -> int:
    with _open(args) as store:
        runs = store.list(model=getattr(args, "model", None), board=getattr(args, "board", None),
                          runtime=getattr(args, "runtime", None), verdict=getattr(args, "verdict", None),
                          limit=getattr(args, "limit", None))
        counts = text.regression_counts(store.regressions())
    if getattr(args, "json", False):
        print(json.dumps([{"id": r.id, "recorded_at": r.recorded_at, "regressions": counts.get(r.id, 0),
                           "doc": r.doc} for r in runs], indent=2))
    else:
        print(text.runs_table(runs, counts))
    return 0


def cmd_show(args: argparse.Namespace) -> int:
    with _open(args) as store:
        run = store.get(args.run)
        regressions = store.regressions(run.id)
        pinned = store.pinned_baseline(run.key)
    if getattr(args, "json", False):
        print(json.dumps({"id": run.id, "recorded_at": run.recorded_at, "pinned_baseline": pinned,
                          "regressions": regressions, "doc": run.doc}, indent=2))
    else:
        print(text.run_detail(run, regressions, pinned))
    return 0


def cmd_pin(args: argparse.Namespace) -> int:
    with _open(args, readonly=False) as store:
        run = store.pin_baseline(args.run)
    print(f"run {run.id} is now the baseline of {run.key.label()}")
    return 0


def cmd_unpin(args: argparse.Namespace) -> int:
    with _open(args, readonly=False) as store:
        run = store.get(args.run)
        removed = store.unpin_baseline(run.id)
    print(f"{'unpinned' if removed else 'nothing pinned for'} {run.key.label()}")
    return 0


def cmd_dashboard(args: argparse.Namespace) -> int:
    from xqhil.dashboard import render_dashboard

    index = render_dashboard(getattr(args, "db", None) or default_db(), args.out, title=args.title)
    print(f"dashboard written to {index}")
    return 0


def _counts(counts: dict[str, int]) -> str:
    return f"{counts['run']} runs, {counts['baseline']} baselines, {counts['regression']} regressions"


def cmd_export(args: argparse.Namespace) -> int:
    """Export to stdout, or to a file written whole (a temporary file renamed) or not at all."""
    with _open(args) as store:
        if args.out == "-":
            try:
                counts = transfer.write_export(store, sys.stdout)
                sys.stdout.flush()
            except BrokenPipeError:  # the reader stopped early (| head): not an error of ours
                os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
                return 0
        else:
            out = Path(args.out)
            tmp = out.with_name(f".{out.name}.{os.getpid()}.tmp")
            try:
                with open(tmp, "w", encoding="utf-8") as handle:
                    counts = transfer.write_export(store, handle)
                os.replace(tmp, out)
            except OSError as exc:
                tmp.unlink(missing_ok=True)
                raise HistoryError(f"cannot write the export to {out}: {exc}", exit_code=3) from exc
            finally:
                tmp.unlink(missing_ok=True)
        log.info("exported %s from %s", _counts(counts), store.path)
    return 0


def cmd_import(args: argparse.Namespace) -> int:
    where = "stdin" if args.file == "-" else args.file
    with transfer.open_export_input(args.file) as handle, _open(args, readonly=False, create=True) as store:
        counts = transfer.import_lines(store, handle, where)
        print(f"imported {_counts(counts)} from {where} into {store.path}")
    return 0
