"""A prediction's all-or-nothing rules: records + models → the table of ages the user gets.

``predict`` runs the models over a reader, applies the ``--on_bad`` policy to bad input and implausible output, and
returns the rows to write in the one prediction-table schema (``utils.tables``); ``check_outputs`` refuses, before
any work, an output that would replace something the job reads. No torch.
"""
from __future__ import annotations

import dataclasses
import logging
from pathlib import Path

import numpy as np
import pandas as pd

from dataloader.checks import apply_policy, duplicate_ids, implausible_outputs
from dataloader.fingerprint import near_checked, seen
from dataloader.labels import table_sex
from dataloader.records import Reader
from engine.runs import run_members
from models.files import resolve_weights
from utils.bounds import AGE_RANGE, age_problem
from utils.errors import BadInputError, CheckpointError
from utils.io import check_output_path, check_spreadsheet_safe
from utils.tables import AGE, ID, LOWER, UPPER

from .predictor import Predictor

logger = logging.getLogger("test")

HINT = ("Fix or remove them, or pass --on_bad skip (leave them out) or --on_bad fill (write the training median) "
        "to continue.")


@dataclasses.dataclass
class Prediction:
    """The ages of a reader's records and which rows are written: ``keep`` (positions written, in order) and
    ``filled`` (those of them given the training median under --on_bad fill)."""

    ages: np.ndarray
    keep: np.ndarray
    filled: np.ndarray
    reasons: dict = dataclasses.field(default_factory=dict)  # id → why a record is bad (input or output)
    # positions of written records that were among the model's training records (by fingerprint); None: the model
    # names no training records, so this was not checked
    in_training: np.ndarray | None = None


def median_fill(stored: float | None, fallback: np.ndarray) -> float:
    """The training median age stored with the model (or, for foreign checkpoints, the median plausible
    prediction)."""
    if stored is not None:
        return stored
    plausible = fallback[[age_problem(a) is None for a in fallback]] if len(fallback) else fallback
    return float(np.median(plausible)) if len(plausible) else float("nan")


def apply_output_policy(ages: np.ndarray, ids: list[str], bad: dict, on_bad: str, models: Predictor,
                        what: str) -> tuple[np.ndarray, np.ndarray]:
    """Apply the bad-record policy to bad input and implausible output; returns (positions to write, those of
    them filled with the training median under 'fill' — ages filled in place). An id listed twice can never be
    written (it would name two rows)."""
    bad = {**bad, **implausible_outputs(ages, ids, bad, models.source)}  # idempotent: predict() added them already
    repeated = duplicate_ids(pd.DataFrame({"id": ids}))
    if on_bad == "fill" and repeated:
        raise BadInputError([f"{rid}: {reason}" for rid, reason in repeated.items()],
                            "--on_bad fill cannot fill them: each id is written once. Rename the records, or use "
                            "--on_bad skip to leave them out.")
    keep = apply_policy(bad, ids, on_bad, what, hint=HINT)
    filled = np.zeros(0, dtype=np.int64)
    if on_bad == "fill" and len(keep) < len(ids):
        fill = median_fill(models.median_age, ages[keep])
        if not np.isfinite(fill):
            raise BadInputError([f"{ids[i]}: {bad[ids[i]]}" for i in range(len(ids)) if ids[i] in bad],
                                "--on_bad fill needs the training median age, which this model does not store, "
                                "nor is any other record's age plausible; use --on_bad skip.")
        filled = np.setdiff1d(np.arange(len(ids)), keep)
        ages[filled] = fill
        logger.warning(f"--on_bad fill: wrote the training median {fill:.2f} for {len(filled)} bad record(s)")
        keep = np.arange(len(ids))
    return keep, filled


def predict(models: Predictor, reader: Reader, cfg, on_bad: str, what: str) -> Prediction:
    """Every record of ``reader`` through ``models`` (averaged) on their engine's ``cfg``, with the policy."""
    logger.info(f"{what}: {models.describe()}, {len(reader)} {reader.format} record(s)" +
                (f"; device {cfg.device}, {cfg.precision}" if models.engine == "torch" else ""))
    ages, bad, prints = models.predict_records(reader, cfg, table_sex(reader.table))
    bad = {**bad, **implausible_outputs(ages, reader.ids, bad, models.source)}
    keep, filled = apply_output_policy(ages, reader.ids, bad, on_bad, models, what)
    known = models.training_prints
    trained = None if known is None else keep[seen(prints[keep], known) & ~np.isin(keep, filled)]
    if known is not None and not near_checked(prints[keep], known):
        why = "the model holds no sketches" if not known["sketch"].any() else \
            "these records times the model's are too many pairs to compare sketches"
        logger.info(f"note: the model's training records were matched by their exact fingerprints only ({why}): a "
                    f"copy of one at another rate or from another file is not found")
    if trained is not None and len(trained):
        logger.warning(f"note: {len(trained)} of the {len(keep)} record(s) were among the model's training records "
                       f"(the same recordings, or copies at another rate or from another file): their ages are no "
                       f"test of the model, and the report leaves them out of its accuracy figures")
    return Prediction(ages, keep, filled, reasons=bad, in_training=trained)


def prediction_table(reader: Reader, result: Prediction, intervals=None) -> pd.DataFrame:
    """The rows to write (``ids``, ``predicted_age``, and ``lower``, ``upper`` with intervals: a filled-in median
    is no prediction, so its interval is every plausible age)."""
    keep = result.keep
    frame = pd.DataFrame({ID: [reader.ids[i] for i in keep], AGE: result.ages[keep]})
    if intervals is not None:
        lower, upper = intervals(result.ages[keep])
        unknown = np.isin(keep, result.filled)
        frame[LOWER], frame[UPPER] = np.where(unknown, AGE_RANGE[0], lower), np.where(unknown, AGE_RANGE[1], upper)
    return frame


def explanation_titles(reader: Reader, frame: pd.DataFrame, result: Prediction, intervals,
                       limit: int | None = None) -> tuple[np.ndarray, list[str]]:
    """(positions to explain: every written record but the filled ones, the first ``limit`` of them if given, the
    title of each: its age, interval and the age on record)."""
    chosen = np.flatnonzero(~np.isin(result.keep, result.filled))[:limit]
    known = pd.to_numeric(reader.table["age"], errors="coerce").to_numpy(float) if "age" in reader.table.columns \
        else np.full(len(reader), np.nan)
    titles = []
    for row in chosen:
        position, line = result.keep[row], frame.iloc[row]
        title = f"{line[ID]}: predicted age {line[AGE]:.1f} y"
        if intervals is not None:
            title += f" ({intervals.level:.0%} interval {line[LOWER]:.1f}–{line[UPPER]:.1f} y)"
        if np.isfinite(known[position]):
            title += f"; age on record {known[position]:g} y"
        titles.append(title)
    return result.keep[chosen], titles


def check_outputs(outputs: list[Path], ids, read_files: list, input_folders: list, weights: list) -> None:
    """Before any work: the ids can be written safely, and every output is a regular file that replaces nothing
    this job reads (records, labels, template, weights) and lies in no input folder."""
    check_spreadsheet_safe(ids, "record id(s)")
    weight_files = []
    for path in (m for w in weights for m in run_members(w)):
        try:
            weight_files.extend(f for f in resolve_weights(Path(path)) if f is not None)
        except CheckpointError:
            weight_files.append(path)  # missing: load_bundle says so
    for output in outputs:
        check_output_path(output, [*read_files, *weights, *weight_files], input_folders)
