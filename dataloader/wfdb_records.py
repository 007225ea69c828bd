"""WFDB records (PhysioNet/CinC folders, PTB-XL): headers checked before any sample is read, leads reordered by
name, amplitudes in mV; PTB-XL's database for its labels and folds."""
from __future__ import annotations

import os
import re
from pathlib import Path
from typing import NamedTuple

import numpy as np
import pandas as pd
import wfdb

from utils.bounds import MAX_HEADER_BYTES, MAX_SAMPLES
from utils.errors import RecordError
from utils.io import access_error, regular_file

from .labels import (
    parse_header_comments,
    ptbxl_labels,
    read_ptbxl_database,
)
from .records import VOLT_TO_MV, Reader, Record, check_length, natural_key, standard_leads

WFDB_UNIT_TO_MV = {**VOLT_TO_MV, "nu": 1.0, "": 1.0}  # WFDB: a signal without a unit is in mV


class WFDBHeader(NamedTuple):
    comments: list[str]
    files: list[str]  # the header, every signal file it names and, for a multi-segment record, each segment's files
    segments: list[str]  # record paths (without .hea) of a multi-segment record's segments (they are not records)
    fields: list[list[str]]  # the record line and each signal line, split on white space


class Plain16(NamedTuple):
    """A record held as one file of interleaved little-endian 16-bit samples (WFDB format 16: PTB-XL's and the
    PhysioNet/CinC challenges' form), everything wfdb would need to read it, taken from its checked header."""

    file: Path
    offset: int
    samples: int
    fs: float
    gain: np.ndarray  # (signals,) ADC units per physical unit
    baseline: np.ndarray  # (signals,) the ADC value of 0 physical units
    units: list[str]
    names: list[str]


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
    return WFDBHeader(comments, files, segments, fields)


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
    plain = plain_format16(record_path, check_wfdb_header(record_path, where))
    signal, fs, units, names = read_plain16(plain, where) if plain else read_with_wfdb(record_path, where)
    scales = np.array([WFDB_UNIT_TO_MV.get(str(unit).strip().lower(), np.nan) for unit in units])
    if np.isnan(scales).any():
        bad = [u for u, s in zip(units, scales) if np.isnan(s)]
        raise RecordError(where, f"has signal units {bad} that are not voltages (mV, uV, V)")
    order = standard_leads(np.arange(len(names)), names, where)  # the rows of the standard leads, in order
    return np.ascontiguousarray((signal[:, order] * scales[order]).T, dtype=np.float32), fs


def read_with_wfdb(record_path: str, where: str) -> tuple[np.ndarray, float, list, list]:
    """(physical signal (N, signals) float64, fs, units, lead names) as wfdb reads them: every WFDB format."""
    try:
        record = wfdb.rdrecord(record_path)
    except Exception as exc:  # wfdb raises many kinds (ValueError, FileNotFoundError, IndexError) on bad files
        raise access_error(where, exc, "is not a readable WFDB record") from exc
    if record.p_signal is None or record.fs is None:
        raise RecordError(where, "has no physical signal or sampling frequency in its header")
    return np.asarray(record.p_signal, dtype=np.float64), float(record.fs), list(record.units), list(record.sig_name)


_FORMAT16 = re.compile(r"16(?:x1)?(?:\+(\d+))?")  # format 16, one sample per frame, no skew, an optional byte offset
_GAIN = re.compile(r"([0-9.]+(?:[eE][-+]?\d+)?)(?:\((-?\d+)\))?/(\S+)")  # gain(baseline)/units, units given
_INVALID16 = -32768  # WFDB's "no sample" value in format 16


def plain_format16(record_path: str, header: WFDBHeader) -> Plain16 | None:
    """The layout of a record that is one format-16 file whose size is exactly its samples (the common case, read
    here by numpy in a tenth of the time wfdb's header parser takes), or None: every other record (other formats,
    skew, several files, segments, anything unusual) is wfdb's."""
    if header.segments or len(header.fields) < 2:
        return None
    record, signals = header.fields[0], header.fields[1:]
    if len(record) < 4 or not record[1].isdigit() or int(record[1]) != len(signals) or not record[3].isdigit():
        return None
    try:
        fs = float(record[2])
    except ValueError:  # a counter frequency or base counter: wfdb's
        return None
    layouts = {(line[0], line[1]) for line in signals}
    matched = [_GAIN.fullmatch(line[2]) if len(line) >= 9 else None for line in signals]
    formatted = _FORMAT16.fullmatch(signals[0][1])
    if len(layouts) != 1 or not formatted or not all(matched) or not fs > 0:
        return None
    gain = np.array([float(m.group(1)) for m in matched])
    if not (np.isfinite(gain) & (gain > 0)).all() or not all(line[4].lstrip("-").isdigit() for line in signals):
        return None
    baseline = np.array([float(m.group(2) if m.group(2) is not None else line[4]) for m, line in zip(matched, signals)])
    file, offset, samples = Path(record_path).parent / signals[0][0], int(formatted.group(1) or 0), int(record[3])
    if file.stat().st_size != offset + 2 * samples * len(signals):
        return None
    return Plain16(file, offset, samples, fs, gain, baseline, [m.group(3) for m in matched],
                   [" ".join(line[8:]) for line in signals])


def read_plain16(plain: Plain16, where: str) -> tuple[np.ndarray, float, list, list]:
    """What :func:`read_with_wfdb` gives for a :func:`plain_format16` record: wfdb's digital-to-physical
    conversion ((d − baseline) / gain in float64, NaN for the invalid value), the same numbers."""
    try:
        digital = np.fromfile(plain.file, dtype="<i2", count=plain.samples * len(plain.gain), offset=plain.offset)
    except OSError as exc:
        raise access_error(where, exc, "is not a readable WFDB record") from exc
    digital = digital.reshape(plain.samples, len(plain.gain))
    physical = (digital.astype(np.float64) - plain.baseline) / plain.gain
    physical[digital == _INVALID16] = np.nan
    return physical, plain.fs, plain.units, plain.names


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


WFDB_SUFFIXES = (".hea", ".dat", ".mat")  # one record's files: its header and its signal file


def wfdb_header_of(path: Path) -> Path | None:
    """The header of the single WFDB record ``path`` names (its .hea, .dat or .mat file), or None."""
    header = path.with_suffix(".hea")
    return header if path.suffix.lower() in WFDB_SUFFIXES and header.is_file() else None


class WFDBFolderReader(Reader):
    """Every ``.hea`` record under a folder (recursively), or the one record a ``.hea``/``.dat``/``.mat`` file names;
    CinC ``# Age:``/``# Sex:`` comments become labels. A header that cannot be read makes its record bad (the
    bad-input policy decides), not the whole folder. The segments of a multi-segment record are part of that record,
    not records of their own."""

    format = "wfdb"

    def __init__(self, folder: str | os.PathLike):
        self.folder = Path(folder)
        one = wfdb_header_of(self.folder) if self.folder.is_file() else None
        if self.folder.is_file() and one is None:
            raise RecordError(str(self.folder), "is not a WFDB record (a .hea file, or the .dat/.mat file beside one)")
        if one is not None:
            self.folder = one.parent
        headers = [one] if one is not None else sorted(self.folder.rglob("*.hea"), key=lambda p: natural_key(str(p)))
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
