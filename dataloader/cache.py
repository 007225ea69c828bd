"""On-disk cache of preprocessed signals: preprocess once, then every epoch reads contiguous memory.

A cache is a folder ``<cache_dir>/<format>-<key>/`` with ``signals.npy`` (an (N, 12, L) array opened as a memory
map), ``ids.txt`` and ``meta.json`` (written last: a cache without it is incomplete and is rebuilt). The key hashes
the preprocessing spec, the stored dtype and the source files' names, sizes and modification times, so changing
any of them builds a new cache and removes the old one of the same source. Bad records (unreadable, wrong shape,
non-finite or flat leads) do not stop the build: they are listed in ``meta.json`` with the reason, and the caller
applies the bad-input policy to the whole list at once.
"""
from __future__ import annotations

import hashlib
import json
import multiprocessing as mp
import os
import shutil
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from tqdm import tqdm

from models.preprocessing import PreprocessSpec, preprocess
from utils.errors import RecordError
from utils.io import write_json, write_text

from .records import LEADS, Reader, Record

CACHE_VERSION = 1
CHUNK = 64


def check_record(record: Record) -> str | None:
    """Why a raw record cannot be used, or None. Shape problems are raised by the readers already."""
    signal = record.signal
    if not np.isfinite(signal).all():
        bad = int((~np.isfinite(signal)).sum())
        return f"has {bad} NaN/Inf sample(s)"
    flat = [i for i in range(signal.shape[0]) if not np.any(signal[i])]
    if flat:
        return f"has flat (all-zero) lead(s) {', '.join(LEADS[i] for i in flat)}"
    if record.fs is None or not np.isfinite(record.fs) or record.fs <= 0:
        return f"has no valid sampling rate ({record.fs})"
    return None


def prepare(record: Record, spec: PreprocessSpec) -> np.ndarray:
    """Check a record and preprocess it; raises RecordError naming the record."""
    reason = check_record(record)
    if reason:
        raise RecordError(f"record {record.id}", reason)
    out = preprocess(record.signal, record.fs, spec)
    if not np.isfinite(out).all():
        raise RecordError(f"record {record.id}", "gives non-finite values after preprocessing")
    return out


def load_safely(reader: Reader, index: int) -> Record | RecordError:
    """One record, or the RecordError saying why it cannot be read. Whatever a corrupt file makes a parser raise
    becomes a bad record naming it, so one odd file never stops the other records."""
    try:
        return reader.load(index)
    except RecordError as exc:
        return exc
    except Exception as exc:  # noqa: BLE001 - third-party parsers raise anything on corrupt bytes
        return RecordError(f"record {reader.ids[index]}", f"cannot be read ({type(exc).__name__}: {exc})")


def prepare_item(item: Record | RecordError, spec: PreprocessSpec, record_id: str) -> np.ndarray:
    """The model input of a loaded record (or the RecordError of one that could not be loaded); every failure is
    raised as a RecordError naming the record."""
    if isinstance(item, RecordError):
        raise item
    try:
        return prepare(item, spec)
    except RecordError:
        raise
    except Exception as exc:  # noqa: BLE001 - e.g. a record too short for the band-pass filter
        raise RecordError(f"record {record_id}", f"cannot be preprocessed ({type(exc).__name__}: {exc})") from exc


def load_block_safely(reader: Reader, start: int, stop: int) -> list[Record | RecordError]:
    """Records start..stop-1 (one read where the format allows), each a Record or its RecordError."""
    try:
        return list(reader.load_block(start, stop))
    except Exception:  # noqa: BLE001 - fall back to one record at a time to find the bad ones
        return [load_safely(reader, i) for i in range(start, stop)]


def cache_key(reader: Reader, spec: PreprocessSpec, dtype: str) -> str:
    digest = hashlib.sha256()
    digest.update(json.dumps({"v": CACHE_VERSION, "spec": spec.to_dict(), "dtype": dtype,
                              "format": reader.format}, sort_keys=True).encode())
    digest.update(reader.fingerprint().encode())
    digest.update("\n".join(reader.ids).encode())
    return digest.hexdigest()[:20]


@dataclass
class SignalCache:
    folder: Path
    signals: np.ndarray  # (N, 12, L) memmap, rows in reader order
    ids: list[str]
    bad: dict[str, str]  # id → reason

    @classmethod
    def open(cls, folder: Path) -> "SignalCache":
        meta = json.loads((folder / "meta.json").read_text())
        signals = np.load(folder / "signals.npy", mmap_mode="r")
        ids = (folder / "ids.txt").read_text().split("\n") if len(signals) else []
        return cls(folder, signals, ids, dict(meta["bad"]))


def _build_chunk(job) -> list[tuple[int, str]]:
    reader, spec, path, start, stop = job
    signals = np.load(path, mmap_mode="r+")
    bad = []
    ids = reader.ids
    for offset, item in enumerate(load_block_safely(reader, start, stop)):
        try:
            signals[start + offset] = prepare_item(item, spec, ids[start + offset])
        except RecordError as exc:
            bad.append((start + offset, str(exc)))
    signals.flush()
    return bad


def _source_tag(reader: Reader) -> str:
    return hashlib.sha256(reader.location.encode()).hexdigest()[:12]


def build_cache(reader: Reader, spec: PreprocessSpec, cache_dir: str | os.PathLike, dtype: str = "float32",
                workers: int | None = None, progress: bool = True) -> SignalCache:
    """Open the cache of ``reader`` under ``spec``, building it (in parallel, with a progress bar) if needed."""
    cache_dir = Path(cache_dir)
    key = cache_key(reader, spec, dtype)
    folder = cache_dir / f"{reader.format}-{key}"
    if (folder / "meta.json").exists():
        return SignalCache.open(folder)
    cache_dir.mkdir(parents=True, exist_ok=True)
    tmp = cache_dir / f".{folder.name}.{os.getpid()}.tmp"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir()
    try:
        n = len(reader)
        np.lib.format.open_memmap(tmp / "signals.npy", mode="w+", dtype=dtype, shape=(n, 12, spec.length)).flush()
        jobs = [(reader, spec, tmp / "signals.npy", s, min(s + CHUNK, n)) for s in range(0, n, CHUNK)]
        workers = workers if workers is not None else min(len(jobs), os.cpu_count() or 1)
        bad: list[tuple[int, str]] = []
        bar = tqdm(total=n, desc=f"caching {reader.format} ({spec.fs:g} Hz, {spec.length})", unit="ECG",
                   disable=not progress or n == 0)
        if workers > 1 and len(jobs) > 1:
            with mp.get_context("fork").Pool(workers) as pool:
                for job, result in zip(jobs, pool.imap(_build_chunk, jobs)):
                    bad.extend(result)
                    bar.update(job[4] - job[3])
        else:
            for job in jobs:
                bad.extend(_build_chunk(job))
                bar.update(job[4] - job[3])
        bar.close()
        ids = reader.ids
        write_text(tmp / "ids.txt", "\n".join(ids))
        write_json(tmp / "meta.json", {"version": CACHE_VERSION, "key": key, "source": _source_tag(reader),
                                       "format": reader.format, "spec": spec.to_dict(), "dtype": dtype,
                                       "count": n, "bad": {ids[i]: reason for i, reason in bad}})
        try:
            os.replace(tmp, folder)
        except OSError:  # another process finished the same cache first
            shutil.rmtree(tmp, ignore_errors=True)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    _prune_stale(cache_dir, folder, reader, spec, dtype)
    return SignalCache.open(folder)


def _prune_stale(cache_dir: Path, keep: Path, reader: Reader, spec: PreprocessSpec, dtype: str) -> None:
    """Remove caches of the same source and spec whose files have since changed (they can never be hit again)."""
    tag, wanted = _source_tag(reader), json.loads(json.dumps(spec.to_dict()))  # as stored (tuples → lists)
    for other in cache_dir.glob(f"{reader.format}-*"):
        if other == keep or not (other / "meta.json").exists():
            continue
        try:
            meta = json.loads((other / "meta.json").read_text())
        except (OSError, ValueError):
            continue
        if meta.get("source") == tag and meta.get("spec") == wanted and meta.get("dtype") == dtype:
            shutil.rmtree(other, ignore_errors=True)
