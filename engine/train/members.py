"""Fitting a run's members: where a member starts (``starting_point``), one member trained and recorded
(``fit_member``: loaders → engine.train.trainer.fit → learning curves) and every fold's members with their
out-of-fold ages (``fit_folds``)."""
from __future__ import annotations

import dataclasses
import logging
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from dataloader.dataset import ECGDataset, ViewDataset, default_workers, eval_loader, train_loader
from dataloader.labels import table_sex
from engine.predict.inference import InferenceConfig, predict_rows
from engine.runs import (
    CURVES,
    OPTIONS,
    PUBLISHED_ARGS,
    PUBLISHED_CONFIG,
    SPLIT,
    best_checkpoint_name,
    finish_member,
    latest_checkpoint,
)
from models.build import new_bundle
from models.checkpoint import ModelBundle, TrainingFacts, load_bundle, published_config
from models.registry import output_layer
from utils.cli import RESULT
from utils.errors import UserError
from utils.io import json_ready, write_csv, write_json
from utils.metrics import ensemble_mean
from utils.plots import plot_learning_curves
from utils.ranks import barrier, is_main
from utils.runtime import default_infer_batch, seed_everything
from utils.tables import RUN_ID

from .data import Records
from .losses import inverse_age_weights
from .plan import Plan
from .recipes import Recipe
from .results import warn_if_constant
from .settings import TrainSettings
from .trainer import TrainConfig, fit

logger = logging.getLogger("train")


@dataclasses.dataclass(frozen=True)
class Place:
    """Where the work runs: the device, the precision used, and this process among ``world``."""

    device: torch.device
    precision: str
    rank: int = 0
    world: int = 1


def build_bundle(settings: TrainSettings) -> ModelBundle:
    """A new model as the settings say (a UserError naming what cannot be built)."""
    try:
        return new_bundle(settings.model, settings.recipe.preprocessing, settings.recipe.head)
    except (ValueError, AssertionError) as exc:
        raise UserError(f"cannot build {settings.model.arch} with these options: {exc}" + (
            " (pass --seq_length to give it another length, or another --preprocessing)"
            if "takes exactly" in str(exc) else "")) from exc


def starting_point(settings: TrainSettings, member: Path) -> tuple[ModelBundle, dict | None]:
    """The bundle to train and the checkpoint content it starts from (None: from scratch) — the member's one
    checkpoint read: its last complete epoch (--resume), --pretrain_model_path, or nothing."""
    run = settings.run
    resume_from = latest_checkpoint(member) if run.resume else None
    path = resume_from or (run.pretrain_model_path if run.pretrained else None)
    if path is None:
        return build_bundle(settings), None
    bundle = load_bundle(path, mode=settings.model.mode, trust=settings.runtime.trust_checkpoint)
    if bundle.checkpoint.get("epoch", 0) >= settings.recipe.nepoch:
        logger.info(f"note: {path} is at epoch {bundle.checkpoint.get('epoch')} ≥ --nepoch {settings.recipe.nepoch}; "
                    f"nothing to train")
    return bundle, bundle.checkpoint


def fit_folds(settings: TrainSettings, place: Place, cfg: InferenceConfig, manifest: dict, first: tuple,
              records: Records, folds: np.ndarray, targets: dict | None, plan: Plan | None = None) -> np.ndarray:
    """Every fold's models (``first``: the first one's (bundle, start)), each recorded in the manifest once
    trained; returns the out-of-fold ages (on the first process), each the mean over its fold's models."""
    usable, oof, folder = records.usable, np.zeros(len(records.usable)), settings.folder
    partner = settings.partner()
    seeds, seed = settings.recipe.seeds, settings.run.seed
    for k in range(settings.run.folds):
        names, fold_ages = settings.fold_members(k), []
        for j, member in enumerate(names):
            member_settings = settings if j < seeds else partner  # the partners: the fold's last models
            if j:  # another model of the same fold: another initialisation, batch order and augmentation
                seed_everything(seed + j)
            bundle, start = first if not (k or j) else starting_point(member_settings, folder / member)
            held_out = usable[folds == k]
            what = settings.data.input or "MAIC " + settings.model.mode
            description = f"{records.reader.format} {what}, fold {k + 1}/{settings.run.folds}" + \
                (f", seed {seed + j}" if len(names) > 1 else "")
            if plan is not None:
                plan.starting(member)
            trained = fit_member(member_settings, place, folder / member, (bundle, start), records,
                                 (usable[folds != k], held_out), description, seed=seed + j,
                                 targets=None if targets is None else targets[k], plan=plan)
            if is_main():
                fold_ages.append(predict_rows(trained, records.source, records.reader.table, held_out, cfg))
                finish_member(folder, manifest, member, best_checkpoint_name(member_settings.recipe.checkpoints))
            barrier()
        if is_main():  # the out-of-fold age: the ensemble's, over the fold's models
            oof[folds == k] = ensemble_mean(fold_ages)
    return oof


def fit_member(settings: TrainSettings, place: Place, folder: Path, start_from: tuple, records: Records,
               rows: tuple[np.ndarray, np.ndarray], description: str, seed: int | None = None,
               targets: np.ndarray | None = None, plan: Plan | None = None) -> ModelBundle:
    """Train one model (``start_from``: (bundle, checkpoint content or None)) on the training ``rows`` (towards
    ``targets`` where given — distillation — else the true ages) validated on the validation ``rows`` (always the
    true ages) into ``folder``; returns its best checkpoint."""
    (bundle, start), (train_rows, valid_rows) = start_from, rows
    if len(train_rows) == 0 or len(valid_rows) == 0:
        raise UserError(f"{description} leaves {len(train_rows)} training and {len(valid_rows)} validation records; "
                        f"both need at least one")
    ages, recipe = records.ages, settings.recipe
    if start is None:
        init_output(bundle, recipe, float(ages[train_rows].mean()))
    bundle.facts = TrainingFacts.of(ages[train_rows])
    if is_main():
        folder.mkdir(parents=True, exist_ok=True)
        save_run_files(settings, bundle, folder, records.ids, train_rows, valid_rows)
        logger.info(f"{bundle.arch} ({sum(p.numel() for p in bundle.model.parameters()):,} parameters, "
                    f"{settings.run.recipe} recipe) on {description}: {len(train_rows)} train / {len(valid_rows)} "
                    f"valid ECGs; device {place.device}, {place.precision}, {place.world} process(es) → {folder}")
    loaders = member_loaders(settings, place, records, rows, bundle.preprocessing.fs,
                             settings.run.seed if seed is None else seed, targets)
    progress = fit(bundle, *loaders, train_config(settings, place, plan), folder, place.device, place.precision,
                   start=start, resumed=settings.run.resume and start is not None, world=place.world)
    if is_main():
        report_member(folder, progress, recipe.best_metric)
        final = progress.history[-1]["valid_mae"] if progress.history else float("nan")
        warn_if_constant(f"{folder}: validation MAE {final:.2f}", final, ages[valid_rows],
                         np.full(len(valid_rows), np.median(ages[train_rows])))
    best = folder / best_checkpoint_name(recipe.checkpoints)
    return load_bundle(best, mode=settings.model.mode) if is_main() and recipe.best_metric != "last" else bundle


def train_config(settings: TrainSettings, place: Place, plan: Plan | None = None) -> TrainConfig:
    """How to train: the recipe, the run-time switches, the plan told of every epoch, and the command line as
    provenance only."""
    runtime = settings.runtime
    return TrainConfig(recipe=settings.recipe, max_steps_per_epoch=settings.run.max_steps_per_epoch,
                       compile=runtime.compile == "on" or (runtime.compile == "auto" and place.device.type == "cuda"),
                       sync_bn=runtime.sync_bn, fast_layout=runtime.fast_layout, progress=not runtime.quiet,
                       provenance=json_ready(settings.options), on_epoch=plan.epoch_done if plan else None)


def member_loaders(settings: TrainSettings, place: Place, records: Records, rows: tuple[np.ndarray, np.ndarray],
                   fs: float, seed: int, targets: np.ndarray | None = None):
    """(training loader: shuffled by ``seed``, sharded, augmented; validation loader: every record once across
    ranks)."""
    (train, valid), recipe, table = rows, settings.recipe, records.reader.table
    ages, sex = records.ages, table_sex(table)
    weights = {part: None for part in ("train", "valid")}
    if recipe.sample_weights == "inverse_age":
        weights = {"train": inverse_age_weights(ages[train], recipe.max_weight),
                   "valid": inverse_age_weights(ages[valid], recipe.max_weight)}
    workers = settings.runtime.workers(default_workers(place.device, settings.cache.cache == "on", place.world))
    pin = place.device.type == "cuda"
    batch = settings.runtime.infer_batch_size or default_infer_batch(place.device, recipe.batch_size // place.world)
    if targets is not None and targets.ndim == 2:  # the teacher's stored views (distillation)
        train_set = ViewDataset(records.source, train, targets.shape[1], recipe.augment(fs), settings.run.seed,
                                targets[train], weights["train"], sex[train], seed)
    else:
        loader_part, device_part = recipe.augment_parts(fs)
        train_set = ECGDataset(records.source, train, (ages if targets is None else targets)[train],
                               weights["train"], sex[train], loader_part, seed, device_seed=device_part is not None)
    valid_set = ECGDataset(records.source, valid, ages[valid], weights["valid"], sex[valid])
    return (train_loader(train_set, recipe.batch_size, seed, workers, place.rank, place.world, pin),
            eval_loader(valid_set, batch, workers, place.rank, place.world, pin))


# ---- a member's files and first steps ---------------------------------------------------------------------------
def init_head_bias(bundle: ModelBundle, mean_age: float) -> None:
    """The output layer's bias at the training-mean age (--head_bias_init mean)."""
    with torch.no_grad():
        output_layer(bundle.arch, bundle.model).bias.fill_(bundle.head.inverse(mean_age))


def init_output(bundle: ModelBundle, recipe: Recipe, mean_age: float) -> None:
    """A new model's output layer as the recipe starts it: --head_bias_init and --output_init (with both, the
    untrained network predicts the training-mean age for every ECG)."""
    if recipe.head_bias_init == "mean":
        init_head_bias(bundle, mean_age)
    if recipe.output_init == "zero":
        with torch.no_grad():
            output_layer(bundle.arch, bundle.model).weight.zero_()


def save_run_files(settings: TrainSettings, bundle: ModelBundle, folder: Path, ids: pd.Series, train: np.ndarray,
                   valid: np.ndarray) -> None:
    """options.json (the command line, for people to read), split.csv and — for architectures that keep the
    published folder layout — its config.json and args.json."""
    options = json_ready(settings.options)
    write_json(folder / OPTIONS, options)
    write_csv(folder / SPLIT, pd.DataFrame({RUN_ID: pd.concat([ids.iloc[train], ids.iloc[valid]]),
                                            "split": ["train"] * len(train) + ["valid"] * len(valid)}))
    config = published_config(bundle)
    if config is not None:
        write_json(folder / PUBLISHED_CONFIG, {**options, **config})
        write_json(folder / PUBLISHED_ARGS, options)


def report_member(folder: Path, progress, best_metric: str) -> None:
    """The learning curves (from the history in memory) and the member's last line."""
    if progress.history:
        plot_learning_curves(pd.DataFrame(progress.history), folder / CURVES)
    final = progress.history[-1]["valid_mae"] if progress.history else float("nan")
    which = f"last epoch (valid_mae {final:.4f})" if best_metric == "last" else \
        f"best {best_metric} {progress.best:.4f}"
    logger.log(RESULT, f"done: {which}; checkpoints in {folder} (each with the age-gap bias correction fitted on its "
                       f"validation predictions; use test_interface --bias_correction)")
