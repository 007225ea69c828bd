"""A run's results: the out-of-fold ages written (``write_oof``: oof.csv, cv.json, the manifest complete) and the
warning when a model does not beat the constant predictor."""
from __future__ import annotations

import logging

import numpy as np

from dataloader.labels import patients
from engine.runs import CV_SUMMARY, OOF, write_manifest
from utils.cli import RESULT
from utils.errors import TrainingDiverged
from utils.metrics import interval_text

from .crossval import write_cross_validation
from .settings import TrainSettings

logger = logging.getLogger("train")


def write_oof(settings: TrainSettings, manifest: dict, records, oof: np.ndarray, folds: np.ndarray) -> None:
    """oof.csv and cv.json, then the manifest marked complete — only when every out-of-fold age is finite."""
    usable, reader, run = records.usable, records.reader, settings.folder
    broken = np.flatnonzero(~np.isfinite(oof))
    if len(broken):
        shown = ", ".join(str(reader.ids[usable[i]]) for i in broken[:10])
        raise TrainingDiverged(f"fold model(s) {sorted(set(folds[broken].tolist()))} give non-finite ages for "
                               f"{len(broken)} held-out record(s) ({shown}): the training diverged; lower the learning "
                               f"rate and start again with --overwrite. No {OOF} or {CV_SUMMARY} was written")
    ages = records.ages.astype(float)[usable]
    recipe = settings.recipe
    table = reader.table.iloc[usable]
    named = patients(table)
    cv = write_cross_validation(run, table["id"].tolist(), ages, oof, folds, settings.run.seed, seeds=recipe.seeds,
                                partner=recipe.partner, partners=recipe.partners, patients=named)
    manifest["complete"] = True
    write_manifest(run, manifest)
    pooled = cv["pooled"]
    by = f" of {pooled['n_patients']} patients" if named is not None else ""
    logger.log(RESULT, f"{settings.run.folds}-fold cross-validation: out-of-fold MAE {pooled['mae']:.2f}"
                       f"{interval_text(pooled['mae_ci95'], '95% CI ')} on {pooled['n']} ECGs{by} → {run / OOF}, "
                       f"{run / CV_SUMMARY}")
    medians = {fold: np.median(ages[folds != fold]) for fold in np.unique(folds)}  # each fold's training median
    constant = np.array([medians[fold] for fold in folds])
    warn_if_constant(f"{run}: out-of-fold MAE {pooled['mae']:.2f}", pooled["mae"], ages, constant)


def warn_if_constant(what: str, mae: float, ages: np.ndarray, constant: np.ndarray) -> None:
    """A warning when a model does not beat the constant predictor (the training median for every ECG): such a
    model has learnt nothing usable, and its number must not be read as a result."""
    baseline = float(np.mean(np.abs(np.asarray(ages, float) - constant)))
    if not mae < baseline:
        logger.warning(f"warning: {what} does not beat the constant predictor (the training median for every ECG: "
                       f"MAE {baseline:.2f}); the model has learnt nothing usable. Check the learning rate, the "
                       f"epochs, the labels and the precision (--precision fp32)")
