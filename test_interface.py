"""Predict ages: a MAIC submission, or ``ids,predicted_age`` for any supported format.

    # MAIC: fill every row of the template (adult rows with the adult model, child rows with the child model)
    python test_interface.py --test_for_adult DIR --test_for_child DIR --submission_template CSV \
        --weights_adult CKPT --weights_child CKPT --output score/submission.csv --device cpu --precision fp32

    # any format (HDF5, WFDB folder, PTB-XL root/CSV, .npy folder, manifest CSV); output columns ids,predicted_age
    python test_interface.py --input exams_part0.hdf5 --weights model_dir/ --output predicted_age.csv

A checkpoint is this project's .pt, the seed's .pt or a published model folder (model.pth + config.json); its own
preprocessing is applied. Nothing is written unless every requested row gets a finite age.
"""
from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pandas as pd

import options as opts
from dataloader.cache import resolve_cache_dtype
from dataloader.dataset import ECGDataset, default_workers, eval_loader
from dataloader.preprocessing import tta_specs
from dataloader.records import NpyFolderReader, Reader, RecordError, natural_key, open_reader, read_csv
from dataloader.sources import BadInputError, apply_policy, duplicate_ids, open_source
from utils.checkpoint import CheckpointError, ModelBundle, load_bundle
from utils.cli import run_main
from utils.io import write_csv
from utils.metrics import apply_bias_correction
from utils.runtime import configure_backends, default_infer_batch, place_model, resolve_device, resolve_precision
from utils.trainer import predict

ROOT = Path(__file__).resolve().parent


def log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def predict_records(bundle: ModelBundle, reader: Reader, args, device, precision: str) -> tuple[np.ndarray, dict]:
    """Ages for every record of ``reader`` (NaN for bad ones) and {id: reason} of the bad records. With
    ``--tta N`` the age is the mean over N windows covering the record; with ``--bias_correction`` the model's
    stored correction is applied."""
    cache_dtype = resolve_cache_dtype(args.cache_dtype, precision)
    if args.bias_correction and not bundle.bias_correction:
        raise CheckpointError(f"{bundle.source}: has no stored bias correction (it is fitted on the validation "
                              f"split at the end of training); run without --bias_correction")
    ids = reader.ids
    model = place_model(bundle.model, device, fast_layout=args.precision != "fp32", training=False)
    workers = args.num_workers if args.num_workers is not None else default_workers(device, args.cache == "on")
    batch = args.infer_batch_size or default_infer_batch(device, args.batch_size)
    bad: dict[str, str] = duplicate_ids(reader.table)
    window_ages = []
    for spec in tta_specs(bundle.preprocessing, args.tta):  # one window unless --tta
        source, bad_signals = open_source(reader, spec, args.cache == "on", args.cache_dir, dtype=cache_dtype,
                                          progress=not args.quiet)
        bad.update(bad_signals)
        good = np.array([i for i, rid in enumerate(ids) if rid not in bad], dtype=np.int64)
        ages = np.full(len(ids), np.nan)
        if len(good):
            loader = eval_loader(ECGDataset(source, good), batch, workers, pin=device.type == "cuda")
            result = predict(model, bundle.head, loader, device, precision,
                             progress=not args.quiet, desc=f"{bundle.arch} on {len(good)} ECGs")
            ages[good[result["index"]]] = result["age"]
        window_ages.append(ages)
    ages = np.mean(window_ages, axis=0)
    if args.bias_correction:
        try:
            ages = apply_bias_correction(ages, bundle.bias_correction)
        except ValueError as exc:
            raise CheckpointError(f"{bundle.source}: {exc}") from exc
    return ages, bad


def median_fill(bundle: ModelBundle, fallback: np.ndarray) -> float:
    """The training median age stored with the model (or, for foreign checkpoints, the median prediction)."""
    stored = (bundle.checkpoint.get("options") or {}).get("train_median_age")
    if stored is not None:
        return float(stored)
    finite = fallback[np.isfinite(fallback)]
    return float(np.median(finite)) if len(finite) else float("nan")


def finish(ages: np.ndarray, ids: list[str], bad: dict, args, bundle: ModelBundle, what: str) -> np.ndarray:
    """Apply the bad-record policy; returns positions to write (ages filled in place under 'fill')."""
    hint = ("Fix or remove them, or pass --on_bad skip (leave them out) or --on_bad fill (write the training "
            "median) to continue.")
    keep = apply_policy(bad, ids, "skip" if args.on_bad == "fill" else args.on_bad, what, log=log, hint=hint)
    if args.on_bad == "fill" and len(keep) < len(ids):
        fill = median_fill(bundle, ages)
        flagged = np.setdiff1d(np.arange(len(ids)), keep)
        ages[flagged] = fill
        log(f"--on_bad fill: wrote the training median {fill:.2f} for {len(flagged)} bad record(s)")
        keep = np.arange(len(ids))
    nonfinite = [ids[i] for i in keep if not np.isfinite(ages[i])]
    if nonfinite:
        raise BadInputError([f"{rid}: the model gave a non-finite age" for rid in nonfinite])
    return keep


# ---- any format → ids,predicted_age ------------------------------------------------------------------------------
def run_records(args, device, precision) -> Path:
    weights = args.weights or getattr(args, f"weights_{args.mode}")
    if weights is None:
        raise SystemExit("error: --input needs --weights (a checkpoint or a published model folder)")
    bundle = load_bundle(weights, mode=args.mode)
    reader = open_reader(args.input, labels=args.labels, fs=args.fs, ptbxl_rate=args.ptbxl_rate,
                         scale=args.input_scale, traces_dset=args.traces_dset, ids_dset=args.ids_dset)
    if len(reader) == 0:
        raise SystemExit(f"error: {args.input} holds no records")
    log(f"{bundle.arch} from {bundle.source} ({bundle.preprocessing.fs:g} Hz, {bundle.preprocessing.length} "
        f"samples) on {len(reader)} {reader.format} record(s); device {device}, {precision}")
    ages, bad = predict_records(bundle, reader, args, device, precision)
    ids = reader.ids
    keep = finish(ages, ids, bad, args, bundle, "the predictions")
    output = Path(args.output or "predicted_age.csv")
    write_csv(output, pd.DataFrame({"ids": [ids[i] for i in keep], "predicted_age": ages[keep]}))
    return output


# ---- MAIC submission -------------------------------------------------------------------------------------------
def read_template(path: Path) -> pd.DataFrame:
    template = read_csv(path, "a submission template", dtype={"FILENAME": str})
    if "FILENAME" not in template.columns:
        raise RecordError(str(path), f"lacks the FILENAME column (has {', '.join(map(str, template.columns))})")
    if "AGE" not in template.columns:
        template["AGE"] = np.nan
    template["AGE"] = template["AGE"].astype(float)
    return template


def assign_rows(template: pd.DataFrame, folders: dict[str, Path | None], template_path: Path) -> pd.Series:
    """Mode of every template row, from the folder holding its file; lists every mismatch in both directions."""
    present = {mode: ({p.stem for p in folder.glob("*.npy")} if folder is not None else set())
               for mode, folder in folders.items()}
    names = template["FILENAME"].astype(str).str.strip().str.replace(r"\.npy$", "", regex=True)
    problems, modes = [], []
    for name in names:
        hits = [m for m in ("adult", "child") if name in present[m]]
        if len(hits) == 2:
            hits = [m for m in hits if m in name.lower()] or hits
        if len(hits) != 1:
            where = " or ".join(str(f) for f in folders.values() if f is not None) or "no test folder"
            problems.append(f"template row {name}: " + ("no ECG file " + f"{name}.npy in {where}" if not hits else
                                                        f"{name}.npy is in both the adult and the child folder"))
            modes.append(None)
        else:
            modes.append(hits[0])
    listed = set(names)
    for mode, folder in folders.items():
        for extra in sorted(present[mode] - listed, key=natural_key):
            problems.append(f"{folder / (extra + '.npy')}: ECG file without a row in {template_path}")
    dup = names[names.duplicated()].unique()
    problems.extend(f"template row {d}: listed more than once" for d in dup)
    if problems:
        raise BadInputError(problems, "The template and the test folders must list the same ECGs.")
    return pd.Series(modes, index=template.index)


def run_submission(args, device, precision) -> Path:
    if not args.submission_template:
        raise SystemExit("error: give --submission_template (or --data_root), or --input for other formats")
    template_path = Path(args.submission_template)
    template = read_template(template_path)
    folders = {m: (Path(getattr(args, f"test_for_{m}")) if getattr(args, f"test_for_{m}") else None)
               for m in ("adult", "child")}
    for mode, folder in folders.items():
        if folder is not None and not folder.is_dir():
            raise RecordError(str(folder), f"--test_for_{mode} is not a folder")
    modes = assign_rows(template, folders, template_path)
    names = template["FILENAME"].astype(str).str.strip().str.replace(r"\.npy$", "", regex=True)
    ages = np.full(len(template), np.nan)
    needed = {m: np.flatnonzero(modes.to_numpy() == m) for m in ("adult", "child")}
    missing = [f"--weights_{m} (the template has {len(rows)} {m} row(s))" for m, rows in needed.items()
               if len(rows) and getattr(args, f"weights_{m}") is None]
    if missing:
        raise SystemExit(f"error: give {' and '.join(missing)}")
    for mode, rows in needed.items():
        if len(rows) == 0:
            continue
        bundle = load_bundle(getattr(args, f"weights_{mode}"), mode=mode)
        reader = NpyFolderReader(folders[mode], fs=args.fs or 500.0, scale=args.input_scale)
        position = {rid: i for i, rid in enumerate(reader.ids)}
        reader = reader.subset([position[n] for n in names.iloc[rows]])
        log(f"{mode}: {bundle.arch} from {bundle.source} on {len(rows)} ECG(s); device {device}, {precision}")
        mode_ages, bad = predict_records(bundle, reader, args, device, precision)
        keep = finish(mode_ages, reader.ids, bad, args, bundle, f"the {mode} rows")
        low, high = opts.MAIC_AGE_BOUNDS[mode]
        ages[rows[keep]] = np.clip(mode_ages[keep], low, high)  # a linear-head model could leave the range
    written = np.isfinite(ages)
    out = template.copy()
    out["AGE"] = ages
    output = Path(args.output or ROOT / "score" / "submission.csv")
    write_csv(output, out[written])
    return output


def main(argv=None) -> int:
    args = opts.parse(argv)
    device = resolve_device(args.device)
    # inference defaults to fp32 numerics (the reference code's outputs); --precision bf16 is opt-in, and
    # --precision fp32 additionally keeps the reference memory layout
    precision = "fp32" if args.precision == "auto" else resolve_precision(args.precision, device)
    configure_backends(device, precision, args.deterministic)
    output = run_records(args, device, precision) if args.input else run_submission(args, device, precision)
    log(f"wrote {output}")
    return 0


def entry(argv=None) -> int:
    return run_main(main, argv)


if __name__ == "__main__":
    sys.exit(entry())
