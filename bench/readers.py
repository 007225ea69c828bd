"""Clinical readers measured: for each format, real PTB-XL records written by an independent writer (the writers of
tests/test_clinical.py: pydicom, pyedflib, the GE MUSE, HL7 aECG, Philips and SCP-ECG structures) and read back by each
candidate library — ms per file and the largest amplitude error against the source (mV), side by side in one run.

    python bench/readers.py --records 20

Candidates: ecgdatakit (every format; what dataloader/clinical.py wraps), pydicom alone (its ``waveform_array``,
DICOM) and pyedflib alone (EDF). The last line printed is one JSON object.
"""
from __future__ import annotations

import argparse
import json
import platform
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd

from dataloader.clinical import detect_format, parse_file, to_signal
from dataloader.wfdb_records import read_wfdb
from utils.paths import ROOT

sys.path.insert(0, str(ROOT / "tests"))
from test_clinical import aecg_xml, muse_xml, philips_xml, write_dicom, write_edf, write_scp  # noqa: E402  (the tests' writers)

SHARED = ROOT.parent / "shared" / "data" / "ptbxl"


def pydicom_read(path: Path) -> np.ndarray:
    import pydicom

    ds = pydicom.dcmread(path)
    return ds.waveform_array(0).T / 1000.0  # µV (sensitivity applied by pydicom) → mV


def pyedflib_read(path: Path) -> np.ndarray:
    import pyedflib

    with pyedflib.EdfReader(str(path)) as edf:
        return np.stack([edf.readSignal(i) for i in range(edf.signals_in_file)]) / 1000.0


def ecgdatakit_read(path: Path) -> np.ndarray:
    return to_signal(parse_file(str(path), detect_format(path)), str(path))


CANDIDATES = {"dicom": {"ecgdatakit": ecgdatakit_read, "pydicom": pydicom_read},
              "edf": {"ecgdatakit": ecgdatakit_read, "pyedflib": pyedflib_read},
              "muse": {"ecgdatakit": ecgdatakit_read}, "aecg": {"ecgdatakit": ecgdatakit_read},
              "philips": {"ecgdatakit": ecgdatakit_read}, "scp": {"ecgdatakit": ecgdatakit_read}}


def write(kind: str, folder: Path, rid: str, signal: np.ndarray) -> Path:
    if kind == "dicom":
        return write_dicom(folder / f"{rid}.dcm", signal, 500.0)
    if kind == "edf":
        return write_edf(folder / f"{rid}.edf", signal, 500.0)
    if kind == "scp":
        return write_scp(folder / f"{rid}.scp", signal, 500.0)
    path = folder / f"{rid}.xml"
    path.write_bytes({"muse": muse_xml, "aecg": aecg_xml, "philips": philips_xml}[kind](signal, 500.0))
    return path


def main(argv=None) -> dict:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--records", type=int, default=20)
    p.add_argument("--ptbxl", default=str(SHARED))
    p.add_argument("--quick", action="store_true", help="a smoke test: 2 records")
    args = p.parse_args(argv)
    if args.quick:
        args.records = 2
    table = pd.read_csv(Path(args.ptbxl) / "ptbxl_database.csv").head(args.records)
    sources = {f"r{row.ecg_id}": read_wfdb(str(Path(args.ptbxl) / row.filename_hr))[0] for row in table.itertuples()}
    rows = {}
    with tempfile.TemporaryDirectory() as tmp:
        for kind, readers in CANDIDATES.items():
            folder = Path(tmp) / kind
            folder.mkdir()
            files = {rid: write(kind, folder, rid, signal) for rid, signal in sources.items()}
            for name, read in readers.items():
                read(next(iter(files.values())))  # warm-up: imports and parser discovery are not per-file costs
                started, error = time.perf_counter(), 0.0
                for rid, path in files.items():
                    signal = read(path)
                    stored = [0, 1, *range(6, 12)] if kind == "muse" else list(range(12))
                    error = max(error, float(np.abs(signal[stored] - sources[rid][stored]).max()))
                rows[f"{kind}/{name}"] = {"ms_per_file": 1000 * (time.perf_counter() - started) / len(files),
                                          "max_error_mv": error,
                                          "file_kb": sum(f.stat().st_size for f in files.values()) / len(files) / 1024}
    result = {"machine": platform.processor() or platform.machine(), "records": len(sources), "rows": rows}
    print(json.dumps(result))
    return result


if __name__ == "__main__":
    main()
