"""Records → one age each per model, whatever runs the models (PyTorch in engine/predict/inference.py, onnxruntime in
engine/predict/onnx_engine.py): the data source under every window (``--tta``), the bad records, each distinct window
predicted once and each record's age the mean of its windows. No torch here.

Each record is read, checked and preprocessed once per run, for every model of an ensemble together: from the
cache (built once per distinct preprocessing), or — with the cache off — in one streamed pass
(dataloader.stream.stream_chunks: chunks of records prepared in worker processes while the models run on the
previous ones; a model may return a chunk's ages pending, and they are collected once the next chunk's work has
started). The ages are written only after the whole pass (all or nothing stays the caller's rule).
"""
from __future__ import annotations

import json
from typing import Callable

import numpy as np
from tqdm import tqdm

from dataloader.checks import duplicate_ids
from dataloader.fingerprint import NONE, PRINTS
from dataloader.records import Reader
from dataloader.sources import CacheConfig, open_source
from dataloader.stream import chunk_bounds, stream_chunks
from models.preprocessing import PreprocessSpec

# (source, positions) → the ages of those records, or a Pending: the work started, a call that waits for its ages
Predict = Callable[[object, np.ndarray], "np.ndarray | Pending"]
Pending = Callable[[], np.ndarray]


def record_ages(reader: Reader, specs: list[PreprocessSpec], cache: CacheConfig, predict: Predict,
                workers: int = 0) -> tuple[np.ndarray, dict, np.ndarray]:
    """Ages for every record of ``reader`` (NaN for bad ones), {id: reason} of the bad records and every record's
    fingerprint; ``predict(source, positions)`` gives the ages of the good records' positions (see
    :func:`window_means`)."""
    (ages,), bad, prints = ensemble_record_ages(reader, [(specs, predict)], cache, workers)
    return ages, bad, prints


def ensemble_record_ages(reader: Reader, members: list[tuple[list[PreprocessSpec], Predict]], cache: CacheConfig,
                         workers: int = 0) -> tuple[list[np.ndarray], dict, np.ndarray]:
    """Every member's ages for every record (NaN for bad ones; a record bad for one member is bad for all),
    {id: reason} of the bad records and every record's fingerprint (dataloader.fingerprint, as it was read); a
    member is (its windows' specs, its ``predict``). With ``cache.enabled`` each distinct list of specs is one
    cache; otherwise one streamed pass with ``workers`` processes preparing chunks."""
    if cache.enabled:
        return _from_caches(reader, members, cache)
    union = list({json.dumps(s.to_dict(), sort_keys=True): s for specs, _ in members for s in specs}.values())
    columns = [[union.index(s) for s in specs] for specs, _ in members]
    bad = duplicate_ids(reader.table)
    ages = [np.full(len(reader), np.nan) for _ in members]
    prints = np.full(len(reader), NONE, PRINTS)
    chunks = stream_chunks(reader, union, workers)
    waiting = []  # the previous chunk's predictions, collected once the next chunk's have started
    for chunk in tqdm(chunks, total=len(chunk_bounds(len(reader))), unit="chunk", leave=False,
                      disable=not cache.progress, desc=f"{len(reader)} records"):
        bad.update({reader.ids[i]: reason for i, reason in chunk.bad})
        prints[chunk.start:chunk.stop] = chunk.prints
        good = np.array([i for i in range(chunk.start, chunk.stop) if reader.ids[i] not in bad], dtype=np.int64)
        started = [(k, good, predict(chunk.view(columns[k]), good)) for k, (_, predict) in enumerate(members)
                   if len(good)]
        _collect(waiting, ages)
        waiting = started
    _collect(waiting, ages)
    return ages, bad, prints


def settled(result) -> np.ndarray:
    """The ages a ``Predict`` gave: as they are, or waited for where they are pending."""
    return result() if callable(result) else result


def _collect(started: list, ages: list[np.ndarray]) -> None:
    for k, good, result in started:
        ages[k][good] = settled(result)


def _from_caches(reader: Reader, members: list, cache: CacheConfig) -> tuple[list[np.ndarray], dict, np.ndarray]:
    sources, bad = {}, duplicate_ids(reader.table)
    keys = [json.dumps([s.to_dict() for s in specs], sort_keys=True) for specs, _ in members]
    for key, (specs, _) in zip(keys, members):
        if key not in sources:  # one cache per distinct preprocessing
            sources[key], found = open_source(reader, specs, cache)
            bad.update(found)
    good = np.array([i for i, rid in enumerate(reader.ids) if rid not in bad], dtype=np.int64)
    ages = []
    for key, (_, predict) in zip(keys, members):
        member = np.full(len(reader), np.nan)
        if len(good):
            member[good] = settled(predict(sources[key], good))
        ages.append(member)
    return ages, bad, next(iter(sources.values())).prints


def window_rows(source, positions: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The distinct source rows under the records at ``positions`` (each window predicted once), the record
    position each row belongs to, and for each record its windows' indices into those rows (records × W)."""
    windows = source.rows(positions)  # (records, W) rows of the source
    unique, first, inverse = np.unique(windows, return_index=True, return_inverse=True)
    return unique, np.repeat(positions, windows.shape[1])[first], inverse.reshape(windows.shape)


def window_means(source, positions: np.ndarray,
                 row_ages: Callable[[np.ndarray, np.ndarray], np.ndarray]) -> np.ndarray:
    """The ages of the records at ``positions`` of an open source, in that order: the mean over each record's
    windows, where ``row_ages(rows, owners)`` gives the ages of distinct source rows (``owners``: the record
    position each row belongs to)."""
    rows, owners, inverse = window_rows(source, positions)
    return record_means(row_ages(rows, owners), inverse)


def record_means(row_ages: np.ndarray, inverse: np.ndarray) -> np.ndarray:
    """Each record's age: the mean of its windows' ages (``inverse`` from :func:`window_rows`)."""
    return row_ages[inverse].mean(axis=1)
