"""Predict ages: a MAIC submission, or ``ids,predicted_age`` for any supported format.

    # MAIC: fill every row of the template (adult rows with the adult model, child rows with the child model)
    python test_interface.py            # data/maic2023 and the default runs' best checkpoints → score/submission.csv
    python test_interface.py --test_for_adult DIR --test_for_child DIR --submission_template CSV \
        --weights_adult CKPT --weights_child CKPT --output score/submission.csv --device cpu --precision fp32

    # any format (HDF5, WFDB folder, PTB-XL root/CSV, .npy folder, manifest CSV, clinical exports); output columns
    # ids,predicted_age (+ lower,upper with --interval), and <output>.json saying how they were made
    python test_interface.py --input exams_part0.hdf5 --weights model_dir/ --output predicted_age.csv
    python test_interface.py --input DIR --weights RUN --interval 0.9 --explain expl/   # intervals, explanations

A checkpoint is this project's .pt, the seed's .pt or a published model folder (model.pth + config.json); its own
preprocessing is applied. Nothing is written unless every requested row gets a finite age.
"""
from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd

import options as opts
from dataloader.formats import open_reader
from dataloader.labels import normalise_sex, sex_codes
from dataloader.maic import assign_rows, read_template, template_ids
from dataloader.records import NpyFolderReader, Reader
from dataloader.sources import apply_policy, duplicate_ids, implausible_outputs
from engine.explain import check_explain_folder, write_explanations
from engine.predictor import Predictor, is_onnx, load_predictor, records_of
from engine.runs import run_folders, run_members
from models.files import resolve_weights
from models.schema import MODES, UNKNOWN_SEX, maic_mode
from utils.bounds import AGE_RANGE, age_problem
from utils.cli import RESULT, configure_logging, run_main
from utils.errors import BadInputError, CheckpointError, RecordError, UserError
from utils.io import check_output_path, check_spreadsheet_safe, write_csv, write_json
from utils.paths import DATA_ROOT_ENV, PREDICTIONS, SUBMISSION, prediction_notes

if TYPE_CHECKING:  # the PyTorch side is imported only where PyTorch models run (an ONNX file needs no torch)
    from engine.inference import InferenceConfig
    from models.checkpoint import ModelBundle

HINT = ("Fix or remove them, or pass --on_bad skip (leave them out) or --on_bad fill (write the training median) "
        "to continue.")


logger = logging.getLogger("test")


def median_fill(stored: float | None, fallback: np.ndarray) -> float:
    """The training median age stored with the model (or, for foreign checkpoints, the median plausible
    prediction)."""
    if stored is not None:
        return stored
    plausible = fallback[[age_problem(a) is None for a in fallback]] if len(fallback) else fallback
    return float(np.median(plausible)) if len(plausible) else float("nan")


def apply_output_policy(ages: np.ndarray, ids: list[str], bad: dict, on_bad: str, models: Predictor,
                        what: str) -> tuple[np.ndarray, np.ndarray]:
    """Apply the bad-record policy to bad input and implausible output; returns (positions to write, those of
    them filled with the training median under 'fill' — ages filled in place). An id listed twice can never be
    written (it would name two rows)."""
    bad = {**bad, **implausible_outputs(ages, ids, bad, models.source)}
    repeated = duplicate_ids(pd.DataFrame({"id": ids}))
    if on_bad == "fill" and repeated:
        raise BadInputError([f"{rid}: {reason}" for rid, reason in repeated.items()],
                            "--on_bad fill cannot fill them: each id is written once. Rename the records, or use "
                            "--on_bad skip to leave them out.")
    keep = apply_policy(bad, ids, "skip" if on_bad == "fill" else on_bad, what, hint=HINT)
    filled = np.zeros(0, dtype=np.int64)
    if on_bad == "fill" and len(keep) < len(ids):
        fill = median_fill(models.median_age, ages[keep])
        if not np.isfinite(fill):
            raise BadInputError([f"{ids[i]}: {bad[ids[i]]}" for i in range(len(ids)) if ids[i] in bad],
                                "--on_bad fill needs the training median age, which this model does not store, "
                                "nor is any other record's age plausible; use --on_bad skip.")
        filled = np.setdiff1d(np.arange(len(ids)), keep)
        ages[filled] = fill
        logger.warning(f"--on_bad fill: wrote the training median {fill:.2f} for {len(filled)} bad record(s)")
        keep = np.arange(len(ids))
    return keep, filled


def load_models(weights: list[str], mode: str, args: argparse.Namespace, reader: Reader) -> Predictor:
    """Every model ``weights`` stands for (a run folder: exactly the members its manifest names) on --engine."""
    return load_predictor(weights, mode=mode, trust=args.trust_checkpoint, engine=args.engine,
                          check=records_of(reader))


def sex_of(reader: Reader) -> np.ndarray:
    return sex_codes(reader.table["sex"]) if "sex" in reader.table.columns else \
        np.full(len(reader), UNKNOWN_SEX, np.float32)


def predict_for(models: Predictor, reader: Reader, args: argparse.Namespace, cfg: InferenceConfig,
                what: str) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(ages, positions to write, positions filled) of ``reader``'s records with ``models`` (averaged)."""
    logger.info(f"{what}: {models.describe()}, {len(reader)} {reader.format} record(s)" +
                (f"; device {cfg.device}, {cfg.precision}" if models.engine == "torch" else ""))
    engine_cfg = opts.onnx_config(args) if models.engine == "onnxruntime" else cfg  # onnxruntime's own batch
    ages, bad = models.predict_records(reader, engine_cfg, sex_of(reader))
    return ages, *apply_output_policy(ages, reader.ids, bad, args.on_bad, models, what)


def check_output(outputs: list[Path], ids, read_files: list, input_folders: list, weights: list) -> None:
    """Before any work: the ids can be written safely, and every output is a regular file that replaces nothing
    this run reads (records, labels, template, weights) and lies in no input folder."""
    check_spreadsheet_safe(ids, "record id(s)")
    weight_files = []
    for path in (m for w in weights for m in run_members(w)):
        try:
            weight_files.extend(f for f in resolve_weights(Path(path)) if f is not None)
        except CheckpointError:
            weight_files.append(path)  # missing: load_bundle says so
    for output in outputs:
        check_output_path(output, [*read_files, *weights, *weight_files], input_folders)


# ---- any format → ids,predicted_age ------------------------------------------------------------------------------
def run_records(args: argparse.Namespace, cfg: InferenceConfig) -> Path:
    weights = args.weights or getattr(args, f"weights_{args.mode}")
    if weights is None:
        found = run_folders(args.log_dir)
        raise UserError("--input needs --weights: a checkpoint, a run folder or a published model folder" + (
            f"; the run folders in {args.log_dir} are: {', '.join(map(str, found))}" if found else
            f" (there are no run folders in {args.log_dir})"))
    reader = open_reader(args.input, fs=args.fs, ptbxl_rate=args.ptbxl_rate, scale=args.input_scale,
                         traces_dset=args.traces_dset, ids_dset=args.ids_dset, fmt=args.input_format)
    if len(reader) == 0:
        raise UserError(f"{args.input} holds no records")
    output = Path(args.output or PREDICTIONS)
    check_output([output, prediction_notes(output)], reader.ids, [args.input, *reader.files()], [args.input], weights)
    if args.explain:
        check_explain_folder(Path(args.explain), [args.input, *reader.files(), output], [args.input])
    models = load_models(weights, args.mode, args, reader)
    if args.explain and not models.bundles:
        raise UserError(f"--explain needs the PyTorch checkpoints (the attributions are captum's); {models.source} "
                        f"is an ONNX export")
    intervals = models.intervals(args.interval, cfg.bias_correction) if args.interval else None
    ages, keep, filled = predict_for(models, reader, args, cfg, "the predictions")
    frame = pd.DataFrame({"ids": [reader.ids[i] for i in keep], "predicted_age": ages[keep]})
    notes = {"weights": [str(w) for w in weights], "models": [m[0] for m in models.members()],
             "engine": models.engine, "tta": cfg.tta, "bias_correction": cfg.bias_correction,
             "filled": [reader.ids[i] for i in filled]}
    if intervals is not None:
        lower, upper = intervals(ages[keep])
        unknown = np.isin(keep, filled)  # a filled-in median is no prediction: its interval is every plausible age
        frame["lower"], frame["upper"] = np.where(unknown, AGE_RANGE[0], lower), np.where(unknown, AGE_RANGE[1], upper)
        notes["interval"] = intervals.describe()
        logger.log(RESULT, f"{intervals.level:g} intervals: {len(intervals.half_width)} band(s) of predicted age, "
                           f"half-widths {', '.join(f'{r:.1f}' for r in intervals.half_width)} years")
    write_csv(output, frame)  # the predictions first: explanations may take hours, and resume
    write_json(prediction_notes(output), notes)
    if args.explain:
        explain(args, cfg, models.bundles, reader, frame, keep, filled, intervals)
    return output


def explain(args: argparse.Namespace, cfg: InferenceConfig, bundles: list[ModelBundle], reader: Reader,
            frame: pd.DataFrame, keep: np.ndarray, filled: np.ndarray, intervals) -> None:
    """--explain DIR: every written record but the filled ones, titled with its age (and interval)."""
    chosen = np.flatnonzero(~np.isin(keep, filled))
    sex = sex_of(reader)
    known = pd.to_numeric(reader.table["age"], errors="coerce").to_numpy(float) if "age" in reader.table.columns \
        else np.full(len(reader), np.nan)
    titles = []
    for row in chosen:
        position, line = keep[row], frame.iloc[row]
        title = f"{line['ids']}: predicted age {line['predicted_age']:.1f} y"
        if intervals is not None:
            title += f" ({intervals.level:.0%} interval {line['lower']:.1f}–{line['upper']:.1f} y)"
        if np.isfinite(known[position]):
            title += f"; age on record {known[position]:g} y"
        titles.append(title)
    write_explanations(bundles, reader, keep[chosen], sex[keep[chosen]], titles, args.explain_method, cfg.device,
                       Path(args.explain), args.explain_figures, progress=cfg.progress)


# ---- MAIC submission -------------------------------------------------------------------------------------------
def test_folders(args: argparse.Namespace) -> dict[str, Path | None]:
    folders = {m: (Path(getattr(args, f"test_for_{m}")) if getattr(args, f"test_for_{m}") else None) for m in MODES}
    for mode, folder in folders.items():
        if folder is not None and not folder.is_dir():
            raise RecordError(str(folder), f"--test_for_{mode} is not a folder")
    if args.submission_template is None or not any(folders.values()):
        raise UserError(f"no MAIC test data: looked for {args.data_root}/submission.csv and "
                        f"{args.data_root}/ECG_<mode>_numpy_valid/ (the default data root is data/maic2023, or the "
                        f"folder in ${DATA_ROOT_ENV}). Pass --data_root DIR (or --test_for_adult/--test_for_child "
                        f"and --submission_template), or --input for other formats; `make demo` builds a "
                        f"synthetic set")
    return folders


def run_submission(args: argparse.Namespace, cfg: InferenceConfig) -> Path:
    folders = test_folders(args)
    template_path = Path(args.submission_template)
    template = read_template(template_path)
    output = Path(args.output or SUBMISSION)
    check_output([output], template["FILENAME"], [template_path], [f for f in folders.values() if f is not None],
                 [w for m in MODES for w in (getattr(args, f"weights_{m}") or [])])
    modes = assign_rows(template, folders, template_path)
    names = template_ids(template)
    needed = {m: np.flatnonzero(modes == m) for m in MODES}
    missing = [f"--weights_{m} (the template has {len(rows)} {m} row(s); no checkpoint at the default "
               f"{opts.default_weights(args, m)})" for m, rows in needed.items()
               if len(rows) and getattr(args, f"weights_{m}") is None]
    if missing:
        raise UserError(f"give {' and '.join(missing)}")
    ages = np.full(len(template), np.nan)
    for mode, rows in ((m, r) for m, r in needed.items() if len(r)):
        reader = NpyFolderReader(folders[mode], fs=args.fs or 500.0, scale=args.input_scale)
        position = {rid: i for i, rid in enumerate(reader.ids)}
        reader = reader.subset([position[n] for n in names.iloc[rows]])
        if "GENDER" in template.columns:  # the template carries each person's sex (for models that read it)
            reader.table["sex"] = template["GENDER"].iloc[rows].map(normalise_sex).to_numpy()
        models = load_models(getattr(args, f"weights_{mode}"), mode, args, reader)
        mode_ages, keep, _ = predict_for(models, reader, args, cfg, f"the {mode} rows")
        # a plausible age outside the mode's bounds (a linear-head model) is clipped to them, as the seed's sigmoid
        ages[rows[keep]] = maic_mode(mode).clip(mode_ages[keep])
    write_csv(output, template.assign(AGE=ages)[np.isfinite(ages)])
    return output


def main(argv=None) -> int:
    args = opts.parse_test(argv)
    configure_logging(sys.stderr, args.quiet)
    weights = [w for w in (args.weights or []) + (args.weights_adult or []) + (args.weights_child or [])]
    if args.engine != "torch" and weights and all(is_onnx(w) for w in weights):
        cfg = opts.onnx_config(args)  # onnxruntime only: PyTorch is never imported
    else:
        cfg = torch_config(args)
    output = run_records(args, cfg) if args.input else run_submission(args, cfg)
    logger.log(RESULT, f"wrote {output}")
    return 0


def torch_config(args: argparse.Namespace) -> InferenceConfig:
    from dataloader.dataset import default_workers
    from utils.runtime import configure_backends, resolve_device, resolve_precision

    device = resolve_device(args.device)
    # inference defaults to fp32 numerics (the reference code's outputs); --precision bf16 is opt-in, and
    # --precision fp32 additionally keeps the reference memory layout
    precision = "fp32" if args.precision == "auto" else resolve_precision(args.precision, device)
    configure_backends(device, precision, args.deterministic)
    workers = opts.workers(args, default_workers(device, args.cache == "on"))
    return opts.inference_config(args, device, precision, workers)


def entry(argv=None) -> int:
    return run_main(main, argv)


if __name__ == "__main__":
    sys.exit(entry())
