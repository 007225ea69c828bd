"""Hospital exports: DICOM 12-lead/general ECG waveforms, GE MUSE XML, HL7 aECG, Philips (Sierra) XML, SCP-ECG and
EDF/EDF+ — read through ecgdatakit (Apache-2.0; pydicom for DICOM, defusedxml for every XML format), wrapped here so
that none of its types leaves this module.

A file's format is found from its content (DICOM preamble, XML root element, EDF header, SCP-ECG section table),
never from its name, so a folder may mix formats; ``format`` forces one. The record id is the file's path relative
to the folder given (its name when one file is given). From each file only the waveform and two labels are kept:

* the **rhythm** waveform (never median beats), in mV with the file's sensitivity, baseline and units applied;
* leads by name ("ECG I", "Lead I", "I" alike); limb leads a file does not store (GE MUSE stores 8 leads) derived
  from I and II: III = II − I, aVR = −(I + II)/2, aVL = I − II/2, aVF = II − I/2;
* the age in years as the file states it (DICOM's ``042Y``/``018M``, MUSE's AgeUnits; whole years) and the sex.

Names, birth dates, patient and accession numbers and every other field stay inside the library's parse: they never
reach the table, a record, an error message, a log line or the cache. Every file is untrusted: it must be a regular
file of at most ``MAX_ECG_FILE_BYTES`` (checked before it is opened, which also bounds base64 payloads), XML is parsed
with entity declarations refused (defusedxml), each lead may hold at most ``MAX_SAMPLES`` samples, and any failure
of the library is a ``RecordError`` naming the file — the bad-input policy decides, never a traceback.
"""
from __future__ import annotations

import functools
import os
import re
import warnings
from pathlib import Path

import numpy as np
import pandas as pd

from utils.bounds import MAX_ECG_FILE_BYTES
from utils.errors import RecordError
from utils.io import regular_file

from .labels import normalise_sex
from .records import LEADS, VOLT_TO_MV, Reader, Record, check_length, natural_key, standard_leads

# format name (--format) → the ecgdatakit parser that reads it
CLINICAL_FORMATS = {"dicom": "DICOMWaveformParser", "muse": "GEMuseXMLParser", "aecg": "HL7aECGParser",
                    "philips": "SierraXMLParser", "scp": "SCPECGParser", "edf": "EDFParser"}
_SNIFF_BYTES = 4096
_MESSAGE_CHARS = 200  # a library message is cut here: it may quote the file, and must never carry a whole field
_UNIT_TO_MV = {**VOLT_TO_MV, "nv": 1e-6}  # a lead without a unit is refused, not assumed mV
_CANONICAL = {name.upper(): name for name in LEADS}
_DERIVED = {"III": lambda i, ii: ii - i, "aVR": lambda i, ii: -(i + ii) / 2, "aVL": lambda i, ii: i - ii / 2,
            "aVF": lambda i, ii: ii - i / 2}


@functools.cache
def _parsers() -> dict:
    """format name → ecgdatakit parser class (imported on first use: the other readers never need it)."""
    from ecgdatakit.parsing.parser import FileParser

    classes = {cls.__name__: cls for cls in FileParser().parsers}
    return {name: classes[cls] for name, cls in CLINICAL_FORMATS.items()}


def detect_format(path: str | os.PathLike) -> str | None:
    """The clinical format of a file from its first bytes, or None (not one of ``CLINICAL_FORMATS``)."""
    path = Path(path)
    try:
        with open(regular_file(path), "rb") as handle:
            header = handle.read(_SNIFF_BYTES)
    except (OSError, RecordError):
        return None
    for name, parser in _parsers().items():
        try:
            if parser.can_parse(path, header):
                return name
        except Exception:  # a sniffer that trips on odd bytes does not claim the file
            continue
    return None


def _quiet(text: str) -> str:
    text = " ".join(str(text).split())
    return text if len(text) <= _MESSAGE_CHARS else text[:_MESSAGE_CHARS] + " ..."


class _Parsed:
    """What this project keeps of one parsed file: leads by name, fs, age, sex — nothing else."""

    def __init__(self, leads: dict[str, np.ndarray], fs: float, age: float | None, sex: str | None):
        self.leads, self.fs, self.age, self.sex = leads, fs, age, sex


def parse_file(path: str, fmt: str) -> _Parsed:
    """One file through its ecgdatakit parser → ``_Parsed``; every failure a RecordError naming the file."""
    regular_file(path, max_bytes=MAX_ECG_FILE_BYTES)
    parser = _parsers()[fmt]
    try:
        with warnings.catch_warnings():  # the library's warnings may quote fields of the file: never shown
            warnings.simplefilter("ignore")
            parsed = parser().parse(Path(path))
    except RecordError:
        raise
    except MemoryError:
        raise RecordError(path, f"could not be decoded as {fmt} within memory") from None
    except RecursionError:
        raise RecordError(path, f"is nested too deeply to be read as {fmt}") from None
    except Exception as exc:  # the library's errors (malformed, truncated, refused XML entities, ...)
        raise RecordError(path, f"cannot be read as {fmt}: {type(exc).__name__}: {_quiet(exc)}") from None
    return _keep(parsed, path, fmt)


def _keep(parsed, path: str, fmt: str) -> _Parsed:
    leads, rates = {}, set()
    for lead in parsed.leads:
        samples = _millivolts(lead, path, fmt)
        check_length(samples.size, path)
        label = _lead_name(str(lead.label), path)
        if label in leads:
            raise RecordError(path, f"names lead {label} more than once (has "
                                    f"{', '.join(str(x.label) for x in parsed.leads)}); which one is meant is unknown")
        leads[label] = samples
        rates.add(float(lead.sampling_rate or 0))
    if len(rates) > 1:
        raise RecordError(path, f"has leads at different sampling rates ({', '.join(map(str, sorted(rates)))} Hz)")
    age = parsed.patient.age
    return _Parsed(leads, rates.pop() if rates else 0.0, float(age) if age is not None else None,
                   normalise_sex(parsed.patient.sex) if parsed.patient.sex in ("M", "F") else None)


def _millivolts(lead, path: str, fmt: str) -> np.ndarray:
    """A lead's samples in mV: raw counts × resolution + offset in the file's unit, then that unit → mV."""
    if lead.is_raw:
        if not lead.resolution_unit or not lead.resolution:
            raise RecordError(path, f"lead {_quiet(lead.label)!r} has no voltage scale in this {fmt} file: its "
                                    f"amplitudes cannot be read as mV")
        lead = lead.to_physical()
    unit = str(lead.units).strip().lower()
    if unit not in _UNIT_TO_MV:
        raise RecordError(path, f"lead {_quiet(lead.label)!r} is in {_quiet(lead.units)!r}, not a voltage unit")
    return np.asarray(lead.samples, dtype=np.float64) * _UNIT_TO_MV[unit]


def _lead_name(label: str, path: str) -> str:
    """The standard name of a lead label; the library marks a repeated label 'II_2': a duplicated lead."""
    repeated = re.fullmatch(r"(.+)_(\d+)", label)
    if repeated and repeated.group(1).upper() in _CANONICAL:
        raise RecordError(path, f"names lead {repeated.group(1)} more than once; which one is meant is unknown")
    key = label.strip()
    for prefix in ("ecg lead ", "ecg ", "lead "):
        if key.lower().startswith(prefix):
            key = key[len(prefix):].strip()
            break
    return _CANONICAL.get(key.upper(), key)


def to_signal(parsed: _Parsed, path: str) -> np.ndarray:
    """(12, N) float32 in the standard order; missing limb leads derived from I and II; equal lengths required."""
    leads = dict(parsed.leads)
    missing = [name for name in _DERIVED if name not in leads]
    if missing and "I" in leads and "II" in leads:
        i, ii = leads["I"].astype(np.float64), leads["II"].astype(np.float64)
        if len(i) != len(ii):
            raise RecordError(path, f"has leads I and II of different lengths ({len(i)}, {len(ii)})")
        leads.update({name: _DERIVED[name](i, ii) for name in missing})
    lengths = {name: len(samples) for name, samples in leads.items() if name in LEADS}
    if len(set(lengths.values())) > 1:
        raise RecordError(path, "has leads of different lengths (" +
                          ", ".join(f"{k} {v}" for k, v in lengths.items()) + ")")
    names = [name for name in leads if name in LEADS]  # leads beyond the 12 (V7, V4R, ...) are not used
    stacked = np.stack([np.asarray(leads[n], dtype=np.float64) for n in names]) if names else np.zeros((0, 0))
    return standard_leads(stacked, names, path).astype(np.float32)


class ClinicalReader(Reader):
    """A clinical ECG file, or every one under a folder (recursively; found by content, any mix of formats).
    Listing reads each file once for its age and sex (they live inside the file); a file that cannot be read
    is a bad record (the bad-input policy decides), not the end of the folder."""

    format = "clinical"

    def __init__(self, path: str | os.PathLike, fmt: str | None = None):
        if fmt is not None and fmt not in CLINICAL_FORMATS:
            raise ValueError(f"unknown clinical format {fmt!r}; one of {', '.join(CLINICAL_FORMATS)}")
        self.root, self.forced = Path(path), fmt
        files = [self.root] if self.root.is_file() else \
            sorted((p for p in self.root.rglob("*") if p.is_file()), key=lambda p: natural_key(str(p)))
        rows = []
        for file in files:
            found = fmt or detect_format(file)
            if found is None:
                continue
            rid = file.name if file == self.root else str(file.relative_to(self.root))
            row = {"id": rid, "path": str(file), "file_format": found, "age": np.nan, "sex": None, "error": None}
            try:
                parsed = parse_file(str(file), found)
                row.update(age=parsed.age if parsed.age is not None else np.nan, sex=parsed.sex)
            except RecordError as exc:
                row["error"] = str(exc).removeprefix(f"{file}: ")
            rows.append(row)
        if not rows:
            what = f"{fmt} file" if fmt else f"file in a format read here ({', '.join(CLINICAL_FORMATS)})"
            raise RecordError(str(self.root), f"holds no {what}")
        self.table = pd.DataFrame(rows, columns=["id", "path", "file_format", "age", "sex", "error"])
        self.fs = None

    @property
    def location(self) -> str:
        return f"clinical:{self.root.resolve()}:{self.forced or 'auto'}"

    def settings(self) -> dict:
        return {"format": self.forced}

    def files(self) -> list[str]:
        return list(self.table["path"])

    def _meta(self, row: pd.Series) -> dict:
        return {k: v for k, v in super()._meta(row).items() if k not in ("error",)}

    def _load(self, index: int, row: pd.Series) -> Record:
        if row["error"]:
            raise RecordError(row["path"], row["error"])
        parsed = parse_file(row["path"], row["file_format"])
        if not parsed.fs > 0:
            raise RecordError(row["path"], "states no sampling rate")
        return Record(row["id"], to_signal(parsed, row["path"]), parsed.fs, self._meta(row))
