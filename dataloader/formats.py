"""Which reader reads an input: found from the path (a PTB-XL root, HDF5, .npy, WFDB, a manifest CSV) or, for
clinical exports, from the files' content — or forced with ``--format``."""
from __future__ import annotations

import dataclasses
import os
from pathlib import Path

from utils.errors import RecordError
from utils.io import read_csv
from utils.settings import Settings, option, runtime

from .clinical import CLINICAL_FORMATS, ClinicalReader, may_be_clinical
from .hdf5 import HDF5Reader
from .manifest import ManifestReader
from .records import NpyFolderReader, Reader, natural_key
from .wfdb_records import PTBXLReader, WFDBFolderReader

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
                                    "default 500 (MAIC)")
    ptbxl_rate: int = option(500, "PTB-XL records to read", choices=(100, 500))
    input_scale: float = option(1.0, "multiply .npy/HDF5 amplitudes by this to get mV")
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
    .npy files, a folder of WFDB records, a manifest CSV, or clinical ECG files (DICOM, GE MUSE XML, HL7 aECG,
    Philips XML, SCP-ECG, EDF; one file or a folder, found by content). ``labels`` joins a label CSV (MAIC or
    CODE-15%). ``fmt`` (one of ``INPUT_FORMATS``) forces a format instead of finding it."""
    path = Path(path)
    if not path.exists():
        raise RecordError(str(path), "does not exist")
    if fmt not in INPUT_FORMATS:
        raise RecordError(str(path), f"--format {fmt!r} is not one of {', '.join(INPUT_FORMATS)}")
    if fmt != "auto":
        return _forced(path, fmt, labels, fs, ptbxl_rate, scale, traces_dset, ids_dset)
    if path.is_file() and path.suffix.lower() in (".hdf5", ".h5"):
        return HDF5Reader([path], labels=labels, fs=fs or 400.0, traces_dset=traces_dset, ids_dset=ids_dset,
                          scale=scale)
    if path.is_file() and path.suffix.lower() == ".csv":
        columns = read_csv(path, nrows=0).columns
        if "ecg_id" in columns and ("filename_hr" in columns or "filename_lr" in columns):
            return PTBXLReader(path, rate=ptbxl_rate)
        return ManifestReader(path, fs=fs, scale=scale)
    if path.is_file() and may_be_clinical(path):
        return ClinicalReader(path, scale=scale)
    if path.is_dir():
        if (path / "ptbxl_database.csv").exists():
            return PTBXLReader(path, rate=ptbxl_rate)
        hdf5 = _hdf5_files(path)
        if hdf5:
            if labels is None and (path / "exams.csv").exists():
                labels = path / "exams.csv"
            return HDF5Reader(hdf5, labels=labels, fs=fs or 400.0, traces_dset=traces_dset, ids_dset=ids_dset,
                              scale=scale)
        if any(path.glob("*.npy")):
            return NpyFolderReader(path, labels=labels, fs=fs or 500.0, scale=scale)
        if any(path.rglob("*.hea")):
            return WFDBFolderReader(path)
        if any(may_be_clinical(p) for p in path.rglob("*") if p.is_file()):
            return ClinicalReader(path, scale=scale)
        raise RecordError(str(path), f"holds no .npy, .hdf5, WFDB (.hea) or clinical ECG files "
                                     f"({', '.join(CLINICAL_FORMATS)}) and no ptbxl_database.csv")
    raise RecordError(str(path), "is not a folder, an HDF5 file, a CSV (manifest or PTB-XL database) or a clinical "
                                 f"ECG file ({', '.join(CLINICAL_FORMATS)})")


def _hdf5_files(folder: Path) -> list[Path]:
    return sorted([*folder.glob("*.hdf5"), *folder.glob("*.h5")], key=lambda p: natural_key(p.name))


def _forced(path: Path, fmt: str, labels, fs, ptbxl_rate, scale, traces_dset, ids_dset) -> Reader:
    """The reader ``--format`` names, whatever the files look like (they must still be of that format)."""
    if fmt in CLINICAL_FORMATS:
        return ClinicalReader(path, fmt, scale=scale)
    if fmt == "hdf5":
        return HDF5Reader(_hdf5_files(path) if path.is_dir() else [path], labels=labels, fs=fs or 400.0,
                          traces_dset=traces_dset, ids_dset=ids_dset, scale=scale)
    readers = {"ptbxl": lambda: PTBXLReader(path, rate=ptbxl_rate), "wfdb": lambda: WFDBFolderReader(path),
               "npy": lambda: NpyFolderReader(path, labels=labels, fs=fs or 500.0, scale=scale),
               "manifest": lambda: ManifestReader(path, fs=fs, scale=scale)}
    return readers[fmt]()
