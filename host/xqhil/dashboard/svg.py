"""Inline SVG line charts drawn in Python: no script, no external request, readable in any browser.

One chart = runs on the x axis (evenly spaced, oldest left), shaded groups of runs that share a runtime
version, one or more series with an optional low-high band, and rings around flagged runs. Every point
carries a ``<title>`` tooltip.
"""
from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from html import escape
from typing import Optional

WIDTH, HEIGHT = 560, 220
LEFT, RIGHT, TOP, BOTTOM = 52, 12, 30, 34

Band = Optional[tuple[float, float]]


@dataclass
class Series:
    name: str
    values: list[float | None]
    color: str
    band: list[Band] = field(default_factory=list)
    dashed: bool = False
    ring: bool = True  # draw the flagged-run rings on this series


@dataclass
class Frame:
    """Maps data to pixels."""

    count: int
    lo: float
    hi: float

    def x(self, i: int) -> float:
        span = WIDTH - LEFT - RIGHT
        return LEFT + (span / 2 if self.count <= 1 else span * i / (self.count - 1))

    def y(self, v: float) -> float:
        return TOP + (HEIGHT - TOP - BOTTOM) * (self.hi - v) / (self.hi - self.lo)


def nice_ticks(lo: float, hi: float, count: int = 5) -> list[float]:
    """Round tick values covering [lo, hi]."""
    if hi <= lo:
        hi = lo + (abs(lo) or 1.0)
    raw = (hi - lo) / max(count - 1, 1)
    power = 10 ** math.floor(math.log10(raw))
    step = next(m * power for m in (1, 2, 2.5, 5, 10) if m * power >= raw)
    start = math.floor(lo / step) * step
    ticks = []
    value = start
    while value <= hi + step * 0.5:
        ticks.append(round(value, 10))
        value += step
    return ticks


def _frame(series: Sequence[Series], count: int, zero: bool) -> tuple[Frame, list[float]]:
    values = [v for s in series for v in s.values if v is not None]
    values += [b for s in series for band in s.band if band for b in band]
    lo, hi = (min(values), max(values)) if values else (0.0, 1.0)
    if zero:
        lo = min(lo, 0.0)
    pad = (hi - lo) * 0.08 or abs(hi) * 0.1 or 1.0
    ticks = nice_ticks(lo - (0 if zero and lo == 0 else pad), hi + pad)
    return Frame(count, ticks[0], ticks[-1]), ticks


def _fmt(v: float) -> str:
    return f"{v:.4g}"


def _axes(frame: Frame, ticks: Sequence[float], unit: str) -> list[str]:
    out = []
    for t in ticks:
        y = frame.y(t)
        out.append(f'<line class="grid" x1="{LEFT}" x2="{WIDTH - RIGHT}" y1="{y:.1f}" y2="{y:.1f}"/>')
        out.append(f'<text class="tick" x="{LEFT - 6}" y="{y + 4:.1f}" text-anchor="end">{_fmt(t)}</text>')
    out.append(f'<text class="unit" x="6" y="{TOP - 12}">{escape(unit)}</text>')
    return out


def _groups(frame: Frame, labels: Sequence[str], groups: Sequence[str]) -> list[str]:
    """Alternate shading per run of equal group labels (runtime versions), labels below the axis (those
    that would overlap the previous one are left out: their tooltips still name the version)."""
    out, start, shown_until, count = [], 0, float("-inf"), 0
    half = (frame.x(1) - frame.x(0)) / 2 if frame.count > 1 else (WIDTH - LEFT - RIGHT) / 2
    for i in range(1, len(groups) + 1):
        if i < len(groups) and groups[i] == groups[start]:
            continue
        x0, x1 = frame.x(start) - half, frame.x(i - 1) + half
        shade = "band-a" if count % 2 == 0 else "band-b"  # alternate per group
        count += 1
        out.append(f'<rect class="{shade}" x="{max(x0, LEFT):.1f}" y="{TOP}" '
                   f'width="{min(x1, WIDTH - RIGHT) - max(x0, LEFT):.1f}" height="{HEIGHT - TOP - BOTTOM}"/>')
        middle = min(max((x0 + x1) / 2, LEFT + 24), WIDTH - RIGHT - 24)
        half_text = 3.3 * len(groups[start])  # about 6.5 px a character at 10 px bold
        if middle - half_text > shown_until + 4:
            out.append(f'<text class="group" x="{middle:.1f}" y="{HEIGHT - 8}" text-anchor="middle">'
                       f'{escape(groups[start])}</text>')
            shown_until = middle + half_text
        start = i
    step = max(1, math.ceil(len(labels) / 12))
    for i in range(0, len(labels), step):
        out.append(f'<text class="tick" x="{frame.x(i):.1f}" y="{HEIGHT - BOTTOM + 13}" '
                   f'text-anchor="middle">{escape(labels[i])}</text>')
    return out


def _band(frame: Frame, s: Series) -> list[str]:
    pts = [(i, b) for i, b in enumerate(s.band) if b]
    if len(pts) < 1:
        return []
    if len(pts) == 1:
        i, (lo, hi) = pts[0]
        return [(f'<line x1="{frame.x(i):.1f}" x2="{frame.x(i):.1f}" y1="{frame.y(lo):.1f}" '
                f'y2="{frame.y(hi):.1f}" stroke="{s.color}" stroke-width="6" opacity="0.25"/>')]
    upper = " ".join(f"{frame.x(i):.1f},{frame.y(b[1]):.1f}" for i, b in pts)
    lower = " ".join(f"{frame.x(i):.1f},{frame.y(b[0]):.1f}" for i, b in reversed(pts))
    return [f'<polygon points="{upper} {lower}" fill="{s.color}" opacity="0.18"/>']


def _line(frame: Frame, s: Series, tips: Sequence[str], unit: str) -> list[str]:
    pts = [(i, v) for i, v in enumerate(s.values) if v is not None]
    out = []
    if len(pts) > 1:
        path = " ".join(f"{frame.x(i):.1f},{frame.y(v):.1f}" for i, v in pts)
        dash = ' stroke-dasharray="5 3"' if s.dashed else ""
        out.append(f'<polyline points="{path}" fill="none" stroke="{s.color}" stroke-width="2"{dash}/>')
    for i, v in pts:
        band = s.band[i] if i < len(s.band) and s.band[i] else None
        extra = f" [{_fmt(band[0])}-{_fmt(band[1])}]" if band else ""
        tip = escape(f"{s.name}: {_fmt(v)} {unit}{extra} | {tips[i]}")
        out.append(f'<circle cx="{frame.x(i):.1f}" cy="{frame.y(v):.1f}" r="3.2" fill="{s.color}">'
                   f'<title>{tip}</title></circle>')
    return out


def _legend(series: Sequence[Series]) -> list[str]:
    out, x = [], LEFT + 70
    for s in series:
        out.append(f'<rect x="{x}" y="{TOP - 21}" width="12" height="4" fill="{s.color}"/>')
        out.append(f'<text class="legend" x="{x + 16}" y="{TOP - 15}">{escape(s.name)}</text>')
        x += 24 + 6.5 * len(s.name)
    return out


def _flags(frame: Frame, series: Sequence[Series], flagged: Sequence[int]) -> list[str]:
    out = []
    for i in flagged:
        values = [s.values[i] for s in series if s.ring and i < len(s.values) and s.values[i] is not None]
        for v in values[:1]:
            out.append(f'<circle class="flag" cx="{frame.x(i):.1f}" cy="{frame.y(v):.1f}" r="7"/>')
    return out


def line_chart(title: str, unit: str, labels: Sequence[str], groups: Sequence[str],
               series: Sequence[Series], tips: Sequence[str], flagged: Sequence[int] = (),
               zero: bool = False) -> str:
    """An SVG line chart; empty string when no series has a value."""
    series = [s for s in series if any(v is not None for v in s.values)]
    if not series:
        return ""
    frame, ticks = _frame(series, len(labels), zero)
    parts = [(f'<svg class="chart" viewBox="0 0 {WIDTH} {HEIGHT}" role="img" '
             f'aria-label="{escape(title)}">'),
             f"<title>{escape(title)}</title>"]
    parts += _groups(frame, labels, groups) + _axes(frame, ticks, unit)
    for s in series:
        parts += _band(frame, s)
    for s in series:
        parts += _line(frame, s, tips, unit)
    parts += _flags(frame, series, flagged) + _legend(series)
    parts.append("</svg>")
    return "\n".join(parts)
