"""Named boards from an inventory file (TOML or JSON); see configs/boards.example.toml.

Each entry is ``[boards.NAME]`` with ``kind`` (host, qemu, ssh) and the fields of ``BoardSpec``:
``address`` (ssh), ``rootfs`` (qemu), ``python``, ``ssh_key``, ``known_hosts``, ``accept_unknown_host_key``,
``workdir``, ``providers``, ``threads``, ``emulated``. Relative paths are read against the file's folder.
Files an entry names (rootfs, keys) are checked when that board is used (``spec.check_usable``), not here.
"""
from __future__ import annotations

import json
import os
import re
from dataclasses import replace
from typing import Any, Dict

from xquant.suggest import did_you_mean

from ..errors import BadInput
from .spec import KINDS, BoardSpec, builtin_board, check_providers, check_remote_dir, split_python

FIELDS = ("kind", "address", "rootfs", "python", "ssh_key", "known_hosts", "accept_unknown_host_key",
          "workdir", "providers", "threads", "emulated", "description", "env", "provider_options")
ENV_NAME = re.compile(r"^[A-Z][A-Z0-9_]{0,63}$")


def _read(path: str) -> Dict[str, Any]:
    if not os.path.isfile(path):
        raise BadInput(f"board inventory '{path}' not found.", "Pass --inventory FILE (see configs/).")
    try:
        if path.endswith(".toml"):
            try:
                import tomllib
            except ImportError as exc:  # Python < 3.11
                raise BadInput(f"board inventory '{path}': TOML needs Python 3.11+.",
                               "Use the JSON form of the inventory instead.") from exc
            with open(path, "rb") as handle:
                return tomllib.load(handle)
        with open(path, encoding="utf-8") as handle:
            return json.load(handle)
    except BadInput:
        raise
    except (ValueError, OSError) as exc:
        raise BadInput(f"board inventory '{path}' cannot be parsed: {exc}.") from exc
    except RecursionError:
        raise BadInput(f"board inventory '{path}' nests tables or arrays too deeply to be read.") from None


def _typed(entry: Dict[str, Any], key: str, kind: type, where: str) -> Any:
    value = entry.get(key)
    if value is None:
        return None
    if kind is int and isinstance(value, bool) or not isinstance(value, kind):
        raise BadInput(f"{where}.{key} must be {kind.__name__}, got {value!r}.")
    return value


def _env(entry: Dict[str, Any], where: str) -> tuple:
    """``env = {NAME = "value"}``: environment set on the board before onnxruntime loads."""
    table = _typed(entry, "env", dict, where) or {}
    for name, value in table.items():
        if not ENV_NAME.match(str(name)) or not isinstance(value, str):
            raise BadInput(f"{where}.env.{name} must be NAME (A-Z, 0-9, _) = \"text\", got {value!r}.")
    return tuple(sorted(table.items()))


def _provider_options(entry: Dict[str, Any], where: str) -> tuple:
    """``provider_options = {Provider = {key = "value"}}``."""
    table = _typed(entry, "provider_options", dict, where) or {}
    found = []
    for provider, options in table.items():
        if not isinstance(options, dict):
            raise BadInput(f"{where}.provider_options.{provider} must be a table of key = \"value\".")
        found.append((str(provider), tuple(sorted((str(k), str(v)) for k, v in options.items()))))
    return tuple(found)


def _path(value: Any, base: str) -> Any:
    return None if value is None else os.path.normpath(os.path.join(base, os.path.expanduser(value)))


def _board(name: str, entry: Any, base: str, where: str) -> BoardSpec:
    if not isinstance(entry, dict):
        raise BadInput(f"{where} must be a table of settings.")
    for key in entry:
        if key not in FIELDS:
            close = did_you_mean(key, FIELDS)
            raise BadInput(f"{where}: unknown setting {key!r}." + (f" Did you mean {close!r}?" if close else ""))
    kind = entry.get("kind")
    if kind not in KINDS:
        raise BadInput(f"{where}.kind must be one of {', '.join(KINDS)}, got {kind!r}.")
    if kind == "ssh":
        text = _typed(entry, "address", str, where) or ""
        spec = builtin_board(text if text.startswith("ssh://") else f"ssh://{text}", f"{where}.address")
    elif kind == "qemu":
        rootfs = _path(_typed(entry, "rootfs", str, where), base)
        spec = builtin_board(f"qemu:{rootfs}" if rootfs else "qemu", f"{where}.rootfs")
    else:
        spec = builtin_board("host", where)
    assert spec is not None  # builtin_board knows all KINDS
    python = _typed(entry, "python", str, where)
    providers = _typed(entry, "providers", list, where)
    workdir = _typed(entry, "workdir", str, where)
    return replace(
        spec, name=name, python=split_python(python, f"{where}.python") if python else spec.python,
        ssh_key=_path(_typed(entry, "ssh_key", str, where), base),
        known_hosts=_path(_typed(entry, "known_hosts", str, where), base),
        accept_unknown_host_key=bool(_typed(entry, "accept_unknown_host_key", bool, where)),
        workdir=check_remote_dir(workdir, f"{where}.workdir") if workdir else None,
        providers=check_providers([str(p) for p in providers], f"{where}.providers") if providers else None,
        threads=_typed(entry, "threads", int, where),
        emulated=_typed(entry, "emulated", bool, where) if "emulated" in entry else spec.emulated,
        env=_env(entry, where), provider_options=_provider_options(entry, where),
    )


def load_inventory(path: str) -> Dict[str, BoardSpec]:
    """Named boards of ``path``; unknown settings and kinds are errors with a hint."""
    path = os.path.abspath(os.path.expanduser(path))
    raw = _read(path)
    boards = raw.get("boards") if isinstance(raw, dict) else None
    if not isinstance(boards, dict) or not boards:
        raise BadInput(f"board inventory '{path}' has no [boards.NAME] entries.")
    base = os.path.dirname(path)
    return {name: _board(name, entry, base, f"{os.path.basename(path)}: boards.{name}")
            for name, entry in boards.items()}
