"""``python -m xquant -c cfg.json [-i in.onnx] [-o out.q.onnx]`` (the vendor tool's command line), and
without a config ``python -m xquant -i in.onnx [-o out.onnx] [--fp16 | --dynq] [--opset N]
[--ignore_op_types A,B] [--ignore_op_names X,Y]`` (no flag: simplify only). With -c the flags override the config.

Exit codes: 0 written, 2 bad input (config, data, model, output path), 3 internal error (a bug: rerun with
--debug and report it), 130 interrupted (Ctrl-C).
"""
from __future__ import annotations

import argparse
import logging
import sys
from typing import List, Optional

from .cli_support import OneLineParser, StderrHandler, exiting, int_at_least, run_guarded
from .errors import XQuantError

log = logging.getLogger("xquant")


def build_parser() -> argparse.ArgumentParser:
    parser = OneLineParser(prog="python -m xquant", description="Quantize an FP32 ONNX model to INT8 (QDQ). "
                           "Exit 0 written, 2 bad input, 3 internal error, 130 interrupted.")
    parser.add_argument("-c", "--config", help="XQuant JSON config (without it: -i, and --fp16, --dynq or neither "
                        "for simplify only)")
    parser.add_argument("-i", "--input", help="FP32 ONNX model (overrides model_parameters.onnx_model)")
    parser.add_argument("-o", "--output", help="quantized model path (overrides the config's output)")
    mode = parser.add_mutually_exclusive_group()
    mode.add_argument("--fp16", action="store_true", help="convert to FP16 (precision_level 4)")
    mode.add_argument("--dynq", action="store_true", help="dynamic quantization of MatMul, LSTM and Attention "
                      "(precision_level 3)")
    parser.add_argument("--opset", type=int_at_least(1), help="convert the default ai.onnx opset to N first "
                        "(model_parameters.opset)")
    parser.add_argument("--ignore_op_types", type=name_list, help="comma-separated op types to leave in FP32")
    parser.add_argument("--ignore_op_names", type=name_list, help="comma-separated op names to leave in FP32")
    parser.add_argument("--fp16_min_snr_db", type=float, metavar="DB", help="FP16: keep the first ops in FP32 "
                        "until the model measures at least DB against FP32 on the calibration data (default 60 "
                        "with -c and calibration data; 0: plain FP16)")
    parser.add_argument("-q", "--quiet", action="store_true", help="no progress bar, no summary")
    parser.add_argument("-v", "--verbose", action="store_true", help="more log output")
    parser.add_argument("--profile", action="store_true",
                        help="print the time of each stage (calibration, each fine-tune pass, ...) and peak memory")
    parser.add_argument("--debug", action="store_true", help="show the traceback of an internal error")
    return parser


def name_list(text: str) -> List[str]:
    names = [part.strip() for part in text.split(",") if part.strip()]
    if not names:
        raise argparse.ArgumentTypeError(f"{text!r} names nothing: give comma-separated names, e.g. A,B")
    return names


def overrides_of(parser: argparse.ArgumentParser, args: argparse.Namespace) -> dict:
    """The flags as config keys; without -c, no mode flag means precision_level 100 (simplify only)."""
    if args.config is None and args.input is None:
        parser.error("give -c CONFIG, or -i MODEL.onnx for the config-less modes (--fp16, --dynq, simplify)")
    quant: dict = {}
    if args.fp16 or args.dynq:
        quant["precision_level"] = 4 if args.fp16 else 3
    elif args.config is None:
        quant["precision_level"] = 100
        if args.ignore_op_types or args.ignore_op_names:
            parser.error("--ignore_op_types/--ignore_op_names need --fp16 or --dynq (or -c) without a config: "
                         "simplify-only converts nothing to leave out")
    for key in ("ignore_op_types", "ignore_op_names", "fp16_min_snr_db"):
        if getattr(args, key) is not None:
            quant[key] = getattr(args, key)
    found = {"quantization_parameters": quant} if quant else {}
    if args.opset is not None:
        found["model_parameters"] = {"opset": args.opset}
    return found


def print_mode_summary(result) -> None:
    from tabulate import tabulate

    from .modes import LABELS
    from .modes.fp16_floor import floor_line

    info = result.info
    print(f"{LABELS[result.mode]} model: {result.output_path} ({result.timings.get('total_s', 0):.1f} s)")
    if result.mode == "fp16":
        print(f"FP16 ops {info['fp16_ops']}, FP32 ops {len(info['fp32_ops'])}, casts {info['casts']}; overflow "
              f"checked on {info['overflow_checked_on']} sample(s)"
              + (f"; kept FP32 for overflow: {', '.join(info['overflow'])}" if info["overflow"] else "")
              + (f"; kept FP32 for tiny values: {', '.join(info['imprecise'])}" if info.get("imprecise") else "")
              + (f"; kept FP32, their float16 weights alone cost the output 60 dB: {', '.join(info['sensitive'])}"
                 if info.get("sensitive") else "")
              + (f"; erf GELUs fused into com.microsoft Gelu: {info['gelu_fused']}" if info.get("gelu_fused") else "")
              + (f"; float16 biases corrected against FP32: {info['bias_corrected']} layer(s)"
                 if info.get("bias_corrected") else ""))
        if info.get("floor"):
            print(floor_line(info["floor"]))
    elif result.mode == "dynq":
        made = ", ".join(f"{op} x{n}" for op, n in info["quantized"].items()) or "nothing"
        print(f"dynamically quantized: {made} (of {info['candidates']} candidate ops)"
              + (f"; kept FP32, they lose the signal: {', '.join(info['lost'])}" if info.get("lost") else ""))
    if result.fidelity:
        rows = [[name, f"{m['snr_db']:.2f}", f"{m['cosine']:.6f}", f"{m['max_abs']:.4g}", m["samples"]]
                for name, m in result.fidelity.items()]
        print(tabulate(rows, headers=["output", "SNR dB", "cosine", "max |err|", "samples"]))
    else:
        print("fidelity not measured (no calibration data: give -c with data_list_path to measure it"
              + (", and to hold FP16 at 60 dB)" if result.mode == "fp16" else ")"))


def setup_logging(quiet: bool, verbose: bool) -> None:
    level = logging.WARNING if quiet else (logging.DEBUG if verbose else logging.INFO)
    handler = StderrHandler()
    handler.setFormatter(logging.Formatter("%(name)s: %(levelname)s: %(message)s"))
    logging.basicConfig(level=level, handlers=[handler])
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
    parser = build_parser()
    args = parser.parse_args(argv)
    overrides = overrides_of(parser, args)
    setup_logging(args.quiet, args.verbose)
    from .quantize import QuantizationResult, run_quantization

    def work() -> int:
        result = run_quantization(args.config if args.config is not None else {}, args.input, args.output,
                                  show_progress=False if args.quiet else None, summary=not args.quiet,
                                  overrides=overrides)
        if not args.quiet:
            (print_summary if isinstance(result, QuantizationResult) else print_mode_summary)(result)
        if args.profile:
            from .profile import format_profile

            print(format_profile(result.timings, getattr(result, "finetune", {})), file=sys.stderr)
        return 0

    return exiting(run_guarded("xquant", work, args.debug, (XQuantError,)), argv)
