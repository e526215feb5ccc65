"""Config fields, defaults (seed table, section 2.2), overrides and the errors users see."""
from __future__ import annotations

import json
import logging
import os

import onnx
import onnxruntime as ort
import pytest

from xquant_testlib import build_cnn
from xquant.config import load_config
from xquant.errors import ConfigError, DataError


def test_defaults_follow_the_seed_table(tiny_cnn, tmp_path):
    raw = tiny_cnn()
    raw["calibration_parameters"] = {"input_parametres": [{"file_type": "npy", "data_list_path":
                                      raw["calibration_parameters"]["input_parametres"][0]["data_list_path"]}]}
    del raw["quantization_parameters"]
    cfg, _ = load_config(raw)
    model_path = raw["model_parameters"]["onnx_model"]
    assert cfg.model.working_dir == os.path.dirname(model_path)
    assert cfg.model.output_model == str(tmp_path / "tiny_op17.q.onnx")
    assert cfg.model.output_prefix == "tiny_op17"
    assert cfg.model.skip_onnxsim is False
    assert cfg.calibration.calibration_step == 100
    assert cfg.calibration.calibration_type == "default"
    has_cuda = "CUDAExecutionProvider" in ort.get_available_providers()
    assert cfg.calibration.calibration_device == ("cuda" if has_cuda else "cpu")
    (param,) = cfg.calibration.input_parameters
    assert param.input_name == "x"
    assert param.input_shape == (1, 3, 16, 16)  # symbolic batch "N" becomes 1
    assert param.dtype == "float32"
    assert param.preprocess_file is None
    assert param.color_format == "bgr"
    q = cfg.quantization
    assert (q.max_percentile, q.precision_level, q.finetune_level, q.analysis_enable) == (0.9999, 0, 1, False)
    assert q.custom_setting == () and q.truncate_var_names == () and q.bias_dtype == "float"


def test_file_type_defaults_to_img(tiny_cnn):
    raw = tiny_cnn()
    del raw["calibration_parameters"]["input_parametres"][0]["file_type"]
    cfg, _ = load_config(raw)
    assert cfg.calibration.input_parameters[0].file_type == "img"


@pytest.mark.parametrize("key", ["input_parametres", "input_parameters"])
def test_both_spellings_of_the_input_list(tiny_cnn, key):
    raw = tiny_cnn()
    items = raw["calibration_parameters"].pop("input_parametres")
    items[0]["mean_value"] = [1, 2, 3]
    raw["calibration_parameters"][key] = items
    cfg, _ = load_config(raw)
    assert cfg.calibration.input_parameters[0].mean_value == (1.0, 2.0, 3.0)


def test_every_field_is_read(tiny_cnn, tmp_path):
    raw = tiny_cnn()
    hook = tmp_path / "hook.py"
    hook.write_text("def pre(paths, p):\n    return None\n")
    raw["model_parameters"].update({"output_prefix": "custom", "working_dir": str(tmp_path / "wd"),
                                    "skip_onnxsim": True})
    raw["calibration_parameters"].update({"calibration_step": 7, "calibration_device": "cpu",
                                          "calibration_type": "kl"})
    raw["calibration_parameters"]["input_parametres"][0].update({
        "input_name": "x", "input_shape": [1, 3, 16, 16], "dtype": "float32", "color_format": "rgb",
        "mean_value": [0.5], "std_value": [2, 2, 2], "preprocess_file": f"{hook}:pre"})
    raw["quantization_parameters"].update({
        "analysis_enable": True, "precision_level": 2, "finetune_level": 0, "max_percentile": 0.999,
        "custom_setting": [{"input_names": ["p1"], "output_names": ["r2"], "precision_level": 1,
                            "calibration_type": "minmax", "max_percentile": 0.99}],
        "truncate_var_names": ["flat"], "ignore_op_types": ["Concat"], "ignore_op_names": ["fc"],
        "bias_dtype": "int32"})
    cfg, _ = load_config(raw)
    assert cfg.model.output_model == str(tmp_path / "wd" / "custom.q.onnx")
    assert cfg.report_stem == str(tmp_path / "wd" / "custom")
    assert cfg.model.skip_onnxsim is True
    assert (cfg.calibration.calibration_step, cfg.calibration.calibration_type) == (7, "kl")
    p = cfg.calibration.input_parameters[0]
    assert (p.color_format, p.mean_value, p.std_value) == ("rgb", (0.5,), (2.0, 2.0, 2.0))
    assert p.preprocess_file == f"{hook}:pre"
    q = cfg.quantization
    assert (q.analysis_enable, q.precision_level, q.finetune_level, q.max_percentile) == (True, 2, 0, 0.999)
    (cs,) = q.custom_setting
    assert (cs.input_names, cs.output_names, cs.precision_level, cs.calibration_type, cs.max_percentile) == (
        ("p1",), ("r2",), 1, "minmax", 0.99)
    assert (q.truncate_var_names, q.ignore_op_types, q.ignore_op_names, q.bias_dtype) == (
        ("flat",), ("Concat",), ("fc",), "int32")


def test_output_prefix_that_already_ends_in_q_onnx(tiny_cnn, tmp_path):
    raw = tiny_cnn(model_parameters={"output_prefix": "net.q.onnx"})
    cfg, _ = load_config(raw)
    assert cfg.model.output_model == str(tmp_path / "net.q.onnx")


def test_relative_paths_are_read_from_the_config_folder(tiny_cnn, tmp_path, monkeypatch):
    raw = tiny_cnn()
    raw["model_parameters"]["onnx_model"] = "tiny_op17.onnx"
    raw["calibration_parameters"]["input_parametres"][0]["data_list_path"] = "calib17_list.txt"
    path = tmp_path / "cfg.json"
    path.write_text(json.dumps(raw))
    monkeypatch.chdir("/")
    cfg, _ = load_config(str(path))
    assert cfg.model.onnx_model == str(tmp_path / "tiny_op17.onnx")
    assert cfg.calibration.input_parameters[0].data_list_path == str(tmp_path / "calib17_list.txt")


def test_model_and_output_arguments_override_the_config(tiny_cnn, tmp_path):
    raw = tiny_cnn()
    other = tmp_path / "other.onnx"
    onnx.save(build_cnn(seed=3), other)
    cfg, _ = load_config(raw, str(other), str(tmp_path / "o" / "x.q.onnx"))
    assert cfg.model.onnx_model == str(other)
    assert cfg.model.output_model == str(tmp_path / "o" / "x.q.onnx")


def test_model_proto_argument(tiny_cnn):
    raw = tiny_cnn()
    proto = build_cnn(seed=5)
    _, loaded = load_config(raw, proto)
    assert loaded is proto


def test_cuda_falls_back_to_cpu_with_a_notice(tiny_cnn, caplog):
    if "CUDAExecutionProvider" in ort.get_available_providers():
        pytest.skip("allowed in CI: this machine has CUDA, so the CPU fallback is not exercised")
    raw = tiny_cnn(calibration_parameters={"calibration_device": "cuda"})
    with caplog.at_level(logging.WARNING):
        cfg, _ = load_config(raw)
    assert cfg.calibration.calibration_device == "cpu"
    assert "CUDAExecutionProvider" in caplog.text


def test_unknown_keys_warn_with_the_closest_key(tiny_cnn, caplog):
    raw = tiny_cnn(calibration_parameters={"calibration_stpe": 5})
    raw["calibration_parameters"]["input_parametres"][0]["mean_vaule"] = [1]
    with caplog.at_level(logging.WARNING):
        load_config(raw)
    assert "unknown key 'calibration_stpe'" in caplog.text and "did you mean 'calibration_step'" in caplog.text
    assert "did you mean 'mean_value'" in caplog.text


def test_invalid_json_names_file_line_and_column(tmp_path):
    path = tmp_path / "bad.json"
    path.write_text('{\n  "model_parameters": {\n    "onnx_model": "a.onnx",\n  }\n}\n')
    with pytest.raises(ConfigError) as err:
        load_config(str(path))
    assert str(path) in str(err.value) and "line 4, column 3" in str(err.value)


def test_missing_files_show_path_as_written_and_resolved(tiny_cnn, tmp_path):
    path = tmp_path / "cfg.json"
    raw = tiny_cnn()
    raw["model_parameters"]["onnx_model"] = "nope/model.onnx"
    path.write_text(json.dumps(raw))
    with pytest.raises(ConfigError) as err:
        load_config(str(path))
    assert "'nope/model.onnx'" in str(err.value) and str(tmp_path / "nope" / "model.onnx") in str(err.value)


def test_input_count_mismatch_lists_the_model_inputs(tiny_cnn):
    raw = tiny_cnn()
    raw["calibration_parameters"]["input_parametres"].append({"file_type": "npy"})
    with pytest.raises(ConfigError) as err:
        load_config(raw)
    text = str(err.value)
    assert text.startswith("Calibration input_parametres size should equal to model inputs size.")
    assert "lists 2 input(s); the model has 1: 'x'" in text


def test_unknown_calibration_type(tiny_cnn):
    with pytest.raises(ConfigError) as err:
        load_config(tiny_cnn(calibration_parameters={"calibration_type": "entropy"}))
    assert str(err.value).startswith("calibration_type entropy not implemented yet.")
    assert "default, minmax, percentile, kl, mse" in str(err.value)


def test_unknown_file_type(tiny_cnn):
    raw = tiny_cnn()
    raw["calibration_parameters"]["input_parametres"][0]["file_type"] = "jpeg"
    with pytest.raises(DataError) as err:
        load_config(raw)
    assert str(err.value).startswith("file_type jpeg not implemented yet.")
    assert "img, npy, raw" in str(err.value)


def test_unknown_input_name_suggests_the_real_one(tiny_cnn):
    raw = tiny_cnn()
    raw["calibration_parameters"]["input_parametres"][0]["input_name"] = "xx"
    with pytest.raises(ConfigError, match="Did you mean 'x'"):
        load_config(raw)


@pytest.mark.parametrize("section,key,value,needle", [
    ("calibration_parameters", "calibration_step", 0, "must be positive"),
    ("calibration_parameters", "calibration_step", "100", "must be int"),
    # issue 9: 3 (dynamic quantization), 4 (FP16) and 100 (simplify only) are modes now; 5 is still not
    ("quantization_parameters", "precision_level", 5, "precision_level 5 is not valid"),
    ("model_parameters", "opset", 6, "outside 7-21"),
    ("model_parameters", "opset", "17", "must be int"),
    ("quantization_parameters", "finetune_level", 4, "finetune_level 4 is not valid"),
    ("quantization_parameters", "max_percentile", 99.99, "fractions"),
    ("quantization_parameters", "bias_dtype", "int16", "Supported: float, int32"),
    ("model_parameters", "skip_onnxsim", "no", "must be bool"),
])
def test_bad_values_are_named(tiny_cnn, section, key, value, needle):
    with pytest.raises(ConfigError, match=needle):
        load_config(tiny_cnn(**{section: {key: value}}))


def test_input_shape_must_match_the_model(tiny_cnn):
    raw = tiny_cnn()
    raw["calibration_parameters"]["input_parametres"][0]["input_shape"] = [1, 3, 32, 32]
    with pytest.raises(ConfigError, match="disagrees with model input 'x'"):
        load_config(raw)


def test_input_dtype_comes_from_the_model(tiny_cnn, caplog):
    # issue 13: the model says what an input takes (integer inputs are fed as they are); a config dtype
    # that disagrees is warned about, not obeyed, and not a refusal
    raw = tiny_cnn()
    raw["calibration_parameters"]["input_parametres"][0]["dtype"] = "uint8"
    cfg, _ = load_config(raw)
    assert cfg.calibration.input_parameters[0].dtype == "float32"
    assert "differs from the model's input 'x'" in caplog.text
    raw["calibration_parameters"]["input_parametres"][0]["dtype"] = "complex64"
    with pytest.raises(ConfigError, match="dtype 'complex64' is not supported"):
        load_config(raw)


def test_preprocess_file_must_be_preset_or_file_function(tiny_cnn):
    raw = tiny_cnn()
    raw["calibration_parameters"]["input_parametres"][0]["preprocess_file"] = "IMAGENET_V2"
    with pytest.raises(ConfigError, match="neither a preset nor 'file.py:function'"):
        load_config(raw)


def test_empty_model_path_asks_for_one(tiny_cnn):
    raw = tiny_cnn()
    raw["model_parameters"]["onnx_model"] = ""
    with pytest.raises(ConfigError, match="-i/--input"):
        load_config(raw)


def test_relative_working_dir_is_the_config_folders_even_when_cwd_has_one(tiny_cnn, tmp_path, monkeypatch):
    """An output folder never falls back to the current directory: a config in X/proj with working_dir "work",
    run from X where X/work exists, writes to X/proj/work (it wrote to X/work)."""
    from xquant.cli import main

    raw = tiny_cnn()
    raw["model_parameters"]["working_dir"] = "work"
    (tmp_path / "proj").mkdir()
    (tmp_path / "work").mkdir()
    config = tmp_path / "proj" / "cfg.json"
    config.write_text(json.dumps(raw))
    monkeypatch.chdir(tmp_path)
    cfg, _ = load_config(str(config))
    assert cfg.model.working_dir == str(tmp_path / "proj" / "work")
    assert main(["-c", str(config), "-q"]) == 0
    assert (tmp_path / "proj" / "work" / "tiny_op17.q.onnx").is_file()
    assert list((tmp_path / "work").iterdir()) == []
