"""Bad input is found before the work, with exit 2 (issue 11), for ``python -m xquant`` and ``xqhil``.

Each row is one command line (and the file it breaks). Every row must: exit 2; print one line naming the file
or flag, and no traceback; start no work (the project's preprocess hook, the first thing any quantization or
verification runs, leaves a marker when called); leave nothing behind (the project folder is unchanged);
and take little time.
"""
from __future__ import annotations

import contextlib
import getpass
import io
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Callable, Dict, List, NamedTuple, Optional, Tuple

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent / "xqhil"))
from xqhil_testlib import make_project  # noqa: E402

HOOK = '''import os
import time

import numpy as np

def load(paths, param):
    with open(os.path.join(os.path.dirname(os.path.abspath(__file__)), "WORK_STARTED"), "a") as marker:
        marker.write("x")
    time.sleep(float(os.environ.get("BAD_INPUT_HOOK_SLEEP", "0")))
    return np.stack([np.load(p) for p in paths]).astype(np.float32)
'''
FAST_S = 20.0  # a failing check costs imports and a config read; the old code quantized first


def project(folder: Path) -> Path:
    """make_project's tiny project, its data read through a hook that marks that work started."""
    config = make_project(folder)
    (folder / "hook.py").write_text(HOOK)
    cfg = json.loads(config.read_text())
    cfg["calibration_parameters"]["input_parametres"][0]["preprocess_file"] = "hook.py:load"
    config.write_text(json.dumps(cfg, indent=1))
    return config


def set_working_dir(path: str) -> Callable[[Path], None]:
    def change(tmp: Path) -> None:
        config = tmp / "proj" / "cfg.json"
        cfg = json.loads(config.read_text())
        cfg["model_parameters"]["working_dir"] = path
        config.write_text(json.dumps(cfg))
    return change


def set_verify(tmp: Path, **values: object) -> None:
    config = tmp / "proj" / "cfg.json"
    cfg = json.loads(config.read_text())
    cfg["verify_parameters"].update(values)
    config.write_text(json.dumps(cfg))


def prepend_bytes(name: str, data: bytes) -> Callable[[Path], None]:
    def change(tmp: Path) -> None:
        path = tmp / "proj" / name
        path.write_bytes(data + path.read_bytes())
    return change


def append_bytes(name: str, data: bytes) -> Callable[[Path], None]:
    def change(tmp: Path) -> None:
        path = tmp / "proj" / name
        path.write_bytes(path.read_bytes() + data)
    return change


def write_file(name: str, data: bytes) -> Callable[[Path], None]:
    def change(tmp: Path) -> None:
        (tmp / name).write_bytes(data)
    return change


def truncated_model(tmp: Path) -> None:
    whole = (tmp / "proj" / "tiny.onnx").read_bytes()
    (tmp / "trunc.onnx").write_bytes(whole[: len(whole) // 2])


def make_folder(tmp: Path) -> None:
    (tmp / "adir").mkdir()


class Row(NamedTuple):
    argv: List[str]  # {cfg} {proj} {tmp} {user} are filled in
    fragment: str  # must appear in the one error line
    setup: Optional[Callable[[Path], None]] = None


QV = ["xqhil", "quantize-and-verify", "{cfg}", "--board", "host", "-q"]
SSH = "ssh://{user}@127.0.0.1:9"  # the discard port on loopback: nothing may be tried there anyway
ROWS: Dict[str, Row] = {
    # python -m xquant
    "xquant -o FOLDER": Row(["xquant", "-c", "{cfg}", "-o", "{tmp}/adir"], "adir' is a folder", make_folder),
    "xquant -o impossible": Row(["xquant", "-c", "{cfg}", "-o", "/proc/xq/m.q.onnx"], "'/proc/xq/m.q.onnx'"),
    "xquant working_dir impossible": Row(["xquant", "-c", "{cfg}"], "'/proc/xq/tiny.q.onnx'",
                                         set_working_dir("/proc/xq")),
    "xquant working_dir is a file": Row(["xquant", "-c", "{cfg}"], "'{proj}/tiny.onnx' is a file, not a folder",
                                        set_working_dir("tiny.onnx")),
    "xquant config not UTF-8": Row(["xquant", "-c", "{cfg}"], "cfg.json' is not UTF-8 text: byte 0xff on line 1",
                                   prepend_bytes("cfg.json", b"\xff\xfe")),
    "xquant config nested too deep": Row(["xquant", "-c", "{cfg}"], "cfg.json' nests arrays or objects too deeply",
                                         prepend_bytes("cfg.json", b"[" * 100000)),
    "xquant data list not UTF-8": Row(["xquant", "-c", "{cfg}"], "calib_list.txt' is not UTF-8 text: byte 0xff on "
                                      "line 25", append_bytes("calib_list.txt", b"\xff\xfe.npy\n")),
    # xqhil quantize-and-verify
    "--out impossible": Row(QV + ["--out", "/proc/nope"], "--out '/proc/nope' cannot be written"),
    "working_dir impossible": Row(QV, "working_dir (reports; or pass --out) '/proc/xq'", set_working_dir("/proc/xq")),
    "--providers not a name": Row(QV + ["--providers", "FooEP"], "--providers: 'FooEP' is not an execution provider"),
    "--providers typo": Row(QV + ["--providers", "CPUExecutionProvidr"], "Did you mean 'CPUExecutionProvider'?"),
    "--threads -1": Row(QV + ["--threads", "-1"], "--threads: must be 0 or more, got -1"),
    "--step-timeout nan": Row(QV + ["--step-timeout", "nan"], "--step-timeout: must be a positive number"),
    "--qmodel truncated": Row(QV + ["--qmodel", "{tmp}/trunc.onnx"], "--qmodel: Cannot read ONNX model '{tmp}/trunc",
                              truncated_model),
    "config not UTF-8": Row(QV, "cfg.json' is not UTF-8 text", prepend_bytes("cfg.json", b"\xff\xfe")),
    "config nested too deep": Row(QV, "cfg.json' nests arrays or objects too deeply",
                                  prepend_bytes("cfg.json", b"[" * 100000)),
    "label list not UTF-8": Row(QV, "eval_labels.txt' is not UTF-8 text: byte 0xff on line 1",
                                prepend_bytes("eval_labels.txt", b"\xff\xfe")),
    "verify data list not UTF-8": Row(QV, "eval_list.txt' is not UTF-8 text",
                                      append_bytes("eval_list.txt", b"\xff\xfe.npy\n")),
    "verify_parameters.providers typo": Row(QV, "verify_parameters.providers: 'CPUExecutionprovider'",
                                            lambda tmp: set_verify(tmp, providers=["CPUExecutionprovider"])),
    "--ssh-key missing": Row(QV[:3] + ["--board", SSH, "--ssh-key", "{tmp}/nokey", "-q"], "ssh key file '{tmp}/nokey'"),
    "--known-hosts missing": Row(QV[:3] + ["--board", SSH, "--known-hosts", "{tmp}/nokh", "-q"],
                                 "known_hosts file '{tmp}/nokh'"),
    "--confirm-reruns -1": Row(QV + ["--confirm-reruns", "-1"], "--confirm-reruns: must be 0 or more, got -1"),
    "--baseline-python empty": Row(QV + ["--baseline-python", " "],
                                   "--baseline-python: the interpreter command is empty"),
    "ssh host with a final newline": Row(QV[:3] + ["--board", "ssh://root@127.0.0.1\n", "-q"], "'127.0.0.1\\n'"),
    "ssh user with a final newline": Row(QV[:3] + ["--board", "ssh://root\n@127.0.0.1:9", "-q"], "'root\\n'"),
    # xqhil run / history
    "run a file that is not ONNX": Row(["xqhil", "run", "{tmp}/notonnx.onnx", "--board", "host", "-q"],
                                       "Cannot read ONNX model '{tmp}/notonnx.onnx'",
                                       write_file("notonnx.onnx", b"not a model\n")),
    "run --warmup -5": Row(["xqhil", "run", "{proj}/tiny.onnx", "--board", "host", "--warmup", "-5"],
                           "--warmup: must be 0 or more, got -5"),
    "run --repeat 0": Row(["xqhil", "run", "{proj}/tiny.onnx", "--board", "host", "--repeat", "0"],
                          "--repeat: must be 1 or more, got 0"),
    "run --out impossible": Row(["xqhil", "run", "{proj}/tiny.onnx", "--board", "host", "--out", "/proc/nope", "-q"],
                                "--out '/proc/nope' cannot be written"),
    "run --inputs not an archive": Row(["xqhil", "run", "{proj}/tiny.onnx", "--board", "host", "--inputs",
                                        "{tmp}/x.npz", "-q"], "--inputs '{tmp}/x.npz' is not a readable .npz",
                                       write_file("x.npz", b"junk")),
    "subcommand typo": Row(["xqhil", "quantise-and-verify", "{cfg}"], "Did you mean 'quantize-and-verify'?"),
    "inventory nested too deep": Row(["xqhil", "boards", "--inventory", "{tmp}/deep.json"],
                                     "inventory '{tmp}/deep.json' nests tables or arrays too deeply",
                                     write_file("deep.json", b"[" * 100000)),
    "history --limit -3": Row(["xqhil", "history", "--limit", "-3"], "--limit: must be 1 or more, got -3"),
}


def run_in_process(argv: List[str]) -> Tuple[int, str, str]:
    """One CLI ``main`` in this process; argparse's SystemExit becomes the exit code."""
    from xqhil.cli import main as xqhil_main
    from xquant.cli import main as xquant_main

    main = xquant_main if argv[0] == "xquant" else xqhil_main
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        try:
            code = main(argv[1:])
        except SystemExit as exc:
            code = exc.code
    return int(code), out.getvalue(), err.getvalue()


def snapshot(folder: Path) -> Dict[str, Tuple[int, int]]:
    return {str(p.relative_to(folder)): (p.stat().st_size, p.stat().st_mtime_ns)
            for p in folder.rglob("*") if p.is_file()}


def fill(text: str, tmp: Path) -> str:
    return text.format(cfg=tmp / "proj" / "cfg.json", proj=tmp / "proj", tmp=tmp, user=getpass.getuser())


@pytest.fixture
def bad_project(tmp_path: Path) -> Path:
    project(tmp_path / "proj")
    return tmp_path


@pytest.mark.parametrize("name", list(ROWS))
def test_bad_input_fails_fast_with_one_line_and_exit_2(name, bad_project):
    row = ROWS[name]
    if row.setup:
        row.setup(bad_project)
    before = snapshot(bad_project)
    started = time.perf_counter()
    code, out, err = run_in_process([fill(a, bad_project) for a in row.argv])
    elapsed = time.perf_counter() - started
    lines = err.strip().splitlines()
    assert code == 2, err
    assert len(lines) == 1 and lines[0].startswith(row.argv[0]) and "Traceback" not in err, err
    assert fill(row.fragment, bad_project) in lines[0]
    assert out == ""
    assert not (bad_project / "proj" / "WORK_STARTED").exists(), "the work started before the check"
    assert snapshot(bad_project) == before  # no model, report, temp file or folder left
    assert elapsed < FAST_S


def test_debug_flag_is_accepted_by_both_and_keeps_bad_input_one_line(bad_project):
    for argv in (["xquant", "-c", "{cfg}", "-o", "/proc/xq/m.q.onnx", "--debug"],
                 QV + ["--out", "/proc/nope", "--debug"]):
        code, _, err = run_in_process([fill(a, bad_project) for a in argv])
        assert code == 2 and "Traceback" not in err and "/proc/" in err


def test_internal_error_is_exit_3_one_line_and_debug_shows_the_traceback(capsys):
    from xquant.cli_support import run_guarded
    from xquant.errors import XQuantError

    def broken() -> int:
        return {}["missing"]

    assert run_guarded("xquant", broken, False, (XQuantError,)) == 3
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "internal error: KeyError" in err and "rerun with --debug" in err
    assert run_guarded("xquant", broken, True, (XQuantError,)) == 3
    err = capsys.readouterr().err
    assert err.startswith("Traceback") and err.strip().splitlines()[-1].startswith("xquant: internal error")


@pytest.mark.parametrize("how", ["qemu:/nonexistent", "env", "inventory"])
def test_missing_rootfs_is_exit_3_before_any_work_in_every_form(how, bad_project, monkeypatch):
    board = "qemu:/nonexistent"
    extra: List[str] = []
    if how == "env":
        monkeypatch.setenv("XQHIL_RISCV64_ROOTFS", "/nonexistent")
        board = "qemu"
    elif how == "inventory":
        inventory = bad_project / "boards.toml"
        inventory.write_text('[boards.rv]\nkind = "qemu"\nrootfs = "/nonexistent"\n')
        board, extra = "rv", ["--inventory", str(inventory)]
    code, _, err = run_in_process(["xqhil", "quantize-and-verify", str(bad_project / "proj" / "cfg.json"),
                                   "--board", board, "-q", *extra])
    assert code == 3 and err.count("\n") == 1 and "no riscv64 rootfs with python3 at '/nonexistent'" in err, err
    assert not (bad_project / "proj" / "WORK_STARTED").exists()
    assert not (bad_project / "proj" / "work").exists()


@pytest.mark.parametrize("cli", ["xquant", "xqhil"])
def test_ctrl_c_exits_130_in_both(cli, bad_project):
    config = bad_project / "proj" / "cfg.json"
    argv = ([sys.executable, "-m", "xquant", "-c", str(config), "-q"] if cli == "xquant" else
            [sys.executable, "-m", "xqhil", "quantize-and-verify", str(config), "--board", "host", "-q"])
    env = dict(os.environ, BAD_INPUT_HOOK_SLEEP="60")
    proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    try:
        marker = bad_project / "proj" / "WORK_STARTED"
        deadline = time.monotonic() + 120
        while not marker.exists() and proc.poll() is None and time.monotonic() < deadline:
            time.sleep(0.1)
        assert marker.exists(), "the preprocess hook never ran"
        proc.send_signal(signal.SIGINT)
        _, err = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
    assert proc.returncode == 130, err
    assert err.strip().splitlines()[-1] == f"{cli}: interrupted" and "Traceback" not in err


def test_provider_the_board_lacks_is_exit_3_with_a_full_stop_before_the_hint(bad_project):
    import onnxruntime

    if "CUDAExecutionProvider" in onnxruntime.get_available_providers():
        pytest.skip("this machine has CUDA: the host board does not lack the provider")
    code, out, err = run_in_process(["xqhil", "run", str(bad_project / "proj" / "tiny.onnx"), "--board", "host",
                                     "--providers", "CUDAExecutionProvider", "-q"])
    assert code == 3 and out == "" and err.count("\n") == 1, err
    assert "(ProviderUnavailable)" in err and "CPUExecutionProvider. Pick a provider the board has" in err
