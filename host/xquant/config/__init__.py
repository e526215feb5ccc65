"""XQuant JSON config: typed schema and loader."""
from .loader import load_config, read_raw_config
from .schema import CustomSetting, InputParameter, XQuantConfig

__all__ = ["load_config", "read_raw_config", "XQuantConfig", "InputParameter", "CustomSetting"]
