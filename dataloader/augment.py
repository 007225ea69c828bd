"""Training-time augmentation of batches of model inputs (B, 12, T), in numpy, reproducible from a seed.

Each augmentation is one function of (batch, rng, strength) that draws its random numbers in a fixed, documented
order, so a test can recompute it independently; ``Augment`` applies the enabled ones in the order listed here.
They run in the DataLoader (CPU workers), after the cache, on z-scored inputs (strengths are in z units); with
``--augment_on device`` all but the crops run as tensor operations on the training device instead
(dataloader/tensor_augment.py, ``Augment.split``).
A *stored view* (distillation) is one record's augmentation drawn from a generator seeded by (seed, record, view):
only those three numbers are kept, and the same array comes back wherever and however often it is drawn.
"""
from __future__ import annotations

import dataclasses

import numpy as np


def random_crop(x: np.ndarray, rng: np.random.Generator, length: int) -> np.ndarray:
    """A window of ``length`` samples per record; starts drawn uniformly: rng.integers(0, T − length + 1, B)."""
    starts = rng.integers(0, x.shape[-1] - length + 1, size=x.shape[0])
    return np.stack([row[:, s:s + length] for row, s in zip(x, starts)])


def amplitude_scale(x: np.ndarray, rng: np.random.Generator, strength: float) -> np.ndarray:
    """Each record times a factor drawn uniformly from [1 − strength, 1 + strength] (one per record)."""
    return x * rng.uniform(1 - strength, 1 + strength, size=(x.shape[0], 1, 1)).astype(x.dtype)


def lead_scale(x: np.ndarray, rng: np.random.Generator, strength: float) -> np.ndarray:
    """Each lead of each record times 1 + strength·N(0, 1): rng.standard_normal((B, 12, 1))."""
    return x * (1 + strength * rng.standard_normal((x.shape[0], x.shape[1], 1))).astype(x.dtype)


def gaussian_noise(x: np.ndarray, rng: np.random.Generator, strength: float) -> np.ndarray:
    """Adds white noise of standard deviation ``strength``: rng.standard_normal(x.shape)."""
    return x + (strength * rng.standard_normal(x.shape)).astype(x.dtype)


def baseline_wander(x: np.ndarray, rng: np.random.Generator, strength: float, fs: float = 500.0) -> np.ndarray:
    """Adds one slow sinusoid per record and lead: frequency U(0.05, 0.5) Hz, phase U(0, 2π), amplitude
    U(0, strength), drawn in that order, each of shape (B, 12, 1)."""
    shape = (x.shape[0], x.shape[1], 1)
    freq, phase = rng.uniform(0.05, 0.5, size=shape), rng.uniform(0, 2 * np.pi, size=shape)
    amplitude = rng.uniform(0, strength, size=shape)
    t = np.arange(x.shape[-1]) / fs
    return x + (amplitude * np.sin(2 * np.pi * freq * t + phase)).astype(x.dtype)


def lead_dropout(x: np.ndarray, rng: np.random.Generator, probability: float) -> np.ndarray:
    """Zeroes each lead of each record with ``probability``: rng.random((B, 12, 1)) < probability."""
    return x * (rng.random((x.shape[0], x.shape[1], 1)) >= probability).astype(x.dtype)


def coarse_dropout(x: np.ndarray, rng: np.random.Generator, probability: float, fraction: float = 0.1) -> np.ndarray:
    """With ``probability`` per record, zeroes one segment of ``fraction`` of its length across all leads: whether
    rng.random(B) < probability, then the segment starts rng.integers(0, T − width + 1, B)."""
    width = max(1, int(fraction * x.shape[-1]))
    hit = rng.random(x.shape[0]) < probability
    starts = rng.integers(0, x.shape[-1] - width + 1, size=x.shape[0])
    out = x.copy()
    for i in np.flatnonzero(hit):
        out[i, :, starts[i]:starts[i] + width] = 0
    return out


# the augmentations after the crops, in the order they apply: Augment's field → its function of (batch, generator,
# strength, fs) — dataloader/tensor_augment.py keeps the same names for the training device
STEPS = {"scale": lambda x, rng, s, fs: amplitude_scale(x, rng, s),
         "lead_scale": lambda x, rng, s, fs: lead_scale(x, rng, s),
         "noise": lambda x, rng, s, fs: gaussian_noise(x, rng, s),
         "wander": baseline_wander,
         "lead_dropout": lambda x, rng, s, fs: lead_dropout(x, rng, s),
         "coarse_dropout": lambda x, rng, s, fs: coarse_dropout(x, rng, s)}


@dataclasses.dataclass(frozen=True)
class Augment:
    """The enabled augmentations and their strengths (0 = off); ``crop_samples``: the length of the random training
    crops (0 = the whole input; the preprocessing spec's ``crop`` is a window position, another thing)."""

    crop_samples: int = 0
    scale: float = 0.0
    lead_scale: float = 0.0
    noise: float = 0.0
    wander: float = 0.0
    lead_dropout: float = 0.0
    coarse_dropout: float = 0.0
    fs: float = 500.0

    def __call__(self, x: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        if self.crop_samples and self.crop_samples < x.shape[-1]:
            x = random_crop(x, rng, self.crop_samples)
        for name, strength in self.steps():
            x = STEPS[name](x, rng, strength, self.fs)
        return np.ascontiguousarray(x, dtype=np.float32)

    def steps(self) -> list[tuple[str, float]]:
        """(name, strength) of the enabled augmentations after the crops, in the order they apply (``STEPS``)."""
        return [(name, getattr(self, name)) for name in STEPS if getattr(self, name)]

    def split(self) -> tuple["Augment | None", "Augment | None"]:
        """(the random crops, for the loader; everything else, for the training device:
        dataloader/tensor_augment.py) — either None where it does nothing."""
        crops = Augment(crop_samples=self.crop_samples, fs=self.fs)
        rest = dataclasses.replace(self, crop_samples=0)
        return (crops if crops != Augment(fs=self.fs) else None), (rest if rest != Augment(fs=self.fs) else None)


def stored_views(augment: Augment, x: np.ndarray, seed: int, positions: np.ndarray, views: np.ndarray) -> np.ndarray:
    """View ``views[i]`` of the record at ``positions[i]`` for each input ``x[i]`` (B, 12, T): ``augment`` applied to
    that record alone with ``np.random.default_rng([seed, positions[i], views[i]])``."""
    return np.stack([augment(row[None], np.random.default_rng([seed, int(p), int(v)]))[0]
                     for row, p, v in zip(x, positions, views)])
