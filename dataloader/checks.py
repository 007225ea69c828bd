"""What makes a record, a label or an output bad, and the one bad-input policy (``--on_bad``).

Policy: ``error`` (default) stops before anything is written and lists every bad record with its reason (the
interfaces exit with code 2); ``skip`` leaves the bad records out and says how many; ``fill`` (only for
predictions) writes the training median age for them. A record is bad when it cannot be read (whatever a parser
raises on a corrupt file becomes a bad record naming it), has non-finite or flat leads, an implausible sampling
rate, duration or amplitude, or gives non-finite model inputs.
"""
from __future__ import annotations

import logging
from typing import Iterable, Iterator

import numpy as np
import pandas as pd

from models.preprocessing import PreprocessSpec, preprocess
from utils.bounds import AGE_RANGE, CLI_SCALE_REMEDY, MAX_FS, MIN_FS, MIN_SECONDS, age_problem, amplitude_problem
from utils.errors import BadInputError, CheckpointError, RecordError

from .fingerprint import NONE, PRINTS, of_item
from .labels import unknown_age_reason
from .records import LEADS, Reader, Record

logger = logging.getLogger(__name__)


def check_record(record: Record, remedy: str = CLI_SCALE_REMEDY) -> str | None:
    """Why a raw record cannot be used, or None (``remedy``: the fix a unit error names). Shape problems are
    raised by the readers already."""
    signal = record.signal
    if not np.isfinite(signal).all():
        bad = int((~np.isfinite(signal)).sum())
        return f"has {bad} NaN/Inf sample(s)"
    flat = np.flatnonzero(~signal.any(axis=-1))
    if len(flat):
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


def scan(reader: Reader, specs: list[PreprocessSpec]) -> tuple[dict[str, str], np.ndarray]:
    """Read and preprocess every record once to find the bad ones (the no-cache path): ({id: reason}, every
    record's fingerprint)."""
    bad, prints = {}, np.full(len(reader), NONE, PRINTS)
    ids = reader.ids
    for i in range(len(reader)):
        item = load_safely(reader, i)
        prints[i] = of_item(item)
        try:
            prepare_windows(item, specs, ids[i])
        except RecordError as exc:
            bad[ids[i]] = str(exc)
    return bad, prints


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
    """Positions of ``ids`` that are not bad (under 'fill' the caller fills the others). Raises BadInputError under
    'error' when any id is bad, and under 'skip' when every one is: there is nothing to give."""
    flagged = [i for i, rid in enumerate(ids) if rid in bad]
    if not flagged:
        return np.arange(len(ids))
    problems = list(dict.fromkeys(  # one line per bad id, in input order
        bad[ids[i]] if bad[ids[i]].startswith(("record ", ids[i])) else f"{ids[i]}: {bad[ids[i]]}" for i in flagged))
    if on_bad == "error":
        raise BadInputError(problems, hint or f"Fix or remove them, or pass --on_bad skip to {what} without them.")
    if len(flagged) == len(ids) and on_bad == "skip":
        raise BadInputError(problems, f"Every record is bad (--on_bad {on_bad}): nothing was written. Check the "
                                      f"format, the sampling rate and the amplitude unit of the input.")
    done = "given the training median age in" if on_bad == "fill" else "left out of"
    logger.warning(f"{len(flagged)} bad record(s) {done} {what} (--on_bad {on_bad}):\n  "
                   + "\n  ".join(problems[:50])
                   + (f"\n  ... and {len(problems) - 50} more" if len(problems) > 50 else ""))
    keep = np.ones(len(ids), bool)
    keep[flagged] = False
    return np.flatnonzero(keep)



def readable_records(reader: Reader) -> Iterator[Record]:
    """The records of ``reader`` that can be read, in order (to check an export on)."""
    for i in range(len(reader)):
        item = load_safely(reader, i)
        if isinstance(item, Record):
            yield item


def model_inputs(records: Iterable[Record], spec: PreprocessSpec, limit: int) -> np.ndarray:
    """The model inputs (N, 12, L) of the first ``limit`` usable ``records`` (N may be 0): what an export is
    checked on."""
    inputs = []
    for record in records:
        if len(inputs) == limit:
            break
        if check_record(record) is None:
            inputs.append(prepare(record, spec))
    return np.stack(inputs) if inputs else np.zeros((0, 12, spec.length), np.float32)
