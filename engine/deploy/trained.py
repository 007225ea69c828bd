"""The records an exported model was trained on, as fingerprints in its file (dataloader.fingerprint): read from
its members' run folders (each member's split.csv names its training records, its options.json the --input they
came from) and written into the file's metadata, so that a prediction can tell which of its records the model has
seen (engine/predict/policy.py) and the report can leave them out of its accuracy figures."""
from __future__ import annotations

import json
import logging
import multiprocessing as mp
from pathlib import Path

import numpy as np

from dataloader.checks import load_block_safely
from dataloader.fingerprint import PRINTS, distinct, of_item, packed
from dataloader.formats import InputSettings
from dataloader.stream import chunk_bounds, chunk_jobs
from engine.runs import member_training_prints, trained_ids, training_input
from utils.bounds import MAX_TRAINING_FINGERPRINTS
from utils.errors import UserError
from utils.io import staged
from utils.machine import usable_cores

from .onnx_model import METADATA_KEY, TRAINING_PRINTS, TRAINING_SKETCHES

logger = logging.getLogger("export")


def training_prints(members: list) -> tuple[np.ndarray | None, str]:
    """(the fingerprints of every record some member was trained on, what they are): from the runs' own
    fingerprints.csv, else read from the training input — (None, why not) where a member does not name its
    records or their input cannot be read here."""
    recorded = [member_training_prints(m) for m in members]
    if all(p is not None for p in recorded):
        prints = distinct(np.concatenate(recorded))
        return prints, f"{len(prints)} training record(s), from the run folder's fingerprints"
    ids, inputs = set(), []
    for member in members:
        found, trained_on = trained_ids(member), training_input(member)
        if found is None or trained_on is None:
            return None, f"{member} does not name the records it was trained on (no split.csv or options.json)"
        ids |= found
        if trained_on not in inputs:
            inputs.append(trained_on)
    if len(ids) > MAX_TRAINING_FINGERPRINTS:
        return None, f"{len(ids)} training records, more than the {MAX_TRAINING_FINGERPRINTS} a file names"
    prints = []
    for options in inputs:
        try:
            reader = InputSettings.from_options(options).open()
        except (UserError, OSError, ValueError) as exc:
            return None, f"their input {options.get('input')} cannot be read here ({type(exc).__name__})"
        prints += read_prints(reader.subset([i for i, rid in enumerate(reader.ids) if rid in ids]))
    prints = distinct(np.asarray(prints, PRINTS))
    return prints, f"{len(prints)} training record(s) of the {len(ids)} its members name"


def _chunk_prints(job) -> list:
    part, start, stop = job  # part: records start..stop-1 (Reader.part)
    return [of_item(item) for item in load_block_safely(part, 0, stop - start)]


def read_prints(reader) -> list:
    """Every record's fingerprint, chunks read in worker processes on every usable core (a million training
    records take about as long as one pass over them)."""
    jobs = list(chunk_jobs(reader, chunk_bounds(len(reader))))
    if len(jobs) < 2 or usable_cores() < 2:
        return [p for job in jobs for p in _chunk_prints(job)]
    logger.info(f"reading the fingerprints of {len(reader)} training record(s) on {usable_cores()} cores")
    with mp.get_context("fork").Pool(usable_cores()) as pool:
        return [p for chunk in pool.imap(_chunk_prints, jobs) for p in chunk]


def with_training_prints(path: Path, prints: np.ndarray) -> None:
    """The exported file at ``path`` with ``prints`` (hashes and sketches) in its metadata (rewritten in place, all
    or nothing)."""
    import onnx

    model = onnx.load(str(path))
    entry = next(p for p in model.metadata_props if p.key == METADATA_KEY)
    hashes, sketches = packed(prints)
    meta = {k: v for k, v in json.loads(entry.value).items() if k != TRAINING_SKETCHES}
    entry.value = json.dumps({**meta, TRAINING_PRINTS: hashes, **({TRAINING_SKETCHES: sketches} if sketches else {})})
    with staged(path) as staging:
        onnx.save(model, str(staging))
