"""Calibration memory stays bounded: 1,000 images through a 224x224 model.

Builds a ResNet-18-shaped stem (random weights; memory does not depend on them) at 3x224x224 with a
symbolic batch, writes N real-size JPEG images (noise over gradients, seeded) under bench/.cache/memory,
quantizes with xquant in a fresh process and prints its peak RSS next to what holding every calibrated
activation of every image would take.

    .venv/bin/python bench/memory.py [--images 1000]
"""
from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
CACHE = os.path.join(HERE, ".cache", "memory")


def build_model(path: str) -> None:
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(0)
    inits, nodes, prev, chans = [], [], "data", 3
    for i, (cout, stride) in enumerate([(64, 2), (64, 1), (64, 1), (128, 2), (128, 1), (256, 2), (256, 1)]):
        w = rng.normal(0, np.sqrt(2 / (chans * 9)), (cout, chans, 3, 3)).astype(np.float32)
        inits += [numpy_helper.from_array(w, f"w{i}"), numpy_helper.from_array(np.zeros(cout, np.float32), f"b{i}")]
        nodes += [helper.make_node("Conv", [prev, f"w{i}", f"b{i}"], [f"c{i}"], pads=[1, 1, 1, 1],
                                   strides=[stride, stride]),
                  helper.make_node("Relu", [f"c{i}"], [f"r{i}"])]
        prev, chans = f"r{i}", cout
    nodes += [helper.make_node("GlobalAveragePool", [prev], ["gap"]), helper.make_node("Flatten", ["gap"], ["flat"])]
    inits.append(numpy_helper.from_array(rng.normal(0, 0.05, (256, 1000)).astype(np.float32), "fc"))
    nodes.append(helper.make_node("MatMul", ["flat", "fc"], ["logits"]))
    graph = helper.make_graph(nodes, "resnet_stem_224",
                              [helper.make_tensor_value_info("data", TensorProto.FLOAT, ["N", 3, 224, 224])],
                              [helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["N", 1000])], inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.save(model, path)


def write_images(n: int) -> str:
    import cv2

    folder = os.path.join(CACHE, "images")
    os.makedirs(folder, exist_ok=True)
    rng = np.random.default_rng(1)
    names = []
    for i in range(n):
        name = f"{i:04d}.jpg"
        path = os.path.join(folder, name)
        if not os.path.exists(path):
            grad = np.linspace(0, 255, 256)[None, :, None] * rng.uniform(0.2, 1.0, 3)
            img = np.clip(grad + rng.normal(0, 40, (256, 256, 3)), 0, 255).astype(np.uint8)
            cv2.imwrite(path, img)
        names.append(f"images/{name}")
    list_path = os.path.join(CACHE, f"list_{n}.txt")
    with open(list_path, "w") as handle:
        handle.write("\n".join(names) + "\n")
    return list_path


def activation_bytes(model_path: str) -> int:
    import onnx

    model = onnx.shape_inference.infer_shapes(onnx.load(model_path))
    total = 0
    for value in model.graph.value_info:
        dims = [d.dim_value for d in value.type.tensor_type.shape.dim[1:]]
        total += 4 * int(np.prod(dims))
    return total


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=1000)
    args = parser.parse_args()
    os.makedirs(CACHE, exist_ok=True)
    model = os.path.join(CACHE, "resnet_stem_224.onnx")
    if not os.path.exists(model):
        build_model(model)
    lst = write_images(args.images)
    cfg = {"model_parameters": {"onnx_model": model, "working_dir": CACHE},
           "calibration_parameters": {"calibration_step": args.images, "input_parametres": [
               {"mean_value": [103.94, 116.78, 123.68], "std_value": [57, 57, 57], "data_list_path": lst}]},
           "quantization_parameters": {"finetune_level": 0, "analysis_enable": False}}
    cfg_path = os.path.join(CACHE, "cfg.json")
    with open(cfg_path, "w") as handle:
        json.dump(cfg, handle)
    code = subprocess.call([sys.executable, "-m", "xquant", "-c", cfg_path, "-q"])
    peak = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024
    per_image = activation_bytes(model) / 2**20
    from tabulate import tabulate

    print(tabulate([[args.images, f"{per_image:.1f}", f"{per_image * args.images:.0f}", f"{peak:.0f}",
                     "ok" if code == 0 else f"exit {code}"]],
                   headers=["images", "activations MiB/image", "all activations MiB", "xquant peak RSS MiB",
                            "run"]))
    return code


if __name__ == "__main__":
    sys.exit(main())
