"""Losses on ages (after the head) with optional per-sample weights."""
from __future__ import annotations

import math

import numpy as np
import torch


def inverse_age_weights(ages, max_weight: float = math.inf) -> np.ndarray:
    """Lima et al.: weight each record by 1 / (number of records of its integer age), normalised to mean 1;
    with ``max_weight``, weights are capped and renormalised to mean 1 again."""
    ages = np.floor(np.asarray(ages, dtype=np.float64))
    _, inverse, counts = np.unique(ages, return_inverse=True, return_counts=True)
    weights = 1.0 / counts[inverse]
    weights = weights * len(ages) / weights.sum()
    if math.isfinite(max_weight):
        weights = np.minimum(weights, max_weight)
        weights = weights * len(ages) / weights.sum()
    return weights.astype(np.float32)


def regression_loss(name: str):
    """``loss(pred, target, weight)``: weighted mean of |error| ('l1', the seed's L1Loss) or error² ('mse')."""
    if name == "l1":
        return lambda pred, target, weight: (weight * (pred - target).abs()).mean()
    if name == "mse":
        return lambda pred, target, weight: (weight * (pred - target) ** 2).mean()
    raise ValueError(f"unknown loss {name!r} (l1 or mse)")


def per_sample_loss(name: str, pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    error = pred - target
    return error.abs() if name == "l1" else error ** 2
