"""Calibration data sources: list files, img/npy/raw readers, presets and user preprocess hooks."""
from .listfile import read_list_file
from .source import CalibrationData, held_back_files, load_input_batch, select_calibration_files

__all__ = ["read_list_file", "load_input_batch", "select_calibration_files", "held_back_files", "CalibrationData"]
