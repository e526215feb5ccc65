"""Unit tests of the device agent (device/xqhil_agent.py), run with the host's Python and onnxruntime."""
from __future__ import annotations

import hashlib
import importlib.util
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper, numpy_helper

REPO = Path(__file__).resolve().parents[2]
AGENT = REPO / "device" / "xqhil_agent.py"


def load_agent():
    spec = importlib.util.spec_from_file_location("agent_under_test", AGENT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def mlp(path: Path, opset: int = 17) -> None:
    """x [N, 6] -> MatMul(6x3) -> Add -> y [N, 3], plus a second output z = Relu(y)."""
    rng = np.random.default_rng(3)
    inits = [numpy_helper.from_array(rng.standard_normal((6, 3)).astype(np.float32), "w"),
             numpy_helper.from_array(rng.standard_normal(3).astype(np.float32), "b")]
    nodes = [helper.make_node("MatMul", ["x", "w"], ["m"]), helper.make_node("Add", ["m", "b"], ["y"]),
             helper.make_node("Relu", ["y"], ["z"])]
    graph = helper.make_graph(nodes, "mlp", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 6])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 3]),
                               helper.make_tensor_value_info("z", TensorProto.FLOAT, ["N", 3])], inits)
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)], ir_version=8), str(path))


def sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def workdir(tmp_path: Path, samples: int = 5, tasks=None, **request) -> Path:
    """A board-like work folder: agent, model, inputs.npz and request.json."""
    shutil.copy(AGENT, tmp_path / "xqhil_agent.py")
    mlp(tmp_path / "m.onnx")
    x = np.random.default_rng(0).standard_normal((samples, 6)).astype(np.float32)
    np.savez(tmp_path / "inputs.npz", in0=x)
    body = {
        "protocol": load_agent().PROTOCOL, "deadline_s": 60, "providers": None, "threads": 1,
        "files": {n: sha(tmp_path / n) for n in ("xqhil_agent.py", "m.onnx", "inputs.npz")},
        "models": {"m": "m.onnx"}, "inputs": {"file": "inputs.npz", "names": ["x"]},
        "tasks": tasks if tasks is not None else [
            {"id": "acc", "model": "m", "mode": "accuracy", "batch_size": 2, "output": "out-acc.npz"},
            {"id": "perf", "model": "m", "mode": "performance", "batch_size": 1, "warmup": 2, "repeat": 7}],
        "response": "response.json",
    }
    body.update(request)
    (tmp_path / "request.json").write_text(json.dumps(body))
    return tmp_path


def run_agent(folder: Path, timeout: float = 60):
    proc = subprocess.run([sys.executable, str(folder / "xqhil_agent.py"), str(folder / "request.json")],
                          capture_output=True, text=True, timeout=timeout)
    response = json.loads((folder / "response.json").read_text()) if (folder / "response.json").exists() else None
    return proc, response


def test_accuracy_outputs_match_onnxruntime_and_all_samples_run(tmp_path):
    folder = workdir(tmp_path, samples=5)
    proc, resp = run_agent(folder)
    assert proc.returncode == 0, proc.stderr
    assert resp["ok"] and resp["error"] is None and resp["protocol"] == load_agent().PROTOCOL
    task = resp["tasks"]["acc"]
    assert task["ok"] and task["samples"] == 5 and task["output"]["names"] == ["y", "z"]
    assert task["output"]["sha256"] == sha(folder / "out-acc.npz")
    x = np.load(folder / "inputs.npz")["in0"]
    want = ort.InferenceSession(str(folder / "m.onnx"), providers=["CPUExecutionProvider"]).run(None, {"x": x})
    with np.load(folder / "out-acc.npz") as got:
        assert got["out0"].shape == (5, 3)  # batches of 2, 2, 1 concatenated
        np.testing.assert_allclose(got["out0"], want[0], rtol=1e-6)
        np.testing.assert_allclose(got["out1"], want[1], rtol=1e-6)
    assert resp["agent_sha256"] == sha(AGENT)


def test_performance_reports_every_statistic(tmp_path):
    proc, resp = run_agent(workdir(tmp_path))
    lat = resp["tasks"]["perf"]["latency"]
    assert set(lat) == {"first_ms", "mean_ms", "p50_ms", "p90_ms", "p99_ms", "min_ms", "max_ms", "std_ms",
                        "samples_ms", "timed_runs", "cpu_p50_ms"}
    assert len(lat["samples_ms"]) == 7 and lat["timed_runs"] == 7 and lat["cpu_p50_ms"] >= 0
    assert lat["min_ms"] <= lat["p50_ms"] <= lat["p90_ms"] <= lat["p99_ms"] <= lat["max_ms"]
    assert lat["min_ms"] > 0 and lat["std_ms"] >= 0


def test_fingerprint_and_provider_choice(tmp_path):
    proc, resp = run_agent(workdir(tmp_path))
    device = resp["device"]
    for key in ("arch", "cpu", "cores", "os", "python", "numpy", "onnxruntime", "providers", "emulated"):
        assert key in device
    assert device["onnxruntime"] == ort.__version__ and device["numpy"] == np.__version__
    assert resp["models"]["m"]["providers"][0] == "CPUExecutionProvider"
    agent = load_agent()
    assert agent.choose_providers(None, ["SpaceMITExecutionProvider", "CPUExecutionProvider"]) == [
        "SpaceMITExecutionProvider", "CPUExecutionProvider"]
    assert agent.choose_providers(None, ["CPUExecutionProvider"]) == ["CPUExecutionProvider"]


def test_hello_prints_protocol_and_device():
    proc = subprocess.run([sys.executable, str(AGENT), "--hello"], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0
    data = json.loads(proc.stdout)
    assert data["protocol"] == load_agent().PROTOCOL
    assert data["device"]["python"] == ".".join(map(str, sys.version_info[:3]))


def test_model_that_fails_to_load_is_reported_not_raised(tmp_path):
    folder = workdir(tmp_path)
    (folder / "m.onnx").write_bytes(b"this is not an onnx model")
    body = json.loads((folder / "request.json").read_text())
    body["files"]["m.onnx"] = sha(folder / "m.onnx")
    (folder / "request.json").write_text(json.dumps(body))
    proc, resp = run_agent(folder)
    assert proc.returncode == 0 and resp["ok"]
    assert resp["models"]["m"]["ok"] is False and "InvalidProtobuf" in resp["models"]["m"]["error"]
    assert resp["tasks"]["acc"]["ok"] is False and "not loaded" in resp["tasks"]["acc"]["error"]


def test_model_that_fails_to_run_is_reported(tmp_path):
    folder = workdir(tmp_path)
    np.savez(folder / "inputs.npz", in0=np.zeros((2, 5), np.float32))  # wrong feature size
    body = json.loads((folder / "request.json").read_text())
    body["files"]["inputs.npz"] = sha(folder / "inputs.npz")
    (folder / "request.json").write_text(json.dumps(body))
    proc, resp = run_agent(folder)
    assert resp["ok"] and resp["tasks"]["acc"]["ok"] is False
    assert "INVALID_ARGUMENT" in resp["tasks"]["acc"]["error"] or "dimension" in resp["tasks"]["acc"]["error"]


def test_protocol_mismatch_is_a_clear_error(tmp_path):
    proc, resp = run_agent(workdir(tmp_path, protocol=99))
    assert proc.returncode == 2
    assert resp["error"]["type"] == "ProtocolMismatch" and "99" in resp["error"]["message"]


def test_checksum_mismatch_stops_before_running(tmp_path):
    folder = workdir(tmp_path)
    with open(folder / "m.onnx", "ab") as handle:
        handle.write(b"\0")
    proc, resp = run_agent(folder)
    assert proc.returncode == 2 and resp["error"]["type"] == "ChecksumMismatch"
    assert "m.onnx" in resp["error"]["message"] and resp["tasks"] == {}


@pytest.mark.parametrize("name", ["../escape.onnx", "/etc/passwd", "a/b.onnx", ".hidden"])
def test_file_names_never_leave_the_work_folder(tmp_path, name):
    proc, resp = run_agent(workdir(tmp_path, models={"m": name}))
    assert proc.returncode == 2 and resp["error"]["type"] == "BadRequest"


def test_unknown_provider_is_reported(tmp_path):
    proc, resp = run_agent(workdir(tmp_path, providers=["NoSuchExecutionProvider"]))
    assert proc.returncode == 2 and resp["error"]["type"] == "ProviderUnavailable"
    assert "CPUExecutionProvider" in resp["error"]["message"]


def test_deadline_makes_the_agent_give_up_instead_of_hanging(tmp_path):
    tasks = [{"id": "perf", "model": "m", "mode": "performance", "batch_size": 1, "warmup": 0,
              "repeat": 10_000_000}]
    proc, resp = run_agent(workdir(tmp_path, tasks=tasks, deadline_s=2.0), timeout=60)
    assert proc.returncode == 4
    assert resp["error"]["type"] == "DeadlineExceeded" and "task perf" in resp["error"]["message"]


def test_schema_noise_is_filtered_from_stderr(tmp_path, capfd):
    agent = load_agent()
    with agent.QuietStderr():
        os.write(2, b"Schema error: Trying to register schema with name X\n\nreal problem\n")
    assert capfd.readouterr().err == "real problem\n"


def test_usage_error_without_request():
    proc = subprocess.run([sys.executable, str(AGENT)], capture_output=True, text=True, timeout=30)
    assert proc.returncode == 2 and "usage" in proc.stderr


def test_agent_is_stdlib_numpy_onnxruntime_only():
    import ast

    tree = ast.parse(AGENT.read_text())
    modules = {a.name.split(".")[0] for n in ast.walk(tree) if isinstance(n, ast.Import) for a in n.names}
    modules |= {n.module.split(".")[0] for n in ast.walk(tree) if isinstance(n, ast.ImportFrom) and n.module}
    allowed = set(sys.stdlib_module_names) | {"numpy", "onnxruntime"}
    assert modules <= allowed, modules - allowed
    ast.parse(AGENT.read_text(), feature_version=(3, 8))  # Python 3.8 grammar


def test_host_and_agent_speak_the_same_protocol():
    from xqhil.protocol import PROTOCOL_VERSION

    assert load_agent().PROTOCOL == PROTOCOL_VERSION


def first_task(**change):
    task = {"id": "acc", "model": "m", "mode": "accuracy", "batch_size": 2, "output": "out-acc.npz"}
    task.update(change)
    return [task]


# request field -> malformed value -> the field the BadRequest message names (findings D16)
MALFORMED = [
    ("files-list", {"files": ["m.onnx"]}, "files"),
    ("models-list", {"models": ["m.onnx"]}, "models"),
    ("inputs-string", {"inputs": "inputs.npz"}, "inputs"),
    ("input-names-string", {"inputs": {"file": "inputs.npz", "names": "x"}}, "inputs.names"),
    ("tasks-dict", {"tasks": {"id": "acc"}}, "tasks"),
    ("task-string", {"tasks": ["acc"]}, "tasks[0]"),
    ("batch-size-string", {"tasks": first_task(batch_size="abc")}, "tasks[0].batch_size"),
    ("repeat-float", {"tasks": first_task(mode="performance", repeat=1e9)}, "tasks[0].repeat"),
    ("providers-string", {"providers": "CPUExecutionProvider"}, "providers"),
    ("threads-string", {"threads": "4"}, "threads"),
    ("deadline-string", {"deadline_s": "abc"}, "deadline_s"),
    ("deadline-negative", {"deadline_s": -1}, "deadline_s"),
]


@pytest.mark.parametrize("change,field", [row[1:] for row in MALFORMED], ids=[row[0] for row in MALFORMED])
def test_malformed_request_is_a_bad_request_not_a_crash(tmp_path, change, field):
    proc, resp = run_agent(workdir(tmp_path, **change))
    assert proc.returncode == 2, proc.stderr
    assert resp["error"]["type"] == "BadRequest" and f"field {field} must be" in resp["error"]["message"]
    assert "Traceback" not in proc.stderr and resp["tasks"] == {}
    assert "C, P, U" not in resp["error"]["message"]  # a string of providers is never iterated per letter


def test_huge_deadline_is_cut_to_the_documented_maximum_and_kept(tmp_path):
    agent = load_agent()
    assert agent.deadline_of({"deadline_s": 1e308}) == agent.MAX_DEADLINE_S
    assert agent.deadline_of({"deadline_s": float("inf")}) == agent.MAX_DEADLINE_S
    assert agent.deadline_of({}) == agent.DEFAULT_DEADLINE_S
    timer = agent.Agent(str(tmp_path / "request.json")).watchdog(1e308)
    time.sleep(0.2)
    assert timer.is_alive() and timer.interval == agent.MAX_DEADLINE_S  # the watchdog thread did not die
    timer.cancel()
    proc, resp = run_agent(workdir(tmp_path, deadline_s=1e308))
    assert proc.returncode == 0 and resp["ok"] and "Traceback" not in proc.stderr


def test_truncated_inputs_file_is_a_bad_request(tmp_path):
    folder = workdir(tmp_path)
    data = (folder / "inputs.npz").read_bytes()
    (folder / "inputs.npz").write_bytes(data[: len(data) // 2])
    body = json.loads((folder / "request.json").read_text())
    body["files"]["inputs.npz"] = sha(folder / "inputs.npz")
    (folder / "request.json").write_text(json.dumps(body))
    proc, resp = run_agent(folder)
    assert proc.returncode == 2 and resp["error"]["type"] == "BadRequest"
    assert "inputs" in resp["error"]["message"] and "Traceback" not in proc.stderr


def test_request_in_a_missing_folder_is_one_line_not_a_traceback(tmp_path):
    proc = subprocess.run([sys.executable, str(AGENT), str(tmp_path / "gone" / "request.json")],
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    assert proc.stderr.count("\n") == 1 and "cannot write the response" in proc.stderr


def test_full_disk_writing_the_response_exits_5_with_one_line(tmp_path):
    folder = workdir(tmp_path)
    os.symlink("/dev/full", folder / "response.json.tmp")  # the kernel answers ENOSPC to every write
    proc, _ = run_agent(folder)
    assert proc.returncode == 5 and "No space left on device" in proc.stderr and "Traceback" not in proc.stderr


def test_full_disk_writing_outputs_is_disk_full_not_a_task_failure(tmp_path):
    folder = workdir(tmp_path)
    os.symlink("/dev/full", folder / "out-acc.npz")
    proc, resp = run_agent(folder)
    assert proc.returncode == 5, proc.stderr
    assert resp["error"]["type"] == "DiskFull" and "out-acc.npz" in resp["error"]["message"]


class RecordingSession(ort.InferenceSession):
    """A real onnxruntime session that notes the order of its runs in a shared log."""

    def __init__(self, path, name, log):
        super().__init__(str(path), providers=["CPUExecutionProvider"])
        self.name, self.log = name, log

    def run(self, *args, **kwargs):
        self.log.append(self.name)
        return super().run(*args, **kwargs)


def test_interleaved_timing_alternates_the_models_abba(tmp_path):
    agent, log = load_agent(), []
    mlp(tmp_path / "m.onnx")
    a, b = RecordingSession(tmp_path / "m.onnx", "a", log), RecordingSession(tmp_path / "m.onnx", "b", log)
    feed = {"x": np.ones((1, 6), np.float32)}
    stats = agent.time_interleaved(np, [(a, feed, 1, 4), (b, feed, 1, 4)])
    assert log == ["a", "b"] + ["a", "b"] + ["a", "b", "b", "a", "a", "b", "b", "a"]  # first, warm-up, timed
    assert [s["timed_runs"] for s in stats] == [4, 4] and all(len(s["samples_ms"]) == 4 for s in stats)


def test_interleave_group_times_its_tasks_together_and_a_broken_one_fails_alone(tmp_path):
    perf = {"mode": "performance", "batch_size": 1, "warmup": 1, "repeat": 5, "interleave": "latency"}
    tasks = [dict(perf, id="fp32-performance", model="m"), dict(perf, id="int8-performance", model="m2"),
             dict(perf, id="gone-performance", model="missing")]
    folder = workdir(tmp_path, tasks=tasks, models={"m": "m.onnx", "m2": "m.onnx"})
    proc, resp = run_agent(folder)
    assert proc.returncode == 0, proc.stderr
    together = ["fp32-performance", "int8-performance"]
    for task_id in together:
        task = resp["tasks"][task_id]
        assert task["ok"] and task["interleaved"] == together and task["latency"]["timed_runs"] == 5
    gone = resp["tasks"]["gone-performance"]
    assert not gone["ok"] and "not loaded" in gone["error"] and "interleaved" not in gone


def test_min_time_keeps_timing_past_repeat_and_reports_an_even_subsample(tmp_path):
    agent = load_agent()
    mlp(tmp_path / "m.onnx")
    session = ort.InferenceSession(str(tmp_path / "m.onnx"), providers=["CPUExecutionProvider"])
    feed = {"x": np.ones((1, 6), np.float32)}
    [stats] = agent.time_interleaved(np, [(session, feed, 0, 3)], min_time_s=0.5)
    assert stats["timed_runs"] > agent.MAX_SAMPLES  # a tiny model runs thousands of times in 0.5 s
    assert agent.MAX_SAMPLES // 2 <= len(stats["samples_ms"]) <= agent.MAX_SAMPLES


def test_a_subsample_keeps_runs_after_either_model_alike():
    # interleaved rounds go A B, B A, A B...: every other A follows B. Every k-th sample with k even kept
    # only the A runs that followed A (on the 0.2 ms demo 4-5% off the median of all runs); now every k-th pair
    agent = load_agent()
    for timed in (1001, 1500, 2000, 3000, 4101):
        after_same, after_other = 1.0, 1.1  # ms: alternate samples of one model
        samples = [after_same if i % 2 == 0 else after_other for i in range(timed)]
        stats = agent.latency_stats(np, samples[0], samples)
        shown = stats["samples_ms"]
        assert stats["timed_runs"] == timed and agent.MAX_SAMPLES // 2 <= len(shown) <= agent.MAX_SAMPLES
        assert abs(shown.count(after_same) - shown.count(after_other)) <= 1


def test_interleave_and_min_time_of_the_wrong_type_are_bad_requests(tmp_path):
    for field, value in (("interleave", 3), ("min_time_s", "1")):
        task = {"id": "p", "model": "m", "mode": "performance", "batch_size": 1, field: value}
        (tmp_path / field).mkdir()
        proc, resp = run_agent(workdir(tmp_path / field, tasks=[task]))
        assert proc.returncode == 2 and resp["error"]["type"] == "BadRequest"
        assert f"tasks[0].{field}" in resp["error"]["message"]


def test_loop_serves_many_requests_in_one_process_until_its_input_ends(tmp_path):
    """--loop (a farm lease's agent): the hello line, then one answer line per request named on stdin, each
    request handled as a single run would be; a request's deadline does not outlive it; a name outside a
    subfolder and an environment (it applies before the runtime import) are bad requests; EOF ends it."""
    lease = tmp_path / "lease"
    lease.mkdir()
    shutil.copy(AGENT, lease / "xqhil_agent.py")
    for name, request in (("j1", {"deadline_s": 1.0}), ("j2", {}), ("j3", {"environment": {"OMP_NUM_THREADS": "1"}})):
        (lease / name).mkdir()
        workdir(lease / name, **request)
    proc = subprocess.Popen([sys.executable, "xqhil_agent.py", "--loop"], cwd=lease, stdin=subprocess.PIPE,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        hello = json.loads(proc.stdout.readline())
        assert hello["loop"] is True and hello["protocol"] == load_agent().PROTOCOL and hello["device"]["arch"]

        def ask(name: str) -> dict:
            proc.stdin.write(name + "\n")
            proc.stdin.flush()
            return json.loads(proc.stdout.readline())

        assert ask("j1/request.json") == {"done": "j1/request.json", "exit": 0}
        time.sleep(1.5)  # past j1's deadline of 1 s: the loop serves on
        assert ask("j2/request.json") == {"done": "j2/request.json", "exit": 0}
        for job in ("j1", "j2"):
            response = json.loads((lease / job / "response.json").read_text())
            assert response["ok"] and response["tasks"]["acc"]["ok"] and response["tasks"]["perf"]["ok"]
            with np.load(lease / job / "out-acc.npz") as out:
                x = np.load(lease / job / "inputs.npz")["in0"]
                ref = ort.InferenceSession(str(lease / job / "m.onnx"), providers=["CPUExecutionProvider"])
                np.testing.assert_allclose(out["out0"], ref.run(None, {"x": x})[0], rtol=1e-5, atol=1e-6)
        assert ask("../j1/request.json")["exit"] == 2 and ask("j1/../../x/request.json")["exit"] == 2
        assert ask("j3/request.json")["exit"] == 2
        assert "--loop" in json.loads((lease / "j3" / "response.json").read_text())["error"]["message"]
        proc.stdin.close()
        assert proc.wait(timeout=30) == 0 and proc.stdout.read() == ""
    finally:
        proc.kill()
        proc.wait()
