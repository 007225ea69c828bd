"""What a report reads: the predictions (three layouts, each prediction a plausible age, intervals that hold
their age), the notes beside them, the labels (a CSV or records that carry their ages) and their join."""
from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import pandas as pd

from dataloader.formats import open_reader
from dataloader.labels import clean_id, male, read_any_labels, unique_labels
from dataloader.records import LEADS
from engine.predict.notes import PredictionNotes
from utils.bounds import AGE_RANGE, age_problem
from utils.errors import UserError
from utils.io import read_csv
from utils.paths import prediction_notes
from utils.plots import plot_lead_importance
from utils.tables import INTERVAL_COLUMNS, PREDICTION_COLUMNS

from .settings import ReportSettings

logger = logging.getLogger("report")
PREDICTION_FORMATS = (PREDICTION_COLUMNS, ("FILENAME", "AGE"), ("exam_id", "nn_predicted_age"))


class ReportError(UserError):
    pass


def read_predictions(path: Path) -> pd.DataFrame:
    """test_interface output, a MAIC submission, or CODE-15%'s exams.csv with the published model's predictions."""
    frame = read_csv(path, "a predictions CSV", dtype=str)
    for id_col, age_col in PREDICTION_FORMATS:
        if {id_col, age_col} <= set(frame.columns):
            out = pd.DataFrame({"id": frame[id_col].map(clean_id),
                                "predicted": pd.to_numeric(frame[age_col], errors="coerce")})
            bad = out["id"][[age_problem(a) is not None for a in out["predicted"]]].tolist()
            if bad:
                raise ReportError(f"{path}: {len(bad)} prediction(s) are missing, not numbers or implausible ages "
                                  f"(outside {AGE_RANGE[0]:g}–{AGE_RANGE[1]:g}): {', '.join(bad[:20])}")
            dup = out["id"][out["id"].duplicated()].unique().tolist()
            if dup:
                raise ReportError(f"{path}: id(s) listed more than once: {', '.join(dup[:20])}")
            return with_interval(out, frame, path)
    raise ReportError(f"{path}: expected columns ids,predicted_age, FILENAME,AGE or exam_id,nn_predicted_age "
                      f"(has {', '.join(frame.columns)})")


def with_interval(out: pd.DataFrame, frame: pd.DataFrame, path: Path) -> pd.DataFrame:
    """The predictions' lower,upper columns (both or neither), each lower ≤ predicted ≤ upper."""
    present = [c for c in INTERVAL_COLUMNS if c in frame.columns]
    if not present:
        return out
    if len(present) == 1:
        raise ReportError(f"{path}: has {present[0]} but not {({'lower', 'upper'} - set(present)).pop()}; an "
                          f"interval needs both columns")
    lower, upper = (pd.to_numeric(frame[c], errors="coerce").to_numpy(float) for c in INTERVAL_COLUMNS)
    wrong = ~(np.isfinite(lower) & np.isfinite(upper) & (lower <= out["predicted"].to_numpy() + 1e-9) &
              (out["predicted"].to_numpy() <= upper + 1e-9))
    if wrong.any():
        raise ReportError(f"{path}: {int(wrong.sum())} interval(s) are missing, not numbers or do not hold their "
                          f"predicted age (lower ≤ predicted_age ≤ upper): {', '.join(out['id'][wrong].head(20))}")
    return out.assign(lower=lower, upper=upper)


def predictions_level(settings: ReportSettings, path: Path, notes: PredictionNotes | None) -> float:
    """The level of the predictions' intervals: --interval, or the notes test_interface wrote beside them."""
    stored = notes.interval["level"] if notes is not None and notes.interval is not None else None
    where = prediction_notes(path)
    if settings.interval is not None and stored is not None and abs(settings.interval - stored) > 1e-12:
        raise ReportError(f"--interval {settings.interval:g}, but {where} says the intervals are at level {stored:g}")
    level = settings.interval if settings.interval is not None else stored
    if level is None:
        raise ReportError(f"{path} has lower,upper but no readable {where.name} beside it says their level; pass "
                          f"--interval LEVEL")
    return float(level)


def lead_importance(path: Path, out: Path, ids: pd.Series) -> tuple[dict, Path]:
    """Mean (and SD) share of each lead over a cohort's lead_importance.csv, whose records must be among the
    predictions reported (``ids``): shares of other records would describe another cohort."""
    frame = read_csv(path, "a lead_importance.csv", dtype={"id": str})
    missing = [c for c in ("id", *LEADS) if c not in frame.columns]
    if missing:
        raise ReportError(f"{path}: lacks column(s) {', '.join(missing)} (test_interface --explain writes id and "
                          f"one column per lead)")
    foreign = frame.loc[~frame["id"].isin(set(ids)), "id"].tolist()
    repeated = frame.loc[frame["id"].duplicated(), "id"].tolist()
    if foreign or repeated:
        what = f"{len(foreign)} id(s) not among the predictions" if foreign else f"{len(repeated)} repeated id(s)"
        raise ReportError(f"{path}: {what} ({', '.join((foreign or repeated)[:10])}); give the lead_importance.csv "
                          f"that test_interface --explain wrote with these predictions")
    shares = frame[list(LEADS)].apply(pd.to_numeric, errors="coerce").to_numpy(float)
    wrong = ~(np.isfinite(shares).all(axis=1) & (shares >= 0).all(axis=1) & (np.abs(shares.sum(axis=1) - 1) < 1e-4))
    if wrong.any() or not len(frame):
        raise ReportError(f"{path}: {int(wrong.sum()) if len(frame) else 'no'} row(s) of lead shares that are not "
                          f"non-negative numbers summing to 1: {', '.join(frame['id'][wrong].head(20))}")
    mean = dict(zip(LEADS, shares.mean(axis=0).tolist()))
    result = {"source": str(path), "n": len(frame), "mean": mean, "sd": dict(zip(LEADS, shares.std(axis=0).tolist()))}
    return result, plot_lead_importance(mean, len(frame), out / "lead_importance.png")


def read_labels(path: Path, id_col: str | None, age_col: str | None, group_col: str | None = None) -> pd.DataFrame:
    """id, age, male, death, timey (and ``group_col`` as group) from a label CSV, or from records that carry their
    labels (WFDB headers, PTB-XL database, HDF5 + exams.csv, clinical files). Records without an age keep none."""
    records = path.is_dir() or path.suffix.lower() != ".csv"
    table = open_reader(path).table if records else read_any_labels(path, id_col, age_col, keep=group_col)
    return label_table(table, path, group_col)


def label_table(table: pd.DataFrame, where, group_col: str | None = None) -> pd.DataFrame:
    """The labels a report reads from a reader's (or a label file's) table: one row per id."""
    ages = pd.to_numeric(table["age"], errors="coerce") if "age" in table.columns else np.nan
    out = pd.DataFrame({"id": table["id"].astype(str), "age": ages})
    if "sex" in table.columns:
        out["male"] = male(table["sex"])
    if "patient_id" in table.columns:  # the bootstrap resamples a patient's ECGs together
        out["patient_id"] = table["patient_id"].to_numpy(object)
    for col in ("death", "timey"):
        if col in table.columns:
            out[col] = pd.to_numeric(table[col], errors="coerce")
    if group_col is not None:
        if group_col not in table.columns:
            raise ReportError(f"--group_col {group_col}: {where} has no such column (has "
                              f"{', '.join(map(str, table.columns))})")
        out["group"] = table[group_col].astype(str)
    return unique_labels(out, where)


def join(pred: pd.DataFrame, labels: pd.DataFrame | None, pred_path, label_path) -> tuple[pd.DataFrame, list[str]]:
    """The predictions with their ages on record (NaN where a record has none: no label row, or a missing age)
    and the ids without one. An implausible recorded age is an error; so is no prediction id among the labels
    (a wrong id column, not missing ages)."""
    if labels is None:
        return pred.assign(age=np.nan), pred["id"].tolist()
    merged = pred.merge(labels, on="id", how="left", indicator=True)
    unmatched = merged["_merge"] == "left_only"
    if unmatched.all() and len(labels):
        raise ReportError(f"none of the {len(pred)} prediction ids of {pred_path} is in {label_path} "
                          f"(first ids: {', '.join(pred['id'].head(3))} vs {', '.join(labels['id'].head(3))}); "
                          f"check --id_col")
    ages = merged["age"]
    bad_age = merged.loc[ages.notna().to_numpy() & np.array([age_problem(a) is not None for a in ages]), "id"].tolist()
    if bad_age:
        raise ReportError(f"{len(bad_age)} record(s) have an age outside the plausible {AGE_RANGE[0]:g}–"
                          f"{AGE_RANGE[1]:g} years in {label_path}: {', '.join(bad_age[:20])}")
    return merged.drop(columns="_merge"), merged.loc[ages.isna(), "id"].tolist()
