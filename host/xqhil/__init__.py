"""xqhil: hardware-in-the-loop validation of INT8 ONNX models on RISC-V boards.

``xqhil quantize-and-verify cfg.json --board host|qemu|ssh://user@board`` quantizes a model with xquant,
runs the FP32 and INT8 models on the PC and on the board (through the single-file device agent in
``device/xqhil_agent.py``), compares them and writes ``verify.md`` and ``verify.json``.
"""
__version__ = "0.1.0"
