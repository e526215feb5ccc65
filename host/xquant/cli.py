"""``python -m xquant -c cfg.json [-i in.onnx] [-o out.q.onnx]`` (the vendor tool's command line).

Exit codes: 0 written, 2 bad input (config, data, model, output path), 3 internal error (a bug: rerun with
--debug and report it), 130 interrupted (Ctrl-C).
"""
from __future__ import annotations

import argparse
import logging
import sys
from typing import List, Optional

from .cli_support import OneLineParser, run_guarded
from .errors import XQuantError

log = logging.getLogger("xquant")


def build_parser() -> argparse.ArgumentParser:
    parser = OneLineParser(prog="python -m xquant", description="Quantize an FP32 ONNX model to INT8 (QDQ). "
                           "Exit 0 written, 2 bad input, 3 internal error, 130 interrupted.")
    parser.add_argument("-c", "--config", required=True, help="XQuant JSON config")
    parser.add_argument("-i", "--input", help="FP32 ONNX model (overrides model_parameters.onnx_model)")
    parser.add_argument("-o", "--output", help="quantized model path (overrides the config's output)")
    parser.add_argument("-q", "--quiet", action="store_true", help="no progress bar, no summary")
    parser.add_argument("-v", "--verbose", action="store_true", help="more log output")
    parser.add_argument("--profile", action="store_true",
                        help="print the time of each stage (calibration, each fine-tune pass, ...) and peak memory")
    parser.add_argument("--debug", action="store_true", help="show the traceback of an internal error")
    return parser


def setup_logging(quiet: bool, verbose: bool) -> None:
    level = logging.WARNING if quiet else (logging.DEBUG if verbose else logging.INFO)
    logging.basicConfig(level=level, format="%(name)s: %(levelname)s: %(message)s", stream=sys.stderr)
    logging.getLogger("xquant").setLevel(level)


def print_summary(result) -> None:
    from tabulate import tabulate

    rows = [[name, f"{m['snr_db']:.2f}", f"{m['cosine']:.5f}", f"{m['max_abs']:.4g}",
             f"{100 * m['top1_agreement']:.1f}%" if "top1_agreement" in m else "-", m["samples"]]
            for name, m in result.fidelity.items()]
    plan = result.plan
    print(f"quantized model: {result.output_path}")
    print(f"calibration: {result.num_samples} samples, {result.config.calibration.calibration_type} "
          f"({result.config.calibration.calibration_device}); INT8 ops {len(plan.quantized_nodes)}, "
          f"activations {len(result.params)}, weights {len(plan.weights)}; "
          f"{result.timings.get('total_s', 0):.1f} s")
    passes = [p["pass"] for p in result.finetune.get("passes", []) if p.get("accepted")]
    print(f"finetune_level {result.config.quantization.finetune_level}: "
          f"{', '.join(passes) if passes else 'no pass kept'}")
    print(tabulate(rows, headers=["output", "SNR dB", "cosine", "max |err|", "top-1 agree", "samples"]))
    if result.report is not None:
        print(f"analysis report: {result.config.report_stem}_report.md (and .json)")


def main(argv: Optional[List[str]] = None) -> int:
    args = build_parser().parse_args(argv)
    setup_logging(args.quiet, args.verbose)
    from .quantize import run_quantization

    def work() -> int:
        result = run_quantization(args.config, args.input, args.output,
                                  show_progress=False if args.quiet else None, summary=not args.quiet)
        if not args.quiet:
            print_summary(result)
        if args.profile:
            from .profile import format_profile

            print(format_profile(result.timings, result.finetune), file=sys.stderr)
        return 0

    return run_guarded("xquant", work, args.debug, (XQuantError,))
