"""Losses on ages (after the head) with optional per-sample weights, and the Lima et al. sample weights."""
from __future__ import annotations

import math

import numpy as np


def inverse_age_weights(ages, max_weight: float = math.inf) -> np.ndarray:
    """Lima et al.: weight each record by 1 / (number of records of its integer age), normalised to mean 1.
    With ``max_weight`` the weights are capped and then renormalised to mean 1 again, so the final largest
    weight can exceed the cap (the published code does the same)."""
    ages = np.floor(np.asarray(ages, dtype=np.float64))
    _, inverse, counts = np.unique(ages, return_inverse=True, return_counts=True)
    weights = 1.0 / counts[inverse]
    weights = weights * len(ages) / weights.sum()
    if math.isfinite(max_weight):
        weights = np.minimum(weights, max_weight)
        weights = weights * len(ages) / weights.sum()
    return weights.astype(np.float32)


# per-sample loss of the error (predicted − true age): |error| (the seed's L1Loss) or error² (Lima et al.'s MSE);
# works on torch tensors and numpy arrays
LOSSES = {"l1": abs, "mse": lambda error: error ** 2}
SAMPLE_WEIGHTS = ("none", "inverse_age")  # "inverse_age": inverse_age_weights


def per_sample_loss(name: str, pred, target):
    if name not in LOSSES:
        raise ValueError(f"unknown loss {name!r} (one of {', '.join(LOSSES)})")
    return LOSSES[name](pred - target)


def regression_loss(name: str):
    """``loss(pred, target, weight)``: the weighted mean of :func:`per_sample_loss`."""
    per_sample_loss(name, 0.0, 0.0)  # an unknown name fails here, not at the first step
    return lambda pred, target, weight: (weight * per_sample_loss(name, pred, target)).mean()
