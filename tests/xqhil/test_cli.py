"""The other subcommands: `xqhil run` (one model on a board) and `xqhil boards` (inventory, probe)."""
from __future__ import annotations

import json

import numpy as np
from xqhil_testlib import build_cnn, leftovers, run_cli

from xqhil.cli import build_parser


def test_parser_has_one_subcommand_per_function():
    parser = build_parser()
    sub = next(a for a in parser._actions if a.dest == "command")
    assert {"quantize-and-verify", "run", "boards"} <= set(sub.choices)


def test_run_one_model_on_a_named_inventory_board(tmp_path):
    build_cnn(tmp_path / "m.onnx")
    x = np.random.default_rng(0).standard_normal((5, 1, 8, 8)).astype(np.float32)
    np.savez(tmp_path / "x.npz", input=x)
    inventory = tmp_path / "boards.json"
    inventory.write_text(json.dumps({"boards": {"pc": {"kind": "host", "workdir": str(tmp_path)}}}))
    code, out, err = run_cli(["run", str(tmp_path / "m.onnx"), "--board", "pc", "--inventory", str(inventory),
                              "--inputs", str(tmp_path / "x.npz"), "--repeat", "4", "--out", str(tmp_path / "o"),
                              "-q"])
    assert code == 0, err
    result = json.loads(out)
    assert result["ok"] and result["board"]["name"] == "pc"
    assert result["tasks"]["accuracy"]["samples"] == 5
    assert len(result["tasks"]["performance"]["latency"]["samples_ms"]) == 4
    with np.load(tmp_path / "o" / "outputs.npz") as data:
        assert data["out0"].shape == (5, 10)
    assert leftovers(tmp_path) == []


def test_boards_lists_the_inventory(tmp_path):
    inventory = tmp_path / "boards.toml"
    inventory.write_text('[boards.k1]\nkind = "ssh"\naddress = "ssh://ci@127.0.0.1:2222"\n')
    code, out, _ = run_cli(["boards", "--inventory", str(inventory)])
    assert code == 0 and "k1\tssh\tssh://ci@127.0.0.1:2222" in out


def test_unknown_board_name_is_bad_input_with_a_hint(tmp_path):
    code, _, err = run_cli(["boards", "--probe", "--board", "qemmu"])
    assert code == 2 and "Did you mean 'qemu'" in err and err.count("\n") == 1
