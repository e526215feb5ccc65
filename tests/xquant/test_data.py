"""Calibration data: list files, img/npy/raw readers, presets, custom hooks, selection."""
from __future__ import annotations

import json

import cv2
import numpy as np
import pytest

from xquant_testlib import REPO, write_npy_list
from xquant.config import load_config
from xquant.config.schema import InputParameter
from xquant.data import CalibrationData, held_back_files, load_input_batch, read_list_file, select_calibration_files
from xquant.errors import DataError


def img_param(**kw) -> InputParameter:
    base = dict(input_name="x", input_shape=(1, 3, 4, 6), file_type="img")
    base.update(kw)
    return InputParameter(**base)


@pytest.fixture
def bgr_png(tmp_path):
    """A 4x6 image whose B, G, R planes are 10, 20, 30."""
    path = tmp_path / "px.png"
    img = np.zeros((4, 6, 3), np.uint8)
    img[..., 0], img[..., 1], img[..., 2] = 10, 20, 30
    cv2.imwrite(str(path), img)
    return str(path)


def test_list_file_relative_absolute_and_blank_lines(tmp_path):
    (tmp_path / "sub").mkdir()
    lst = tmp_path / "sub" / "list.txt"
    lst.write_text("a.png\n\n  b/c.png  \n/abs/d.png\n\n")
    assert read_list_file(str(lst)) == [str(tmp_path / "sub" / "a.png"), str(tmp_path / "sub" / "b" / "c.png"),
                                        "/abs/d.png"]


@pytest.mark.parametrize("color,expected", [("bgr", [10, 20, 30]), ("rgb", [30, 20, 10])])
def test_img_channel_order_mean_and_std(bgr_png, color, expected):
    batch = load_input_batch(img_param(color_format=color, mean_value=(1.0,), std_value=(2.0, 2.0, 2.0)), [bgr_png])
    assert batch.shape == (1, 3, 4, 6) and batch.dtype == np.float32
    np.testing.assert_allclose(batch[0, :, 0, 0], (np.array(expected) - 1.0) / 2.0)


def test_img_resizes_to_input_shape(bgr_png):
    batch = load_input_batch(img_param(input_shape=(1, 3, 8, 12)), [bgr_png])
    assert batch.shape == (1, 3, 8, 12)
    np.testing.assert_allclose(batch[0, :, 5, 7], [10, 20, 30])


def test_img_nhwc_layout(bgr_png):
    batch = load_input_batch(img_param(input_shape=(1, 4, 6, 3)), [bgr_png])
    assert batch.shape == (1, 4, 6, 3)
    np.testing.assert_allclose(batch[0, 0, 0], [10, 20, 30])


def test_single_channel_input_reads_grayscale_demo_image():
    png = REPO / "demo" / "data" / "calib" / "00000.png"
    if not png.exists():
        pytest.skip("demo data missing")
    raw = cv2.imread(str(png), cv2.IMREAD_GRAYSCALE).astype(np.float32)
    batch = load_input_batch(img_param(input_shape=(1, 1, 28, 28), mean_value=(72.9,), std_value=(90.0,)),
                             [str(png)])
    np.testing.assert_allclose(batch[0, 0], (raw - 72.9) / 90.0, rtol=1e-6)


def test_unreadable_image_is_named(tmp_path):
    bad = tmp_path / "bad.png"
    bad.write_bytes(b"not an image")
    with pytest.raises(DataError, match="Cannot decode image .*bad.png"):
        load_input_batch(img_param(), [str(bad)])


def test_npy_shape_is_checked(tmp_path):
    good = tmp_path / "g.npy"
    np.save(good, np.ones((1, 3, 4, 6), np.float64))
    batch = load_input_batch(img_param(file_type="npy"), [str(good)])
    assert batch.shape == (1, 3, 4, 6) and batch.dtype == np.float32
    bad = tmp_path / "b.npy"
    np.save(bad, np.ones((3, 6, 4), np.float32))
    with pytest.raises(DataError, match=r"has shape \[3, 6, 4\]; input 'x' expects \[3, 4, 6\]"):
        load_input_batch(img_param(file_type="npy"), [str(bad)])


def test_raw_byte_size_is_checked(tmp_path):
    data = np.arange(72, dtype=np.float32)
    good = tmp_path / "g.raw"
    data.tofile(good)
    batch = load_input_batch(img_param(file_type="raw"), [str(good)])
    np.testing.assert_array_equal(batch.ravel(), data)
    bad = tmp_path / "b.raw"
    data[:-1].tofile(bad)
    with pytest.raises(DataError, match="has 284 bytes; input 'x' expects 288"):
        load_input_batch(img_param(file_type="raw"), [str(bad)])


def test_pt_imagenet_preset_on_a_flat_image(tmp_path):
    path = tmp_path / "flat.png"
    img = np.zeros((300, 400, 3), np.uint8)
    img[..., 0], img[..., 1], img[..., 2] = 50, 100, 200  # B, G, R
    cv2.imwrite(str(path), img)
    batch = load_input_batch(img_param(input_shape=(1, 3, 224, 224), preprocess_file="PT_IMAGENET"), [str(path)])
    expected = (np.array([200, 100, 50]) / 255.0 - [0.485, 0.456, 0.406]) / [0.229, 0.224, 0.225]
    assert batch.shape == (1, 3, 224, 224)
    np.testing.assert_allclose(batch[0, :, 100, 100], expected, rtol=1e-5)


def test_imagenet_preset_crops_the_centre(tmp_path):
    """A 224x448 image with a left half of 0 and right half of 255: the centre crop holds both halves."""
    path = tmp_path / "halves.png"
    img = np.zeros((224, 448, 3), np.uint8)
    img[:, 224:] = 255
    cv2.imwrite(str(path), img)
    param = img_param(input_shape=(1, 3, 224, 224), preprocess_file="IMAGENET")
    batch = load_input_batch(param, [str(path)])
    left, right = batch[0, 0, 100, 5], batch[0, 0, 100, 218]
    np.testing.assert_allclose([left, right], [(0 - 103.94) / 57, (255 - 103.94) / 57], rtol=1e-4)


def _write_hook(tmp_path, body: str):
    hook = tmp_path / "my_pre.py"
    hook.write_text(body)
    return str(hook)


def test_custom_hook_returning_a_torch_tensor(tmp_path, bgr_png):
    torch = pytest.importorskip("torch")
    assert torch
    hook = _write_hook(tmp_path, (
        "import torch, cv2, numpy as np\n"
        "def pre(path_list, input_parametr):\n"
        "    h, w = input_parametr['input_shape'][2:]\n"
        "    imgs = [cv2.resize(cv2.imread(p), (w, h)).astype(np.float32).transpose(2, 0, 1) for p in path_list]\n"
        "    return torch.from_numpy(np.stack(imgs)) / 10\n"))
    batch = load_input_batch(img_param(preprocess_file=f"{hook}:pre"), [bgr_png, bgr_png])
    assert batch.shape == (2, 3, 4, 6)
    np.testing.assert_allclose(batch[1, :, 0, 0], [1, 2, 3])


def test_custom_hook_returning_numpy(tmp_path, bgr_png):
    hook = _write_hook(tmp_path, "import numpy as np\ndef pre(paths, p):\n    return np.ones((len(paths),) + "
                                 "tuple(p['input_shape'][1:]))\n")
    assert load_input_batch(img_param(preprocess_file=f"{hook}:pre"), [bgr_png]).sum() == 72


@pytest.mark.parametrize("body,func,needle", [
    ("def pre(paths, p):\n    raise ValueError('boom')\n", "pre", "raised ValueError: boom"),
    ("def pre(paths, p):\n    return [1]\n", "pre", "returned list"),
    ("def pre(paths, p):\n    return __import__('numpy').ones((1, 2))\n", "pre", r"returned shape \[1, 2\]"),
    ("def other(paths, p):\n    pass\n", "pre", "has no function 'pre'. Functions found: other"),
    ("def pre(paths, p) oops\n", "pre", "could not be loaded: SyntaxError"),
])
def test_broken_hooks_name_file_and_function(tmp_path, bgr_png, body, func, needle):
    hook = _write_hook(tmp_path, body)
    with pytest.raises(DataError, match=needle) as err:
        load_input_batch(img_param(preprocess_file=f"{hook}:{func}"), [bgr_png])
    assert "my_pre.py" in str(err.value)


def test_hook_path_is_relative_to_the_config_file(tmp_path, tiny_cnn):
    raw = tiny_cnn()
    _write_hook(tmp_path, "def pre(paths, p):\n    pass\n")
    raw["calibration_parameters"]["input_parametres"][0]["preprocess_file"] = "my_pre.py:pre"
    path = tmp_path / "cfg.json"
    path.write_text(json.dumps(raw))
    cfg, _ = load_config(str(path))
    assert cfg.calibration.input_parameters[0].preprocess_file == f"{tmp_path / 'my_pre.py'}:pre"


def test_zero_items_names_the_input_and_list(tiny_cnn, tmp_path):
    raw = tiny_cnn()
    empty = tmp_path / "empty.txt"
    empty.write_text("\n\n")
    raw["calibration_parameters"]["input_parametres"][0]["data_list_path"] = str(empty)
    cfg, _ = load_config(raw)
    with pytest.raises(DataError) as err:
        CalibrationData(cfg)
    assert str(err.value).startswith("Calibration input x finds 0 items.")
    assert "empty.txt' has 2 line(s)" in str(err.value)


def test_missing_listed_file_names_line_and_list(tiny_cnn, tmp_path):
    raw = tiny_cnn()
    lst = tmp_path / "calib17_list.txt"
    lst.write_text(lst.read_text() + "calib17/missing.npy\n")
    cfg, _ = load_config(raw)
    with pytest.raises(DataError, match=r"line 25 of .*calib17_list.txt' not found"):
        CalibrationData(cfg)


def _two_input_cfg(tmp_path, n_a: int, n_b: int, step: int = 100):
    from xquant_testlib import build_two_input
    import onnx

    onnx.save(build_two_input(), tmp_path / "two.onnx")
    rng = np.random.default_rng(0)
    la = write_npy_list(tmp_path, "a", [rng.normal(size=(1, 1, 12, 12)) for _ in range(n_a)])
    lb = write_npy_list(tmp_path, "b", [rng.normal(size=(1, 1, 12, 12)) for _ in range(n_b)])
    raw = {"model_parameters": {"onnx_model": str(tmp_path / "two.onnx")},
           "calibration_parameters": {"calibration_step": step, "input_parametres": [
               {"input_name": "b", "file_type": "npy", "data_list_path": str(lb)},
               {"input_name": "a", "file_type": "npy", "data_list_path": str(la)}]}}
    return load_config(raw)[0]


def test_multi_input_lists_align_line_by_line(tmp_path):
    cfg = _two_input_cfg(tmp_path, 10, 10, step=4)
    files = select_calibration_files(cfg)
    assert [f.replace("/a/", "/b/") for f in files["a"]] == files["b"]
    batches = list(CalibrationData(cfg).batches(3))
    assert [b["a"].shape[0] for b in batches] == [3, 1]


def test_unequal_multi_input_lists_name_both_lists(tmp_path):
    cfg = _two_input_cfg(tmp_path, 10, 9)
    with pytest.raises(DataError) as err:
        CalibrationData(cfg)
    assert "b_list.txt' (input b) has 9 files" in str(err.value) and "a_list.txt' (input a) has 10" in str(err.value)


def test_seeded_choice_when_more_files_than_steps(tiny_cnn):
    cfg, _ = load_config(tiny_cnn(samples=40, calibration_parameters={"calibration_step": 10}))
    first, again = select_calibration_files(cfg)["x"], select_calibration_files(cfg)["x"]
    assert len(first) == 10 and first == again
    other, _ = load_config(tiny_cnn(samples=40, calibration_parameters={"calibration_step": 10, "seed": 7}))
    assert select_calibration_files(other)["x"] != first
    held = held_back_files(cfg, 100)["x"]
    assert len(held) == 30 and not set(held) & set(first)


def test_fewer_files_than_steps_uses_all_and_says_so(tiny_cnn, caplog):
    import logging

    cfg, _ = load_config(tiny_cnn(samples=5))
    with caplog.at_level(logging.INFO):
        data = CalibrationData(cfg)
    assert data.num_samples == 5
    assert "fewer than calibration_step 100: using all of them" in caplog.text
