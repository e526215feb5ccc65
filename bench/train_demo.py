"""Train the bundled demo model (a small Fashion-MNIST CNN) and write its data.

Run from the repository root (torch is a dev dependency, ``make venv-dev``)::

    .venv/bin/python bench/train_demo.py            # about 2-4 minutes on 2 CPU cores

It reads the Debian ``dataset-fashion-mnist`` IDX files (``--data-dir``), trains a ~33k
parameter CNN (conv-bn-relu blocks, max pools, one residual Add, global average pool,
Gemm head) for 3 epochs with a fixed seed, and writes:

* ``demo/model/fashion_cnn.onnx``: FP32, opset 17, input ``input`` [batch,1,28,28]
  (symbolic batch), BN folded into the convolutions;
* ``demo/data/calib/*.png`` + ``calib_list.txt``: 300 seeded TRAIN images (grayscale PNG);
* ``demo/data/eval/*.png`` + ``eval_list.txt`` + ``eval_labels.txt``: 500 seeded TEST images;
* ``demo/README.md``: the FP32 accuracies measured with onnxruntime;
* ``configs/demo.json``: the XQuant config (mean/std = training-set pixel statistics).

The script is deterministic and re-runnable: it overwrites its outputs. Its helpers
(IDX reader, training loop, ONNX export and evaluation) are reused by ``bench/models.py``.
"""
from __future__ import annotations

import argparse
import gzip
import json
import os
import re
import shutil
import time
import warnings

import cv2
import numpy as np
import onnxruntime as ort
import torch
from torch import nn

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DATA_DIR = "/usr/share/datasets/fashion-mnist"
CLASSES = ("T-shirt/top", "Trouser", "Pullover", "Dress", "Coat",
           "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot")
SEED = 0
N_CALIB, N_EVAL = 300, 500
EVAL_SEED = SEED + 1  # seed of the eval subset of the test split


# ---------------------------------------------------------------- data

def read_idx(path: str) -> np.ndarray:
    """An IDX file (optionally gzipped) as a numpy array of its declared shape (uint8 data)."""
    opener = gzip.open if path.endswith(".gz") else open
    with opener(path, "rb") as handle:
        raw = handle.read()
    if raw[0] != 0 or raw[1] != 0 or raw[2] != 0x08:
        raise ValueError(f"{path}: not an unsigned-byte IDX file")
    ndim = raw[3]
    dims = [int.from_bytes(raw[4 + 4 * i: 8 + 4 * i], "big") for i in range(ndim)]
    data = np.frombuffer(raw, dtype=np.uint8, offset=4 + 4 * ndim)
    return data.reshape(dims)


def load_fashion(split: str, data_dir: str = DATA_DIR):
    """(images uint8 [N,28,28], labels int64 [N]) of split 'train' or 't10k'."""
    images = read_idx(os.path.join(data_dir, f"{split}-images-idx3-ubyte.gz"))
    labels = read_idx(os.path.join(data_dir, f"{split}-labels-idx1-ubyte.gz")).astype(np.int64)
    return images, labels


def pixel_stats(images: np.ndarray):
    """Mean and std of the pixels (0..255 units), rounded to 4 decimals."""
    pixels = images.astype(np.float64)
    return round(float(pixels.mean()), 4), round(float(pixels.std()), 4)


def sample_indices(n_total: int, n: int, seed: int) -> np.ndarray:
    """``n`` distinct seeded indices into ``range(n_total)``, in ascending order."""
    return np.sort(np.random.RandomState(seed).choice(n_total, size=n, replace=False))


# ---------------------------------------------------------------- training

def seed_everything(seed: int = SEED, threads: int = 2) -> None:
    torch.manual_seed(seed)
    np.random.seed(seed)
    torch.set_num_threads(threads)
    torch.use_deterministic_algorithms(True)


def fit(model: nn.Module, inputs, labels: np.ndarray, epochs: int, lr: float = 3e-3,
        batch: int = 128, seed: int = SEED) -> nn.Module:
    """Adam + one-cycle training; ``inputs`` is one float32 array or a tuple of them."""
    inputs = inputs if isinstance(inputs, tuple) else (inputs,)
    tensors = [torch.from_numpy(x) for x in inputs]
    target = torch.from_numpy(labels)
    steps = (len(labels) + batch - 1) // batch
    opt = torch.optim.Adam(model.parameters(), lr=lr, weight_decay=1e-4)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=lr, total_steps=epochs * steps)
    gen = torch.Generator().manual_seed(seed)
    for epoch in range(epochs):
        model.train()
        order, start, seen, correct = torch.randperm(len(labels), generator=gen), time.time(), 0, 0
        for step in range(steps):
            idx = order[step * batch:(step + 1) * batch]
            logits = model(*[t[idx] for t in tensors])
            loss = nn.functional.cross_entropy(logits, target[idx])
            opt.zero_grad()
            loss.backward()
            opt.step()
            sched.step()
            seen += len(idx)
            correct += int((logits.argmax(1) == target[idx]).sum())
            if step % 100 == 0 or step == steps - 1:
                print(f"  epoch {epoch + 1}/{epochs} step {step + 1}/{steps} loss {loss.item():.3f} "
                      f"train acc {correct / seen:.3f} ({time.time() - start:.0f}s)", flush=True)
    return model.eval()


def export_onnx(model: nn.Module, input_specs, path: str) -> None:
    """Export in eval mode, opset 17, BN folded, symbolic batch on every input and the output.

    ``input_specs`` is a list of (name, shape-with-batch-1).
    """
    os.makedirs(os.path.dirname(path), exist_ok=True)
    names = [name for name, _ in input_specs]
    dummies = tuple(torch.zeros(shape) for _, shape in input_specs)
    axes = {name: {0: "batch"} for name in names + ["logits"]}
    model.eval()
    with torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)  # the legacy exporter needs no onnxscript
        torch.onnx.export(model, dummies, path, input_names=names, output_names=["logits"],
                          dynamic_axes=axes, opset_version=17, do_constant_folding=True, dynamo=False)


def onnx_accuracy(path: str, inputs: dict, labels: np.ndarray, batch: int = 500) -> float:
    """Top-1 accuracy of an ONNX model with onnxruntime on CPU."""
    sess = ort.InferenceSession(path, providers=["CPUExecutionProvider"])
    correct = 0
    for start in range(0, len(labels), batch):
        feed = {k: v[start:start + batch] for k, v in inputs.items()}
        correct += int((sess.run(None, feed)[0].argmax(1) == labels[start:start + batch]).sum())
    return correct / len(labels)


# ---------------------------------------------------------------- model

class ConvBN(nn.Sequential):
    def __init__(self, cin: int, cout: int, k: int = 3, stride: int = 1, groups: int = 1, act=nn.ReLU):
        layers = [nn.Conv2d(cin, cout, k, stride, k // 2, groups=groups, bias=False), nn.BatchNorm2d(cout)]
        super().__init__(*layers, *([act()] if act else []))


class FashionCNN(nn.Module):
    """conv16 -> pool -> conv32 -> conv32 (+ residual Add) -> pool -> conv64 -> GAP -> Gemm."""

    def __init__(self, classes: int = 10):
        super().__init__()
        self.stem = nn.Sequential(ConvBN(1, 16), nn.MaxPool2d(2), ConvBN(16, 32))
        self.res = ConvBN(32, 32, act=None)
        self.head = nn.Sequential(nn.MaxPool2d(2), ConvBN(32, 64), nn.AdaptiveAvgPool2d(1), nn.Flatten(),
                                  nn.Linear(64, classes))

    def forward(self, x):
        x = self.stem(x)
        x = torch.relu(x + self.res(x))
        return self.head(x)


# ---------------------------------------------------------------- outputs

def write_pngs(images: np.ndarray, folder: str, list_path: str) -> list:
    """One PNG per image under ``folder``; the list file holds paths relative to its own folder."""
    shutil.rmtree(folder, ignore_errors=True)
    os.makedirs(folder)
    rel_dir = os.path.relpath(folder, os.path.dirname(list_path))
    names = []
    for i, img in enumerate(images):
        name = f"{i:05d}.png"
        if not cv2.imwrite(os.path.join(folder, name), img):
            raise OSError(f"cannot write {folder}/{name}")
        names.append(f"{rel_dir}/{name}")
    write_lines(list_path, names)
    return names


def dump_json(obj, path: str) -> None:
    """Indented JSON with flat lists of scalars kept on one line."""
    text = json.dumps(obj, indent=2)
    text = re.sub(r"\[\s+([^\[\]{}]*?)\s+\]", lambda m: "[" + re.sub(r",\s+", ", ", m.group(1)) + "]", text)
    with open(path, "w", encoding="utf-8") as handle:
        handle.write(text + "\n")


def write_lines(path: str, lines) -> None:
    with open(path, "w", encoding="utf-8") as handle:
        handle.write("".join(f"{line}\n" for line in lines))


def read_img_list(list_path: str, mean, std, color_format: str = "bgr", channels: int = 1) -> np.ndarray:
    """What the quantizer's img reader yields for the listed images: [N,C,H,W] float32, no resize."""
    base = os.path.dirname(list_path)
    with open(list_path, encoding="utf-8") as handle:
        names = [line.strip() for line in handle if line.strip()]
    flag = cv2.IMREAD_GRAYSCALE if channels == 1 else cv2.IMREAD_COLOR
    imgs = np.stack([cv2.imread(os.path.join(base, n), flag) for n in names])
    if channels == 1:
        imgs = imgs[..., None]
    elif color_format == "rgb":
        imgs = imgs[..., ::-1]
    out = (imgs.astype(np.float32) - np.asarray(mean, np.float32)) / np.asarray(std, np.float32)
    return np.ascontiguousarray(out.transpose(0, 3, 1, 2))


def demo_config(mean: float, std: float) -> dict:
    img = {"input_name": "input", "input_shape": [1, 1, 28, 28], "dtype": "float32", "file_type": "img",
           "color_format": "bgr", "mean_value": [mean], "std_value": [std], "preprocess_file": "",
           "data_list_path": "../demo/data/calib_list.txt"}
    return {
        "model_parameters": {"onnx_model": "../demo/model/fashion_cnn.onnx", "output_prefix": "fashion_cnn",
                             "working_dir": "../out/demo", "skip_onnxsim": False},
        "calibration_parameters": {"calibration_step": N_CALIB, "calibration_device": "cpu",
                                   "calibration_type": "default", "input_parametres": [img]},
        "quantization_parameters": {"analysis_enable": True, "precision_level": 0, "finetune_level": 1,
                                    "max_percentile": 0.9999},
        "verify_parameters": {"data_list_path": ["../demo/data/eval_list.txt"],
                              "label_list_path": "../demo/data/eval_labels.txt", "max_samples": N_EVAL,
                              "warmup": 5, "repeat": 50},
    }


README = """# Bundled demo: Fashion-MNIST CNN

A small FP32 ONNX classifier and its data, used by `make demo` and the tests to run the
quantizer (`configs/demo.json`) and the hardware-in-the-loop harness end to end.

* Model: `model/fashion_cnn.onnx`, opset 17, {params} parameters. Input `input`
  float32 [batch, 1, 28, 28] (symbolic batch), output `logits` [batch, 10]. Layers:
  Conv-ReLU x2 with MaxPool, a residual Add, MaxPool, Conv-ReLU, GlobalAveragePool, Gemm
  (BatchNorm folded into the convolutions at export).
* Preprocessing: grayscale pixel (0..255), `(pixel - {mean}) / {std}` (mean/std of the
  training-set pixels, as in `configs/demo.json`).
* Classes (labels 0-9, in this order): {classes}.
* `data/calib/`: {n_calib} images from the Fashion-MNIST TRAIN split (seed {seed}),
  listed in `data/calib_list.txt`.
* `data/eval/`: {n_eval} images from the TEST split (seed {eval_seed}), listed in
  `data/eval_list.txt`, labels in `data/eval_labels.txt` (aligned line by line).
* Images are the raw dataset pixels as 28x28 grayscale PNG.

## How it was made

`bench/train_demo.py` (needs torch, `make venv-dev`) reads the Debian
`dataset-fashion-mnist` IDX files, trains for {epochs} epochs on the 60k training
images (Adam, one-cycle schedule, seed {seed}, CPU, a few minutes) and writes every
file here. Re-running it reproduces them.

## FP32 accuracy (onnxruntime, CPU)

| set | samples | top-1 |
|---|---|---|
| Fashion-MNIST test split | 10000 | {acc_test:.2%} |
| `data/eval` subset (read back from the PNGs) | {n_eval} | {acc_eval:.2%} |

Fashion-MNIST is (c) Zalando SE, MIT licence.
"""


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data-dir", default=DATA_DIR)
    parser.add_argument("--epochs", type=int, default=3)
    args = parser.parse_args()
    seed_everything()
    x_train, y_train = load_fashion("train", args.data_dir)
    x_test, y_test = load_fashion("t10k", args.data_dir)
    mean, std = pixel_stats(x_train)
    print(f"train pixel mean {mean} std {std}")
    norm = lambda x: ((x.astype(np.float32) - mean) / std)[:, None]
    model, start = FashionCNN(), time.time()
    fit(model, norm(x_train), y_train, args.epochs)
    train_s = time.time() - start
    onnx_path = os.path.join(ROOT, "demo/model/fashion_cnn.onnx")
    export_onnx(model, [("input", (1, 1, 28, 28))], onnx_path)
    data = os.path.join(ROOT, "demo/data")
    calib_idx = sample_indices(len(y_train), N_CALIB, SEED)
    write_pngs(x_train[calib_idx], f"{data}/calib", f"{data}/calib_list.txt")
    eval_idx = sample_indices(len(y_test), N_EVAL, EVAL_SEED)
    write_pngs(x_test[eval_idx], f"{data}/eval", f"{data}/eval_list.txt")
    write_lines(f"{data}/eval_labels.txt", y_test[eval_idx])
    acc_test = onnx_accuracy(onnx_path, {"input": norm(x_test)}, y_test)
    acc_eval = onnx_accuracy(onnx_path, {"input": read_img_list(f"{data}/eval_list.txt", [mean], [std])},
                             y_test[eval_idx])
    print(f"FP32 ONNX accuracy: test {acc_test:.4f}, eval subset {acc_eval:.4f}; training {train_s:.0f}s")
    dump_json(demo_config(mean, std), os.path.join(ROOT, "configs/demo.json"))
    params = sum(p.numel() for p in model.parameters())
    with open(os.path.join(ROOT, "demo/README.md"), "w", encoding="utf-8") as handle:
        handle.write(README.format(params=params, mean=mean, std=std, classes=", ".join(CLASSES),
                                   n_calib=N_CALIB, n_eval=N_EVAL, seed=SEED, eval_seed=EVAL_SEED,
                                   epochs=args.epochs,
                                   acc_test=acc_test, acc_eval=acc_eval))


if __name__ == "__main__":
    main()
