"""The zoo's input recipes (bench/zoo/recipes.py): what decides which samples a model is judged on."""
from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "bench" / "zoo"))

import recipes  # noqa: E402


@pytest.mark.parametrize("recipe", ["photo", "captcha"])
def test_a_fixed_batch_export_gets_the_free_batch_models_samples(recipe):
    # orientation_b8 is orientation re-saved with batch 8: it must be calibrated and judged on the same
    # images, or the bench compares two data sets (the seed used to name the batch too: 15 vs 24 dB)
    spec = {"recipe": recipe, "shape": [1, 3, 24, 32], "norm": "imagenet"}
    one = recipes.samples(spec, "eval", 8, {})
    eight = recipes.samples(dict(spec, shape=[8, 3, 24, 32]), "eval", 8, {})
    assert all(np.array_equal(a, b) for a, b in zip(one, eight))
    # and still one draw per split: held-out images are not the calibration ones
    calib = recipes.samples(spec, "calib", 8, {})
    assert not any(np.array_equal(a, b) for a, b in zip(one, calib))
