"""Preprocessing: a pure function of (signal, fs, spec) → float32 (12, length).

The spec belongs to the model: it is stored in every checkpoint and read back at inference, so training, the
cache and inference all run exactly the same steps. Two published recipes are provided:

* ``MAIC``  (challenge entry): at 500 Hz keep the first 4096 samples, z-score each lead (eps 1e-8), 3rd-order
  Butterworth band-pass 1–47 Hz applied forward-backward (filtfilt), NaN → 0.
* ``LIMA``  (Lima et al. 2021): resample to 400 Hz, centred crop / symmetric zero-pad to 4096 samples, amplitudes
  in mV, nothing else.

and this project's ``MODERN`` (the MAIC 2023 winner's preprocessing): the whole 10-s record at 500 Hz (5000
samples), 4th-order Butterworth band-pass 0.5–45 Hz (filtfilt), then each lead z-scored; ``MODERN_100HZ`` is the
same at 100 Hz (1000 samples): after a 45-Hz low-pass a 500-Hz record is five times oversampled, so 100 Hz keeps
its content and the network does a fifth of the work (bench/README.md, "Modern vs the plain baseline").
"""
from __future__ import annotations

import dataclasses
import numbers
from fractions import Fraction
from functools import lru_cache
from typing import Literal

import numpy as np

from utils.bounds import MAX_FS, MAX_INPUT_SECONDS, MAX_SAMPLES, MIN_FS, finite_number

from . import resampling
from .zero_phase import padlen


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
    zscore_after_filter: bool = False  # MAIC z-scores then filters; the modern recipe filters then z-scores

    def __post_init__(self):
        """Every field checked by type and range (a spec comes from an untrusted checkpoint)."""
        if finite_number(self.fs) is None or not MIN_FS <= self.fs <= MAX_FS:
            raise ValueError(f"fs must be a number of Hz in [{MIN_FS:g}, {MAX_FS:g}], got {self.fs!r}")
        if not isinstance(self.length, numbers.Integral) or isinstance(self.length, bool) or \
                not 1 <= self.length <= MAX_SAMPLES:
            raise ValueError(f"length must be a whole number of samples in [1, {MAX_SAMPLES}], got {self.length!r}")
        if self.length > MAX_INPUT_SECONDS * self.fs:
            raise ValueError(f"length {self.length} at {self.fs:g} Hz is {self.length / self.fs:g} s, more than the "
                             f"{MAX_INPUT_SECONDS:g} s a model input may last")
        window = finite_number(self.crop) is not None and 0.0 <= self.crop <= 1.0
        named = isinstance(self.crop, str) and self.crop in ("start", "center")
        if not (window or named) or not isinstance(self.pad, str) or self.pad not in ("end", "center"):
            raise ValueError(f"crop must be start|center|a position in [0, 1] and pad end|center, "
                             f"got {self.crop!r}/{self.pad!r}")
        flags = {"zscore": self.zscore, "nan_to_zero": self.nan_to_zero,
                 "zscore_after_filter": self.zscore_after_filter}
        if not all(isinstance(v, bool) for v in flags.values()):
            raise ValueError(f"zscore, nan_to_zero and zscore_after_filter must be true/false, got {flags}")
        if not isinstance(self.filter_order, numbers.Integral) or not 1 <= self.filter_order <= 10:
            raise ValueError(f"filter_order must be a whole number in [1, 10], got {self.filter_order!r}")
        object.__setattr__(self, "fs", float(self.fs))
        object.__setattr__(self, "length", int(self.length))
        if self.bandpass is not None:
            if not isinstance(self.bandpass, (list, tuple)) or len(self.bandpass) != 2 or \
                    not all(finite_number(f) is not None for f in self.bandpass):
                raise ValueError(f"bandpass must be two frequencies in Hz or none, got {self.bandpass!r}")
            object.__setattr__(self, "bandpass", tuple(float(f) for f in self.bandpass))
            low, high = self.bandpass
            if not 0 < low < high < self.fs / 2:
                raise ValueError(f"band-pass {low}–{high} Hz must lie inside (0, {self.fs / 2}) Hz at fs {self.fs}")

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict) -> "PreprocessSpec":
        if not isinstance(data, dict):
            raise ValueError(f"a preprocessing spec is a dict of its fields, got {type(data).__name__}")
        known = {f.name for f in dataclasses.fields(cls)}
        return cls(**{k: v for k, v in data.items() if k in known})


MAIC = PreprocessSpec(fs=500.0, length=4096, crop="start", pad="end", zscore=True, bandpass=(1.0, 47.0),
                      filter_order=3, nan_to_zero=True)
LIMA = PreprocessSpec(fs=400.0, length=4096, crop="center", pad="center", zscore=False, bandpass=None,
                      nan_to_zero=False)
MODERN = PreprocessSpec(fs=500.0, length=5000, crop="center", pad="end", zscore=True, bandpass=(0.5, 45.0),
                        filter_order=4, nan_to_zero=True, zscore_after_filter=True)
MODERN_100HZ = dataclasses.replace(MODERN, fs=100.0, length=1000)
PRESETS = {"maic": MAIC, "lima": LIMA, "modern": MODERN, "modern_100hz": MODERN_100HZ}


def resample_ratio(fs_in: float, fs_out: float) -> tuple[int, int]:
    """(up, down) in lowest terms, the polyphase factors from ``fs_in`` to ``fs_out``."""
    ratio = Fraction(float(fs_out) / float(fs_in)).limit_denominator(1000)
    return ratio.numerator, ratio.denominator


def resample(signal: np.ndarray, fs_in: float, fs_out: float) -> np.ndarray:
    """Polyphase resampling along the last axis (identity, bit for bit, when the rates are equal): scipy's
    ``resample_poly`` with its default filter, as one matrix product by numpy (models/resampling.py; the same
    numbers up to the order of the float sums), or by scipy itself for ratios whose matrix would be large. The
    output's type is scipy's: float32 and float64 kept, float16 made float32 (before filtering: scipy would round
    its filter to float16), anything else float64."""
    if float(fs_in) == float(fs_out):
        return signal
    up, down = resample_ratio(fs_in, fs_out)
    signal = np.asarray(signal)
    kept = signal.dtype in (np.float32, np.float64)
    signal = signal.astype(signal.dtype if kept else np.float32 if signal.dtype == np.float16 else np.float64,
                           copy=False)
    plan = resampling.band(up, down, signal.dtype.str)
    if plan is not None:
        return resampling.apply(signal, plan)
    from scipy import signal as sps  # imported only here: its import alone takes over a second

    return sps.resample_poly(signal, up, down, axis=-1, window=resampling.lowpass(up, down).astype(signal.dtype))


def crop_start(n: int, length: int, crop: str | float) -> int:
    """First sample of a ``length`` window of an ``n``-sample signal: the start, the centre, or position ``crop`` ∈
    [0, 1] of the possible starts."""
    if crop == "start":
        return 0
    if crop == "center":
        return (n - length) // 2
    return int(round(float(crop) * (n - length)))


def fit_length(signal: np.ndarray, length: int, crop: str | float = "start", pad: str = "end") -> np.ndarray:
    """Crop (see :func:`crop_start`) or zero-pad (at the end or symmetrically) to ``length`` samples."""
    n = signal.shape[-1]
    if n > length:
        start = crop_start(n, length, crop)
        return signal[..., start:start + length]
    if n < length:
        missing = length - n
        before = 0 if pad == "end" else missing // 2
        widths = [(0, 0)] * (signal.ndim - 1) + [(before, missing - before)]
        return np.pad(signal, widths)
    return signal


def resample_window(signal: np.ndarray, fs: float, spec: PreprocessSpec) -> np.ndarray:
    """``fit_length(resample(signal, fs, spec.fs), ...)``, resampling only the part the window needs.

    The window is located on the full resampled record as before; then only the input samples under it, plus a
    margin wider than the resampling filter, are resampled. The segment starts at a multiple of the decimation
    factor, so its output samples fall on the full output's grid and equal them (the filter never reaches the
    segment's own edges inside the window). Work and memory are bounded by the window, not the record."""
    if float(fs) == float(spec.fs):
        return fit_length(signal, spec.length, spec.crop, spec.pad)
    up, down = resample_ratio(fs, spec.fs)
    n = signal.shape[-1]
    n_out = -(-n * up // down)  # the full resampled length, ceil(n·up/down)
    if n_out <= spec.length:
        return fit_length(resample(signal, fs, spec.fs), spec.length, spec.crop, spec.pad)
    start = crop_start(n_out, spec.length, spec.crop)
    margin = -(-10 * max(up, down) // up) + 2  # resample_poly's filter reaches 10·max(up, down) upsampled samples
    first = max(0, (start * down // up - margin) // down * down)
    last = min(n, -(-(start + spec.length) * down // up) + margin)
    segment = resample(signal[..., first:last], fs, spec.fs)
    offset = start - first * up // down
    return segment[..., offset:offset + spec.length]


def input_times(n: int, fs: float, spec: PreprocessSpec) -> np.ndarray:
    """The time (seconds from the record's first sample) of each of the ``spec.length`` samples of the model input
    that :func:`preprocess` makes of an ``n``-sample record at ``fs``; NaN where the input is padding."""
    up, down = resample_ratio(fs, spec.fs) if float(fs) != float(spec.fs) else (1, 1)
    n_out = -(-n * up // down)
    index = np.arange(spec.length, dtype=np.float64)
    if n_out > spec.length:
        index += crop_start(n_out, spec.length, spec.crop)
    elif n_out < spec.length:
        index -= 0 if spec.pad == "end" else (spec.length - n_out) // 2
        index[(index < 0) | (index >= n_out)] = np.nan
    return index / spec.fs


@lru_cache(maxsize=16)
def _bandpass_coefficients(order: int, low: float, high: float, fs: float):
    from scipy import signal as sps

    return sps.butter(order, [low, high], btype="bandpass", fs=fs)


def _filtfilt(b: np.ndarray, a: np.ndarray, x: np.ndarray) -> np.ndarray:
    from scipy import signal as sps  # only the recipes that filter on the CPU (the seed recipes, the old split)

    return sps.filtfilt(b, a, x, axis=-1)


def zscore(x: np.ndarray) -> np.ndarray:
    """Each lead to mean 0, standard deviation 1 (eps 1e-8, as the seed), in float64."""
    x = x.astype(np.float64)
    return (x - x.mean(axis=-1, keepdims=True)) / (x.std(axis=-1, keepdims=True) + 1e-8)


def preprocess(signal: np.ndarray, fs: float, spec: PreprocessSpec) -> np.ndarray:
    """(12, N) mV at ``fs`` → float32 (12, spec.length), the model's input for one ECG."""
    x = resample_window(np.asarray(signal), fs, spec)
    if spec.zscore and not spec.zscore_after_filter:
        x = zscore(x)
    if spec.bandpass is not None:
        b, a = _bandpass_coefficients(spec.filter_order, *spec.bandpass, spec.fs)
        x = _filtfilt(b, a, x)
    if spec.zscore and spec.zscore_after_filter:
        x = zscore(x)
    if spec.nan_to_zero:
        x = np.where(np.isnan(x), 0.0, x)
    return np.ascontiguousarray(x, dtype=np.float32)


def in_graph(spec: PreprocessSpec) -> bool:
    """Whether a model's graph runs ``spec``'s band-pass, z-score and NaN → 0 (models/input_stage.py) on the window
    the CPU resampled and cut: the project's own recipes (filter, then z-score) on windows longer than the filter's
    odd extension. The seed recipes (MAIC z-scores first; Lima neither filters nor z-scores) keep their reference
    path on the CPU."""
    return spec.zscore_after_filter and spec.bandpass is not None and spec.length > padlen(spec.filter_order)


def cpu_part(spec: PreprocessSpec) -> PreprocessSpec:
    """What the CPU does of ``spec`` when a graph runs the rest (:func:`in_graph`): resampling and the window;
    ``spec`` itself otherwise."""
    if not in_graph(spec):
        return spec
    return dataclasses.replace(spec, bandpass=None, zscore=False, nan_to_zero=False, zscore_after_filter=False)


def tta_specs(spec: PreprocessSpec, count: int) -> list[PreprocessSpec]:
    """``count`` evenly spaced windows of ``spec.length`` samples that together cover the whole record (test-time
    augmentation); each window is preprocessed exactly like a single input. ``count`` 1 is the model's own spec."""
    if count <= 1:
        return [spec]
    return [dataclasses.replace(spec, crop=k / (count - 1)) for k in range(count)]
