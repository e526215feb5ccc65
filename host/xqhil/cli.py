"""Command line: ``xqhil quantize-and-verify | run | boards | history | dashboard | farm``.

Each subcommand has one ``add_*`` function that declares it and one ``cmd_*`` function that runs it;
``build_parser()`` assembles them, so more subcommands can be added the same way. Only ``main`` maps
errors to exit codes: 0 ok (pass or warn), 1 verification failed, 2 bad input, 3 board/infrastructure (or an
internal error), 130 interrupted. Bad input is found before any work: flags at parse time, files and
output folders in ``board_from_args`` / the commands' first step.
"""
from __future__ import annotations

import argparse
import contextlib
import json
import logging
import os
from typing import List, Optional

from xquant.cli_support import (OneLineParser, StderrHandler, exiting, int_at_least, positive_seconds,
                                run_guarded)

from . import __version__
from .errors import EXIT_FAILED, EXIT_OK, BadInput, XqhilError

log = logging.getLogger(__name__)


# ----------------------------------------------------------------------------------------- shared options
def add_board_options(parser: argparse.ArgumentParser, required: bool = True) -> None:
    group = parser.add_argument_group("board")
    group.add_argument("--board", required=required,
                       help="host | qemu | qemu:ROOTFS | ssh://user@host[:port] | NAME from --inventory | "
                            "labgrid://HOST:PORT/PLACE | labgrid://HOST:PORT/?tag=value[&...]")
    group.add_argument("--inventory", default=os.environ.get("XQHIL_INVENTORY"),
                       help="board inventory file, TOML or JSON (default: $XQHIL_INVENTORY)")
    group.add_argument("--python", help="interpreter command that runs the agent on the board")
    group.add_argument("--ssh-key", help="private key file for ssh boards (default: ssh-agent, ~/.ssh keys)")
    group.add_argument("--known-hosts", help="known_hosts file to verify the board's host key against")
    group.add_argument("--accept-unknown-host-key", action="store_true", default=None,
                       help="accept a host key that is not in known_hosts (a changed key is still refused)")
    group.add_argument("--remote-dir", help="folder on the board under which the work folder is made")
    group.add_argument("--step-timeout", type=positive_seconds, default=1800.0, help="deadline of the agent run, s")
    group.add_argument("--connect-timeout", type=positive_seconds, default=20.0, help="deadline to connect, s")
    group.add_argument("--retries", type=int_at_least(0), default=2, help="retries of connect and transfers")
    group.add_argument("--threads", type=int_at_least(0),
                       help="intra-op threads on the board and the PC (0: the runtime's default)")
    group.add_argument("--providers", help="comma-separated execution providers (default: vendor, else CPU)")


def add_runtime_options(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("runtime on the board")
    group.add_argument("--board-env", action="append", default=[], metavar="NAME=VALUE",
                       help="environment variable set on the board before onnxruntime loads (repeatable; e.g. "
                            "SPACEMIT_EP_DISABLE_OP_TYPE_FILTER=Conv); recorded in the device fingerprint")
    group.add_argument("--provider-option", action="append", default=[], metavar="PROVIDER:KEY=VALUE",
                       help="onnxruntime provider option (repeatable); recorded in the device fingerprint")


def runtime_options_from_args(args: argparse.Namespace, spec=None):
    """(environment, provider options): the board's inventory ``env`` / ``provider_options``, then
    --board-env and --provider-option over them; BadInput when malformed."""
    import re

    environment = dict(spec.env) if spec is not None else {}
    for item in args.board_env:
        name, sep, value = item.partition("=")
        if not sep or not re.match(r"^[A-Z][A-Z0-9_]{0,63}$", name):
            raise BadInput(f"--board-env '{item}' is not NAME=VALUE with NAME of A-Z, 0-9 and _.")
        environment[name] = value
    options: dict = {p: dict(kv) for p, kv in spec.provider_options} if spec is not None else {}
    for item in args.provider_option:
        provider, sep, rest = item.partition(":")
        key, sep2, value = rest.partition("=")
        if not (sep and sep2 and provider and key):
            raise BadInput(f"--provider-option '{item}' is not PROVIDER:KEY=VALUE.")
        options.setdefault(provider, {})[key] = value
    return environment, options


def add_common(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("-q", "--quiet", action="store_true", help="no progress, warnings only (for CI)")
    parser.add_argument("-v", "--verbose", "--debug", action="store_true",
                        help="debug logging, and the traceback of an internal error")


def board_from_args(args: argparse.Namespace):
    """The board to use, with what this machine needs for it checked now, before any work."""
    if getattr(args, "held_board", None) is not None:  # a labgrid place acquired by run_command
        return args.held_board
    from .boards import check_usable, load_inventory, resolve_board

    inventory = load_inventory(args.inventory) if args.inventory else None
    spec = resolve_board(args.board, inventory, args.inventory, python=args.python,
                         ssh_key=os.path.abspath(args.ssh_key) if args.ssh_key else None,
                         known_hosts=os.path.abspath(args.known_hosts) if args.known_hosts else None,
                         accept_unknown_host_key=args.accept_unknown_host_key, workdir=args.remote_dir)
    return check_usable(spec)


def held_board_from_args(args: argparse.Namespace):
    """A context manager yielding the board: a labgrid place is acquired (and released after), others as is."""
    if not (args.board or "").startswith("labgrid://"):
        return contextlib.nullcontext(board_from_args(args))
    from .farm.provider import held_board, parse_labgrid_url

    target = parse_labgrid_url(args.board)
    args = argparse.Namespace(**{**vars(args), "board": "ssh://xqhil@localhost"})  # the flags, over any place
    return held_board(target, board_from_args(args), wait=args.connect_timeout)


def run_command(args: argparse.Namespace) -> int:
    """Run the subcommand; a ``labgrid://`` board is held for the whole command (released in ``finally``)."""
    if "ssh_key" not in vars(args) or not (args.board or "").startswith("labgrid://"):
        return args.func(args)
    with held_board_from_args(args) as spec:
        args.held_board = spec
        return args.func(args)


def deadlines_from_args(args: argparse.Namespace):
    from .transport import Deadlines

    return Deadlines(connect=args.connect_timeout, run=args.step_timeout)


def providers_from_args(args: argparse.Namespace) -> Optional[List[str]]:
    from .boards import check_providers

    if not args.providers:
        return None
    return list(check_providers([p.strip() for p in args.providers.split(",") if p.strip()], "--providers"))


# ----------------------------------------------------------------------------------------- quantize-and-verify
def add_quantize_and_verify(sub) -> None:
    parser = sub.add_parser("quantize-and-verify", help="quantize, run FP32+INT8 on PC and board, compare",
                            description="Answer whether the INT8 model behaves on the chip as on the PC, and "
                                        "how much faster it is. Exit 0 pass/warn, 1 fail, 2 bad input, 3 board.")
    parser.add_argument("config", help="XQuant JSON config (with an optional verify_parameters section)")
    parser.add_argument("--qmodel", help="reuse this quantized model instead of quantizing")
    parser.add_argument("--out", help="folder for verify.md and verify.json (default: the working_dir)")
    parser.add_argument("--db", metavar="PATH|URL", help="run history: a SQLite file or a postgresql:// URL "
                        "(default: $XQHIL_DB, else $XDG_DATA_HOME/xqhil/history.sqlite3)")
    parser.add_argument("--fail-on-regression", action="store_true",
                        help="exit 1 when the run regressed against its baseline (see 'xqhil history')")
    parser.add_argument("--confirm-reruns", type=int_at_least(0), default=10, metavar="N",
                        help="a suspected latency regression is measured up to N more times on the board, one at "
                             "a time until the evidence decides, before it is flagged (default 10; 0: judge the "
                             "single run)")
    parser.add_argument("--baseline-python", metavar="CMD",
                        help="interpreter command of this board whose onnxruntime is the baseline's: a suspected "
                             "latency regression, and any run on a new onnxruntime, is then decided by an "
                             "interleaved A/B against it (7 rounds of both runtimes)")
    parser.add_argument("--localize", choices=("auto", "never"), default="auto",
                        help="after a chip-runtime failure, localise the first divergent op and write a repro "
                             "bundle under OUT/repro (default auto)")
    add_board_options(parser)
    add_runtime_options(parser)
    add_common(parser)
    parser.set_defaults(func=cmd_quantize_and_verify)


def cmd_quantize_and_verify(args: argparse.Namespace) -> int:
    from .history import format_summary
    from .history.reporting import check_history_db, record_verify_report
    from .report import summary_line
    from .verify import VerifyOptions, verify_and_probe

    board = board_from_args(args)
    opts = VerifyOptions(config=args.config, board=board, qmodel=args.qmodel, out=args.out,
                         deadlines=deadlines_from_args(args), retries=args.retries, quiet=args.quiet,
                         threads=args.threads, providers=providers_from_args(args), localize=args.localize,
                         board_arg=args.board, runtime_options=runtime_options_from_args(args, board))
    if args.baseline_python is not None:
        from .boards.spec import split_python

        split_python(args.baseline_python, "--baseline-python")  # checked before any work
    db = check_history_db(args.db)  # an unusable history is refused now, not after the board run
    report, probe = verify_and_probe(opts)
    print(summary_line(report))
    for reason in report["reasons"]:
        print(f"  - {reason}")
    # a failure here is a warning: the verdict's exit code stands
    history = record_verify_report(report, db, confirmer_for(args, probe))
    if history["recorded"]:
        print(format_summary(history))
    if report["verdict"] == "fail" or (history.get("regressions") and args.fail_on_regression):
        return EXIT_FAILED
    return EXIT_OK


def confirmer_for(args: argparse.Namespace, probe):
    """How a suspected latency regression is measured again (None: judge the single run)."""
    if probe is None or (args.confirm_reruns == 0 and not args.baseline_python):
        return None
    from .history.confirm import Confirmer

    return Confirmer(probe.measure, reruns=args.confirm_reruns, baseline_python=args.baseline_python)


# ----------------------------------------------------------------------------------------- run
def add_run(sub) -> None:
    parser = sub.add_parser("run", help="run one model on a board (accuracy and performance modes)")
    parser.add_argument("model", help="ONNX model")
    parser.add_argument("--inputs", help=".npz whose arrays (in graph input order, or named) are [N, ...] "
                                         "samples (default: one random sample of the model's input shape)")
    parser.add_argument("--warmup", type=int_at_least(0), default=5, help="untimed runs before timing")
    parser.add_argument("--repeat", type=int_at_least(1), default=20, help="timed runs")
    parser.add_argument("--out", help="folder for response.json and outputs.npz")
    add_board_options(parser)
    add_common(parser)
    parser.set_defaults(func=cmd_run)


def cmd_run(args: argparse.Namespace) -> int:
    from .runone import run_model

    result = run_model(args.model, board_from_args(args), deadlines_from_args(args), args.retries, args.inputs,
                       args.warmup, args.repeat, args.threads or 0, providers_from_args(args), args.out)
    print(json.dumps(result, indent=1))
    return EXIT_OK if result.get("ok") else EXIT_FAILED


# ----------------------------------------------------------------------------------------- localize, replay
def add_localize(sub) -> None:
    parser = sub.add_parser("localize", help="name the first op where the chip's INT8 departs from the PC's; "
                            "write a repro bundle", description="Exit 0 nothing departs, 1 a departure was "
                            "localised (bundle under OUT/repro), 2 bad input, 3 board.")
    parser.add_argument("config", help="XQuant JSON config (its verification data is used)")
    parser.add_argument("--qmodel", help="the INT8 model (default: the config's output model)")
    parser.add_argument("--out", help="folder for localize.json and repro/ (default: the working_dir)")
    parser.add_argument("--bisect", action="store_true", help="bisect instead of exposing the boundaries")
    parser.add_argument("--samples", type=int, default=4, help="samples that differ most to localise on")
    add_board_options(parser)
    add_runtime_options(parser)
    add_common(parser)
    parser.set_defaults(func=cmd_localize)


def _localize_board(args: argparse.Namespace):
    from .localize import Board

    spec = board_from_args(args)
    environment, options = runtime_options_from_args(args, spec)
    providers = providers_from_args(args) or (list(spec.providers) if spec.providers else None)
    return Board(spec, deadlines_from_args(args), args.retries, providers, args.threads or spec.threads or 0,
                 environment, options)


def cmd_localize(args: argparse.Namespace) -> int:
    from .localize import localize_config

    if args.samples < 1:
        raise BadInput(f"--samples must be 1 or more, got {args.samples}.")
    result = localize_config(args.config, _localize_board(args), args.board, args.qmodel, args.out, args.bisect,
                             args.samples)
    print(localize_line(result))
    return EXIT_OK if result["status"] == "clean" else EXIT_FAILED


def localize_line(result: dict) -> str:
    if result["status"] == "clean":
        return "localize: chip INT8 agrees with PC INT8 on every sample; nothing to localise"
    where = f"{result['op']} '{result['node']}' (boundary {result['boundary']})" if result["op"] else "no op"
    return (f"localize: {result['status']}: {where} by {result['method']}, {result['board_runs']} board run(s)"
            + (f"; bundle {result['bundle']}" if result.get("bundle") else ""))


def add_replay(sub) -> None:
    parser = sub.add_parser("replay", help="replay a repro bundle on a board",
                            description="Exit 1 while the chip still departs from the PC, 0 once it agrees.")
    parser.add_argument("bundle", help="a repro/<op>-<n> folder")
    add_board_options(parser)
    add_runtime_options(parser)
    add_common(parser)
    parser.set_defaults(func=cmd_replay)


def cmd_replay(args: argparse.Namespace) -> int:
    from .localize import replay

    result = replay(args.bundle, _localize_board(args))
    if result.get("error"):
        print(f"replay: the chip could not run the subgraph: {result['error']}")
    else:
        print(f"replay: {'DEPARTS' if result['departs'] else 'agrees'}: {result['mismatched']} of "
              f"{result['values']} value(s) differ from the PC (max |diff| {result['max_abs']}) on "
              f"{result['provider']}")
    return EXIT_FAILED if result["departs"] else EXIT_OK


# ----------------------------------------------------------------------------------------- boards
def add_boards(sub) -> None:
    parser = sub.add_parser("boards", help="list the boards of an inventory; --probe one (device fingerprint)")
    parser.add_argument("--probe", action="store_true", help="run the agent on --board and show the device")
    add_board_options(parser, required=False)
    add_common(parser)
    parser.set_defaults(func=cmd_boards)


def cmd_boards(args: argparse.Namespace) -> int:
    from .boards import load_inventory
    from .runone import probe

    if args.probe:
        if not args.board:
            raise BadInput("boards --probe needs --board NAME.")
        print(json.dumps(probe(board_from_args(args), deadlines_from_args(args), args.retries), indent=1))
        return EXIT_OK
    inventory = load_inventory(args.inventory) if args.inventory else {}
    print("built-in: host, qemu[:ROOTFS], ssh://user@host[:port]")
    for name, spec in sorted(inventory.items()):
        where = spec.address or spec.rootfs or ""
        print(f"{name}\t{spec.kind}\t{where}\tpython: {spec.python_text}")
    return EXIT_OK


# ----------------------------------------------------------------------------------------- farm
def add_farm(sub) -> None:
    from .farm.cli import add_farm as add

    add(sub, add_common)


# ----------------------------------------------------------------------------------------- main
def build_parser() -> argparse.ArgumentParser:
    parser = OneLineParser(prog="xqhil", description="Hardware-in-the-loop validation of INT8 ONNX "
                           "models on RISC-V boards (host, QEMU riscv64, SSH). Exit 0 ok, 1 verification "
                           "failed, 2 bad input, 3 board/infrastructure or internal error, 130 interrupted.")
    parser.add_argument("--version", action="version", version=f"xqhil {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    sub.required = True
    add_farm(sub)
    from .history.cli import add_history_commands

    for add in (add_quantize_and_verify, add_run, add_localize, add_replay, add_boards, add_history_commands):
        add(sub)
    return parser


def setup_logging(quiet: bool, verbose: bool) -> None:
    level = logging.DEBUG if verbose else logging.WARNING if quiet else logging.INFO
    handler = StderrHandler()
    handler.setFormatter(logging.Formatter("xqhil: %(message)s" if not verbose else
                                           "%(levelname)s %(name)s: %(message)s"))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)
    for noisy in ("paramiko", "PIL", "onnxslim"):
        logging.getLogger(noisy).setLevel(logging.WARNING if not verbose else logging.INFO)


def main(argv: Optional[List[str]] = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    verbose = getattr(args, "verbose", False)
    setup_logging(getattr(args, "quiet", False), verbose)
    from xquant.errors import XQuantError  # the quantizer's bad-input errors (exit 2)

    return exiting(run_guarded("xqhil", lambda: run_command(args), verbose, (XqhilError, XQuantError)), argv)
