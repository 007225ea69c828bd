"""Train/validation splits and the MAIC dataset CSVs.

* ``stratified_split``: the seed's 9:1 split, stratified by age bin, reproducible from the seed.
* ``patient_split``: whole patients go to one side, so no patient appears in two splits (CODE-15%, PTB-XL).
* ``strat_fold_split``: PTB-XL's recommended folds (1–8 train, 9 valid, 10 test).
* ``maic_dataset_csvs``: ``dataset/train_dataset_<mode>.csv`` / ``valid_dataset_<mode>.csv`` (npy_path, Filename,
  Gender, Age), rebuilt whenever they no longer match the data folder and label CSV.
"""
from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

import numpy as np
import pandas as pd

from utils.io import write_csv, write_json

from .records import NpyFolderReader, RecordError, read_csv


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


# ---- MAIC dataset CSVs -----------------------------------------------------------------------------------------
MAIC_COLUMNS = ["npy_path", "Filename", "Gender", "Age"]
SPLIT_VERSION = 1  # bump when the split algorithm changes: existing CSVs become stale


def _fingerprint(reader: NpyFolderReader, labels: Path, params: dict) -> str:
    digest = hashlib.sha256(json.dumps(params, sort_keys=True).encode())
    digest.update(labels.read_bytes())
    for path in reader.table["path"]:
        digest.update(f"{Path(path).resolve()}|{os.path.getsize(path)}\n".encode())
    return digest.hexdigest()


def _usable_existing(train_csv: Path, valid_csv: Path, table: pd.DataFrame) -> str | None:
    """Why existing CSVs (made without our sidecar, e.g. by the seed code) do not match the data, or None."""
    try:
        frames = [read_csv(p, dtype={"Filename": str}) for p in (train_csv, valid_csv)]
    except RecordError as exc:
        return f"unreadable ({exc.reason})"
    if any(set(MAIC_COLUMNS) - set(f.columns) for f in frames):
        return f"columns are not {', '.join(MAIC_COLUMNS)}"
    both = pd.concat(frames, ignore_index=True)
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


def maic_dataset_csvs(folder: str | os.PathLike, labels: str | os.PathLike, mode: str, dataset_dir: str | os.PathLike,
                      bins, valid_ratio: float, seed: int, exclude=(), log=print) -> tuple[Path, Path]:
    """Make (or reuse, when still valid) the MAIC train/valid CSVs of ``mode``; returns their paths. ``exclude``
    lists records left out by the bad-input policy (--on_bad skip)."""
    dataset_dir = Path(dataset_dir)
    train_csv = dataset_dir / f"train_dataset_{mode}.csv"
    valid_csv = dataset_dir / f"valid_dataset_{mode}.csv"
    sidecar = dataset_dir / f"dataset_{mode}.json"
    labels = Path(labels)
    if not labels.exists():
        raise RecordError(str(labels), f"label CSV not found (set --train_for_{mode}_label or --data_root)")
    reader = NpyFolderReader(folder, labels=labels)
    params = {"folder": str(Path(folder).resolve()), "labels": str(labels.resolve()), "bins": list(bins),
              "exclude": sorted(exclude),
              "valid_ratio": valid_ratio, "seed": seed, "split_version": SPLIT_VERSION}
    fingerprint = _fingerprint(reader, labels, params)
    if train_csv.exists() and valid_csv.exists():
        if sidecar.exists():
            try:
                fresh = json.loads(sidecar.read_text()).get("fingerprint") == fingerprint
            except ValueError:
                fresh = False
            if fresh:
                return train_csv, valid_csv
            log(f"{train_csv.name}/{valid_csv.name} are stale (the data, labels or split settings changed); "
                f"rebuilding")
        else:
            reason = _usable_existing(train_csv, valid_csv, reader.table[~reader.table["id"].isin(exclude)])
            if reason is None:
                log(f"using existing {train_csv} and {valid_csv} (they match the data)")
                write_json(sidecar, {"fingerprint": fingerprint, **params})
                return train_csv, valid_csv
            log(f"{train_csv.name}/{valid_csv.name} do not match the data ({reason}); rebuilding")
    table = reader.table[~reader.table["id"].isin(exclude)]
    unlabelled = table["id"][table["age"].isna()].tolist()
    if unlabelled:
        raise RecordError(str(labels), f"no usable age for {', '.join(unlabelled[:10])}"
                                       f"{' ...' if len(unlabelled) > 10 else ''}")
    table = table.reset_index(drop=True)
    train, valid = stratified_split(table["age"], bins, valid_ratio, seed)
    frame = pd.DataFrame({"npy_path": table["path"], "Filename": table["id"],
                          "Gender": table.get("GENDER"), "Age": table["age"]})
    write_csv(train_csv, frame.iloc[train])
    write_csv(valid_csv, frame.iloc[valid])
    write_json(sidecar, {"fingerprint": fingerprint, **params})
    log(f"wrote {train_csv} ({len(train)}) and {valid_csv} ({len(valid)}), stratified by age bin, seed {seed}")
    return train_csv, valid_csv
