"""A record's fingerprint: 8 bytes that name its content as its reader gives it (the 12 leads in mV at the record's
own rate, before any resampling or filtering), so that the same recording read from the same kind of file has the
same fingerprint on every machine (decoding is exact arithmetic; resampling and filtering are not, across CPUs).

A model's file carries the fingerprints of the records it was trained on (engine/deploy/job.py); a prediction marks
the records whose fingerprint is among them, and the report leaves those out of its accuracy figures — accuracy on
a model's own training records is not a test. A fingerprint reads ``FINGERPRINT_SAMPLES`` samples of each lead,
spread evenly over the whole recording (so a flat start shared by many recordings does not make them one), its rate
and its length: two different recordings that agree on all of that are not met in practice.
No torch here.
"""
from __future__ import annotations

import base64
import binascii
import hashlib
import struct

import numpy as np

from utils.bounds import MAX_TRAINING_FINGERPRINTS

FINGERPRINT_SAMPLES = 1024  # per lead, evenly spaced: enough to tell recordings apart, ~0.05 ms a 10-s record
NONE = np.uint64(0)  # the fingerprint of a record that could not be read (no record's fingerprint is 0)
PRINTS = np.dtype("<u8")


def fingerprint(signal: np.ndarray, fs: float) -> np.uint64:
    """The fingerprint of a record's signal (leads × samples, as its reader gives it) at ``fs`` Hz."""
    n = signal.shape[1]
    points = np.linspace(0, n - 1, min(n, FINGERPRINT_SAMPLES)).astype(np.int64) if n else np.zeros(0, np.int64)
    digest = hashlib.sha1(struct.pack("<dqq", float(fs), *signal.shape), usedforsecurity=False)
    digest.update(np.ascontiguousarray(signal[:, points], dtype="<f4").data)
    value = np.frombuffer(digest.digest()[:8], PRINTS)[0]
    return value if value != NONE else np.uint64(1)


def of_item(item) -> np.uint64:
    """The fingerprint of a loaded record (dataloader.records.Record), or NONE for one that failed to load."""
    signal = getattr(item, "signal", None)
    return fingerprint(signal, item.fs) if isinstance(signal, np.ndarray) and signal.ndim == 2 else NONE


def packed(prints: np.ndarray) -> str:
    """Fingerprints as text for a model's metadata: the distinct ones, sorted, 8 bytes each, base64."""
    distinct = np.unique(np.asarray(prints, dtype=PRINTS))
    return base64.b64encode(distinct[distinct != NONE].astype(PRINTS).tobytes()).decode("ascii")


def unpacked(text: object) -> np.ndarray:
    """The sorted fingerprints of :func:`packed`'s text, checked (a model's metadata is untrusted input)."""
    if not isinstance(text, str) or len(text) > 4 * -(-8 * MAX_TRAINING_FINGERPRINTS // 3):
        raise ValueError(f"training_fingerprints must be base64 text of at most {MAX_TRAINING_FINGERPRINTS} "
                         f"fingerprints")
    try:
        raw = base64.b64decode(text.encode("ascii"), validate=True)
    except (binascii.Error, UnicodeEncodeError):
        raise ValueError("training_fingerprints is not base64") from None
    if len(raw) % PRINTS.itemsize:
        raise ValueError(f"training_fingerprints holds {len(raw)} bytes, not a whole number of 8-byte fingerprints")
    prints = np.frombuffer(raw, PRINTS)
    if not (prints[1:] > prints[:-1]).all() or (prints == NONE).any():
        raise ValueError("training_fingerprints must be distinct nonzero fingerprints in ascending order")
    return prints


def seen(prints: np.ndarray, known: np.ndarray) -> np.ndarray:
    """Which of ``prints`` are among the sorted ``known`` ones (a record not read, NONE, never is)."""
    prints = np.asarray(prints, dtype=PRINTS)
    if not len(known):
        return np.zeros(len(prints), bool)
    at = np.searchsorted(known, prints).clip(0, len(known) - 1)
    return (known[at] == prints) & (prints != NONE)
