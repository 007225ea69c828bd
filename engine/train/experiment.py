"""A training run as one object: ``Experiment(settings, place).run()``.

    resolve (the starting point, the records, the bad-input policy, the split or the K folds)
    → lock the run folder → settle the manifest (run.json: checked on --resume, else written)
    → members (one model, or per fold its seeds and its --partner models; named by engine.runs.fold_members)
    → fit each (loaders → engine.trainer.fit → learning curves → the member recorded in the manifest)
    → for K folds the out-of-fold ages, oof.csv and cv.json → the manifest complete.

``TrainSettings`` is everything the run reads, in typed groups each defined beside the code that reads it
(``InputSettings``, ``MaicTrainingData``, ``SplitSettings``, ``CacheOptions``, ``ModelSettings``, ``Recipe``,
``RuntimeSettings``, ``RunSettings``) plus the resolved command line as provenance (options.json); the program
builds it once from its options and nothing below sees the options themselves.
"""
from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import time
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from dataloader.dataset import ECGDataset, ViewDataset, default_workers, eval_loader, train_loader
from dataloader.formats import InputSettings
from dataloader.labels import table_sex
from dataloader.maic import MaicTrainingData, dataset_csv_paths, maic_dataset_csvs, read_dataset_csv
from dataloader.records import NpyFolderReader, Reader, fingerprint_files
from dataloader.sources import (
    CacheOptions,
    apply_policy,
    duplicate_ids,
    label_problems,
    open_source,
    resolve_cache_dtype,
)
from dataloader.splits import (
    DECADE_BINS,
    SplitSettings,
    kfold_split,
    patient_split,
    strat_fold_split,
    stratified_split,
)
from engine.predict.inference import InferenceConfig, predict_ensemble, predict_rows, predict_views
from engine.runs import (
    CURVES,
    CV_SUMMARY,
    FOLDS,
    MANIFEST,
    OOF,
    OPTIONS,
    PUBLISHED_ARGS,
    PUBLISHED_CONFIG,
    SINGLE,
    SPLIT,
    RunLock,
    best_checkpoint_name,
    clean_temporaries,
    clear_run,
    earlier_results,
    finish_member,
    fold_members,
    latest_checkpoint,
    manifest_differences,
    members_by_fold,
    new_manifest,
    read_manifest,
    run_dir,
    run_member_names,
    run_members,
    write_manifest,
)
from models.build import ModelSettings, new_bundle, sigmoid_bounds
from models.checkpoint import ModelBundle, TrainingFacts, load_bundle, load_ensemble, published_config
from models.files import resolve_weights
from models.registry import MODELS, accepts_sex, architecture, default_recipe, model_options, output_layer
from utils.bounds import MAX_FOLDS
from utils.cli import RESULT
from utils.errors import TrainingDiverged, UserError
from utils.io import check_spreadsheet_safe, json_ready, read_csv, write_csv, write_json
from utils.metrics import ensemble_mean
from utils.paths import DATA_ROOT_ENV
from utils.plots import plot_learning_curves
from utils.ranks import barrier, is_main
from utils.runtime import default_infer_batch, seed_everything
from utils.settings import RuntimeSettings, Settings, runtime
from utils.tables import RUN_ID

from .crossval import write_cross_validation
from .losses import inverse_age_weights
from .optim import SCHEDULES
from .recipes import RECIPES, Recipe
from .trainer import TrainConfig, fit

logger = logging.getLogger("train")


@dataclasses.dataclass(frozen=True)
class RunSettings(Settings):
    """The experiment: its recipe's name, folds, seed, steps, where its folder is, where it starts from, and what
    to do with an earlier run and with bad records."""

    recipe: str = "maic"
    folds: int = 1
    seed: int = 1234
    max_steps_per_epoch: int = 0
    pretrained: bool = False
    recipe_given: tuple = ()  # the recipe options given on the command line (what a partner keeps)
    teacher: list | None = None  # models whose age the network learns (distillation); identified by content
    env: str | None = runtime()
    log_dir: str | None = runtime()
    pretrain_model_path: str | None = runtime()
    resume: bool = runtime(False)
    overwrite: bool = runtime(False)
    on_bad: str = runtime("error")


GROUPS = (InputSettings, MaicTrainingData, SplitSettings, CacheOptions, ModelSettings, Recipe, RuntimeSettings,
          RunSettings)


def runtime_options() -> frozenset[str]:
    """The training options that do not change a run's result (a resumed run may change them): each group's
    runtime fields."""
    return frozenset().union(*(group.runtime_names() for group in GROUPS))


@dataclasses.dataclass(frozen=True)
class TrainSettings:
    """Everything a training run reads, typed; ``options``: the resolved command line (provenance only)."""

    data: InputSettings
    maic: MaicTrainingData
    split: SplitSettings
    cache: CacheOptions
    model: ModelSettings
    recipe: Recipe
    runtime: RuntimeSettings
    run: RunSettings
    options: dict

    @classmethod
    def from_options(cls, options: dict) -> "TrainSettings":
        """The groups from the resolved options (a plain dict); a recipe that breaks its rules is a UserError."""
        try:
            recipe = Recipe.from_options(options)
        except ValueError as exc:
            raise UserError(str(exc)) from exc
        return cls(InputSettings.from_options(options), MaicTrainingData.from_options(options),
                   SplitSettings.from_options(options), CacheOptions.from_options(options),
                   ModelSettings.from_options(options), recipe, RuntimeSettings.from_options(options),
                   RunSettings.from_options(options), dict(options))

    @property
    def members(self) -> list[str]:
        r = self.recipe
        return run_member_names(self.run.folds, r.seeds, r.partner, r.partners)

    def fold_members(self, fold: int) -> list[str]:
        return fold_members(fold, self.recipe.seeds, self.recipe.partner, self.recipe.partners)

    def partner(self) -> "TrainSettings | None":
        """The settings of the ``--partner`` models (None without one): the run's data, preprocessing, runtime and
        the recipe options given on the command line; for the rest the partner's own recipe; one model per fold;
        and of the model options only those the partner takes."""
        if self.recipe.partner == "none":
            return None
        options = dict(self.options)
        arch = options["arch"] = self.recipe.partner
        options["recipe"] = default_recipe(arch)
        keep = {"preprocessing", *self.run.recipe_given}
        own = RECIPES[options["recipe"]]
        options.update({f.name: getattr(own, f.name) for f in dataclasses.fields(Recipe) if f.name not in keep})
        options.update(seeds=1, partner="none", partners=1)
        taken = set(architecture(arch).option_names)
        options.update({o.name: o.default for o in model_options() if o.name not in taken})
        options["age_min"], options["age_max"] = sigmoid_bounds(options["mode"], None, None) \
            if options["head"] == "sigmoid" else (None, None)
        return TrainSettings.from_options(options)

    def result_options(self, precision: str) -> dict:
        """The resolved options that change the run's result (what its manifest records): every option but the
        runtime ones, with the precision actually used, the pretrained checkpoint's file identity, and the epoch
        count only where it shapes the schedule of every epoch (cosine, one-cycle) — a step or plateau run may be
        extended."""
        options = {k: v for k, v in self.options.items() if k not in runtime_options()}
        if self.recipe.partner == "none":  # what was given only shapes a partner's recipe
            options.pop("partner")
            options.pop("recipe_given")
        if self.recipe.partners == 1:  # one partner model per fold: the manifest of runs from before --partners
            options.pop("partners")
        options["precision"] = precision
        options["cache_dtype"] = resolve_cache_dtype(self.cache.cache_dtype, precision)
        if self.run.pretrained:
            options["pretrained"] = fingerprint_files([self.run.pretrain_model_path], "fast", where=False)
        if self.run.teacher:
            options["teacher"] = fingerprint_files(teacher_files(self.run.teacher), "fast", where=False)
            if not self.recipe.teacher_views:  # per-record teaching: the manifest of runs from before the views
                options.pop("teacher_views", None)
        else:  # the manifest of runs from before distillation
            options.pop("teacher", None)
            options.pop("teacher_weight", None)
            options.pop("teacher_views", None)
        if SCHEDULES[self.recipe.scheduler].extendable:
            options.pop("nepoch")
        return json_ready(options)

    def reads(self) -> dict:
        """The paths this run reads, by option: none of them may be deleted when the run folder is cleared."""
        return {"--pretrain_model_path": self.run.pretrain_model_path, "--input": self.data.input,
                "--labels": self.data.labels, "--data_root": self.maic.data_root,
                "--dataset_dir": self.maic.dataset_dir, "--cache_dir": self.cache.cache_dir}

    @property
    def folder(self) -> Path:
        return run_dir(self.run.log_dir, self.model.arch, self.run.env)


def teacher_files(teachers: list) -> list[Path]:
    """The checkpoint files of every teacher model (their identity goes into the manifest)."""
    return [resolve_weights(Path(m))[0] for t in teachers for m in run_members(t)]


def check_settings(settings: "TrainSettings") -> None:
    """What the options may not combine to (each a UserError naming the options)."""
    run, recipe, model = settings.run, settings.recipe, settings.model
    if not 0.0 <= settings.split.valid_ratio < 1.0:
        raise UserError("--valid_ratio must lie in [0, 1)")
    several = recipe.seeds > 1 or recipe.partner != "none" or recipe.partners > 1
    if not 1 <= run.folds <= MAX_FOLDS or (several and run.folds == 1):
        raise UserError(f"--folds must be ≥ 1 and ≤ {MAX_FOLDS}, and --seeds > 1 or a --partner needs --folds > 1 "
                        f"(a single split trains one model)")
    if recipe.partners > 1 and recipe.partner == "none":
        raise UserError(f"--partners {recipe.partners} needs a --partner architecture (here none)")
    sex_input = model.arch_options.get("sex_input")
    if recipe.partner != "none" and (run.pretrained or (sex_input and not accepts_sex(recipe.partner))):
        raise UserError(f"--partner {recipe.partner} trains new models of another architecture beside --arch "
                        f"{model.arch}: it cannot start from --pretrained, and every model of the run must read the "
                        f"sex or none (--sex_input); pass --partner none")
    settings.partner()  # its recipe keeps the recipe's rules
    if run.pretrained and not run.pretrain_model_path:
        raise UserError("--pretrained needs --pretrain_model_path")
    if recipe.head == "sigmoid" and not model.age_max > model.age_min:
        raise UserError(f"--age_max ({model.age_max}) must be above --age_min ({model.age_min})")
    if sex_input and not accepts_sex(model.arch):
        raise UserError(f"--sex_input needs a network that takes the person's sex (the {model.arch} takes none; "
                        f"{', '.join(n for n in MODELS if accepts_sex(n))} does)")
    if run.resume and run.overwrite:
        raise UserError("--resume continues a run and --overwrite starts it afresh: give one of them")
    if run.teacher and (recipe.partner != "none" or recipe.seeds > 1):
        raise UserError("--teacher distils the teacher into one network per fold: pass --partner none and --seeds 1")


def build_bundle(settings: TrainSettings) -> ModelBundle:
    """A new model as the settings say (a UserError naming what cannot be built)."""
    try:
        return new_bundle(settings.model, settings.recipe.preprocessing, settings.recipe.head)
    except (ValueError, AssertionError) as exc:
        raise UserError(f"cannot build {settings.model.arch} with these options: {exc}" + (
            " (pass --seq_length to give it another length, or another --preprocessing)"
            if "takes exactly" in str(exc) else "")) from exc


@dataclasses.dataclass(frozen=True)
class Place:
    """Where the work runs: the device, the precision used, and this process among ``world``."""

    device: torch.device
    precision: str
    rank: int = 0
    world: int = 1


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


class Experiment:
    """One training run in its folder (see the module's docstring for the order of its steps)."""

    def __init__(self, settings: TrainSettings, place: Place):
        self.settings, self.place = settings, place
        self.folder = settings.folder
        self.teacher_seconds: float | None = None  # what distillation's teacher pass took (set by teacher_targets)
        self.held_out_cfg = InferenceConfig(device=place.device, precision=place.precision, workers=0,
                                            fast_layout=settings.runtime.fast_layout,
                                            batch_size=settings.runtime.infer_batch_size or
                                            default_infer_batch(place.device, 32),
                                            cache=self.cache_config())

    def cache_config(self):
        return self.settings.cache.config(self.place.precision, progress=not self.settings.runtime.quiet)

    # ---- the run, top to bottom -------------------------------------------------------------------------------
    def run(self) -> None:
        if not (self.settings.run.resume or self.settings.run.pretrained):
            with torch.device("meta"):  # the model options are checked before anything is created or read
                build_bundle(self.settings)
        lock = RunLock(self.folder) if is_main() else None  # before anything in the folder is read or written
        try:
            self.train()
        finally:
            if lock is not None:
                lock.release()

    def train(self) -> None:
        """Records → bad-input policy → one split, or K folds; the manifest settled before the first epoch and
        completed after the last member."""
        run, settings = self.folder, self.settings
        if is_main():
            for path in clean_temporaries(run):
                logger.info(f"note: removed {path.relative_to(run)}, left by an interrupted run")
        if not settings.run.resume:
            self.start_afresh()
        bundle, start = self.starting_point(settings, run / settings.members[0])
        if bundle.arch != settings.model.arch:  # a checkpoint of another architecture: its own (folder unchanged)
            settings = dataclasses.replace(settings, model=dataclasses.replace(settings.model, arch=bundle.arch),
                                           options={**settings.options, "arch": bundle.arch})
            self.settings = settings
        records = self.records(bundle)
        if settings.run.folds == 1:
            train_rows, valid_rows, description = self.split(records)
            assignment = pd.Series(["train"] * len(train_rows) + ["valid"] * len(valid_rows),
                                   index=pd.concat([records.ids.iloc[train_rows], records.ids.iloc[valid_rows]]))
            targets = self.teacher_targets(records, bundle.preprocessing)
            manifest = self.settle_manifest(self.identify(records.reader, assignment, description))
            self.fit_member(settings, run, bundle, start, records, train_rows, valid_rows, description,
                            targets=None if targets is None else targets[None])
            if is_main():
                finish_member(run, manifest, SINGLE, best_checkpoint_name(settings.recipe.checkpoints))
                manifest["complete"] = True
                write_manifest(run, manifest)
            return
        table = records.reader.table.iloc[records.usable]
        folds = kfold_split(table["age"], table["patient_id"] if "patient_id" in table.columns else None,
                            settings.run.folds, settings.split.split_seed)
        assignment = pd.Series(folds, index=records.ids.iloc[records.usable])
        targets = self.teacher_targets(records, bundle.preprocessing, assignment)
        manifest = self.settle_manifest(self.identify(records.reader, assignment, f"{settings.run.folds} folds"))
        if is_main():
            write_csv(run / FOLDS, pd.DataFrame({RUN_ID: assignment.index, "fold": assignment.to_numpy()}))
        oof = self.fit_folds(manifest, bundle, start, records, folds, targets)
        if is_main():
            self.write_oof(manifest, records, oof, folds)

    # ---- the run folder ---------------------------------------------------------------------------------------
    def start_afresh(self) -> None:
        """A new run: refused while the folder holds an earlier experiment's results unless --overwrite, which
        removes them (and every file a run writes) first — nothing of an earlier experiment survives into this
        one."""
        earlier = earlier_results(self.folder)
        if earlier and not self.settings.run.overwrite:
            shown = ", ".join(earlier[:6]) + (" ..." if len(earlier) > 6 else "")
            raise UserError(f"{self.folder} holds an earlier experiment ({shown}); pass --overwrite to replace it, "
                            f"--resume to continue it with the same options, or another --env for a new run folder")
        if is_main():
            clear_run(self.folder, self.settings.reads())
        barrier()

    def identify(self, reader: Reader, assignment: pd.Series, method: str) -> dict:
        """This experiment's manifest: result-changing options, the data's identity and the split's."""
        data = hashlib.sha256(json.dumps({"format": reader.format, "settings": reader.settings(), "ids": reader.ids},
                                         sort_keys=True, default=str).encode())
        data.update(reader.fingerprint("auto", where=False).encode())  # another machine or mount: the same data
        split = hashlib.sha256("\n".join(f"{i}\t{a}" for i, a in assignment.items()).encode()).hexdigest()
        manifest = new_manifest(self.settings.result_options(self.place.precision),
                                {"records": len(reader), "sha256": data.hexdigest()},
                                {"method": method, "folds": self.settings.run.folds, "records": len(assignment),
                                 "sha256": split}, self.settings.members)
        if self.teacher_seconds is not None:  # what the teacher's ages cost (a figure, not the experiment's identity)
            manifest["teacher_seconds"] = self.teacher_seconds
        return manifest

    def settle_manifest(self, manifest: dict) -> dict:
        """The manifest to train under: with --resume the run's own, after checking that nothing that changes the
        result differs (exit 2 naming each difference); otherwise this one, written before training starts."""
        run = self.folder
        if self.settings.run.resume and earlier_results(run):
            old = read_manifest(run)
            if old is None:
                raise UserError(f"{run} holds results but no {MANIFEST} (a run of an older version, or files put "
                                f"there by hand): it cannot be checked to be the same experiment. Start again with "
                                f"--overwrite")
            differences = manifest_differences(old, manifest)
            if differences:
                raise UserError(f"--resume refused: this is not the experiment in {run}:\n  " +
                                "\n  ".join(differences) + "\nResume with the run's own options, or start a new "
                                "experiment with --overwrite or another --env")
            return old
        if self.settings.run.resume:
            logger.info(f"--resume: {run} has no trained results yet; starting from scratch")
            if is_main():
                clear_run(run, self.settings.reads())
        if is_main():
            write_manifest(run, manifest)
        barrier()
        return manifest

    # ---- the records --------------------------------------------------------------------------------------------
    def reader(self) -> Reader:
        """The labelled records to train on: the MAIC folder + label CSV of ``--mode``, or any ``--input``."""
        settings = self.settings
        if settings.data.input is not None:
            return settings.data.open(labels=True)
        mode = settings.model.mode
        folder, labels = settings.maic.paths(mode)
        if folder is None or labels is None or not folder.is_dir() or not labels.is_file():
            raise UserError(f"no MAIC {mode} training data: looked for the folder {folder} and the label CSV "
                            f"{labels}. Put the challenge data at the default data root (data/maic2023, or the "
                            f"folder in ${DATA_ROOT_ENV}), pass --data_root DIR (or --train_for_{mode} and "
                            f"--train_for_{mode}_label), or --input for other formats; `make demo` builds a "
                            f"synthetic set")
        return NpyFolderReader(folder, labels=labels, fs=settings.data.fs or 500.0, scale=settings.data.input_scale)

    def records(self, bundle: ModelBundle) -> Records:
        """The reader, its source (cache or on the fly) and the records that pass the bad-input policy: signals,
        age labels, duplicate ids, and label rows whose ECG file is missing (all listed at once)."""
        reader = self.reader()
        check_spreadsheet_safe(reader.ids, "record id(s)")
        source, bad_signals = open_source(reader, bundle.preprocessing, self.cache_config())
        bad = {**duplicate_ids(reader.table), **label_problems(reader.table), **bad_signals}
        orphans = list(getattr(reader, "orphan_labels", []))
        bad.update({rid: f"{rid}: label row without an ECG file in {reader.folder}" for rid in orphans})
        keep = apply_policy(bad, reader.ids + orphans, self.settings.run.on_bad, "training")
        return Records(reader, source, keep[keep < len(reader)])

    def split(self, records: Records) -> tuple[np.ndarray, np.ndarray, str]:
        """(train positions, valid positions, description). MAIC: the seed's dataset CSVs; otherwise --split."""
        settings, usable, reader = self.settings.split, records.usable, records.reader
        if self.settings.data.input is None:
            return self.maic_split(reader, usable)
        table = reader.table.iloc[usable]
        method = settings.split
        if method == "auto":
            has_patients = "patient_id" in table.columns and table["patient_id"].notna().any()
            method = "patient" if has_patients else "stratified"
        needs = {"strat_fold": "PTB-XL's strat_fold column", "patient": "patient ids"}
        column = {"strat_fold": "strat_fold", "patient": "patient_id"}.get(method)
        if column and (column not in table.columns or table[column].isna().all()):
            raise UserError(f"--split {method} needs {needs[method]}; {self.settings.data.input} has none")
        if method == "strat_fold":
            train, valid, _test = strat_fold_split(table["strat_fold"])
        elif method == "patient":
            train, valid = patient_split(table["patient_id"], settings.valid_ratio, settings.split_seed)
        else:
            train, valid = stratified_split(table["age"], DECADE_BINS, settings.valid_ratio, settings.split_seed)
        return usable[train], usable[valid], f"{reader.format} {self.settings.data.input} (split: {method})"

    def maic_split(self, reader: Reader, usable: np.ndarray) -> tuple[np.ndarray, np.ndarray, str]:
        """The seed's dataset CSVs (written by the first process, read by all)."""
        mode, dataset_dir = self.settings.model.mode, self.settings.maic.dataset_dir
        excluded = sorted(set(reader.ids) - {reader.ids[i] for i in usable})
        if is_main():
            maic_dataset_csvs(reader, mode, dataset_dir, self.settings.split.valid_ratio,
                              self.settings.split.split_seed, exclude=excluded)
        barrier()
        position = {rid: i for i, rid in enumerate(reader.ids)}
        csvs = dataset_csv_paths(dataset_dir, mode)
        train, valid = (np.array([position[f] for f in read_dataset_csv(c)], np.int64) for c in csvs)
        return train, valid, f"MAIC {mode} ({csvs[0].name} / {csvs[1].name})"

    # ---- the members ----------------------------------------------------------------------------------------------
    def starting_point(self, settings: TrainSettings, member: Path) -> tuple[ModelBundle, dict | None]:
        """The bundle to train and the checkpoint content it starts from (None: from scratch) — the member's one
        checkpoint read: its last complete epoch (--resume), --pretrain_model_path, or nothing."""
        run = settings.run
        resume_from = latest_checkpoint(member) if run.resume else None
        path = resume_from or (run.pretrain_model_path if run.pretrained else None)
        if path is None:
            return build_bundle(settings), None
        bundle = load_bundle(path, mode=settings.model.mode, trust=settings.runtime.trust_checkpoint)
        if bundle.checkpoint.get("epoch", 0) >= settings.recipe.nepoch:
            logger.info(f"note: {path} is at epoch {bundle.checkpoint.get('epoch')} ≥ --nepoch "
                        f"{settings.recipe.nepoch}; nothing to train")
        return bundle, bundle.checkpoint

    def fit_folds(self, manifest: dict, bundle: ModelBundle, start: dict | None, records: Records,
                  folds: np.ndarray, targets: dict | None = None) -> np.ndarray:
        """Every fold's models (``bundle``/``start``: the first one's), each recorded in the manifest once trained;
        returns the out-of-fold ages (on the first process), each the mean over its fold's models."""
        settings, usable = self.settings, records.usable
        oof = np.zeros(len(usable))
        partner = settings.partner()
        seeds, seed = settings.recipe.seeds, settings.run.seed
        for k in range(settings.run.folds):
            names, fold_ages = settings.fold_members(k), []
            for j, member in enumerate(names):
                member_settings = settings if j < seeds else partner  # the partners: the fold's last models
                if k or j:
                    if j:  # another model of the same fold: another initialisation, batch order and augmentation
                        seed_everything(seed + j)
                    bundle, start = self.starting_point(member_settings, self.folder / member)
                held_out = usable[folds == k]
                what = settings.data.input or "MAIC " + settings.model.mode
                description = f"{records.reader.format} {what}, fold {k + 1}/{settings.run.folds}" + \
                    (f", seed {seed + j}" if len(names) > 1 else "")
                trained = self.fit_member(member_settings, self.folder / member, bundle, start, records,
                                          usable[folds != k], held_out, description, seed=seed + j,
                                          targets=None if targets is None else targets[k])
                if is_main():
                    fold_ages.append(predict_rows(trained, records.source, records.reader.table, held_out,
                                                  self.held_out_cfg))
                    finish_member(self.folder, manifest, member,
                                  best_checkpoint_name(member_settings.recipe.checkpoints))
                barrier()
            if is_main():  # the out-of-fold age: the ensemble's, over the fold's models
                oof[folds == k] = ensemble_mean(fold_ages)
        return oof

    def fit_member(self, settings: TrainSettings, folder: Path, bundle: ModelBundle, start: dict | None,
                   records: Records, train_rows: np.ndarray, valid_rows: np.ndarray, description: str,
                   seed: int | None = None, targets: np.ndarray | None = None) -> ModelBundle:
        """Train one model on ``train_rows`` (towards ``targets`` where given — distillation — else the true ages)
        validated on ``valid_rows`` (always the true ages) into ``folder``; returns its best checkpoint."""
        if len(train_rows) == 0 or len(valid_rows) == 0:
            raise UserError(f"{description} leaves {len(train_rows)} training and {len(valid_rows)} validation "
                            f"records; both need at least one")
        ages, place, recipe = records.ages, self.place, settings.recipe
        if start is None:
            init_output(bundle, recipe, float(ages[train_rows].mean()))
        bundle.facts = TrainingFacts.of(ages[train_rows])
        if is_main():
            folder.mkdir(parents=True, exist_ok=True)
            save_run_files(settings, bundle, folder, records.ids, train_rows, valid_rows)
            logger.info(f"{bundle.arch} ({sum(p.numel() for p in bundle.model.parameters()):,} parameters, "
                        f"{settings.run.recipe} recipe) on {description}: {len(train_rows)} train / "
                        f"{len(valid_rows)} valid ECGs; device {place.device}, {place.precision}, {place.world} "
                        f"process(es) → {folder}")
        loaders = self.loaders(settings, records, train_rows, valid_rows, bundle.preprocessing.fs,
                               settings.run.seed if seed is None else seed, targets)
        progress = fit(bundle, *loaders, self.train_config(settings), folder, place.device, place.precision,
                       start=start, resumed=settings.run.resume and start is not None, world=place.world)
        if is_main():
            report_member(folder, progress, recipe.best_metric)
            final = progress.history[-1]["valid_mae"] if progress.history else float("nan")
            warn_if_constant(f"{folder}: validation MAE {final:.2f}", final, ages[valid_rows],
                             np.full(len(valid_rows), np.median(ages[train_rows])))
        best = folder / best_checkpoint_name(recipe.checkpoints)
        return load_bundle(best, mode=settings.model.mode) if is_main() and recipe.best_metric != "last" else bundle

    def train_config(self, settings: TrainSettings) -> TrainConfig:
        """How to train: the recipe, the run-time switches, and the command line as provenance only."""
        runtime = settings.runtime
        return TrainConfig(recipe=settings.recipe, max_steps_per_epoch=settings.run.max_steps_per_epoch,
                           compile=runtime.compile == "on" or (runtime.compile == "auto" and
                                                               self.place.device.type == "cuda"),
                           sync_bn=runtime.sync_bn, fast_layout=runtime.fast_layout, progress=not runtime.quiet,
                           provenance=json_ready(settings.options))

    def loaders(self, settings: TrainSettings, records: Records, train: np.ndarray, valid: np.ndarray, fs: float,
                seed: int, targets: np.ndarray | None = None):
        """(training loader: shuffled by ``seed``, sharded, augmented; validation loader: every record once
        across ranks)."""
        recipe, place, table = settings.recipe, self.place, records.reader.table
        ages, sex = records.ages, table_sex(table)
        weights = {part: None for part in ("train", "valid")}
        if recipe.sample_weights == "inverse_age":
            weights = {"train": inverse_age_weights(ages[train], recipe.max_weight),
                       "valid": inverse_age_weights(ages[valid], recipe.max_weight)}
        workers = settings.runtime.workers(default_workers(place.device, settings.cache.cache == "on", place.world))
        pin = place.device.type == "cuda"
        batch = settings.runtime.infer_batch_size or default_infer_batch(place.device,
                                                                          recipe.batch_size // place.world)
        if targets is not None and targets.ndim == 2:  # the teacher's stored views (distillation)
            train_set = ViewDataset(records.source, train, targets.shape[1], recipe.augment(fs), settings.run.seed,
                                    targets[train], weights["train"], sex[train], seed)
        else:
            train_set = ECGDataset(records.source, train, (ages if targets is None else targets)[train],
                                   weights["train"], sex[train], recipe.augment(fs), seed)
        valid_set = ECGDataset(records.source, valid, ages[valid], weights["valid"], sex[valid])
        return (train_loader(train_set, recipe.batch_size, seed, workers, place.rank, place.world, pin),
                eval_loader(valid_set, batch, workers, place.rank, place.world, pin))

    # ---- distillation ------------------------------------------------------------------------------------------------
    def teacher_targets(self, records: Records, spec, assignment: pd.Series | None = None) -> dict | None:
        """--teacher: each record's training target, ``teacher_weight`` × the teacher ensemble's age + the rest ×
        its true age (the true age where the teacher has none), keyed by fold (None: one split): (records,
        teacher_views) — the teacher's age of each stored augmented view the student will train on — or (records,)
        with --teacher_views 0. A K-fold teacher on this run's folds gives fold k's student fold k's teachers only
        (on fold k's training records); any other teacher serves every fold (and the out-of-fold MAE is then only
        honest if the teacher never saw these records)."""
        settings = self.settings
        if not settings.run.teacher:
            return None
        members = [Path(m) for t in settings.run.teacher for m in run_members(t)]
        groups = {None: members}
        if assignment is not None:
            groups = self.teacher_folds(members, assignment)
        ages, weight = records.ages.astype(np.float64), settings.recipe.teacher_weight
        out, started = {}, time.perf_counter()
        fold = None if assignment is None else \
            assignment.reindex(records.ids.iloc[records.usable]).to_numpy(dtype=float)
        for key, group in groups.items():
            teachers = load_ensemble(group, mode=settings.model.mode, trust=settings.runtime.trust_checkpoint)
            rows = records.usable if key is None else records.usable[np.isfinite(fold) & (fold != key)]
            taught = self.teacher_ages(teachers, records, rows, spec)
            truth = ages if taught.ndim == 1 else ages[:, None]
            out[key] = np.where(np.isfinite(taught), weight * taught + (1 - weight) * truth, truth).astype(np.float32)
        views = out[next(iter(out))].shape[1] if out[next(iter(out))].ndim == 2 else 0
        self.teacher_seconds = round(time.perf_counter() - started, 1)
        logger.info(f"distilling from {len(members)} teacher model(s) ({', '.join(map(str, settings.run.teacher))}): "
                    f"their ages for " + (f"{views} stored views of each training record" if views else
                                          f"{len(records.reader)} records") +
                    f" in {self.teacher_seconds:.0f} s; target = {weight:g} × teacher + {1 - weight:g} × "
                    f"true age")
        return out if assignment is None else {k: out.get(k, out.get(None)) for k in range(settings.run.folds)}

    def teacher_ages(self, teachers: list, records: Records, rows: np.ndarray, spec) -> np.ndarray:
        """The teacher ensemble's ages: (records, views) on the stored views of ``rows`` (NaN elsewhere) for the
        members that read the student's preprocessing ``spec`` — a member of another preprocessing cannot see the
        student's view and gives its whole-record age to every view —, or (records,) per record when the recipe
        stores no views (--teacher_views 0, or no augmentation)."""
        recipe, n = self.settings.recipe, len(records.reader)
        augment = recipe.augment(spec.fs)
        sees = [bool(recipe.teacher_views and augment) and t.preprocessing == spec for t in teachers]
        viewing = [t for t, s in zip(teachers, sees) if s]
        others = [t for t, s in zip(teachers, sees) if not s]
        whole = predict_ensemble(others, records.reader, self.held_out_cfg)[0] if others else np.zeros(n)
        if not viewing:
            return whole
        seen = np.full((n, recipe.teacher_views), np.nan)
        seen[rows] = predict_views(viewing, records.source, rows, table_sex(records.reader.table), augment,
                                   recipe.teacher_views, self.settings.run.seed, self.held_out_cfg)
        if others:
            logger.warning(f"warning: {len(others)} of the {len(teachers)} teacher models read another preprocessing "
                           f"than the student; they give each record's whole-record age to all its views")
        return (len(viewing) * seen + len(others) * whole[:, None]) / len(teachers)

    def teacher_folds(self, members: list[Path], assignment: pd.Series) -> dict:
        """Fold k → the teacher members of fold k, when the teacher is a K-fold run on exactly this run's folds;
        otherwise every member for every fold (with a warning)."""
        groups = members_by_fold(members)
        runs = {m.parent.parent for m in members}
        if set(groups) != set(range(self.settings.run.folds)) or len(runs) != 1:
            logger.warning(f"warning: the teacher is not one {self.settings.run.folds}-fold run: every fold's "
                           f"student learns from all {len(members)} teacher models; the out-of-fold MAE is honest "
                           f"only if the teacher never saw these records")
            return {None: members}
        run = runs.pop()
        theirs = read_csv(run / FOLDS, f"the teacher's {FOLDS}", dtype={RUN_ID: str}) \
            if (run / FOLDS).exists() else None
        same = theirs is not None and dict(zip(theirs[RUN_ID], theirs["fold"].astype(int))) == \
            dict(zip(assignment.index.astype(str), assignment.astype(int)))
        if not same:
            raise UserError(f"--teacher {run}: its folds are not this run's ({run / FOLDS} differs): fold k's student "
                            f"must learn only from the teacher models that never saw fold k. Train the student on "
                            f"the teacher's records with its --folds and --split_seed")
        return groups

    # ---- the out-of-fold results ----------------------------------------------------------------------------------
    def write_oof(self, manifest: dict, records: Records, oof: np.ndarray, folds: np.ndarray) -> None:
        """oof.csv and cv.json, then the manifest marked complete — only when every out-of-fold age is finite."""
        usable, reader, run = records.usable, records.reader, self.folder
        broken = np.flatnonzero(~np.isfinite(oof))
        if len(broken):
            shown = ", ".join(str(reader.ids[usable[i]]) for i in broken[:10])
            raise TrainingDiverged(f"fold model(s) {sorted(set(folds[broken].tolist()))} give non-finite ages for "
                                   f"{len(broken)} held-out record(s) ({shown}): the training diverged; lower the "
                                   f"learning rate and start again with --overwrite. No {OOF} or {CV_SUMMARY} was "
                                   f"written")
        ages = records.ages.astype(float)[usable]
        recipe = self.settings.recipe
        cv = write_cross_validation(run, reader.table["id"].iloc[usable].tolist(), ages, oof, folds,
                                    self.settings.run.seed, seeds=recipe.seeds, partner=recipe.partner,
                                    partners=recipe.partners)
        manifest["complete"] = True
        write_manifest(run, manifest)
        pooled = cv["pooled"]
        logger.log(RESULT, f"{self.settings.run.folds}-fold cross-validation: out-of-fold MAE {pooled['mae']:.2f} "
                           f"(95% CI {pooled['mae_ci95'][0]:.2f}–{pooled['mae_ci95'][1]:.2f}) on {pooled['n']} ECGs "
                           f"→ {run / OOF}, {run / CV_SUMMARY}")
        medians = {fold: np.median(ages[folds != fold]) for fold in np.unique(folds)}  # each fold's training median
        constant = np.array([medians[fold] for fold in folds])
        warn_if_constant(f"{run}: out-of-fold MAE {pooled['mae']:.2f}", pooled["mae"], ages, constant)


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
    logger.log(RESULT, f"done: {which}; checkpoints in {folder} (each with the age-gap bias correction fitted on "
                       f"its validation predictions; use test_interface --bias_correction)")


def warn_if_constant(what: str, mae: float, ages: np.ndarray, constant: np.ndarray) -> None:
    """A warning when a model does not beat the constant predictor (the training median for every ECG): such a
    model has learnt nothing usable, and its number must not be read as a result."""
    baseline = float(np.mean(np.abs(np.asarray(ages, float) - constant)))
    if not mae < baseline:
        logger.warning(f"warning: {what} does not beat the constant predictor (the training median for every ECG: "
                       f"MAE {baseline:.2f}); the model has learnt nothing usable. Check the learning rate, the "
                       f"epochs, the labels and the precision (--precision fp32)")


