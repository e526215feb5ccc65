"""Helpers of the harness tests that are not fixtures: model builders, the loopback sshd, CLI runner."""
from __future__ import annotations

import contextlib
import getpass
import json
import io
import os
import socket
import subprocess
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import List, Tuple

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper


def build_cnn(path: Path, seed: int = 0, opset: int = 17) -> None:
    """Conv(1->4, 3x3) -> Relu -> GlobalAveragePool -> Flatten -> Gemm(4->10): input 'input' [N,1,8,8]."""
    rng = np.random.default_rng(seed)
    inits = [
        numpy_helper.from_array(rng.standard_normal((4, 1, 3, 3)).astype(np.float32), "w1"),
        numpy_helper.from_array(rng.standard_normal(4).astype(np.float32) * 0.1, "b1"),
        numpy_helper.from_array(rng.standard_normal((10, 4)).astype(np.float32), "w2"),
        numpy_helper.from_array(rng.standard_normal(10).astype(np.float32) * 0.1, "b2"),
    ]
    nodes = [
        helper.make_node("Conv", ["input", "w1", "b1"], ["c1"], pads=[1, 1, 1, 1], name="conv"),
        helper.make_node("Relu", ["c1"], ["r1"], name="relu"),
        helper.make_node("GlobalAveragePool", ["r1"], ["p1"], name="gap"),
        helper.make_node("Flatten", ["p1"], ["f1"], name="flatten"),
        helper.make_node("Gemm", ["f1", "w2", "b2"], ["logits"], transB=1, name="fc"),
    ]
    graph = helper.make_graph(
        nodes, "tiny_cnn", [helper.make_tensor_value_info("input", TensorProto.FLOAT, ["batch", 1, 8, 8])],
        [helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["batch", 10])], inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)], ir_version=8)
    onnx.checker.check_model(model)
    onnx.save(model, str(path))


def with_opset(src: Path, dst: Path, opset: int) -> None:
    """A copy of ``src`` stamped with a newer default-domain opset (onnxruntime 1.21 refuses >= 23)."""
    model = onnx.load(str(src))
    for entry in model.opset_import:
        if entry.domain in ("", "ai.onnx"):
            entry.version = opset
    model.ir_version = max(model.ir_version, 10)
    onnx.save(model, str(dst))


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@dataclass
class Sshd:
    folder: Path
    port: int
    proc: subprocess.Popen
    user: str

    @property
    def url(self) -> str:
        return f"ssh://{self.user}@127.0.0.1:{self.port}"

    @property
    def key(self) -> Path:
        return self.folder / "userkey"

    @property
    def known_hosts(self) -> Path:
        return self.folder / "known_hosts"

    def stop(self) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.proc.kill()


def keygen(path: Path) -> None:
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(path)], check=True)


def start_sshd(folder: Path) -> Sshd:
    """sshd in the foreground (-D) on 127.0.0.1:<free port>; known_hosts holds its host key."""
    Path("/run/sshd").mkdir(parents=True, exist_ok=True)
    keygen(folder / "hostkey")
    keygen(folder / "userkey")
    (folder / "authorized_keys").write_text((folder / "userkey.pub").read_text())
    os.chmod(folder / "authorized_keys", 0o600)
    port = free_port()
    (folder / "sshd_config").write_text(
        f"Port {port}\nListenAddress 127.0.0.1\nHostKey {folder}/hostkey\n"
        f"AuthorizedKeysFile {folder}/authorized_keys\nPasswordAuthentication no\n"
        "KbdInteractiveAuthentication no\nStrictModes no\nUsePAM no\nPermitRootLogin prohibit-password\n"
        f"PidFile {folder}/sshd.pid\nMaxStartups 50\nLogLevel INFO\nSubsystem sftp internal-sftp\n")
    host_pub = (folder / "hostkey.pub").read_text().split()
    (folder / "known_hosts").write_text(f"[127.0.0.1]:{port} {host_pub[0]} {host_pub[1]}\n")
    proc = subprocess.Popen(["/usr/sbin/sshd", "-D", "-f", str(folder / "sshd_config"), "-E",
                             str(folder / "sshd.log")])
    deadline = time.monotonic() + 15
    while time.monotonic() < deadline:
        with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), timeout=1):
            return Sshd(folder, port, proc, getpass.getuser())
        if proc.poll() is not None:
            break
        time.sleep(0.1)
    proc.kill()
    raise RuntimeError(f"sshd did not start: {(folder / 'sshd.log').read_text()[-2000:]}")


def run_cli(args: List[str]) -> Tuple[int, str, str]:
    """Run ``xqhil`` in-process; returns (exit code, stdout, stderr)."""
    from xqhil.cli import main

    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        code = main(args)
    return code, out.getvalue(), err.getvalue()


def leftovers(folder: Path) -> List[str]:
    """Work folders the harness left under ``folder``."""
    return sorted(p.name for p in folder.glob("xqhil.*"))


FAULTS = Path(__file__).resolve().parent / "faults"


def fault_python(python: str, fault: str) -> str:
    """An interpreter command whose onnxruntime misbehaves as ``fault`` says (see faults/sitecustomize.py)."""
    return f"env PYTHONPATH={FAULTS} XQHIL_FAULT={fault} {python}"


def processes_mentioning(text: str) -> List[str]:
    """Command lines of live processes that contain ``text`` (to prove nothing was left running)."""
    found = []
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit() or int(proc.name) == os.getpid():
            continue
        try:
            cmdline = (proc / "cmdline").read_bytes().replace(b"\0", b" ").decode("utf-8", "replace")
            state = next((ln for ln in (proc / "status").read_text().splitlines() if ln.startswith("State:")), "")
        except OSError:
            continue
        if text in cmdline and "zombie" not in state:
            found.append(cmdline)
    return found


def verify(config, board: str, out, *extra: str):
    """Run quantize-and-verify in-process; returns (exit code, verify.json or None, stdout, stderr)."""
    import json as _json

    code, stdout, stderr = run_cli(["quantize-and-verify", str(config), "--board", board, "--out", str(out), "-q",
                                    *extra])
    report = Path(out) / "verify.json"
    return code, (_json.loads(report.read_text()) if report.exists() else None), stdout, stderr


def int8_differences(report: dict) -> dict:
    """Outputs whose chip INT8 result is not bit-identical to the PC's INT8 result, with their metrics.

    README: on the CPU provider the chip's INT8 outputs are identical to the PC's (measured: Debian riscv64
    onnxruntime 1.21 under qemu against x86 onnxruntime 1.32). max_abs 0 means every float is equal."""
    outputs = report["fidelity"]["outputs"]
    assert outputs, "the report has no fidelity outputs"
    found = {name: metrics.get("chip_int8_vs_pc_int8") for name, metrics in outputs.items()}
    return {name: m for name, m in found.items() if not m or m["max_abs"] != 0.0 or m["cosine"] != 1.0}


def make_project(folder: Path, n_calib: int = 24, n_eval: int = 24, labels: bool = True,
                 data_list: bool = True, verify: dict | None = None, seed: int = 0) -> Path:
    """A tiny CNN, .npy samples, list files and an XQuant config with verify_parameters; returns the config."""
    folder.mkdir(parents=True, exist_ok=True)
    model = folder / "tiny.onnx"
    build_cnn(model, seed=seed)
    rng = np.random.default_rng(seed + 1)
    (folder / "data").mkdir(exist_ok=True)
    names = []
    for i in range(n_calib + n_eval):
        name = f"data/s{i:04d}.npy"
        np.save(folder / name, rng.standard_normal((1, 8, 8)).astype(np.float32))
        names.append(name)
    (folder / "calib_list.txt").write_text("\n".join(names[:n_calib]) + "\n")
    (folder / "eval_list.txt").write_text("\n".join(names[n_calib:]) + "\n")
    section = {"max_samples": n_eval, "warmup": 1, "repeat": 3, "min_time_s": 0}  # 3 timed runs, no minimum time
    if data_list:
        section["data_list_path"] = ["eval_list.txt"]
    if labels and data_list:
        import onnxruntime as ort

        sess = ort.InferenceSession(str(model), providers=["CPUExecutionProvider"])
        x = np.stack([np.load(folder / n) for n in names[n_calib:]])
        preds = sess.run(None, {"input": x})[0].argmax(axis=1)
        (folder / "eval_labels.txt").write_text("\n".join(str(int(p)) for p in preds) + "\n")
        section["label_list_path"] = "eval_labels.txt"
    section.update(verify or {})
    config = {
        "model_parameters": {"onnx_model": "tiny.onnx", "output_prefix": "tiny", "working_dir": "work"},
        "calibration_parameters": {
            "calibration_step": n_calib,
            "input_parametres": [{"input_name": "input", "input_shape": [1, 1, 8, 8], "file_type": "npy",
                                  "data_list_path": "calib_list.txt"}],
        },
        "quantization_parameters": {"precision_level": 0, "finetune_level": 0},
        "verify_parameters": section,
    }
    path = folder / "cfg.json"
    path.write_text(json.dumps(config, indent=1))
    return path


# ----------------------------------------------------------------------------------------- link faults
class FakePeer:
    """A TCP server on 127.0.0.1 that is not a working SSH server: ``close`` (accepts, then closes),
    ``silent`` (accepts, says nothing) or ``http`` (answers a non-SSH banner). Stops by itself after
    ``lifetime`` s or ``max_connections`` connections."""

    def __init__(self, mode: str, lifetime: float = 60.0, max_connections: int = 10) -> None:
        self.mode, self.lifetime, self.max_connections = mode, lifetime, max_connections
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen()
        self.sock.settimeout(0.2)
        self.port = self.sock.getsockname()[1]
        self.held: List[socket.socket] = []
        self.thread = threading.Thread(target=self._serve, daemon=True)
        self.thread.start()

    def _serve(self) -> None:
        end, served = time.monotonic() + self.lifetime, 0
        while time.monotonic() < end and served < self.max_connections:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                continue
            served += 1
            if self.mode == "http":
                conn.sendall(b"HTTP/1.1 400 Bad Request\r\n\r\n")
            if self.mode == "silent":
                self.held.append(conn)
            else:
                conn.close()
        self.stop()

    def stop(self) -> None:
        for conn in self.held + [self.sock]:
            with contextlib.suppress(OSError):
                conn.close()


class LinkProxy:
    """A TCP proxy 127.0.0.1:port -> 127.0.0.1:target for link faults, bounded in time and connections.

    ``rate`` (bytes/s) throttles the client -> server direction; after ``fault_after`` bytes that direction
    on a connection whose index is in ``fault_on`` (all when None), ``fault`` happens: ``drop`` closes both
    sockets, ``freeze`` keeps them open and forwards nothing more (a frozen board). ``drop_all()`` drops
    every open connection now. Everything stops after ``lifetime`` s."""

    def __init__(self, target: int, rate: float = 0.0, fault: str = "", fault_after: int = 0,
                 fault_on=None, lifetime: float = 90.0, max_connections: int = 10) -> None:
        self.target, self.rate, self.fault, self.fault_after = target, rate, fault, fault_after
        self.fault_on, self.max_connections = fault_on, max_connections
        self.end = time.monotonic() + lifetime
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen()
        self.sock.settimeout(0.2)
        self.port = self.sock.getsockname()[1]
        self.conns: List[Tuple[socket.socket, socket.socket]] = []
        self.faulted: List[int] = []  # indexes of the connections the fault hit
        self.lock = threading.Lock()
        threading.Thread(target=self._serve, daemon=True).start()

    def _serve(self) -> None:
        while time.monotonic() < self.end and len(self.conns) < self.max_connections:
            try:
                client, _ = self.sock.accept()
            except OSError:
                continue
            server = socket.create_connection(("127.0.0.1", self.target), timeout=5)
            index = len(self.conns)
            self.conns.append((client, server))
            armed = self.fault and (self.fault_on is None or index in self.fault_on)
            threading.Thread(target=self._pump, args=(client, server, index, armed, True), daemon=True).start()
            threading.Thread(target=self._pump, args=(server, client, index, False, False), daemon=True).start()
        while time.monotonic() < self.end:
            time.sleep(0.2)
        self.stop()

    def _pump(self, src: socket.socket, dst: socket.socket, index: int, armed: bool, upstream: bool) -> None:
        sent = 0
        src.settimeout(0.2)
        while time.monotonic() < self.end:
            if index in self.faulted and self.fault == "freeze":
                time.sleep(0.2)
                continue
            try:
                data = src.recv(4096)
            except socket.timeout:
                continue
            except OSError:
                break
            if not data:
                break
            if armed and sent + len(data) >= self.fault_after:
                self._hit(index)
                if self.fault == "freeze":
                    continue
                break
            try:
                dst.sendall(data)
            except OSError:
                break
            sent += len(data)
            if self.rate and upstream:
                time.sleep(len(data) / self.rate)
        self._close(index)

    def _hit(self, index: int) -> None:
        with self.lock:
            if index not in self.faulted:
                self.faulted.append(index)
        if self.fault == "drop":
            self._close(index)

    def _close(self, index: int) -> None:
        if index in self.faulted and self.fault == "freeze" and time.monotonic() < self.end:
            return  # a frozen link stays open until the proxy stops
        for sock in self.conns[index]:
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)
            with contextlib.suppress(OSError):
                sock.close()

    def drop_all(self) -> None:
        for index in range(len(self.conns)):
            self.faulted.append(index)
            self._close(index)

    def stop(self) -> None:
        self.end = 0.0
        with contextlib.suppress(OSError):
            self.sock.close()
        for index in range(len(self.conns)):
            self._close(index)


def sshd_session_pids(sshd: Sshd) -> List[int]:
    """The per-connection processes of the loopback sshd (children of its listener)."""
    pids = []
    for proc in Path("/proc").iterdir():
        if proc.name.isdigit():
            with contextlib.suppress(OSError, IndexError, ValueError):
                stat = (proc / "stat").read_text()
                if int(stat.rsplit(")", 1)[1].split()[1]) == sshd.proc.pid:
                    pids.append(int(proc.name))
    return pids


def wait_for(predicate, seconds: float, what: str) -> None:
    deadline = time.monotonic() + seconds
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"{what} did not happen within {seconds} s")
        time.sleep(0.05)


def demo_config(folder: Path, **verify: object) -> Path:
    """configs/demo.json (real Fashion-MNIST, labelled) with absolute paths, its outputs under ``folder``,
    no analysis report, and ``verify`` merged into verify_parameters; written as ``folder``/demo.json."""
    import json

    import pytest

    repo = Path(__file__).resolve().parents[2]
    source = repo / "configs" / "demo.json"
    if not (repo / "demo" / "model" / "fashion_cnn.onnx").exists():
        pytest.skip("the bundled demo (demo/model/fashion_cnn.onnx) is missing")
    cfg = json.loads(source.read_text())

    def absolute(path: str) -> str:
        return str((source.parent / path).resolve())

    cfg["model_parameters"].update(onnx_model=absolute(cfg["model_parameters"]["onnx_model"]),
                                   working_dir=str(folder / "work"))
    cfg["quantization_parameters"]["analysis_enable"] = False
    for item in cfg["calibration_parameters"]["input_parametres"]:
        item["data_list_path"] = absolute(item["data_list_path"])
    section = cfg["verify_parameters"]
    section.update(data_list_path=[absolute(p) for p in section["data_list_path"]],
                   label_list_path=absolute(section["label_list_path"]), **verify)
    path = folder / "demo.json"
    path.write_text(json.dumps(cfg))
    return path
