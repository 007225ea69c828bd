"""Records → one age each, whatever runs the model (PyTorch in engine/inference.py, onnxruntime in
engine/onnx_engine.py): the data source (cache or on the fly) under every window (``--tta``), the bad records, each
distinct window predicted once and each record's age the mean of its windows. No torch here."""
from __future__ import annotations

from typing import Callable

import numpy as np

from dataloader.records import Reader
from dataloader.sources import CacheConfig, duplicate_ids, open_source
from models.preprocessing import PreprocessSpec


def record_ages(reader: Reader, specs: list[PreprocessSpec], cache: CacheConfig,
                predict: Callable[[object, np.ndarray], np.ndarray]) -> tuple[np.ndarray, dict]:
    """Ages for every record of ``reader`` (NaN for bad ones) and {id: reason} of the bad records; ``predict(source,
    positions)`` gives the ages of the good records' positions (see :func:`window_means`)."""
    source, bad = open_source(reader, specs, cache)
    bad.update(duplicate_ids(reader.table))
    ages = np.full(len(reader), np.nan)
    good = np.array([i for i, rid in enumerate(reader.ids) if rid not in bad], dtype=np.int64)
    if len(good):
        ages[good] = predict(source, good)
    return ages, bad


def window_means(source, positions: np.ndarray,
                 row_ages: Callable[[np.ndarray, np.ndarray], np.ndarray]) -> np.ndarray:
    """The ages of the records at ``positions`` of an open source, in that order: the mean over each record's
    windows, where ``row_ages(rows, owners)`` gives the ages of distinct source rows (``owners``: the record
    position each row belongs to)."""
    windows = source.rows(positions)  # (records, W) rows of the source
    unique, first, inverse = np.unique(windows, return_index=True, return_inverse=True)
    owners = np.repeat(positions, windows.shape[1])[first]
    return row_ages(unique, owners)[inverse.reshape(windows.shape)].mean(axis=1)
