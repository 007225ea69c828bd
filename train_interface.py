"""Train an age model: dataset CSVs / splits → cache → shared trainer → log/<arch>_<env>/.

    python train_interface.py --mode=adult --arch=ResDenseNet          # MAIC adult (seed recipe), data/maic2023
    python train_interface.py --mode=child --arch=ResUDenseNet         # MAIC child
    python train_interface.py --arch ResNet1d --input exams_part0.hdf5 --labels exams.csv   # Lima et al.
    torchrun --nproc_per_node=4 train_interface.py ...                 # data-parallel

Outputs in log/<arch>_<env>/: options.json, epoch_NNN.pt (MAIC) / model.pth + config.json + args.json (Lima),
best.pt, last.pt (resume point), history.csv, learning_curves.png, logs/ (TensorBoard), split.csv.
"""
from __future__ import annotations

import argparse
import dataclasses
import hashlib
import json
import logging
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import torch

import options as opts
from dataloader.dataset import ECGDataset, default_workers, eval_loader, sex_codes, train_loader
from dataloader.formats import open_reader
from dataloader.maic import dataset_csv_paths, maic_dataset_csvs, read_dataset_csv
from dataloader.records import NpyFolderReader, Reader
from dataloader.sources import apply_policy, duplicate_ids, label_problems, open_source
from dataloader.splits import DECADE_BINS, kfold_split, patient_split, strat_fold_split, stratified_split
from engine.crossval import write_cross_validation
from engine.inference import predict_rows
from engine.losses import inverse_age_weights
from engine.runs import (
    CURVES,
    FOLDS,
    MANIFEST,
    OPTIONS,
    PUBLISHED_ARGS,
    PUBLISHED_CONFIG,
    SPLIT,
    RunLock,
    best_checkpoint_name,
    clean_temporaries,
    clear_run,
    earlier_results,
    finish_member,
    latest_checkpoint,
    manifest_differences,
    new_manifest,
    read_manifest,
    run_dir,
    write_manifest,
)
from engine.trainer import fit
from models.checkpoint import ModelBundle, TrainingFacts, check_fits, load_bundle, published_config
from models.heads import LINEAR_HEAD, AgeHead
from models.preprocessing import PRESETS
from models.registry import get_model, model_args, options_to_args, output_layer
from models.schema import UNKNOWN_SEX
from utils.cli import RESULT, configure_logging, run_main
from utils.errors import TrainingDiverged, UserError
from utils.io import check_spreadsheet_safe, write_csv, write_json
from utils.paths import DATA_ROOT_ENV
from utils.plots import plot_learning_curves
from utils.runtime import (
    barrier,
    cleanup_distributed,
    configure_backends,
    default_infer_batch,
    init_distributed,
    is_main,
    precision_reason,
    resolve_device,
    resolve_precision,
    seed_everything,
)

logger = logging.getLogger("train")


@dataclasses.dataclass
class TrainingData:
    """What every member of a run trains on: the open source, its reader, and where the work runs."""

    source: object
    reader: Reader
    device: torch.device
    precision: str
    rank: int
    world: int


# ---- data --------------------------------------------------------------------------------------------------------
def training_reader(args: argparse.Namespace) -> Reader:
    """The labelled records to train on: the MAIC folder + label CSV of ``--mode``, or any ``--input``."""
    if args.input is not None:
        return open_reader(args.input, labels=args.labels, fs=args.fs, ptbxl_rate=args.ptbxl_rate,
                           scale=args.input_scale, traces_dset=args.traces_dset, ids_dset=args.ids_dset,
                           fmt=args.input_format)
    folder, labels = (Path(p) for p in opts.maic_training_paths(args))
    if not folder.is_dir() or not labels.is_file():
        raise UserError(f"no MAIC {args.mode} training data: looked for the folder {folder} and the label CSV "
                        f"{labels}. Put the challenge data at the default data root (data/maic2023, or the folder "
                        f"in ${DATA_ROOT_ENV}), pass --data_root DIR (or --train_for_{args.mode} and "
                        f"--train_for_{args.mode}_label), or --input for other formats; `make demo` builds a "
                        f"synthetic set")
    return NpyFolderReader(folder, labels=labels, fs=args.fs or 500.0, scale=args.input_scale)


def usable_records(reader: Reader, bad_signals: dict, on_bad: str) -> np.ndarray:
    """Positions of the records to train on, after the bad-input policy over everything that can be wrong:
    signals, age labels, duplicate ids, and label rows whose ECG file is missing (all listed at once)."""
    bad = {**duplicate_ids(reader.table), **label_problems(reader.table), **bad_signals}
    orphans = list(getattr(reader, "orphan_labels", []))
    bad.update({rid: f"{rid}: label row without an ECG file in {reader.folder}" for rid in orphans})
    keep = apply_policy(bad, reader.ids + orphans, on_bad, "training")
    return keep[keep < len(reader)]


def maic_split(args: argparse.Namespace, reader: NpyFolderReader, usable: np.ndarray) -> tuple[np.ndarray, ...]:
    """The seed's dataset CSVs (written by the first process, read by all)."""
    excluded = sorted(set(reader.ids) - {reader.ids[i] for i in usable})
    if is_main():
        maic_dataset_csvs(reader, args.mode, args.dataset_dir, args.valid_ratio, args.split_seed, exclude=excluded)
    barrier()
    position = {rid: i for i, rid in enumerate(reader.ids)}
    csvs = dataset_csv_paths(args.dataset_dir, args.mode)
    train, valid = (np.array([position[f] for f in read_dataset_csv(c)], np.int64) for c in csvs)
    return train, valid, f"MAIC {args.mode} ({csvs[0].name} / {csvs[1].name})"


def split_records(args: argparse.Namespace, reader: Reader, usable: np.ndarray) -> tuple[np.ndarray, ...]:
    """(train positions, valid positions, description). MAIC: the dataset CSVs; otherwise --split."""
    if args.input is None:
        return maic_split(args, reader, usable)
    table = reader.table.iloc[usable]
    method = args.split
    if method == "auto":
        has_patients = "patient_id" in table.columns and table["patient_id"].notna().any()
        method = "patient" if has_patients else "stratified"
    needs = {"strat_fold": "PTB-XL's strat_fold column", "patient": "patient ids"}
    column = {"strat_fold": "strat_fold", "patient": "patient_id"}.get(method)
    if column and (column not in table.columns or table[column].isna().all()):
        raise UserError(f"--split {method} needs {needs[method]}; {args.input} has none")
    if method == "strat_fold":
        train, valid, _test = strat_fold_split(table["strat_fold"])
    elif method == "patient":
        train, valid = patient_split(table["patient_id"], args.valid_ratio, args.split_seed)
    else:
        train, valid = stratified_split(table["age"], DECADE_BINS, args.valid_ratio, args.split_seed)
    return usable[train], usable[valid], f"{reader.format} {args.input} (split: {method})"


def loaders(args: argparse.Namespace, source, table: pd.DataFrame, train: np.ndarray, valid: np.ndarray,
            fs: float, device: torch.device, rank: int, world: int, seed: int):
    """(training loader: shuffled by ``seed``, sharded, augmented; validation loader: every record once across
    ranks)."""
    ages = pd.to_numeric(table["age"], errors="coerce").to_numpy(np.float32)
    sex = sex_codes(table["sex"]) if "sex" in table.columns else np.full(len(table), UNKNOWN_SEX, np.float32)
    weights = {part: None for part in ("train", "valid")}
    if args.sample_weights == "inverse_age":
        weights = {"train": inverse_age_weights(ages[train], args.max_weight),
                   "valid": inverse_age_weights(ages[valid], args.max_weight)}
    workers = opts.workers(args, default_workers(device, args.cache == "on", world))
    pin = device.type == "cuda"
    batch = args.infer_batch_size or default_infer_batch(device, args.batch_size // world)
    augment = opts.recipe_of(args).augment(fs)
    train_set = ECGDataset(source, train, ages[train], weights["train"], sex[train], augment, seed)
    valid_set = ECGDataset(source, valid, ages[valid], weights["valid"], sex[valid])
    return (train_loader(train_set, args.batch_size, seed, workers, rank, world, pin),
            eval_loader(valid_set, batch, workers, rank, world, pin))


# ---- model -------------------------------------------------------------------------------------------------------
def new_bundle(args: argparse.Namespace) -> ModelBundle:
    """A new model of ``--arch`` with the options' constructor arguments, preprocessing and head."""
    spec = PRESETS[args.preprocessing]
    try:
        overrides = options_to_args(args.arch, vars(args))
        spec = dataclasses.replace(spec, fs=args.sample_rate or spec.fs, length=args.seq_length or spec.length,
                                   zscore=spec.zscore if args.zscore == "auto" else args.zscore == "on")
        head = AgeHead("sigmoid", args.age_min, args.age_max) if args.head == "sigmoid" else LINEAR_HEAD
        arguments = model_args(args.arch, **overrides)
        check_fits(args.arch, arguments, spec)
        model = get_model(args.arch, **arguments)
    except (ValueError, AssertionError) as exc:
        raise UserError(f"cannot build {args.arch} with these options: {exc}" + (
            " (pass --seq_length to give it another length, or another --preprocessing)"
            if "takes exactly" in str(exc) else "")) from exc
    return ModelBundle(model, args.arch, arguments, spec, head)


def starting_point(args: argparse.Namespace, run: Path) -> tuple[ModelBundle, dict | None]:
    """The bundle to train and the checkpoint content it starts from (None: from scratch) — the run's one
    checkpoint read: its last complete epoch (--resume), --pretrain_model_path, or nothing."""
    resume_from = latest_checkpoint(run) if args.resume else None
    path = resume_from or (args.pretrain_model_path if args.pretrained else None)
    if path is None:
        return new_bundle(args), None
    bundle = load_bundle(path, mode=args.mode, trust=args.trust_checkpoint)
    if bundle.checkpoint.get("epoch", 0) >= args.nepoch:
        logger.info(f"note: {path} is at epoch {bundle.checkpoint.get('epoch')} ≥ --nepoch {args.nepoch}; nothing to "
                    f"train")
    return bundle, bundle.checkpoint


def init_head_bias(bundle: ModelBundle, mean_age: float) -> None:
    """--head_bias_init mean: the output layer's bias at the training-mean age."""
    with torch.no_grad():
        output_layer(bundle.arch, bundle.model).bias.fill_(bundle.head.inverse(mean_age))


def init_output(bundle: ModelBundle, args: argparse.Namespace, mean_age: float) -> None:
    """A new model's output layer as the recipe starts it: --head_bias_init and --output_init (with both, the
    untrained network predicts the training-mean age for every ECG)."""
    if args.head_bias_init == "mean":
        init_head_bias(bundle, mean_age)
    if args.output_init == "zero":
        with torch.no_grad():
            output_layer(bundle.arch, bundle.model).weight.zero_()


# ---- run folder --------------------------------------------------------------------------------------------------
def save_run_files(args: argparse.Namespace, bundle: ModelBundle, run: Path, reader: Reader, train: np.ndarray,
                   valid: np.ndarray) -> None:
    """options.json (the command line, for people to read), split.csv and — for architectures that keep the
    published folder layout — its config.json and args.json."""
    options = opts.json_safe(vars(args))
    write_json(run / OPTIONS, options)
    ids = reader.table["id"].astype(str)
    write_csv(run / SPLIT, pd.DataFrame({"id": pd.concat([ids.iloc[train], ids.iloc[valid]]),
                                         "split": ["train"] * len(train) + ["valid"] * len(valid)}))
    config = published_config(bundle)
    if config is not None:
        write_json(run / PUBLISHED_CONFIG, {**options, **config})
        write_json(run / PUBLISHED_ARGS, options)


def main(argv=None) -> int:
    args = opts.parse_train(argv)
    rank, world, device = init_distributed(resolve_device(args.device))
    configure_logging(sys.stdout, args.quiet, main_process=rank == 0)
    precision = resolve_precision(args.precision, device)
    logger.info(precision_reason(args.precision, device, precision))
    configure_backends(device, precision, args.deterministic)
    seed_everything(args.seed)
    if args.batch_size % world:
        raise UserError(f"--batch_size {args.batch_size} (global) must divide among {world} processes")
    if not (args.resume or args.pretrained):
        with torch.device("meta"):  # the model options are checked before anything is created or read
            new_bundle(args)
    run = run_dir(args.log_dir, args.arch, args.env)
    lock = RunLock(run) if is_main() else None  # before anything in the folder is read or written
    try:
        train(args, run, device, precision, rank, world)
    finally:
        if lock is not None:
            lock.release()
    cleanup_distributed()
    return 0


def members(args: argparse.Namespace) -> list[str]:
    """The run's members: the run folder itself, or one folder per fold (and seed, with --seeds; and partner)."""
    return ["."] if args.folds == 1 else [name for k in range(args.folds) for name in fold_members(args, k)]


def fold_members(args: argparse.Namespace, fold: int) -> list[str]:
    """The models of one fold: fold_<k> (or fold_<k>_seed_<j> for each of --seeds), then fold_<k>_<partner> (or
    fold_<k>_<partner>_<i> for each of --partners)."""
    names = [f"fold_{fold}" if args.seeds == 1 else f"fold_{fold}_seed_{j}" for j in range(args.seeds)]
    if args.partner == "none":
        return names
    return names + [f"fold_{fold}_{args.partner}" if args.partners == 1 else f"fold_{fold}_{args.partner}_{i}"
                    for i in range(args.partners)]


def start_afresh(args: argparse.Namespace, run: Path) -> None:
    """A new run into ``run``: refused while it holds an earlier experiment's results unless --overwrite, which
    removes them (and every file a run writes) first — nothing of an earlier experiment survives into this one."""
    earlier = earlier_results(run)
    if earlier and not args.overwrite:
        shown = ", ".join(earlier[:6]) + (" ..." if len(earlier) > 6 else "")
        raise UserError(f"{run} holds an earlier experiment ({shown}); pass --overwrite to replace it, --resume to "
                        f"continue it with the same options, or another --env for a new run folder")
    if is_main():
        clear_run(run, run_reads(args))
    barrier()


def run_reads(args: argparse.Namespace) -> dict:
    """The paths this run reads, by option: none of them may be deleted when the run folder is cleared."""
    return {"--pretrain_model_path": args.pretrain_model_path, "--input": args.input, "--labels": args.labels,
            "--data_root": args.data_root, "--dataset_dir": args.dataset_dir, "--cache_dir": args.cache_dir}


def identify(args: argparse.Namespace, reader: Reader, precision: str, assignment: pd.Series, method: str) -> dict:
    """This experiment's manifest: result-changing options, the data's identity and the split's."""
    data = hashlib.sha256(json.dumps({"format": reader.format, "settings": reader.settings(), "ids": reader.ids},
                                     sort_keys=True, default=str).encode())
    data.update(reader.fingerprint("auto", where=False).encode())  # another machine or mount: the same data
    split = hashlib.sha256("\n".join(f"{i}\t{a}" for i, a in assignment.items()).encode()).hexdigest()
    return new_manifest(opts.result_options(args, precision), {"records": len(reader), "sha256": data.hexdigest()},
                        {"method": method, "folds": args.folds, "records": len(assignment), "sha256": split},
                        members(args))


def settle_manifest(args: argparse.Namespace, run: Path, manifest: dict) -> dict:
    """The manifest to train under: with --resume the run's own, after checking that nothing that changes the
    result differs (exit 2 naming each difference); otherwise this one, written before training starts."""
    if args.resume and earlier_results(run):
        old = read_manifest(run)
        if old is None:
            raise UserError(f"{run} holds results but no {MANIFEST} (a run of an older version, or files put there "
                            f"by hand): it cannot be checked to be the same experiment. Start again with --overwrite")
        differences = manifest_differences(old, manifest)
        if differences:
            raise UserError(f"--resume refused: this is not the experiment in {run}:\n  " + "\n  ".join(differences)
                            + "\nResume with the run's own options, or start a new experiment with --overwrite or "
                              "another --env")
        return old
    if args.resume:
        logger.info(f"--resume: {run} has no trained results yet; starting from scratch")
        if is_main():
            clear_run(run, run_reads(args))
    if is_main():
        write_manifest(run, manifest)
    barrier()
    return manifest


def train(args: argparse.Namespace, run: Path, device: torch.device, precision: str, rank: int, world: int) -> None:
    """One experiment in its (locked) folder: records → bad-input policy → one split, or K folds; the run's
    manifest is settled before the first epoch and completed after the last member."""
    if is_main():
        for path in clean_temporaries(run):
            logger.info(f"note: removed {path.relative_to(run)}, left by an interrupted run")
    if not args.resume:
        start_afresh(args, run)
    bundle, start = starting_point(args, run / members(args)[0])
    args.arch = bundle.arch
    reader = training_reader(args)
    check_spreadsheet_safe(reader.ids, "record id(s)")
    source, bad_signals = open_source(reader, bundle.preprocessing, opts.cache_config(args, precision))
    usable = usable_records(reader, bad_signals, args.on_bad)
    data = TrainingData(source, reader, device, precision, rank, world)
    ids = reader.table["id"].astype(str)
    if args.folds == 1:
        train_rows, valid_rows, description = split_records(args, reader, usable)
        assignment = pd.Series(["train"] * len(train_rows) + ["valid"] * len(valid_rows),
                               index=pd.concat([ids.iloc[train_rows], ids.iloc[valid_rows]]))
        manifest = settle_manifest(args, run, identify(args, reader, precision, assignment, description))
        train_model(args, run, bundle, start, train_rows, valid_rows, description, data)
        complete_run(run, manifest, ".", args)
        return
    table = reader.table.iloc[usable]
    folds = kfold_split(table["age"], table["patient_id"] if "patient_id" in table.columns else None, args.folds,
                        args.split_seed)
    assignment = pd.Series(folds, index=ids.iloc[usable])
    manifest = settle_manifest(args, run, identify(args, reader, precision, assignment, f"{args.folds} folds"))
    if is_main():
        write_csv(run / FOLDS, pd.DataFrame({"id": assignment.index, "fold": assignment.to_numpy()}))
    oof = train_folds(args, run, manifest, bundle, start, data, usable, folds)
    if is_main():
        write_oof(args, run, manifest, reader, usable, oof, folds)


def train_folds(args: argparse.Namespace, run: Path, manifest: dict, bundle: ModelBundle, start: dict | None,
                data: "TrainingData", usable: np.ndarray, folds: np.ndarray) -> np.ndarray:
    """Every fold's models (``bundle``/``start``: the first one's), each recorded in the manifest once trained;
    returns the out-of-fold ages (on the first process), each the mean over its fold's models."""
    oof = np.zeros(len(usable))
    partner = opts.partner_args(args)
    reader, source = data.reader, data.source
    for k in range(args.folds):
        names = fold_members(args, k)
        for j, member in enumerate(names):
            member_args = args if j < args.seeds else partner  # the partners: the fold's last models
            if k or j:
                if j:  # another model of the same fold: another initialisation, batch order and augmentation
                    seed_everything(args.seed + j)
                bundle, start = starting_point(member_args, run / member)
            held_out = usable[folds == k]
            description = f"{reader.format} {args.input or 'MAIC ' + args.mode}, fold {k + 1}/{args.folds}" + \
                (f", seed {args.seed + j}" if len(names) > 1 else "")
            trained = train_model(member_args, run / member, bundle, start, usable[folds != k], held_out,
                                  description, data, seed=args.seed + j)
            if is_main():  # the out-of-fold age: the mean over the fold's models
                oof[folds == k] += predict_rows(trained, source, reader.table, held_out,
                                                opts.held_out_config(args, data.device, data.precision)) / len(names)
                finish_member(run, manifest, member, best_checkpoint_name(member_args.checkpoints))
            barrier()
    return oof


def complete_run(run: Path, manifest: dict, member: str, args: argparse.Namespace) -> None:
    if is_main():
        finish_member(run, manifest, member, best_checkpoint_name(args.checkpoints))
        manifest["complete"] = True
        write_manifest(run, manifest)


def write_oof(args: argparse.Namespace, run: Path, manifest: dict, reader: Reader, usable: np.ndarray,
              oof: np.ndarray, folds: np.ndarray) -> None:
    """oof.csv and cv.json, then the manifest marked complete — only when every out-of-fold age is finite."""
    broken = np.flatnonzero(~np.isfinite(oof))
    if len(broken):
        shown = ", ".join(str(reader.ids[usable[i]]) for i in broken[:10])
        raise TrainingDiverged(f"fold model(s) {sorted(set(folds[broken].tolist()))} give non-finite ages for "
                               f"{len(broken)} held-out record(s) ({shown}): the training diverged; lower the "
                               f"learning rate and start again with --overwrite. No oof.csv or cv.json was written")
    ages = pd.to_numeric(reader.table["age"], errors="coerce").to_numpy(float)[usable]
    cv = write_cross_validation(run, reader.table["id"].iloc[usable].tolist(), ages, oof, folds, args.seed,
                                seeds=args.seeds, partner=args.partner, partners=args.partners)
    manifest["complete"] = True
    write_manifest(run, manifest)
    logger.log(RESULT, f"{args.folds}-fold cross-validation: out-of-fold MAE {cv['pooled']['mae']:.2f} (95% CI "
        f"{cv['pooled']['mae_ci95'][0]:.2f}–{cv['pooled']['mae_ci95'][1]:.2f}) on {cv['pooled']['n']} ECGs → "
        f"{run / 'oof.csv'}, {run / 'cv.json'}")
    medians = {fold: np.median(ages[folds != fold]) for fold in np.unique(folds)}  # each fold's training median
    constant = np.array([medians[fold] for fold in folds])
    warn_if_constant(f"{run}: out-of-fold MAE {cv['pooled']['mae']:.2f}", cv["pooled"]["mae"], ages, constant)


def warn_if_constant(what: str, mae: float, ages: np.ndarray, constant: np.ndarray) -> None:
    """A warning when a model does not beat the constant predictor (the training median for every ECG): such a
    model has learnt nothing usable, and its number must not be read as a result."""
    baseline = float(np.mean(np.abs(np.asarray(ages, float) - constant)))
    if not mae < baseline:
        logger.warning(f"warning: {what} does not beat the constant predictor (the training median for every ECG: "
                       f"MAE {baseline:.2f}); the model has learnt nothing usable. Check the learning rate, the "
                       f"epochs, the labels and the precision (--precision fp32)")


def train_model(args: argparse.Namespace, run: Path, bundle: ModelBundle, start: dict | None, train_rows: np.ndarray,
                valid_rows: np.ndarray, description: str, data: "TrainingData", seed: int | None = None) -> ModelBundle:
    """Train one model on ``train_rows`` validated on ``valid_rows`` into ``run``; returns its best checkpoint."""
    source, reader, device, precision, rank, world = (data.source, data.reader, data.device, data.precision,
                                                      data.rank, data.world)
    if len(train_rows) == 0 or len(valid_rows) == 0:
        raise UserError(f"{description} leaves {len(train_rows)} training and {len(valid_rows)} validation records; "
                        f"both need at least one")
    ages = pd.to_numeric(reader.table["age"], errors="coerce").to_numpy(np.float32)
    if start is None:
        init_output(bundle, args, float(ages[train_rows].mean()))
    bundle.facts = TrainingFacts.of(ages[train_rows])
    cfg = opts.train_config(args, device)
    if is_main():
        run.mkdir(parents=True, exist_ok=True)
        save_run_files(args, bundle, run, reader, train_rows, valid_rows)
        logger.info(f"{bundle.arch} ({sum(p.numel() for p in bundle.model.parameters()):,} parameters, "
                    f"{args.recipe} recipe) on {description}: {len(train_rows)} train / {len(valid_rows)} valid "
                    f"ECGs; device {device}, {precision}, {world} process(es) → {run}")
    loader_pair = loaders(args, source, reader.table, train_rows, valid_rows, bundle.preprocessing.fs, device, rank,
                          world, args.seed if seed is None else seed)
    progress = fit(bundle, *loader_pair, cfg, run, device, precision, start=start,
                   resumed=args.resume and start is not None, world=world)
    if is_main():
        report_run(run, progress, args.best_metric)
        final = progress.history[-1]["valid_mae"] if progress.history else float("nan")
        warn_if_constant(f"{run}: validation MAE {final:.2f}", final, ages[valid_rows],
                         np.full(len(valid_rows), np.median(ages[train_rows])))
    best = run / best_checkpoint_name(args.checkpoints)
    return load_bundle(best, mode=args.mode) if is_main() and args.best_metric != "last" else bundle


def report_run(run: Path, progress, best_metric: str) -> None:
    """The learning curves (from the history in memory) and the run's last line."""
    if progress.history:
        plot_learning_curves(pd.DataFrame(progress.history), run / CURVES)
    final = progress.history[-1]["valid_mae"] if progress.history else float("nan")
    which = f"last epoch (valid_mae {final:.4f})" if best_metric == "last" else \
        f"best {best_metric} {progress.best:.4f}"
    logger.log(RESULT, f"done: {which}; checkpoints in {run} (each with the age-gap bias correction fitted on its "
                f"validation predictions; use test_interface --bias_correction)")


def entry(argv=None) -> int:
    return run_main(main, argv)


if __name__ == "__main__":
    sys.exit(entry())
