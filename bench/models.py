"""Benchmark models for ``bench/quant.py``: FP32 ONNX models trained on Fashion-MNIST, with data.

``get_benchmark(name)`` returns ``{"name", "onnx", "config", "eval_inputs", "eval_labels"}`` for
each name in ``BENCHMARKS``:

* ``demo``: the bundled model ``demo/model/fashion_cnn.onnx`` and its lists (``configs/demo.json``);
* ``resnet``: ResNet-8 style (BasicBlocks with residual Add, 3 stages 16-32-64, stride-2 stages);
* ``mobilenetv2``: MobileNetV2 style (1x1 expand, depthwise 3x3, 1x1 project, ReLU6 = Clip, Add);
* ``twoinput``: inputs ``image`` and ``aux`` (the image flipped left-right), two conv branches
  merged by Concat.

``resnet`` and ``mobilenetv2`` read 3x32x32 colour PNGs: the 28x28 image zero-padded to 32x32
and "tinted" into three different channels (B = g, G = 64 + g // 2, R = 255 - g), so the
per-channel mean/std (BGR order, pixel units) differ and a channel-order mistake shows up
as lost accuracy. ``twoinput`` reads ``.npy`` files already normalised, one list per input.

Models are trained on the CPU (seeded; 1-2 minutes each on two idle cores, several times that on a
loaded machine; torch is needed only then) and cached
under ``bench/.cache/<name>/`` with their calibration files and lists, eval files, lists and
labels, and ``eval_inputs.npz`` (the eval files read back as the quantizer's readers do).
A folder is rebuilt when missing, when ``CACHE_VERSION`` or its ``TRAINING`` entry changes,
or when deleted. Build all from the shell with
``.venv/bin/python bench/models.py [names...]``.
"""
from __future__ import annotations

import glob
import json
import os
import shutil
import sys
import time

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import train_demo as td

BENCHMARKS = ("demo", "resnet", "mobilenetv2", "twoinput")
CACHE = os.path.join(os.path.dirname(os.path.abspath(__file__)), ".cache")
CACHE_VERSION = 1
WORK_ROOT = os.path.join(td.ROOT, "out", "bench")
# training-subset size, epochs and peak learning rate of each trained benchmark
TRAINING = {"resnet": (30000, 3, 4e-3), "mobilenetv2": (24000, 2, 5e-3), "twoinput": (48000, 3, 3e-3)}


# ---------------------------------------------------------------- networks (torch imported lazily)

def make_network(name: str):
    """The untrained torch module of a benchmark."""
    import torch
    from torch import nn

    ConvBN = td.ConvBN
    head = lambda c: [nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(c, 10)]

    class BasicBlock(nn.Module):
        def __init__(self, cin, cout, stride):
            super().__init__()
            self.body = nn.Sequential(ConvBN(cin, cout, 3, stride), ConvBN(cout, cout, act=None))
            same = stride == 1 and cin == cout
            self.short = nn.Identity() if same else ConvBN(cin, cout, 1, stride, act=None)

        def forward(self, x):
            return torch.relu(self.body(x) + self.short(x))

    class InvertedResidual(nn.Module):
        def __init__(self, cin, cout, stride, expand):
            super().__init__()
            hid = cin * expand
            layers = [ConvBN(cin, hid, 1, act=nn.ReLU6)] if expand != 1 else []
            layers += [ConvBN(hid, hid, 3, stride, groups=hid, act=nn.ReLU6), ConvBN(hid, cout, 1, act=None)]
            self.body, self.residual = nn.Sequential(*layers), stride == 1 and cin == cout

        def forward(self, x):
            return x + self.body(x) if self.residual else self.body(x)

    class TwoInput(nn.Module):
        def __init__(self):
            super().__init__()
            branch = lambda: nn.Sequential(ConvBN(1, 16), nn.MaxPool2d(2), ConvBN(16, 32), nn.MaxPool2d(2))
            self.image, self.aux = branch(), branch()
            self.head = nn.Sequential(ConvBN(64, 64), *head(64))

        def forward(self, image, aux):
            return self.head(torch.cat([self.image(image), self.aux(aux)], 1))

    if name == "resnet":
        blocks = [BasicBlock(16, 16, 1), BasicBlock(16, 32, 2), BasicBlock(32, 64, 2)]
        return nn.Sequential(ConvBN(3, 16), *blocks, *head(64))
    if name == "mobilenetv2":
        cfg = [(16, 16, 1, 1), (16, 24, 2, 4), (24, 24, 1, 4), (24, 32, 2, 4), (32, 32, 1, 4), (32, 64, 1, 4)]
        blocks = [InvertedResidual(*c) for c in cfg]
        last = ConvBN(64, 128, 1, act=nn.ReLU6)
        return nn.Sequential(ConvBN(3, 16, act=nn.ReLU6), *blocks, last, *head(128))
    return TwoInput()


# ---------------------------------------------------------------- data

def tinted32(gray: np.ndarray) -> np.ndarray:
    """[N,28,28] uint8 -> [N,32,32,3] uint8 BGR: zero-padded, one affine tint per channel."""
    g = np.pad(gray, ((0, 0), (2, 2), (2, 2)))
    return np.stack([g, 64 + g // 2, 255 - g], axis=-1)


def channel_stats(images: np.ndarray):
    """Per-channel mean and std (pixel units, 4 decimals) of [N,H,W,C] images."""
    pixels = images.reshape(-1, images.shape[-1]).astype(np.float64)
    return [round(float(v), 4) for v in pixels.mean(0)], [round(float(v), 4) for v in pixels.std(0)]


def split_indices(n_train: int):
    """Seeded indices: training subset, calibration (train split), eval (test split, as the demo)."""
    return (td.sample_indices(60000, n_train, td.SEED + 7), td.sample_indices(60000, td.N_CALIB, td.SEED),
            td.sample_indices(10000, td.N_EVAL, td.EVAL_SEED))


def color_data(n_train: int) -> dict:
    """3x32x32 img data: train arrays normalised, calib/eval as uint8 BGR images to write as PNG."""
    (x_tr, y_tr), (x_te, y_te) = td.load_fashion("train"), td.load_fashion("t10k")
    tr, cal, ev = split_indices(n_train)
    train = tinted32(x_tr[tr])
    mean, std = channel_stats(train)
    norm = ((train.astype(np.float32) - np.float32(mean)) / np.float32(std)).transpose(0, 3, 1, 2)
    param = {"input_name": "input", "input_shape": [1, 3, 32, 32], "dtype": "float32", "file_type": "img",
             "color_format": "bgr", "mean_value": mean, "std_value": std}
    return {"train": (np.ascontiguousarray(norm),), "y_train": y_tr[tr], "params": [param],
            "calib": [tinted32(x_tr[cal])], "eval": [tinted32(x_te[ev])], "y_eval": y_te[ev]}


def pair_data(n_train: int) -> dict:
    """Two 1x28x28 inputs (image, image flipped left-right), normalised float32 for npy files."""
    (x_tr, y_tr), (x_te, y_te) = td.load_fashion("train"), td.load_fashion("t10k")
    tr, cal, ev = split_indices(n_train)
    mean, std = td.pixel_stats(x_tr)
    norm = lambda x: np.ascontiguousarray((x.astype(np.float32) - mean) / std)[:, None]
    pair = lambda x: [norm(x), norm(x[:, :, ::-1])]
    params = [{"input_name": n, "input_shape": [1, 1, 28, 28], "dtype": "float32", "file_type": "npy",
               "mean_value": None, "std_value": None} for n in ("image", "aux")]
    return {"train": tuple(pair(x_tr[tr])), "y_train": y_tr[tr], "params": params, "norm": [mean, std],
            "calib": pair(x_tr[cal]), "eval": pair(x_te[ev]), "y_eval": y_te[ev]}


# ---------------------------------------------------------------- files

def write_npys(arrays: np.ndarray, folder: str, list_path: str) -> None:
    """One [1,...] float32 .npy per sample; the list holds paths relative to its folder."""
    os.makedirs(folder)
    rel = os.path.relpath(folder, os.path.dirname(list_path))
    for i, arr in enumerate(arrays):
        np.save(os.path.join(folder, f"{i:05d}.npy"), arr[None].astype(np.float32))
    td.write_lines(list_path, [f"{rel}/{i:05d}.npy" for i in range(len(arrays))])


def read_list(list_path: str, param: dict) -> np.ndarray:
    """The listed samples as the quantizer's reader yields them, stacked [N,...] float32."""
    if param["file_type"] == "img":
        return td.read_img_list(list_path, param["mean_value"], param["std_value"],
                                param.get("color_format", "bgr"), param["input_shape"][1])
    base = os.path.dirname(list_path)
    with open(list_path, encoding="utf-8") as handle:
        files = [os.path.join(base, line.strip()) for line in handle if line.strip()]
    return np.concatenate([np.load(f).astype(np.float32) for f in files])


def write_split(folder: str, split: str, params: list, arrays: list) -> list:
    """Data files and one list per input for a split; the list paths relative to ``folder``."""
    lists = []
    for param, arr in zip(params, arrays):
        name = param["input_name"] if len(params) > 1 else ""
        sub = os.path.join(split, name) if name else split
        lst = f"{split}_{name}_list.txt" if name else f"{split}_list.txt"
        writer = td.write_pngs if param["file_type"] == "img" else write_npys
        writer(arr, os.path.join(folder, sub), os.path.join(folder, lst))
        lists.append(lst)
    return lists


# ---------------------------------------------------------------- build / load

def train(name: str):
    """(data dict, trained eval-mode module, training seconds) of one benchmark."""
    n_train, epochs, lr = TRAINING[name]
    td.seed_everything()
    data = (pair_data if name == "twoinput" else color_data)(n_train)
    print(f"[{name}] training on {n_train} images, {epochs} epochs", flush=True)
    start = time.time()
    model = td.fit(make_network(name), data["train"], data["y_train"], epochs, lr=lr)
    return data, model, time.time() - start


def write_cache(folder: str, name: str, data: dict, model) -> dict:
    """Export the model and write the data files of ``data`` into ``folder``; returns the metadata."""
    params = data["params"]
    specs = [(p["input_name"], tuple(p["input_shape"])) for p in params]
    td.export_onnx(model, specs, f"{folder}/{name}.onnx")
    meta = {"version": CACHE_VERSION, "params": params, "npy_normalisation": data.get("norm"),
            "calib_lists": write_split(folder, "calib", params, data["calib"]),
            "eval_lists": write_split(folder, "eval", params, data["eval"])}
    td.write_lines(f"{folder}/eval_labels.txt", data["y_eval"])
    np.save(f"{folder}/eval_labels.npy", data["y_eval"])
    lists = zip(params, meta["eval_lists"])
    eval_inputs = {p["input_name"]: read_list(f"{folder}/{lst}", p) for p, lst in lists}
    np.savez(f"{folder}/eval_inputs.npz", **eval_inputs)
    meta["fp32_accuracy"] = td.onnx_accuracy(f"{folder}/{name}.onnx", eval_inputs, data["y_eval"])
    return meta


def build(name: str) -> str:
    """Train, export and write one benchmark into its cache folder; returns the folder.

    Everything is written to a temporary folder first, renamed into place at the end.
    """
    import torch

    final, tmp = os.path.join(CACHE, name), os.path.join(CACHE, f".{name}.tmp{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    os.makedirs(tmp)
    data, model, train_s = train(name)
    meta = write_cache(tmp, name, data, model)
    n_train, epochs, lr = TRAINING[name]
    meta.update(train_s=round(train_s, 1), n_train=n_train, epochs=epochs, lr=lr, torch=torch.__version__)
    acc, count = meta["fp32_accuracy"], len(data["y_eval"])
    print(f"[{name}] FP32 ONNX accuracy on {count} eval samples: {acc:.4f} (training {train_s:.0f}s)")
    with open(f"{tmp}/meta.json", "w", encoding="utf-8") as handle:
        json.dump(meta, handle, indent=1)
    shutil.rmtree(final, ignore_errors=True)
    os.replace(tmp, final)
    return final


def cached_meta(name: str):
    """The metadata of a valid cache folder, or None when missing, stale or trained otherwise."""
    path = os.path.join(CACHE, name, "meta.json")
    if not os.path.isfile(path):
        return None
    with open(path, encoding="utf-8") as handle:
        meta = json.load(handle)
    n_train, epochs, lr = TRAINING[name]
    wanted = (CACHE_VERSION, n_train, epochs, lr)
    return meta if tuple(meta.get(k) for k in ("version", "n_train", "epochs", "lr")) == wanted else None


def load_meta(name: str) -> dict:
    """The cached benchmark's metadata, building it first (one process at a time) when needed."""
    import fcntl

    os.makedirs(CACHE, exist_ok=True)
    with open(os.path.join(CACHE, f".{name}.lock"), "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # a concurrent caller waits for the build, then loads it
        meta = cached_meta(name)
        if meta is None:
            for stale in glob.glob(os.path.join(CACHE, f".{name}.tmp*")):
                shutil.rmtree(stale, ignore_errors=True)
            build(name)
            meta = cached_meta(name)
    return meta


def make_config(name: str, onnx_path: str, params: list, calib: list, evals: list, labels: str,
                calibration_step: int) -> dict:
    """An XQuant config dict with absolute paths."""
    inputs = [dict(p, data_list_path=lst) for p, lst in zip(params, calib)]
    inputs = [{k: v for k, v in p.items() if v is not None} for p in inputs]
    return {
        "model_parameters": {"onnx_model": onnx_path, "output_prefix": name,
                             "working_dir": os.path.join(WORK_ROOT, name), "skip_onnxsim": False},
        "calibration_parameters": {"calibration_step": calibration_step, "calibration_device": "cpu",
                                   "calibration_type": "default", "input_parametres": inputs},
        "quantization_parameters": {"analysis_enable": False, "precision_level": 0, "finetune_level": 1,
                                    "max_percentile": 0.9999},
        "verify_parameters": {"data_list_path": evals, "label_list_path": labels, "max_samples": td.N_EVAL,
                              "warmup": 5, "repeat": 50},
    }


def demo_benchmark(calibration_step: int) -> dict:
    """The bundled demo: configs/demo.json with absolute paths, eval PNGs read back."""
    cfg_dir = os.path.join(td.ROOT, "configs")
    with open(os.path.join(cfg_dir, "demo.json"), encoding="utf-8") as handle:
        raw = json.load(handle)
    absolute = lambda p: os.path.normpath(os.path.join(cfg_dir, p))
    param = raw["calibration_parameters"]["input_parametres"][0]
    onnx_path, verify = absolute(raw["model_parameters"]["onnx_model"]), raw["verify_parameters"]
    evals = [absolute(p) for p in verify["data_list_path"]]
    config = make_config("demo", onnx_path, [param], [absolute(param["data_list_path"])], evals,
                         absolute(verify["label_list_path"]), calibration_step)
    labels = np.loadtxt(absolute(verify["label_list_path"]), dtype=np.int64)
    return {"name": "demo", "onnx": onnx_path, "config": config,
            "eval_inputs": {"input": read_list(evals[0], param)}, "eval_labels": labels}


def get_benchmark(name: str, calibration_step: int = 100) -> dict:
    """{"name", "onnx", "config" (XQuant dict, absolute paths), "eval_inputs", "eval_labels"}."""
    if name not in BENCHMARKS:
        raise ValueError(f"unknown benchmark {name!r}; choose from {', '.join(BENCHMARKS)}")
    if name == "demo":
        return demo_benchmark(calibration_step)
    meta, folder = load_meta(name), os.path.join(CACHE, name)
    at = lambda p: os.path.join(folder, p)
    onnx_path = at(f"{name}.onnx")
    config = make_config(name, onnx_path, meta["params"], [at(p) for p in meta["calib_lists"]],
                         [at(p) for p in meta["eval_lists"]], at("eval_labels.txt"), calibration_step)
    with np.load(at("eval_inputs.npz")) as npz:
        eval_inputs = {k: npz[k] for k in npz.files}
    return {"name": name, "onnx": onnx_path, "config": config, "eval_inputs": eval_inputs,
            "eval_labels": np.load(at("eval_labels.npy"))}


def main(names) -> None:
    """Build (when needed) and check each benchmark with onnxruntime."""
    for name in names or BENCHMARKS:
        bench = get_benchmark(name)
        acc = td.onnx_accuracy(bench["onnx"], bench["eval_inputs"], bench["eval_labels"])
        shapes = {k: list(v.shape) for k, v in bench["eval_inputs"].items()}
        print(f"{name}: FP32 accuracy {acc:.4f} on {len(bench['eval_labels'])} samples, inputs {shapes}")


if __name__ == "__main__":
    main(sys.argv[1:])
