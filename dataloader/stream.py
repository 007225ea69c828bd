"""Records streamed without a cache: read, checked and preprocessed once, a chunk at a time, in worker processes a
bounded queue ahead of the models (``stream_chunks``). A worker hands its chunk's model inputs over in shared
memory (a slot per chunk in flight), not pickled through a pipe."""
from __future__ import annotations

import collections
import dataclasses
import mmap
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
from .fingerprint import NONE, PRINTS, of_item
from .records import LEADS, Reader

CHUNK = 64
INPUT = np.dtype(np.float32)  # a model input's type (models.preprocessing.preprocess)
_SLOTS: list[mmap.mmap] = []  # in a worker: the parent's slots, inherited through the fork (_attach)


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
    ``inputs`` the rows; ``bad``: (position, reason) of the records that cannot be used; ``prints``: each record's
    fingerprint (dataloader.fingerprint; NONE where it could not be read)."""

    start: int
    stop: int
    windows: np.ndarray
    inputs: list
    bad: list
    prints: np.ndarray

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
    prints = np.full(stop - start, NONE, PRINTS)
    for offset, item in enumerate(load_block_safely(part, 0, stop - start)):
        prints[offset] = of_item(item)
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
    return Chunk(start, stop, windows, inputs, bad, prints)


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
    # one slot of shared memory per chunk in flight, made before the workers are forked (so they have it): a
    # worker writes its chunk's inputs there and sends only where they lie. Pickled through the pipe, a chunk of
    # 500-Hz inputs (15 MB) cost the two processes about 65 ms of CPU time more (bench/README.md, "The hand-over")
    slots = [mmap.mmap(-1, slot_bytes(specs, chunk)) for _ in range(2 * workers)]
    free = collections.deque(range(len(slots)))
    # a pool that notices a worker's death (a kill, the kernel's out-of-memory killer): the job fails at once
    # instead of waiting forever for a result no process will send
    pool = ProcessPoolExecutor(workers, mp_context=mp.get_context("fork"), initializer=_attach, initargs=(slots,))
    try:
        pending = collections.deque()
        for job in jobs:
            slot = free.popleft()  # one is free: at most len(slots) chunks are in flight
            pending.append((pool.submit(_prepare_into, job, slot), slot))
            if len(pending) >= len(slots):
                yield _received(pending.popleft(), slots, free, reader)
        while pending:
            yield _received(pending.popleft(), slots, free, reader)
    finally:
        pool.shutdown(wait=True, cancel_futures=True)


def slot_bytes(specs: list[PreprocessSpec], chunk: int) -> int:
    """The bytes of a chunk's inputs at most: one float32 (12, length) window per record and spec."""
    return chunk * len(LEADS) * sum(spec.length for spec in specs) * INPUT.itemsize


def _attach(slots: list[mmap.mmap]) -> None:
    global _SLOTS
    _SLOTS = slots


def _prepare_into(job, slot: int) -> tuple[Chunk, list | None]:
    """In a worker: the chunk of ``job`` with its inputs written into ``slot``, and where each lies ((offset,
    shape); None where they did not fit, which the slot's size rules out: then they travel pickled)."""
    chunk = _prepare_chunk(job)
    buffer, offset, placed = _SLOTS[slot], 0, []
    for x in chunk.inputs:
        if x.dtype != INPUT or offset + x.nbytes > len(buffer):
            return chunk, None
        np.ndarray(x.shape, INPUT, buffer, offset)[...] = x
        placed.append((offset, x.shape))
        offset += x.nbytes
    return dataclasses.replace(chunk, inputs=[]), placed


def _received(entry, slots: list[mmap.mmap], free: collections.deque, reader: Reader) -> Chunk:
    """A finished job's chunk with its inputs copied out of its slot (the consumer's own: the slot is free again at
    once)."""
    future, slot = entry
    chunk, placed = _result(future, reader)
    if placed is not None:
        ends = [offset + int(np.prod(shape)) * INPUT.itemsize for offset, shape in placed]
        block = np.frombuffer(slots[slot], np.uint8, max(ends, default=0)).copy()
        chunk = dataclasses.replace(chunk, inputs=[np.ndarray(shape, INPUT, block, offset) for offset, shape in placed])
    free.append(slot)
    return chunk


def _result(future, reader: Reader):
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

