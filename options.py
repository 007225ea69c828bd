"""Command-line options: shared argument groups, one parser per program, and the typed settings derived from them.

Each program builds its parser from the groups it actually reads (``train_parser``, ``test_parser``,
``report_parser``), so an option a program does not use is an argparse error rather than silently ignored. The
option names are the challenge entry's seed names plus this project's. Recipe-dependent training options default
to ``None``/``auto`` and are filled by :func:`resolve_train`: ``--arch ResNet1d`` gets the Lima et al. recipe
(400 Hz, weighted MSE, ReduceLROnPlateau, best-only model.pth), the MAIC architectures the seed's (500 Hz, L1,
StepLR, a checkpoint per epoch). The resolved options are saved next to every run's checkpoints (``options.json``).
"""
from __future__ import annotations

import argparse
import math
from pathlib import Path

import numpy as np
import torch

from dataloader.augment import Augment
from dataloader.maic import MODES, label_csv, template_csv, test_folder, train_folder
from dataloader.records import CACHE_CHECKS, fingerprint_files
from dataloader.sources import CacheConfig, resolve_cache_dtype
from engine.inference import InferenceConfig
from engine.runs import run_dir
from engine.trainer import TrainConfig
from models import MODELS
from models.heads import MODE_HEADS
from utils.errors import UserError
from utils.paths import CACHE_DIR, DATA_ROOT_ENV, DATASET_DIR, LOG_DIR, default_data_root
from utils.runtime import default_infer_batch

MAIC_ARCH = {"adult": "ResDenseNet", "child": "ResUDenseNet"}  # the challenge entry's model of each mode
_SEED = dict(optimizer="adam", lr_initial=1e-3, weight_decay=0.0, batch_size=32, ema=0.0, warmup_epochs=0.0,
             head_bias_init="none", crop_seconds=0.0, aug_scale=0.0, aug_noise=0.0, aug_wander=0.0,
             aug_lead_dropout=0.0, aug_coarse_dropout=0.0)
RECIPES = {
    # seed recipe of the MAIC ECG AI Challenge 2023 entry
    "maic": dict(_SEED, preprocessing="maic", loss="l1", sample_weights="none", scheduler="step", nepoch=60,
                 best_metric="valid_mae", checkpoints="every_epoch", head="sigmoid"),
    # Lima et al. 2021 companion code (train.py defaults)
    "lima": dict(_SEED, preprocessing="lima", loss="mse", sample_weights="inverse_age", scheduler="plateau",
                 nepoch=70, best_metric="valid_loss", checkpoints="best_only", head="linear"),
    # this project's: the MAIC 2023 winner's preprocessing and schedule family, whole records with random crops and
    # augmentation, AdamW + cosine with warm-up, EMA weights, the last epoch (no selection on validation data)
    "modern": dict(preprocessing="modern", loss="l1", sample_weights="none", scheduler="cosine", nepoch=40,
                   best_metric="last", checkpoints="best", head="linear", optimizer="adamw", lr_initial=1e-3,
                   weight_decay=0.01, batch_size=32, ema=0.99, warmup_epochs=2.0, head_bias_init="mean",
                   crop_seconds=5.0, aug_scale=0.1, aug_noise=0.05, aug_wander=0.1, aug_lead_dropout=0.1,
                   aug_coarse_dropout=0.0),
}
RECIPE_OPTIONS = ("preprocessing", "loss", "sample_weights", "scheduler", "best_metric", "head", "optimizer",
                  "lr_initial", "weight_decay", "batch_size", "ema", "warmup_epochs", "head_bias_init",
                  "crop_seconds", "aug_scale", "aug_noise", "aug_wander", "aug_lead_dropout", "aug_coarse_dropout")
Formatter = argparse.ArgumentDefaultsHelpFormatter


def _bool(text: str) -> bool:
    if str(text).lower() in ("1", "true", "yes", "on"):
        return True
    if str(text).lower() in ("0", "false", "no", "off"):
        return False
    raise argparse.ArgumentTypeError(f"expected true/false, got {text!r}")


# ---- argument groups -------------------------------------------------------------------------------------------
def add_data_root(p: argparse.ArgumentParser) -> None:
    p.add_argument("--data_root", default=None,
                   help=f"folder holding the MAIC layout (ECG_<mode>_numpy_train/, ECG_<mode>_age_train.csv, "
                        f"ECG_<mode>_numpy_valid/, submission.csv); default ${DATA_ROOT_ENV} or "
                        f"data/maic2023; sets every MAIC path below that is not given")


def add_maic_train(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("MAIC training data (seed option names)")
    add_data_root(g)
    for mode in MODES:
        g.add_argument(f"--train_for_{mode}", default=None, help=f"folder of {mode} training .npy files")
        g.add_argument(f"--train_for_{mode}_label", default=None, help=f"{mode} label CSV (FILENAME, GENDER, AGE)")
    g.add_argument("--dataset_dir", default=str(DATASET_DIR), help="where train/valid dataset CSVs live")


def add_maic_test(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("MAIC submission (seed option names)")
    add_data_root(g)
    for mode in MODES:
        g.add_argument(f"--test_for_{mode}", default=None, help=f"folder of {mode} test .npy files")
        g.add_argument(f"--weights_{mode}", nargs="+", default=None,
                       help=f"{mode} checkpoint(s) (.pt, seed .pt, run folder, cross-validated run folder; several "
                            f"are averaged); default: the best checkpoint of the default {mode} run, "
                            f"<log_dir>/{MAIC_ARCH[mode]}_{mode}/best.pt")
    g.add_argument("--submission_template", default=None, help="template submission.csv (FILENAME, GENDER, AGE)")
    g.add_argument("--log_dir", default=str(LOG_DIR), help="where the default runs' checkpoints are")


def add_records(p: argparse.ArgumentParser, what: str) -> None:
    g = p.add_argument_group("any format (HDF5, WFDB, PTB-XL, .npy folder, manifest CSV)")
    g.add_argument("--input", default=None, help=f"records to {what}: an HDF5 file or folder, a WFDB folder, a "
                                                 f"PTB-XL root or database CSV, an .npy folder or a manifest CSV")
    g.add_argument("--fs", type=float, default=None, help="sampling rate of --input records whose format does not "
                                                          "store it (.npy); default 500 (MAIC)")
    g.add_argument("--ptbxl_rate", type=int, default=500, choices=(100, 500), help="PTB-XL records to read")
    g.add_argument("--input_scale", type=float, default=1.0, help="multiply .npy/HDF5 amplitudes by this to get mV")
    g.add_argument("--traces_dset", default="tracings", help="HDF5 dataset holding the tracings")
    g.add_argument("--ids_dset", default="exam_id", help="HDF5 dataset holding the ids ('' = row numbers)")


def add_training_data(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("labels and split")
    g.add_argument("--labels", default=None, help="label CSV for --input (CODE-15%% exams.csv or MAIC labels)")
    g.add_argument("--split", default="auto", choices=("auto", "stratified", "patient", "strat_fold"),
                   help="train/valid split: stratified by age bin (MAIC), by patient (no patient in two splits), "
                        "or PTB-XL strat_fold (1–8 train, 9 valid, 10 test); auto = patient when ids exist")
    g.add_argument("--valid_ratio", type=float, default=0.1, help="share of records (or patients) for validation")


def add_mode(g) -> None:
    g.add_argument("--mode", default="adult", choices=MODES,
                   help="MAIC mode: its data, default architecture and age bounds (seed checkpoints' head)")


def add_model(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("model")
    add_mode(g)
    g.add_argument("--arch", default=None, choices=tuple(MODELS),
                   help="default: ECGEfficientNet for --recipe modern, else ResDenseNet (adult) / ResUDenseNet (child)")
    g.add_argument("--recipe", default="auto", choices=("auto", *RECIPES),
                   help="training recipe; auto = lima for ResNet1d, modern for ECGEfficientNet, maic otherwise")
    g.add_argument("--out_ch", type=int, default=None, help="MAIC models' width (default 128 adult / 256 child)")
    g.add_argument("--mid_ch", type=int, default=None, help="MAIC models' U-block width (default 64)")
    g.add_argument("--net_filter_size", type=int, nargs="+", default=None, help="ResNet1d filters per block")
    g.add_argument("--net_seq_lengh", type=int, nargs="+", default=None, help="ResNet1d length per block "
                                                                              "(published spelling)")
    g.add_argument("--kernel_size", type=int, default=None, help="ResNet1d kernel size (17)")
    g.add_argument("--dropout_rate", type=float, default=None, help="ResNet1d dropout (0.8)")
    g.add_argument("--head", default="auto", choices=("auto", "sigmoid", "linear"))
    g.add_argument("--age_min", type=float, default=None, help="lower bound of the sigmoid head (19 / 0)")
    g.add_argument("--age_max", type=float, default=None, help="upper bound of the sigmoid head (122 / 9)")
    g.add_argument("--head_bias_init", default=None, choices=("none", "mean"),
                   help="mean: start the output layer's bias at the training-mean age (the seed recipes start at "
                        "random; the modern recipe at the mean)")
    g.add_argument("--width", type=float, default=None, help="ECGEfficientNet channel multiplier (1.0)")
    g.add_argument("--sex_input", action="store_true",
                   help="ECGEfficientNet: give the network the person's sex where the labels carry it (off)")
    g.add_argument("--preprocessing", default="auto", choices=("auto", "maic", "lima", "modern"))
    g.add_argument("--zscore", default="auto", choices=("auto", "on", "off"),
                   help="z-score each lead (auto: as the preprocessing; off keeps amplitudes in mV)")
    g.add_argument("--sample_rate", type=float, default=None, help="model's sampling rate (500 MAIC, 400 Lima)")
    g.add_argument("--seq_length", type=int, default=None, help="model's input length in samples (4096)")


def add_training(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("training")
    g.add_argument("--batch_size", type=int, default=None, help="global batch size, all processes together (32)")
    g.add_argument("--nepoch", type=int, default=None, help="epochs (60 MAIC, 70 Lima, 40 modern)")
    g.add_argument("--lr_initial", type=float, default=None, help="learning rate (1e-3)")
    g.add_argument("--weight_decay", type=float, default=None, help="weight decay (0; 0.01 modern, decoupled)")
    g.add_argument("--optimizer", default=None, choices=("adam", "adamw"), help="adam (seed recipes), adamw (modern)")
    g.add_argument("--scheduler", default="auto", choices=("auto", "step", "plateau", "cosine"),
                   help="step/plateau per epoch (MAIC/Lima); cosine per step after --warmup_epochs (modern)")
    g.add_argument("--warmup_epochs", type=float, default=None, help="linear warm-up before the cosine decay (2)")
    g.add_argument("--ema", type=float, default=None,
                   help="decay of the exponential moving average of the weights, which is validated and saved "
                        "(0 = off; 0.99 modern)")
    g.add_argument("--decay_epoch", type=int, default=20, help="StepLR step size (epochs)")
    g.add_argument("--decay_gamma", type=float, default=0.1, help="StepLR factor")
    g.add_argument("--patience", type=int, default=7, help="ReduceLROnPlateau patience")
    g.add_argument("--lr_factor", type=float, default=0.1, help="ReduceLROnPlateau factor")
    g.add_argument("--min_lr", type=float, default=1e-7, help="ReduceLROnPlateau: stop once lr falls below")
    g.add_argument("--loss", default="auto", choices=("auto", "l1", "mse"))
    g.add_argument("--sample_weights", default="auto", choices=("auto", "none", "inverse_age"),
                   help="inverse-frequency weights per integer age, mean 1 (Lima et al.)")
    g.add_argument("--max_weight", type=float, default=math.inf,
                   help="cap the inverse-age weights at this value before they are renormalised to mean 1 (so "
                        "the final largest weight can exceed it, as in Lima et al.'s code)")
    g.add_argument("--best_metric", default="auto", choices=("auto", "valid_mae", "valid_loss", "last"),
                   help="which epoch best.pt holds: lowest validation MAE / loss, or the last one (modern: no "
                        "selection on the validation split, so out-of-fold estimates stay honest)")
    g.add_argument("--folds", type=int, default=1,
                   help="K > 1: train K models on K patient-level folds (age-stratified where there are no patient "
                        "ids, as MAIC), each validated on its held-out fold; writes oof.csv and cv.json and the "
                        "fold models in fold_<k>/ (test_interface --weights RUN_DIR averages them)")
    g.add_argument("--max_steps_per_epoch", type=int, default=0, help="cap train steps per epoch (0 = all)")
    g.add_argument("--infer_batch_size", type=int, default=None,
                   help="validation batch (default: 4×batch_size on GPUs, 8 on CPUs)")
    g.add_argument("--seed", type=int, default=1234)
    g.add_argument("--env", default=None, help="run name: outputs go to <log_dir>/<arch>_<env>/ (default: mode)")
    g.add_argument("--log_dir", default=str(LOG_DIR))
    g.add_argument("--pretrained", action="store_true", help="start from --pretrain_model_path (weights, optimizer "
                                                             "and epoch when present)")
    g.add_argument("--pretrain_model_path", default=None)
    g.add_argument("--resume", action="store_true",
                   help="continue this run from its last complete epoch; refused (naming each difference) unless "
                        "every option that changes the result, the data and the split are the run's own")
    g.add_argument("--overwrite", action="store_true",
                   help="start afresh in a run folder that holds an earlier experiment: its checkpoints, histories, "
                        "fold members and out-of-fold results are removed first (without it such a run is refused)")
    g.add_argument("--sync_bn", action="store_true", help="SyncBatchNorm across processes (GPU, torchrun)")
    g.add_argument("--compile", default="auto", choices=("auto", "on", "off"),
                   help="torch.compile the model (auto = on CUDA only)")


def add_augmentation(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("augmentation (training only; strengths in z-scored units, 0 = off)")
    g.add_argument("--crop_seconds", type=float, default=None,
                   help="random training crops of this many seconds of each record (0 = the model's whole input; "
                        "modern: 5)")
    g.add_argument("--aug_scale", type=float, default=None, help="amplitude factor U(1 − s, 1 + s) per record")
    g.add_argument("--aug_noise", type=float, default=None, help="Gaussian noise standard deviation")
    g.add_argument("--aug_wander", type=float, default=None, help="baseline wander amplitude (0.05–0.5 Hz)")
    g.add_argument("--aug_lead_dropout", type=float, default=None, help="probability of zeroing each lead")
    g.add_argument("--aug_coarse_dropout", type=float, default=None,
                   help="probability of zeroing one 10%% segment of a record across all leads")


def add_runtime(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("runtime")
    g.add_argument("--device", default="auto", choices=("auto", "cpu", "cuda", "mps"))
    g.add_argument("--precision", default="auto", choices=("auto", "fp32", "bf16"),
                   help="auto = bf16 autocast where the hardware runs it fast (CUDA, AMX/AVX512-BF16 CPUs) for "
                        "training, fp32 numerics for inference; fp32 = the exact reference path")
    g.add_argument("--num_workers", type=int, default=None, help="DataLoader workers (auto)")
    g.add_argument("--cache", default="on", choices=("on", "off"),
                   help="preprocess once into an on-disk cache (off = preprocess in the loader)")
    g.add_argument("--cache_dir", default=str(CACHE_DIR))
    g.add_argument("--cache_dtype", default="auto", choices=("auto", "float32", "float16"),
                   help="auto = float32 for fp32 runs (bit-exact), float16 for bf16 runs")
    g.add_argument("--cache_check", default="auto", choices=CACHE_CHECKS,
                   help="how the cache recognises changed files: fast = name, size, time, inode and the first and "
                        "last 4 KiB of each; full = a hash of every byte (also catches an edit in the middle that "
                        "keeps size and time); auto = full when the files total at most 1 GiB")
    g.add_argument("--deterministic", type=_bool, default=True, help="deterministic algorithms (CPU always)")
    g.add_argument("--quiet", action="store_true", help="no progress bars")
    add_trust(g)


def add_trust(g) -> None:
    g.add_argument("--trust_checkpoint", action="store_true",
                   help="load checkpoints that hold Python objects with full unpickling — this can run code: only "
                        "for files from people you trust (default: tensors and plain data only)")


def add_inference(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("inference and bad input")
    add_mode(g)
    g.add_argument("--weights", nargs="+", default=None,
                   help="checkpoint(s) or run/model folder(s) for --input; a cross-validated run folder stands for "
                        "its fold models, and all given models are averaged (an ensemble)")
    g.add_argument("--output", default=None, help="output CSV (default score/submission.csv, or predicted_age.csv "
                                                  "for --input)")
    g.add_argument("--tta", type=int, default=1, help="average over this many windows covering the record")
    g.add_argument("--bias_correction", action="store_true", help="apply the checkpoint's age-gap correction")
    g.add_argument("--infer_batch_size", "--batch_size", dest="infer_batch_size", type=int, default=None,
                   help="inference batch (default: 32 on GPUs, 8 on CPUs)")


def add_on_bad(p: argparse.ArgumentParser, choices: tuple[str, ...]) -> None:
    p.add_argument("--on_bad", default="error", choices=choices,
                   help="bad records: stop and list them (exit 2), skip them" +
                        (", or fill in the training median age" if "fill" in choices else ""))


def add_report(p: argparse.ArgumentParser) -> None:
    p.add_argument("--predictions", required=True, help="ids,predicted_age or FILENAME,AGE")
    p.add_argument("--labels", required=True, help="exams.csv, MAIC labels, PTB-XL database, any CSV, or a "
                                                   "records folder whose headers carry ages (CinC WFDB)")
    p.add_argument("--out", required=True, help="folder for report.json and the PNG plots")
    p.add_argument("--id_col", default=None, help="id column of --labels (auto for known formats)")
    p.add_argument("--age_col", default=None, help="age column of --labels (auto for known formats)")
    p.add_argument("--survival", action="store_true", help="Cox and Kaplan–Meier by age-gap group (needs death, "
                                                           "timey)")
    p.add_argument("--gap_threshold", type=float, default=8.0, help="|gap| in years defining older/younger")
    p.add_argument("--bins", default="auto", choices=("auto", "years", "months"),
                   help="per-bin edges: decades (years) or 12-month bins in months; auto = months if all ages < 10")
    p.add_argument("--run", default=None, help="training run folder: learning curves, its bias correction, and "
                                               "the figures in its TensorBoard log")
    p.add_argument("--history", default=None, help="history.csv for learning curves (default: the run's)")
    p.add_argument("--weights", default=None, help="checkpoint whose stored bias correction to report")
    p.add_argument("--n_boot", type=int, default=2000, help="bootstrap resamples for the MAE interval")
    p.add_argument("--seed", type=int, default=0)
    add_trust(p)


# ---- parsers -----------------------------------------------------------------------------------------------------
def train_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="train_interface.py", formatter_class=Formatter,
                                description="Train an age-from-ECG model (MAIC 2023, Lima et al. or modern recipe)")
    add_maic_train(p)
    add_records(p, "train on")
    add_training_data(p)
    add_model(p)
    add_training(p)
    add_augmentation(p)
    add_runtime(p)
    add_on_bad(p, ("error", "skip"))
    return p


def test_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="test_interface.py", formatter_class=Formatter,
                                description="Predict ages: a MAIC submission, or ids,predicted_age for any format")
    add_maic_test(p)
    add_records(p, "predict")
    add_inference(p)
    add_runtime(p)
    add_on_bad(p, ("error", "skip", "fill"))
    return p


def report_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="report_interface.py", formatter_class=Formatter,
                                description="Evaluate predictions: report.json, plots, bias correction, survival")
    add_report(p)
    return p


# ---- resolving defaults ------------------------------------------------------------------------------------------
def _fill_maic_paths(args: argparse.Namespace, paths: dict[str, Path], only_existing: bool) -> None:
    for key, path in paths.items():
        if getattr(args, key) is None and (path.exists() or not only_existing):
            setattr(args, key, [str(path)] if key.startswith("weights_") else str(path))


def resolve_train(args: argparse.Namespace) -> argparse.Namespace:
    """Fill every recipe-dependent default; the result is what a run saves as options.json."""
    if args.input is None:
        root = args.data_root or default_data_root()
        _fill_maic_paths(args, {f"train_for_{args.mode}": train_folder(root, args.mode),
                                f"train_for_{args.mode}_label": label_csv(root, args.mode)}, only_existing=False)
    args.arch = args.arch or ("ECGEfficientNet" if args.recipe == "modern" else MAIC_ARCH[args.mode])
    args.recipe = args.recipe if args.recipe != "auto" else \
        {"ResNet1d": "lima", "ECGEfficientNet": "modern"}.get(args.arch, "maic")
    recipe = RECIPES[args.recipe]
    for key in RECIPE_OPTIONS:
        if getattr(args, key) in ("auto", None):
            setattr(args, key, recipe[key])
    args.nepoch = args.nepoch if args.nepoch is not None else recipe["nepoch"]
    args.checkpoints = recipe["checkpoints"]
    if args.head == "sigmoid":
        head = MODE_HEADS[args.mode]
        args.age_min = head.low if args.age_min is None else args.age_min
        args.age_max = head.high if args.age_max is None else args.age_max
    args.env = args.env or args.mode
    _check_train(args)
    return args


def _check_train(args: argparse.Namespace) -> None:
    if args.batch_size < 1 or args.nepoch < 0:
        raise UserError("--batch_size must be ≥ 1 and --nepoch ≥ 0")
    if not 0.0 <= args.valid_ratio < 1.0:
        raise UserError("--valid_ratio must lie in [0, 1)")
    if args.pretrained and not args.pretrain_model_path:
        raise UserError("--pretrained needs --pretrain_model_path")
    if args.head == "sigmoid" and not args.age_max > args.age_min:
        raise UserError(f"--age_max ({args.age_max}) must be above --age_min ({args.age_min})")
    if args.max_weight <= 0:
        raise UserError("--max_weight must be positive")
    if args.folds < 1 or not 0 <= args.ema < 1 or args.crop_seconds < 0:
        raise UserError("--folds must be ≥ 1, --ema in [0, 1) and --crop_seconds ≥ 0")
    if args.sex_input and args.arch != "ECGEfficientNet":
        raise UserError("--sex_input needs --arch ECGEfficientNet (the published networks take no sex input)")
    if args.resume and args.overwrite:
        raise UserError("--resume continues a run and --overwrite starts it afresh: give one of them")
    if args.crop_seconds and args.arch == "ResNet1d":
        raise UserError("--crop_seconds needs a network that takes any length; ResNet1d takes exactly its seq_length")


def resolve_test(args: argparse.Namespace) -> argparse.Namespace:
    """MAIC paths from the data root (those that exist), default weights from the default runs' best
    checkpoints, and checks of the inference options."""
    if args.tta < 1:
        raise UserError(f"--tta must be ≥ 1 (the number of windows to average), got {args.tta}")
    if args.infer_batch_size is not None and args.infer_batch_size < 1:
        raise UserError("--infer_batch_size must be ≥ 1")
    if args.input is None:
        root = Path(args.data_root or default_data_root())
        _fill_maic_paths(args, {f"test_for_{m}": test_folder(root, m) for m in MODES}, only_existing=True)
        _fill_maic_paths(args, {"submission_template": template_csv(root)}, only_existing=True)
        args.data_root = str(root)
    _fill_maic_paths(args, {f"weights_{m}": default_weights(args, m) for m in MODES}, only_existing=True)
    return args


def parse_train(argv=None) -> argparse.Namespace:
    return resolve_train(train_parser().parse_args(argv))


def parse_test(argv=None) -> argparse.Namespace:
    return resolve_test(test_parser().parse_args(argv))


# ---- typed settings for the layers below -------------------------------------------------------------------------
def cache_config(args: argparse.Namespace, precision: str) -> CacheConfig:
    return CacheConfig(enabled=args.cache == "on", folder=Path(args.cache_dir),
                       dtype=resolve_cache_dtype(args.cache_dtype, precision), progress=not args.quiet,
                       check=args.cache_check)


# training options that say where things are or how the work is run, not what is learned: a resumed run may change
# them (the data themselves are identified by content, the pretrained checkpoint by its files)
RUNTIME_OPTIONS = frozenset({
    "data_root", "train_for_adult", "train_for_adult_label", "train_for_child", "train_for_child_label", "dataset_dir",
    "input", "labels", "log_dir", "env", "resume", "overwrite", "quiet", "num_workers", "cache", "cache_dir",
    "cache_check", "trust_checkpoint", "device", "compile", "deterministic", "infer_batch_size", "on_bad",
    "pretrain_model_path", "precision"})


def result_options(args: argparse.Namespace, precision: str) -> dict:
    """The resolved training options that change a run's result (what its manifest records): every option but
    RUNTIME_OPTIONS, with the precision actually used, the pretrained checkpoint's file identity, and the epoch count
    only where it shapes the schedule of every epoch (cosine) — a step or plateau run may be extended."""
    options = {k: v for k, v in vars(args).items() if k not in RUNTIME_OPTIONS}
    options["precision"] = precision
    options["cache_dtype"] = resolve_cache_dtype(args.cache_dtype, precision)
    if args.pretrained:
        options["pretrained"] = fingerprint_files([args.pretrain_model_path], "fast")
    if args.scheduler != "cosine":
        options.pop("nepoch")
    return json_safe(options)


def json_safe(obj):
    """As the value would read back from JSON (tuples → lists, infinities → strings)."""
    if isinstance(obj, dict):
        return {str(k): json_safe(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [json_safe(v) for v in obj]
    if isinstance(obj, float) and not math.isfinite(obj):
        return str(obj)
    return obj


def inference_config(args: argparse.Namespace, device: torch.device, precision: str, workers: int) -> InferenceConfig:
    return InferenceConfig(device=device, precision=precision, workers=workers, tta=args.tta,
                           batch_size=args.infer_batch_size or default_infer_batch(device, 32),
                           bias_correction=args.bias_correction, fast_layout=args.precision != "fp32",
                           cache=cache_config(args, precision), progress=not args.quiet)


def train_config(args: argparse.Namespace, device: torch.device, train_median_age: float) -> TrainConfig:
    return TrainConfig(nepoch=args.nepoch, lr=args.lr_initial, weight_decay=args.weight_decay,
                       optimizer=args.optimizer, loss=args.loss, scheduler=args.scheduler,
                       warmup_epochs=args.warmup_epochs, ema=args.ema, decay_epoch=args.decay_epoch,
                       decay_gamma=args.decay_gamma,
                       patience=args.patience, lr_factor=args.lr_factor, min_lr=args.min_lr,
                       best_metric=args.best_metric, checkpoints=args.checkpoints,
                       max_steps_per_epoch=args.max_steps_per_epoch,
                       compile=args.compile == "on" or (args.compile == "auto" and device.type == "cuda"),
                       sync_bn=args.sync_bn, fast_layout=args.precision != "fp32", progress=not args.quiet,
                       options={**vars(args), "train_median_age": train_median_age})


def workers(args: argparse.Namespace, default: int) -> int:
    return args.num_workers if args.num_workers is not None else default


def maic_training_paths(args: argparse.Namespace) -> tuple[str, str]:
    """(folder of .npy files, label CSV) of ``--mode`` (seed option names train_for_<mode>[_label])."""
    return getattr(args, f"train_for_{args.mode}"), getattr(args, f"train_for_{args.mode}_label")


def default_weights(args: argparse.Namespace, mode: str) -> Path:
    """The best checkpoint of the default run of ``mode`` (what test_interface uses without --weights_<mode>)."""
    return run_dir(args.log_dir, MAIC_ARCH[mode], mode) / "best.pt"


def clip_to_mode(ages, mode: str):
    """Ages inside the MAIC bounds of ``mode`` (a linear-head model could leave them)."""
    head = MODE_HEADS[mode]
    return np.clip(ages, head.low, head.high)


def augment(args: argparse.Namespace, fs: float) -> Augment | None:
    """The training augmentation of these options (None when every one is off)."""
    crop = int(round(args.crop_seconds * fs))
    settings = Augment(crop=crop, scale=args.aug_scale, noise=args.aug_noise, wander=args.aug_wander,
                       lead_dropout=args.aug_lead_dropout, coarse_dropout=args.aug_coarse_dropout, fs=fs)
    return settings if settings != Augment(fs=fs) else None
