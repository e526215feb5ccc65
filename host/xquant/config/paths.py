"""Resolve the file paths a config names, with errors that show the path as written and as resolved."""
from __future__ import annotations

import os
from typing import Optional

from ..errors import ConfigError


def resolve_path(written: str, base_dir: str, what: str, must_exist: bool = True) -> str:
    """Absolute path of ``written``: relative paths are read against ``base_dir`` (the config's folder).
    An input (``must_exist``) falls back to the current directory when only that one exists (XQuant samples
    assume the latter); an output folder never does, so where it goes does not depend on what exists."""
    expanded = os.path.expanduser(written)
    if os.path.isabs(expanded):
        candidates = [expanded]
    elif must_exist:
        candidates = [os.path.join(base_dir, expanded), os.path.join(os.getcwd(), expanded)]
    else:
        return os.path.abspath(os.path.join(base_dir, expanded))
    for candidate in candidates:
        if os.path.exists(candidate):
            return os.path.abspath(candidate)
    resolved = os.path.abspath(candidates[0])
    if must_exist:
        raise ConfigError(
            f"{what} not found: '{written}' (resolved to '{resolved}').",
            "Check the path; relative paths are read from the config file's folder.",
        )
    return resolved


def optional_str(value: Optional[str]) -> Optional[str]:
    """Treat "", None and whitespace as 'not set', as XQuant does."""
    if value is None:
        return None
    text = str(value).strip()
    return text or None
