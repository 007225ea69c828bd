"""The training augmentation as batched tensor operations on the training device (``--augment_on device``).

The same augmentations, strengths and order as dataloader/augment.py's ``Augment`` (whose numpy functions document
each one's distribution), drawn from a ``torch.Generator`` on the batch's device seeded by one number the loader
draws per batch (``augment_seed``, from the batch's own generator): reproducible for a given seed and device type,
another random stream than the numpy path's. Random crops stay in the loader (they shrink what it hands over).
"""
from __future__ import annotations

import math

import torch

from .augment import Augment


def _uniform(shape, low: float, high: float, g: torch.Generator, device) -> torch.Tensor:
    return low + (high - low) * torch.rand(shape, generator=g, device=device)


def amplitude_scale(x: torch.Tensor, g: torch.Generator, strength: float) -> torch.Tensor:
    return x * _uniform((x.shape[0], 1, 1), 1 - strength, 1 + strength, g, x.device)


def lead_scale(x: torch.Tensor, g: torch.Generator, strength: float) -> torch.Tensor:
    return x * (1 + strength * torch.randn((x.shape[0], x.shape[1], 1), generator=g, device=x.device))


def gaussian_noise(x: torch.Tensor, g: torch.Generator, strength: float) -> torch.Tensor:
    return x + strength * torch.randn(x.shape, generator=g, device=x.device, dtype=x.dtype)


def baseline_wander(x: torch.Tensor, g: torch.Generator, strength: float, fs: float) -> torch.Tensor:
    shape = (x.shape[0], x.shape[1], 1)
    freq, phase = _uniform(shape, 0.05, 0.5, g, x.device), _uniform(shape, 0, 2 * math.pi, g, x.device)
    amplitude = _uniform(shape, 0, strength, g, x.device)
    t = torch.arange(x.shape[-1], device=x.device, dtype=torch.float32) / fs
    return x + amplitude * torch.sin(2 * math.pi * freq * t + phase)


def lead_dropout(x: torch.Tensor, g: torch.Generator, probability: float) -> torch.Tensor:
    return x * (torch.rand((x.shape[0], x.shape[1], 1), generator=g, device=x.device) >= probability)


def coarse_dropout(x: torch.Tensor, g: torch.Generator, probability: float, fraction: float = 0.1) -> torch.Tensor:
    width = max(1, int(fraction * x.shape[-1]))
    hit = torch.rand(x.shape[0], generator=g, device=x.device) < probability
    starts = torch.randint(0, x.shape[-1] - width + 1, (x.shape[0],), generator=g, device=x.device)
    t = torch.arange(x.shape[-1], device=x.device)
    inside = (t >= starts[:, None]) & (t < starts[:, None] + width) & hit[:, None]  # (B, T)
    return x * ~inside[:, None, :]


# the same names and order as dataloader/augment.py's STEPS: field → function of (batch, generator, strength, fs)
STEPS = {"scale": lambda x, g, s, fs: amplitude_scale(x, g, s),
         "lead_scale": lambda x, g, s, fs: lead_scale(x, g, s),
         "noise": lambda x, g, s, fs: gaussian_noise(x, g, s),
         "wander": baseline_wander,
         "lead_dropout": lambda x, g, s, fs: lead_dropout(x, g, s),
         "coarse_dropout": lambda x, g, s, fs: coarse_dropout(x, g, s)}


def device_augment(x: torch.Tensor, settings: Augment, seed: int) -> torch.Tensor:
    """``settings``' augmentations (its crops excepted: the loader's) of a float batch (B, 12, T) where it lies,
    drawn from a generator on its device seeded by ``seed``."""
    g = torch.Generator(device=x.device)
    g.manual_seed(int(seed))
    x = x.float()
    for name, strength in settings.steps():  # the numpy path's order
        x = STEPS[name](x, g, strength, settings.fs)
    return x
