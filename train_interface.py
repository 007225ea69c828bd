"""Train an age model: dataset CSVs / splits → cache → shared trainer → log/<arch>_<env>/.

    python train_interface.py --mode=adult --arch=ResDenseNet          # MAIC adult (seed recipe)
    python train_interface.py --mode=child --arch=ResUDenseNet         # MAIC child
    python train_interface.py --arch ResNet1d --input exams_part0.hdf5 --labels exams.csv   # Lima et al.
    torchrun --nproc_per_node=4 train_interface.py ...                 # data-parallel

Outputs in log/<arch>_<env>/: options.json, epoch_NNN.pt (MAIC) / model.pth + config.json + args.json (Lima),
best.pt, last.pt (resume point), history.csv, learning_curves.png, logs/ (TensorBoard), split.csv.
"""
from __future__ import annotations

import dataclasses
import sys
from pathlib import Path

import numpy as np
import pandas as pd

import options as opts
from dataloader.cache import resolve_cache_dtype
from dataloader.dataset import ECGDataset, default_workers, eval_loader, train_loader
from dataloader.preprocessing import PRESETS
from dataloader.records import NpyFolderReader, Reader, open_reader, read_csv
from dataloader.sources import apply_policy, duplicate_ids, label_problems, open_source
from dataloader.splits import maic_dataset_csvs, patient_split, strat_fold_split, stratified_split
from models import AgeHead, get_model, model_args
from utils.checkpoint import ModelBundle, load_bundle, torch_load
from utils.cli import run_main
from utils.io import write_csv, write_json
from utils.losses import inverse_age_weights
from utils.runtime import (
    barrier,
    cleanup_distributed,
    configure_backends,
    default_infer_batch,
    init_distributed,
    is_main,
    resolve_device,
    resolve_precision,
    seed_everything,
)
from utils.trainer import TrainConfig, best_checkpoint_name, fit, latest_checkpoint


def log(message: str) -> None:
    if is_main():
        print(message, flush=True)


# ---- data --------------------------------------------------------------------------------------------------------
def training_reader(args) -> Reader:
    """The labelled records to train on: the MAIC folder + label CSV of ``--mode``, or any ``--input``."""
    if args.input is None:
        folder, labels = getattr(args, f"train_for_{args.mode}"), getattr(args, f"train_for_{args.mode}_label")
        if folder is None or labels is None:
            raise SystemExit(f"error: no training data: give --data_root, --train_for_{args.mode} and "
                             f"--train_for_{args.mode}_label, or --input (run `make demo` for a synthetic set)")
        return NpyFolderReader(folder, labels=labels, fs=args.fs or 500.0, scale=args.input_scale)
    return open_reader(args.input, labels=args.labels, fs=args.fs, ptbxl_rate=args.ptbxl_rate,
                       scale=args.input_scale, traces_dset=args.traces_dset, ids_dset=args.ids_dset)


def usable_records(reader: Reader, bad_signals: dict, on_bad: str) -> np.ndarray:
    """Positions of the records to train on, after the bad-input policy over everything that can be wrong:
    signals, age labels, duplicate ids, and label rows whose ECG file is missing (all listed at once)."""
    table = reader.table
    bad = {**duplicate_ids(table), **label_problems(table), **bad_signals}
    orphans = list(getattr(reader, "orphan_labels", []))
    bad.update({rid: f"{rid}: label row without an ECG file in {reader.folder}" for rid in orphans})
    ids = reader.ids + orphans
    keep = apply_policy(bad, ids, "skip" if on_bad == "fill" else on_bad, "training", log=log)
    return keep[keep < len(reader)]


def split_records(args, reader: Reader, usable: np.ndarray) -> tuple[np.ndarray, np.ndarray, str]:
    """(train positions, valid positions, description). MAIC: the dataset CSVs; otherwise --split."""
    if args.input is None:
        excluded = sorted(set(reader.ids) - {reader.ids[i] for i in usable})
        if is_main():
            maic_dataset_csvs(reader.folder, reader.labels, args.mode, args.dataset_dir,
                              opts.MAIC_AGE_BINS[args.mode], args.valid_ratio, args.seed, exclude=excluded, log=log)
        barrier()
        position = {rid: i for i, rid in enumerate(reader.ids)}
        names = [Path(args.dataset_dir) / f"{part}_dataset_{args.mode}.csv" for part in ("train", "valid")]
        train, valid = (np.array([position[f] for f in read_csv(c, dtype={"Filename": str})["Filename"]], np.int64)
                        for c in names)
        return train, valid, f"MAIC {args.mode} ({names[0].name} / {names[1].name})"
    table = reader.table.iloc[usable]
    method = args.split
    if method == "auto":
        has_patients = "patient_id" in table.columns and table["patient_id"].notna().any()
        method = "patient" if has_patients else "stratified"
    if method == "strat_fold":
        if "strat_fold" not in table.columns or table["strat_fold"].isna().all():
            raise SystemExit(f"error: --split strat_fold needs PTB-XL's strat_fold column; {args.input} has none")
        train, valid, _test = strat_fold_split(table["strat_fold"])
    elif method == "patient":
        if "patient_id" not in table.columns:
            raise SystemExit(f"error: --split patient needs patient ids; {args.input} has none")
        train, valid = patient_split(table["patient_id"], args.valid_ratio, args.seed)
    else:
        train, valid = stratified_split(table["age"], list(range(0, 140, 10)), args.valid_ratio, args.seed)
    return usable[train], usable[valid], f"{reader.format} {args.input} (split: {method})"


# ---- model -------------------------------------------------------------------------------------------------------
def new_bundle(args) -> ModelBundle:
    overrides = {}
    if args.arch == "ResNet1d":
        base = model_args("ResNet1d")
        filters = args.net_filter_size or [b[0] for b in base["blocks_dim"]]
        lengths = args.net_seq_lengh or [b[1] for b in base["blocks_dim"]]
        if len(filters) != len(lengths):
            raise SystemExit("error: --net_filter_size and --net_seq_lengh need the same number of entries")
        overrides = {"input_dim": [12, args.seq_length or lengths[0]],
                     "blocks_dim": [[f, n] for f, n in zip(filters, lengths)]}
        if args.kernel_size:
            overrides["kernel_size"] = args.kernel_size
        if args.dropout_rate is not None:
            overrides["dropout_rate"] = args.dropout_rate
    else:
        overrides = {k: getattr(args, k) for k in ("out_ch", "mid_ch") if getattr(args, k)}
    spec = PRESETS[args.preprocessing]
    spec = dataclasses.replace(spec, fs=args.sample_rate or spec.fs, length=args.seq_length or spec.length)
    head = AgeHead(args.head, args.age_min, args.age_max) if args.head == "sigmoid" else AgeHead("linear", -np.inf,
                                                                                                  np.inf)
    return ModelBundle(get_model(args.arch, **overrides), args.arch, model_args(args.arch, **overrides), spec, head)


def save_run_files(args, bundle: ModelBundle, run: Path, reader: Reader, train: np.ndarray, valid: np.ndarray):
    options = vars(args)
    write_json(run / "options.json", options)
    ids = reader.table["id"].astype(str)
    write_csv(run / "split.csv", pd.DataFrame({"id": pd.concat([ids.iloc[train], ids.iloc[valid]]),
                                               "split": ["train"] * len(train) + ["valid"] * len(valid)}))
    if args.arch == "ResNet1d":  # the published folder layout: config.json (model + args) and args.json
        config = {**options, "seq_length": bundle.model_args["input_dim"][1],
                  "net_filter_size": [b[0] for b in bundle.model_args["blocks_dim"]],
                  "net_seq_lengh": [b[1] for b in bundle.model_args["blocks_dim"]],
                  "kernel_size": bundle.model_args["kernel_size"],
                  "dropout_rate": bundle.model_args["dropout_rate"], "sample_freq": bundle.preprocessing.fs}
        write_json(run / "config.json", config)
        write_json(run / "args.json", options)


def store_bias_correction(best: Path, valid_set: ECGDataset, args, device, precision: str, workers: int) -> None:
    """Fit the age-gap line on the validation split with the best weights and store it in the best checkpoint
    (``bias_correction``; applied at test time only with --bias_correction)."""
    from utils.checkpoint import load_bundle
    from utils.io import save_torch
    from utils.metrics import fit_bias_correction
    from utils.trainer import predict

    if not best.exists():
        return
    bundle = load_bundle(best)
    batch = args.infer_batch_size or default_infer_batch(device, args.batch_size)
    result = predict(bundle.model.to(device), bundle.head, eval_loader(valid_set, batch, workers), device, precision)
    try:
        correction = fit_bias_correction(result["age"], valid_set.targets[result["index"]])
    except ValueError as exc:
        log(f"no bias correction stored: {exc}")
        return
    save_torch(best, {**bundle.checkpoint, "bias_correction": correction})
    log(f"age-gap bias correction fitted on {correction['n']} validation ECGs: gap = {correction['intercept']:.2f} "
        f"+ {correction['slope']:.3f}·age (stored in {best.name}; use test_interface --bias_correction)")


def main(argv=None) -> int:
    args = opts.parse(argv)
    device = resolve_device(args.device)
    rank, world, device = init_distributed(device)
    precision = resolve_precision(args.precision, device)
    configure_backends(device, precision, args.deterministic)
    seed_everything(args.seed)
    run = opts.run_dir(args)
    if args.batch_size % world:
        raise SystemExit(f"error: --batch_size {args.batch_size} (global) must divide among {world} processes")

    resume_from, init_state = None, None
    if args.resume:
        resume_from = latest_checkpoint(run)
        if resume_from is None:
            log(f"--resume: {run} has no checkpoint yet; starting from scratch")
    if resume_from is not None:
        bundle = load_bundle(resume_from, mode=args.mode)
    elif args.pretrained:
        bundle = load_bundle(args.pretrain_model_path, mode=args.mode)
        init_state = torch_load(Path(bundle.source))
        if init_state.get("epoch", 0) >= args.nepoch:
            log(f"note: {args.pretrain_model_path} is at epoch {init_state.get('epoch')} ≥ --nepoch "
                f"{args.nepoch}; nothing to train")
    else:
        bundle = new_bundle(args)
    args.arch = bundle.arch

    reader = training_reader(args)
    cache_dtype = resolve_cache_dtype(args.cache_dtype, precision)
    source, bad_signals = open_source(reader, bundle.preprocessing, args.cache == "on", args.cache_dir,
                                      dtype=cache_dtype, progress=not args.quiet)
    train, valid, description = split_records(args, reader, usable_records(reader, bad_signals, args.on_bad))
    if len(train) == 0 or len(valid) == 0:
        raise SystemExit(f"error: {description} leaves {len(train)} training and {len(valid)} validation records; "
                         f"both need at least one")

    ages = pd.to_numeric(reader.table["age"], errors="coerce").to_numpy(np.float32)
    weights = {"train": None, "valid": None}
    if args.sample_weights == "inverse_age":
        weights = {"train": inverse_age_weights(ages[train], args.max_weight),
                   "valid": inverse_age_weights(ages[valid], args.max_weight)}
    train_set = ECGDataset(source, train, ages[train], weights["train"])
    valid_set = ECGDataset(source, valid, ages[valid], weights["valid"])
    workers = args.num_workers if args.num_workers is not None else default_workers(device, args.cache == "on",
                                                                                    world)
    pin = device.type == "cuda"
    infer_batch = args.infer_batch_size or default_infer_batch(device, args.batch_size // world)
    loaders = (train_loader(train_set, args.batch_size, args.seed, workers, rank, world, pin),
               eval_loader(valid_set, infer_batch, workers, rank, world, pin))

    if is_main():
        run.mkdir(parents=True, exist_ok=True)
        for stale in run.glob(".*.tmp"):  # temporaries of a run killed mid-write
            stale.unlink(missing_ok=True)
        save_run_files(args, bundle, run, reader, train, valid)
        log(f"{bundle.arch} ({sum(p.numel() for p in bundle.model.parameters()):,} parameters, {args.recipe} "
            f"recipe) on {description}: {len(train)} train / {len(valid)} valid ECGs; device {device}, "
            f"{precision}, {world} process(es), {workers} loader worker(s) → {run}")
    bundle.checkpoint = {}
    cfg = TrainConfig(nepoch=args.nepoch, lr=args.lr_initial, weight_decay=args.weight_decay, loss=args.loss,
                      scheduler=args.scheduler, decay_epoch=args.decay_epoch, decay_gamma=args.decay_gamma,
                      patience=args.patience, lr_factor=args.lr_factor, min_lr=args.min_lr,
                      best_metric=args.best_metric, checkpoints=args.checkpoints,
                      max_steps_per_epoch=args.max_steps_per_epoch,
                      compile=args.compile == "on" or (args.compile == "auto" and device.type == "cuda"),
                      progress=not args.quiet,
                      options={**vars(args), "train_median_age": float(np.median(ages[train]))})
    summary = fit(bundle, *loaders, cfg, run, device, precision, resume_from=resume_from, init_from=init_state,
                  world=world, sync_bn=args.sync_bn, fast_layout=args.precision != "fp32", log=log)
    if is_main():
        from utils.plots import plot_learning_curves

        plot_learning_curves(run / "history.csv", run / "learning_curves.png")
        store_bias_correction(run / best_checkpoint_name(cfg.checkpoints), valid_set, args, device, precision,
                              workers)
        log(f"done: best {cfg.best_metric} {summary['best']:.4f}; checkpoints in {run}")
    cleanup_distributed()
    return 0


def entry(argv=None) -> int:
    return run_main(main, argv)


if __name__ == "__main__":
    sys.exit(entry())
