"""Polyphase resampling by numpy alone: scipy's ``resample_poly`` with its default filter, as one matrix product.

``resample_poly(x, up, down)`` is a fixed linear map: upsample by ``up`` (zeros between samples), filter with a
Kaiser-windowed sinc low-pass (2·10·max(up, down) + 1 taps, cutoff 1 / max(up, down), β 5, times ``up``), keep
every ``down``-th sample, centred. Cut the output into blocks of ``per_block`` groups of ``up`` samples: each block
is a fixed matrix (``band``) times the input samples under it, and successive blocks' inputs start ``per_block ·
down`` samples apart. So the whole resampling is one product of an overlapping strided view with ``band`` —
faster than scipy's loop for the common ratios, and importing no scipy at prediction (scipy.signal's import alone
takes over a second; bench/README.md, "Resampling without scipy"). The numbers are scipy's up to the order of the
float sums: within 1e-6 of the signal's range in float32 (tests/test_preprocessing.py). Ratios whose matrix would
be wide (a rate like 257 Hz, ``up`` and ``down`` in the hundreds) are left to scipy's own resample_poly.
"""
from __future__ import annotations

import dataclasses
from functools import lru_cache

import numpy as np

KAISER_BETA = 5.0  # resample_poly's default window, ('kaiser', 5.0)
MAX_WIDTH = 256  # input samples per block row: wider (rates like 257 Hz) and scipy's own loop is faster
MAX_BAND_ENTRIES = 1 << 20  # 4 MB in float32


@lru_cache(maxsize=64)
def lowpass(up: int, down: int) -> np.ndarray:
    """The FIR ``resample_poly`` designs for (up, down) by default — scipy's ``firwin(2·10·r + 1, 1 / r,
    window=('kaiser', 5.0))`` with r = max(up, down), the same numbers to the last bits (numpy's Bessel i0 against
    scipy's: an ulp apart on some CPUs) — designed once per ratio (read-only)."""
    rate = max(up, down)
    taps = 2 * 10 * rate + 1
    m = np.arange(taps) - 0.5 * (taps - 1)
    cutoff = 1.0 / rate
    h = cutoff * np.sinc(cutoff * m) * np.kaiser(taps, KAISER_BETA)
    h = h / h.sum()  # unit gain at 0 Hz, as firwin scales a low-pass
    h.flags.writeable = False
    return h


@dataclasses.dataclass(frozen=True)
class Band:
    """The resampling by (up, down) as blocks: output block b (``per_block`` · up samples) is
    ``x[b · per_block · down + first : … + width] @ matrix``; ``first`` may be negative (zeros before the signal)."""

    matrix: np.ndarray  # (width, per_block · up)
    first: int
    per_block: int
    up: int
    down: int

    @property
    def width(self) -> int:
        return self.matrix.shape[0]


def _taps(up: int, down: int, dtype: np.dtype) -> tuple[np.ndarray, int, int]:
    """For each output phase r (0 … up-1): its taps ``f[r]`` on the input samples ``base[r] - t`` (t = 0, 1, …),
    relative to the group's first input sample, as scipy places them (its filter padded to centre the outputs)."""
    h = lowpass(up, down).astype(dtype) * dtype.type(up)
    half = (len(h) - 1) // 2
    before = down - half % down
    shift = (half + before) // down
    padded = np.concatenate([np.zeros(before, dtype), h])
    r = np.arange(up)
    phase, base = ((r + shift) * down) % up, ((r + shift) * down) // up
    return [padded[p::up] for p in phase], base


@lru_cache(maxsize=32)
def band(up: int, down: int, dtype_name: str) -> Band | None:
    """The block matrix of (up, down) in ``dtype_name``, or None where it would be wider than MAX_WIDTH or larger
    than MAX_BAND_ENTRIES (scipy's loop is then the faster)."""
    dtype = np.dtype(dtype_name)
    taps, base = _taps(up, down, dtype)
    first = int(min(b - len(t) + 1 for t, b in zip(taps, base)))
    span = int(base.max()) - first + 1  # input samples one group of `up` outputs reads
    per_block = max(1, -(-span // down))  # about as many groups as a group's reach: the view overlaps ≤ 2×
    width = span + (per_block - 1) * down
    if width > MAX_WIDTH or width * per_block * up > MAX_BAND_ENTRIES:
        return None
    matrix = np.zeros((width, per_block, up), dtype)
    for r, (t, b) in enumerate(zip(taps, base)):
        rows = b - first - np.arange(len(t))
        for g in range(per_block):
            matrix[rows + g * down, g, r] = t
    matrix = matrix.reshape(width, per_block * up)
    matrix.flags.writeable = False
    return Band(matrix, first, per_block, up, down)


def apply(x: np.ndarray, plan: Band) -> np.ndarray:
    """``resample_poly(x, plan.up, plan.down, axis=-1)`` by ``plan`` (x in the plan's float type)."""
    n = x.shape[-1]
    n_out = -(-n * plan.up // plan.down)
    blocks = -(-n_out // (plan.per_block * plan.up))
    stride = plan.per_block * plan.down
    total = (blocks - 1) * stride + plan.width  # input samples the blocks read, from plan.first on
    before = max(0, -plan.first)
    part = x[..., max(plan.first, 0):max(0, min(n, plan.first + total))]
    widths = [(0, 0)] * (x.ndim - 1) + [(before, total - before - part.shape[-1])]
    windows = np.lib.stride_tricks.sliding_window_view(np.pad(part, widths), plan.width, axis=-1)[..., ::stride, :]
    return (windows @ plan.matrix).reshape(x.shape[:-1] + (-1,))[..., :n_out]
