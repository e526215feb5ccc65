"""verify.json (schema ``xqhil.verify/1``, read by the history store) and verify.md (for people)."""
from __future__ import annotations

import json
import logging
import math
import os
from typing import Any, List, Optional

from tabulate import tabulate
from xquant.model_io import write_text_atomic as write_atomic

log = logging.getLogger(__name__)
SCHEMA = "xqhil.verify/1"
LATENCY_KEYS = ("first_ms", "mean_ms", "p50_ms", "p90_ms", "p99_ms", "min_ms", "max_ms", "std_ms")


def _fmt(value: object, suffix: str = "") -> str:
    if value is None:
        return "n/a"
    if isinstance(value, float):
        return f"{value:.4g}{suffix}" if abs(value) < 1e4 else f"{value:.0f}{suffix}"
    return f"{value}{suffix}"


def _label(report: dict) -> str:
    """What the quantized model is called: INT8, DYNQ (dynamic quantization) or FP16 (report["mode"])."""
    from xquant.modes import LABELS

    return LABELS.get(report.get("mode", "int8"), "INT8")


def _accuracy_md(acc: dict, q: str = "INT8") -> List[str]:
    measure = "accuracy vs labels" if acc["labelled"] else "top-1 agreement with PC FP32 (no labels)"
    rows = [["PC", _fmt(acc["pc_fp32"], " %"), _fmt(acc["pc_int8"], " %")],
            ["chip", _fmt(acc["chip_fp32"], " %"), _fmt(acc["chip_int8"], " %")]]
    agree = acc["top1_agreement"]
    lines = [f"## Accuracy ({measure}, {acc['samples']} samples)", "",
             tabulate(rows, headers=["", "FP32", q], tablefmt="github"), "",
             f"- {q} drop PC -> chip: **{acc['drop_points']:.2f} points** -> **{acc['status']}** "
             f"(tolerance {acc['tolerance']}, bug threshold {acc['bug_threshold']})",
             f"- top-1 agreement: chip {q} vs PC {q} {_fmt(agree['chip_int8_vs_pc_int8'], ' %')}, "
             f"chip FP32 vs PC FP32 {_fmt(agree['chip_fp32_vs_pc_fp32'], ' %')}, "
             f"PC {q} vs PC FP32 {_fmt(agree['pc_int8_vs_pc_fp32'], ' %')}", ""]
    if not acc["labelled"]:
        lines.insert(-1, "- no labels: agreement with the PC FP32 top-1 stands in for accuracy")
    return lines


def _num(value: Optional[float], spec: str) -> str:
    return "n/a" if value is None else format(value, spec)


def _fidelity_md(fidelity: dict, q: str = "INT8") -> List[str]:
    """One row per output and comparison; a "NaN/Inf left out" column only when some were."""
    rows, left_out = [], False
    for name, pairs in fidelity["outputs"].items():
        for pair, metrics in pairs.items():
            label = pair.replace("_", " ").replace("int8", q.split()[0].lower())
            rows.append([name, label, _num(metrics["cosine"], ".6f"), _num(metrics["snr_db"], ".1f"),
                         _num(metrics["max_abs"], ".4g"), metrics.get("nonfinite", 0)])
            left_out = left_out or bool(metrics.get("nonfinite"))
    headers = ["output", "comparison", "cosine", "SNR dB", "max abs", "NaN/Inf left out"]
    if not left_out:
        headers, rows = headers[:-1], [row[:-1] for row in rows]
    return ["## Output fidelity", "", tabulate(rows, headers=headers, tablefmt="github"), ""]


def _runtime_md(runtime: Optional[dict], q: str = "INT8") -> List[str]:
    """Chip INT8 against PC INT8 directly (compare/runtime.py), with the mode's and provider's limits."""
    if not runtime:
        return []
    lines = [f"## Chip {q} vs PC {q} ({runtime['provider']})", ""]
    agree = runtime.get("agreement")
    if agree:
        lines.append(f"- top-1 disagreement: **{agree['disagreement_points']:.2f} points** "
                     f"({agree['samples_differing']} of {agree['samples']} samples) -> **{agree['status']}** "
                     f"(tolerance {agree['tolerance']}, bug threshold {agree['bug_threshold']})")
    dep = runtime.get("departure")
    if dep:
        warn = "any difference" if dep["warn_snr_db"] is None else f"SNR below {dep['warn_snr_db']} dB"
        lines.append(f"- worst output '{dep['output']}': SNR {_num(dep['snr_db'], '.1f')} dB, max abs "
                     f"{_num(dep['max_abs'], '.4g')}{' (bit-identical)' if dep['identical'] else ''} -> "
                     f"**{dep['status']}** (warn: {warn}; bug: SNR below {dep['fail_snr_db']} dB)")
    return lines + [""]


def _integrity_md(integrity: Optional[dict]) -> List[str]:
    if not integrity or not (integrity.get("output_shapes") or integrity.get("nonfinite_outputs")):
        return []
    lines = ["## Broken outputs", ""]
    lines += [f"- {run.replace('_', ' ')}: {text}" for run, text in integrity.get("output_shapes", {}).items()]
    for run, outputs in integrity.get("nonfinite_outputs", {}).items():
        lines += [f"- {run.replace('_', ' ')} output '{name}': {c['nan']} NaN, {c['inf']} Inf of {c['values']} values"
                  for name, c in outputs.items()]
    return lines + [""]


def _reasons_md(report: dict) -> List[str]:
    rules = report.get("rules")
    if rules:
        return [f"- **{r['level']}** (rule `{r['rule']}`): {r['reason']}" for r in rules]
    return [f"- {reason}" for reason in report["reasons"]] or ["- every check passed"]


def _latency_md(lat: dict, q: str = "INT8") -> List[str]:
    mark = " (EMULATED: not chip latencies)" if lat["emulated"] else ""
    rows = []
    for what in ("fp32", "int8"):
        stats = lat.get(what)
        cells = [_fmt(stats[k]) for k in LATENCY_KEYS] if stats else ["n/a"] * 8
        rows.append([q if what == "int8" else "FP32"] + cells)
    headers = ["model"] + [k[:-3] + " ms" for k in LATENCY_KEYS]
    return [f"## Latency on the device{mark}, {lat['threads'] or 'default'} thread(s)", "",
            tabulate(rows, headers=headers, tablefmt="github"), "",
            f"- {q} speedup over FP32 (p50): **{_fmt(lat['speedup'], 'x')}**{mark}", ""]


def _localization_md(loc: Optional[dict]) -> List[str]:
    """Where the chip first departs from the PC (xqhil/localize), with the boundaries compared."""
    if not loc:
        return []
    if loc.get("status") == "error":
        return ["## Localisation", "", f"Could not localise: {loc['error']}", ""]
    lines = ["## Localisation", "", f"- status: {loc['status']} by {loc['method'] or 'n/a'}, "
             f"{loc['board_runs']} board run(s), {loc['seconds']} s, samples {loc['samples']}"]
    if loc.get("op"):
        lines.append(f"- first divergent op: {loc['op']} `{loc['node']}` (boundary `{loc['boundary']}`; region "
                     + ", ".join(f"{t} `{n}`" for n, t in loc["region_ops"]) + ")")
    if loc.get("bundle"):
        lines.append(f"- repro bundle: `{loc['bundle']}` (see its README.md for the replay command)")
    lines += [f"- {n}" for n in loc.get("notes", [])]
    rows = [r for r in loc.get("boundaries", []) if r.get("departs")]
    if rows:
        lines += ["", "| boundary | op | values differing | max abs diff |", "| --- | --- | --- | --- |"]
        lines += [f"| `{r['tensor']}` | {r['op']} | {r['mismatched']} / {r.get('values', 'n/a')} | {r['max_abs']} |"
                  for r in rows[:10]]
    return lines + [""] + _layers_md(loc.get("layers") or {})


def _layers_md(layers: dict) -> List[str]:
    """Top offenders per layer: quantization error (PC INT8 vs PC FP32) apart from runtime error (chip vs PC)."""
    rows = {r["tensor"]: r for r in layers.get("rows", [])}
    picked = list(dict.fromkeys(layers.get("worst_runtime", []) + layers.get("worst_quantization", [])))
    if not picked:
        return []
    lines = ["### Per-layer error: quantization (PC INT8 vs PC FP32) apart from runtime (chip INT8 vs PC INT8)", "",
             "| boundary | op | quantization SNR dB | runtime SNR dB |", "| --- | --- | --- | --- |"]
    for name in picked:
        r = rows[name]
        lines.append(f"| `{name}` | {r['op']} `{r['node']}` | {_num(r['quant_snr_db'], '.1f')} | "
                     f"{_num(r['runtime_snr_db'], '.1f')} |")
    return lines + ["", f"Lowest runtime SNR: {', '.join(layers['worst_runtime']) or 'n/a'}; lowest quantization "
                    f"SNR: {', '.join(layers['worst_quantization']) or 'n/a'} (200 dB: identical).", ""]


def _conversion_md(conv: Optional[dict], q: str) -> List[str]:
    """What xquant's FP16 or dynamic quantization kept float32, grouped by why (every name in verify.json)."""
    if not conv:
        return []
    lines = [f"## {q} conversion (xquant)", ""]
    if "fp16_ops" in conv:
        from xquant.modes.fp16_floor import floor_line

        lines.append(f"- {conv['fp16_ops']} ops FP16, {len(conv['fp32_ops'])} kept FP32, {conv['casts']} casts"
                     + (f"; float16 biases corrected: {conv['bias_corrected']} layer(s)"
                        if conv.get("bias_corrected") else ""))
        lines.append(f"- {floor_line(conv['floor'])}" if conv.get("floor") else
                     "- no SNR floor held (fp16_min_snr_db 0, or no calibration data)")
    if "quantized" in conv:
        made = ", ".join(f"{op} x{n}" for op, n in conv["quantized"].items()) or "nothing"
        lines.append(f"- dynamically quantized: {made} (of {conv.get('candidates', 'n/a')} candidate ops)")
    groups: dict = {}
    for name, reason in (conv.get("fp32_ops") or {}).items():
        groups.setdefault(reason.split(": ", 1)[-1], []).append(name)
    for name in conv.get("lost") or {}:
        groups.setdefault("its INT8 weights alone take the output below 30 dB", []).append(name)
    if groups:
        rows = [[why, len(names), ", ".join(f"`{n}`" for n in names[:6]) + (", ..." if len(names) > 6 else "")]
                for why, names in sorted(groups.items(), key=lambda item: -len(item[1]))]
        lines += ["", tabulate(rows, headers=["kept FP32 because", "ops", "ops (first 6)"], tablefmt="github")]
    return lines + [""]


def summary_line(report: dict) -> str:
    """The one line ``quantize-and-verify`` prints: verdict, board, accuracy, speedup, report paths."""
    acc, lat, q = report["accuracy"], report["latency"], _label(report)
    return (f"xqhil: {report['verdict'].upper()} on {report['board']['name']}: chip {q} {acc['measure']} "
            f"{_fmt(acc['chip_int8'], '%')} (PC {q} {_fmt(acc['pc_int8'], '%')}), {q} speedup "
            f"{_fmt(lat['speedup'], 'x')}{' (emulated)' if lat['emulated'] else ''}; reports: "
            f"{report['reports']['md']}, {report['reports']['json']}")


def render_markdown(report: dict) -> str:
    board, device, model, q = report["board"], report["device"] or {}, report["model"], _label(report)
    lines = [f"# xqhil verify: {model['name']} on {board['name']} -> {report['verdict'].upper()}", ""]
    lines += _reasons_md(report)
    lines += ["", f"- board: {board['kind']} `{board['address'] or board['name']}`, python `{board['python']}`",
              f"- device: {device.get('arch')} {device.get('cpu')}, {device.get('cores')} cores, {device.get('os')}, "
              f"Python {device.get('python')}, numpy {device.get('numpy')}, onnxruntime {device.get('onnxruntime')} "
              f"({device.get('execution_provider')}){', emulated' if device.get('emulated') else ''}",
              f"- models: FP32 `{model['fp32_path']}`, {q} `{model['int8_path']}`"
              + (f" (mode {report['mode']}; the JSON keys named int8 hold this model)" if q != "INT8" else ""),
              f"- data: {report.get('data', {}).get('source', 'n/a')}", ""]
    lines += _integrity_md(report.get("integrity")) + _accuracy_md(report["accuracy"], q)
    lines += _conversion_md(report.get("conversion"), q)
    lines += _runtime_md(report.get("runtime"), q) + _localization_md(report.get("localization"))
    lines += _fidelity_md(report["fidelity"], q) + _latency_md(report["latency"], q)
    if report.get("notes"):
        lines += ["## Notes", ""] + [f"- {n}" for n in report["notes"]] + [""]
    lines += [f"Generated {report['created']} in {report['duration_s']:.1f} s.", ""]
    return "\n".join(lines)


def write_reports(report: dict, out_dir: str, stem: Optional[str] = "verify") -> dict:
    """Write ``verify.json`` and ``verify.md`` into ``out_dir``; returns their paths (also put in the report)."""
    paths = {"md": os.path.abspath(os.path.join(out_dir, f"{stem}.md")),
             "json": os.path.abspath(os.path.join(out_dir, f"{stem}.json"))}
    report["reports"] = paths
    _null_nonfinite(report, "", report.setdefault("notes", []))
    write_atomic(paths["json"], json.dumps(report, indent=2, sort_keys=False, allow_nan=False) + "\n")
    write_atomic(paths["md"], render_markdown(report))
    return paths


def _null_nonfinite(node: Any, where: str, notes: List[str]) -> Any:
    """Replace any NaN/Inf left in the report (e.g. in the board's device fingerprint) by null, with a note:
    JSON has no NaN, and a board's bad number must not cost the report. The verdict rules already judged the
    values that matter (outputs, latencies)."""
    if isinstance(node, dict):
        for key in list(node):
            node[key] = _null_nonfinite(node[key], f"{where}.{key}" if where else str(key), notes)
    elif isinstance(node, list):
        for i, item in enumerate(node):
            node[i] = _null_nonfinite(item, f"{where}[{i}]", notes)
    elif isinstance(node, float) and not math.isfinite(node):
        note = f"non-finite value {node} at {where} written as null"
        log.warning(note)
        notes.append(note)
        return None
    return node
