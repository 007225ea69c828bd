"""From a reader to model-ready rows: the cache (or on-the-fly preprocessing) and the one bad-input policy.

Policy (``--on_bad``): ``error`` (default) stops before anything is written and lists every bad record with its
reason (the interfaces exit with code 2); ``skip`` leaves the bad records out and says how many; ``fill`` (only
for predictions) writes the training median age for them.
"""
from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Union

import numpy as np
import pandas as pd

from models.preprocessing import PreprocessSpec
from utils.bounds import AGE_RANGE, age_problem
from utils.errors import BadInputError, RecordError
from utils.paths import CACHE_DIR

from .cache import OnTheFly, SignalCache, build_cache, load_safely, prepare_item
from .labels import unknown_age_reason
from .records import Reader

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


def resolve_cache_dtype(choice: str, precision: str) -> str:
    """'auto': float32 for fp32 runs (bit-exact inputs), float16 for bf16 runs (half the disk and memory)."""
    return choice if choice != "auto" else ("float16" if precision == "bf16" else "float32")


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
            item = load_safely(reader, i)
            for spec in specs:
                prepare_item(item, spec, ids[i])
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
