"""Records streamed without a cache: read, checked and preprocessed once, a chunk at a time, in worker processes a
bounded queue ahead of the models (``stream_chunks``)."""
from __future__ import annotations

import collections
import dataclasses
import multiprocessing as mp
from concurrent.futures import ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass
from typing import Iterator

import numpy as np

from models.preprocessing import PreprocessSpec
from utils.errors import RecordError, UserError
from utils.machine import usable_cores

from .checks import load_block_safely, prepare_windows
from .records import Reader

CHUNK = 64


def chunk_bounds(count: int, chunk: int = CHUNK) -> list[tuple[int, int]]:
    """Records 0..count-1 as consecutive (start, stop) chunks of ``chunk`` records (the last may be shorter)."""
    return [(start, min(start + chunk, count)) for start in range(0, count, chunk)]


def chunk_jobs(reader: Reader, bounds: list[tuple[int, int]], *shared) -> Iterator[tuple]:
    """One job per chunk, ``(part, *shared, start, stop)``: ``part`` is a reader of the chunk's records only
    (Reader.part), made as the job is drawn, so a worker is sent its own records and never the whole table."""
    return ((reader.part(start, stop), *shared, start, stop) for start, stop in bounds)


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
    part, specs, start, stop = job  # part: records start..stop-1 (Reader.part)
    windows, inputs, bad = np.zeros((stop - start, len(specs)), np.int64), [], []
    for offset, item in enumerate(load_block_safely(part, 0, stop - start)):
        try:
            xs = prepare_windows(item, specs, part.ids[offset])
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
    bounds = chunk_bounds(len(reader), chunk)
    jobs = chunk_jobs(reader, bounds, specs)
    if workers <= 0 or len(bounds) < 2:
        yield from map(_prepare_chunk, jobs)
        return
    # a pool that notices a worker's death (a kill, the kernel's out-of-memory killer): the job fails at once
    # instead of waiting forever for a result no process will send
    pool = ProcessPoolExecutor(workers, mp_context=mp.get_context("fork"))
    try:
        pending = collections.deque()
        for job in jobs:
            pending.append(pool.submit(_prepare_chunk, job))
            if len(pending) >= 2 * workers:
                yield _result(pending.popleft(), reader)
        while pending:
            yield _result(pending.popleft(), reader)
    finally:
        pool.shutdown(wait=True, cancel_futures=True)


def _result(future, reader: Reader) -> Chunk:
    try:
        return future.result()
    except BrokenProcessPool:
        raise UserError(f"{reader.location}: a worker process reading and preprocessing the records died (killed, "
                        f"perhaps by the system for lack of memory); nothing was written. Run again with fewer "
                        f"--num_workers (0: none) or with --cache on") from None


def default_stream_workers() -> int:
    """Worker processes that read and preprocess beside the model when nothing is cached: one core is left to
    the model (on two cores: one worker)."""
    cpus = usable_cores()
    return max(0, min(4, cpus - 1))

