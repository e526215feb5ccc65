"""Localisation bench: a board whose onnxruntime miscomputes exactly one chosen node; is that node named?

    python bench/localize.py [--board host|qemu|ssh] [--rows all|quick] [--out DIR]

Per row: fault kind, op type, model, the node named (and whether it is the injected one), board runs beyond
the run that picks the samples, seconds, and whether the repro bundle replays (exit 1 on the faulty board,
0 on a clean one). Models: a synthetic mixed-op model (Conv, Add, MaxPool, Concat, Sigmoid, MatMul, Softmax),
the bundled demo CNN (trained on Fashion-MNIST) and, when the zoo cache has them (`python bench/zoo.py
--models ppocr_cls nudenet_320n` writes their level-0 INT8 models), two real pretrained models: PaddleOCR's
text-line orientation classifier (MobileNetV3, 149 boundaries) and NudeNet's YOLOv8n detector (Resize,
Concat, Sigmoid in its neck and head). Clean rows must localise nothing;
`bisect` rows run on a runtime that refuses exposed quantized outputs. Faults: tests/xqhil/faults.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from tabulate import tabulate

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "host"))
sys.path.insert(0, str(REPO / "tests" / "xqhil"))

from xqhil.boards import resolve_board  # noqa: E402
from xqhil.errors import HilError  # noqa: E402
from xqhil.localize import Board, localize_config, replay  # noqa: E402
from xqhil_testlib import FAULTS, start_sshd  # noqa: E402

ZOO = Path(os.environ.get("XQHIL_ZOO_CACHE") or os.path.expanduser("~/.cache/xqhil-zoo")) / "models"
ZOO_MODELS = ("ppocr_cls", "nudenet_320n")  # real pretrained: bench/zoo.py writes their level-0 INT8 models

# (model, fault kind, fault argument, node, op); clean rows have no node; "bisect" runs refuse exposure
ROWS = [
    ("mixed", "scale", "1.01", "conv1", "Conv"), ("mixed", "zp", "", "add", "Add"),
    ("mixed", "swap", "", "concat", "Concat"), ("mixed", "clamp", "0.5", "pool", "MaxPool"),
    ("mixed", "signflip", "", "matmul", "MatMul"), ("mixed", "zero", "", "sigmoid", "Sigmoid"),
    ("mixed", "clamp", "0.5", "softmax", "Softmax"), ("mixed", "swap", "", "conv2", "Conv"),
    ("mixed", "none", "", "", ""), ("mixed", "zp", "", "add", "Add", "bisect"),
    ("fashion_cnn", "scale", "1.01", "/head/head.1/head.1.0/Conv", "Conv"),
    ("fashion_cnn", "signflip", "", "", "Gemm"),
    ("fashion_cnn", "none", "", "", ""),
    ("ppocr_cls", "zp", "", "Add@5", "Add"), ("ppocr_cls", "swap", "", "", "GlobalAveragePool"),
    ("ppocr_cls", "zero", "", "HardSigmoid@3", "HardSigmoid"), ("ppocr_cls", "clamp", "0.3", "", "Gemm"),
    ("ppocr_cls", "none", "", "", ""), ("ppocr_cls", "scale", "1.01", "", "Softmax", "bisect"),
    ("mixed", "stale", "", "conv3", "Conv"),
    ("nudenet_320n", "scale", "1.01", "", "Resize"), ("nudenet_320n", "zp", "", "", "Concat"),
    ("nudenet_320n", "signflip", "", "", "Conv"), ("nudenet_320n", "zero", "", "", "Sigmoid"),
    ("nudenet_320n", "none", "", "", ""),
]
QUICK = {0, 3, 8, 9, 10, 13}


def build_mixed(path: Path) -> None:
    """Conv -> Relu -> Conv, Add (residual) -> MaxPool -> Conv 1x1, Concat -> Sigmoid -> GAP -> Flatten ->
    MatMul -> Softmax: input 'input' [N, 3, 16, 16]."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(7)

    def w(name, *shape, s=0.3):
        return numpy_helper.from_array((rng.standard_normal(shape) * s).astype(np.float32), name)

    inits = [w("w1", 8, 3, 3, 3), w("b1", 8, s=0.1), w("w2", 8, 8, 3, 3, s=0.15), w("b2", 8, s=0.1),
             w("w3", 4, 8, 1, 1), w("b3", 4, s=0.1), w("wm", 12, 10, s=1.0)]
    nodes = [
        helper.make_node("Conv", ["input", "w1", "b1"], ["t0"], pads=[1, 1, 1, 1], name="conv1"),
        helper.make_node("Relu", ["t0"], ["t1"], name="relu1"),
        helper.make_node("Conv", ["t1", "w2", "b2"], ["t2"], pads=[1, 1, 1, 1], name="conv2"),
        helper.make_node("Add", ["t1", "t2"], ["t3"], name="add"),
        helper.make_node("MaxPool", ["t3"], ["t4"], kernel_shape=[2, 2], strides=[2, 2], name="pool"),
        helper.make_node("Conv", ["t4", "w3", "b3"], ["t5"], name="conv3"),
        helper.make_node("Concat", ["t4", "t5"], ["t6"], axis=1, name="concat"),
        helper.make_node("Sigmoid", ["t6"], ["t7"], name="sigmoid"),
        helper.make_node("GlobalAveragePool", ["t7"], ["t8"], name="gap"),
        helper.make_node("Flatten", ["t8"], ["t9"], name="flatten"),
        helper.make_node("MatMul", ["t9", "wm"], ["t10"], name="matmul"),
        helper.make_node("Softmax", ["t10"], ["probs"], axis=1, name="softmax"),
    ]
    graph = helper.make_graph(nodes, "mixed", [helper.make_tensor_value_info("input", TensorProto.FLOAT,
                                                                             ["batch", 3, 16, 16])],
                              [helper.make_tensor_value_info("probs", TensorProto.FLOAT, ["batch", 10])], inits)
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=8), str(path))


def project(folder: Path, name: str, onnx_model: str, shape, data: list, calib: int) -> Path:
    cfg = {"model_parameters": {"onnx_model": onnx_model, "output_prefix": name, "working_dir": str(folder)},
           "calibration_parameters": {"calibration_step": calib, "input_parametres": [
               {"input_name": "input", "input_shape": shape, "file_type": "npy",
                "data_list_path": str(folder / "list.txt")}]},
           "quantization_parameters": {"precision_level": 0, "finetune_level": 0, "analysis_enable": False},
           "verify_parameters": {"data_list_path": [str(folder / "list.txt")], "max_samples": 16}}
    (folder / "list.txt").write_text("\n".join(data) + "\n")
    path = folder / f"{name}.json"
    path.write_text(json.dumps(cfg, indent=1))
    return path


def prepare(cache: Path) -> dict:
    """model name -> (config, INT8 model); quantized once into ``cache``."""
    import xquant

    models = {}
    mixed = cache / "mixed"
    mixed.mkdir(parents=True, exist_ok=True)
    if not (mixed / "mixed.q.onnx").exists():
        build_mixed(mixed / "mixed.onnx")
        rng = np.random.default_rng(3)
        names = []
        for i in range(32):
            np.save(mixed / f"s{i}.npy", rng.standard_normal((3, 16, 16)).astype(np.float32))
            names.append(str(mixed / f"s{i}.npy"))
        xquant.quantize_onnx_model(str(project(mixed, "mixed", str(mixed / "mixed.onnx"), [1, 3, 16, 16], names,
                                               32)))
    models["mixed"] = (mixed / "mixed.json", mixed / "mixed.q.onnx")
    demo = cache / "fashion"
    demo.mkdir(exist_ok=True)
    if not (demo / "fashion_cnn.q.onnx").exists():
        from PIL import Image

        lines = (REPO / "demo" / "data" / "eval_list.txt").read_text().split()[:48]
        names = []
        for i, rel in enumerate(lines):
            img = np.asarray(Image.open(REPO / "demo" / "data" / rel).convert("L"), np.float32)
            np.save(demo / f"s{i}.npy", ((img - 72.9404) / 90.0212)[None])
            names.append(str(demo / f"s{i}.npy"))
        xquant.quantize_onnx_model(str(project(demo, "fashion_cnn", str(REPO / "demo" / "model" / "fashion_cnn.onnx"),
                                               [1, 1, 28, 28], names, 48)))
    models["fashion_cnn"] = (demo / "fashion_cnn.json", demo / "fashion_cnn.q.onnx")
    for name in ZOO_MODELS:
        # bench/zoo.py's held-out count varies (64 for small inputs): the config it wrote last
        configs = list((ZOO / name).glob("xquant_c16_e*_ft0.json"))
        qmodel = ZOO / name / "bench" / "xquant_ft0.q.onnx"
        if configs and qmodel.exists():
            models[name] = (max(configs, key=lambda p: p.stat().st_mtime), qmodel)
    return models


def pick_node(qmodel: Path, op: str) -> str:
    """The model's last compute node of type ``op`` whose output is quantized (read by a QuantizeLinear:
    inside the INT8 part), else its last node of that type, when a row names none."""
    import onnx

    nodes = onnx.load(str(qmodel)).graph.node
    quantized = {n.input[0] for n in nodes if n.op_type == "QuantizeLinear"}
    of_type = [n for n in nodes if n.op_type == op]
    inside = [n for n in of_type if any(o in quantized for o in n.output)]
    return (inside or of_type)[-1].name  # a float-tail node (a classifier's last Softmax) when no other


def python_for(base: str, kind: str, arg: str, node: str, refuse: bool) -> str:
    fault = "none" if kind == "none" else f"node:{kind}:{arg}:{node}"
    return f"env PYTHONPATH={FAULTS} XQHIL_FAULT={fault}{' XQHIL_FAULT_REFUSE_QOUT=1' if refuse else ''} {base}"


def run_row(row, models, board_kw, out: Path) -> list:
    model, kind, arg, node, op = row[:5]
    refuse = len(row) > 5
    if model not in models:
        return [kind, op or "-", model, "skipped: not in the zoo cache", "", "", "", ""]
    config, qmodel = models[model]
    node = node or (pick_node(qmodel, op) if op else "")
    faulty = python_for(board_kw["faulty_base"], kind, arg, node, refuse)
    base_python = board_kw["clean_base"]
    start = time.perf_counter()
    board = Board(resolve_board(board_kw["board"], None, None, python=faulty, **board_kw["extra"]))
    try:
        result = localize_config(str(config), board, board_kw["board"], str(qmodel),
                                 str(out / f"{model}-{kind}-{op}"), bisect=False)
    except HilError as exc:  # a row that cannot run is a row that says why, not the end of the bench
        return [kind, op or "-", model, f"error: {exc}"[:120], "NO", "", round(time.perf_counter() - start, 1), ""]
    seconds = time.perf_counter() - start
    ops = [n for n, _ in result["region_ops"]]
    named = (result["status"] == "clean") if kind == "none" else (result["status"] == "localised" and node in ops)
    replays = ""
    if result.get("bundle"):
        bad = replay(result["bundle"], Board(resolve_board(board_kw["board"], None, None, python=faulty,
                                                           **board_kw["extra"])))["departs"]
        clean_board = Board(resolve_board(board_kw["board"], None, None, python=base_python, **board_kw["extra"]))
        good = not replay(result["bundle"], clean_board)["departs"]
        replays = f"{'1' if bad else '0'} / {'0' if good else '1'}"
    found = f"{result['op']} {result['node']}" if result["op"] else result["status"]
    if kind != "none" and result["status"] == "clean":  # localisation starts from the outputs: none departed
        found += " (miss: the fault never reached the outputs, chip INT8 = PC INT8 bit for bit on every sample)"
    method = result["method"] or "-"
    return [kind + (" (refused)" if refuse else ""), op or "-", model, f"{found} [{method}]",
            "yes" if named else "NO", result["board_runs"] - 1, round(seconds, 1), replays]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--board", default="host", choices=("host", "qemu", "ssh"))
    parser.add_argument("--rows", default="all", help="all, quick, or comma-separated row numbers (0-based)")
    parser.add_argument("--out", default=None)
    parser.add_argument("--cache", default=os.path.join(tempfile.gettempdir(), "xqhil-bench-localize"))
    args = parser.parse_args()
    models = prepare(Path(args.cache))
    out = Path(args.out or tempfile.mkdtemp(prefix="xqhil-localize-"))
    board_kw = {"board": "host", "extra": {}, "faulty_base": sys.executable, "clean_base": sys.executable}
    sshd = None
    if args.board == "qemu":
        from xqhil.paths import default_rootfs

        root = os.environ.get("XQHIL_RISCV64_ROOTFS") or default_rootfs()
        board_kw.update(board=f"qemu:{root}", clean_base=f"qemu-riscv64-static -L {root} {root}/usr/bin/python3",
                        faulty_base=f"sh {FAULTS}/qemu-board.sh {sys.executable} {root}")  # the rootfs lacks onnx
    elif args.board == "ssh":
        sshd = start_sshd(Path(tempfile.mkdtemp(prefix="xqhil-sshd-")))
        board_kw.update(board=sshd.url, extra={"ssh_key": str(sshd.key), "known_hosts": str(sshd.known_hosts)})
    picked = QUICK if args.rows == "quick" else None if args.rows == "all" else {int(i) for i in args.rows.split(",")}
    rows = [r for i, r in enumerate(ROWS) if picked is None or i in picked]
    try:
        table = [run_row(r, models, board_kw, out) for r in rows]
    finally:
        if sshd:
            sshd.stop()
    print(tabulate(table, headers=["fault", "op", "model", "named (method)", "correct", "board runs", "seconds",
                                   "replay faulty / clean"], tablefmt="github"))
    done = [t for t in table if t[4] in ("yes", "NO")]
    print(f"\n{sum(t[4] == 'yes' for t in done)} of {len(done)} rows correct on --board {args.board}; "
          f"bundles under {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
