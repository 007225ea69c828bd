"""Train/validation splits.

* ``stratified_split``: the seed's 9:1 split, stratified by age bin, reproducible from the seed.
* ``patient_split``: whole patients go to one side, so no patient appears in two splits (CODE-15%, PTB-XL).
* ``strat_fold_split``: PTB-XL's recommended folds (1–8 train, 9 valid, 10 test).
* ``kfold_split``: K folds for cross-validation, patient-disjoint and balanced in age.
"""
from __future__ import annotations

import dataclasses

import numpy as np
import pandas as pd

from utils.bounds import MAX_SEED
from utils.errors import UserError
from utils.settings import Settings, option, whole_number

DECADE_BINS = list(range(0, 140, 10))  # age decades 0–130: the stratification bins of non-MAIC data


def stratified_split(ages, bins, valid_ratio: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Positions (train, valid): ``ceil(n·valid_ratio)`` records validate, shared among the age bins in proportion
    to their size (whole quotas first, the remainder to the bins with the largest fractional share)."""
    ages = np.asarray(ages, dtype=np.float64)
    edges = np.asarray(bins, dtype=np.float64)
    # bin i holds edges[i] <= age < edges[i+1]; ages outside the edges join the first / last bin
    which = np.clip(np.searchsorted(edges, ages, side="right") - 1, 0, max(len(edges) - 2, 0))
    rng = np.random.default_rng(seed)
    labels, counts = np.unique(which, return_counts=True)
    share = counts * valid_ratio
    quota = np.floor(share).astype(int)
    remainder = int(np.ceil(len(ages) * valid_ratio - 1e-9)) - quota.sum()
    if remainder > 0:
        order = np.lexsort((rng.random(len(labels)), -(share - quota)))
        quota[order[:remainder]] += 1
    valid = []
    for label, take in zip(labels, quota):
        members = np.flatnonzero(which == label)
        rng.shuffle(members)
        valid.extend(members[:take])
    valid = np.sort(np.asarray(valid, dtype=np.int64))
    train = np.setdiff1d(np.arange(len(ages)), valid)
    return train, valid


def patient_split(patient_ids, valid_ratio: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Positions (train, valid) with every patient's records on one side; ~valid_ratio of patients validate.
    Records without a patient id count as their own patient."""
    ids = pd.Series(patient_ids).astype(object)
    keys = np.array([f"#row{i}" if v is None or (isinstance(v, float) and np.isnan(v)) else str(v)
                     for i, v in enumerate(ids)])
    patients = np.unique(keys)
    rng = np.random.default_rng(seed)
    rng.shuffle(patients)
    chosen = set(patients[:int(round(len(patients) * valid_ratio))])
    is_valid = np.array([k in chosen for k in keys], dtype=bool)
    return np.flatnonzero(~is_valid), np.flatnonzero(is_valid)


def strat_fold_split(folds) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """PTB-XL: folds 1–8 train, 9 valid, 10 test (positions)."""
    folds = pd.to_numeric(pd.Series(folds), errors="coerce").to_numpy()
    return np.flatnonzero((folds >= 1) & (folds <= 8)), np.flatnonzero(folds == 9), np.flatnonzero(folds == 10)


def kfold_split(ages, patient_ids, k: int, seed: int) -> np.ndarray:
    """The fold (0..k-1) of every record: all records of a patient share a fold (records without a patient id are
    their own patient), and folds are balanced in age — patients are sorted by mean age (ties in a seeded random
    order) and each run of k consecutive patients is dealt to the k folds in a random order."""
    ages = pd.to_numeric(pd.Series(ages), errors="coerce").to_numpy(np.float64)
    ids = [None] * len(ages) if patient_ids is None else list(patient_ids)
    keys = np.array([f"#row{i}" if v is None or (isinstance(v, float) and np.isnan(v)) else str(v)
                     for i, v in enumerate(ids)])
    patients, inverse = np.unique(keys, return_inverse=True)
    if len(patients) < k:
        raise UserError(f"{k} folds need at least {k} patients; the usable records come from {len(patients)}")
    mean_age = np.bincount(inverse, weights=ages) / np.bincount(inverse)
    rng = np.random.default_rng(seed)
    shuffled = rng.permutation(len(patients))
    order = shuffled[np.argsort(mean_age[shuffled], kind="stable")]
    fold_of_patient = np.empty(len(patients), np.int64)
    for start in range(0, len(order), k):
        block = order[start:start + k]
        fold_of_patient[block] = rng.permutation(k)[:len(block)]
    return fold_of_patient[inverse]


@dataclasses.dataclass(frozen=True)
class SplitSettings(Settings):
    """``--split``, ``--valid_ratio`` and ``--split_seed`` (resolved: --seed when not given)."""

    TITLE = "split"

    split: str = option("auto", "train/valid split: stratified by age bin (MAIC), by patient (no patient in two "
                                "splits), or PTB-XL strat_fold (1–8 train, 9 valid, 10 test); auto = patient when "
                                "ids exist", choices=("auto", "stratified", "patient", "strat_fold"))
    valid_ratio: float = option(0.1, "share of records (or patients) for validation")
    split_seed: int | None = option(None, "random seed of the train/valid split or the folds (default: --seed); "
                                          "runs that differ only in --seed but share it are compared on identical "
                                          "folds", type=whole_number(0, MAX_SEED, "a random seed"))
    duplicates: str = option("warn", "one recording under several ids (identical, or a copy at another rate or "
                                     "from another file; even filed under other patients) that the patient-level "
                                     "folds or --split patient would part: warn = "
                                     "say so and leave the split as it is; together = keep its copies on one side, "
                                     "as one patient", choices=("warn", "together"))
