"""Where a history lives: a SQLite file path or a PostgreSQL URL (``postgresql://user:pw@host/db``).

A URL's password is never shown: :func:`redact` is what goes into messages, reports, logs and the
dashboard, and :func:`scrub` removes it from any text (a driver's error message) that might echo it.
"""
from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Union
from urllib.parse import parse_qsl, unquote, urlencode, urlsplit, urlunsplit

ENV_DB = "XQHIL_DB"
SCHEMES = ("postgresql://", "postgres://")
HIDDEN = "***"
DbTarget = Union[str, "os.PathLike[str]"]


def is_dsn(target: object) -> bool:
    """True for a PostgreSQL URL (``postgresql://`` or ``postgres://``), False for a file path."""
    return isinstance(target, str) and target.lower().startswith(SCHEMES)


def default_db() -> Path | str:
    """``$XQHIL_DB`` if set (a path, or a PostgreSQL URL kept as is), else
    ``$XDG_DATA_HOME/xqhil/history.sqlite3`` (``~/.local/share`` default)."""
    value = os.environ.get(ENV_DB)
    if value:
        return value if is_dsn(value) else Path(value).expanduser()
    data_home = os.environ.get("XDG_DATA_HOME") or str(Path.home() / ".local" / "share")
    return Path(data_home).expanduser() / "xqhil" / "history.sqlite3"


def _passwords(dsn: str) -> list[str]:
    try:
        parts = urlsplit(dsn)
        found = [parts.password] if parts.password else []
    except ValueError:  # not a URL Python can split (a broken IPv6 host): the user:password@ part
        found = re.findall(r"//[^:/@]*:([^@/]*)@", dsn)
    query = dsn.split("?", 1)[1] if "?" in dsn else ""
    found += [value for key, value in parse_qsl(query) if key == "password" and value]
    found += [unquote(p) for p in found]
    # an unencoded '@' in a password: libpq reads part of it as the host name and may echo that part
    found += [part for p in found for part in p.split("@") if len(part) >= 3]
    return [p for p in found if p]


def redact(target: DbTarget) -> str:
    """``target`` fit to print: a URL's password (in the user part or ``?password=``) becomes ***."""
    text = os.fspath(target)
    if not is_dsn(text):
        return text
    try:
        parts = urlsplit(text)
        netloc = parts.netloc
        if parts.password is not None:
            user, host = netloc.rsplit("@", 1)
            netloc = f"{user.split(':', 1)[0]}:{HIDDEN}@{host}"
        query = urlencode([(k, HIDDEN if k == "password" else v) for k, v in parse_qsl(parts.query)],
                          safe="*")
        return urlunsplit((parts.scheme, netloc, parts.path, query, parts.fragment))
    except ValueError:
        return re.sub(r"(//[^:/@]*:)[^@]*@", rf"\1{HIDDEN}@", text.split("?", 1)[0])


def scrub(text: str, target: DbTarget | None) -> str:
    """``text`` with every password of ``target`` (a URL) replaced by ***."""
    if target is None or not is_dsn(os.fspath(target)):
        return text
    text = text.replace(os.fspath(target), redact(target))
    for password in sorted(_passwords(os.fspath(target)), key=len, reverse=True):
        text = text.replace(password, HIDDEN)
    return text
