"""CODE-15%-style HDF5 records: ``tracings`` (N, 4096, 12) in mV at 400 Hz and ``exam_id``, read lazily (never the
whole file), every declared size checked first (rows, chunk bytes, the files external links and virtual datasets
reach)."""
from __future__ import annotations

import math
import os
from pathlib import Path
from typing import Sequence

import h5py
import numpy as np
import pandas as pd

from utils.bounds import MAX_CHUNK_BYTES, MAX_HDF5_ROWS
from utils.errors import RecordError
from utils.io import access_error, regular_file

from .labels import (
    clean_id,
    read_code_exams,
)
from .records import Reader, Record, as_12_leads, check_length, integer_samples


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
        state = super().__getstate__()
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

    def _to_record(self, row, trace: np.ndarray) -> Record:
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
        if rows.empty:
            return []
        files, positions = rows["file_index"].to_numpy(), rows["row"].to_numpy()
        # consecutive table rows from the same file and consecutive HDF5 rows are read with one slice; each row
        # as a plain dict (a pandas row costs more than reading its tracing)
        cuts = [0, *(np.flatnonzero((np.diff(files) != 0) | (np.diff(positions) != 1)) + 1), len(rows)]
        table = rows.to_dict("records")
        out: list[Record] = []
        for first, stop_at in zip(cuts[:-1], cuts[1:]):
            block = self._read(int(files[first]), int(positions[first]), int(positions[stop_at - 1]))
            out.extend(self._to_record(row, trace) for row, trace in zip(table[first:stop_at], block))
        return out
