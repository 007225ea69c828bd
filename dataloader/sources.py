"""From a reader to model-ready rows: the cache (or on-the-fly preprocessing) and the one bad-input policy.

Policy (``--on_bad``): ``error`` (default) stops before anything is written and lists every bad record with its
reason (the interfaces exit with code 2); ``skip`` leaves the bad records out and says how many; ``fill`` (only
for submissions) writes the training median age for them.
"""
from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pandas as pd

from utils.runtime import barrier, is_local_main, is_main

from .cache import SignalCache, build_cache, check_record, load_safely, prepare_item
from .preprocessing import PreprocessSpec
from .records import Reader, RecordError


class BadInputError(Exception):
    """Bad records or labels; ``problems`` lists every one as 'where: reason'."""

    def __init__(self, problems: list[str], hint: str = ""):
        self.problems = list(problems)
        shown = "\n  ".join(self.problems[:200])
        more = f"\n  ... and {len(self.problems) - 200} more" if len(self.problems) > 200 else ""
        super().__init__(f"{len(self.problems)} bad record(s); nothing was written:\n  {shown}{more}"
                         + (f"\n{hint}" if hint else ""))


def open_source(reader: Reader, spec: PreprocessSpec, cache: bool, cache_dir: str | os.PathLike,
                dtype: str = "float32", workers: int | None = None, progress: bool = True):
    """The cache of ``reader`` under ``spec``, or the reader itself for on-the-fly preprocessing. Returns
    (source, {id: reason} of bad records). Under torchrun the first process of every node builds the cache (once
    per node-local disk; on shared storage the first to finish wins) while the others wait, then open it."""
    if not cache:
        return (reader, spec), scan_bad(reader, spec)
    if is_local_main():
        source = build_cache(reader, spec, Path(cache_dir), dtype=dtype, workers=workers,
                             progress=progress and is_main())
    barrier()
    if not is_local_main():
        source = build_cache(reader, spec, Path(cache_dir), dtype=dtype, workers=workers, progress=False)
    return source, dict(source.bad)


def scan_bad(reader: Reader, spec: PreprocessSpec) -> dict[str, str]:
    """Read and preprocess every record once to find the bad ones (the no-cache path)."""
    bad = {}
    ids = reader.ids
    for i in range(len(reader)):
        try:
            prepare_item(load_safely(reader, i), spec, ids[i])
        except RecordError as exc:
            bad[ids[i]] = str(exc)
    return bad


def duplicate_ids(table: pd.DataFrame) -> dict[str, str]:
    dup = table["id"][table["id"].duplicated(keep=False)]
    return {i: f"id {i} appears {int((dup == i).sum())} times" for i in dup.unique()}


def label_problems(table: pd.DataFrame) -> dict[str, str]:
    """Records whose age label is missing, non-numeric or negative (``age_raw``, where a reader keeps it, tells
    a missing label from an unreadable one)."""
    out = {}
    ages = pd.to_numeric(table["age"], errors="coerce") if "age" in table.columns else \
        pd.Series(np.nan, index=table.index)
    raw_labels = table["age_raw"] if "age_raw" in table.columns else None
    for i, (rid, age) in enumerate(zip(table["id"], ages)):
        if pd.isna(age):
            raw = None if raw_labels is None else raw_labels.iloc[i]
            out[rid] = "has no age label" if raw is None or pd.isna(raw) else f"has a non-numeric age {raw!r}"
        elif not np.isfinite(age) or age < 0:
            out[rid] = f"has an invalid age {age}"
    return out


def apply_policy(bad: dict[str, str], ids: list[str], on_bad: str, what: str, log=print,
                 hint: str = "") -> np.ndarray:
    """Positions of ``ids`` to keep. Raises BadInputError under 'error' when any id is bad."""
    flagged = [i for i, rid in enumerate(ids) if rid in bad]
    if not flagged:
        return np.arange(len(ids))
    problems = list(dict.fromkeys(  # one line per bad id, in input order
        bad[ids[i]] if bad[ids[i]].startswith(("record ", ids[i])) else f"{ids[i]}: {bad[ids[i]]}" for i in flagged))
    if on_bad == "error":
        raise BadInputError(problems, hint or f"Fix or remove them, or pass --on_bad skip to {what} without them.")
    log(f"{len(flagged)} bad record(s) left out of {what} (--on_bad {on_bad}):\n  " + "\n  ".join(problems[:50])
        + (f"\n  ... and {len(problems) - 50} more" if len(problems) > 50 else ""))
    keep = np.ones(len(ids), bool)
    keep[flagged] = False
    return np.flatnonzero(keep)


__all__ = ["BadInputError", "SignalCache", "apply_policy", "check_record", "duplicate_ids", "label_problems",
           "open_source", "prepare_item", "scan_bad"]
