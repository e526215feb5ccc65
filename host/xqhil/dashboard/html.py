"""Small HTML pieces shared by the dashboard's pages; every string from the database goes through ``h``."""
from __future__ import annotations

from collections.abc import Iterable, Sequence
from html import escape
from typing import Any

from xqhil.dashboard import assets
from xqhil.dashboard.model import Link


def h(value: Any) -> str:
    return escape("-" if value is None else str(value), quote=True)


def num(value: float | None, digits: int = 4) -> str:
    return "-" if value is None else f"{value:.{digits}g}"


def table(headers: Sequence[str], rows: Iterable[str], empty: str, cls: str = "") -> str:
    body = "\n".join(rows)
    if not body:
        return f'<p class="empty">{h(empty)}</p>'
    head = "".join(f"<th>{h(x)}</th>" for x in headers)
    attr = f' class="{cls}"' if cls else ""
    return f"<table{attr}><thead><tr>{head}</tr></thead><tbody>\n{body}\n</tbody></table>"


def links(items: Sequence[Link]) -> str:
    out = []
    for link in items:
        cls = "" if link.exists else ' class="missing" title="not found when the dashboard was written"'
        out.append(f'<a href="{h(link.href)}"{cls}>{h(link.label)}</a>')
    return " ".join(out) or "-"


def verdict(value: str) -> str:
    return f'<span class="verdict v-{h(value)}">{h(value)}</span>'


def document(title: str, body: str) -> str:
    """A whole self-contained page: inline style and script, nothing fetched."""
    return (f'<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">'
            f'<meta name="viewport" content="width=device-width, initial-scale=1">'
            f"<title>{h(title)}</title><style>{assets.CSS}</style></head><body>{body}"
            f"<script>{assets.JS}</script></body></html>\n")
