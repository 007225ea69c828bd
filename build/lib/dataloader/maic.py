"""The MAIC ECG AI Challenge 2023 layout: its folders, its age bins, the seed's dataset CSVs and the submission
template.

    <root>/ECG_<mode>_numpy_train/ecg_<mode>_<n>.npy   training ECGs (flat (60000,) or (12, 5000), 500 Hz)
    <root>/ECG_<mode>_age_train.csv                     FILENAME, GENDER, AGE
    <root>/ECG_<mode>_numpy_valid/                      test ECGs
    <root>/submission.csv                               the template to fill (FILENAME, GENDER, AGE)

``maic_dataset_csvs`` writes ``dataset/train_dataset_<mode>.csv`` / ``valid_dataset_<mode>.csv`` (npy_path,
Filename, Gender, Age) and rebuilds them whenever they no longer match the data folder, labels or split settings.
"""
from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import os
from pathlib import Path

import numpy as np
import pandas as pd

from models.schema import MAIC_MODES, MODES  # noqa: F401 - the modes of the layout's folders
from utils.errors import BadInputError, RecordError
from utils.io import read_csv, write_csv, write_json
from utils.paths import DATA_ROOT_ENV, DATASET_DIR
from utils.settings import Settings, runtime

from .labels import clean_id
from .records import NpyFolderReader, natural_key
from .splits import stratified_split

logger = logging.getLogger(__name__)

# stratification bins of the seed's 9:1 split: children 1-year bins 0–9, adults 10-year bins 10–130
AGE_BINS = {"child": list(range(0, 11)), "adult": list(range(10, 140, 10))}
DATASET_COLUMNS = ["npy_path", "Filename", "Gender", "Age"]
SPLIT_VERSION = 1  # bump when the split algorithm changes: existing CSVs become stale


@dataclasses.dataclass(frozen=True)
class MaicRoot(Settings):
    """The folder of the MAIC layout (``--data_root``), which sets every MAIC path not given."""

    data_root: str | None = runtime(None, f"folder holding the MAIC layout (ECG_<mode>_numpy_train/, "
                                          f"ECG_<mode>_age_train.csv, ECG_<mode>_numpy_valid/, submission.csv); "
                                          f"default ${DATA_ROOT_ENV} or data/maic2023; sets every MAIC path below "
                                          f"that is not given")


@dataclasses.dataclass(frozen=True)
class MaicTrainingData(MaicRoot):
    """Where the MAIC training data and the seed's dataset CSVs are (the seed's option names): runtime, as the
    data are identified by content."""

    TITLE = "MAIC training data (seed option names)"

    train_for_adult: str | None = runtime(None, "folder of adult training .npy files")
    train_for_adult_label: str | None = runtime(None, "adult label CSV (FILENAME, GENDER, AGE)")
    train_for_child: str | None = runtime(None, "folder of child training .npy files")
    train_for_child_label: str | None = runtime(None, "child label CSV (FILENAME, GENDER, AGE)")
    dataset_dir: str = runtime(str(DATASET_DIR), "where train/valid dataset CSVs live")

    def paths(self, mode: str) -> tuple[Path | None, Path | None]:
        """(folder of .npy files, label CSV) of ``mode``."""
        folder, labels = getattr(self, f"train_for_{mode}"), getattr(self, f"train_for_{mode}_label")
        return Path(folder) if folder else None, Path(labels) if labels else None


def _weights_help(mode: str) -> str:
    return (f"{mode} checkpoint(s) (.pt, seed .pt, run folder, cross-validated run folder; several are averaged); "
            f"default: the best checkpoint of the default {mode} run, <log_dir>/{MAIC_MODES[mode].arch}_{mode}/best.pt")


@dataclasses.dataclass(frozen=True)
class MaicSubmission(MaicRoot):
    """The MAIC test folders, the template to fill and each mode's weights (the seed's option names; resolved from
    the data root and the default runs)."""

    TITLE = "MAIC submission (seed option names)"

    test_for_adult: str | None = runtime(None, "folder of adult test .npy files")
    test_for_child: str | None = runtime(None, "folder of child test .npy files")
    weights_adult: list | None = runtime(None, _weights_help("adult"), nargs="+")
    weights_child: list | None = runtime(None, _weights_help("child"), nargs="+")
    submission_template: str | None = runtime(None, "template submission.csv (FILENAME, GENDER, AGE)")

    def folder(self, mode: str) -> Path | None:
        folder = getattr(self, f"test_for_{mode}")
        return Path(folder) if folder else None

    def weights(self, mode: str) -> list | None:
        return getattr(self, f"weights_{mode}")


def train_folder(root: str | os.PathLike, mode: str) -> Path:
    return Path(root) / f"ECG_{mode}_numpy_train"


def label_csv(root: str | os.PathLike, mode: str) -> Path:
    return Path(root) / f"ECG_{mode}_age_train.csv"


def test_folder(root: str | os.PathLike, mode: str) -> Path:
    return Path(root) / f"ECG_{mode}_numpy_valid"


def template_csv(root: str | os.PathLike) -> Path:
    return Path(root) / "submission.csv"


def dataset_csv_paths(dataset_dir: str | os.PathLike, mode: str) -> tuple[Path, Path]:
    return tuple(Path(dataset_dir) / f"{part}_dataset_{mode}.csv" for part in ("train", "valid"))


# ---- the seed's dataset CSVs -----------------------------------------------------------------------------------
def _fingerprint(reader: NpyFolderReader, params: dict) -> str:
    digest = hashlib.sha256(json.dumps(params, sort_keys=True).encode())
    digest.update(Path(reader.labels).read_bytes())
    for path in reader.table["path"]:
        digest.update(f"{Path(path).resolve()}|{os.path.getsize(path)}\n".encode())
    return digest.hexdigest()


def _mismatch(csvs: tuple[Path, Path], table: pd.DataFrame) -> str | None:
    """Why existing CSVs (made without our sidecar, e.g. by the seed code) do not match the data, or None."""
    try:
        both = pd.concat([read_csv(p, dtype={"Filename": str}) for p in csvs], ignore_index=True)
    except RecordError as exc:
        return f"unreadable ({exc.reason})"
    if set(DATASET_COLUMNS) - set(both.columns):
        return f"columns are not {', '.join(DATASET_COLUMNS)}"
    if both["Filename"].duplicated().any():
        return "a Filename appears twice"
    labelled = table.dropna(subset=["age"]).set_index("id")
    if set(both["Filename"]) != set(labelled.index):
        return "their records differ from the labelled files in the data folder"
    if not all(Path(p).exists() for p in both["npy_path"]):
        return "some npy_path no longer exists"
    if not np.allclose(both["Age"].to_numpy(float), labelled.loc[both["Filename"], "age"].to_numpy(float)):
        return "their ages differ from the label CSV"
    return None


def _still_valid(csvs: tuple[Path, Path], sidecar: Path, fingerprint: str, table: pd.DataFrame) -> bool:
    if not all(p.exists() for p in csvs):
        return False
    if sidecar.exists():
        try:
            if json.loads(sidecar.read_text()).get("fingerprint") == fingerprint:
                return True
        except ValueError:
            pass
        logger.info(f"{csvs[0].name}/{csvs[1].name} are stale (the data, labels or split settings changed); rebuilding")
        return False
    reason = _mismatch(csvs, table)
    logger.info(f"using existing {csvs[0]} and {csvs[1]} (they match the data)" if reason is None else
                f"{csvs[0].name}/{csvs[1].name} do not match the data ({reason}); rebuilding")
    return reason is None


def maic_dataset_csvs(reader: NpyFolderReader, mode: str, dataset_dir: str | os.PathLike, valid_ratio: float,
                      seed: int, exclude=()) -> tuple[Path, Path]:
    """Make (or reuse, when still valid) the train/valid CSVs of ``mode`` for a labelled MAIC reader; returns their
    paths. ``exclude`` lists records left out by the bad-input policy (--on_bad skip)."""
    csvs = dataset_csv_paths(dataset_dir, mode)
    sidecar = Path(dataset_dir) / f"dataset_{mode}.json"
    params = {"folder": str(reader.folder.resolve()), "labels": str(Path(reader.labels).resolve()),
              "bins": AGE_BINS[mode], "exclude": sorted(exclude), "valid_ratio": valid_ratio, "seed": seed,
              "split_version": SPLIT_VERSION}
    fingerprint = _fingerprint(reader, params)
    table = reader.table[~reader.table["id"].isin(exclude)].reset_index(drop=True)
    if _still_valid(csvs, sidecar, fingerprint, table):
        write_json(sidecar, {"fingerprint": fingerprint, **params})
        return csvs
    unlabelled = table["id"][table["age"].isna()].tolist()
    if unlabelled:
        raise RecordError(str(reader.labels), f"no usable age for {', '.join(unlabelled[:10])}"
                                              f"{' ...' if len(unlabelled) > 10 else ''}")
    train, valid = stratified_split(table["age"], AGE_BINS[mode], valid_ratio, seed)
    frame = pd.DataFrame({"npy_path": table["path"], "Filename": table["id"], "Gender": table.get("GENDER"),
                          "Age": table["age"]})
    write_csv(csvs[0], frame.iloc[train])
    write_csv(csvs[1], frame.iloc[valid])
    write_json(sidecar, {"fingerprint": fingerprint, **params})
    logger.info(f"wrote {csvs[0]} ({len(train)}) and {csvs[1]} ({len(valid)}), stratified by age bin, seed {seed}")
    return csvs


def read_dataset_csv(path: Path) -> list[str]:
    """The record ids (Filename) listed in one of the seed's dataset CSVs."""
    return [clean_id(f) for f in read_csv(path, "a MAIC dataset CSV", dtype={"Filename": str})["Filename"]]


# ---- the submission template -----------------------------------------------------------------------------------
def read_template(path: Path) -> pd.DataFrame:
    template = read_csv(path, "a submission template", dtype={"FILENAME": str})
    if "FILENAME" not in template.columns:
        raise RecordError(str(path), f"lacks the FILENAME column (has {', '.join(map(str, template.columns))})")
    if "AGE" not in template.columns:
        template["AGE"] = np.nan
    template["AGE"] = pd.to_numeric(template["AGE"], errors="coerce").astype(float)
    return template


def template_ids(template: pd.DataFrame) -> pd.Series:
    return template["FILENAME"].map(clean_id)


def assign_rows(template: pd.DataFrame, folders: dict[str, Path | None], template_path: Path) -> np.ndarray:
    """Mode of every template row, from the folder holding its file; lists every mismatch in both directions."""
    present = {mode: ({p.stem for p in folder.glob("*.npy")} if folder is not None else set())
               for mode, folder in folders.items()}
    names = template_ids(template)
    where = " or ".join(str(f) for f in folders.values() if f is not None) or "no test folder"
    problems, modes = [], []
    for name in names:
        hits = [m for m in MODES if name in present[m]]
        if len(hits) == 2:
            hits = [m for m in hits if m in name.lower()] or hits
        if len(hits) != 1:
            problems.append(f"template row {name}: " + (f"no ECG file {name}.npy in {where}" if not hits else
                                                        f"{name}.npy is in both the adult and the child folder"))
        modes.append(hits[0] if len(hits) == 1 else None)
    for mode, folder in folders.items():
        problems.extend(f"{folder / (extra + '.npy')}: ECG file without a row in {template_path}"
                        for extra in sorted(present[mode] - set(names), key=natural_key))
    problems.extend(f"template row {d}: listed more than once" for d in names[names.duplicated()].unique())
    if problems:
        raise BadInputError(problems, "The template and the test folders must list the same ECGs.")
    return np.array(modes, dtype=object)
