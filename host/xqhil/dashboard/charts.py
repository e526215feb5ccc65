"""The five charts of a model/board/config page, from its chart points (older releases aggregated, then
the newest runs): INT8 and FP32 latency, INT8 speedup, PC-vs-chip accuracy, chip-vs-PC SNR."""
from __future__ import annotations

from collections.abc import Sequence
from html import escape

from xqhil.dashboard import svg
from xqhil.dashboard.model import ChartPoint

INT8, FP32, PC, CHIP = "#1849a9", "#e04f16", "#667085", "#7a2e9e"


def _flagged(points: Sequence[ChartPoint], *kinds: str, metric: str = "") -> list[int]:
    """Indexes of points to ring: regressions of ``kinds`` (whose metric contains ``metric``); chip bugs too
    when "bug" is one of the kinds."""
    return [i for i, p in enumerate(points)
            if any(k in kinds and metric in m for k, m in p.regressions) or ("bug" in kinds and p.bug)]


def _values(points: Sequence[ChartPoint], name: str) -> list[float | None]:
    return [p.values.get(name) for p in points]


def _latency(points: Sequence[ChartPoint], axis: tuple, precision: str) -> str:
    bands = [getattr(p, precision) for p in points]
    color = INT8 if precision == "int8" else FP32
    series = [svg.Series(f"{precision.upper()} p50", [b[1] if b else None for b in bands], color,
                         [(b[0], b[2]) if b else None for b in bands])]
    return svg.line_chart(f"{precision.upper()} latency (p50, band p10-p90)", "ms", *axis, series=series,
                          tips=[p.tip for p in points], flagged=_flagged(points, "latency", metric=f".{precision}."))


def _speedup(points: Sequence[ChartPoint], axis: tuple) -> str:
    return svg.line_chart("INT8 speedup over FP32", "x", *axis,
                          series=[svg.Series("speedup", _values(points, "speedup"), INT8)],
                          tips=[p.tip for p in points], flagged=_flagged(points, "latency"))


def _accuracy(points: Sequence[ChartPoint], axis: tuple) -> str:
    series = [svg.Series("PC INT8", _values(points, "pc_int8"), PC, ring=False),
              svg.Series("chip INT8", _values(points, "chip_int8"), CHIP),
              svg.Series("PC FP32", _values(points, "pc_fp32"), PC, dashed=True, ring=False),
              svg.Series("chip FP32", _values(points, "chip_fp32"), CHIP, dashed=True)]
    labelled = all(p.labelled for p in points)
    title = "accuracy, PC vs chip" if labelled else "top-1 agreement with PC FP32, PC vs chip (no labels)"
    if all(v is None for s in series for v in s.values):
        series = [svg.Series("chip INT8 vs PC INT8", _values(points, "agreement"), CHIP)]
        title = "top-1 agreement, chip vs PC (unlabelled data)"
    return svg.line_chart(title, "%", *axis, series=series, tips=[p.tip for p in points],
                          flagged=_flagged(points, "accuracy", "bug"))


def _snr(points: Sequence[ChartPoint], axis: tuple) -> str:
    series = [svg.Series("INT8 chip vs PC", _values(points, "snr_int8"), INT8),
              svg.Series("FP32 chip vs PC", _values(points, "snr_fp32"), FP32)]
    return svg.line_chart("fidelity: worst-output SNR, chip vs PC (capped at 60 dB)", "dB", *axis,
                          series=series, tips=[p.tip for p in points], flagged=_flagged(points, "fidelity", "bug"))


def charts(points: Sequence[ChartPoint], emulated: bool) -> str:
    if not points:
        return '<p class="empty">no measurement to chart (only infrastructure failures)</p>'
    axis = ([p.label for p in points], [p.release for p in points])
    note = " (emulated: not chip latency)" if emulated else ""
    boxes = [(f"INT8 latency over runs{note}", _latency(points, axis, "int8")),
             (f"FP32 latency over runs{note}", _latency(points, axis, "fp32")),
             ("INT8 speedup over FP32", _speedup(points, axis)),
             ("Accuracy, PC vs chip", _accuracy(points, axis)),
             ("Chip-vs-PC fidelity", _snr(points, axis))]
    inner = "".join(f'<div class="chart-box"><h4>{escape(t)}</h4>{c}</div>' for t, c in boxes if c)
    return f'<div class="charts">{inner}</div>'
