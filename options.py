"""Every path and hyperparameter, in one parser. The defaults are the challenge entry's seed recipe.

Recipe-dependent options default to ``None``/``auto`` and are filled in by :func:`resolve`, so that
``--arch ResNet1d`` gets the Lima et al. recipe (400 Hz, weighted MSE, ReduceLROnPlateau, best-only model.pth)
and the MAIC architectures get the seed's (500 Hz, L1, StepLR, a checkpoint per epoch) unless a flag says
otherwise. The resolved options are saved next to every run's checkpoints (``options.json``).
"""
from __future__ import annotations

import argparse
import math
import os
from pathlib import Path

ROOT = Path(__file__).resolve().parent
MAIC_ARCH = {"adult": "ResDenseNet", "child": "ResUDenseNet"}
MAIC_AGE_BOUNDS = {"adult": (19.0, 122.0), "child": (0.0, 9.0)}
# stratification bins of the seed's 9:1 split: children 1-year bins 0–9, adults 10-year bins 10–130
MAIC_AGE_BINS = {"child": list(range(0, 11)), "adult": list(range(10, 140, 10))}
DEMO_ROOT = ROOT / "dataset" / "SYNTHETIC_demo_maic"

RECIPES = {
    # seed recipe of the MAIC ECG AI Challenge 2023 entry
    "maic": dict(preprocessing="maic", loss="l1", sample_weights="none", scheduler="step", nepoch=60,
                 best_metric="valid_mae", checkpoints="every_epoch", head="sigmoid"),
    # Lima et al. 2021 companion code (train.py defaults)
    "lima": dict(preprocessing="lima", loss="mse", sample_weights="inverse_age", scheduler="plateau", nepoch=70,
                 best_metric="valid_loss", checkpoints="best_only", head="linear"),
}


def _bool(text: str) -> bool:
    if str(text).lower() in ("1", "true", "yes", "on"):
        return True
    if str(text).lower() in ("0", "false", "no", "off"):
        return False
    raise argparse.ArgumentTypeError(f"expected true/false, got {text!r}")


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description="ECG-age: train and run age-from-ECG models (MAIC 2023 entry and "
                                            "Lima et al. 2021 recipes)",
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    g = p.add_argument_group("MAIC challenge data (seed option names)")
    g.add_argument("--data_root", default=None,
                   help="folder holding the MAIC layout (ECG_<mode>_numpy_train/, ECG_<mode>_age_train.csv, "
                        "ECG_<mode>_numpy_valid/, submission.csv); sets every MAIC path below that is not given")
    for mode in ("adult", "child"):
        g.add_argument(f"--train_for_{mode}", default=None, help=f"folder of {mode} training .npy files")
        g.add_argument(f"--train_for_{mode}_label", default=None, help=f"{mode} label CSV (FILENAME, GENDER, AGE)")
        g.add_argument(f"--test_for_{mode}", default=None, help=f"folder of {mode} test .npy files")
        g.add_argument(f"--weights_{mode}", default=None, help=f"{mode} checkpoint (.pt, seed .pt or model dir)")
    g.add_argument("--submission_template", default=None, help="template submission.csv (FILENAME, GENDER, AGE)")
    g.add_argument("--dataset_dir", default=str(ROOT / "dataset"), help="where train/valid dataset CSVs live")

    g = p.add_argument_group("any format (HDF5, WFDB, PTB-XL, .npy folder, manifest CSV)")
    g.add_argument("--input", default=None, help="records to train on or predict: an HDF5 file or folder, a WFDB "
                                                 "folder, a PTB-XL root or database CSV, an .npy folder or a "
                                                 "manifest CSV (path, age)")
    g.add_argument("--labels", default=None, help="label CSV for --input (CODE-15%% exams.csv or MAIC labels)")
    g.add_argument("--weights", default=None, help="checkpoint or published model folder for --input")
    g.add_argument("--fs", type=float, default=None, help="sampling rate of --input records whose format does not "
                                                          "store it (.npy); default 500 (MAIC)")
    g.add_argument("--ptbxl_rate", type=int, default=500, choices=(100, 500), help="PTB-XL records to read")
    g.add_argument("--input_scale", type=float, default=1.0, help="multiply .npy/HDF5 amplitudes by this to get mV")
    g.add_argument("--traces_dset", default="tracings", help="HDF5 dataset holding the tracings")
    g.add_argument("--ids_dset", default="exam_id", help="HDF5 dataset holding the ids ('' = row numbers)")
    g.add_argument("--split", default="auto", choices=("auto", "stratified", "patient", "strat_fold"),
                   help="train/valid split: stratified by age bin (MAIC), by patient (no patient in two splits), "
                        "or PTB-XL strat_fold (1–8 train, 9 valid, 10 test); auto = patient when ids exist")
    g.add_argument("--valid_ratio", type=float, default=0.1, help="share of records (or patients) for validation")

    g = p.add_argument_group("model")
    g.add_argument("--mode", default="adult", choices=("adult", "child"))
    g.add_argument("--arch", default=None, choices=("ResDenseNet", "ResUDenseNet", "ResNet1d"),
                   help="default: ResDenseNet for adult, ResUDenseNet for child")
    g.add_argument("--recipe", default="auto", choices=("auto", "maic", "lima"),
                   help="training recipe; auto = lima for ResNet1d, maic otherwise")
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
    g.add_argument("--preprocessing", default="auto", choices=("auto", "maic", "lima"))
    g.add_argument("--sample_rate", type=float, default=None, help="model's sampling rate (500 MAIC, 400 Lima)")
    g.add_argument("--seq_length", type=int, default=None, help="model's input length in samples (4096)")

    g = p.add_argument_group("training")
    g.add_argument("--batch_size", type=int, default=32, help="global batch size (all processes together)")
    g.add_argument("--nepoch", type=int, default=None, help="epochs (60 MAIC, 70 Lima)")
    g.add_argument("--lr_initial", type=float, default=1e-3)
    g.add_argument("--weight_decay", type=float, default=0.0)
    g.add_argument("--scheduler", default="auto", choices=("auto", "step", "plateau"))
    g.add_argument("--decay_epoch", type=int, default=20, help="StepLR step size (epochs)")
    g.add_argument("--decay_gamma", type=float, default=0.1, help="StepLR factor")
    g.add_argument("--patience", type=int, default=7, help="ReduceLROnPlateau patience")
    g.add_argument("--lr_factor", type=float, default=0.1, help="ReduceLROnPlateau factor")
    g.add_argument("--min_lr", type=float, default=1e-7, help="ReduceLROnPlateau: stop once lr falls below")
    g.add_argument("--loss", default="auto", choices=("auto", "l1", "mse"))
    g.add_argument("--sample_weights", default="auto", choices=("auto", "none", "inverse_age"),
                   help="inverse-frequency weights per integer age, mean 1 (Lima et al.)")
    g.add_argument("--max_weight", type=float, default=math.inf, help="cap of the inverse-age weights")
    g.add_argument("--best_metric", default="auto", choices=("auto", "valid_mae", "valid_loss"))
    g.add_argument("--max_steps_per_epoch", type=int, default=0, help="cap train steps per epoch (0 = all)")
    g.add_argument("--seed", type=int, default=1234)
    g.add_argument("--env", default=None, help="run name: outputs go to <log_dir>/<arch>_<env>/ (default: mode)")
    g.add_argument("--log_dir", default=str(ROOT / "log"))
    g.add_argument("--pretrained", action="store_true", help="start from --pretrain_model_path (weights, optimizer "
                                                             "and epoch when present)")
    g.add_argument("--pretrain_model_path", default=None)
    g.add_argument("--resume", action="store_true", help="continue this run from its last complete epoch")
    g.add_argument("--sync_bn", action="store_true", help="SyncBatchNorm across processes (GPU, torchrun)")

    g = p.add_argument_group("runtime")
    g.add_argument("--device", default="auto", choices=("auto", "cpu", "cuda", "mps"))
    g.add_argument("--precision", default="auto", choices=("auto", "fp32", "bf16"),
                   help="auto = bf16 autocast where the hardware runs it fast (CUDA, AMX/AVX512-BF16 CPUs)")
    g.add_argument("--num_workers", type=int, default=None, help="DataLoader workers (auto)")
    g.add_argument("--compile", default="auto", choices=("auto", "on", "off"),
                   help="torch.compile the model (auto = on CUDA only)")
    g.add_argument("--cache", default="on", choices=("on", "off"),
                   help="preprocess once into an on-disk cache (off = preprocess in the loader)")
    g.add_argument("--cache_dir", default=str(ROOT / "cache"))
    g.add_argument("--cache_dtype", default="auto", choices=("auto", "float32", "float16"),
                   help="auto = float32 for fp32 runs (bit-exact), float16 for bf16 runs")
    g.add_argument("--deterministic", type=_bool, default=True, help="deterministic algorithms (CPU always)")
    g.add_argument("--quiet", action="store_true", help="no progress bars")

    g = p.add_argument_group("inference and bad input")
    g.add_argument("--output", default=None, help="output CSV (default score/submission.csv, or "
                                                  "predicted_age.csv for --input)")
    g.add_argument("--tta", type=int, default=1, help="average over this many windows covering the record")
    g.add_argument("--bias_correction", action="store_true", help="apply the checkpoint's age-gap correction")
    g.add_argument("--on_bad", default="error", choices=("error", "skip", "fill"),
                   help="bad records: stop and list them (exit 2), skip them, or (submission) fill the "
                        "training median")
    g.add_argument("--infer_batch_size", type=int, default=None,
                   help="inference batch (default: 4×batch_size on GPUs, 8 on CPUs)")
    return p


def maic_paths(root: str | os.PathLike, mode: str) -> dict:
    root = Path(root)
    return {f"train_for_{mode}": root / f"ECG_{mode}_numpy_train",
            f"train_for_{mode}_label": root / f"ECG_{mode}_age_train.csv",
            f"test_for_{mode}": root / f"ECG_{mode}_numpy_valid"}


def resolve(args: argparse.Namespace) -> argparse.Namespace:
    """Fill every recipe-dependent default; the result is what a run saves as options.json."""
    if args.data_root:
        for mode in ("adult", "child"):
            for key, value in maic_paths(args.data_root, mode).items():
                if getattr(args, key) is None:
                    setattr(args, key, str(value))
        if args.submission_template is None:
            args.submission_template = str(Path(args.data_root) / "submission.csv")
    args.arch = args.arch or MAIC_ARCH[args.mode]
    recipe_name = args.recipe if args.recipe != "auto" else ("lima" if args.arch == "ResNet1d" else "maic")
    args.recipe = recipe_name
    recipe = RECIPES[recipe_name]
    for key in ("loss", "sample_weights", "scheduler", "best_metric", "head", "preprocessing"):
        if getattr(args, key) == "auto":
            setattr(args, key, recipe[key])
    args.nepoch = args.nepoch if args.nepoch is not None else recipe["nepoch"]
    args.checkpoints = recipe["checkpoints"]
    if args.head == "sigmoid":
        low, high = MAIC_AGE_BOUNDS[args.mode]
        args.age_min = low if args.age_min is None else args.age_min
        args.age_max = high if args.age_max is None else args.age_max
    args.env = args.env or args.mode
    if args.batch_size < 1 or args.nepoch < 0:
        raise SystemExit("error: --batch_size must be ≥ 1 and --nepoch ≥ 0")
    if not 0.0 <= args.valid_ratio < 1.0:
        raise SystemExit("error: --valid_ratio must lie in [0, 1)")
    if args.pretrained and not args.pretrain_model_path:
        raise SystemExit("error: --pretrained needs --pretrain_model_path")
    return args


def parse(argv=None) -> argparse.Namespace:
    return resolve(build_parser().parse_args(argv))


def run_dir(args: argparse.Namespace) -> Path:
    return Path(args.log_dir) / f"{args.arch}_{args.env}"
