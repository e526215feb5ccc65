"""Calibration list files: one data file per line, relative to the list's folder or absolute."""
from __future__ import annotations

import os
from typing import Dict, List, Sequence

import numpy as np

from ..errors import DataError
from ..model_io import read_text


def read_list_file(path: str) -> List[str]:
    """Absolute paths of the files a list names, blank lines ignored, order kept."""
    lines = read_text(path, "List file").splitlines()
    folder = os.path.dirname(os.path.abspath(path))
    result = []
    for line in lines:
        entry = line.strip()
        if entry:
            entry = os.path.expanduser(entry)
            result.append(entry if os.path.isabs(entry) else os.path.normpath(os.path.join(folder, entry)))
    return result


def count_lines(path: str) -> int:
    return len(read_text(path, "List file").splitlines())


def read_aligned_lists(list_paths: Dict[str, str]) -> Dict[str, List[str]]:
    """Read one list per input and check they align line by line (same length, every file present)."""
    lists = {name: read_list_file(path) for name, path in list_paths.items()}
    for name, files in lists.items():
        if not files:
            path = list_paths[name]
            raise DataError(f"Calibration input {name} finds 0 items.",
                            f"List file '{path}' has {count_lines(path)} line(s) and no file names; "
                            "put one data file path per line.")
    names = list(lists)
    for other in names[1:]:
        if len(lists[other]) != len(lists[names[0]]):
            raise DataError(
                f"Calibration lists do not align: '{list_paths[names[0]]}' (input {names[0]}) has "
                f"{len(lists[names[0]])} files but '{list_paths[other]}' (input {other}) has {len(lists[other])}.",
                "Multi-input lists must correspond line by line.")
    return lists


def check_files_exist(name: str, list_path: str, files: Sequence[str], indices: Sequence[int]) -> None:
    missing = [i for i in indices if not os.path.isfile(files[i])]
    if missing:
        first = missing[0]
        # the seed's FAQ line first when nothing is left to calibrate on
        head = f"Calibration input {name} finds 0 items. " if len(missing) == len(indices) else ""
        raise DataError(
            f"{head}Calibration input {name}: file on line {first + 1} of '{list_path}' not found: "
            f"'{files[first]}'.",
            f"{len(missing)} of {len(indices)} listed file(s) are missing; entries are relative to the list's folder.")


def choose_indices(total: int, step: int, seed: int) -> np.ndarray:
    """A seeded, reproducible choice of ``step`` of ``total`` samples (all of them when fewer), sorted."""
    if total <= step:
        return np.arange(total)
    rng = np.random.default_rng(seed)
    return np.sort(rng.choice(total, size=step, replace=False))
