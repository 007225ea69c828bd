"""Accuracy per unit of compute, side by side in one run: each recipe trained with K-fold patient-level
cross-validation on the real PTB-XL records of ../shared/data and tested on the PhysioNet/CinC 2021 records
(an external set), for several seeds.

    python bench/accuracy.py                        # 3 seeds × 5 folds, every recipe at its own epoch count
    python bench/accuracy.py --epochs maic=6 lima=6 # a shorter budget for the seed recipes (say so when reporting)
    python bench/accuracy.py --quick                # smoke test: 1 seed, 2 folds, 1 epoch, tiny widths

Recipes: ``maic`` (ResUDenseNet with the adult head, the MAIC seed recipe), ``lima`` (ResNet1d, Lima et al.),
``modern`` (ECGEfficientNet, this project's recipe: a single fold model) and ``modern_ensemble`` (the average of
the modern run's fold models). All recipes of one seed share the same folds. Per recipe: CV MAE (pooled
out-of-fold MAE; mean ± sd over seeds), external MAE on CinC (single fold models: mean over folds and seeds;
the ensemble: mean ± sd over seeds), forward GFLOP per ECG at the model's input length, training seconds (all
folds, per seed), training ECG/s (ECGs × epochs / second) and inference ECG/s (batches of 8 from the cache, this
machine). The last line printed is one JSON object with one entry per recipe.
"""
from __future__ import annotations

import argparse
import json
import platform
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from torch.utils.flop_counter import FlopCounterMode

import test_interface
import train_interface
from dataloader.dataset import ECGDataset, eval_loader
from dataloader.records import open_reader
from dataloader.sources import CacheConfig, open_source_local
from engine.inference import predict
from engine.runs import CV_SUMMARY, HISTORY, run_members
from models.checkpoint import load_bundle
from utils.io import write_json
from utils.paths import ROOT

SHARED = ROOT.parent / "shared" / "data"
RECIPES = {  # name → the train_interface options that select it
    "maic": ["--arch", "ResUDenseNet", "--mode", "adult", "--recipe", "maic"],
    "lima": ["--arch", "ResNet1d", "--recipe", "lima"],
    "modern": ["--arch", "ECGEfficientNet", "--recipe", "modern"],
}
QUICK = {"maic": ["--out_ch", "16", "--mid_ch", "8"], "lima": ["--net_filter_size", "8", "16", "24", "32", "40"],
         "modern": ["--width", "0.25"]}


def parse(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--recipes", nargs="+", default=list(RECIPES), choices=list(RECIPES))
    p.add_argument("--seeds", type=int, default=3)
    p.add_argument("--folds", type=int, default=5)
    p.add_argument("--epochs", nargs="*", default=[], metavar="RECIPE=N", help="epochs per recipe (default: its own)")
    p.add_argument("--ptbxl", default=str(SHARED / "ptbxl"))
    p.add_argument("--external", default=str(SHARED / "cinc2021"))
    p.add_argument("--work", default=None, help="folder for runs and caches (default: a temporary one)")
    p.add_argument("--quick", action="store_true", help="1 seed, 2 folds, 1 epoch, tiny widths (a smoke test)")
    args = p.parse_args(argv)
    args.epochs = dict(item.split("=") for item in args.epochs)
    if args.quick:
        args.seeds, args.folds = 1, 2
        args.epochs = {name: "1" for name in RECIPES}
    return args


def train(recipe: str, seed: int, args, work: Path) -> tuple[Path, float]:
    """K-fold training of ``recipe`` with ``seed``; (run folder, seconds)."""
    argv = [*RECIPES[recipe], "--input", args.ptbxl, "--folds", str(args.folds), "--seed", str(seed), "--env",
            f"{recipe}_s{seed}", "--log_dir", str(work / "log"), "--cache_dir", str(work / "cache"), "--on_bad",
            "skip", "--device", "cpu", "--quiet", "--overwrite"]  # an interrupted run's partial folder is retrained
    if recipe in args.epochs:
        argv += ["--nepoch", str(args.epochs[recipe])]
    if args.quick:
        argv += [*QUICK[recipe], "--batch_size", "16"]
    started = time.perf_counter()
    if train_interface.entry(argv) != 0:
        raise SystemExit(f"training {recipe} (seed {seed}) failed")
    seconds = time.perf_counter() - started
    run = work / "log" / f"{RECIPES[recipe][1]}_{recipe}_s{seed}"
    return run, seconds


def external_mae(weights: list[Path], args, work: Path, ages: pd.Series) -> float:
    """MAE on the external records of the model(s) ``weights`` (several are averaged) through test_interface."""
    out = work / "external.csv"
    argv = ["--input", args.external, "--weights", *map(str, weights), "--mode", "adult", "--on_bad", "skip",
            "--output", str(out), "--cache_dir", str(work / "cache"), "--device", "cpu", "--quiet"]
    if test_interface.entry(argv) != 0:
        raise SystemExit(f"predicting {args.external} with {weights} failed")
    predicted = pd.read_csv(out, dtype={"ids": str}).set_index("ids")["predicted_age"]
    return float((predicted - ages[predicted.index]).abs().mean())


def cost(checkpoint: Path, args, work: Path) -> dict:
    """Forward GFLOP per ECG at the model's input length, and inference ECG/s over the external records (batches
    of 8, the CPU default of test_interface, read from the cache; at least 2 seconds of timing)."""
    bundle = load_bundle(checkpoint, mode="adult")
    model = bundle.model.eval()
    with FlopCounterMode(display=False) as counter, torch.no_grad():
        model(torch.zeros(1, 12, bundle.preprocessing.length))
    reader = open_reader(args.external)
    source, bad = open_source_local(reader, bundle.preprocessing, CacheConfig(folder=work / "cache", progress=False))
    good = [i for i, rid in enumerate(reader.ids) if rid not in bad]
    loader = eval_loader(ECGDataset(source, good), 8, 0)
    predict(model, bundle.head, loader, torch.device("cpu"), "fp32")  # warm-up
    started, count = time.perf_counter(), 0
    while time.perf_counter() - started < 2.0:
        count += len(predict(model, bundle.head, loader, torch.device("cpu"), "fp32")["age"])
    return {"gflop_per_ecg": counter.get_total_flops() / 1e9,
            "infer_ecg_per_s": count / (time.perf_counter() - started)}


def summarise(runs: dict, args) -> dict:
    """One entry per recipe from the per-seed measurements."""
    out = {}
    for recipe, seeds in runs.items():
        cv = [s["cv_mae"] for s in seeds]
        entry = {"cv_mae_mean": float(np.mean(cv)), "cv_mae_sd": float(np.std(cv, ddof=1)) if len(cv) > 1 else 0.0,
                 "external_mae_mean": float(np.mean([m for s in seeds for m in s["external_fold_maes"]])),
                 "external_mae_sd": float(np.std([np.mean(s["external_fold_maes"]) for s in seeds], ddof=1))
                 if len(seeds) > 1 else 0.0,
                 "gflop_per_ecg": seeds[0]["gflop_per_ecg"], "train_seconds": float(np.mean(
                     [s["train_seconds"] for s in seeds])), "train_ecg_per_s": float(np.mean(
                         [s["train_ecg_per_s"] for s in seeds])), "infer_ecg_per_s": float(np.mean(
                             [s["infer_ecg_per_s"] for s in seeds])), "seeds": len(seeds), "folds": args.folds,
                 "epochs": seeds[0]["epochs"]}
        out[recipe] = entry
        if recipe == "modern":
            ensemble = [s["external_ensemble_mae"] for s in seeds]
            out["modern_ensemble"] = {
                "cv_mae_mean": None, "cv_mae_sd": None, "external_mae_mean": float(np.mean(ensemble)),
                "external_mae_sd": float(np.std(ensemble, ddof=1)) if len(ensemble) > 1 else 0.0,
                "gflop_per_ecg": args.folds * entry["gflop_per_ecg"], "train_seconds": entry["train_seconds"],
                "train_ecg_per_s": entry["train_ecg_per_s"], "infer_ecg_per_s": entry["infer_ecg_per_s"] / args.folds,
                "seeds": len(seeds), "folds": args.folds, "epochs": entry["epochs"]}
    return out


def measure(recipe: str, seed: int, args, work: Path, ages: pd.Series) -> dict:
    """One recipe and seed; kept in ``work/results`` so that a run given the same ``--work`` again (after an
    interruption) reuses the measurements it already has instead of retraining."""
    budget = f"k{args.folds}_e{args.epochs.get(recipe, 'default')}" + ("_quick" if args.quick else "")
    saved = work / "results" / f"{recipe}_s{seed}_{budget}.json"
    if saved.is_file():
        return json.loads(saved.read_text())
    result = _measure(recipe, seed, args, work, ages)
    write_json(saved, result)  # atomic: an interruption never leaves a truncated file for the next run to read
    return result


def _measure(recipe: str, seed: int, args, work: Path, ages: pd.Series) -> dict:
    run, seconds = train(recipe, seed, args, work)
    cv = json.loads((run / CV_SUMMARY).read_text())
    members = run_members(run)
    history = pd.read_csv(members[0].parent / HISTORY)
    records = cv["pooled"]["n"] * (args.folds - 1)  # every record trains K − 1 fold models
    result = {"cv_mae": cv["pooled"]["mae"], "train_seconds": seconds, "epochs": int(history["epoch"].max()),
              "train_ecg_per_s": records * int(history["epoch"].max()) / seconds,
              "external_fold_maes": [external_mae([m], args, work, ages) for m in members],
              **cost(members[0], args, work)}
    if recipe == "modern":
        result["external_ensemble_mae"] = external_mae([run], args, work, ages)
    print(f"{recipe} seed {seed}: CV MAE {result['cv_mae']:.2f}, external {np.mean(result['external_fold_maes']):.2f}"
          + (f" (ensemble {result['external_ensemble_mae']:.2f})" if recipe == "modern" else "")
          + f", {seconds:.0f} s", file=sys.stderr, flush=True)
    return result


def main(argv=None) -> dict:
    args = parse(argv)
    ages = open_reader(args.external).table.set_index("id")["age"]
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(args.work or tmp)
        runs = {recipe: [measure(recipe, 1000 + s, args, work, ages) for s in range(args.seeds)]
                for recipe in args.recipes}
    result = {"machine": f"{platform.processor() or platform.machine()}, {torch.get_num_threads()} threads, torch "
                         f"{torch.__version__}", "recipes": summarise(runs, args)}
    print(json.dumps(result))
    return result


if __name__ == "__main__":
    main()
