"""Read the fields history needs out of a ``verify.json`` document (schema ``xqhil.verify/1``).

Pure functions on plain dicts. Every field except ``model.name`` and ``board.name`` is optional: older
documents and unlabelled runs (null accuracies) are read as far as they go and the rest is ``None``.
"""
from __future__ import annotations

import hashlib
import json
import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from xqhil.history.errors import HistoryError

SCHEMA_PREFIX = "xqhil.verify/"
INFRA = "INFRA"  # the job failed for infrastructure reasons (exit-3 class): not a measurement
VERDICTS = ("pass", "warn", "fail", INFRA)
FINGERPRINT_FIELDS = ("arch", "cpu", "cores", "os", "python", "numpy", "onnxruntime", "providers",
                      "execution_provider", "emulated")


@dataclass(frozen=True)
class RunKey:
    """Runs with equal keys are comparable: same model (name and FP32 bytes), board and config."""

    model: str
    fp32_sha256: str | None
    board: str
    config_sha256: str | None

    def label(self) -> str:
        return f"{self.model} on {self.board} (config {short_hash(self.config_sha256)})"


def section(doc: Mapping[str, Any], name: str) -> dict[str, Any]:
    """``doc[name]`` when it is a dict, else an empty dict."""
    value = doc.get(name)
    return value if isinstance(value, dict) else {}


def number(value: Any) -> float | None:
    """A finite float, ``inf`` kept as inf, anything else (None, strings, NaN) as None."""
    if isinstance(value, bool) or not isinstance(value, (int, float, str)):
        return None
    try:
        out = float(value)
    except ValueError:
        return None
    return None if math.isnan(out) else out


def short_hash(text: str | None, n: int = 8) -> str:
    return text[:n] if text else "-"


def validate(doc: Any) -> Mapping[str, Any]:
    """Return ``doc`` if history can record it, else raise a one-line HistoryError."""
    if not isinstance(doc, dict):
        raise HistoryError(f"verify document must be a JSON object, got {type(doc).__name__}")
    schema = doc.get("schema", SCHEMA_PREFIX + "1")
    if not isinstance(schema, str) or not schema.startswith(SCHEMA_PREFIX):
        raise HistoryError(f"not a verify document: schema is {schema!r}, expected '{SCHEMA_PREFIX}N'")
    for part in ("model", "board"):
        if not isinstance(section(doc, part).get("name"), str) or not section(doc, part)["name"]:
            raise HistoryError(f"verify document has no {part}.name: cannot tell which runs compare")
    if doc.get("verdict") not in VERDICTS:
        raise HistoryError(f"verify document verdict is {doc.get('verdict')!r}, expected one of {VERDICTS}")
    return doc


def run_key(doc: Mapping[str, Any]) -> RunKey:
    model, board = section(doc, "model"), section(doc, "board")
    return RunKey(str(model.get("name")), model.get("fp32_sha256"), str(board.get("name")),
                  model.get("config_sha256"))


def runtime_version(doc: Mapping[str, Any]) -> str | None:
    """The chip runtime version: the board's onnxruntime version."""
    value = section(doc, "device").get("onnxruntime")
    return str(value) if value is not None else None


def fingerprint(doc: Mapping[str, Any]) -> dict[str, Any]:
    """The device fingerprint fields plus ``id``, a short stable hash of them."""
    device = section(doc, "device")
    fields = {name: device.get(name) for name in FINGERPRINT_FIELDS}
    text = json.dumps(fields, sort_keys=True, default=str)
    fields["id"] = hashlib.sha256(text.encode()).hexdigest()[:12]
    return fields


def latency(doc: Mapping[str, Any], precision: str) -> dict[str, Any]:
    """``latency[precision]`` (``"int8"`` or ``"fp32"``) as a dict, empty when absent."""
    value = section(doc, "latency").get(precision)
    return value if isinstance(value, dict) else {}


def latency_samples(doc: Mapping[str, Any], precision: str) -> list[float]:
    samples = latency(doc, precision).get("samples_ms")
    if not isinstance(samples, list):
        return []
    if all(type(x) is float for x in samples):  # the usual case, fast: thousands of runs on a dashboard
        return [x for x in samples if math.isfinite(x)]
    values = [number(x) for x in samples]
    return [x for x in values if x is not None and math.isfinite(x)]


def fidelity_outputs(doc: Mapping[str, Any]) -> dict[str, dict[str, Any]]:
    outputs = section(section(doc, "fidelity"), "outputs")
    return {str(k): v for k, v in outputs.items() if isinstance(v, dict)}


def snr(doc: Mapping[str, Any], output: str, pair: str) -> float | None:
    """SNR in dB of one output for one comparison pair, e.g. ``chip_int8_vs_pc_int8``."""
    value = fidelity_outputs(doc).get(output, {}).get(pair)
    return number(value.get("snr_db")) if isinstance(value, dict) else None


def min_snr(doc: Mapping[str, Any], pair: str = "chip_int8_vs_pc_int8") -> float | None:
    """The worst SNR over all outputs for ``pair`` (None when the document has none)."""
    values = [snr(doc, name, pair) for name in fidelity_outputs(doc)]
    values = [v for v in values if v is not None]
    return min(values) if values else None


def accuracy(doc: Mapping[str, Any], field: str) -> float | None:
    return number(section(doc, "accuracy").get(field))


def agreement(doc: Mapping[str, Any], pair: str) -> float | None:
    """Top-1 agreement between two runs, in percent."""
    return number(section(section(doc, "accuracy"), "top1_agreement").get(pair))


def is_infra(doc: Mapping[str, Any]) -> bool:
    """The job failed for infrastructure reasons (``{"infra": {"error", "exit"}}``): no measurement at all."""
    return doc.get("verdict") == INFRA


def is_chip_bug(doc: Mapping[str, Any]) -> bool:
    """The verify step flagged the chip runtime: verdict fail or accuracy status bug (never an INFRA run)."""
    if is_infra(doc):
        return False
    return doc.get("verdict") == "fail" or section(doc, "accuracy").get("status") == "bug"


def columns(doc: Mapping[str, Any]) -> dict[str, Any]:
    """The indexed, queryable columns of one run (the full document is stored beside them)."""
    key = run_key(doc)
    board, model, reports = section(doc, "board"), section(doc, "model"), section(doc, "reports")
    device = section(doc, "device")
    return {
        "created": str(doc.get("created") or ""), "verdict": doc.get("verdict"),
        "board": key.board, "board_kind": board.get("kind"), "model": key.model,
        "fp32_sha256": key.fp32_sha256, "int8_sha256": model.get("int8_sha256"),
        "config_sha256": key.config_sha256, "runtime_version": runtime_version(doc),
        "execution_provider": device.get("execution_provider"),
        "emulated": _flag(device.get("emulated", section(doc, "latency").get("emulated"))),
        "fingerprint": fingerprint(doc)["id"],
        "accuracy_status": section(doc, "accuracy").get("status"),
        "chip_int8_acc": accuracy(doc, "chip_int8"), "pc_int8_acc": accuracy(doc, "pc_int8"),
        "drop_points": accuracy(doc, "drop_points"),
        "int8_p50_ms": number(latency(doc, "int8").get("p50_ms")),
        "fp32_p50_ms": number(latency(doc, "fp32").get("p50_ms")),
        "speedup": number(section(doc, "latency").get("speedup")), "min_snr_db": _finite(min_snr(doc)),
        "report_md": reports.get("md"), "report_json": reports.get("json"),
    }


def _flag(value: Any) -> int | None:
    return None if value is None else int(bool(value))


def _finite(value: float | None) -> float | None:
    return value if value is not None and math.isfinite(value) else None
