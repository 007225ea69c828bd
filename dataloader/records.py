"""Readers: every input format becomes the same record type.

A reader is a table of records (``reader.table``: one row per record with ``id`` and whatever metadata the format
carries — ``age``, ``sex`` ('M'/'F'), ``patient_id``, ...) plus ``load(i)`` that returns
``Record(id, signal float32 (12, N) in mV with leads I, II, III, aVR, aVL, aVF, V1–V6, fs, meta)``.
Listing never reads signals, so building splits over 345k HDF5 exams costs only the id columns.
Adding a format means adding a reader class and one line in :func:`dataloader.formats.open_reader`.

Every file is untrusted. Declared sizes are checked before anything is read (the limits are in utils/bounds.py): a
record may hold at most ``MAX_SAMPLES`` samples per lead and must be a regular file (a FIFO or a device is refused,
never read); a WFDB header's sampling rate must be a positive number and its signal files — whatever their names,
and every segment's of a multi-segment record — regular files; an HDF5 file holds at most ``MAX_HDF5_ROWS``
tracings in chunks of at most ``MAX_CHUNK_BYTES``, and the files its external links and virtual datasets reach are
part of the data. Integer samples (.npy, HDF5) need ``--input_scale``. A record that cannot be used raises a
``RecordError`` naming it; ``transient`` marks access failures (permissions, a vanished file, an I/O error),
which are never cached.
"""
from __future__ import annotations

import hashlib
import math
import os
import re
import stat
from pathlib import Path
from typing import NamedTuple, Sequence

import numpy as np
import pandas as pd

from utils.bounds import MAX_SAMPLES
from utils.errors import RecordError
from utils.io import access_error, regular_file

from .labels import (
    read_maic_labels,
)

LEADS = ("I", "II", "III", "aVR", "aVL", "aVF", "V1", "V2", "V3", "V4", "V5", "V6")
_LEAD_KEYS = {name.upper(): i for i, name in enumerate(LEADS)}
VOLT_TO_MV = {"mv": 1.0, "uv": 1e-3, "µv": 1e-3, "μv": 1e-3, "v": 1e3}  # a voltage unit (lower case) → mV
READER_VERSION = 3  # bump when a reader's output for the same file changes: preprocessing caches become stale


class Record(NamedTuple):
    id: str
    signal: np.ndarray
    fs: float
    meta: dict


def check_length(samples: int, where: str) -> None:
    if samples > MAX_SAMPLES:
        raise RecordError(where, f"declares {samples:,} samples per lead, more than the {MAX_SAMPLES:,} this "
                                 f"pipeline reads (about 35 minutes at 500 Hz); crop the record first")


_STANDARD_LABEL = re.compile(r"(I{1,3}|aV[RLF]|V[1-9]R?|V1[0-2]|[XYZ])", re.I)  # a lead label that is safe to name


def safe_label(label) -> str:
    """A lead label as a message may show it: a standard lead name (after 'ECG'/'Lead' prefixes), else a fixed
    placeholder — labels are free text in a file and may carry anything."""
    text = str(label).strip()
    for prefix in ("ecg lead ", "ecg ", "lead "):
        if text.lower().startswith(prefix):
            text = text[len(prefix):].strip()
    return text if _STANDARD_LABEL.fullmatch(text) else "(a non-standard label)"


def standard_leads(signal: np.ndarray, names: Sequence[str], where: str) -> np.ndarray:
    """Reorder (n_leads, N) rows named ``names`` into the standard 12-lead order; a missing lead is an error (its
    message names only standard labels: see ``safe_label``)."""
    index = {}
    repeated = []
    for row, name in enumerate(names):
        key = str(name).strip().upper()
        if key in index:
            repeated.append(str(name).strip())
        elif key in _LEAD_KEYS:
            index[key] = row
    if repeated:
        raise RecordError(where, f"names lead(s) {', '.join(dict.fromkeys(map(safe_label, repeated)))} more than "
                                 f"once (has {', '.join(map(safe_label, names))}); which one is meant is unknown")
    missing = [lead for lead in LEADS if lead.upper() not in index]
    if missing:
        raise RecordError(where, f"lacks lead(s) {', '.join(missing)} (has {', '.join(map(safe_label, names))})")
    return signal[[index[lead.upper()] for lead in LEADS]]


def as_12_leads(array: np.ndarray, where: str) -> np.ndarray:
    """Accept (12, N), (N, 12) or flat (12·N,) lead-major arrays (the MAIC .npy layouts) → float32 (12, N)."""
    array = np.asarray(array)
    if array.dtype.kind not in "fiu":
        raise RecordError(where, f"holds {array.dtype} data, not numbers")
    if array.ndim == 1 and array.size and array.size % 12 == 0:
        array = array.reshape(12, -1)
    elif array.ndim == 2 and array.shape[0] != 12 and array.shape[1] == 12:
        array = array.T
    if array.ndim != 2 or array.shape[0] != 12 or array.shape[1] < 2:
        raise RecordError(where, f"has shape {array.shape}; expected 12 leads × N samples "
                                 f"((12, N), (N, 12) or flat (12·N,))")
    return np.ascontiguousarray(array, dtype=np.float32)


FINGERPRINT_BLOCK = 4096
FULL_CHECK_BYTES = 1 << 30  # --cache_check auto hashes whole files when a source's files total at most this
CACHE_CHECKS = ("auto", "fast", "full")


def fingerprint_files(paths: Sequence[str | os.PathLike], check: str = "auto", where: bool = True) -> str:
    """Identity of a set of files for cache keys. For each file: its resolved name, size, modification time and
    inode, and a SHA-256 of its content — all of it (``check`` 'full'), or its first and last 4 KiB ('fast': two
    same-size files swapped with their times kept are told apart, an edit in the middle that keeps size, inode and
    modification time is not). 'auto' is 'full' when the files total at most ``FULL_CHECK_BYTES``. A file that
    cannot be read contributes its error, so the key differs from any readable state. ``where`` False leaves out
    name, time and inode — the identity of the content alone (the same data copied to another machine, mounted
    again or moved keep it; the order of ``paths`` still counts)."""
    if check not in CACHE_CHECKS:
        raise ValueError(f"cache check must be one of {', '.join(CACHE_CHECKS)}, got {check!r}")
    stats = []
    for path in paths:
        try:
            stats.append((path, os.stat(path), None))
        except OSError as exc:
            stats.append((path, None, exc))
    total = sum(info.st_size for _, info, _ in stats if info is not None and stat.S_ISREG(info.st_mode))
    full = check == "full" or (check == "auto" and total <= FULL_CHECK_BYTES)
    digest = hashlib.sha256(b"full\n" if full else b"fast\n")
    for path, info, error in stats:
        try:
            if error is not None:
                raise error
            place = f"{Path(path).resolve()}|{info.st_mtime_ns}|{info.st_ino}|" if where else ""
            digest.update(f"{place}{info.st_size}\n".encode())
            if stat.S_ISREG(info.st_mode):
                _hash_content(digest, path, info.st_size, full)
        except OSError as exc:
            digest.update(f"{path}|unreadable|{exc.errno}\n".encode())
    return digest.hexdigest()


def _hash_content(digest, path, size: int, full: bool) -> None:
    with open(path, "rb") as handle:
        if full:
            while block := handle.read(1 << 20):
                digest.update(block)
            return
        digest.update(handle.read(FINGERPRINT_BLOCK))
        if size > 2 * FINGERPRINT_BLOCK:
            handle.seek(-FINGERPRINT_BLOCK, os.SEEK_END)
            digest.update(handle.read(FINGERPRINT_BLOCK))


def natural_key(text: str):
    """Sort 'ecg_adult_2' before 'ecg_adult_10'."""
    return [int(part) if part.isdigit() else part for part in re.split(r"(\d+)", str(text))]


class Reader:
    """Base class. Subclasses set ``self.table`` (DataFrame with an ``id`` column) and implement ``_load``;
    ``labelled_root``: where the ages of records that carry none are (a PTB-XL root above its records folder)."""

    format = "records"
    labelled_root: Path | None = None
    table: pd.DataFrame

    def __len__(self) -> int:
        return len(self.table)

    @property
    def ids(self) -> list[str]:
        """The records' ids as text, in order: made once per table (callers index it record by record, which
        must not rebuild it each time); not to be changed in place."""
        made = self.__dict__.get("_ids")
        if made is None or made[0] is not self.table:
            made = (self.table, self.table["id"].astype(str).tolist())
            self.__dict__["_ids"] = made
        return made[1]

    def __getstate__(self):
        """What a worker process gets: the reader without what it can rebuild (the ids)."""
        state = dict(self.__dict__)
        state.pop("_ids", None)
        return state

    def load(self, index: int) -> Record:
        row = self.table.iloc[index]
        return self._load(index, row)

    def load_block(self, start: int, stop: int) -> list[Record]:
        """Records ``start..stop-1``; formats that store records contiguously read them in one go."""
        return [self.load(i) for i in range(start, stop)]

    def settings(self) -> dict:
        """Everything besides the files that changes what ``load`` returns (rates, scales, dataset names)."""
        return {}

    def files(self) -> list[str]:
        """Every file the records and labels are read from — a header's signal files whatever their names, every
        segment of a multi-segment record, HDF5 link targets: their content identifies the data, and no output may
        replace one."""
        raise NotImplementedError

    def fingerprint(self, check: str = "auto", where: bool = True) -> str:
        """Identity of the files (see :func:`fingerprint_files`): changes when the data change."""
        return fingerprint_files(self.files(), check, where)

    @property
    def location(self) -> str:
        """Where the records come from (stays the same when their content changes)."""
        raise NotImplementedError

    def subset(self, positions: Sequence[int]) -> "Reader":
        """A reader over some rows of this one (same files)."""
        clone = object.__new__(type(self))
        clone.__dict__.update(self.__dict__)
        clone.table = self.table.iloc[list(positions)].reset_index(drop=True)
        return clone

    def part(self, start: int, stop: int) -> "Reader":
        """Records start..stop-1 as a reader of their own: what one chunk's worker process is sent (the whole
        reader would carry every record's row to every chunk, quadratic in the records)."""
        return self.subset(range(start, stop))

    def _meta(self, row: pd.Series) -> dict:
        return {k: (None if isinstance(v, float) and np.isnan(v) else v) for k, v in row.items() if k != "id"}

    def _load(self, index: int, row: pd.Series) -> Record:
        raise NotImplementedError


# --------------------------------------------------------------------------------------------------------------
# MAIC .npy folders
# --------------------------------------------------------------------------------------------------------------
class NpyFolderReader(Reader):
    """A folder of one-ECG ``.npy`` files (MAIC layout), or one such file, optionally joined with a MAIC label
    CSV."""

    format = "npy"

    def __init__(self, folder: str | os.PathLike, labels: str | os.PathLike | None = None, fs: float = 500.0,
                 scale: float = 1.0):
        self.folder = Path(folder)
        one = self.folder.suffix == ".npy" and self.folder.is_file()
        if one:
            self.folder = self.folder.parent
        elif not self.folder.is_dir():
            raise RecordError(str(self.folder), "is not a folder or an .npy file")
        self.fs, self.scale = float(fs), float(scale)
        names = [Path(folder).name] if one else \
            sorted((p.name for p in self.folder.iterdir() if p.suffix == ".npy"), key=natural_key)
        table = pd.DataFrame({"id": [n[:-4] for n in names], "path": [str(self.folder / n) for n in names]})
        self.orphan_labels: list[str] = []
        if labels is not None:
            label_table = read_maic_labels(labels)
            self.orphan_labels = sorted(set(label_table["id"]) - set(table["id"]), key=natural_key)
            table = table.merge(label_table, on="id", how="left")
        self.table = table
        self.labels = labels

    def settings(self) -> dict:
        return {"fs": self.fs, "scale": self.scale}

    def files(self) -> list[str]:
        return list(self.table["path"]) + ([str(self.labels)] if self.labels is not None else [])

    @property
    def location(self) -> str:
        # subsets of one folder (a template's adult rows, say) are different sources
        return f"npy:{self.folder.resolve()}:{hashlib.sha256(' '.join(self.ids).encode()).hexdigest()}"

    def _load(self, index: int, row: pd.Series) -> Record:
        return Record(row["id"], load_npy(row["path"], self.scale), self.fs, self._meta(row))


def integer_samples(dtype: np.dtype, where: str, scale: float) -> None:
    """Integer samples are ADC units (µV, or a gain's), never millivolts: they need ``--input_scale``."""
    if np.dtype(dtype).kind in "iu" and scale == 1.0:
        raise RecordError(where, f"holds integer ({np.dtype(dtype)}) samples, which are not millivolts; give "
                                 f"--input_scale (mV per unit, e.g. 0.001 for µV)")


def load_npy(path: str | os.PathLike, scale: float = 1.0) -> np.ndarray:
    """One ECG from an .npy file in mV after multiplying by ``scale`` (never pickled objects; integer samples need a
    scale); the header's declared size and type are checked before reading."""
    regular_file(path)
    try:
        with open(path, "rb") as handle:
            version = np.lib.format.read_magic(handle)
            read_header = np.lib.format.read_array_header_1_0 if version == (1, 0) else \
                np.lib.format.read_array_header_2_0
            shape, _, dtype = read_header(handle, max_header_size=10000)
            check_length(math.prod(shape) // 12, str(path))
            integer_samples(dtype, str(path), scale)
            handle.seek(0)
            array = np.load(handle, allow_pickle=False)
    except RecordError:
        raise
    except (OSError, ValueError, EOFError, TypeError) as exc:
        raise access_error(str(path), exc, "is not a readable .npy file") from exc
    signal = as_12_leads(array, str(path))
    return signal * np.float32(scale) if scale != 1.0 else signal


# --------------------------------------------------------------------------------------------------------------
# CODE-15% HDF5
# --------------------------------------------------------------------------------------------------------------


# --------------------------------------------------------------------------------------------------------------
# WFDB: a folder of .hea records (CinC .hea/.mat included) or a PTB-XL root / database CSV
# --------------------------------------------------------------------------------------------------------------


# --------------------------------------------------------------------------------------------------------------
# Manifest CSV: path, age (optional id, fs, sex, patient_id); also reads this project's MAIC dataset CSVs
# --------------------------------------------------------------------------------------------------------------
