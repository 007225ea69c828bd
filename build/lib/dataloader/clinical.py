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
reach the table, a record, an error message, a log line or the cache. The library's own messages and warnings may
quote such fields, so none is ever shown: a failure is reported in this module's fixed words (``_LIBRARY_FAILURES``,
``_DAMAGE_WARNINGS``), and a lead label or unit from the file is named only when it is a standard one.

Every file is untrusted:

* it must be a regular file of at most ``MAX_ECG_FILE_BYTES`` (checked before it is opened); a file that cannot be
  read (permissions, an I/O error) is a bad record like any other, never left out of a folder silently;
* before an XML format is parsed, no run of text between two tags may be longer than the largest legal lead (or, for
  Philips, the largest legal set of leads) of ``MAX_SAMPLES`` samples written out (``MAX_TEXT_BYTES``), nor hold
  more than ``MAX_SAMPLES`` whitespace-separated values (aECG's decimal digits) — checked on the raw bytes in
  blocks — so parsing peaks at a small multiple of the largest legal record (bench/README.md);
* XML is parsed with entity declarations refused (defusedxml), each lead may hold at most ``MAX_SAMPLES`` samples;
* what a file declares is checked against what it holds: an EDF header's data records × samples per record against
  the file's bytes, an SCP-ECG record's declared size against the file's, and (in the library) MUSE's byte and sample
  counts; a library warning that means damaged data (a checksum mismatch, a truncation, sizes that disagree) makes
  the file a bad record;
* a DICOM file with several rhythm multiplex groups is read only when the group read is the one the rule picks (most
  channels, then highest rate, then most samples), and the choice is kept in the record's notes (``dicom_group``);
  otherwise it is refused, naming the groups.

Any failure is a ``RecordError`` naming the file — the bad-input policy decides, never a traceback.
"""
from __future__ import annotations

import functools
import os
import re
import struct
import warnings
from pathlib import Path

import numpy as np
import pandas as pd

from utils.bounds import MAX_ECG_FILE_BYTES, MAX_SAMPLES, MIN_SECONDS
from utils.errors import RecordError
from utils.io import access_error, regular_file

from .labels import normalise_sex
from .records import (
    LEADS,
    VOLT_TO_MV,
    Reader,
    Record,
    check_length,
    natural_key,
    safe_label,
    standard_leads,
)

# format name (--format) → the ecgdatakit parser that reads it
CLINICAL_FORMATS = {"dicom": "DICOMWaveformParser", "muse": "GEMuseXMLParser", "aecg": "HL7aECGParser",
                    "philips": "SierraXMLParser", "scp": "SCPECGParser", "edf": "EDFParser"}
XML_FORMATS = ("muse", "aecg", "philips")
_SNIFF_BYTES = 4096
_SCAN_BYTES = 1 << 20  # the raw-text bounds are checked in blocks of this size (a few MiB of working memory)
# the longest legal run of text between two XML tags: one lead of MAX_SAMPLES samples as decimal digits with a
# separator (aECG; up to 12 characters a sample), as base64 of up to 4-byte samples with line breaks (MUSE), or
# all of up to 16 leads of 2-byte samples in one base64 element (Philips)
MAX_TEXT_BYTES = {"aecg": 12 * MAX_SAMPLES, "muse": 8 * MAX_SAMPLES, "philips": 48 * MAX_SAMPLES}
# the library's exceptions in the project's words (by class name: its text may quote the file's fields)
_LIBRARY_FAILURES = {"CorruptedFileError": "is damaged or truncated", "ChecksumError": "fails its checksum",
                     "MissingElementError": "lacks an element the format requires",
                     "UnsupportedFormatError": "uses a variant of the format that is not supported",
                     "RawSamplesError": "has samples without a voltage scale",
                     "ParseError": "is not well-formed XML", "ExpatError": "is not well-formed XML",
                     "DTDForbidden": "declares a DTD (refused: XML entities are never expanded)",
                     "EntitiesForbidden": "declares XML entities (refused: never expanded)",
                     "ExternalReferenceForbidden": "refers to an external resource (refused)",
                     "InvalidDicomError": "is not a valid DICOM file", "UnicodeDecodeError": "holds undecodable text"}
# library warnings that mean damaged data (matched on the library's text, which is never shown) → the reason
_DAMAGE_WARNINGS = ((re.compile(r"checksum|crc", re.I), "fails its checksum (CRC): its data are damaged"),
                    (re.compile(r"truncat", re.I), "is truncated: it holds less than it declares"),
                    (re.compile(r"header size field|byte\(s\) after the last|length is \d+ in its header|"
                                r"number of data records is -1|gaps between data records", re.I),
                     "declares sizes or timing that disagree with what it holds"))
_SAFE_UNITS = ("%", "mmhg", "bpm", "ms", "s", "mv", "uv", "v", "ohm", "degc", "counts", "adu")
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


def may_be_clinical(path: str | os.PathLike) -> bool:
    """A file of a clinical format, or one that cannot be read to tell (it must then be reported, not skipped)."""
    try:
        return detect_format(path) is not None
    except RecordError:
        return True


def detect_format(path: str | os.PathLike) -> str | None:
    """The clinical format of a file from its first bytes, or None (not one of ``CLINICAL_FORMATS``, or not a
    regular file). A regular file that cannot be read (permissions, an I/O error) raises a (transient)
    RecordError: it may be an ECG, and is never taken for something else."""
    path = Path(path)
    try:
        regular_file(path)
    except RecordError as exc:
        if getattr(exc, "transient", False):
            raise
        return None
    try:
        with open(path, "rb") as handle:
            header = handle.read(_SNIFF_BYTES)
    except OSError as exc:
        raise access_error(str(path), exc, "cannot be read") from None
    for name, parser in _parsers().items():
        try:
            if parser.can_parse(path, header):
                return name
        except Exception:  # a sniffer that trips on odd bytes does not claim the file
            continue
    return None


def _safe_unit(unit) -> str:
    text = str(unit).strip()
    return repr(text) if text.lower() in _SAFE_UNITS else "a unit that is not a voltage"


class _Parsed:
    """What this project keeps of one parsed file: leads by name, fs, age, sex and notes on how it was read."""

    def __init__(self, leads: dict[str, np.ndarray], fs: float, age: float | None, sex: str | None,
                 notes: dict | None = None):
        self.leads, self.fs, self.age, self.sex, self.notes = leads, fs, age, sex, notes or {}


def parse_file(path: str, fmt: str) -> _Parsed:
    """One file through its ecgdatakit parser → ``_Parsed``; every failure a RecordError naming the file in the
    project's words (the library's messages and warnings are never shown)."""
    size = regular_file(path, max_bytes=MAX_ECG_FILE_BYTES).stat().st_size
    if fmt in XML_FORMATS:
        check_text_runs(path, MAX_TEXT_BYTES[fmt], MAX_SAMPLES if fmt == "aecg" else None)
    _check_declared(path, fmt, size)
    parser = _parsers()[fmt]
    try:
        with warnings.catch_warnings(record=True) as caught:  # kept for their meaning, never shown
            warnings.simplefilter("always")
            parsed = parser().parse(Path(path))
    except RecordError:
        raise
    except OSError as exc:
        raise access_error(path, exc, "cannot be read") from None
    except MemoryError:
        raise RecordError(path, f"could not be decoded as {fmt} within memory") from None
    except RecursionError:
        raise RecordError(path, f"is nested too deeply to be read as {fmt}") from None
    except Exception as exc:  # the library's errors (malformed, truncated, refused XML entities, ...)
        reason = _LIBRARY_FAILURES.get(type(exc).__name__, "is malformed")
        raise RecordError(path, f"cannot be read as {fmt}: it {reason} ({type(exc).__name__})") from None
    _check_warnings(caught, path, fmt)
    return _keep(parsed, path, fmt)


def check_text_runs(path: str, limit: int, token_limit: int | None = None) -> None:
    """No run between two '<' in the file holds more than ``limit`` bytes, nor (``token_limit``) more than that many
    whitespace-separated values — read in blocks, nothing parsed: a lead of short values ("1 1 1 ...") would
    otherwise become millions of strings inside the library before its sample count can be checked."""
    ends_value = np.zeros(256, bool)  # a value starts after whitespace or a tag's end
    ends_value[[9, 10, 13, 32, ord(">")]] = True
    after_end = False  # whether the block before ended on such a byte
    (run, longest), (values, most) = (0, 0), (0, 0)  # in the run still open, and the most in any run
    with open(path, "rb") as handle:
        while longest <= limit and (token_limit is None or most <= token_limit) and \
                (block := handle.read(_SCAN_BYTES)):
            data = np.frombuffer(block, dtype=np.uint8)
            mark = data == ord("<")
            run, longest = _run_sums(~mark, mark, run, longest)
            if token_limit is not None:
                boundary = ends_value[data]
                begun = ~boundary & ~mark & np.concatenate(([after_end], boundary[:-1]))
                after_end = bool(boundary[-1])
                values, most = _run_sums(begun, mark, values, most)
    if longest > limit:
        raise RecordError(path, f"holds a run of more than {limit:,} bytes of text between two XML tags, more than "
                                f"any lead of at most {MAX_SAMPLES:,} samples needs; it is not parsed")
    if token_limit is not None and most > token_limit:
        raise RecordError(path, f"holds more than {token_limit:,} values between two XML tags, more than a lead of "
                                f"at most {MAX_SAMPLES:,} samples; it is not parsed")


def _run_sums(weights: np.ndarray, mark: np.ndarray, carry: int, longest: int) -> tuple[int, int]:
    """The sums of ``weights`` over the runs between marks of one block: (the open run's sum, the largest so far)."""
    total = np.cumsum(weights, dtype=np.int32)  # a block is far shorter than 2^31
    ends = np.flatnonzero(mark)
    if ends.size == 0:
        carry += int(total[-1])
        return carry, max(longest, carry)
    at = total[ends]
    inner = int(np.diff(at).max()) if ends.size > 1 else 0
    open_run = int(total[-1] - at[-1])
    return open_run, max(longest, carry + int(at[0]), inner, open_run)


def _check_warnings(caught, path: str, fmt: str) -> None:
    """A library warning that means damaged data (a ChecksumWarning, or text matching ``_DAMAGE_WARNINGS``) makes
    the file a bad record, in the project's words; other warnings (a second waveform ignored, ...) are dropped."""
    for warning in caught:
        checksum = type(warning.message).__name__ == "ChecksumWarning"
        text = "checksum" if checksum else str(warning.message)
        reason = next((reason for pattern, reason in _DAMAGE_WARNINGS if pattern.search(text)), None)
        if reason:
            raise RecordError(path, f"cannot be read as {fmt}: it {reason}")


def _check_declared(path: str, fmt: str, size: int) -> None:
    """What the file declares against what it holds, where the format declares it in a fixed place (before the
    library reads it, so that the numbers can be named)."""
    if fmt == "edf":
        _check_edf_size(path, size)
    elif fmt == "scp":
        with open(path, "rb") as handle:
            head = handle.read(6)
        declared = struct.unpack("<I", head[2:6])[0] if len(head) == 6 else -1
        if declared != size:
            raise RecordError(path, f"declares an SCP-ECG record of {declared:,} bytes but the file holds "
                                    f"{size:,}: it is truncated or has bytes appended")


def _edf_number(field: bytes, path: str, what: str) -> int:
    try:
        return int(field.decode("ascii").strip())
    except (UnicodeDecodeError, ValueError):
        raise RecordError(path, f"has an EDF header whose {what} is not a whole number") from None


def _check_edf_size(path: str, size: int) -> None:
    """An EDF file holds exactly its header (256 bytes per signal, plus 256) and the declared data records × the
    2-byte samples per record of every signal."""
    with open(path, "rb") as handle:
        head = handle.read(256)
        signals = _edf_number(head[252:256], path, "number of signals")
        records = _edf_number(head[236:244], path, "number of data records")
        if size < 256 * (signals + 1):
            raise RecordError(path, f"holds {size:,} bytes, less than the {256 * (signals + 1):,}-byte header its "
                                    f"{signals} signal(s) need: it is truncated (a header with no data records?)")
        handle.seek(256 + signals * 216)  # label 16, transducer 80, dimension 8, 4 × 8 ranges, prefiltering 80
        counts = handle.read(signals * 8)
    per_record = sum(_edf_number(counts[i * 8:(i + 1) * 8], path, "samples per data record")
                     for i in range(signals))
    header, data = 256 * (signals + 1), size - 256 * (signals + 1)
    if records < 0:
        raise RecordError(path, f"declares {records} data records (a recording the recorder never closed); its "
                                f"length is unknown")
    if data != records * per_record * 2:
        held = data / (per_record * 2) if per_record else 0
        raise RecordError(path, f"declares {records:,} data records of {per_record:,} samples "
                                f"({records * per_record * 2:,} bytes after its {header:,}-byte header) but holds "
                                f"{max(data, 0):,} bytes ({held:.4g} records): it is truncated or has bytes appended")


def _keep(parsed, path: str, fmt: str) -> _Parsed:
    leads, rates = {}, set()
    for lead in parsed.leads:
        samples = _millivolts(lead, path, fmt)
        check_length(samples.size, path)
        label = _lead_name(str(lead.label), path)
        if label in leads:
            raise RecordError(path, f"names lead {safe_label(label)} more than once (has "
                                    f"{', '.join(safe_label(x.label) for x in parsed.leads)}); which one is meant is "
                                    f"unknown")
        leads[label] = samples
        rates.add(float(lead.sampling_rate or 0))
    if len(rates) > 1:
        raise RecordError(path, f"has leads at different sampling rates ({', '.join(map(str, sorted(rates)))} Hz)")
    fs = rates.pop() if rates else 0.0
    notes = _dicom_group(parsed, path, fs, len(next(iter(leads.values()), ()))) if fmt == "dicom" else {}
    age = parsed.patient.age
    return _Parsed(leads, fs, float(age) if age is not None else None,
                   normalise_sex(parsed.patient.sex) if parsed.patient.sex in ("M", "F") else None, notes)


def _dicom_group(parsed, path: str, fs: float, samples: int) -> dict:
    """Which rhythm multiplex group was read. The library reads the first; with several rhythm groups (those of
    at least MIN_SECONDS; median beats are shorter) the rule picks the one with the most channels, then the highest
    rate, then the most samples — the file is read only when that is the first, and refused otherwise."""
    every = [(int(g.get("channels") or 0), float(g.get("sampling_frequency") or 0), int(g.get("samples") or 0))
             for g in parsed.raw_metadata.get("multiplex_groups") or [] if isinstance(g, dict)]
    groups = [g for g in every if g[1] > 0 and g[2] >= MIN_SECONDS * g[1]]  # (channels, rate, samples)
    if len(groups) < 2:
        return {}
    read = next((i for i, (_, rate, count) in enumerate(groups) if (rate, count) == (fs, samples)), None)
    best = max(range(len(groups)), key=lambda i: groups[i])
    described = "; ".join(f"group {i + 1}: {c} channels at {f:g} Hz, {n} samples" for i, (c, f, n) in enumerate(groups))
    if read != best or groups.count(groups[best]) > 1:
        raise RecordError(path, f"holds {len(groups)} rhythm multiplex groups ({described}); the rule (most "
                                f"channels, then highest rate, then most samples) picks group {best + 1}, which "
                                f"cannot be read from this file: export that group alone")
    return {"dicom_group": f"rhythm group {best + 1} of {len(groups)} ({described})"}


def _millivolts(lead, path: str, fmt: str) -> np.ndarray:
    """A lead's samples in mV: raw counts × resolution + offset in the file's unit, then that unit → mV."""
    if lead.is_raw:
        if not lead.resolution_unit or not lead.resolution:
            raise RecordError(path, f"lead {safe_label(lead.label)} has no voltage scale in this {fmt} file: its "
                                    f"amplitudes cannot be read as mV")
        lead = lead.to_physical()
    unit = str(lead.units).strip().lower()
    if unit not in _UNIT_TO_MV:
        raise RecordError(path, f"lead {safe_label(lead.label)} is in {_safe_unit(lead.units)}, not a voltage "
                                f"unit")
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
    Listing reads each file once for its age and sex (they live inside the file); a file that cannot be read —
    malformed, or unreadable (permissions, an I/O error) — is a bad record (the bad-input policy decides), not the
    end of the folder and never silently left out. ``scale`` multiplies the amplitudes the file declares (mV per
    mV: for an export whose sensitivity is known to be wrong)."""

    format = "clinical"

    def __init__(self, path: str | os.PathLike, fmt: str | None = None, scale: float = 1.0):
        if fmt is not None and fmt not in CLINICAL_FORMATS:
            raise ValueError(f"unknown clinical format {fmt!r}; one of {', '.join(CLINICAL_FORMATS)}")
        self.root, self.forced, self.scale = Path(path), fmt, float(scale)
        files = [self.root] if self.root.is_file() else \
            sorted((p for p in self.root.rglob("*") if p.is_file()), key=lambda p: natural_key(str(p)))
        rows = [row for file in files if (row := self._row(file)) is not None]
        if not rows:
            what = f"{fmt} file" if fmt else f"file in a format read here ({', '.join(CLINICAL_FORMATS)})"
            raise RecordError(str(self.root), f"holds no {what}")
        self.table = pd.DataFrame(rows, columns=["id", "path", "file_format", "age", "sex", "error", "transient"])
        self.fs = None

    def _row(self, file: Path) -> dict | None:
        """The table row of one file (its labels, or why it cannot be read), or None: not a clinical ECG file."""
        rid = file.name if file == self.root else str(file.relative_to(self.root))
        row = {"id": rid, "path": str(file), "file_format": self.forced, "age": np.nan, "sex": None, "error": None,
               "transient": False}
        try:
            row["file_format"] = self.forced or detect_format(file)
            if row["file_format"] is None:
                return None
            parsed = parse_file(str(file), row["file_format"])
            row.update(age=parsed.age if parsed.age is not None else np.nan, sex=parsed.sex)
        except RecordError as exc:
            row.update(error=exc.reason, transient=bool(getattr(exc, "transient", False)))
        return row

    @property
    def location(self) -> str:
        return f"clinical:{self.root.resolve()}:{self.forced or 'auto'}"

    def settings(self) -> dict:
        return {"format": self.forced, **({"scale": self.scale} if self.scale != 1.0 else {})}

    def files(self) -> list[str]:
        return list(self.table["path"])

    def _meta(self, row: pd.Series) -> dict:
        return {k: v for k, v in super()._meta(row).items() if k not in ("error", "transient")}

    def _load(self, index: int, row: pd.Series) -> Record:
        if row["error"]:
            error = RecordError(row["path"], row["error"])
            error.transient = bool(row["transient"])
            raise error
        parsed = parse_file(row["path"], row["file_format"])
        if not parsed.fs > 0:
            raise RecordError(row["path"], "states no sampling rate")
        signal = to_signal(parsed, row["path"])
        if self.scale != 1.0:
            signal = signal * np.float32(self.scale)
        return Record(row["id"], signal, parsed.fs, {**self._meta(row), **parsed.notes})
