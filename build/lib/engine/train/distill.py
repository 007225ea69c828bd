"""Distillation (``--teacher``): the teacher ensemble's ages as each training record's target, computed once
before the manifest is settled — on ``--teacher_views`` stored augmented views of every training record
(consistent teaching: only each view's seed is kept) or one age per record. A K-fold teacher on this run's folds
teaches fold k's student with fold k's teachers only."""
from __future__ import annotations

import logging
import time
from pathlib import Path

import numpy as np
import pandas as pd

from dataloader.labels import table_sex
from engine.predict.inference import InferenceConfig, predict_ensemble, predict_views
from engine.runs import FOLDS, members_by_fold, run_members
from models.checkpoint import load_ensemble
from models.preprocessing import PreprocessSpec
from utils.errors import UserError
from utils.io import read_csv
from utils.tables import RUN_ID

from .data import Records
from .settings import TrainSettings

logger = logging.getLogger("train")


def teacher_targets(settings: TrainSettings, records: Records, spec: PreprocessSpec, cfg: InferenceConfig,
                    assignment: pd.Series | None = None) -> tuple[dict | None, float | None]:
    """(targets, the seconds the teacher pass took) — (None, None) without --teacher. Each record's training target
    is ``teacher_weight`` × the teacher ensemble's age + the rest × its true age (the true age where the teacher has
    none), keyed by fold (None: one split): (records, teacher_views) — the teacher's age of each stored augmented
    view the student will train on — or (records,) with --teacher_views 0. Any teacher that is not a K-fold run on
    these folds serves every fold (and the out-of-fold MAE is then only honest if it never saw these records)."""
    if not settings.run.teacher:
        return None, None
    members = [Path(m) for t in settings.run.teacher for m in run_members(t)]
    groups = {None: members} if assignment is None else teacher_folds(settings.run.folds, members, assignment)
    ages, weight = records.ages.astype(np.float64), settings.recipe.teacher_weight
    out, started = {}, time.perf_counter()
    fold = None if assignment is None else assignment.reindex(records.ids.iloc[records.usable]).to_numpy(dtype=float)
    for key, group in groups.items():
        teachers = load_ensemble(group, mode=settings.model.mode, trust=settings.runtime.trust_checkpoint)
        rows = records.usable if key is None else records.usable[np.isfinite(fold) & (fold != key)]
        taught = teacher_ages(settings, teachers, records, rows, spec, cfg)
        truth = ages if taught.ndim == 1 else ages[:, None]
        out[key] = np.where(np.isfinite(taught), weight * taught + (1 - weight) * truth, truth).astype(np.float32)
    first = out[next(iter(out))]
    views = first.shape[1] if first.ndim == 2 else 0
    seconds = round(time.perf_counter() - started, 1)
    logger.info(f"distilling from {len(members)} teacher model(s) ({', '.join(map(str, settings.run.teacher))}): their "
                f"ages for " + (f"{views} stored views of each training record" if views else
                                f"{len(records.reader)} records") +
                f" in {seconds:.0f} s; target = {weight:g} × teacher + {1 - weight:g} × true age")
    if assignment is not None:
        out = {k: out.get(k, out.get(None)) for k in range(settings.run.folds)}
    return out, seconds


def teacher_ages(settings: TrainSettings, teachers: list, records: Records, rows: np.ndarray, spec: PreprocessSpec,
                 cfg: InferenceConfig) -> np.ndarray:
    """The teacher ensemble's ages: (records, views) on the stored views of ``rows`` (NaN elsewhere) for the
    members that read the student's preprocessing ``spec`` — a member of another preprocessing cannot see the
    student's view and gives its whole-record age to every view —, or (records,) per record when the recipe stores
    no views (--teacher_views 0, or no augmentation)."""
    recipe, n = settings.recipe, len(records.reader)
    augment = recipe.augment(spec.fs)
    sees = [bool(recipe.teacher_views and augment) and t.preprocessing == spec for t in teachers]
    viewing = [t for t, s in zip(teachers, sees) if s]
    others = [t for t, s in zip(teachers, sees) if not s]
    whole = predict_ensemble(others, records.reader, cfg)[0] if others else np.zeros(n)
    if not viewing:
        return whole
    seen = np.full((n, recipe.teacher_views), np.nan)
    seen[rows] = predict_views(viewing, records.source, rows, table_sex(records.reader.table), augment,
                               recipe.teacher_views, settings.run.seed, cfg)
    if others:
        logger.warning(f"warning: {len(others)} of the {len(teachers)} teacher models read another preprocessing than "
                       f"the student; they give each record's whole-record age to all its views")
    return (len(viewing) * seen + len(others) * whole[:, None]) / len(teachers)


def teacher_folds(folds: int, members: list[Path], assignment: pd.Series) -> dict:
    """Fold k → the teacher members of fold k, when the teacher is a K-fold run on exactly this run's folds;
    otherwise every member for every fold (with a warning)."""
    groups = members_by_fold(members)
    runs = {m.parent.parent for m in members}
    if set(groups) != set(range(folds)) or len(runs) != 1:
        logger.warning(f"warning: the teacher is not one {folds}-fold run: every fold's student learns from all "
                       f"{len(members)} teacher models; the out-of-fold MAE is honest only if the teacher never saw "
                       f"these records")
        return {None: members}
    run = runs.pop()
    theirs = read_csv(run / FOLDS, f"the teacher's {FOLDS}", dtype={RUN_ID: str}) if (run / FOLDS).exists() else None
    same = theirs is not None and dict(zip(theirs[RUN_ID], theirs["fold"].astype(int))) == \
        dict(zip(assignment.index.astype(str), assignment.astype(int)))
    if not same:
        raise UserError(f"--teacher {run}: its folds are not this run's ({run / FOLDS} differs): fold k's student must "
                        f"learn only from the teacher models that never saw fold k. Train the student on the "
                        f"teacher's records with its --folds and --split_seed")
    return groups
