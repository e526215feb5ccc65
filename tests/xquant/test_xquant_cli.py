"""python -m xquant in-process and as a subprocess: outputs, summaries, one-line errors and exit codes."""
from __future__ import annotations

import json
import subprocess
import sys

import pytest

from xquant_testlib import REPO, env_without_pythonpath
from xquant.cli import main


def test_cli_in_process_writes_model_and_prints_summary(tiny_cnn, tmp_path, capsys):
    cfg_path = tmp_path / "cfg.json"
    cfg_path.write_text(json.dumps(tiny_cnn()))
    assert main(["-c", str(cfg_path), "-o", str(tmp_path / "out.q.onnx")]) == 0
    out = capsys.readouterr().out
    assert (tmp_path / "out.q.onnx").exists()
    assert "quantized model:" in out and "SNR dB" in out and "logits" in out


def test_cli_input_override(tiny_cnn, tmp_path, capsys):
    cfg = tiny_cnn()
    model = cfg["model_parameters"].pop("onnx_model")
    cfg_path = tmp_path / "cfg.json"
    cfg_path.write_text(json.dumps(cfg))
    assert main(["-c", str(cfg_path), "-i", model, "-q"]) == 0
    assert (tmp_path / "tiny_op17.q.onnx").exists()
    assert capsys.readouterr().out == ""


@pytest.mark.parametrize("mutate,needle", [
    (lambda c: c["calibration_parameters"].update(calibration_type="foo"), "calibration_type foo not implemented yet."),
    (lambda c: c["calibration_parameters"]["input_parametres"][0].update(file_type="bmp"),
     "file_type bmp not implemented yet."),
    (lambda c: c["calibration_parameters"]["input_parametres"].append({}),
     "Calibration input_parametres size should equal to model inputs size."),
    (lambda c: c["calibration_parameters"]["input_parametres"][0].update(data_list_path=""),
     "Calibration input x finds 0 items."),
])
def test_cli_errors_are_one_line_with_exit_2(tiny_cnn, tmp_path, capsys, mutate, needle):
    cfg = tiny_cnn()
    mutate(cfg)
    cfg_path = tmp_path / "cfg.json"
    cfg_path.write_text(json.dumps(cfg))
    assert main(["-c", str(cfg_path)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err[-1].startswith(f"xquant: error: {needle}")
    assert not any("Traceback" in line for line in err)
    assert not list(tmp_path.glob("*.q.onnx"))


def test_module_as_subprocess_on_the_demo(copy_demo, tmp_path):
    proc = subprocess.run([sys.executable, "-m", "xquant", "-c", str(copy_demo)], capture_output=True, text=True,
                          cwd=tmp_path, env=env_without_pythonpath(), timeout=300)
    assert proc.returncode == 0, proc.stderr
    assert (tmp_path / "out" / "demo" / "fashion_cnn.q.onnx").exists()
    assert "logits" in proc.stdout


def test_subprocess_bad_json_is_one_line(tmp_path):
    bad = tmp_path / "bad.json"
    bad.write_text("{\"model_parameters\": {")
    proc = subprocess.run([sys.executable, "-m", "xquant", "-c", str(bad)], capture_output=True, text=True,
                          cwd=REPO, timeout=120)
    assert proc.returncode == 2
    assert proc.stderr.strip().count("\n") == 0 and "line 1, column 23" in proc.stderr
