"""Labels of every format, parsed in one place: the readers and the report both use these functions.

A label table has one row per record: ``id`` (a string), ``age`` (years, NaN when unknown), ``sex`` ('M', 'F' or
None) and, where the format carries them, ``age_raw`` (the text as written, to tell a missing age from an
unreadable one), ``patient_id``, ``death`` (1.0/0.0) and ``timey`` (years of follow-up).

Rules that hold wherever ages are read (:func:`ages`): a non-number is unknown, and PTB-XL's 300 (its code for
"over 89", kept for anonymity) is unknown, never 300 years. An id listed twice with the same labels counts once;
with different labels (ages 55 and 90, say) the file is refused, naming the ids (:func:`unique_labels`).
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Sequence

import numpy as np
import pandas as pd

from models.schema import UNKNOWN_SEX
from utils.errors import RecordError
from utils.io import read_csv

SEX_CODE = {"M": 1.0, "F": 0.0}  # the model's sex input; unknown is models.UNKNOWN_SEX


def sex_codes(sex) -> np.ndarray:
    """'M'/'F'/None per record → 1.0 / 0.0 / UNKNOWN_SEX (float32)."""
    return np.array([SEX_CODE.get(s, UNKNOWN_SEX) for s in sex], dtype=np.float32)


def table_sex(table) -> np.ndarray:
    """The sex code of every row of a reader's table (UNKNOWN_SEX for all when it has no sex column)."""
    return sex_codes(table["sex"]) if "sex" in table.columns else np.full(len(table), UNKNOWN_SEX, np.float32)

PTBXL_UNKNOWN_AGE = 300  # PTB-XL stores ages above 89 as 300 for anonymity: the true age is unknown
_TRUE, _FALSE = ("true", "1", "1.0"), ("false", "0", "0.0")


def clean_id(value) -> str:
    """A record id as written anywhere: surrounding spaces, a '.npy' suffix and a float's '.0' removed; a missing
    id (None, NaN) is the empty string."""
    if value is None or (isinstance(value, float) and np.isnan(value)):
        return ""
    text = str(value).strip()
    text = text[:-4] if text.endswith(".npy") else text
    return text[:-2] if text.endswith(".0") and text[:-2].lstrip("-").isdigit() else text


def normalise_sex(value) -> str | None:
    """'M' / 'F' / None from the formats' spellings (M, MALE, Male, man; F, FEMALE, woman)."""
    if value is None or (isinstance(value, float) and np.isnan(value)):
        return None
    text = str(value).strip().upper()
    return "M" if text in ("M", "MALE", "MAN") else "F" if text in ("F", "FEMALE", "WOMAN") else None


def yes_no(value) -> float:
    """True/False, 1/0 as text or numbers → 1.0 / 0.0; anything else → NaN."""
    if value is None or (isinstance(value, float) and np.isnan(value)):
        return np.nan
    text = str(value).strip().lower()
    return 1.0 if text in _TRUE else 0.0 if text in _FALSE else np.nan


def male(sex: pd.Series) -> pd.Series:
    """'M'/'F'/None → 1.0/0.0/NaN (the Cox model's covariate)."""
    return sex.map({"M": 1.0, "F": 0.0}).astype(float)


def patients(table: pd.DataFrame) -> list | None:
    """Each row's patient (None where it has none) where the table names patients at all (``patient_id``: PTB-XL,
    CODE-15%), for an interval that resamples whole patients; else None."""
    if "patient_id" not in table.columns or not table["patient_id"].notna().any():
        return None
    return [None if pd.isna(p) else p for p in table["patient_id"]]


def patients_by_id(table: pd.DataFrame) -> pd.Series | None:
    """Record id (as text) → its patient (None where it has none), where the table names patients (:func:`patients`);
    else None."""
    named = patients(table)
    return None if named is None else pd.Series(named, index=table["id"].astype(str))


def ages(raw) -> pd.Series:
    """Ages in years from label text or numbers: non-numbers and PTB-XL's 300 ("over 89") are unknown (NaN)."""
    age = pd.to_numeric(pd.Series(raw), errors="coerce")
    return age.where(age != PTBXL_UNKNOWN_AGE)


def unknown_age_reason(raw) -> str:
    """Why a label's age is unknown: missing, PTB-XL's 300, or not a number."""
    if raw is None or (isinstance(raw, float) and np.isnan(raw)) or str(raw).strip() == "":
        return "has no age label"
    if pd.to_numeric(pd.Series([raw]), errors="coerce").iloc[0] == PTBXL_UNKNOWN_AGE:
        return f"has age {raw}: PTB-XL's code for over 89 years (the true age is unknown)"
    return f"has a non-numeric age {raw!r}"


LABEL_COLUMNS = ("age", "sex", "patient_id", "death", "timey")


def unique_labels(frame: pd.DataFrame, path) -> pd.DataFrame:
    """One row per id: repeated rows with the same labels count once; different labels for one id are refused."""
    repeated = frame[frame["id"].duplicated(keep=False)]
    if repeated.empty:
        return frame
    columns = [c for c in LABEL_COLUMNS if c in frame.columns]
    conflicts = [(rid, rows) for rid, rows in repeated.groupby("id", sort=False)
                 if len(rows[columns].astype(str).drop_duplicates()) > 1]
    if conflicts:
        shown = "; ".join(f"{rid} ({', '.join(f'age {a}' for a in rows['age'].tolist()) if 'age' in columns else ''})"
                          for rid, rows in conflicts[:10])
        raise RecordError(str(path), f"lists {len(conflicts)} id(s) more than once with different labels: {shown}"
                                     f"{' ...' if len(conflicts) > 10 else ''}; keep one row per id")
    return frame.drop_duplicates("id").reset_index(drop=True)


def _require(frame: pd.DataFrame, path: Path, columns: Sequence[str], layout: str) -> None:
    missing = [c for c in columns if c not in frame.columns]
    if missing:
        raise RecordError(str(path), f"lacks column(s) {', '.join(missing)}; {layout} "
                                     f"(has {', '.join(map(str, frame.columns))})")


def read_maic_labels(path: str | os.PathLike) -> pd.DataFrame:
    """MAIC label CSV (FILENAME, GENDER, AGE) → id, age, age_raw, sex, GENDER."""
    path = Path(path)
    frame = read_csv(path, "a MAIC label CSV", dtype={"FILENAME": str})
    _require(frame, path, ("FILENAME", "AGE"), "a MAIC label CSV has FILENAME, GENDER, AGE")
    gender = frame["GENDER"] if "GENDER" in frame.columns else pd.Series(None, index=frame.index, dtype=object)
    # an id listed twice stays twice: the records' duplicate-id check names it (bad input, as in the seed's layout)
    return pd.DataFrame({"id": frame["FILENAME"].map(clean_id), "age": ages(frame["AGE"]), "age_raw": frame["AGE"],
                         "sex": gender.map(normalise_sex), "GENDER": gender})


def read_code_exams(path: str | os.PathLike) -> pd.DataFrame:
    """CODE-15% ``exams.csv`` → id (exam_id), age, age_raw, sex (is_male), patient_id, death, timey, trace_file,
    nn_predicted_age."""
    path = Path(path)
    frame = read_csv(path, "a CODE-15% exams.csv", dtype=str)
    _require(frame, path, ("exam_id",), "a CODE-15% exams.csv has exam_id, age, is_male, patient_id, ...")
    out = pd.DataFrame({"id": frame["exam_id"].map(clean_id)})
    if "age" in frame.columns:
        out["age"], out["age_raw"] = ages(frame["age"]), frame["age"]
    if "is_male" in frame.columns:
        out["sex"] = frame["is_male"].map(lambda v: {1.0: "M", 0.0: "F"}.get(yes_no(v)))
    if "patient_id" in frame.columns:
        out["patient_id"] = frame["patient_id"].map(lambda v: None if pd.isna(v) else clean_id(v))
    if "death" in frame.columns:
        out["death"] = frame["death"].map(yes_no)
    for column in ("timey", "nn_predicted_age"):
        if column in frame.columns:
            out[column] = pd.to_numeric(frame[column], errors="coerce")
    if "trace_file" in frame.columns:
        out["trace_file"] = frame["trace_file"]
    return unique_labels(out, path)


def ptbxl_labels(frame: pd.DataFrame) -> pd.DataFrame:
    """PTB-XL database rows → id (ecg_id), age (300 → unknown), sex (0 male, 1 female), patient_id, strat_fold."""
    age = ages(frame["age"]) if "age" in frame.columns else pd.Series(np.nan, index=frame.index)
    out = pd.DataFrame({"id": frame["ecg_id"].map(clean_id), "age": age.to_numpy()})
    if "age" in frame.columns:
        out["age_raw"] = frame["age"].to_numpy()
    out["sex"] = frame["sex"].map(lambda v: {0.0: "M", 1.0: "F"}.get(yes_no(v))) if "sex" in frame.columns else None
    out["patient_id"] = frame["patient_id"].map(lambda v: None if pd.isna(v) else clean_id(v)) \
        if "patient_id" in frame.columns else None
    out["strat_fold"] = pd.to_numeric(frame["strat_fold"], errors="coerce") if "strat_fold" in frame.columns else np.nan
    return out


def read_ptbxl_database(path: str | os.PathLike) -> pd.DataFrame:
    path = Path(path)
    frame = read_csv(path, "the PTB-XL database", dtype=str)
    _require(frame, path, ("ecg_id",), "the PTB-XL database has ecg_id, patient_id, age, sex, strat_fold, ...")
    return frame


def parse_header_comments(comments: Sequence[str]) -> dict:
    """CinC ``# Age: 78`` / ``# Sex: Male`` comments → {'age': 78.0, 'age_raw': '78', 'sex': 'M'} (NaN/None if
    absent or unknown; the rules of :func:`ages` apply)."""
    meta: dict = {"age": np.nan, "age_raw": None, "sex": None}
    for line in comments:
        key, _, value = str(line).partition(":")
        key = key.strip().lower()
        if key == "age":
            meta["age"], meta["age_raw"] = float(ages([value.strip()]).iloc[0]), value.strip()
        elif key == "sex":
            meta["sex"] = normalise_sex(value)
    return meta


def read_any_labels(path: str | os.PathLike, id_col: str | None = None, age_col: str | None = None,
                    keep: str | None = None) -> pd.DataFrame:
    """A label CSV of any known format (CODE-15% exams.csv, MAIC labels, PTB-XL database), or any CSV with
    ``id_col`` and ``age_col`` (plus optional sex/patient_id/death/timey columns); ``keep``: one more column kept as
    it is."""
    path = Path(path)
    columns = set(read_csv(path, "a label CSV", nrows=0).columns)
    table = _known_labels(path, columns) if id_col is None and age_col is None else None
    if table is None:
        table = _named_labels(path, columns, id_col, age_col)
    if keep is not None and keep in columns and keep not in table.columns:  # joined by id, as the labels were read
        key = next(c for c in (id_col, "exam_id", "FILENAME", "ecg_id") if c in columns)
        extra = read_csv(path, "a label CSV", dtype=str, usecols=[key, keep])
        extra = pd.DataFrame({"id": extra[key].map(clean_id), keep: extra[keep]}).drop_duplicates("id")
        table = table.merge(extra, on="id", how="left")
    return table


def _known_labels(path: Path, columns: set) -> pd.DataFrame | None:
    if {"exam_id", "age"} <= columns:
        return read_code_exams(path)
    if {"FILENAME", "AGE"} <= columns:
        return read_maic_labels(path)
    if {"ecg_id", "age"} <= columns:
        return ptbxl_labels(read_ptbxl_database(path))
    return None


def _named_labels(path: Path, columns: set, id_col: str | None, age_col: str | None) -> pd.DataFrame:
    if id_col is None or age_col is None:
        raise RecordError(str(path), f"is not a known label format (exams.csv, MAIC labels, PTB-XL database); give "
                                     f"--id_col and --age_col (columns: {', '.join(sorted(columns))})")
    frame = read_csv(path, "a label CSV", dtype=str)
    _require(frame, path, (id_col, age_col), f"--id_col {id_col} and --age_col {age_col} must name columns")
    out = pd.DataFrame({"id": frame[id_col].map(clean_id),
                        "age": ages(frame[age_col]), "age_raw": frame[age_col]})
    if "sex" in frame.columns:
        out["sex"] = frame["sex"].map(normalise_sex)
    if "patient_id" in frame.columns:
        out["patient_id"] = frame["patient_id"].map(lambda v: None if pd.isna(v) else clean_id(v))
    if "death" in frame.columns:
        out["death"] = frame["death"].map(yes_no)
    if "timey" in frame.columns:
        out["timey"] = pd.to_numeric(frame["timey"], errors="coerce")
    return unique_labels(out, path)
