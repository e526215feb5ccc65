"""xquant: an XQuant-compatible INT8 post-training quantizer for ONNX models (QDQ format).

    import xquant
    xquant.quantize_onnx_model("cfg.json")                      # writes <working_dir>/<prefix>.q.onnx
    qmodel = xquant.quantize_onnx_model(cfg_dict, "model.onnx", "model.q.onnx")
"""
from .errors import ConfigError, DataError, GraphError, ModelError, XQuantError

__version__ = "0.1.0"
__all__ = ["quantize_onnx_model", "XQuantError", "ConfigError", "DataError", "GraphError", "ModelError"]


def __getattr__(name: str):
    """``quantize_onnx_model`` is imported on first use: importing onnx costs about a second (its ml_dtypes),
    which every ``xqhil`` command paid at start for the argument helpers of ``xquant.cli_support``."""
    if name == "quantize_onnx_model":
        from .quantize import quantize_onnx_model

        return quantize_onnx_model
    raise AttributeError(f"module 'xquant' has no attribute {name!r}")
