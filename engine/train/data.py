"""A training run's records and split: the labelled records (``training_records``: reader → source, cache or on
the fly → the bad-input policy) and how they are divided (``single_split``: train/validation; ``fold_split``: K
folds), each returning what it made."""
from __future__ import annotations

import dataclasses
import functools
import logging

import numpy as np
import pandas as pd

from dataloader.checks import apply_policy, duplicate_ids, label_problems
from dataloader.fingerprint import recordings
from dataloader.formats import ages_elsewhere
from dataloader.maic import dataset_csv_paths, maic_dataset_csvs, read_dataset_csv
from dataloader.records import NpyFolderReader, Reader
from dataloader.sources import CacheConfig, open_source
from dataloader.splits import DECADE_BINS, kfold_split, patient_split, strat_fold_split, stratified_split
from models.preprocessing import PreprocessSpec
from utils.errors import UserError
from utils.io import check_spreadsheet_safe
from utils.paths import DATA_ROOT_ENV
from utils.ranks import barrier, is_main

from .settings import TrainSettings

logger = logging.getLogger(__name__)
SHOWN_DUPLICATES = 5  # groups of identical recordings named in the warning (the count is always given)


@dataclasses.dataclass
class Records:
    """What every member of a run trains on: the reader, its open source, the usable records and their ages."""

    reader: Reader
    source: object
    usable: np.ndarray

    @property
    def ages(self) -> np.ndarray:
        return pd.to_numeric(self.reader.table["age"], errors="coerce").to_numpy(np.float32)

    @property
    def ids(self) -> pd.Series:
        return self.reader.table["id"].astype(str)

    @property
    def prints(self) -> np.ndarray | None:
        """Every record's fingerprint (dataloader.fingerprint) where its source read them, else None."""
        return getattr(self.source, "prints", None)

    @functools.cached_property
    def recordings(self) -> tuple[np.ndarray, bool] | None:
        """Every record's recording and whether copies at another rate were looked for (dataloader.fingerprint's
        ``recordings``), or None where the source knows no fingerprints."""
        return None if self.prints is None else recordings(self.prints)


@dataclasses.dataclass(frozen=True)
class Split:
    """One train/validation split: positions in the reader, what it is, and each record's part by id."""

    train: np.ndarray
    valid: np.ndarray
    description: str
    assignment: pd.Series


def training_reader(settings: TrainSettings) -> Reader:
    """The labelled records to train on: the MAIC folder + label CSV of ``--mode``, or any ``--input``."""
    if settings.data.input is not None:
        return settings.data.open(labels=True)
    mode = settings.model.mode
    folder, labels = settings.maic.paths(mode)
    if folder is None or labels is None or not folder.is_dir() or not labels.is_file():
        raise UserError(f"no MAIC {mode} training data: looked for the folder {folder} and the label CSV {labels}. "
                        f"Put the challenge data at the default data root (data/maic2023, or the folder in "
                        f"${DATA_ROOT_ENV}), pass --data_root DIR (or --train_for_{mode} and "
                        f"--train_for_{mode}_label), or --input for other formats; `make demo` builds a synthetic set")
    return NpyFolderReader(folder, labels=labels, fs=settings.data.fs or 500.0, scale=settings.data.input_scale)


def training_records(settings: TrainSettings, spec: PreprocessSpec, cache: CacheConfig) -> Records:
    """The reader, its source (cache or on the fly) and the records that pass the bad-input policy: signals, age
    labels, duplicate ids, and label rows whose ECG file is missing (all listed at once)."""
    reader = training_reader(settings)
    check_spreadsheet_safe(reader.ids, "record id(s)")
    ages = pd.to_numeric(reader.table["age"], errors="coerce") if "age" in reader.table.columns else None
    if reader.labelled_root is not None and (ages is None or ages.isna().all()):
        root = reader.labelled_root
        raise UserError(f"{settings.data.input}: {ages_elsewhere(root)}: give --input {root}")
    source, bad_signals = open_source(reader, spec, cache)
    bad = {**duplicate_ids(reader.table), **label_problems(reader.table), **bad_signals}
    orphans = list(getattr(reader, "orphan_labels", []))
    bad.update({rid: f"{rid}: label row without an ECG file in {reader.folder}" for rid in orphans})
    keep = apply_policy(bad, reader.ids + orphans, settings.run.on_bad, "training")
    return Records(reader, source, keep[keep < len(reader)])


def single_split(settings: TrainSettings, records: Records) -> Split:
    """Train/validation. MAIC: the seed's dataset CSVs; otherwise --split."""
    train, valid, description = maic_split(settings, records.reader, records.usable) \
        if settings.data.input is None else input_split(settings, records)
    assignment = pd.Series(["train"] * len(train) + ["valid"] * len(valid),
                           index=pd.concat([records.ids.iloc[train], records.ids.iloc[valid]]))
    warn_parted_duplicates(records, np.concatenate([train, valid]),
                           np.array([0] * len(train) + [1] * len(valid)), "the training and validation records")
    return Split(train, valid, description, assignment)


def input_split(settings: TrainSettings, records: Records) -> tuple[np.ndarray, np.ndarray, str]:
    """(train positions, valid positions, description) of ``--input`` by --split."""
    split, usable, reader = settings.split, records.usable, records.reader
    table = reader.table.iloc[usable]
    method = split.split
    if method == "auto":
        has_patients = "patient_id" in table.columns and table["patient_id"].notna().any()
        method = "patient" if has_patients else "stratified"
    needs = {"strat_fold": "PTB-XL's strat_fold column", "patient": "patient ids"}
    column = {"strat_fold": "strat_fold", "patient": "patient_id"}.get(method)
    if column and (column not in table.columns or table[column].isna().all()):
        raise UserError(f"--split {method} needs {needs[method]}; {settings.data.input} has none")
    if method == "strat_fold":
        train, valid, _test = strat_fold_split(table["strat_fold"])
    elif method == "patient":
        train, valid = patient_split(patients_of(settings, records, usable), split.valid_ratio, split.split_seed)
    else:
        train, valid = stratified_split(table["age"], DECADE_BINS, split.valid_ratio, split.split_seed)
    return usable[train], usable[valid], f"{reader.format} {settings.data.input} (split: {method})"


def maic_split(settings: TrainSettings, reader: Reader, usable: np.ndarray) -> tuple[np.ndarray, np.ndarray, str]:
    """The seed's dataset CSVs (written by the first process, read by all)."""
    mode, dataset_dir = settings.model.mode, settings.maic.dataset_dir
    excluded = sorted(set(reader.ids) - {reader.ids[i] for i in usable})
    if is_main():
        maic_dataset_csvs(reader, mode, dataset_dir, settings.split.valid_ratio, settings.split.split_seed,
                          exclude=excluded)
    barrier()
    position = {rid: i for i, rid in enumerate(reader.ids)}
    csvs = dataset_csv_paths(dataset_dir, mode)
    train, valid = (np.array([position[f] for f in read_dataset_csv(c)], np.int64) for c in csvs)
    return train, valid, f"MAIC {mode} ({csvs[0].name} / {csvs[1].name})"


def fold_split(settings: TrainSettings, records: Records) -> tuple[np.ndarray, pd.Series]:
    """(each usable record's fold, the folds by record id): patient-level K folds, age-stratified."""
    table = records.reader.table.iloc[records.usable]
    folds = kfold_split(table["age"], patients_of(settings, records, records.usable), settings.run.folds,
                        settings.split.split_seed)
    warn_parted_duplicates(records, records.usable, folds, "different folds: their out-of-fold ages come from models "
                                                           "trained on the same recording")
    return folds, pd.Series(folds, index=records.ids.iloc[records.usable])


def patients_of(settings: TrainSettings, records: Records, positions: np.ndarray) -> pd.Series | None:
    """The patient ids a patient-level split deals by; with --duplicates together, every patient holding a copy of
    a recording that another patient (or a record without one) also holds is merged into one."""
    table = records.reader.table.iloc[positions]
    patients = table["patient_id"] if "patient_id" in table.columns else None
    if settings.split.duplicates != "together" or records.recordings is None:
        return patients
    labels = records.recordings[0]
    keys = [f"#record {rid}" if patients is None or pd.isna(p) else f"patient {p}"
            for rid, p in zip(records.ids.iloc[positions], [None] * len(positions) if patients is None else patients)]
    root = {k: k for k in keys}

    def find(k: str) -> str:
        while root[k] != k:
            root[k] = root[root[k]]
            k = root[k]
        return k

    first = {}
    for key, mark in zip(keys, labels[positions]):
        if mark >= 0:
            root[find(key)] = find(first.setdefault(mark, key))
    return pd.Series([find(k) for k in keys], index=table.index)


def parted_duplicates(labels: np.ndarray, ids: np.ndarray, parts: np.ndarray) -> list[list[str]]:
    """The ids of each recording that appears under several ids (the same ``labels``, dataloader.fingerprint's
    ``recordings``) whose copies ``parts`` puts in different parts."""
    frame = pd.DataFrame({"recording": labels, "id": ids, "part": parts})
    frame = frame[frame["recording"] >= 0]
    apart = frame.groupby("recording").filter(lambda group: group["part"].nunique() > 1)
    return [group["id"].tolist() for _, group in apart.groupby("recording", sort=False)]


def warn_parted_duplicates(records: Records, positions: np.ndarray, parts: np.ndarray, where: str) -> None:
    """A warning naming recordings under different ids (another patient id, too; identical, or copies at another
    rate or from another file) that the split puts apart (in ``where``); nothing where the source knows no
    fingerprints."""
    if records.recordings is None or not len(positions):
        return
    labels, checked = records.recordings
    if not checked:
        logger.info(f"note: copies of one recording at another rate or from another file were not looked for: "
                    f"{len(labels)} records are too many to compare every pair's sketches (identical copies were)")
    groups = parted_duplicates(labels[positions], records.ids.iloc[positions].to_numpy(), parts)
    if groups:
        shown = "; ".join(" = ".join(g) for g in groups[:SHOWN_DUPLICATES])
        logger.warning(f"note: {len(groups)} recording(s) appear under several ids (the same recording: {shown}"
                       f"{', …' if len(groups) > SHOWN_DUPLICATES else ''}) and the split puts their copies in "
                       f"{where}; --duplicates together keeps them on one side")
