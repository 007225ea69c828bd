"""A training run, top to bottom: ``Experiment(settings, place).run()``.

    the model options checked (on the meta device) → the run folder locked
    → what an interrupted run left removed → an earlier experiment refused or cleared (folder.py)
    → the starting point (new, --resume or --pretrained; members.py) → the records and the bad-input policy (data.py)
    → the split or the K folds (data.py) → the teacher's targets with --teacher (distill.py)
    → the manifest settled (folder.py) → the members fitted, each recorded (members.py)
    → for K folds the out-of-fold ages, oof.csv and cv.json (results.py) → the manifest complete.

Each step takes what it needs and returns what it makes; the settings (engine/train/settings.py) are built once by
the program and never change during the run.
"""
from __future__ import annotations

import pandas as pd
import torch

from engine.lock import RunLock
from engine.predict.inference import InferenceConfig
from engine.runs import FOLDS, SINGLE, best_checkpoint_name, finish_member, write_manifest, write_run_prints
from utils.io import write_csv
from utils.ranks import is_main
from utils.runtime import default_infer_batch
from utils.tables import RUN_ID

from .data import fold_split, single_split, training_records
from .distill import teacher_targets
from .folder import identify, remove_temporaries, settle_manifest, start_afresh
from .members import Place, build_bundle, fit_folds, fit_member, starting_point
from .plan import plan_of
from .results import write_oof
from .settings import TrainSettings

__all__ = ["Experiment", "Place", "build_bundle"]


class Experiment:
    """One training run in its folder (see the module's docstring for the order of its steps)."""

    def __init__(self, settings: TrainSettings, place: Place):
        self.settings, self.place = settings, place

    def run(self) -> None:
        settings = self.settings
        if not (settings.run.resume or settings.run.pretrained):
            with torch.device("meta"):  # the model options are checked before anything is created or read
                build_bundle(settings)
        lock = RunLock(settings.folder) if is_main() else None  # before anything in the folder is read or written
        try:
            self.train()
        finally:
            if lock is not None:
                lock.release()

    def train(self) -> None:
        """Records → bad-input policy → one split, or K folds; the manifest settled before the first epoch and
        completed after the last member."""
        settings, place = self.settings, self.place
        remove_temporaries(settings)
        if not settings.run.resume:
            start_afresh(settings)
        bundle, start = starting_point(settings, settings.folder / settings.members[0])
        settings = settings.with_arch(bundle.arch)  # a checkpoint of another architecture: its own
        cache = settings.cache.config(place.precision, progress=not settings.runtime.quiet)
        records = training_records(settings, bundle.preprocessing, cache)
        if is_main() and records.prints is not None:  # which records the models learn from, for a prediction
            # to know them (engine/runs.py)
            write_run_prints(settings.folder, records.ids.iloc[records.usable].tolist(),
                             records.prints[records.usable])
        held_out = InferenceConfig(device=place.device, precision=place.precision, workers=0,
                                   fast_layout=settings.runtime.fast_layout, cache=cache,
                                   batch_size=settings.runtime.infer_batch_size or
                                   default_infer_batch(place.device, 32))
        plan = plan_of(settings, len(records.usable))
        if is_main():
            plan.announce()
        if settings.run.folds == 1:
            split = single_split(settings, records)
            targets, seconds = teacher_targets(settings, records, bundle.preprocessing, held_out)
            manifest = settle_manifest(settings, identify(settings, place.precision, records.reader,
                                                          split.assignment, split.description, seconds))
            fit_member(settings, place, settings.folder, (bundle, start), records, (split.train, split.valid),
                       split.description, targets=None if targets is None else targets[None], plan=plan)
            if is_main():
                finish_member(settings.folder, manifest, SINGLE, best_checkpoint_name(settings.recipe.checkpoints))
                manifest["complete"] = True
                write_manifest(settings.folder, manifest)
            return
        folds, assignment = fold_split(settings, records)
        targets, seconds = teacher_targets(settings, records, bundle.preprocessing, held_out, assignment)
        manifest = settle_manifest(settings, identify(settings, place.precision, records.reader, assignment,
                                                      f"{settings.run.folds} folds", seconds))
        if is_main():
            write_csv(settings.folder / FOLDS, pd.DataFrame({RUN_ID: assignment.index, "fold": assignment.to_numpy()}))
        oof = fit_folds(settings, place, held_out, manifest, (bundle, start), records, folds, targets, plan)
        if is_main():
            write_oof(settings, manifest, records, oof, folds)
