"""Fidelity metrics between a reference (FP32) and a test tensor. Pure functions."""
from __future__ import annotations

import numpy as np


def noise_ratio(ref: np.ndarray, test: np.ndarray) -> float:
    """XQuant's SNR: noise power / signal power (lower is better; 0.1 is the flag line)."""
    ref64, test64 = np.asarray(ref, np.float64).ravel(), np.asarray(test, np.float64).ravel()
    return ratio_of_sums(float(np.sum(ref64 * ref64)), float(np.sum((ref64 - test64) ** 2)))


def ratio_of_sums(signal: float, noise: float) -> float:
    """``noise_ratio`` from the summed squares of the reference and of the error."""
    if signal == 0.0:
        return 0.0 if noise == 0.0 else float("inf")
    return noise / signal


def ratio_db(ratio: float) -> float:
    """A noise ratio (noise power / signal power) as an SNR in dB (higher is better)."""
    if ratio == 0.0:
        return float("inf")
    return float(-10.0 * np.log10(ratio))


def snr_db(ref: np.ndarray, test: np.ndarray) -> float:
    """Signal-to-noise ratio in dB (higher is better)."""
    return ratio_db(noise_ratio(ref, test))


def cosine(ref: np.ndarray, test: np.ndarray) -> float:
    a, b = np.asarray(ref, np.float64).ravel(), np.asarray(test, np.float64).ravel()
    return cosine_of_sums(float(np.dot(a, b)), float(np.dot(a, a)), float(np.dot(b, b)))


def cosine_of_sums(dot: float, ref_sq: float, test_sq: float) -> float:
    """``cosine`` from the summed products: reference x test, reference squared, test squared."""
    na, nb = np.sqrt(ref_sq), np.sqrt(test_sq)
    if na == 0.0 or nb == 0.0:
        return 1.0 if na == nb else 0.0
    return float(dot / (na * nb))


def mse(ref: np.ndarray, test: np.ndarray) -> float:
    return float(np.mean((np.asarray(ref, np.float64) - np.asarray(test, np.float64)) ** 2))


def max_abs(ref: np.ndarray, test: np.ndarray) -> float:
    diff = np.abs(np.asarray(ref, np.float64) - np.asarray(test, np.float64))
    return float(diff.max()) if diff.size else 0.0


def top1_agreement(ref: np.ndarray, test: np.ndarray) -> float:
    """Share of samples (first axis) whose argmax over the last axis agrees."""
    a = np.asarray(ref).reshape(ref.shape[0], -1).argmax(axis=1)
    b = np.asarray(test).reshape(test.shape[0], -1).argmax(axis=1)
    return float(np.mean(a == b))
