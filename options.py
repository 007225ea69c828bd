"""Command-line options: shared argument groups, one parser per program, and the typed settings derived from them.

Each program builds its parser from the groups it actually reads (``train_parser``, ``test_parser``,
``report_parser``), so an option a program does not use is an argparse error rather than silently ignored. The
option names are the challenge entry's seed names plus this project's. The training recipe options are generated
from the recipe table (engine/recipes.py): one option per ``Recipe`` field, default ``None`` (= the chosen
recipe's value, filled by :func:`resolve_train`); an architecture's default recipe comes from the model registry
(ResNet1d → Lima et al., ECGEfficientNet → modern, the MAIC networks → the seed's). The resolved options are saved
next to every run's checkpoints (``options.json``) as provenance; checkpoints keep their own schema.
"""
from __future__ import annotations

import argparse
import dataclasses
import re
import typing
from pathlib import Path
from typing import TYPE_CHECKING

from dataloader.formats import INPUT_FORMATS
from dataloader.maic import label_csv, template_csv, test_folder, train_folder
from dataloader.records import CACHE_CHECKS
from engine.predict.explain import DEFAULT_METHOD, METHODS
from engine.predict.predictor import ENGINES
from engine.runs import BEST, run_dir
from models.schema import MAIC_MODES, MODES
from utils.bounds import MAX_TTA
from utils.calibration import check_level
from utils.errors import UserError
from utils.paths import CACHE_DIR, DATA_ROOT_ENV, DATASET_DIR, LOG_DIR, default_data_root

if TYPE_CHECKING:  # the PyTorch side is imported where it is used: parsing test options needs no torch (ONNX path)

    pass

Formatter = argparse.ArgumentDefaultsHelpFormatter


def _bool(text: str) -> bool:
    if str(text).lower() in ("1", "true", "yes", "on"):
        return True
    if str(text).lower() in ("0", "false", "no", "off"):
        return False
    raise argparse.ArgumentTypeError(f"expected true/false, got {text!r}")


# ---- argument groups -------------------------------------------------------------------------------------------
def _threads(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value < 1:
        raise argparse.ArgumentTypeError(f"a number of threads is a whole number ≥ 1, got {text!r}")
    return value


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
                            f"<log_dir>/{MAIC_MODES[mode].arch}_{mode}/best.pt")
    g.add_argument("--submission_template", default=None, help="template submission.csv (FILENAME, GENDER, AGE)")
    g.add_argument("--log_dir", default=str(LOG_DIR), help="where the default runs' checkpoints are")


def add_records(p: argparse.ArgumentParser, what: str) -> None:
    g = p.add_argument_group("any format (HDF5, WFDB, PTB-XL, .npy folder, manifest CSV, DICOM, GE MUSE XML, HL7 "
                             "aECG, Philips XML, SCP-ECG, EDF)")
    g.add_argument("--input", default=None, help=f"records to {what}: an HDF5 file or folder, a WFDB folder, a "
                                                 f"PTB-XL root or database CSV, an .npy folder, a manifest CSV, or "
                                                 f"clinical ECG files (one, or a folder of any mix)")
    g.add_argument("--format", dest="input_format", default="auto", choices=INPUT_FORMATS,
                   help="the format of --input (default: found from the path and the files' content)")
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
    from engine.train.recipes import RECIPES
    from models.registry import MODELS, model_options

    g = p.add_argument_group("model")
    add_mode(g)
    g.add_argument("--arch", default=None, choices=tuple(MODELS),
                   help="default: ECGEfficientNet for --recipe modern, else ResDenseNet (adult) / ResUDenseNet (child)")
    g.add_argument("--recipe", default="auto", choices=("auto", *RECIPES),
                   help="training recipe; auto = lima for ResNet1d, modern for ECGEfficientNet, maic otherwise")
    for option in model_options():  # each architecture's own options (models/registry.py)
        if option.flag:
            g.add_argument(f"--{option.name}", action="store_true", help=option.help)
        else:
            g.add_argument(f"--{option.name}", type=option.type, nargs=option.nargs, choices=option.choices,
                           default=None, help=option.help)
    g.add_argument("--age_min", type=float, default=None, help="lower bound of the sigmoid head (19 / 0)")
    g.add_argument("--age_max", type=float, default=None, help="upper bound of the sigmoid head (122 / 9)")
    g.add_argument("--zscore", default="auto", choices=("auto", "on", "off"),
                   help="z-score each lead (auto: as the preprocessing; off keeps amplitudes in mV)")
    g.add_argument("--sample_rate", type=float, default=None, help="model's sampling rate (500 MAIC, 400 Lima)")
    g.add_argument("--seq_length", type=int, default=None, help="model's input length in samples (4096)")


def add_recipe(p: argparse.ArgumentParser) -> None:
    """One option per field of engine.recipes.Recipe: default None = the chosen recipe's value ('auto' says the
    same for the options that had it); --help lists every recipe's."""
    from engine.train.recipes import RECIPES, Recipe

    g = p.add_argument_group("recipe (every option defaults to the chosen --recipe's value)")
    types = typing.get_type_hints(Recipe)
    for field in dataclasses.fields(Recipe):
        values = ", ".join(f"{name} {getattr(recipe, field.name)}" for name, recipe in RECIPES.items())
        choices = field.metadata["choices"]
        g.add_argument(f"--{field.name}", type=types[field.name], default=None,
                       choices=None if choices is None else ("auto", *choices),
                       help=f"{field.metadata['help']} ({values})".replace("%", "%%"))


def add_training(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("training")
    g.add_argument("--folds", type=int, default=1,
                   help="K > 1: train K models on K patient-level folds (age-stratified where there are no patient "
                        "ids, as MAIC), each validated on its held-out fold; writes oof.csv and cv.json and the "
                        "fold models in fold_<k>/ (test_interface --weights RUN_DIR averages them)")
    g.add_argument("--max_steps_per_epoch", type=int, default=0, help="cap train steps per epoch (0 = all)")
    g.add_argument("--infer_batch_size", type=int, default=None,
                   help="validation and out-of-fold prediction batch (default: 4×batch_size on GPUs, 8 on CPUs)")
    g.add_argument("--seed", type=int, default=1234, help="random seed (initialisation, batch order, augmentation)")
    g.add_argument("--split_seed", type=int, default=None,
                   help="random seed of the train/valid split or the folds (default: --seed); runs that differ only "
                        "in --seed but share it are compared on identical folds")
    g.add_argument("--env", default=None, help="run name: outputs go to <log_dir>/<arch>_<env>/ (default: the MAIC "
                                                "mode, or the name of --input)")
    g.add_argument("--log_dir", default=str(LOG_DIR))
    g.add_argument("--pretrained", action="store_true", help="start from --pretrain_model_path (weights, optimizer "
                                                             "and epoch when present)")
    g.add_argument("--pretrain_model_path", default=None)
    g.add_argument("--teacher", nargs="+", default=None, metavar="RUN",
                   help="distil: train one network (ECGEfficientNet, modern recipe, unless --arch/--recipe say "
                        "otherwise) towards the age these models give (anything --weights takes; a K-fold run with "
                        "--folds K: fold k's student learns from fold k's teachers only, on the same folds)")
    g.add_argument("--resume", action="store_true",
                   help="continue this run from its last complete epoch; refused (naming each difference) unless "
                        "every option that changes the result, the data and the split are the run's own")
    g.add_argument("--overwrite", action="store_true",
                   help="start afresh in a run folder that holds an earlier experiment: its checkpoints, histories, "
                        "fold members and out-of-fold results are removed first (without it such a run is refused)")
    g.add_argument("--sync_bn", action="store_true", help="SyncBatchNorm across processes (GPU, torchrun)")
    g.add_argument("--compile", default="auto", choices=("auto", "on", "off"),
                   help="torch.compile the model (auto = on CUDA only)")


def add_runtime(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("runtime")
    g.add_argument("--device", default="auto", choices=("auto", "cpu", "cuda", "mps"))
    g.add_argument("--precision", default="auto", choices=("auto", "fp32", "bf16"),
                   help="auto = bf16 autocast where the hardware runs it fast (CUDA, AMX/AVX512-BF16 CPUs) for "
                        "training, fp32 numerics for inference; fp32 = the exact reference path")
    g.add_argument("--num_workers", type=int, default=None, help="DataLoader workers (auto)")
    g.add_argument("--threads", type=_threads, default=None,
                   help="CPU threads the model runs on: onnxruntime's intra-op threads, PyTorch's "
                        "torch.set_num_threads (default: onnxruntime takes the cores the preprocessing workers "
                        "leave, PyTorch its own choice)")
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
    g.add_argument("--quiet", action="store_true", help="no progress bars or notes: results (epoch metrics, files "
                                                        "written), warnings and errors only")
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
    g.add_argument("--engine", default="auto", choices=ENGINES,
                   help="auto: onnxruntime for an .onnx file, PyTorch for checkpoints; onnxruntime: export the "
                        "checkpoints in memory (checked on the first records) and run the export")
    g.add_argument("--tta", type=int, default=1, help="average over this many windows covering the record (at most "
                                                       f"{MAX_TTA})")
    g.add_argument("--bias_correction", action="store_true", help="apply the checkpoint's age-gap correction")
    g.add_argument("--infer_batch_size", "--batch_size", dest="infer_batch_size", type=int, default=None,
                   help="inference batch (default: 32 on GPUs, 8 on CPUs)")


def level_argument(text: str) -> float:
    try:
        return check_level(float(text))
    except ValueError:
        raise argparse.ArgumentTypeError(f"an interval level is a probability strictly between 0 and 1 (e.g. 0.9), "
                                         f"got {text!r}") from None


def add_trust_outputs(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("intervals and explanations (--input)")
    g.add_argument("--interval", type=level_argument, default=None, metavar="LEVEL",
                   help="add columns lower,upper: a calibrated interval holding the age with probability LEVEL "
                        "(e.g. 0.9), from the model's held-out residuals (split conformal)")
    g.add_argument("--explain", default=None, metavar="DIR",
                   help="write DIR/lead_importance.csv (each lead's share of the attribution) and DIR/<id>.png (the "
                        "12-lead ECG shaded by attribution)")
    g.add_argument("--explain_method", default=DEFAULT_METHOD, choices=METHODS,
                   help="attribution method (captum); the default is the one the deletion test measured more "
                        "faithful (bench/README.md)")
    g.add_argument("--explain_figures", type=int, default=None, metavar="N",
                   help="draw the figure of the first N explained records only (default: every one)")


def add_on_bad(p: argparse.ArgumentParser, choices: tuple[str, ...]) -> None:
    p.add_argument("--on_bad", default="error", choices=choices,
                   help="bad records: stop and list them (exit 2), skip them" +
                        (", or fill in the training median age" if "fill" in choices else ""))


def add_report(p: argparse.ArgumentParser) -> None:
    p.add_argument("--predictions", required=True, help="ids,predicted_age or FILENAME,AGE")
    p.add_argument("--labels", required=True, help="exams.csv, MAIC labels, PTB-XL database, any CSV, or a "
                                                   "records folder whose headers carry ages (CinC WFDB)")
    p.add_argument("--out", required=True, help="folder for report.html (the page to open), report.json and the "
                                                "PNG plots")
    p.add_argument("--id_col", default=None, help="id column of --labels (auto for known formats)")
    p.add_argument("--age_col", default=None, help="age column of --labels (auto for known formats)")
    p.add_argument("--survival", action="store_true", help="Cox and Kaplan–Meier by age-gap group (needs death, "
                                                           "timey)")
    p.add_argument("--gap_threshold", type=float, default=8.0, help="|gap| in years defining older/younger")
    p.add_argument("--gap_groups", default="threshold", choices=("threshold", "interval"),
                   help="--survival groups: the paper's ±--gap_threshold years, or a significant gap (the age "
                        "outside the prediction's interval: needs predictions with lower,upper)")
    p.add_argument("--interval", type=level_argument, default=None, metavar="LEVEL",
                   help="level of the predictions' lower,upper (default: read from the predictions' .json beside "
                        "them, written by test_interface)")
    p.add_argument("--explanations", default=None, metavar="DIR",
                   help="the folder test_interface --explain wrote: report.html gets one card per explained ECG "
                        "(its age, interval, gap, lead shares and 12-lead figure)")
    p.add_argument("--lead_importance", default=None, metavar="CSV",
                   help="lead_importance.csv of test_interface --explain: mean share per lead over the cohort")
    p.add_argument("--bins", default="auto", choices=("auto", "years", "months"),
                   help="per-bin edges: decades (years) or 12-month bins in months; auto = months if all ages < 10")
    p.add_argument("--run", default=None, help="training run folder: learning curves, its bias correction, and "
                                               "the figures in its TensorBoard log")
    p.add_argument("--history", default=None, help="history.csv for learning curves (default: the run's)")
    p.add_argument("--weights", default=None, help="checkpoint whose stored bias correction to report")
    p.add_argument("--n_boot", type=int, default=2000, help="bootstrap resamples for the MAE interval")
    p.add_argument("--seed", type=int, default=0, help="random seed of the bootstrap")
    p.add_argument("--quiet", action="store_true", help="results, warnings and errors only")
    add_trust(p)


# ---- parsers -----------------------------------------------------------------------------------------------------
def train_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="train_interface.py", formatter_class=Formatter,
                                description="Train an age-from-ECG model (MAIC 2023, Lima et al. or modern recipe)")
    add_maic_train(p)
    add_records(p, "train on")
    add_training_data(p)
    add_model(p)
    add_recipe(p)
    add_training(p)
    add_runtime(p)
    add_on_bad(p, ("error", "skip"))
    return p


def test_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="test_interface.py", formatter_class=Formatter,
                                description="Predict ages: a MAIC submission, or ids,predicted_age for any format")
    add_maic_test(p)
    add_records(p, "predict")
    add_inference(p)
    add_trust_outputs(p)
    add_runtime(p)
    add_on_bad(p, ("error", "skip", "fill"))
    return p


def export_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="export_interface.py", formatter_class=Formatter,
                                description="Export a model or an ensemble to one ONNX file (checked on export)")
    p.add_argument("--weights", nargs="+", required=True,
                   help="checkpoint(s) or run/model folder(s); a cross-validated run folder stands for its fold "
                        "models, and several become one graph (an ensemble)")
    p.add_argument("--output", required=True, help="the .onnx file to write")
    p.add_argument("--check_input", default=None,
                   help="records (any readable format) the export is checked on (default: simulated ECGs)")
    p.add_argument("--check_records", type=int, default=16, help="how many usable records of --check_input")
    p.add_argument("--format", dest="input_format", default="auto", choices=INPUT_FORMATS,
                   help="format of --check_input and --calibration_input (auto: found from their content)")
    p.add_argument("--quantize", default="none", choices=("none", "int8"),
                   help="int8: write a statically quantized (QDQ) graph for CPUs with VNNI or AMX, checked against "
                        "the fp32 export on the check records (mean |Δ age| ≤ 0.1 y, max ≤ 0.5 y)")
    p.add_argument("--calibration_input", default=None,
                   help="records whose activations set the int8 ranges (default: the records the first model was "
                        "trained on, from its options.json)")
    p.add_argument("--calibration_records", type=int, default=64, help="how many usable calibration records")
    add_mode(p)
    add_trust(p)
    p.add_argument("--quiet", action="store_true", help="results, warnings and errors only")
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
    """Fill every recipe-dependent default from the recipe table; the result is what a run saves as
    options.json."""
    from engine.train.experiment import check_settings
    from engine.train.recipes import MODELS_PER_FOLD, RECIPES, Recipe
    from models.build import sigmoid_bounds
    from models.registry import architecture_of_recipe, default_recipe

    if args.input is None:
        root = args.data_root or default_data_root()
        _fill_maic_paths(args, {f"train_for_{args.mode}": train_folder(root, args.mode),
                                f"train_for_{args.mode}_label": label_csv(root, args.mode)}, only_existing=False)
    if args.teacher and args.arch is None and args.recipe == "auto":  # a distilled network: modern by default
        args.recipe = "modern"
    if args.teacher and args.partner in ("auto", None):  # one network per fold
        args.partner = "none"
    args.arch = args.arch or (architecture_of_recipe(args.recipe) if args.recipe != "auto" else None) or \
        MAIC_MODES[args.mode].arch
    args.recipe = args.recipe if args.recipe != "auto" else default_recipe(args.arch)
    recipe = RECIPES[args.recipe]
    fields = dataclasses.fields(Recipe)
    given = [f.name for f in fields if getattr(args, f.name) not in ("auto", None)]
    args.recipe_given = sorted(set(given) - set(MODELS_PER_FOLD))  # what a partner keeps (not the run's members)
    if args.folds == 1:  # the recipe's models per fold are for cross-validated runs
        args.seeds = 1 if args.seeds is None else args.seeds
        args.partner = "none" if args.partner in ("auto", None) else args.partner
    if args.partner == "none" and args.partners is None:  # no partner: none of its models
        args.partners = 1
    for field in fields:
        if getattr(args, field.name) in ("auto", None):
            setattr(args, field.name, getattr(recipe, field.name))
    if args.head == "sigmoid":  # a sigmoid head's bounds: the mode's unless given
        args.age_min, args.age_max = sigmoid_bounds(args.mode, args.age_min, args.age_max)
    args.env = args.env or (args.mode if args.input is None else input_name(args.input))
    args.split_seed = args.seed if args.split_seed is None else args.split_seed
    check_settings(train_settings(args))
    return args


def input_name(path: str) -> str:
    """A run name from ``--input``: its folder or file name (without suffix), e.g. ptbxl for /data/ptbxl."""
    name = Path(path).resolve()
    name = name.parent.name if name.name == "ptbxl_database.csv" else \
        (name.stem if name.suffix and not name.is_dir() else name.name)
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", name).strip("._") or "input"


def resolve_test(args: argparse.Namespace) -> argparse.Namespace:
    """MAIC paths from the data root (those that exist), default weights from the default runs' best
    checkpoints, and checks of the inference options."""
    if not 1 <= args.tta <= MAX_TTA:
        raise UserError(f"--tta must be ≥ 1 and ≤ {MAX_TTA} (the number of windows to average, each one more "
                        f"forward pass), got {args.tta}")
    if args.infer_batch_size is not None and args.infer_batch_size < 1:
        raise UserError("--infer_batch_size must be ≥ 1")
    if args.explain_figures is not None and args.explain_figures < 0:
        raise UserError("--explain_figures must be ≥ 0")
    if args.input is None and (args.interval is not None or args.explain is not None):
        raise UserError("--interval and --explain need --input: the MAIC submission keeps its template columns "
                        "(predict the same folder with --input DIR --weights ... for intervals and explanations)")
    if args.input is None:
        root = Path(args.data_root or default_data_root())
        _fill_maic_paths(args, {f"test_for_{m}": test_folder(root, m) for m in MODES}, only_existing=True)
        _fill_maic_paths(args, {"submission_template": template_csv(root)}, only_existing=True)
        args.data_root = str(root)
        _fill_maic_paths(args, {f"weights_{m}": default_weights(args.log_dir, m) for m in MODES}, only_existing=True)
    return args


def train_settings(args: argparse.Namespace):
    """The typed settings of a training run (engine.experiment.TrainSettings) from its resolved options."""
    from engine.train.experiment import TrainSettings

    return TrainSettings.from_options(vars(args))


def parse_train(argv=None) -> argparse.Namespace:
    return resolve_train(train_parser().parse_args(argv))


def parse_test(argv=None) -> argparse.Namespace:
    return resolve_test(test_parser().parse_args(argv))


# ---- defaults ----------------------------------------------------------------------------------------------------
def default_weights(log_dir: str, mode: str) -> Path:
    """The best checkpoint of the default run of ``mode`` (what test_interface uses without --weights_<mode>)."""
    return run_dir(log_dir, MAIC_MODES[mode].arch, mode) / BEST
