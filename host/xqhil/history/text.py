"""Terminal renderings of the history: the run list and one run in full (tabulate tables)."""
from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from tabulate import tabulate

from xqhil.history import doc as docs
from xqhil.history.store import RunRecord

LATENCY_FIELDS = ("first_ms", "mean_ms", "p50_ms", "p90_ms", "p99_ms", "min_ms", "max_ms", "std_ms")


def fmt(value: Any, digits: int = 4) -> str:
    """Numbers to ``digits`` significant digits, None as '-', the rest as text."""
    if value is None:
        return "-"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, float):
        return f"{value:.{digits}g}"
    if isinstance(value, (list, tuple)):
        return ", ".join(str(v) for v in value) or "-"
    return str(value)


def run_row(run: RunRecord, regressions: int) -> list[str]:
    d = run.doc
    acc = docs.accuracy(d, "chip_int8")
    return [str(run.id), str(d.get("created") or run.recorded_at)[:19].replace("T", " "),
            run.key.model, run.key.board, run.runtime_version or "-", run.verdict,
            fmt(acc) if acc is not None else "-", fmt(docs.accuracy(d, "drop_points"), 3),
            fmt(docs.number(docs.latency(d, "int8").get("p50_ms"))),
            fmt(docs.number(docs.section(d, "latency").get("speedup")), 3),
            fmt(docs.min_snr(d), 3), str(regressions) if regressions else "-",
            docs.fingerprint(d)["id"]]


RUN_HEADERS = ["run", "created (UTC)", "model", "board", "runtime", "verdict", "chip int8 %", "drop pts",
               "int8 p50 ms", "speedup", "min SNR dB", "regr.", "fingerprint"]


def runs_table(runs: Sequence[RunRecord], regression_counts: Mapping[int, int]) -> str:
    if not runs:
        return "no runs match"
    rows = [run_row(r, regression_counts.get(r.id, 0)) for r in runs]
    return tabulate(rows, headers=RUN_HEADERS, tablefmt="simple")


def _pairs(title: str, items: Sequence[Sequence[Any]]) -> str:
    return f"{title}\n" + tabulate([[k, fmt(v)] for k, v in items], tablefmt="plain")


def _latency_block(d: Mapping[str, Any]) -> str:
    lat = docs.section(d, "latency")
    rows = []
    for precision in ("fp32", "int8"):
        entry = docs.latency(d, precision)
        if entry:
            rows.append([precision] + [fmt(docs.number(entry.get(f))) for f in LATENCY_FIELDS]
                        + [str(len(docs.latency_samples(d, precision)))])
    head = (f"latency (threads {fmt(lat.get('threads'))}, emulated {fmt(lat.get('emulated'))}, "
            f"INT8 speedup {fmt(docs.number(lat.get('speedup')), 3)})")
    if not rows:
        return head + "\n(no latency recorded)"
    return head + "\n" + tabulate(rows, headers=["", *LATENCY_FIELDS, "samples"], tablefmt="simple")


def _fidelity_block(d: Mapping[str, Any]) -> str:
    rows = []
    for output, pairs in docs.fidelity_outputs(d).items():
        for pair, values in sorted(pairs.items()):
            if isinstance(values, dict):
                rows.append([output, pair, fmt(docs.number(values.get("cosine")), 6),
                             fmt(docs.number(values.get("snr_db")), 4), fmt(docs.number(values.get("max_abs")))])
    if not rows:
        return "fidelity\n(no fidelity recorded)"
    return "fidelity\n" + tabulate(rows, headers=["output", "pair", "cosine", "SNR dB", "max abs"],
                                   tablefmt="simple")


def _accuracy_block(d: Mapping[str, Any]) -> str:
    acc = docs.section(d, "accuracy")
    items = [(f, acc.get(f)) for f in ("labelled", "samples", "pc_fp32", "pc_int8", "chip_fp32", "chip_int8",
                                       "drop_points", "status", "tolerance", "bug_threshold")]
    agreement = docs.section(acc, "top1_agreement")
    items += [(f"top-1 agreement {k}", v) for k, v in sorted(agreement.items())]
    return _pairs("accuracy (percent)", items)


def run_detail(run: RunRecord, regressions: Sequence[Mapping[str, Any]], pinned: int | None) -> str:
    """Everything recorded about one run."""
    d = run.doc
    board, model = docs.section(d, "board"), docs.section(d, "model")
    head = [("run", run.id), ("created", d.get("created")), ("recorded", run.recorded_at),
            ("verdict", run.verdict), ("reasons", "; ".join(map(str, d.get("reasons") or [])) or "-"),
            ("duration s", docs.number(d.get("duration_s"))),
            ("pinned baseline", "this run" if pinned == run.id else (pinned or "-"))]
    blocks = [_pairs(f"run {run.id}", head),
              _pairs("board", [(k, board.get(k)) for k in ("kind", "name", "address", "python")]),
              _pairs("device fingerprint", sorted(docs.fingerprint(d).items())),
              _pairs("model", [(k, model.get(k)) for k in ("name", "fp32_path", "int8_path", "fp32_sha256",
                                                            "int8_sha256", "config_sha256")]),
              _accuracy_block(d), _fidelity_block(d), _latency_block(d),
              _pairs("reports", sorted(docs.section(d, "reports").items()))]
    lines = [f"- {r['message']}" for r in regressions] or ["none against its baseline"]
    blocks.append("regressions\n" + "\n".join(lines))
    return "\n\n".join(blocks)


def regression_counts(items: Sequence[Mapping[str, Any]]) -> dict[int, int]:
    out: dict[int, int] = {}
    for item in items:
        out[int(item["run_id"])] = out.get(int(item["run_id"]), 0) + 1
    return out
