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

import h5py
import numpy as np
import pandas as pd
import wfdb

from utils.bounds import MAX_CHUNK_BYTES, MAX_HDF5_ROWS, MAX_HEADER_BYTES, MAX_SAMPLES
from utils.errors import RecordError
from utils.io import access_error, read_csv, regular_file

from .labels import (
    clean_id,
    normalise_sex,
    parse_header_comments,
    ptbxl_labels,
    read_code_exams,
    read_maic_labels,
    read_ptbxl_database,
)

LEADS = ("I", "II", "III", "aVR", "aVL", "aVF", "V1", "V2", "V3", "V4", "V5", "V6")
_LEAD_KEYS = {name.upper(): i for i, name in enumerate(LEADS)}
VOLT_TO_MV = {"mv": 1.0, "uv": 1e-3, "µv": 1e-3, "μv": 1e-3, "v": 1e3}  # a voltage unit (lower case) → mV
_UNIT_TO_MV = {**VOLT_TO_MV, "nu": 1.0, "": 1.0}  # WFDB: a signal without a unit is in mV
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
    """Base class. Subclasses set ``self.table`` (DataFrame with an ``id`` column) and implement ``_load``."""

    format = "records"
    table: pd.DataFrame

    def __len__(self) -> int:
        return len(self.table)

    @property
    def ids(self) -> list[str]:
        return self.table["id"].astype(str).tolist()

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

    def _meta(self, row: pd.Series) -> dict:
        return {k: (None if isinstance(v, float) and np.isnan(v) else v) for k, v in row.items() if k != "id"}

    def _load(self, index: int, row: pd.Series) -> Record:
        raise NotImplementedError


# --------------------------------------------------------------------------------------------------------------
# MAIC .npy folders
# --------------------------------------------------------------------------------------------------------------
class NpyFolderReader(Reader):
    """A folder of one-ECG ``.npy`` files (MAIC layout), optionally joined with a MAIC label CSV."""

    format = "npy"

    def __init__(self, folder: str | os.PathLike, labels: str | os.PathLike | None = None, fs: float = 500.0,
                 scale: float = 1.0):
        self.folder = Path(folder)
        if not self.folder.is_dir():
            raise RecordError(str(self.folder), "is not a folder")
        self.fs, self.scale = float(fs), float(scale)
        names = sorted((p.name for p in self.folder.iterdir() if p.suffix == ".npy"), key=natural_key)
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
class HDF5Reader(Reader):
    """CODE-15% layout: ``tracings`` (N, samples, 12) float32 in mV at 400 Hz and ``exam_id`` per file.

    Several ``exams_part*.hdf5`` files are read lazily (one open handle per process, rows sliced on demand);
    ``exams.csv`` (exam_id, age, is_male, patient_id, death, timey, trace_file) supplies labels when given.
    """

    format = "hdf5"

    def __init__(self, files: Sequence[str | os.PathLike], labels: str | os.PathLike | None = None,
                 fs: float = 400.0, traces_dset: str = "tracings", ids_dset: str = "exam_id", scale: float = 1.0):
        self.hdf5_files = [str(f) for f in files]
        self.fs, self.scale, self.traces_dset, self.ids_dset = float(fs), float(scale), traces_dset, ids_dset
        self._handles: dict[str, object] = {}
        self._pid = os.getpid()
        self.linked_files: list[str] = []  # files the datasets reach through external links and virtual datasets
        parts = [self._index(file_index, path) for file_index, path in enumerate(self.hdf5_files)]
        table = pd.concat(parts, ignore_index=True) if parts else pd.DataFrame(columns=["id", "file_index", "row"])
        if labels is not None:
            table = table.merge(read_code_exams(labels), on="id", how="left")
        self.table = table
        self.labels = labels

    def _index(self, file_index: int, path: str) -> pd.DataFrame:
        """One file's ids and rows; its layout (datasets, shapes, sizes, dtype) is checked, nothing else read."""
        regular_file(path)
        try:
            with h5py.File(path, "r") as handle:
                traces = self._traces(handle, path)
                ids = self._ids(handle, path, traces.shape[0])
        except OSError as exc:
            raise access_error(path, exc, "is not a readable HDF5 file") from exc
        return pd.DataFrame({"id": ids, "file_index": file_index, "row": np.arange(len(ids))})

    def _traces(self, handle, path: str):
        traces = handle.get(self.traces_dset)
        if not isinstance(traces, h5py.Dataset):
            raise RecordError(path, f"has no '{self.traces_dset}' dataset (has {', '.join(handle.keys())}); a "
                                    f"CODE-15% file holds 'tracings' (N, 4096, 12) and 'exam_id'")
        if traces.ndim != 3 or 12 not in (traces.shape[1], traces.shape[2]):
            raise RecordError(path, f"'{self.traces_dset}' has shape {traces.shape}; expected (N, samples, 12)")
        check_length(max(traces.shape[1:]), path)
        if traces.shape[0] > MAX_HDF5_ROWS:
            raise RecordError(path, f"'{self.traces_dset}' declares {traces.shape[0]:,} tracings, more than the "
                                    f"{MAX_HDF5_ROWS:,} one file may hold here; split it into parts")
        if traces.dtype.kind not in "fiu":
            raise RecordError(path, f"'{self.traces_dset}' holds {traces.dtype} data, not numbers")
        integer_samples(traces.dtype, f"{path} ('{self.traces_dset}')", self.scale)
        self._storage(traces, path)
        return traces

    def _storage(self, dataset, path: str, depth: int = 0) -> None:
        """Bounded reads of ``dataset`` whatever file holds it: chunks of at most MAX_CHUNK_BYTES (a chunk is
        decompressed whole), no raw external storage, and every file it reaches through an external link or a
        virtual dataset's sources recorded (they identify the data and may not be overwritten)."""
        where = f"{path} ('{dataset.name}')"
        if dataset.chunks is not None and math.prod(dataset.chunks) * dataset.dtype.itemsize > MAX_CHUNK_BYTES:
            raise RecordError(where, f"is stored in chunks of {math.prod(dataset.chunks) * dataset.dtype.itemsize:,} "
                                     f"bytes, more than the {MAX_CHUNK_BYTES:,} read here (each chunk is decompressed "
                                     f"whole); re-chunk it, e.g. one tracing per chunk")
        if dataset.external:
            raise RecordError(where, "keeps its samples in raw external files, which are not read; copy them into "
                                     "the HDF5 file")
        holder = str(Path(dataset.file.filename))
        if os.path.realpath(holder) != os.path.realpath(path):  # reached through an external link
            self.linked_files.append(str(regular_file(holder, f"{where} (external link target)")))
        if dataset.is_virtual:
            if depth:
                raise RecordError(where, "is a virtual dataset whose sources are virtual too; not read")
            for source in dataset.virtual_sources():
                self._virtual_source(source, holder, where, depth)

    def _virtual_source(self, source, holder: str, where: str, depth: int) -> None:
        name = source.file_name
        candidates = [holder] if name == "." else [name, str(Path(holder).parent / name)]
        found = next((c for c in candidates if os.path.exists(c)), None)
        if found is None:
            raise RecordError(where, f"is a virtual dataset whose source file {name} is missing")
        if name != ".":
            self.linked_files.append(str(regular_file(found, f"{where} (virtual dataset source {name})")))
        with h5py.File(found, "r") as handle:
            target = handle.get(source.dset_name)
            if not isinstance(target, h5py.Dataset):
                raise RecordError(where, f"is a virtual dataset whose source {name}:{source.dset_name} is missing")
            self._storage(target, found, depth + 1)

    def _ids(self, handle, path: str, n: int) -> list[str]:
        if not self.ids_dset or self.ids_dset not in handle:
            return [str(i) for i in range(n)]
        ids = handle[self.ids_dset]
        if not isinstance(ids, h5py.Dataset) or ids.ndim != 1 or len(ids) != n:
            shape = getattr(ids, "shape", "a group")
            raise RecordError(path, f"'{self.ids_dset}' is {shape}; expected one id per tracing ({n},)")
        self._storage(ids, path)
        values = ids[:]
        if values.dtype.kind in "iu":
            return [str(int(i)) for i in values]
        return [clean_id(i.decode(errors="replace") if isinstance(i, bytes) else i) for i in values]

    def settings(self) -> dict:
        return {"fs": self.fs, "scale": self.scale, "traces": self.traces_dset, "ids": self.ids_dset}

    def files(self) -> list[str]:
        return [*self.hdf5_files, *dict.fromkeys(self.linked_files),
                *([str(self.labels)] if self.labels is not None else [])]

    def __getstate__(self):
        state = dict(self.__dict__)
        state["_handles"] = {}
        return state

    def _dataset(self, file_index: int):
        if self._pid != os.getpid():  # a forked worker must not share the parent's HDF5 handle
            self._handles, self._pid = {}, os.getpid()
        path = self.hdf5_files[file_index]
        if path not in self._handles:
            self._handles[path] = h5py.File(path, "r")
        return self._handles[path][self.traces_dset]

    @property
    def location(self) -> str:
        return f"hdf5:{[str(Path(f).resolve()) for f in self.hdf5_files]}:{self.traces_dset}"

    def _to_record(self, row: pd.Series, trace: np.ndarray) -> Record:
        trace = np.asarray(trace)
        signal = trace.T if trace.shape[-1] == 12 else trace
        where = f"{self.hdf5_files[int(row['file_index'])]}[{int(row['row'])}] (exam_id {row['id']})"
        signal = as_12_leads(signal, where)
        if self.scale != 1.0:
            signal = signal * np.float32(self.scale)
        return Record(row["id"], signal, self.fs, self._meta(row))

    def _read(self, file_index: int, first: int, last: int) -> np.ndarray:
        try:
            return self._dataset(file_index)[first:last + 1]
        except (OSError, KeyError, ValueError, RuntimeError, TypeError) as exc:  # truncated or corrupt file
            raise access_error(f"{self.hdf5_files[file_index]}[{first}:{last + 1}]", exc, "cannot be read") from exc

    def _load(self, index: int, row: pd.Series) -> Record:
        return self._to_record(row, self._read(int(row["file_index"]), int(row["row"]), int(row["row"]))[0])

    def load_block(self, start: int, stop: int) -> list[Record]:
        rows = self.table.iloc[start:stop]
        out: list[Record] = []
        # consecutive table rows from the same file and consecutive HDF5 rows are read with one slice
        groups = (rows["file_index"].diff().fillna(0) != 0) | (rows["row"].diff().fillna(1) != 1)
        for _, group in rows.groupby(groups.cumsum()):
            first, last = int(group["row"].iloc[0]), int(group["row"].iloc[-1])
            block = self._read(int(group["file_index"].iloc[0]), first, last)
            out.extend(self._to_record(row, trace) for (_, row), trace in zip(group.iterrows(), block))
        return out


# --------------------------------------------------------------------------------------------------------------
# WFDB: a folder of .hea records (CinC .hea/.mat included) or a PTB-XL root / database CSV
# --------------------------------------------------------------------------------------------------------------
class WFDBHeader(NamedTuple):
    comments: list[str]
    files: list[str]  # the header, every signal file it names and, for a multi-segment record, each segment's files
    segments: list[str]  # record paths (without .hea) of a multi-segment record's segments (they are not records)


def check_wfdb_header(base: str, where: str, depth: int = 0) -> WFDBHeader:
    """Validate a WFDB header before wfdb reads it: a regular text file of sane size, a positive sampling rate,
    at most MAX_SAMPLES samples, and signal files (whatever their names) that are regular files of sane size; a
    multi-segment record's segments are checked the same way (segments cannot have segments)."""
    header = regular_file(base + ".hea", where, max_bytes=MAX_HEADER_BYTES)
    try:
        text = header.read_text(errors="replace")
    except OSError as exc:
        raise access_error(where, exc, "cannot be read") from exc
    lines = [line.strip() for line in text.splitlines()]
    fields = [line.split() for line in lines if line and not line.startswith("#")]
    if not fields or len(fields[0]) < 2:
        raise RecordError(where, "is not a WFDB header (no record line)")
    record = fields[0]
    _check_record_line(record, where)
    files, segments = [str(header)], []
    folder = Path(base).parent
    if "/" in record[0]:  # a multi-segment record: its lines name segment records, not signal files
        if depth:
            raise RecordError(where, "is a segment that has segments of its own; not read")
        names = list(dict.fromkeys(line[0] for line in fields[1:] if line[0] != "~"))
        segments = [str(folder / name) for name in names]
        for name, segment in zip(names, segments):
            try:
                files.extend(check_wfdb_header(segment, f"{where} (segment {name})", depth + 1).files)
            except RecordError as exc:
                exc.segments = segments  # a bad segment still belongs to this record, never a record of its own
                raise
    else:
        for name in dict.fromkeys(line[0] for line in fields[1:] if line[0] != "~"):
            data = regular_file(folder / name, f"{where} (signal file {name})", max_bytes=8 * 12 * MAX_SAMPLES)
            files.append(str(data))
    comments = [line.lstrip("#").strip() for line in lines if line.startswith("#")]
    return WFDBHeader(comments, files, segments)


def _check_record_line(record: list[str], where: str) -> None:
    if len(record) > 2:
        fs_text = re.split(r"[/(]", record[2])[0]
        try:
            fs = float(fs_text)
        except ValueError:
            fs = float("nan")
        if not fs > 0 or not np.isfinite(fs):
            raise RecordError(where, f"has an invalid sampling rate {record[2]!r} in its header")
    if len(record) > 3 and record[3].isdigit():
        check_length(int(record[3]), where)


def read_wfdb(record_path: str, where: str | None = None) -> tuple[np.ndarray, float]:
    """One WFDB record → (float32 (12, N) in mV in standard lead order, fs); its header's labels are read when
    the folder is listed (check_wfdb_header)."""
    where = where or record_path
    check_wfdb_header(record_path, where)
    try:
        record = wfdb.rdrecord(record_path)
    except Exception as exc:  # wfdb raises many kinds (ValueError, FileNotFoundError, IndexError) on bad files
        raise access_error(where, exc, "is not a readable WFDB record") from exc
    if record.p_signal is None or record.fs is None:
        raise RecordError(where, "has no physical signal or sampling frequency in its header")
    signal = np.asarray(record.p_signal, dtype=np.float64).T
    scales = np.array([_UNIT_TO_MV.get(str(unit).strip().lower(), np.nan) for unit in record.units])
    if np.isnan(scales).any():
        bad = [u for u, s in zip(record.units, scales) if np.isnan(s)]
        raise RecordError(where, f"has signal units {bad} that are not voltages (mV, uV, V)")
    signal = standard_leads(signal * scales[:, None], record.sig_name, where)
    return signal.astype(np.float32), float(record.fs)


def wfdb_files(bases) -> list[str]:
    """Every file the WFDB records ``bases`` read: the header and the signal files it names (and a multi-segment
    record's segments). A header that cannot be checked contributes the files named like the record, so that its
    error and those files still identify the data."""
    files = []
    for base in bases:
        try:
            files.extend(check_wfdb_header(base, base + ".hea").files)
        except RecordError:
            files.extend(str(p) for p in sorted(Path(base).parent.glob(Path(base).name + ".*")))
    return files


class WFDBFolderReader(Reader):
    """Every ``.hea`` record under a folder (recursively); CinC ``# Age:``/``# Sex:`` comments become labels.
    A header that cannot be read makes its record bad (the bad-input policy decides), not the whole folder. The
    segments of a multi-segment record are part of that record, not records of their own."""

    format = "wfdb"

    def __init__(self, folder: str | os.PathLike):
        self.folder = Path(folder)
        headers = sorted(self.folder.rglob("*.hea"), key=lambda p: natural_key(str(p)))
        rows, segments = [], set()
        for header in headers:
            base = str(header.with_suffix(""))
            row = {"id": str(header.relative_to(self.folder).with_suffix("")), "path": base, "header_error": None}
            try:
                checked = check_wfdb_header(base, str(header))
                row.update(parse_header_comments(checked.comments), files=checked.files)
                segments.update(os.path.normpath(segment) for segment in checked.segments)
            except RecordError as exc:
                row.update(header_error=str(exc).removeprefix(f"{header}: "), files=wfdb_files([base]))
                segments.update(os.path.normpath(segment) for segment in getattr(exc, "segments", []))
            rows.append(row)
        rows = [row for row in rows if os.path.normpath(row["path"]) not in segments]
        self.table = pd.DataFrame(rows, columns=["id", "path", "age", "age_raw", "sex", "header_error",
                                                 "files"])
        self.fs = None

    @property
    def location(self) -> str:
        return f"wfdb:{self.folder.resolve()}"

    def files(self) -> list[str]:
        return [file for files in self.table["files"] for file in files]

    def _meta(self, row: pd.Series) -> dict:
        return {k: v for k, v in super()._meta(row).items() if k not in ("files", "age_raw")}

    def _load(self, index: int, row: pd.Series) -> Record:
        if row["header_error"]:
            raise RecordError(row["path"] + ".hea", row["header_error"])
        signal, fs = read_wfdb(row["path"], where=row["path"] + ".hea")
        return Record(row["id"], signal, fs, self._meta(row))


class PTBXLReader(Reader):
    """A PTB-XL root (or its ``ptbxl_database.csv``): ids are ``ecg_id``; 500 Hz (``filename_hr``) or 100 Hz."""

    format = "ptbxl"

    def __init__(self, path: str | os.PathLike, rate: int = 500):
        path = Path(path)
        self.database = path / "ptbxl_database.csv" if path.is_dir() else path
        self.root = self.database.parent
        if rate not in (100, 500):
            raise RecordError(str(path), f"PTB-XL comes at 100 or 500 Hz, not {rate}")
        column = "filename_hr" if rate == 500 else "filename_lr"
        frame = read_ptbxl_database(self.database)
        if column not in frame.columns:
            raise RecordError(str(self.database), f"lacks PTB-XL column {column}")
        self.table = ptbxl_labels(frame)
        self.table.insert(1, "path", [str(self.root / f) for f in frame[column].fillna("")])
        self.rate, self.fs = rate, float(rate)

    @property
    def location(self) -> str:
        return f"ptbxl:{self.database.resolve()}:{self.rate}"

    def settings(self) -> dict:
        return {"rate": self.rate}

    def files(self) -> list[str]:
        return [str(self.database), *wfdb_files(self.table["path"])]

    def _load(self, index: int, row: pd.Series) -> Record:
        signal, fs = read_wfdb(row["path"], where=f"PTB-XL ecg_id {row['id']} ({row['path']}.hea)")
        return Record(row["id"], signal, fs, self._meta(row))


# --------------------------------------------------------------------------------------------------------------
# Manifest CSV: path, age (optional id, fs, sex, patient_id); also reads this project's MAIC dataset CSVs
# --------------------------------------------------------------------------------------------------------------
_MANIFEST_ALIASES = {"npy_path": "path", "Filename": "id", "Age": "age", "Gender": "sex"}


class ManifestReader(Reader):
    """A CSV listing record files: ``path`` (an .npy file or a WFDB record) and optionally id, age, sex, fs, ..."""

    format = "manifest"

    def __init__(self, csv: str | os.PathLike, fs: float | None = None, scale: float = 1.0):
        self.csv = Path(csv)
        frame = read_csv(self.csv, "a manifest", dtype={"id": str, "Filename": str, "patient_id": str})
        frame = frame.rename(columns={k: v for k, v in _MANIFEST_ALIASES.items() if k in frame.columns})
        if "path" not in frame.columns:
            raise RecordError(str(self.csv), f"lacks a 'path' column (has {', '.join(map(str, frame.columns))}); "
                                             f"a manifest lists one record file per row: path[,age,id,fs]")
        paths = [p if os.path.isabs(p) else str(self.csv.parent / p) for p in frame["path"].astype(str)]
        frame["path"] = paths
        if "id" not in frame.columns:
            frame["id"] = [Path(p).stem for p in paths]
        frame["id"] = frame["id"].map(clean_id)
        if "age" in frame.columns:
            frame["age"] = pd.to_numeric(frame["age"], errors="coerce")
        if "sex" in frame.columns:
            frame["sex"] = frame["sex"].map(normalise_sex)
        self.table = frame[["id"] + [c for c in frame.columns if c != "id"]].reset_index(drop=True)
        self.fs, self.scale = fs, float(scale)

    @property
    def location(self) -> str:
        return f"manifest:{self.csv.resolve()}"

    def settings(self) -> dict:
        return {"fs": self.fs, "scale": self.scale}

    def files(self) -> list[str]:
        paths = [p for p in self.table["path"]]
        return [str(self.csv), *[p for p in paths if Path(p).exists()],
                *wfdb_files(re.sub(r"\.(hea|dat|mat)$", "", p) for p in paths if not Path(p).exists())]

    def _load(self, index: int, row: pd.Series) -> Record:
        path = str(row["path"])
        if path.endswith(".npy"):
            fs = row.get("fs") if "fs" in row and pd.notna(row.get("fs")) else self.fs
            if fs is None:
                raise RecordError(path, "is an .npy file and the manifest gives no sampling rate; add an 'fs' "
                                        "column or pass --fs")
            return Record(row["id"], load_npy(path, self.scale), float(fs), self._meta(row))
        base = re.sub(r"\.(hea|dat|mat)$", "", path)
        signal, fs = read_wfdb(base, where=path)
        return Record(row["id"], signal, fs, self._meta(row))
