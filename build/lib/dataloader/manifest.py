"""A manifest CSV listing record files (.npy or WFDB) with their labels."""
from __future__ import annotations

import os
import re
from pathlib import Path

import pandas as pd

from utils.errors import RecordError
from utils.io import read_csv

from .labels import (
    clean_id,
    normalise_sex,
)
from .records import Reader, Record, load_npy
from .wfdb_records import read_wfdb, wfdb_files

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
