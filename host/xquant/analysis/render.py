"""Render the analysis report (``report.py``) as markdown and JSON, and write both atomically."""
from __future__ import annotations

import json
import math
import os
from typing import Any, List, Sequence

from ..model_io import write_text_atomic

BARS = "▁▂▃▄▅▆▇█"


def _clean(value: Any) -> Any:
    """JSON has no Infinity/NaN: non-finite numbers become null (an infinite SNR dB: identical tensors)."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: _clean(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_clean(v) for v in value]
    return value


def to_json(report: dict) -> str:
    return json.dumps(_clean(report), indent=1, ensure_ascii=False) + "\n"


def _num(value: Any, digits: int = 4) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        if math.isinf(value):
            return "inf"
        return f"{value:.{digits}g}"
    return str(value)


def _db(value: float) -> str:
    return "inf" if math.isinf(value) else f"{value:.2f}"


def sparkline(counts: Sequence[int]) -> str:
    top = max(counts) if counts else 0
    if top <= 0:
        return ""
    return "".join(BARS[min(len(BARS) - 1, int(round(math.sqrt(c / top) * (len(BARS) - 1))))] if c else " "
                   for c in counts)


def _table(headers: Sequence[str], rows: Sequence[Sequence[Any]]) -> List[str]:
    lines = ["| " + " | ".join(headers) + " |", "|" + "|".join("---" for _ in headers) + "|"]
    lines += ["| " + " | ".join(str(c).replace("|", "\\|") for c in row) + " |" for row in rows]
    return lines


def _summary(report: dict) -> List[str]:
    s = report["summary"]
    rule = report["flag_rule"]
    out = ["## Summary", "", "Model output fidelity (FP32 vs quantized, SNR = noise power / signal power):", ""]
    out += _table(["output", "SNR", "SNR dB", "cosine", "MSE"],
                  [[f"`{n}`", _num(e["snr"]), _db(e["snr_db"]), f"{e['cosine']:.6f}", _num(e["mse"])]
                   for n, e in s["outputs"].items()])
    out += ["", f"Flagged tensors: **{s['flagged']}** of {s['tensors']} (SNR > {rule['snr_above']} or cosine < "
            f"{rule['cosine_below']}, accumulated error).", "",
            "Layers most to blame (isolated error: only that op quantized):", ""]
    for i, c in enumerate(s["culprits"], 1):
        flag = "flagged, " if c["flagged"] else ""
        out.append(f"{i}. `{c['tensor']}` ({c['op']}, node `{c['node']}`): isolated SNR {_num(c['isolated_snr'])}, "
                   f"accumulated SNR {_num(c['accumulated_snr'])} ({flag}{c['cause']} error)")
    out += [""] + _suggestion(s["suggestion"], s["output_snr_db"])
    return out


def _suggestion(sug: Any, now_db: float) -> List[str]:
    if sug is None:
        return ["Nothing is flagged: no change suggested.", ""]
    out = []
    if sug.get("custom_setting"):
        out += [f"Suggested fix, measured on the same samples: worst output SNR {_db(sug['baseline_db'])} dB -> "
                f"**{_db(sug['snr_db'])} dB**. Paste into `quantization_parameters`:", "", "```json",
                '"custom_setting": ' + json.dumps(sug["custom_setting"], indent=2), "```", ""]
    else:
        out += [f"No custom_setting tried raised the worst output SNR ({_db(sug['baseline_db'])} dB) by the "
                "required margin.", ""]
        fallback = sug.get("ignore_op_names")
        if fallback and fallback.get("helped", True):
            out += [f"Keeping the culprits' ops float gives **{_db(fallback['snr_db'])} dB** (measured):", "",
                    "```json", '"ignore_op_names": ' + json.dumps(fallback["names"]), "```", ""]
        elif fallback:
            out += [f"Keeping the culprits' ops float (`ignore_op_names` {json.dumps(fallback['names'])}) was tried "
                    f"and did not help: {_db(fallback['snr_db'])} dB against {_db(sug['baseline_db'])} dB now. "
                    "No fix is suggested.", ""]
    if sug["trials"]:
        out += ["Trials:", ""] + _table(["culprit", "custom_setting", "worst output SNR dB"],
                                        [[f"`{t['tensor']}`", f"`{json.dumps(t['custom_setting'])}`",
                                          t.get("error") or _db(t["snr_db"])] for t in sug["trials"]]) + [""]
    return out


def _inputs(report: dict) -> List[str]:
    out = ["## Calibration inputs (after preprocessing)", ""]
    rows = []
    for name, st in report["inputs"].items():
        o, ch = st["overall"], st["channels"]
        per_mean = ", ".join(f"{v:.3f}" for v in ch["mean"]) if ch else "-"
        per_std = ", ".join(f"{v:.3f}" for v in ch["std"]) if ch else "-"
        rows.append([f"`{name}`", st["samples"], f"{o['mean'][0]:.4f}", f"{o['std'][0]:.4f}",
                     f"{o['min'][0]:.4g}", f"{o['max'][0]:.4g}", per_mean, per_std])
    out += _table(["input", "samples", "mean", "std", "min", "max", "channel means", "channel stds"], rows) + [""]
    for name, st in report["inputs"].items():
        out += [f"- **warning** `{name}`: {w}" for w in st["warnings"]]
    if not any(st["warnings"] for st in report["inputs"].values()):
        out.append("No warning: the inputs look normalised as configured.")
    return out + [""]


def _tensors(report: dict) -> List[str]:
    rows = []
    for i, r in enumerate(report["tensors"], 1):
        a, iso = r["accumulated"], r["isolated"]
        q, f = r["quant_range"], r["float_range"]
        hist = sparkline(r["histogram"]["counts"]) if r["histogram"] else ""
        rows.append([i, "**!**" if r["flagged"] else "", r["op"], f"`{r['tensor']}`", _num(a["snr"]), _db(a["snr_db"]),
                     _num(a["mse"]), f"{a['cosine']:.5f}", _num(iso["snr"]), r["cause"],
                     f"{_num(q[0])}, {_num(q[1])}", f"{_num(f[0])}, {_num(f[1])}", f"`{hist}`"])
    head = ["#", "flag", "op", "tensor", "SNR", "SNR dB", "MSE", "cosine", "isolated SNR", "cause", "Q min, max",
            "F min, max", "F hist"]
    return ["## Quantized tensors, worst first", "",
            "SNR and cosine: accumulated error (the quantized model against FP32). Isolated SNR: only the op that "
            "makes the tensor quantized. cause `own`: the isolated error is at least half the accumulated one.",
            ""] + _table(head, rows) + [""]


def to_markdown(report: dict) -> str:
    name = os.path.basename(report["model"])
    st = report["settings"]
    head = [f"# Quantization analysis: {name}", "",
            f"- FP32 model: `{report['model']}`", f"- quantized model: `{report['quantized_model']}`",
            f"- precision_level {st['precision_level']}, finetune_level {st['finetune_level']}, calibration_type "
            f"{st['calibration_type']}, custom_setting entries {st['custom_setting']}, truncate_var_names "
            f"{st['truncate_var_names'] or '-'}",
            f"- measured on {report['samples']} calibration samples ({report['batches']} batches); analysis took "
            f"{report['analysis_s']:.2f} s", ""]
    return "\n".join(head + _summary(report) + _inputs(report) + _tensors(report) + _stages(report))


def _stages(report: dict) -> List[str]:
    """Where the run's time went before the analysis (the ``--profile`` rows)."""
    if not report.get("stages"):
        return []
    rows = [[label.strip() if not label.startswith(" ") else f"- {label.strip()}", f"{seconds:.2f}"]
            for label, seconds in report["stages"]]
    return ["## Time by stage (before this analysis)", ""] + _table(["stage", "seconds"], rows) + [""]


def save_report(report: dict, stem: str) -> List[str]:
    """Write ``<stem>_report.md`` and ``<stem>_report.json`` (each atomically); returns their paths."""
    paths = [f"{stem}_report.md", f"{stem}_report.json"]
    write_text_atomic(paths[1], to_json(report))
    write_text_atomic(paths[0], to_markdown(report))
    return paths
