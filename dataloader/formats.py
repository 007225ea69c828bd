"""Which reader reads an input: found from the path (a PTB-XL root, HDF5, .npy, WFDB, a manifest CSV) or, for
clinical exports, from the files' content — or forced with ``--format``."""
from __future__ import annotations

import dataclasses
import logging
import os
from pathlib import Path

from utils.bounds import MAX_FS, MAX_SCALE, MIN_FS, MIN_SCALE, finite_number
from utils.errors import RecordError, UserError
from utils.io import read_csv
from utils.settings import Settings, number_between, option, runtime

from .clinical import CLINICAL_FORMATS, ClinicalReader, may_be_clinical
from .hdf5 import HDF5Reader
from .manifest import ManifestReader
from .records import NpyFolderReader, Reader, natural_key
from .wfdb_records import PTBXLReader, WFDBFolderReader, wfdb_header_of

logger = logging.getLogger(__name__)
INPUT_FORMATS = ("auto", "ptbxl", "hdf5", "npy", "wfdb", "manifest", *CLINICAL_FORMATS)


@dataclasses.dataclass(frozen=True)
class InputSettings(Settings):
    """``--input`` and how to read it (``--format``, ``--fs``, ``--ptbxl_rate``, ``--input_scale``, the HDF5 dataset
    names) and, for training, ``--labels``. Where the data are is runtime (the data are identified by content)."""

    TITLE = ("any format (HDF5, WFDB, PTB-XL, .npy folder, manifest CSV, DICOM, GE MUSE XML, HL7 aECG, Philips XML, "
             "SCP-ECG, EDF)")

    input: str | None = runtime(None, "the records: an HDF5 file or folder, a WFDB folder, a PTB-XL root or database "
                                      "CSV, an .npy folder, a manifest CSV, or clinical ECG files (one, or a folder "
                                      "of any mix)")
    labels: str | None = runtime(None, "label CSV for --input (CODE-15% exams.csv or MAIC labels)")
    input_format: str = option("auto", "the format of --input (default: found from the path and the files' "
                                       "content)", flag="--format", choices=INPUT_FORMATS)
    fs: float | None = option(None, "sampling rate of --input records whose format does not store it (.npy); "
                                    "default 500 (MAIC)", type=number_between(MIN_FS, MAX_FS, "Hz"))
    ptbxl_rate: int = option(500, "PTB-XL records to read", choices=(100, 500))
    input_scale: float = option(1.0, "multiply .npy/HDF5 amplitudes by this to get mV (formats without units)",
                                type=number_between(MIN_SCALE, MAX_SCALE, "mV per stored unit"))
    traces_dset: str = option("tracings", "HDF5 dataset holding the tracings")
    ids_dset: str = option("exam_id", "HDF5 dataset holding the ids ('' = row numbers)")

    def open(self, labels: bool = False) -> Reader:
        """The reader of ``input`` (with ``labels`` joined when asked)."""
        return open_reader(self.input, labels=self.labels if labels else None, fs=self.fs,
                           ptbxl_rate=self.ptbxl_rate, scale=self.input_scale, traces_dset=self.traces_dset,
                           ids_dset=self.ids_dset, fmt=self.input_format)


def open_reader(path: str | os.PathLike, labels: str | os.PathLike | None = None, fs: float | None = None,
                ptbxl_rate: int = 500, scale: float = 1.0, traces_dset: str = "tracings",
                ids_dset: str = "exam_id", fmt: str = "auto") -> Reader:
    """Pick the reader for ``path``: an HDF5 file or folder of them, a PTB-XL root or database CSV, a folder of
    .npy files or one, a folder of WFDB records or one record, a manifest CSV, or clinical ECG files (DICOM, GE MUSE
    XML, HL7 aECG, Philips XML, SCP-ECG, EDF; one file or a folder, found by content). ``labels`` joins a label CSV
    (MAIC or CODE-15%). ``fmt`` (one of ``INPUT_FORMATS``) forces a format instead of finding it. A folder holding
    records of several formats is refused (never read in part); ``fs`` and ``scale`` given for a format that states
    its own rate and units are errors, and a rate taken by default is announced."""
    path = Path(path)
    if not path.exists():
        raise RecordError(str(path), "does not exist")
    if fmt not in INPUT_FORMATS:
        raise RecordError(str(path), f"--format {fmt!r} is not one of {', '.join(INPUT_FORMATS)}")
    check_scale(scale)
    kind = fmt if fmt != "auto" else input_format(path)
    if fs is not None and kind not in RATELESS:
        raise UserError(f"--fs {fs:g}: the records of {path} ({kind}) state their own sampling rate, which is what is "
                        f"used; leave --fs out (it applies to {', '.join(RATELESS)} records)")
    if scale != 1.0 and kind in ("wfdb", "ptbxl"):
        raise UserError(f"--input_scale {scale:g}: the WFDB headers of {path} state each lead's unit, which is what "
                        f"is used; leave --input_scale out")
    if fs is None and kind in DEFAULT_FS:
        logger.info(f"note: {path}: {kind} records do not state their sampling rate; read at {DEFAULT_FS[kind]:g} Hz "
                    f"(the {'MAIC' if kind == 'npy' else 'CODE-15%'} rate) — give --fs if yours differ")
    reader = _reader(kind, path, labels, fs, ptbxl_rate, scale, traces_dset, ids_dset)
    if kind == "wfdb":
        reader.labelled_root = ptbxl_root(path)
    return reader


RATELESS = ("npy", "hdf5", "manifest")  # formats whose files do not state their sampling rate
DEFAULT_FS = {"npy": 500.0, "hdf5": 400.0}  # the rate each is read at without --fs (MAIC; CODE-15%)


def check_scale(scale) -> float:
    """``--input_scale``: mV per stored unit, a positive finite number within the plausible units' range."""
    if finite_number(scale) is None or not MIN_SCALE <= scale <= MAX_SCALE:
        raise UserError(f"--input_scale (scale) is the mV per stored unit, a number from {MIN_SCALE:g} to "
                        f"{MAX_SCALE:g}, got {scale!r}")
    return float(scale)


def ptbxl_root(path: Path) -> Path | None:
    """The PTB-XL root above a records folder (records500/, records100/ or below), whose database holds the ages."""
    for parent in list(path.resolve().parents)[:4]:
        if (parent / "ptbxl_database.csv").is_file():
            return parent
    return None


def ages_elsewhere(root: Path) -> str:
    """What to say of PTB-XL records read without their ages, whose ``root`` (:func:`ptbxl_root`) holds them."""
    return f"PTB-XL records without their ages — the ages (and the folds) are in {root / 'ptbxl_database.csv'}"


def input_format(path: Path) -> str:
    """The one format of ``path``'s records (a folder holding several is refused, naming what it holds)."""
    if path.is_file():
        return _file_format(path)
    if (path / "ptbxl_database.csv").exists():
        return "ptbxl"
    found = {"hdf5": len(_hdf5_files(path)), "npy": sum(1 for _ in path.glob("*.npy")),
             "wfdb": sum(1 for _ in path.rglob("*.hea"))}
    known = {".npy", ".hea", ".dat", ".mat", ".hdf5", ".h5", ".csv", ".json", ".txt", ".md"}
    clinical = [p for p in path.rglob("*") if p.is_file() and p.suffix.lower() not in known and may_be_clinical(p)]
    found["clinical"] = len(clinical)
    present = {k: n for k, n in found.items() if n}
    if len(present) > 1:
        shown = ", ".join(f"{n} {k}" for k, n in present.items())
        raise UserError(f"{path} holds records of several formats ({shown} file(s)); this pipeline reads one format "
                        f"at a time, never part of a folder: give --format (one of {', '.join(INPUT_FORMATS[1:])}) "
                        f"or put each format in its own folder")
    if not present:
        raise RecordError(str(path), f"holds no .npy, .hdf5, WFDB (.hea) or clinical ECG files "
                                     f"({', '.join(CLINICAL_FORMATS)}) and no ptbxl_database.csv")
    kind = next(iter(present))
    return "auto" if kind == "clinical" else kind


def _file_format(path: Path) -> str:
    suffix = path.suffix.lower()
    if suffix in (".hdf5", ".h5"):
        return "hdf5"
    if suffix == ".csv":
        columns = read_csv(path, nrows=0).columns
        return "ptbxl" if "ecg_id" in columns and ("filename_hr" in columns or "filename_lr" in columns) \
            else "manifest"
    if suffix == ".npy":
        return "npy"
    if wfdb_header_of(path) is not None:
        return "wfdb"
    if may_be_clinical(path):
        return "auto"  # ClinicalReader finds which clinical format
    raise RecordError(str(path), f"is not a folder, an HDF5 file, a CSV (manifest or PTB-XL database), an .npy "
                                 f"file, a WFDB record (.hea/.dat/.mat) or a clinical ECG file "
                                 f"({', '.join(CLINICAL_FORMATS)})")


def _hdf5_files(folder: Path) -> list[Path]:
    return sorted([*folder.glob("*.hdf5"), *folder.glob("*.h5")], key=lambda p: natural_key(p.name))


def _reader(kind: str, path: Path, labels, fs, ptbxl_rate, scale, traces_dset, ids_dset) -> Reader:
    """The reader of format ``kind`` ("auto": clinical, found by content) for ``path``."""
    if kind == "auto" or kind in CLINICAL_FORMATS:
        return ClinicalReader(path, None if kind == "auto" else kind, scale=scale)
    if kind == "hdf5":
        if path.is_dir() and labels is None and (path / "exams.csv").exists():
            labels = path / "exams.csv"
        return HDF5Reader(_hdf5_files(path) if path.is_dir() else [path], labels=labels, fs=fs or DEFAULT_FS["hdf5"],
                          traces_dset=traces_dset, ids_dset=ids_dset, scale=scale)
    readers = {"ptbxl": lambda: PTBXLReader(path, rate=ptbxl_rate), "wfdb": lambda: WFDBFolderReader(path),
               "npy": lambda: NpyFolderReader(path, labels=labels, fs=fs or DEFAULT_FS["npy"], scale=scale),
               "manifest": lambda: ManifestReader(path, fs=fs, scale=scale)}
    return readers[kind]()
