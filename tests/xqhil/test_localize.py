"""Localisation of a chip-runtime bug (xqhil localize / replay, quantize-and-verify --localize) on --board host
with a runtime that miscomputes one node (faults/sitecustomize.py), and the graph tools it uses."""
from __future__ import annotations

import json
import math
import sys
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest

from xqhil_testlib import FAULTS, run_cli, verify
from xquant.graph_cut import boundaries, cut, expose


def faulty(fault: str, refuse: bool = False) -> str:
    extra = " XQHIL_FAULT_REFUSE_QOUT=1" if refuse else ""
    return f"env PYTHONPATH={FAULTS} XQHIL_FAULT={fault}{extra} {sys.executable}"


def localize(quantized, out: Path, python: str, *extra: str):
    code, stdout, stderr = run_cli(["localize", str(quantized["config"]), "--qmodel", str(quantized["qmodel"]),
                                    "--board", "host", "--python", python, "--out", str(out), "-q", *extra])
    result = out / "localize.json"
    return code, (json.loads(result.read_text()) if result.exists() else None), stdout + stderr


def test_boundaries_follow_the_quantize_nodes_and_a_cut_recomputes_one(quantized):
    model = onnx.load(str(quantized["qmodel"]))
    bounds = boundaries(model)
    assert [b.tensor for b in bounds] == ["input_quantized", "r1_quantized", "p1_quantized", "f1_quantized",
                                          "logits_quantized", "logits"]
    conv = bounds[1]
    assert conv.ops == (("conv", "Conv"), ("relu", "Relu")) and conv.inputs == ("input_quantized",)
    assert conv.op == "Conv" and bounds[-1].op == "DequantizeLinear"
    x = np.random.default_rng(0).standard_normal((1, 1, 8, 8)).astype(np.float32)
    full = ort.InferenceSession(expose(model, ["input_quantized", "r1_quantized"]).SerializeToString())
    logits, q_in, q_r1 = full.run(None, {"input": x})
    assert q_r1.dtype == np.int8 or q_r1.dtype == np.uint8
    sub = cut(model, {"input_quantized"}, ["r1_quantized"])
    assert [i.name for i in sub.graph.input] == ["input_quantized"]
    assert {n.op_type for n in sub.graph.node} == {"DequantizeLinear", "Conv", "Relu", "QuantizeLinear"}
    (again,) = ort.InferenceSession(sub.SerializeToString()).run(None, {"input_quantized": q_in})
    assert np.array_equal(again, q_r1)


@pytest.mark.parametrize("fault,node,op", [("node:scale:1.05:conv", "conv", "Conv"),
                                           ("node:zp::fc", "fc", "Gemm")])
def test_localize_names_the_faulty_node_and_its_bundle_replays(quantized, tmp_path, fault, node, op):
    code, result, text = localize(quantized, tmp_path / "loc", faulty(fault))
    assert code == 1, text
    assert result["status"] == "localised" and result["method"] == "expose" and result["node"] == node
    assert result["op"] == op and result["board_runs"] == 3  # pick samples, exposed boundaries, confirmation
    bundle = Path(result["bundle"])
    assert bundle.name == f"{op.lower()}-1"
    assert sorted(p.name for p in bundle.iterdir()) == ["README.md", "chip.npz", "expected_pc.npz",
                                                       "fingerprint.json", "inputs.npz", "model.onnx"]
    fingerprint = json.loads((bundle / "fingerprint.json").read_text())
    assert fingerprint["provider"] == "CPUExecutionProvider" and fingerprint["runtime"]
    assert f"xqhil replay {bundle} --board host" in (bundle / "README.md").read_text()
    code, out, err = run_cli(["replay", str(bundle), "--board", "host", "--python", faulty(fault), "-q"])
    assert code == 1 and "DEPARTS" in out, err
    code, out, err = run_cli(["replay", str(bundle), "--board", "host", "-q"])
    assert code == 0 and "agrees" in out, err


def test_a_stale_output_depends_on_run_history_so_it_is_bisected(quantized, tmp_path):
    """A node that returns the previous run's value: exposing the boundaries (another sample order) changes
    the chip's outputs, so localisation bisects, and still names the node."""
    code, result, text = localize(quantized, tmp_path / "loc", faulty("node:stale::conv"))
    assert code == 1 and result["node"] == "conv" and result["method"] == "bisect", text
    assert "exposing the boundaries changed the chip's outputs: bisection" in result["notes"]
    code, _, err = run_cli(["replay", result["bundle"], "--board", "host", "--python", faulty("node:stale::conv"),
                            "-q"])
    assert code == 1, err


def test_clean_board_localises_nothing(quantized, tmp_path):
    code, result, text = localize(quantized, tmp_path / "loc", faulty("none"))
    assert code == 0, text
    assert result["status"] == "clean" and result["op"] is None and result["board_runs"] == 1
    assert not (tmp_path / "loc" / "repro").exists()


def test_a_runtime_that_refuses_exposed_outputs_is_bisected(quantized, tmp_path):
    code, result, text = localize(quantized, tmp_path / "loc", faulty("node:signflip::fc", refuse=True))
    assert code == 1, text
    assert result["method"] == "bisect" and result["node"] == "fc" and result["status"] == "localised"
    assert any("refused" in n for n in result["notes"])
    layers = len(boundaries(onnx.load(str(quantized["qmodel"]))))
    assert result["board_runs"] - 1 <= 2 * math.log2(layers)  # beyond the run that picks the samples
    code, _, err = run_cli(["replay", result["bundle"], "--board", "host", "--python",
                            faulty("node:signflip::fc", refuse=True), "-q"])
    assert code == 1, err


def test_verify_localises_a_runtime_failure_and_never_turns_it_off(quantized, tmp_path):
    python = faulty("node:scale:1.05:conv")
    code, report, stdout, _ = verify(quantized["config"], "host", tmp_path / "auto", "--qmodel",
                                     str(quantized["qmodel"]), "--python", python)
    assert code == 1 and report["localization"]["node"] == "conv"
    assert report["localization"]["board_runs"] == 2  # beyond the verify run: exposed boundaries, confirmation
    assert "localised to Conv 'conv'" in stdout
    markdown = (tmp_path / "auto" / "verify.md").read_text()
    assert "## Localisation" in markdown and "quantization SNR dB | runtime SNR dB" in markdown
    layers = {r["tensor"]: r for r in report["localization"]["layers"]["rows"]}
    assert layers["input_quantized"]["runtime_snr_db"] == 200.0  # the input is quantized alike on both
    assert layers["r1_quantized"]["runtime_snr_db"] < 40.0 and layers["r1_quantized"]["quant_snr_db"] > 30.0
    assert all(r["quant_snr_db"] is not None for r in layers.values())
    assert (tmp_path / "auto" / "repro" / "conv-1" / "model.onnx").is_file()
    code, report, _, _ = verify(quantized["config"], "host", tmp_path / "never", "--qmodel",
                                str(quantized["qmodel"]), "--python", python, "--localize", "never")
    assert code == 1 and report["localization"] is None and not (tmp_path / "never" / "repro").exists()


def test_replay_of_a_folder_that_is_no_bundle_is_bad_input(tmp_path):
    code, _, err = run_cli(["replay", str(tmp_path), "--board", "host", "-q"])
    assert code == 2 and "is not a repro bundle" in err and "Traceback" not in err


def test_an_exact_match_departure_that_keeps_top1_is_a_warning_with_its_op(quantized, tmp_path):
    """A Conv off by 0.03 %: no top-1 changes, but the CPU provider promises bit-identical INT8, so the run
    warns (exit 0) and the warning names the op."""
    code, report, _, _ = verify(quantized["config"], "host", tmp_path / "out", "--qmodel", str(quantized["qmodel"]),
                                "--python", faulty("node:scale:1.0003:conv"))
    assert code == 0 and report["verdict"] == "warn"
    assert report["runtime"]["agreement"]["disagreement_points"] < 2.0
    runtime = [r for r in report["rules"] if r["rule"] == "int8-runtime"]
    assert runtime and runtime[0]["level"] == "warn" and "localised to Conv 'conv'" in runtime[0]["reason"]


def test_localize_and_replay_on_the_qemu_board(quantized, tmp_path, rootfs, qemu_python):
    fault = f"env PYTHONPATH={FAULTS} XQHIL_FAULT=node:zp::fc sh {FAULTS}/qemu-board.sh {sys.executable} {rootfs}"
    code, stdout, stderr = run_cli(["localize", str(quantized["config"]), "--qmodel", str(quantized["qmodel"]),
                                    "--board", f"qemu:{rootfs}", "--python", fault, "--out", str(tmp_path), "-q"])
    assert code == 1, stderr
    result = json.loads((tmp_path / "localize.json").read_text())
    assert result["node"] == "fc" and result["status"] == "localised"
    code, _, err = run_cli(["replay", result["bundle"], "--board", f"qemu:{rootfs}", "--python", fault, "-q"])
    assert code == 1, err
    code, _, err = run_cli(["replay", result["bundle"], "--board", f"qemu:{rootfs}", "--python", qemu_python, "-q"])
    assert code == 0, err


def test_localize_and_replay_over_loopback_ssh(quantized, tmp_path, sshd):
    ssh = ["--board", sshd.url, "--ssh-key", str(sshd.key), "--known-hosts", str(sshd.known_hosts)]
    fault = faulty("node:swap::conv")
    code, _, stderr = run_cli(["localize", str(quantized["config"]), "--qmodel", str(quantized["qmodel"]), *ssh,
                               "--python", fault, "--out", str(tmp_path), "-q"])
    assert code == 1, stderr
    result = json.loads((tmp_path / "localize.json").read_text())
    assert result["node"] == "conv" and result["status"] == "localised"
    code, _, err = run_cli(["replay", result["bundle"], *ssh, "--python", fault, "-q"])
    assert code == 1, err
    code, _, err = run_cli(["replay", result["bundle"], *ssh, "--python", sys.executable, "-q"])
    assert code == 0, err


STANDIN = Path(__file__).resolve().parent / "spacemit_standin"


def test_board_environment_reaches_the_runtime_and_the_fingerprint(quantized, tmp_path):
    """--board-env sets SpaceMIT EP switches on the board before onnxruntime loads; a stand-in spacemit_ort
    module honours them (the real EP is not available here); verify.json records them."""
    dump = tmp_path / "dump"
    code, report, _, stderr = verify(quantized["config"], "host", tmp_path / "out", "--qmodel",
                                     str(quantized["qmodel"]), "--python", f"env PYTHONPATH={STANDIN} {sys.executable}",
                                     "--board-env", f"SPACEMIT_EP_DUMP_TENSORS={dump}",
                                     "--board-env", "SPACEMIT_EP_DISABLE_OP_TYPE_FILTER=Conv",
                                     "--provider-option", "CPUExecutionProvider:arena_extend_strategy=kSameAsRequested")
    assert code == 0, stderr
    environment = report["device"]["environment"]
    assert environment == {"SPACEMIT_EP_DUMP_TENSORS": str(dump), "SPACEMIT_EP_DISABLE_OP_TYPE_FILTER": "Conv"}
    assert report["device"]["provider_options"] == {"CPUExecutionProvider":
                                                    {"arena_extend_strategy": "kSameAsRequested"}}
    placement = json.loads((dump / "placement-int8.json").read_text())
    assert placement["conv"] == "CPU" and placement["fc"] == "SpaceMIT"
    assert (dump / "int8-1.npz").is_file() and (dump / "fp32-1.npz").is_file()


def test_malformed_board_env_is_bad_input(quantized, tmp_path):
    code, _, _, stderr = verify(quantized["config"], "host", tmp_path / "out", "--qmodel", str(quantized["qmodel"]),
                                "--board-env", "lower=1")
    assert code == 2 and "--board-env 'lower=1'" in stderr and not (tmp_path / "out").exists()


def test_an_agent_that_ignores_the_environment_is_refused():
    from xqhil.errors import HilError
    from xqhil.protocol import Request, check_applied

    request = Request(models={}, input_names=[], tasks=[], environment={"SPACEMIT_EP_DUMP_TENSORS": "/tmp/d"})
    check_applied({"device": {"environment": {"SPACEMIT_EP_DUMP_TENSORS": "/tmp/d"}}}, request, "board")
    with pytest.raises(HilError, match="did not apply the requested environment"):
        check_applied({"device": {"arch": "riscv64"}}, request, "board")  # an agent before 0.2


def _deep_project(folder: Path, layers: int) -> Path:
    """A chain of ``layers`` Conv 3x3 (4 channels) + Relu, then GlobalAveragePool, Flatten, Gemm."""
    from onnx import TensorProto, helper, numpy_helper

    from xqhil_testlib import make_project

    config = make_project(folder)
    rng = np.random.default_rng(5)
    inits, nodes, prev = [], [], "input"
    for i in range(layers):
        cin = 1 if i == 0 else 4
        inits += [numpy_helper.from_array((rng.standard_normal((4, cin, 3, 3)) * (0.6 / cin ** 0.5))
                                          .astype(np.float32), f"w{i}"),
                  numpy_helper.from_array(np.full(4, 0.05, np.float32), f"b{i}")]
        nodes += [helper.make_node("Conv", [prev, f"w{i}", f"b{i}"], [f"c{i}"], pads=[1, 1, 1, 1], name=f"conv{i}"),
                  helper.make_node("Relu", [f"c{i}"], [f"r{i}"], name=f"relu{i}")]
        prev = f"r{i}"
    inits.append(numpy_helper.from_array(rng.standard_normal((10, 4)).astype(np.float32), "wf"))
    nodes += [helper.make_node("GlobalAveragePool", [prev], ["p"], name="gap"),
              helper.make_node("Flatten", ["p"], ["f"], name="flatten"),
              helper.make_node("Gemm", ["f", "wf"], ["logits"], transB=1, name="fc")]
    graph = helper.make_graph(nodes, "deep", [helper.make_tensor_value_info("input", TensorProto.FLOAT,
                                                                            ["batch", 1, 8, 8])],
                              [helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["batch", 10])], inits)
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=8),
              str(folder / "tiny.onnx"))
    return config


def test_a_100_layer_model_costs_few_board_runs(tmp_path):
    import xquant

    config = _deep_project(tmp_path / "deep", 100)
    xquant.quantize_onnx_model(str(config))
    project = {"config": config, "qmodel": tmp_path / "deep" / "work" / "tiny.q.onnx"}
    layers = len(boundaries(onnx.load(str(project["qmodel"]))))
    assert layers >= 100
    code, result, text = localize(project, tmp_path / "expose", faulty("node:zp::conv63"))
    assert code == 1 and result["node"] == "conv63" and result["method"] == "expose", text
    assert result["board_runs"] - 1 <= 3  # beyond the run that found the departing samples
    code, result, text = localize(project, tmp_path / "bisect", faulty("node:zp::conv63"), "--bisect")
    assert code == 1 and result["node"] == "conv63" and result["method"] == "bisect", text
    assert result["board_runs"] - 1 <= 2 * math.log2(layers)


def test_inventory_env_and_provider_options_reach_the_board(quantized, tmp_path):
    dump = tmp_path / "dump"
    inventory = tmp_path / "boards.toml"
    inventory.write_text(f'[boards.k1-standin]\nkind = "host"\npython = "env PYTHONPATH={STANDIN} {sys.executable}"\n'
                         f'env = {{ SPACEMIT_EP_DUMP_TENSORS = "{dump}", SPACEMIT_EP_DISABLE_OP_NAME_FILTER = "fc" }}\n'
                         'provider_options = { CPUExecutionProvider = '
                         '{ arena_extend_strategy = "kSameAsRequested" } }\n')
    code, report, _, stderr = verify(quantized["config"], "k1-standin", tmp_path / "out", "--qmodel",
                                     str(quantized["qmodel"]), "--inventory", str(inventory),
                                     "--board-env", "SPACEMIT_EP_DISABLE_OP_NAME_FILTER=conv")  # the flag wins
    assert code == 0, stderr
    assert report["device"]["environment"] == {"SPACEMIT_EP_DUMP_TENSORS": str(dump),
                                               "SPACEMIT_EP_DISABLE_OP_NAME_FILTER": "conv"}
    assert report["device"]["provider_options"]["CPUExecutionProvider"] == {"arena_extend_strategy":
                                                                            "kSameAsRequested"}
    placement = json.loads((dump / "placement-int8.json").read_text())
    assert placement["conv"] == "CPU" and placement["fc"] == "SpaceMIT"


def test_inventory_env_with_a_bad_name_is_bad_input(quantized, tmp_path):
    inventory = tmp_path / "boards.toml"
    inventory.write_text('[boards.b]\nkind = "host"\nenv = { "bad-name" = "1" }\n')
    code, _, _, stderr = verify(quantized["config"], "b", tmp_path / "out", "--inventory", str(inventory))
    assert code == 2 and "env.bad-name" in stderr


def test_dashboard_links_the_repro_bundle_of_a_localised_run(tmp_path):
    from xqhil.dashboard.model import report_links

    bundle = tmp_path / "run" / "repro" / "conv-1"
    bundle.mkdir(parents=True)
    (bundle / "README.md").write_text("# Repro\n")
    doc = {"reports": {"md": str(tmp_path / "run" / "verify.md")},
           "localization": {"status": "localised", "op": "Conv", "bundle": str(bundle)}}
    links = {link.label: link for link in report_links(doc, tmp_path / "dash")}
    assert links["repro Conv"].href == "../run/repro/conv-1/README.md" and links["repro Conv"].exists
    assert [link.label for link in report_links({"localization": None}, tmp_path)] == []


def test_tolerances_are_exact_on_the_cpu_provider_and_one_step_elsewhere():
    from xqhil.localize.compare import difference, pick_samples, tolerance_for

    pc = np.zeros(1000, np.int8)
    chip = pc.copy()
    chip[:5] = 1  # one step off on 0.5 % of the values
    assert difference(pc, chip, tolerance_for("CPUExecutionProvider"))["departs"]
    assert not difference(pc, chip, tolerance_for("SpaceMITExecutionProvider"))["departs"]
    chip[:20] = 1  # 2 %: too many
    assert difference(pc, chip, tolerance_for("SpaceMITExecutionProvider"))["departs"]
    chip[:20], chip[0] = 0, 2  # two steps
    assert difference(pc, chip, tolerance_for("SpaceMITExecutionProvider"))["departs"]
    a = np.arange(12, dtype=np.float32).reshape(4, 3)
    b = a.copy()
    b[2, 1] += 5.0
    b[0, 0] += 1.0
    assert pick_samples([a], [b], 4) == [2, 0] and pick_samples([a], [a], 4) == []


def test_cut_inputs_without_a_sample_axis_are_fed_whole():
    """A cut of a detector reads tensors computed from shapes alone (an anchor grid [A, 1], no sample axis)
    beside activations [batch, C]: the localiser's runs hand the agent the anchors per sample, not split on
    axis 0 (found on NudeNet's YOLOv8n, where every cut after the head's Concat failed with InvalidArgument)."""
    import onnx
    from onnx import TensorProto, helper
    from xqhil.localize.runs import batch_axes

    graph = helper.make_graph(
        [helper.make_node("Identity", ["act"], ["a"]), helper.make_node("Identity", ["anchors"], ["b"])], "cut",
        [helper.make_tensor_value_info("act", TensorProto.FLOAT, ["batch", 3]),
         helper.make_tensor_value_info("anchors", TensorProto.FLOAT, [5, 1])],
        [helper.make_tensor_value_info("a", TensorProto.FLOAT, ["batch", 3]),
         helper.make_tensor_value_info("b", TensorProto.FLOAT, [5, 1])])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    onnx.checker.check_model(model)
    values = [np.zeros((1, 3), np.float32), np.zeros((1, 5, 1), np.float32)]  # samples-first, one sample
    assert batch_axes(model, ["act", "anchors"], values) == [0, None]
