"""The data source: from a reader to model-ready rows — the preprocessing cache (or on-the-fly preprocessing) and
opening it under torch.distributed. What makes a record bad, and the policy, are dataloader/checks.py's; streaming
without a cache is dataloader/stream.py's.

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
from typing import Iterable, Union

import numpy as np
from tqdm import tqdm

from models.preprocessing import PreprocessSpec
from utils.errors import OutputError, RecordError, UserError
from utils.io import process_alive, write_json, write_text
from utils.paths import CACHE_DIR
from utils.ranks import barrier, is_local_main, is_main
from utils.settings import Settings, option, runtime

from .checks import load_block_safely, prepare, prepare_windows, scan
from .fingerprint import NONE, PRINTS, of_item
from .records import CACHE_CHECKS, LEADS, READER_VERSION, Reader
from .stream import chunk_bounds, chunk_jobs

logger = logging.getLogger(__name__)
CACHE_VERSION = 5  # 4: each record's fingerprint (prints.npy); 5: with its sketch

HOST = socket.gethostname()


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
    prints: np.ndarray | None = None  # (N,) each record's fingerprint (dataloader.fingerprint); None: not known

    def __post_init__(self):
        if self.windows is None:
            self.windows = np.arange(len(self.signals), dtype=np.int64)[:, None]
        if self.prints is None:
            self.prints = np.full(len(self.ids), NONE, PRINTS)

    @classmethod
    def open(cls, folder: Path, expected_ids: list[str] | None = None) -> "SignalCache":
        """Open a complete cache; raises CorruptCache when any of its files is damaged or inconsistent (a
        truncated signals.npy, an unreadable meta.json, ids or windows that do not match)."""
        try:
            meta = json.loads((folder / "meta.json").read_text())
            signals = np.load(folder / "signals.npy", mmap_mode="r")
            ids = (folder / "ids.txt").read_text().split("\n") if meta["count"] else []
            windows = np.load(folder / "windows.npy") if (folder / "windows.npy").exists() else None
            prints = np.load(folder / "prints.npy")
            width = 1 if windows is None else windows.shape[1]
            consistent = len(ids) == meta["count"] and signals.ndim == 3 and signals.shape[0] == meta["count"] * width \
                and prints.shape == (len(ids),) and prints.dtype == PRINTS \
                and (windows is None or (windows.shape[0] == len(ids) and windows.dtype.kind == "i"
                                         and (not windows.size or 0 <= windows.min() <= windows.max() < len(signals))))
            if not consistent or (expected_ids is not None and ids != expected_ids) or not isinstance(meta["bad"],
                                                                                                    dict):
                raise ValueError("its files do not agree with each other")
            return cls(folder, signals, ids, dict(meta["bad"]), windows, prints)
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
    prints: np.ndarray | None = None  # (N,) each record's fingerprint, where the records were scanned

    def rows(self, positions) -> np.ndarray:
        width = len(self.specs)
        return np.asarray(positions, dtype=np.int64)[:, None] * width + np.arange(width)

    def read(self, rows: np.ndarray) -> np.ndarray:
        width = len(self.specs)
        return np.stack([prepare(self.reader.load(int(r) // width), self.specs[int(r) % width]) for r in rows])


def _build_chunk(job) -> tuple[list[tuple[int, str, bool]], np.ndarray, np.ndarray]:
    """Preprocess records start..stop-1 into their rows; returns (bad records (index, reason, transient), the
    windows' rows, the records' fingerprints). Identical windows of a record (a record no longer than one window)
    share a row."""
    part, specs, path, start, stop = job  # part: records start..stop-1 (Reader.part)
    signals = np.load(path, mmap_mode="r+")
    width, ids = len(specs), part.ids
    bad, windows = [], np.arange(start * width, stop * width, dtype=np.int64).reshape(-1, width)
    prints = np.full(stop - start, NONE, PRINTS)
    for offset, item in enumerate(load_block_safely(part, 0, stop - start)):
        index = start + offset
        prints[offset] = of_item(item)
        try:
            inputs = prepare_windows(item, specs, ids[offset])
        except RecordError as exc:
            bad.append((index, str(exc), bool(getattr(exc, "transient", False))))
            continue
        for w, x in enumerate(inputs):
            same = next((v for v in range(w) if np.array_equal(inputs[v], x)), w)
            windows[offset, w] = windows[offset, same]
            if same == w:
                signals[windows[offset, w]] = x
    signals.flush()
    return bad, windows, prints


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


def _run_jobs(jobs: Iterable, count: int, width: int, workers: int, bar) -> tuple[list, np.ndarray, np.ndarray]:
    if workers > 1 and count > 1:
        with mp.get_context("fork").Pool(workers) as pool:
            return _collect(pool.imap(_build_chunk, jobs), width, bar)
    return _collect(map(_build_chunk, jobs), width, bar)


def _collect(results, width: int, bar) -> tuple[list, np.ndarray, np.ndarray]:
    bad, windows, prints = [], [np.zeros((0, width), np.int64)], [np.zeros(0, PRINTS)]
    for chunk_bad, chunk_windows, chunk_prints in results:
        bad.extend(chunk_bad)
        windows.append(chunk_windows)
        prints.append(chunk_prints)
        bar.update(len(chunk_windows))
    return bad, np.concatenate(windows), np.concatenate(prints)


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
        if pid.isdigit() and not process_alive(int(pid)):
            shutil.rmtree(tmp, ignore_errors=True)


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
    bounds = chunk_bounds(n)
    jobs = chunk_jobs(reader, bounds, specs, tmp / "signals.npy")
    bar = tqdm(total=n, desc=f"caching {reader.format} ({specs[0].fs:g} Hz, {specs[0].length}"
                             f"{f', {width} windows' if width > 1 else ''})", unit="ECG", disable=not progress or not n)
    workers = workers if workers is not None else min(len(bounds), os.cpu_count() or 1)
    bad, windows, prints = _run_jobs(jobs, len(bounds), width, workers, bar)
    bar.close()
    ids = reader.ids
    write_text(tmp / "ids.txt", "\n".join(ids))
    if width > 1:
        np.save(tmp / "windows.npy", windows)
    np.save(tmp / "prints.npy", prints)
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

    TITLE = "cache"

    cache: str = runtime("on", "preprocess once into an on-disk cache (off = preprocess in the loader)",
                         choices=("on", "off"))
    cache_dir: str = runtime(str(CACHE_DIR), "where the cache lives")
    cache_dtype: str = option("auto", "auto = float32 for fp32 runs (bit-exact), float16 for bf16 runs",
                              choices=("auto", "float32", "float16"))
    cache_check: str = runtime("auto", "how the cache recognises changed files: fast = name, size, time, inode and "
                                       "the first and last 4 KiB of each; full = a hash of every byte (also catches "
                                       "an edit in the middle that keeps size and time); auto = full when the files "
                                       "total at most 1 GiB", choices=CACHE_CHECKS)

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
        bad, prints = scan(reader, specs)
        return OnTheFly(reader, specs, prints), bad
    source = build_cache(reader, specs, Path(cache.folder), dtype=cache.dtype, progress=cache.progress,
                         check=cache.check)
    return source, dict(source.bad)










