"""``xqhil farm run MATRIX | status COORDINATOR | check MATRIX [PLACE...] | sweep COORDINATOR``."""
from __future__ import annotations

import argparse
import json
import re

from xquant.cli_support import int_at_least, positive_seconds

from ..errors import EXIT_OK, BadInput

ADDRESS_RE = re.compile(r"^[A-Za-z0-9.\[\]:-]+:\d{1,5}\Z")


def _address(text: str) -> str:
    if not ADDRESS_RE.match(text):
        raise argparse.ArgumentTypeError(f"{text!r} is not HOST:PORT of a labgrid coordinator")
    return text


def add_farm(sub, add_common) -> None:
    farm = sub.add_parser("farm", help="run a model x board matrix on labgrid places; board status")
    cmds = farm.add_subparsers(dest="farm_command", metavar="FARM_COMMAND")
    cmds.required = True
    run = cmds.add_parser("run", help="run every job of a matrix.toml, in parallel across boards",
                          description="Exit 0 all pass/warn, 1 a verification failed, 3 a job's board failed "
                                      "after its retries, 2 bad input.")
    run.add_argument("matrix", help="matrix file (TOML or JSON; see docs/farm.md)")
    run.add_argument("--db", metavar="PATH", help="run history database (default: the matrix's db, else $XQHIL_DB)")
    run.add_argument("--step-timeout", type=positive_seconds, default=1800.0, help="deadline of the agent run, s")
    run.add_argument("--connect-timeout", type=positive_seconds, default=20.0, help="deadline to connect, s")
    run.add_argument("--retries", type=int_at_least(0), default=2, help="transport retries of connect and transfers")
    run.add_argument("--json", action="store_true", help="print the summary as JSON")
    run.set_defaults(func=cmd_farm_run)
    status = cmds.add_parser("status", help="places: tags, who holds them, health and quarantine")
    status.add_argument("coordinator", type=_address, help="HOST:PORT of the labgrid coordinator")
    status.add_argument("--sweep", action="store_true", help="first release places held by dead xqhil jobs")
    status.add_argument("--json", action="store_true")
    status.set_defaults(func=cmd_farm_status)
    check = cmds.add_parser("check", help="health-check places (acquire, probe); lifts a passed quarantine")
    check.add_argument("matrix", help="matrix file (for the coordinator and board settings)")
    check.add_argument("places", nargs="*", help="places (default: the quarantined ones)")
    check.add_argument("--connect-timeout", type=positive_seconds, default=20.0)
    check.set_defaults(func=cmd_farm_check)
    for parser in (run, status, check):
        add_common(parser)


def cmd_farm_run(args: argparse.Namespace) -> int:
    from ..history.reporting import check_history_db
    from .matrix import load_matrix
    from .scheduler import Farm

    matrix = load_matrix(args.matrix)
    db = check_history_db(args.db or matrix.db)
    settings = {"connect_timeout": args.connect_timeout, "step_timeout": args.step_timeout, "retries": args.retries,
                "probe": matrix.probe}
    summary = Farm(matrix, settings, str(db), quiet=args.quiet).run()
    if args.json:
        print(json.dumps(summary, indent=1))
    else:
        counts: dict = {}
        for job in summary["jobs"]:
            counts[job["status"]] = counts.get(job["status"], 0) + 1
        print(f"farm: {len(summary['jobs'])} job(s) in {summary['wall_s']:.1f} s: "
              + ", ".join(f"{n} {s}" for s, n in sorted(counts.items()))
              + (f"; quarantined: {', '.join(summary['quarantined'])}" if summary["quarantined"] else ""))
    return summary["exit"]


def cmd_farm_status(args: argparse.Namespace) -> int:
    from .coordinator import Coordinator
    from .health import format_rows, status_rows, sweep

    with Coordinator(args.coordinator) as coord:
        if args.sweep:
            for place in sweep(coord):
                print(f"released {place} (its job process is gone)")
        rows = status_rows(coord)
    print(json.dumps(rows, indent=1) if args.json else format_rows(rows))
    return EXIT_OK


def cmd_farm_check(args: argparse.Namespace) -> int:
    from ..transport import Deadlines
    from .coordinator import Coordinator
    from .health import check_places
    from .matrix import load_matrix

    matrix = load_matrix(args.matrix)
    with Coordinator(matrix.coordinator) as coord:
        places = args.places or [n for n, p in coord.places().items() if p.quarantined]
        for name in places:
            coord.place(name)  # unknown names: bad input before any acquire
        if not places:
            raise BadInput("no place given and none is quarantined.")
        outcome = check_places(coord, places, matrix.spec_template, Deadlines(connect=args.connect_timeout), 1)
    for name, text in outcome.items():
        print(f"{name}: {text}")
    return EXIT_OK if all(t == "ok" for t in outcome.values()) else 3
