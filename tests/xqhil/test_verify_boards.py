"""quantize-and-verify on the riscv64 target: QEMU user mode, and SSH (loopback OpenSSH) -> qemu-riscv64.

These run Debian's riscv64 python3-onnxruntime; emulation is slow, so samples and repeats are few.
"""
from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest
from xqhil_testlib import demo_config as write_demo_config
from xqhil_testlib import fault_python, int8_differences, leftovers, processes_mentioning, verify, with_opset

REPO = Path(__file__).resolve().parents[2]
pytestmark = pytest.mark.hil


@pytest.fixture(scope="module")
def demo_config(tmp_path_factory) -> Path:
    """configs/demo.json with absolute paths, 48 verification samples and 3 timed runs."""
    return write_demo_config(tmp_path_factory.mktemp("demo"), max_samples=48, warmup=1, repeat=3)


def test_demo_model_on_qemu_riscv64(demo_config, rootfs, tmp_path):
    code, report, stdout, stderr = verify(demo_config, f"qemu:{rootfs}", tmp_path / "out", "--remote-dir",
                                          str(tmp_path))
    assert code == 0, stderr
    assert report["verdict"] in ("pass", "warn")
    assert report["board"]["kind"] == "qemu"
    device = report["device"]
    assert device["arch"] == "riscv64" and device["emulated"] is True
    assert device["onnxruntime"] != __import__("onnxruntime").__version__  # really the target's runtime
    acc = report["accuracy"]
    assert acc["labelled"] and acc["samples"] == 48 and acc["pc_int8"] > 70
    # riscv64 onnxruntime 1.21 and x86 onnxruntime 1.32 give bit-identical INT8 outputs (CPU provider): any
    # difference would be a runtime difference (a warning), so the clean run must be identical and pass
    assert acc["top1_agreement"]["chip_int8_vs_pc_int8"] == 100.0 and report["verdict"] == "pass"
    assert report["runtime"]["departure"]["identical"] is True
    assert acc["top1_agreement"]["chip_int8_vs_pc_int8"] == 100.0 and acc["samples_differing"] == 0
    assert int8_differences(report) == {}  # README: INT8 outputs identical to the PC's
    assert report["fidelity"]["outputs"]["logits"]["chip_fp32_vs_pc_fp32"]["cosine"] > 0.99999
    lat = report["latency"]
    assert lat["emulated"] is True and lat["speedup"] > 0 and lat["int8"]["p50_ms"] > 0
    assert "EMULATED" in (tmp_path / "out" / "verify.md").read_text() and "(emulated)" in stdout
    assert leftovers(tmp_path) == []


def test_model_the_board_runtime_cannot_run_fails_the_verdict(quantized, rootfs, tmp_path):
    """Opset 23 loads on the PC's onnxruntime but not on Debian riscv64's 1.21: a failed verdict, exit 1."""
    newer = tmp_path / "tiny.opset23.q.onnx"
    with_opset(quantized["qmodel"], newer, 23)
    code, report, _, stderr = verify(quantized["config"], f"qemu:{rootfs}", tmp_path / "out", "--qmodel",
                                     str(newer), "--remote-dir", str(tmp_path))
    assert code == 1, stderr
    assert report["verdict"] == "fail" and report["accuracy"]["chip_int8"] is None
    assert report["reasons"][0].startswith("the chip could not run the INT8 model: load failed")
    assert "opset" in report["reasons"][0].lower()
    assert report["latency"]["fp32"] is not None and report["latency"]["int8"] is None
    assert leftovers(tmp_path) == []


def test_perturbed_riscv64_runtime_fails_and_clean_passes(quantized, rootfs, qemu_python, tmp_path):
    code, report, _, _ = verify(quantized["config"], f"qemu:{rootfs}", tmp_path / "bad", "--qmodel",
                                str(quantized["qmodel"]), "--python", fault_python(qemu_python, "perturb-int8:3"))
    assert code == 1 and report["verdict"] == "fail" and report["device"]["arch"] == "riscv64"
    code, report, _, _ = verify(quantized["config"], f"qemu:{rootfs}", tmp_path / "good", "--qmodel",
                                str(quantized["qmodel"]))
    assert code == 0 and report["verdict"] in ("pass", "warn") and int8_differences(report) == {}


def ssh_args(sshd, remote: Path, python: str):
    return ["--ssh-key", str(sshd.key), "--known-hosts", str(sshd.known_hosts), "--python", python,
            "--remote-dir", str(remote), "--connect-timeout", "10"]


def test_ssh_to_riscv64_end_to_end(quantized, sshd, qemu_python, tmp_path):
    """The whole SSH -> riscv64 path: paramiko, SFTP, checksums on the board, qemu-riscv64 onnxruntime."""
    remote = tmp_path / "board"
    remote.mkdir()
    code, report, _, stderr = verify(quantized["config"], sshd.url, tmp_path / "out", "--qmodel",
                                     str(quantized["qmodel"]), *ssh_args(sshd, remote, qemu_python))
    assert code == 0, stderr
    assert report["verdict"] in ("pass", "warn")
    assert report["board"] == {"kind": "ssh", "name": "127.0.0.1", "address": sshd.url, "python": qemu_python}
    assert report["device"]["arch"] == "riscv64" and report["device"]["emulated"] is True
    assert report["latency"]["emulated"] is True
    assert report["accuracy"]["top1_agreement"]["chip_int8_vs_pc_int8"] == 100.0
    assert report["runtime"]["departure"]["identical"] is True and report["verdict"] == "pass"
    assert int8_differences(report) == {}
    assert str(sshd.key) not in json.dumps(report)
    assert leftovers(remote) == []


def test_ssh_agent_killed_mid_run(quantized, sshd, tmp_path):
    remote = tmp_path / "board"
    remote.mkdir()
    code, report, _, stderr = verify(quantized["config"], sshd.url, tmp_path / "out", "--qmodel",
                                     str(quantized["qmodel"]),
                                     *ssh_args(sshd, remote, fault_python(sys.executable, "kill-after:3")))
    assert code == 3 and report is None
    assert "was killed by signal 9 before writing its response" in stderr and stderr.count("\n") == 1
    assert leftovers(remote) == []


def test_ssh_step_timeout_stops_the_remote_agent(quantized, sshd, tmp_path):
    remote = tmp_path / "board"
    remote.mkdir()
    code, _, _, stderr = verify(quantized["config"], sshd.url, tmp_path / "out", "--qmodel",
                                str(quantized["qmodel"]), "--step-timeout", "3",
                                *ssh_args(sshd, remote, fault_python(sys.executable, "sleep:60")))
    assert code == 3 and "ran past its deadline of 3 s" in stderr
    assert leftovers(remote) == [] and processes_mentioning(str(remote)) == []
