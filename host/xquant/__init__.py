"""xquant: an XQuant-compatible INT8 post-training quantizer for ONNX models (QDQ format).

    import xquant
    xquant.quantize_onnx_model("cfg.json")                      # writes <working_dir>/<prefix>.q.onnx
    qmodel = xquant.quantize_onnx_model(cfg_dict, "model.onnx", "model.q.onnx")
"""
from .errors import ConfigError, DataError, GraphError, ModelError, XQuantError
from .quantize import quantize_onnx_model

__version__ = "0.1.0"
__all__ = ["quantize_onnx_model", "XQuantError", "ConfigError", "DataError", "GraphError", "ModelError"]
