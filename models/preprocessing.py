"""Preprocessing: a pure function of (signal, fs, spec) → float32 (12, length).

The spec belongs to the model: it is stored in every checkpoint and read back at inference, so training, the
cache and inference all run exactly the same steps. Two published recipes are provided:

* ``MAIC``  (challenge entry): at 500 Hz keep the first 4096 samples, z-score each lead (eps 1e-8), 3rd-order
  Butterworth band-pass 1–47 Hz applied forward-backward (filtfilt), NaN → 0.
* ``LIMA``  (Lima et al. 2021): resample to 400 Hz, centred crop / symmetric zero-pad to 4096 samples, amplitudes
  in mV, nothing else.
"""
from __future__ import annotations

import dataclasses
from fractions import Fraction
from functools import lru_cache
from typing import Literal

import numpy as np
from scipy import signal as sps


@dataclasses.dataclass(frozen=True)
class PreprocessSpec:
    fs: float = 500.0
    length: int = 4096
    crop: Literal["start", "center"] | float = "start"  # or a window position in [0, 1] (test-time augmentation)
    pad: Literal["end", "center"] = "end"
    zscore: bool = True
    bandpass: tuple[float, float] | None = (1.0, 47.0)
    filter_order: int = 3
    nan_to_zero: bool = True

    def __post_init__(self):
        window = isinstance(self.crop, (int, float)) and 0.0 <= self.crop <= 1.0
        if not (window or self.crop in ("start", "center")) or self.pad not in ("end", "center"):
            raise ValueError(f"crop must be start|center|a position in [0, 1] and pad end|center, "
                             f"got {self.crop}/{self.pad}")
        if self.bandpass is not None:
            object.__setattr__(self, "bandpass", tuple(float(f) for f in self.bandpass))
            low, high = self.bandpass
            if not 0 < low < high < self.fs / 2:
                raise ValueError(f"band-pass {low}–{high} Hz must lie inside (0, {self.fs / 2}) Hz at fs {self.fs}")

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict) -> "PreprocessSpec":
        known = {f.name for f in dataclasses.fields(cls)}
        return cls(**{k: (tuple(v) if k == "bandpass" and v is not None else v)
                      for k, v in data.items() if k in known})


MAIC = PreprocessSpec(fs=500.0, length=4096, crop="start", pad="end", zscore=True, bandpass=(1.0, 47.0),
                      filter_order=3, nan_to_zero=True)
LIMA = PreprocessSpec(fs=400.0, length=4096, crop="center", pad="center", zscore=False, bandpass=None,
                      nan_to_zero=False)
PRESETS = {"maic": MAIC, "lima": LIMA}


def resample(signal: np.ndarray, fs_in: float, fs_out: float) -> np.ndarray:
    """Polyphase resampling along the last axis (identity, bit for bit, when the rates are equal)."""
    if float(fs_in) == float(fs_out):
        return signal
    ratio = Fraction(float(fs_out) / float(fs_in)).limit_denominator(1000)
    return sps.resample_poly(signal, ratio.numerator, ratio.denominator, axis=-1)


def fit_length(signal: np.ndarray, length: int, crop: str | float = "start", pad: str = "end") -> np.ndarray:
    """Crop (from the start, the centre, or at position ``crop`` ∈ [0, 1] of the possible starts) or zero-pad
    (at the end or symmetrically) to ``length`` samples."""
    n = signal.shape[-1]
    if n > length:
        if crop == "start":
            start = 0
        elif crop == "center":
            start = (n - length) // 2
        else:
            start = int(round(float(crop) * (n - length)))
        return signal[..., start:start + length]
    if n < length:
        missing = length - n
        before = 0 if pad == "end" else missing // 2
        widths = [(0, 0)] * (signal.ndim - 1) + [(before, missing - before)]
        return np.pad(signal, widths)
    return signal


@lru_cache(maxsize=16)
def _bandpass_coefficients(order: int, low: float, high: float, fs: float):
    return sps.butter(order, [low, high], btype="bandpass", fs=fs)


def preprocess(signal: np.ndarray, fs: float, spec: PreprocessSpec) -> np.ndarray:
    """(12, N) mV at ``fs`` → float32 (12, spec.length), the model's input for one ECG."""
    x = resample(np.asarray(signal), fs, spec.fs)
    x = fit_length(x, spec.length, spec.crop, spec.pad)
    if spec.zscore:
        x = x.astype(np.float64)
        x = (x - x.mean(axis=-1, keepdims=True)) / (x.std(axis=-1, keepdims=True) + 1e-8)
    if spec.bandpass is not None:
        b, a = _bandpass_coefficients(spec.filter_order, *spec.bandpass, spec.fs)
        x = sps.filtfilt(b, a, x, axis=-1)
    if spec.nan_to_zero:
        x = np.where(np.isnan(x), 0.0, x)
    return np.ascontiguousarray(x, dtype=np.float32)


def tta_specs(spec: PreprocessSpec, count: int) -> list[PreprocessSpec]:
    """``count`` evenly spaced windows of ``spec.length`` samples that together cover the whole record (test-time
    augmentation); each window is preprocessed exactly like a single input. ``count`` 1 is the model's own spec."""
    if count <= 1:
        return [spec]
    return [dataclasses.replace(spec, crop=k / (count - 1)) for k in range(count)]
