"""The one data-source module: from a reader to model-ready rows — the preprocessing cache (or on-the-fly
preprocessing), opening it under torch.distributed, what makes a record or label bad, and the one bad-input
policy.

Policy (``--on_bad``): ``error`` (default) stops before anything is written and lists every bad record with its
reason (the interfaces exit with code 2); ``skip`` leaves the bad records out and says how many; ``fill`` (only
for predictions) writes the training median age for them.

The cache: preprocess once, then every epoch reads contiguous memory.

A cache is a folder ``<cache_dir>/<format>-<key>/`` with ``signals.npy`` (rows of (12, L) model inputs, opened as a
memory map), ``windows.npy`` (for W > 1 windows per record — test-time augmentation — the row of each record's
windows; identical windows share one row), ``ids.txt`` and ``meta.json`` (written last: a cache without it is
incomplete and is rebuilt).

The key covers everything that changes a model input: the preprocessing spec of every window, the stored dtype, the
reader's settings (sampling rate, amplitude scale, dataset names, rate) and version, the lead order, the record ids,
and the content of every source file (resolved name, size, modification time, inode and a hash of its first and
last 4 KiB). Changing any of them builds a new cache and removes the old one of the same source. Bad records
(unreadable, wrong shape, non-finite or flat leads) do not stop the build: they are listed in ``meta.json`` and
the caller applies the bad-input policy to the whole list at once. Access failures (permissions, vanished files,
I/O errors) are never cached: a build that meets one is used by that run only (its files are unlinked at once). A
build killed midway leaves a temporary folder named with its host and process id, removed by the next build there.

Under torch.distributed the first process of every machine builds the cache (once per node-local disk; on shared
storage the first to finish wins) while the others wait, then every process opens it.
"""
from __future__ import annotations

import collections
import dataclasses
import errno
import hashlib
import json
import logging
import multiprocessing as mp
import os
import re
import shutil
import socket
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator, Union

import numpy as np
import pandas as pd
from tqdm import tqdm

from models.preprocessing import PreprocessSpec, preprocess
from utils.bounds import (
    AGE_RANGE,
    CLI_SCALE_REMEDY,
    MAX_FS,
    MIN_FS,
    MIN_SECONDS,
    age_problem,
    amplitude_problem,
)
from utils.errors import BadInputError, CheckpointError, OutputError, RecordError, UserError
from utils.io import write_json, write_text
from utils.machine import usable_cores
from utils.paths import CACHE_DIR
from utils.ranks import barrier, is_local_main, is_main
from utils.settings import Settings, runtime

from .labels import unknown_age_reason
from .records import LEADS, READER_VERSION, Reader, Record

logger = logging.getLogger(__name__)
CACHE_VERSION = 3
CHUNK = 64
HOST = socket.gethostname()


def check_record(record: Record, remedy: str = CLI_SCALE_REMEDY) -> str | None:
    """Why a raw record cannot be used, or None (``remedy``: the fix a unit error names). Shape problems are
    raised by the readers already."""
    signal = record.signal
    if not np.isfinite(signal).all():
        bad = int((~np.isfinite(signal)).sum())
        return f"has {bad} NaN/Inf sample(s)"
    flat = [i for i in range(signal.shape[0]) if not np.any(signal[i])]
    if flat:
        return f"has flat (all-zero) lead(s) {', '.join(LEADS[i] for i in flat)}"
    if record.fs is None or not MIN_FS <= record.fs <= MAX_FS:
        return f"has a sampling rate of {record.fs} Hz; this pipeline reads {MIN_FS:g}–{MAX_FS:g} Hz"
    if signal.shape[-1] < MIN_SECONDS * record.fs:
        return f"lasts {signal.shape[-1] / record.fs:.2f} s, shorter than the {MIN_SECONDS:g} s minimum"
    return amplitude_problem(signal, remedy)


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
        # the library's own text may quote the file's fields: only its kind is named
        return RecordError(f"record {reader.ids[index]}", f"cannot be read (the reader failed: {type(exc).__name__})")


def load_block_safely(reader: Reader, start: int, stop: int) -> list[Record | RecordError]:
    """Records start..stop-1 (one read where the format allows), each a Record or its RecordError."""
    try:
        return list(reader.load_block(start, stop))
    except Exception:  # noqa: BLE001 - fall back to one record at a time to find the bad ones
        return [load_safely(reader, i) for i in range(start, stop)]


def cache_key(reader: Reader, specs: list[PreprocessSpec], dtype: str, check: str = "auto") -> str:
    digest = hashlib.sha256(json.dumps(_identity(reader, specs, dtype), sort_keys=True).encode())
    digest.update(reader.fingerprint(check).encode())
    digest.update("\n".join(reader.ids).encode())
    return digest.hexdigest()[:20]


def _identity(reader: Reader, specs: list[PreprocessSpec], dtype: str) -> dict:
    """What, besides the files' content and the ids, makes a cache: JSON-normalised (tuples → lists)."""
    return json.loads(json.dumps({"v": CACHE_VERSION, "reader": READER_VERSION, "format": reader.format,
                                  "settings": reader.settings(), "leads": LEADS, "dtype": dtype,
                                  "specs": [spec.to_dict() for spec in specs]}))


class CorruptCache(Exception):
    """A cache folder whose files are damaged; it is removed and rebuilt."""


@dataclass
class SignalCache:
    """Preprocessed rows of a reader's records; ``windows[i]`` lists the rows of record i's W windows."""

    folder: Path
    signals: np.ndarray  # (rows, 12, L) memmap
    ids: list[str]
    bad: dict[str, str]  # id → reason
    windows: np.ndarray | None = None  # (N, W) int64; None: one window, row i is record i

    def __post_init__(self):
        if self.windows is None:
            self.windows = np.arange(len(self.signals), dtype=np.int64)[:, None]

    @classmethod
    def open(cls, folder: Path, expected_ids: list[str] | None = None) -> "SignalCache":
        """Open a complete cache; raises CorruptCache when any of its files is damaged or inconsistent (a
        truncated signals.npy, an unreadable meta.json, ids or windows that do not match)."""
        try:
            meta = json.loads((folder / "meta.json").read_text())
            signals = np.load(folder / "signals.npy", mmap_mode="r")
            ids = (folder / "ids.txt").read_text().split("\n") if meta["count"] else []
            windows = np.load(folder / "windows.npy") if (folder / "windows.npy").exists() else None
            width = 1 if windows is None else windows.shape[1]
            consistent = len(ids) == meta["count"] and signals.ndim == 3 and signals.shape[0] == meta["count"] * width \
                and (windows is None or (windows.shape[0] == len(ids) and windows.dtype.kind == "i"
                                         and (not windows.size or 0 <= windows.min() <= windows.max() < len(signals))))
            if not consistent or (expected_ids is not None and ids != expected_ids) or not isinstance(meta["bad"],
                                                                                                    dict):
                raise ValueError("its files do not agree with each other")
            return cls(folder, signals, ids, dict(meta["bad"]), windows)
        except (OSError, ValueError, KeyError, TypeError, AttributeError, IndexError) as exc:
            raise CorruptCache(f"{folder}: {type(exc).__name__}: {exc}") from exc

    def rows(self, positions) -> np.ndarray:
        return self.windows[np.asarray(positions, dtype=np.int64)]

    def read(self, rows: np.ndarray) -> np.ndarray:
        order = np.argsort(rows, kind="stable")  # one sorted fancy-index read of the memory map
        out = np.empty((len(rows),) + self.signals.shape[1:], np.float32)
        out[order] = self.signals[rows[order]]
        return out


@dataclass
class OnTheFly:
    """The no-cache source: row i·W + w is record i under ``specs[w]``, read and preprocessed when asked for."""

    reader: Reader
    specs: list[PreprocessSpec]

    def rows(self, positions) -> np.ndarray:
        width = len(self.specs)
        return np.asarray(positions, dtype=np.int64)[:, None] * width + np.arange(width)

    def read(self, rows: np.ndarray) -> np.ndarray:
        width = len(self.specs)
        return np.stack([prepare(self.reader.load(int(r) // width), self.specs[int(r) % width]) for r in rows])


def prepare_windows(item: Record | RecordError, specs: list[PreprocessSpec], record_id: str) -> list[np.ndarray]:
    """The model inputs of a loaded record under each of ``specs``, the record checked once; every failure is
    raised as a RecordError naming the record."""
    if isinstance(item, RecordError):
        raise item
    reason = check_record(item)
    if reason:
        raise RecordError(f"record {record_id}", reason)
    inputs = []
    for spec in specs:
        try:
            x = preprocess(item.signal, item.fs, spec)
        except Exception as exc:  # noqa: BLE001 - e.g. a record too short for the band-pass filter
            raise RecordError(f"record {record_id}", f"cannot be preprocessed ({type(exc).__name__}: {exc})") \
                from exc
        if not np.isfinite(x).all():
            raise RecordError(f"record {record_id}", "gives non-finite values after preprocessing")
        inputs.append(x)
    return inputs


@dataclass
class Chunk:
    """Records ``start``..``stop``-1 read, checked and preprocessed once, in memory — a source like the cache:
    ``windows[i]`` are the rows of record start+i's windows (one per spec; identical windows share a row),
    ``inputs`` the rows; ``bad``: (position, reason) of the records that cannot be used."""

    start: int
    stop: int
    windows: np.ndarray
    inputs: list
    bad: list

    def rows(self, positions) -> np.ndarray:
        return self.windows[np.asarray(positions, dtype=np.int64) - self.start]

    def read(self, rows: np.ndarray) -> np.ndarray:
        return np.stack([self.inputs[int(r)] for r in rows]).astype(np.float32, copy=False)

    def view(self, columns: list[int]) -> "Chunk":
        """The same rows under the specs at ``columns`` (one member's windows of a union of specs)."""
        return dataclasses.replace(self, windows=self.windows[:, columns])


def _prepare_chunk(job) -> Chunk:
    reader, specs, start, stop = job
    windows, inputs, bad = np.zeros((stop - start, len(specs)), np.int64), [], []
    for offset, item in enumerate(load_block_safely(reader, start, stop)):
        try:
            xs = prepare_windows(item, specs, reader.ids[start + offset])
        except RecordError as exc:
            bad.append((start + offset, str(exc)))
            continue
        for w, x in enumerate(xs):
            same = next((v for v in range(w) if xs[v].shape == x.shape and np.array_equal(xs[v], x)), None)
            if same is None:
                windows[offset, w] = len(inputs)
                inputs.append(x)
            else:
                windows[offset, w] = windows[offset, same]
    return Chunk(start, stop, windows, inputs, bad)


def stream_chunks(reader: Reader, specs: list[PreprocessSpec], workers: int = 0,
                  chunk: int = CHUNK) -> Iterator[Chunk]:
    """Every record of ``reader`` read, checked and preprocessed under ``specs`` exactly once, ``chunk`` records at
    a time and in order; with ``workers`` > 0 in worker processes that stay at most 2 × workers chunks ahead of the
    consumer (so reading and preprocessing overlap the model, and memory stays bounded whatever the input's
    size)."""
    jobs = [(reader, specs, start, min(start + chunk, len(reader))) for start in range(0, len(reader), chunk)]
    if workers <= 0 or len(jobs) < 2:
        yield from map(_prepare_chunk, jobs)
        return
    with mp.get_context("fork").Pool(workers) as pool:
        pending = collections.deque()
        for job in jobs:
            pending.append(pool.apply_async(_prepare_chunk, (job,)))
            if len(pending) >= 2 * workers:
                yield pending.popleft().get()
        while pending:
            yield pending.popleft().get()


def default_stream_workers() -> int:
    """Worker processes that read and preprocess beside the model when nothing is cached: one core is left to
    the model (on two cores: one worker)."""
    cpus = usable_cores()
    return max(0, min(4, cpus - 1))


def _build_chunk(job) -> tuple[list[tuple[int, str, bool]], np.ndarray]:
    """Preprocess records start..stop-1 into their rows; returns (bad records (index, reason, transient), the
    windows' rows). Identical windows of a record (a record no longer than one window) share a row."""
    reader, specs, path, start, stop = job
    signals = np.load(path, mmap_mode="r+")
    width, ids = len(specs), reader.ids
    bad, windows = [], np.arange(start * width, stop * width, dtype=np.int64).reshape(-1, width)
    for offset, item in enumerate(load_block_safely(reader, start, stop)):
        index = start + offset
        try:
            inputs = prepare_windows(item, specs, ids[index])
        except RecordError as exc:
            bad.append((index, str(exc), bool(getattr(exc, "transient", False))))
            continue
        for w, x in enumerate(inputs):
            same = next((v for v in range(w) if np.array_equal(inputs[v], x)), w)
            windows[offset, w] = windows[offset, same]
            if same == w:
                signals[windows[offset, w]] = x
    signals.flush()
    return bad, windows


def _allocate(path: Path) -> None:
    """Reserve the disk blocks of a memory-mapped file before it is written: a full disk then fails here with
    ENOSPC instead of killing the writer with SIGBUS halfway through (or hanging a pool of workers)."""
    if not hasattr(os, "posix_fallocate"):
        return
    fd = os.open(path, os.O_RDWR)
    try:
        os.posix_fallocate(fd, 0, os.fstat(fd).st_size)
    except OSError as exc:
        if exc.errno in (errno.EOPNOTSUPP, errno.EINVAL, errno.ENOSYS):  # a filesystem without fallocate
            return
        raise
    finally:
        os.close(fd)


def _run_jobs(jobs: list, width: int, workers: int, bar) -> tuple[list, np.ndarray]:
    if workers > 1 and len(jobs) > 1:
        with mp.get_context("fork").Pool(workers) as pool:
            return _collect(jobs, pool.imap(_build_chunk, jobs), width, bar)
    return _collect(jobs, map(_build_chunk, jobs), width, bar)


def _collect(jobs: list, results, width: int, bar) -> tuple[list, np.ndarray]:
    bad, windows = [], [np.zeros((0, width), np.int64)]
    for job, (chunk_bad, chunk_windows) in zip(jobs, results):
        bad.extend(chunk_bad)
        windows.append(chunk_windows)
        bar.update(job[4] - job[3])
    return bad, np.concatenate(windows)


def _source_tag(reader: Reader, specs: list[PreprocessSpec], dtype: str) -> str:
    """Same records, settings and preprocessing: a newer cache of the same tag replaces an older one."""
    identity = json.dumps({"location": reader.location, **_identity(reader, specs, dtype)}, sort_keys=True)
    return hashlib.sha256(identity.encode()).hexdigest()[:16]


def _writable(cache_dir: Path) -> None:
    try:
        cache_dir.mkdir(parents=True, exist_ok=True)
        probe = cache_dir / f".probe.{HOST}.{os.getpid()}"
        probe.touch()
        probe.unlink()
    except OSError as exc:
        raise UserError(f"cannot write the preprocessing cache in {cache_dir} ({exc.strerror or exc}); pass "
                        f"--cache_dir with a writable folder, or --cache off") from exc


def _remove_abandoned(cache_dir: Path) -> None:
    """Temporary folders of builds on this host whose process is gone (killed midway)."""
    for tmp in cache_dir.glob(f".*.{re.escape(HOST)}.*.tmp"):
        pid = tmp.name.rsplit(".", 2)[-2]
        if pid.isdigit() and not _alive(int(pid)):
            shutil.rmtree(tmp, ignore_errors=True)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def build_cache(reader: Reader, specs: PreprocessSpec | list[PreprocessSpec], cache_dir: str | os.PathLike,
                dtype: str = "float32", workers: int | None = None, progress: bool = True,
                check: str = "auto") -> SignalCache:
    """Open the cache of ``reader`` under ``specs`` (one spec per window), building it (in parallel, with a
    progress bar) if needed; ``check`` is how the source files are identified (see records.fingerprint_files). A
    damaged cache is rebuilt; a full disk is an OutputError (exit 2), with nothing left behind."""
    specs = specs if isinstance(specs, list) else [specs]
    cache_dir = Path(cache_dir)
    key = cache_key(reader, specs, dtype, check)
    folder = cache_dir / f"{reader.format}-{key}"
    if (folder / "meta.json").exists():
        try:
            return SignalCache.open(folder, reader.ids)
        except CorruptCache as exc:  # damaged since it was built: rebuilt below
            logger.warning(f"note: the preprocessing cache {exc} is damaged; rebuilding it")
            shutil.rmtree(folder, ignore_errors=True)
    _writable(cache_dir)
    _remove_abandoned(cache_dir)
    tmp = cache_dir / f".{folder.name}.{HOST}.{os.getpid()}.tmp"
    shutil.rmtree(tmp, ignore_errors=True)
    try:
        tmp.mkdir()
        transient = _fill(tmp, reader, specs, dtype, key, workers, progress)
    except (OSError, OutputError) as exc:
        shutil.rmtree(tmp, ignore_errors=True)
        raise _cache_write_error(cache_dir, exc) from exc
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    if transient:  # never cached: this run uses it (memory-mapped, then unlinked), the next one reads again
        cache = SignalCache.open(tmp)
        shutil.rmtree(tmp, ignore_errors=True)
        return cache
    try:
        os.replace(tmp, folder)
    except OSError:  # another process finished the same cache first
        shutil.rmtree(tmp, ignore_errors=True)
    _prune_stale(cache_dir, folder, _source_tag(reader, specs, dtype))
    return SignalCache.open(folder)


def _cache_write_error(cache_dir: Path, exc: OSError | OutputError) -> OutputError:
    full = getattr(exc, "errno", None) == errno.ENOSPC or "disk is full" in str(exc)
    reason = "the disk is full" if full else (getattr(exc, "strerror", None) or str(exc))
    return OutputError(f"cannot write the preprocessing cache in {cache_dir}: {reason}; nothing was cached. Free "
                       f"space, pass --cache_dir with a folder on a larger disk, or --cache off")


def _fill(tmp: Path, reader: Reader, specs: list[PreprocessSpec], dtype: str, key: str, workers: int | None,
          progress: bool) -> bool:
    """Build a cache's files in ``tmp``; True when a record failed for a transient reason (access)."""
    n, width = len(reader), len(specs)
    signals = np.lib.format.open_memmap(tmp / "signals.npy", mode="w+", dtype=dtype,
                                        shape=(n * width, 12, specs[0].length))
    signals.flush()
    del signals
    _allocate(tmp / "signals.npy")
    jobs = [(reader, specs, tmp / "signals.npy", s, min(s + CHUNK, n)) for s in range(0, n, CHUNK)]
    bar = tqdm(total=n, desc=f"caching {reader.format} ({specs[0].fs:g} Hz, {specs[0].length}"
                             f"{f', {width} windows' if width > 1 else ''})", unit="ECG", disable=not progress or not n)
    workers = workers if workers is not None else min(len(jobs), os.cpu_count() or 1)
    bad, windows = _run_jobs(jobs, width, workers, bar)
    bar.close()
    ids = reader.ids
    write_text(tmp / "ids.txt", "\n".join(ids))
    if width > 1:
        np.save(tmp / "windows.npy", windows)
    write_json(tmp / "meta.json", {"version": CACHE_VERSION, "key": key, "source": _source_tag(reader, specs, dtype),
                                   "format": reader.format, "specs": [s.to_dict() for s in specs], "dtype": dtype,
                                   "count": n, "bad": {ids[i]: reason for i, reason, _ in bad}})
    return any(transient for _, _, transient in bad)


def _prune_stale(cache_dir: Path, keep: Path, tag: str) -> None:
    """Remove caches of the same source, settings and preprocessing whose files have since changed (they can
    never be hit again)."""
    for other in cache_dir.glob(f"{keep.name.split('-')[0]}-*"):
        if other == keep or not (other / "meta.json").exists():
            continue
        try:
            meta = json.loads((other / "meta.json").read_text())
        except (OSError, ValueError):
            continue
        if meta.get("source") == tag:
            shutil.rmtree(other, ignore_errors=True)


# where a Dataset reads its rows: the memory-mapped cache, or a reader whose records are preprocessed per item
Source = Union[SignalCache, OnTheFly]


@dataclasses.dataclass(frozen=True)
class CacheConfig:
    """``--cache``, ``--cache_dir``, ``--cache_dtype`` (resolved) and ``--cache_check``, and whether to show a
    progress bar."""

    enabled: bool = True
    folder: Path = CACHE_DIR
    dtype: str = "float32"
    progress: bool = True
    check: str = "auto"

    def quiet(self) -> "CacheConfig":
        return dataclasses.replace(self, progress=False)


@dataclass(frozen=True)
class CacheOptions(Settings):
    """The cache options as given (``--cache``, ``--cache_dir``, ``--cache_dtype``, ``--cache_check``); the dtype
    changes what a model learns from (its inputs' rounding), the rest is runtime."""

    cache: str = runtime("on")
    cache_dir: str = runtime(str(CACHE_DIR))
    cache_dtype: str = "auto"
    cache_check: str = runtime("auto")

    def config(self, precision: str, progress: bool = True) -> CacheConfig:
        return CacheConfig(enabled=self.cache == "on", folder=Path(self.cache_dir),
                           dtype=resolve_cache_dtype(self.cache_dtype, precision), progress=progress,
                           check=self.cache_check)


def resolve_cache_dtype(choice: str, precision: str) -> str:
    """'auto': float32 for fp32 runs (bit-exact inputs), float16 for bf16 runs (half the disk and memory)."""
    return choice if choice != "auto" else ("float16" if precision == "bf16" else "float32")


def open_source(reader: Reader, specs: PreprocessSpec | list[PreprocessSpec],
                cache: CacheConfig) -> tuple[Source, dict[str, str]]:
    """(source, {id: reason} of bad records) — see dataloader.sources.open_source_local."""
    if not cache.enabled:
        return open_source_local(reader, specs, cache)
    if is_local_main():
        opened = open_source_local(reader, specs, cache if is_main() else cache.quiet())
    barrier()
    if not is_local_main():
        opened = open_source_local(reader, specs, cache.quiet())
    return opened


def open_source_local(reader: Reader, specs: PreprocessSpec | list[PreprocessSpec],
                      cache: CacheConfig) -> tuple[Source, dict[str, str]]:
    """The cache of ``reader`` under ``specs`` (one per window; built if needed), or the reader itself for
    on-the-fly preprocessing; returns (source, {id: reason} of bad records)."""
    specs = specs if isinstance(specs, list) else [specs]
    if not cache.enabled:
        return OnTheFly(reader, specs), scan_bad(reader, specs)
    source = build_cache(reader, specs, Path(cache.folder), dtype=cache.dtype, progress=cache.progress,
                         check=cache.check)
    return source, dict(source.bad)


def scan_bad(reader: Reader, specs: list[PreprocessSpec]) -> dict[str, str]:
    """Read and preprocess every record once to find the bad ones (the no-cache path)."""
    bad = {}
    ids = reader.ids
    for i in range(len(reader)):
        try:
            prepare_windows(load_safely(reader, i), specs, ids[i])
        except RecordError as exc:
            bad[ids[i]] = str(exc)
    return bad


def duplicate_ids(table: pd.DataFrame) -> dict[str, str]:
    """Ids listed more than once, and a missing (empty) id, which cannot name a record in any output."""
    dup = table["id"][table["id"].duplicated(keep=False)]
    bad = {i: f"id {i} appears {int((dup == i).sum())} times" for i in dup.unique()}
    if (table["id"] == "").any():
        bad[""] = f"{int((table['id'] == '').sum())} record(s) have no id"
    return bad


def label_problems(table: pd.DataFrame) -> dict[str, str]:
    """Records whose age label is missing, non-numeric, PTB-XL's unknown 300, or outside the plausible ages
    (``age_raw``, where a reader keeps it, says which)."""
    out = {}
    ages = pd.to_numeric(table["age"], errors="coerce") if "age" in table.columns else \
        pd.Series(np.nan, index=table.index)
    raw_labels = table["age_raw"] if "age_raw" in table.columns else None
    for i, (rid, age) in enumerate(zip(table["id"], ages)):
        if pd.isna(age):
            out[rid] = unknown_age_reason(None if raw_labels is None else raw_labels.iloc[i])
        elif age_problem(age):
            out[rid] = f"has an invalid age {age:g} (plausible ages: {AGE_RANGE[0]:g}–{AGE_RANGE[1]:g} years)"
    return out


def implausible_outputs(ages: np.ndarray, ids: list[str], bad: dict, source: str) -> dict[str, str]:
    """Records whose predicted age is not a plausible age (bad output, under the --on_bad policy like bad input).
    When no record gets a finite age at all, the model is what is broken: a CheckpointError."""
    readable = [i for i, rid in enumerate(ids) if rid not in bad]
    if readable and not np.isfinite(ages[readable]).any():
        raise CheckpointError(f"{source}: gives no finite age for any of the {len(readable)} readable record(s); "
                              f"the checkpoint is broken (diverged training or damaged weights), not the records")
    return {ids[i]: f"the model's output {age_problem(ages[i])} (bad output: not written)" for i in readable
            if age_problem(ages[i])}


def apply_policy(bad: dict[str, str], ids: list[str], on_bad: str, what: str, hint: str = "") -> np.ndarray:
    """Positions of ``ids`` to keep. Raises BadInputError under 'error' when any id is bad."""
    flagged = [i for i, rid in enumerate(ids) if rid in bad]
    if not flagged:
        return np.arange(len(ids))
    problems = list(dict.fromkeys(  # one line per bad id, in input order
        bad[ids[i]] if bad[ids[i]].startswith(("record ", ids[i])) else f"{ids[i]}: {bad[ids[i]]}" for i in flagged))
    if on_bad == "error":
        raise BadInputError(problems, hint or f"Fix or remove them, or pass --on_bad skip to {what} without them.")
    logger.warning(f"{len(flagged)} bad record(s) left out of {what} (--on_bad {on_bad}):\n  "
                   + "\n  ".join(problems[:50])
                   + (f"\n  ... and {len(problems) - 50} more" if len(problems) > 50 else ""))
    keep = np.ones(len(ids), bool)
    keep[flagged] = False
    return np.flatnonzero(keep)
