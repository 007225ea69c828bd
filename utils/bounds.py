"""Every bound the project checks, defined here once: what a plausible ECG, age and bias correction look like, and
how much of a resource one untrusted file may make the project use.

Plausibility (inputs and outputs):

* **Ages** (labels and predictions) lie in ``AGE_RANGE`` = 0–125 years. A label outside is an invalid label; a
  prediction outside is bad output for that record (the ``--on_bad`` policy decides), never a number in a file.
* **Amplitudes**: a 12-lead ECG in millivolts has QRS complexes of roughly 0.5–5 mV. The check reads the robust
  peak-to-peak amplitude (99th − 1st percentile) of each lead and takes the third largest — a
  QRS-bearing lead, untouched by one or two noisy or disconnected leads. On the shared PTB-XL and CinC records it
  lies between 0.73 and 4.9 mV; ``AMPLITUDE_RANGE_MV`` (0.05–50 mV) leaves a 10-fold margin on both sides and still
  catches records stored in µV (×1000) or V (×0.001), which would otherwise be read as millivolts.
* **Bias corrections** (a line gap = intercept + slope·age of the model's mean error) may claim a gap of at most
  ``MAX_BIAS_GAP`` years anywhere in ``AGE_RANGE``; an age they correct to outside ``AGE_RANGE`` is bad output.
* **Records** are sampled at ``MIN_FS``–``MAX_FS`` Hz and last at least ``MIN_SECONDS``; a model's input (its
  preprocessing length at its rate, from a checkpoint or an ONNX file) lasts at most ``MAX_INPUT_SECONDS``.

Resources (checked before anything is read or built, so that a small hostile file cannot exhaust memory or time):
* ``MAX_SAMPLES`` samples per lead of one record (2^20: 35 minutes at 500 Hz); ``MAX_HEADER_BYTES`` of WFDB header;
* ``MAX_HDF5_ROWS`` tracings per HDF5 file and ``MAX_CHUNK_BYTES`` per HDF5 chunk (a chunk is decompressed whole);
* ``MAX_CHECKPOINT_BYTES`` per checkpoint file, whose declared uncompressed size may exceed its size on disk by at
  most ``MAX_INFLATION`` (PyTorch stores tensors uncompressed: a larger ratio is a zip bomb);
* ``MAX_ECG_FILE_BYTES`` per clinical ECG file (DICOM, XML, EDF, SCP-ECG), checked before it is opened;
* ``MAX_CALIBRATION_RECORDS`` held-out (predicted, residual) pairs kept with a model for its intervals (an even
  random subsample beyond that: the conformal quantiles then move by well under 1 % of their value);
* ``MAX_FOLDS`` folds of a cross-validated run (``--folds`` and a run folder's cv.json), ``MAX_TTA`` windows per
  record (``--tta``: each is one more forward pass);
* ``MAX_PARAMETERS`` parameters and ``MAX_BLOCKS`` blocks per network, besides the per-argument bounds of each
  architecture (models/registry.py).
"""
from __future__ import annotations

import math
import numbers

import numpy as np

AGE_RANGE = (0.0, 125.0)
AMPLITUDE_RANGE_MV = (0.05, 50.0)
MAX_BIAS_GAP = 100.0
MIN_FS, MAX_FS = 50.0, 20_000.0
MIN_SECONDS = 2.0
MAX_INPUT_SECONDS = 120.0  # a model input (preprocessing length / fs); the recipes take 8.2-10 s

MAX_SAMPLES = 2 ** 20
MAX_HEADER_BYTES = 1 << 20
MAX_HDF5_ROWS = 1 << 22  # CODE-15% files hold about 20,000 tracings; the whole CODE data set 2.3 million
MAX_CHUNK_BYTES = 64 << 20
MAX_CHECKPOINT_BYTES = 8 << 30
MAX_INFLATION = 2.0
MAX_PARAMETERS = 500_000_000  # the seed networks have at most a few million; 500 M parameters are 2 GB of fp32
MAX_BLOCKS = 64
MAX_FOLDS = 100  # --folds, and what a run folder's cv.json may claim
MAX_TTA = 64  # --tta windows per record (ONNX metadata too): each costs one forward pass
MIN_SCALE, MAX_SCALE = 1e-6, 1e6  # --input_scale: mV per stored unit (nV … kV: anything else is a mistake)
MAX_TEACHER_VIEWS = 64  # --teacher_views: each is one teacher forward pass per training record, stored as one age
MAX_FIGURE_PIXELS = 25_000_000  # an explanation figure embedded in a report (the project's are about 4 million)
MAX_FIGURE_BYTES = 32 << 20
MAX_PAGE_ROWS = 5_000  # rows of report.html's table (the predictions CSV and report.json keep every record)
MAX_PAGE_CARDS = 200  # explained ECGs given a card on report.html
MAX_CHECK_RECORDS = 10_000  # --check_records and --calibration_records of an export (held in memory: ~1 MB each)
MAX_CALIBRATION_RECORDS = 20_000
# bootstrap resamples (--n_boot): below 200 the 2.5 % tails of a 95 % interval hold fewer than 5 draws (one resample
# gave an "interval" that missed the MAE itself); each costs a pass over the records
MIN_BOOT, MAX_BOOT = 200, 100_000
MAX_SEED = 2 ** 32 - 1  # --seed, --split_seed: numpy's and torch's generators take 0 … 2³² − 1 everywhere
MAX_STEPS = 1 << 31  # --max_steps_per_epoch (0 = all)
MAX_WORKERS = 256  # --num_workers: processes beside the model (a large machine's cores; each holds a reader)
MAX_INFER_BATCH = 1 << 16  # --infer_batch_size, and the largest batch an exported graph takes
GAP_THRESHOLD_RANGE = (0.5, 50.0)  # --gap_threshold, years: a negative, NaN or absurd one made groups of nothing
MAX_TRAINING_FINGERPRINTS = 2_000_000  # training records a model file can name (8 bytes each, 16 MB; Lima's 1.5 M fit)
MAX_TRAINING_SKETCHES = 250_000  # training records whose sketches a model file holds (32 bytes each, 8 MB); beyond,
#                                  its records are named by their exact hashes only
# sketch comparisons in one prediction (predicted × training records, 25 M a second on one core: bench/README.md
# "The records' sketches"): every pair where the model names at most NEAR_KNOWN_ALWAYS records (≤ 1 ms per predicted
# record, a tenth of its prediction) or the pairs are at most MAX_NEAR_PAIRS (~10 s); beyond, the hashes alone (said)
NEAR_KNOWN_ALWAYS = 25_000
MAX_NEAR_PAIRS = 250_000_000
MAX_ECG_FILE_BYTES = 256 << 20  # one clinical ECG file (DICOM, XML, EDF, SCP); a 10-s 12-lead XML is about 1 MB


def is_real(value) -> bool:
    """A real number (a bool is not one), possibly infinite or NaN."""
    return isinstance(value, numbers.Real) and not isinstance(value, bool)


def finite_number(value) -> float | None:
    """``value`` as a float when it is a finite real number, else None: the one test of a number read from a
    file or given by a caller (a bool, a string, NaN and infinities are not numbers here)."""
    return float(value) if is_real(value) and math.isfinite(value) else None


AMPLITUDE_PERCENTILES = (1.0, 99.0)  # the robust peak-to-peak's two ends
AMPLITUDE_LEAD_RANK = 3  # the record's amplitude is its third largest lead's: one or two odd leads do not decide


def amplitude_mv(signal: np.ndarray) -> float:
    """The robust peak-to-peak amplitude of the ``AMPLITUDE_LEAD_RANK``-th largest of a (12, N) record's leads (see
    the module text; the largest when a record has fewer leads)."""
    low, high = lead_percentiles(np.asarray(signal), AMPLITUDE_PERCENTILES)
    spans = np.sort(high - low)
    return float(spans[-AMPLITUDE_LEAD_RANK] if len(spans) >= AMPLITUDE_LEAD_RANK else spans[-1])


def order_positions(qs: tuple[float, ...], n: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Where percentiles ``qs`` of ``n`` samples fall in the sorted samples (numpy's linear method): each one's
    (fractional) position and the order statistics below and above it."""
    position = np.asarray(qs, dtype=np.float64) / 100 * (n - 1)
    below = np.floor(position).astype(np.int64)
    return position, below, np.minimum(below + 1, n - 1)


def lead_percentiles(x: np.ndarray, qs: tuple[float, ...]) -> np.ndarray:
    """``np.percentile(x, qs, axis=-1)`` (its default linear method, the same numbers) in float64, by one partial
    sort of the input's own dtype — a third of the time on every record's check."""
    position, below, above = order_positions(qs, x.shape[-1])
    parted = np.partition(x, np.unique(np.concatenate([below, above])), axis=-1)
    a, b = (np.moveaxis(parted[..., i], -1, 0).astype(np.float64) for i in (below, above))
    t = (position - below).reshape((-1,) + (1,) * (x.ndim - 1))
    return np.where(t >= 0.5, b - (b - a) * (1 - t), a + (b - a) * t)  # numpy's own interpolation, either side


CLI_SCALE_REMEDY = "give --input_scale {scale}"  # the fix named in a unit error; the Python API names its own


def amplitude_problem(signal: np.ndarray, remedy: str = CLI_SCALE_REMEDY) -> str | None:
    """Why a record's amplitudes do not look like millivolts (naming the likely unit and ``remedy`` with the
    factor that fixes it), or None."""
    if surely_plausible(signal):
        return None
    amplitude = amplitude_mv(signal)
    low, high = AMPLITUDE_RANGE_MV
    if amplitude > high:
        unit, scale = ("µV", "0.001") if amplitude < high * 1000 else ("nV or raw ADC units", "the mV per unit")
    elif amplitude < low:
        unit, scale = ("V", "1000") if amplitude > low / 1000 else ("an unknown unit", "the mV per unit")
    else:
        return None
    return (f"has amplitudes of {amplitude:.4g} (robust peak-to-peak of its QRS-bearing leads), outside the "
            f"{low:g}–{high:g} mV of a 12-lead ECG: they look like {unit}; {remedy.format(scale=scale)}")


def surely_plausible(signal: np.ndarray) -> bool:
    """Whether bounds that cost a few passes over a (leads, N) record prove :func:`amplitude_mv` inside
    ``AMPLITUDE_RANGE_MV`` — the same verdict as the percentiles, without their partial sort (False says only:
    compute them). Each lead's max − min bounds its robust span from above. From below: when at least N − b samples
    lie at or above a level ``a`` (b: the 99th percentile's order statistic below it), that percentile is ≥ ``a``;
    when at least b′ + 2 lie at or below ``c``, the 1st is ≤ ``c``; so the span is ≥ a − c. Every step is monotone
    in float64, so the bound holds for the computed numbers too."""
    x = np.asarray(signal)
    rank = AMPLITUDE_LEAD_RANK
    if x.ndim != 2 or x.shape[0] < rank or x.shape[1] < 2 or x.dtype.kind not in "fiu":
        return False
    low, high = AMPLITUDE_RANGE_MV
    top, bottom = x.max(axis=1), x.min(axis=1)
    spans = top.astype(np.float64) - bottom.astype(np.float64)
    if np.sort(spans)[-rank] > high:
        return False
    widest = np.argsort(spans)[-rank - 1:]  # ``rank`` of the rank + 1 widest leads must be proven wide enough
    x, top, bottom = x[widest], top[widest], bottom[widest]
    _, below, _ = order_positions(AMPLITUDE_PERCENTILES, x.shape[1])
    middle = x.mean(axis=1, dtype=np.float64)
    a = np.minimum(middle + low, top).astype(x.dtype)[:, None]  # within the lead's own range: exact in its dtype
    c = np.maximum(middle - low, bottom).astype(x.dtype)[:, None]
    proven = ((x >= a).sum(axis=1) >= x.shape[1] - below[1]) & ((x <= c).sum(axis=1) >= below[0] + 2) \
        & (a[:, 0].astype(np.float64) - c[:, 0].astype(np.float64) >= low)
    return int(proven.sum()) >= rank


def age_problem(age: float) -> str | None:
    """Why an age (label or prediction, in years) is implausible, or None."""
    low, high = AGE_RANGE
    if not np.isfinite(age):
        return f"is not a number ({age})"
    if not low <= age <= high:
        return f"{age:.2f} years lies outside the plausible {low:g}–{high:g}"
    return None
