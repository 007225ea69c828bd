"""A record's fingerprint: 8 bytes that name its content as its reader gives it (the 12 leads in mV at the record's
own rate, before any resampling or filtering), so that the same recording read from the same kind of file has the
same fingerprint on every machine (decoding is exact arithmetic; resampling and filtering are not, across CPUs).

A model's file carries the fingerprints of the records it was trained on (engine/deploy/job.py); a prediction marks
the records whose fingerprint is among them, and the report leaves those out of its accuracy figures — accuracy on
a model's own training records is not a test. A fingerprint reads ``FINGERPRINT_SAMPLES`` samples of each lead,
spread evenly over the whole recording (so a flat start shared by many recordings does not make them one), its rate
and its length: two different recordings that agree on all of that are not met in practice.

Beside the exact hash, each print holds a **sketch**: ``SKETCH_BITS`` signs of random projections of the record's
spectrum between ``SKETCH_BAND`` Hz (four leads, each bin at its frequency in Hz, so the same recording at another
sampling rate, in other units or re-quantized by another file format has nearly the same sketch). Two sketches
within ``NEAR_BITS`` of each other are the same recording: on the shared PTB-XL records, each 500-Hz record and its
100-Hz copy (``records100/``, a different decimation) differ by at most 41 of 256 bits, two different recordings by
at least 85 (a random pair by about 128; bench/fingerprint.py). A sketch is not exact across CPUs (a float sum near
zero may flip a sign), which the tolerance absorbs; it does not follow a crop or a shift of the recording.
No torch here.
"""
from __future__ import annotations

import base64
import binascii
import functools
import hashlib
import struct

import numpy as np

from utils.bounds import MAX_NEAR_PAIRS, MAX_TRAINING_FINGERPRINTS, MAX_TRAINING_SKETCHES, NEAR_KNOWN_ALWAYS

FINGERPRINT_SAMPLES = 1024  # per lead, evenly spaced: enough to tell recordings apart, ~0.05 ms a 10-s record
SKETCH_BITS = 256  # random projections per sketch (32 bytes)
SKETCH_WORDS = SKETCH_BITS // 64
SKETCH_BAND = (5.0, 35.0)  # Hz: the QRS band, below every rate's Nyquist frequency from 100 Hz (records100/) up
SKETCH_SECONDS = 10.0  # the span sketched, from the start: a longer record's first 10 s
SKETCH_STEP = 0.1  # seconds: the span is rounded to it
SKETCH_MIN_SECONDS = 2.0  # a shorter recording has no sketch (too few frequencies to tell recordings apart)
SKETCH_LEADS = (1, 7, 9, 11)  # II, V2, V4, V6 (of the 12 in the standard order): the other leads add little
SKETCH_SEED = 20261207  # the mixing's generator seed: part of the sketch's definition, never to change
NEAR_BITS = 60  # sketches at most this many bits apart are the same recording (copies ≤ 41, others ≥ 85 measured)
PRINTS = np.dtype([("exact", "<u8"), ("sketch", "<u8", (SKETCH_WORDS,))])  # a record's print: hash and sketch
EXACT = np.dtype("<u8")
NONE = np.zeros((), PRINTS)[()]  # the print of a record that could not be read (no record's hash or sketch is 0)


def fingerprint(signal: np.ndarray, fs: float) -> np.uint64:
    """The fingerprint of a record's signal (leads × samples, as its reader gives it) at ``fs`` Hz."""
    n = signal.shape[1]
    points = np.linspace(0, n - 1, min(n, FINGERPRINT_SAMPLES)).astype(np.int64) if n else np.zeros(0, np.int64)
    digest = hashlib.sha1(struct.pack("<dqq", float(fs), *signal.shape), usedforsecurity=False)
    digest.update(np.ascontiguousarray(signal[:, points], dtype="<f4").data)
    value = np.frombuffer(digest.digest()[:8], EXACT)[0]
    return value if value != 0 else np.uint64(1)


@functools.lru_cache(maxsize=8)
def _mixing(width: int) -> tuple[np.ndarray, np.ndarray]:
    """The sketch's fixed random mixing of a spectrum of ``width`` numbers (from SKETCH_SEED; numpy's generator gives
    the same numbers on every machine): a sign per number, and which SKETCH_BITS / 2 outputs of the mixing FFT
    are kept."""
    rng = np.random.default_rng(SKETCH_SEED)
    signs = (rng.integers(0, 2, width) * 2 - 1).astype(np.float32)
    return signs, rng.choice(width // 2 - 1, SKETCH_BITS // 2, replace=False) + 1


def sketch(signal: np.ndarray, fs: float) -> np.ndarray:
    """The sketch of a record's signal (leads × samples) at ``fs`` Hz, of its first SKETCH_SECONDS: SKETCH_WORDS
    words; zeros where the recording is too short or flat to have one (such a record is compared by its exact hash
    only). Its bits are the signs of random projections of the band's spectrum, made fast and free of BLAS threads
    (which, spinning in reader processes, slowed a whole prediction by half) as a subsampled randomized Fourier
    transform: each number's sign flipped at random, an FFT mixes them all, SKETCH_BITS / 2 outputs chosen at
    random give the signs of their real and imaginary parts."""
    # the span on a grid of SKETCH_STEP seconds (a copy a sample longer or shorter has the same frequencies)
    seconds = round(min(signal.shape[1] / float(fs), SKETCH_SECONDS) / SKETCH_STEP) * SKETCH_STEP
    n = int(round(seconds * float(fs)))
    low, high = int(np.ceil(SKETCH_BAND[0] * seconds)), int(np.floor(SKETCH_BAND[1] * seconds))
    if signal.shape[0] <= max(SKETCH_LEADS) or seconds < SKETCH_MIN_SECONDS or high > n // 2:
        return np.zeros(SKETCH_WORDS, EXACT)
    leads = np.asarray(signal[list(SKETCH_LEADS), :n], np.float32)
    band = np.fft.rfft(leads, n=n, axis=1)[:, low:high + 1]  # zeros after a record a little short of the span
    spectrum = np.concatenate([band.real.ravel(), band.imag.ravel()]).astype(np.float32)
    if not np.isfinite(spectrum).all() or not spectrum.any():
        return np.zeros(SKETCH_WORDS, EXACT)
    signs, kept = _mixing(spectrum.size)
    mixed = np.fft.rfft(spectrum * signs)[kept]
    words = np.packbits(np.concatenate([mixed.real > 0, mixed.imag > 0])).view(">u8").astype(EXACT)
    return words if words.any() else np.ones(SKETCH_WORDS, EXACT)


def of_item(item) -> np.void:
    """The print (hash and sketch) of a loaded record (dataloader.records.Record), or NONE for one that failed to
    load."""
    signal = getattr(item, "signal", None)
    if not (isinstance(signal, np.ndarray) and signal.ndim == 2):
        return NONE
    found = np.zeros((), PRINTS)
    found["exact"], found["sketch"] = fingerprint(signal, item.fs), sketch(signal, item.fs)
    return found[()]


def distinct(prints: np.ndarray) -> np.ndarray:
    """The prints of distinct recordings (one per hash, sorted by it; those not read left out)."""
    prints = np.asarray(prints, PRINTS)
    _, first = np.unique(prints["exact"], return_index=True)
    chosen = prints[first]
    return chosen[chosen["exact"] != 0]


def packed(prints: np.ndarray) -> tuple[str, str | None]:
    """Prints as text for a model's metadata: (the distinct hashes, sorted, 8 bytes each, base64; their sketches in
    the same order, 32 bytes each, base64 — None beyond MAX_TRAINING_SKETCHES)."""
    chosen = distinct(prints)
    hashes = base64.b64encode(chosen["exact"].astype(EXACT).tobytes()).decode("ascii")
    if len(chosen) > MAX_TRAINING_SKETCHES:
        return hashes, None
    return hashes, base64.b64encode(chosen["sketch"].astype(EXACT).tobytes()).decode("ascii")


def _decoded(text: object, field: str, bound: int, size: int) -> np.ndarray:
    if not isinstance(text, str) or len(text) > 4 * -(-size * bound // 3):
        raise ValueError(f"{field} must be base64 text of at most {bound} fingerprints")
    try:
        raw = base64.b64decode(text.encode("ascii"), validate=True)
    except (binascii.Error, UnicodeEncodeError):
        raise ValueError(f"{field} is not base64") from None
    if len(raw) % size:
        raise ValueError(f"{field} holds {len(raw)} bytes, not a whole number of {size}-byte fingerprints")
    return np.frombuffer(raw, EXACT)


def unpacked(text: object, sketches: object = None) -> np.ndarray:
    """The prints of :func:`packed`'s texts, sorted by hash, checked (a model's metadata is untrusted input); a
    file without sketches (older, or too many records) gives zero sketches: its records are matched exactly."""
    hashes = _decoded(text, "training_fingerprints", MAX_TRAINING_FINGERPRINTS, EXACT.itemsize)
    if not (hashes[1:] > hashes[:-1]).all() or (hashes == 0).any():
        raise ValueError("training_fingerprints must be distinct nonzero fingerprints in ascending order")
    prints = np.zeros(len(hashes), PRINTS)
    prints["exact"] = hashes
    if sketches is not None:
        words = _decoded(sketches, "training_sketches", MAX_TRAINING_SKETCHES, SKETCH_BITS // 8)
        if len(words) != SKETCH_WORDS * len(hashes):
            raise ValueError(f"training_sketches holds {len(words) // SKETCH_WORDS} sketches for {len(hashes)} "
                             f"training_fingerprints")
        prints["sketch"] = words.reshape(-1, SKETCH_WORDS)
    return prints


def comparable(asked: int, known: int) -> bool:
    """Whether ``asked`` sketches are compared with ``known`` ones: always where the model names at most
    NEAR_KNOWN_ALWAYS (a bounded cost per predicted record), else up to MAX_NEAR_PAIRS pairs."""
    return known <= NEAR_KNOWN_ALWAYS or asked * known <= MAX_NEAR_PAIRS


def _within(sketches: np.ndarray, known: np.ndarray):
    """(start, within): for blocks of ``sketches`` (about a million pairs, 32 MB of words, at a time) from row
    ``start``, which of ``known`` each is within NEAR_BITS of (block rows × len(known), bool)."""
    block = max(1, (1 << 20) // max(1, len(known)))
    for start in range(0, len(sketches), block):
        apart = np.bitwise_count(sketches[start:start + block, None, :] ^ known[None, :, :]).sum(axis=2,
                                                                                                  dtype=np.int32)
        yield start, apart <= NEAR_BITS


def near(sketches: np.ndarray, known: np.ndarray) -> np.ndarray:
    """Which of ``sketches`` (N × SKETCH_WORDS) are within NEAR_BITS of one of ``known`` (zeros: no sketch, never
    near); False for all where they are not :func:`comparable`."""
    found = np.zeros(len(sketches), bool)
    have, known = sketches.any(axis=1), known[known.any(axis=1)]
    if not len(known) or not have.any() or not comparable(int(have.sum()), len(known)):
        return found
    rows = np.flatnonzero(have)
    for start, within in _within(sketches[rows], known):
        found[rows[start:start + len(within)]] = within.any(axis=1)
    return found


def near_checked(prints: np.ndarray, known: np.ndarray) -> bool:
    """Whether :func:`seen` compared the sketches too (the model has them, and they are :func:`comparable`)."""
    have = int(np.asarray(prints, PRINTS)["sketch"].any(axis=1).sum())
    return bool(known["sketch"].any()) and comparable(have, int(known["sketch"].any(axis=1).sum()))


def recordings(prints: np.ndarray) -> tuple[np.ndarray, bool]:
    """(each print's recording: the first position holding the same recording — the same hash, or a sketch within
    NEAR_BITS, and so on transitively; -1 for a record not read —, whether sketches were compared: they are where
    the prints are :func:`comparable` with themselves, else the hashes alone group them)."""
    prints = np.asarray(prints, PRINTS)
    parent = np.arange(len(prints))

    def find(i: int) -> int:
        while parent[i] != i:
            parent[i] = parent[parent[i]]
            i = parent[i]
        return i

    def join(i: int, j: int) -> None:
        a, b = find(i), find(j)
        parent[max(a, b)] = min(a, b)

    read = np.flatnonzero(prints["exact"] != 0)
    by_hash = read[np.argsort(prints["exact"][read], kind="stable")]
    for i, j in zip(by_hash[:-1], by_hash[1:]):
        if prints["exact"][i] == prints["exact"][j]:
            join(int(i), int(j))
    have = read[prints["sketch"][read].any(axis=1)]
    checked = comparable(len(have), len(have))
    if checked:
        for start, within in _within(prints["sketch"][have], prints["sketch"][have]):
            for r, c in zip(*np.nonzero(within)):
                if start + r < c:
                    join(int(have[start + r]), int(have[c]))
    labels = np.array([find(i) for i in range(len(prints))], np.int64)
    labels[prints["exact"] == 0] = -1
    return labels, checked


def seen(prints: np.ndarray, known: np.ndarray) -> np.ndarray:
    """Which of ``prints`` are among the ``known`` ones (sorted by hash): the same hash, or a sketch within
    NEAR_BITS of a known one (a record not read, NONE, never is)."""
    prints = np.asarray(prints, PRINTS)
    if not len(known):
        return np.zeros(len(prints), bool)
    hashes = prints["exact"]
    at = np.searchsorted(known["exact"], hashes).clip(0, len(known) - 1)
    return ((known["exact"][at] == hashes) | near(prints["sketch"], known["sketch"])) & (hashes != 0)
