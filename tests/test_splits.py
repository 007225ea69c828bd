"""MAIC dataset CSVs: the seed's stratified 9:1 split, deterministic, rebuilt when stale."""
from __future__ import annotations

import logging
import shutil

import numpy as np
import pandas as pd
import pytest

from dataloader.maic import AGE_BINS as MAIC_AGE_BINS
from dataloader.maic import maic_dataset_csvs
from dataloader.records import NpyFolderReader
from dataloader.splits import patient_split, strat_fold_split, stratified_split


def test_stratified_split_is_9_to_1_per_bin_and_deterministic():
    rng = np.random.default_rng(3)
    ages = np.concatenate([rng.uniform(lo, lo + 10, 50) for lo in range(20, 90, 10)])  # 7 bins × 50
    train, valid = stratified_split(ages, MAIC_AGE_BINS["adult"], 0.1, seed=1234)
    assert len(valid) == 35 and len(train) == 315 and not set(train) & set(valid)
    bins = np.floor(ages[valid] / 10)
    assert all((bins == b).sum() == 5 for b in range(2, 9))  # exactly 10% of each decade
    again = stratified_split(ages, MAIC_AGE_BINS["adult"], 0.1, seed=1234)
    assert np.array_equal(valid, again[1])
    other = stratified_split(ages, MAIC_AGE_BINS["adult"], 0.1, seed=99)
    assert not np.array_equal(valid, other[1])


def test_child_bins_are_one_year():
    ages = np.repeat(np.arange(10) + 0.5, 20)  # 20 children per year of age
    _, valid = stratified_split(ages, MAIC_AGE_BINS["child"], 0.1, seed=0)
    assert np.bincount(np.floor(ages[valid]).astype(int), minlength=10).tolist() == [2] * 10


def test_small_sets_still_get_a_validation_record():
    train, valid = stratified_split([25, 37, 52, 66, 71, 80, 44, 90], MAIC_AGE_BINS["adult"], 0.1, seed=0)
    assert len(valid) == 1 and len(train) == 7


def test_patient_split_keeps_patients_together():
    patients = np.repeat(np.arange(40), 3).astype(str)
    train, valid = patient_split(patients, 0.25, seed=5)
    assert not set(patients[train]) & set(patients[valid])
    assert len(set(patients[valid])) == 10


def test_strat_fold():
    folds = [1, 9, 10, 8, 5, 9]
    train, valid, test = strat_fold_split(folds)
    assert train.tolist() == [0, 3, 4] and valid.tolist() == [1, 5] and test.tolist() == [2]


class _Collect(logging.Handler):
    def __init__(self, messages: list):
        super().__init__()
        self.messages = messages

    def emit(self, record):
        self.messages.append(record.getMessage())


def _build(root, dataset_dir, seed=1234, logs=None):
    """Build (or reuse) the dataset CSVs; the messages logged meanwhile are appended to ``logs``."""
    reader = NpyFolderReader(root / "ECG_adult_numpy_train", labels=root / "ECG_adult_age_train.csv")
    handler = _Collect(logs if logs is not None else [])
    logger = logging.getLogger("dataloader.maic")
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    try:
        return maic_dataset_csvs(reader, "adult", dataset_dir, 0.1, seed)
    finally:
        logger.removeHandler(handler)


def test_maic_csvs_columns_reuse_and_stale_detection(maic_adult, tmp_path):
    root = tmp_path / "maic"
    shutil.copytree(maic_adult, root)
    logs: list[str] = []
    train_csv, valid_csv = _build(root, tmp_path / "ds", logs=logs)
    train, valid = pd.read_csv(train_csv), pd.read_csv(valid_csv)
    assert list(train.columns) == ["npy_path", "Filename", "Gender", "Age"]
    assert len(train) + len(valid) == 24 and len(valid) == 3
    first = train_csv.read_bytes()

    logs.clear()
    _build(root, tmp_path / "ds", logs=logs)  # unchanged data: reused, identical
    assert train_csv.read_bytes() == first and not any("rebuild" in m for m in logs)

    labels = pd.read_csv(root / "ECG_adult_age_train.csv")
    labels.loc[0, "AGE"] = 33.0  # a corrected label → stale
    labels.to_csv(root / "ECG_adult_age_train.csv", index=False)
    logs.clear()
    _build(root, tmp_path / "ds", logs=logs)
    assert any("stale" in m for m in logs)
    both = pd.concat([pd.read_csv(train_csv), pd.read_csv(valid_csv)]).set_index("Filename")
    assert both.loc["ecg_adult_0", "Age"] == 33.0

    # a new file and label row → stale, and the new record appears in the CSVs
    np.save(root / "ECG_adult_numpy_train" / "ecg_adult_99.npy", np.load(root / "ECG_adult_numpy_train" /
                                                                          "ecg_adult_1.npy"))
    pd.concat([labels, pd.DataFrame([{"FILENAME": "ecg_adult_99", "GENDER": "MALE", "AGE": 50.0}])]).to_csv(
        root / "ECG_adult_age_train.csv", index=False)
    logs.clear()
    _build(root, tmp_path / "ds", logs=logs)
    assert any("stale" in m for m in logs)
    names = set(pd.read_csv(train_csv)["Filename"]) | set(pd.read_csv(valid_csv)["Filename"])
    assert "ecg_adult_99" in names and len(names) == 25


def test_csvs_made_elsewhere_are_checked_not_trusted(maic_adult, tmp_path):
    train_csv, valid_csv = _build(maic_adult, tmp_path / "ds")
    (tmp_path / "ds" / "dataset_adult.json").unlink()  # as if the seed code had written them
    logs: list[str] = []
    _build(maic_adult, tmp_path / "ds", logs=logs)
    assert any("using existing" in m for m in logs)
    (tmp_path / "ds" / "dataset_adult.json").unlink()
    pd.read_csv(train_csv).iloc[:-2].to_csv(train_csv, index=False)  # rows lost → no longer the data
    logs.clear()
    _build(maic_adult, tmp_path / "ds", logs=logs)
    assert any("do not match" in m for m in logs)
    assert len(pd.read_csv(train_csv)) + len(pd.read_csv(valid_csv)) == 24


def test_missing_label_csv_is_a_clear_error(maic_adult, tmp_path):
    from utils.errors import RecordError

    with pytest.raises(RecordError, match=r"nope\.csv: cannot be read as a MAIC label CSV \(FileNotFoundError"):
        NpyFolderReader(maic_adult / "ECG_adult_numpy_train", labels=tmp_path / "nope.csv")
