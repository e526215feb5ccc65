"""Board descriptions: --board strings, inventories (TOML and JSON), validation errors."""
from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

from xqhil.boards import load_inventory, resolve_board
from xqhil.boards.spec import check_remote_dir, check_usable
from xqhil.errors import BadInput, HilError
from xqhil_testlib import run_cli

REPO = Path(__file__).resolve().parents[2]


def test_builtin_boards():
    host = resolve_board("host")
    assert host.kind == "host" and host.python == (sys.executable,)
    qemu = resolve_board("qemu")
    assert qemu.kind == "qemu" and qemu.emulated and qemu.python[0] == "qemu-riscv64-static"
    assert qemu.python[-1].endswith("usr/bin/python3")
    ssh = resolve_board("ssh://alice@127.0.0.1:2200")
    assert (ssh.kind, ssh.user, ssh.host, ssh.port, ssh.address) == (
        "ssh", "alice", "127.0.0.1", 2200, "ssh://alice@127.0.0.1:2200")
    assert resolve_board("ssh://bob@127.0.0.1").port == 22
    assert resolve_board("ssh://bob@[::1]:2222").host == "::1"


def test_python_override_and_key_never_public(tmp_path):
    spec = resolve_board("ssh://alice@127.0.0.1:2200", python="env A=1 python3 -X dev", ssh_key="/secret/key")
    assert spec.python == ("env", "A=1", "python3", "-X", "dev")
    assert "/secret/key" not in json.dumps(spec.public())


@pytest.mark.parametrize("text, words", [
    ("ssh://al ice@127.0.0.1", "user name"),
    ("ssh://alice@bad_host!:22", "not a valid host"),
    ("ssh://alice@127.0.0.1:70000", "out of range"),
    ("ssh://alice@127.0.0.1:22; rm -rf /", "not an SSH address"),
    ("qemu:", "needs a rootfs"),
    ("hots", "Did you mean 'host'"),
    ("ssh://root@127.0.0.1\n", "not a valid host"),  # $ matched before a final newline
    ("ssh://root\n@127.0.0.1:2222", "user name"),
])
def test_bad_board_strings_are_bad_input(text, words):
    with pytest.raises(BadInput, match=words.replace("(", r"\(")):
        resolve_board(text)


def test_missing_explicit_rootfs_is_an_infrastructure_error_when_used(tmp_path):
    spec = resolve_board(f"qemu:{tmp_path / 'nothing'}")  # parsing never looks at the disk
    with pytest.raises(HilError, match="build-rootfs.sh"):
        check_usable(spec)


def test_empty_python_is_rejected():
    with pytest.raises(BadInput, match="empty"):
        resolve_board("host", python="  ")


@pytest.mark.parametrize("path", ["relative/dir", "/tmp/../etc", "/tmp/$(reboot)", "/tmp/a b"])
def test_remote_dir_must_be_a_plain_absolute_path(path):
    with pytest.raises(BadInput):
        check_remote_dir(path, "--remote-dir")


def test_example_inventory_lists_and_resolves_without_a_rootfs(tmp_path):
    # a copy, so its relative rootfs points at a folder that does not exist on any machine
    (tmp_path / "configs").mkdir()
    copy = tmp_path / "configs" / "boards.example.toml"
    copy.write_text((REPO / "configs" / "boards.example.toml").read_text())
    for extra in ([], ["--board", "k1"]):
        code, out, err = run_cli(["boards", "--inventory", str(copy), *extra])
        assert code == 0, err
        assert f"rv64-qemu\tqemu\t{tmp_path / 'ci' / '.cache' / 'riscv64-rootfs'}" in out
    assert resolve_board("k1", load_inventory(str(copy))).address == "ssh://bianbu@192.0.2.10"


def test_example_inventory_parses():
    boards = load_inventory(str(REPO / "configs" / "boards.example.toml"))
    assert set(boards) >= {"pc", "rv64-qemu", "k1", "rv64-over-ssh"}
    k1 = boards["k1"]
    assert k1.kind == "ssh" and k1.user == "bianbu" and k1.providers[0] == "SpaceMITExecutionProvider"
    assert k1.threads == 4 and k1.workdir == "/tmp"
    assert boards["rv64-qemu"].rootfs == str(REPO / "ci" / ".cache" / "riscv64-rootfs")
    assert boards["rv64-over-ssh"].emulated is True and boards["rv64-over-ssh"].python[0] == "qemu-riscv64-static"


def test_json_inventory_and_named_lookup(tmp_path):
    (tmp_path / "keys").mkdir()
    path = tmp_path / "boards.json"
    path.write_text(json.dumps({"boards": {"lab": {"kind": "ssh", "address": "ci@127.0.0.1:2022",
                                                   "ssh_key": "keys/id", "python": "python3.11"}}}))
    boards = load_inventory(str(path))
    spec = resolve_board("lab", boards, str(path), python="python3")
    assert spec.port == 2022 and spec.ssh_key == str(tmp_path / "keys" / "id") and spec.python == ("python3",)
    with pytest.raises(BadInput, match="Did you mean 'lab'"):
        resolve_board("lba", boards, str(path))


@pytest.mark.parametrize("entry, words", [
    ({"kind": "serial"}, "kind must be one of"),
    ({"kind": "host", "pyhton": "x"}, "Did you mean 'python'"),
    ({"kind": "ssh", "address": "ci@127.0.0.1", "threads": "four"}, "threads must be int"),
    ({"ikdn": "host"}, "Did you mean 'kind'"),  # xquant.suggest: two swaps; difflib found nothing
    ({"kind": "host", "providers": ["CPUExecutionProvidr"]}, "Did you mean 'CPUExecutionProvider'"),
])
def test_inventory_errors_name_the_entry(tmp_path, entry, words):
    path = tmp_path / "boards.json"
    path.write_text(json.dumps({"boards": {"b1": entry}}))
    with pytest.raises(BadInput, match=words) as info:
        load_inventory(str(path))
    assert "boards.b1" in str(info.value)


def test_inventory_file_missing_or_broken(tmp_path):
    with pytest.raises(BadInput, match="not found"):
        load_inventory(str(tmp_path / "none.toml"))
    (tmp_path / "bad.toml").write_text("[boards.x\nkind=")
    with pytest.raises(BadInput, match="cannot be parsed"):
        load_inventory(str(tmp_path / "bad.toml"))
