"""Cross-validation results: out-of-fold predictions (``oof.csv``) and their summary (``cv.json``).

Every record is predicted by its fold's models that never saw it (their mean, with several seeds or a partner
architecture); with the modern recipe each is the last epoch's, so nothing about a held-out fold influenced its own
prediction and the pooled out-of-fold MAE is an honest estimate of the error of one fold's models on new records
from the same population.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from engine.runs import CV_SUMMARY, OOF
from utils import metrics
from utils.io import write_csv, write_json
from utils.tables import OOF_COLUMNS


def write_cross_validation(run: Path, ids: list[str], ages: np.ndarray, predicted: np.ndarray, folds: np.ndarray,
                           seed: int, n_boot: int = 2000, seeds: int = 1, partner: str = "none",
                           partners: int = 1, patients: list | None = None) -> dict:
    """Write ``oof.csv`` (id, age, predicted_age, fold) and ``cv.json`` (per-fold and pooled MAE with its
    percentile-bootstrap 95% interval — whole patients resampled where ``patients`` names each record's, a record
    without one a patient of its own; ``pooled.ci_resampled`` says which); returns the cv.json content."""
    write_csv(run / OOF, pd.DataFrame(dict(zip(OOF_COLUMNS, (ids, ages, predicted, folds))),
                                            columns=OOF_COLUMNS))
    per_fold = [{"fold": int(k), "n": int((folds == k).sum()),
                 "mae": float(np.mean(np.abs(predicted[folds == k] - ages[folds == k])))}
                for k in np.unique(folds)]
    pooled = {**metrics.summary(predicted, ages), **metrics.mae_interval(predicted, ages, n_boot, seed, patients)}
    cv = {"folds": len(per_fold), "seed": seed, "seeds": seeds, "partner": partner,
          "partners": partners if partner != "none" else 0, "per_fold": per_fold, "pooled": pooled,
          "fold_mae_mean": float(np.mean([f["mae"] for f in per_fold])),
          "fold_mae_sd": float(np.std([f["mae"] for f in per_fold], ddof=1)) if len(per_fold) > 1 else 0.0}
    write_json(run / CV_SUMMARY, cv)
    return cv
