"""Exceptions users can act on.

Every error carries a one-line message that says what is wrong, where, and what to do.
Only the command-line front ends map them to exit codes (2 for everything here).
"""
from __future__ import annotations


class XQuantError(Exception):
    """Base class of every error the quantizer raises on purpose."""

    exit_code = 2

    def __init__(self, message: str, hint: str = "") -> None:
        self.message = message
        self.hint = hint
        super().__init__(self.one_line())

    def one_line(self) -> str:
        text = " ".join(self.message.split())
        if self.hint:
            text = f"{text} {' '.join(self.hint.split())}"
        return text


class ConfigError(XQuantError):
    """The JSON config is malformed or names something that does not exist."""


class DataError(XQuantError):
    """Calibration data could not be found, read or matched to the model inputs."""


class GraphError(XQuantError):
    """The model cannot be quantized as asked (already quantized, bad truncation, ...)."""


class ModelError(XQuantError):
    """The model file is missing, unreadable, or onnxruntime cannot run it."""
