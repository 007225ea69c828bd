"""Accuracy per unit of compute, side by side in one run, precise enough to decide: each row (a recipe, or the
modern recipe with one option changed) trained with K-fold patient-level cross-validation on the real PTB-XL
records of ../shared/data — every row and seed on the same folds — and its fold ensemble tested on the
PhysioNet/CinC 2021 records (an external set). With several seeds, the seeds' models averaged (a seeds × folds
ensemble) are reported too, with their compute.

    python bench/accuracy.py                                   # maic, lima, modern, baseline: 5 folds, 1 seed
    python bench/accuracy.py --rows modern baseline modern_ema_bn modern_avg_pool --seeds 2 --work bench/results/acc
    python bench/accuracy.py --epochs maic=4 lima=4            # a shorter budget for the seed recipes (say so)
    python bench/accuracy.py --quick                           # smoke test: 2 folds, 1 epoch, tiny widths
    python bench/accuracy.py --rows modern_1seed baseline --blends modern_1seed+baseline --work bench/results/acc

Per row: the pooled out-of-fold MAE (each record predicted by the fold model that never saw it; with several seeds
the mean of the per-seed MAEs), the external MAE of the fold ensemble, forward GFLOP per ECG at the model's input
length, training seconds (the members' epochs) and ECG/s, inference ECG/s (batches of 8 from the cache). For every
row against ``--reference``: the **paired** difference of both MAEs (row − reference; negative = better) with its
95% interval from a paired bootstrap (the same draw for both rows; each record's absolute error averaged over seeds)
— out of fold over PTB-XL's patients (a patient's ECGs resampled together, as the folds deal them), on the external
records over records — and a difference counts only when its interval excludes 0.

Each row and seed is kept in ``--work``/results (with its per-record predictions and a hash of its run's manifest),
so a run given the same ``--work`` again after an interruption reuses what it has — a stored result only while its
run is the same experiment (a changed default or option retrains the row). The last line printed is one JSON object.

A blend (``--blends A+B``) is the ensemble of rows trained on the same folds — every model of A and of B, each
weighted equally, as ``test_interface --weights RUN_A RUN_B`` averages them: its out-of-fold age of a record is
the members' mean over the models of that record's held-out fold, so its OOF MAE is as honest as a row's. It costs
no training; it is paired with the reference and with each of its rows.
"""
from __future__ import annotations

import argparse
import hashlib
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
from dataloader.formats import open_reader
from dataloader.labels import patients_by_id
from dataloader.sources import CacheConfig, open_source_local
from engine.predict.inference import predict
from engine.runs import CV_SUMMARY, HISTORY, MANIFEST, OOF, run_members
from models.checkpoint import load_bundle
from utils import metrics
from utils.io import write_block_at, write_json
from utils.machine import cpu_flags, cpu_name
from utils.paths import ROOT
from utils.settings import PRECISIONS

SHARED = ROOT.parent / "shared" / "data"
DEFAULTS = ["--arch", "ECGEfficientNet", "--recipe", "modern"]
# the ablations change one thing of a single-model-per-fold modern recipe (one ECGEfficientNet per fold at its first,
# 500-Hz rate), so a row keeps its meaning — and its stored results — when the defaults change
MODERN = [*DEFAULTS, "--seeds", "1", "--partner", "none", "--preprocessing", "modern"]
ROWS = {  # name → the train_interface options that select it
    "maic": ["--arch", "ResUDenseNet", "--mode", "adult", "--recipe", "maic"],
    "lima": ["--arch", "ResNet1d", "--recipe", "lima"],
    "modern": DEFAULTS,
    "baseline": ["--arch", "BaselineNet", "--recipe", "baseline"],
    "modern_1seed": MODERN,
    "modern_2seeds": [*MODERN, "--seeds", "2"],  # the defaults before the partner: two ECGEfficientNets per fold
    "modern_1partner": [*DEFAULTS, "--partners", "1"],  # the defaults before --partners: one BaselineNet per fold
    # the modern recipe with one candidate difference from the baseline
    "modern_ema_bn": [*MODERN, "--ema_bn", "recompute"],
    "modern_avg_pool": [*MODERN, "--pooling", "avg"],
    "modern_crop_8s": [*MODERN, "--crop_seconds", "8.192"],
    "modern_crop_whole": [*MODERN, "--crop_seconds", "0"],
    "modern_onecycle": [*MODERN, "--scheduler", "onecycle", "--lr_initial", "3e-3", "--warmup_epochs", "4"],
    "modern_wd_0.05": [*MODERN, "--weight_decay", "0.05"],
    "modern_e60": [*MODERN, "--nepoch", "60"],
    "modern_e80": [*MODERN, "--nepoch", "80"],
    "modern_zero_init": [*MODERN, "--output_init", "zero"],
    "modern_width_0.5": [*MODERN, "--width", "0.5"],
    "modern_250hz": [*MODERN, "--sample_rate", "250", "--seq_length", "2500"],
    "modern_100hz": [*MODERN, "--sample_rate", "100", "--seq_length", "1000"],
    # the candidate differences that measured better, together (the next defaults if they hold up)
    "modern_next": [*MODERN, "--pooling", "avg", "--crop_seconds", "8.192", "--scheduler", "onecycle", "--lr_initial",
                    "3e-3", "--warmup_epochs", "4", "--output_init", "zero"],
}
ROWS["modern_100hz_noise"] = [*ROWS["modern_100hz"], "--aug_noise", "0.022"]  # 0.05 / √5: the same in-band power
ROWS["modern_100hz_next"] = [*ROWS["modern_next"], "--sample_rate", "100", "--seq_length", "1000"]
ROWS["modern_next_seeds2"] = [*ROWS["modern_next"], "--seeds", "2"]  # a 2 seeds × 5 folds ensemble
# the precision --precision auto picks on a CPU with bf16 (AVX-512 BF16 / AMX) against the reference fp32 arithmetic
ROWS["modern_1seed_fp32"] = [*MODERN, "--precision", "fp32"]
ROWS["modern_1seed_bf16"] = [*MODERN, "--precision", "bf16"]
# distillation: one ECGEfficientNet per fold taught by the default ensemble (the "modern" row's first seed, on the
# same folds: fold k's student learns from fold k's 3 teachers only); its twin without a teacher is modern_1seed
TEACHER = "{teacher}"  # the modern row's run folder, filled in by train()
ROWS["distilled"] = [*MODERN, "--teacher", TEACHER]  # consistent teaching: 8 stored views per record (the default)
ROWS["distilled_record"] = [*ROWS["distilled"], "--teacher_views", "0"]  # one teacher age per record, fresh crops
# the plain BaselineNet (its own recipe) as the student; its twin without a teacher is the baseline row
ROWS["distilled_baseline"] = [*ROWS["baseline"], "--teacher", TEACHER]
# the shipped model's candidates (issue 36): the plain BaselineNet at 500 Hz (the baseline row) and at 100 Hz
ROWS["baseline_100hz"] = [*ROWS["baseline"], "--preprocessing", "modern_100hz"]
# the shipped model's recipe with its augmentation after the crops on the training device (another random stream;
# the recipe's default since 2026-12-07) and in the loader (numpy; the shipped networks' and the default before)
ROWS["baseline_100hz_device"] = [*ROWS["baseline_100hz"], "--augment_on", "device"]
ROWS["baseline_100hz_loader"] = [*ROWS["baseline_100hz"], "--augment_on", "loader"]
ROWS["baseline_loader"] = [*ROWS["baseline"], "--augment_on", "loader"]  # the 500-Hz recipe, augmented in numpy
# --preset quick: the modern recipe's defaults with one network per fold and 20 epochs
ROWS["modern_quick"] = [*DEFAULTS, "--preset", "quick"]
QUICK = {"ResUDenseNet": ["--out_ch", "16", "--mid_ch", "8"], "ResNet1d": ["--net_filter_size", "8", "16", "24", "32",
                                                                          "40"],
         "ECGEfficientNet": ["--width", "0.25"], "BaselineNet": ["--width", "0.25"]}
SPLIT_SEED = 1234  # every row and seed is cross-validated on the same folds


def parse(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--rows", nargs="+", default=["maic", "lima", "modern", "baseline"], choices=list(ROWS))
    p.add_argument("--reference", default="modern", choices=list(ROWS), help="the row every other is paired with")
    p.add_argument("--seeds", type=int, default=1, help="training seeds per row (the folds stay the same)")
    p.add_argument("--blends", nargs="*", default=[], metavar="ROW+ROW",
                   help="ensembles of rows (every model of each, weighted equally), scored like a row")
    p.add_argument("--folds", type=int, default=5)
    p.add_argument("--epochs", nargs="*", default=[], metavar="ROW=N", help="epochs per row (default: its own)")
    p.add_argument("--row_seeds", nargs="*", default=[], metavar="ROW=N",
                   help="seeds of a row other than --seeds (e.g. modern=1: one teacher for two students' seeds)")
    p.add_argument("--precision", default=None, choices=PRECISIONS,
                   help="every row's training arithmetic (default: the row's own; --precision auto unless it names "
                        "one): fp32 measures a recipe as a CPU without fast bf16 — and `make model` — trains it")
    p.add_argument("--n_boot", type=int, default=2000)
    p.add_argument("--ptbxl", default=str(SHARED / "ptbxl"))
    p.add_argument("--external", default=str(SHARED / "cinc2021"))
    p.add_argument("--work", default=None, help="folder for runs, caches and results (default: a temporary one)")
    p.add_argument("--quick", action="store_true", help="2 folds, 1 epoch, tiny widths (a smoke test)")
    p.add_argument("--write", default=None, metavar="FILE:BLOCK",
                   help="also write the rows' table into the marked block BLOCK of FILE (a document's figures are "
                        "written by the script that measured them)")
    args = p.parse_args(argv)
    if args.write and ":" not in args.write:
        p.error("--write FILE:BLOCK (e.g. docs/recipes.md:presets)")
    args.epochs = dict(item.split("=") for item in args.epochs)
    args.row_seeds = {row: int(n) for row, n in (item.split("=") for item in args.row_seeds)}
    if any(row.startswith("distilled") for row in args.rows) and "modern" not in args.rows:
        args.rows = ["modern", *args.rows]  # the teacher is trained (or reused) first
    if args.reference not in args.rows:
        args.rows = [args.reference, *args.rows]
    args.blends = {blend: blend.split("+") for blend in args.blends}
    for name, parts in args.blends.items():
        if len(parts) < 2 or len(set(parts)) < len(parts) or not set(parts) <= set(ROWS):
            p.error(f"--blends {name}: two or more different rows joined by '+' (rows: {', '.join(ROWS)})")
        args.rows += [row for row in parts if row not in args.rows]
    if args.quick:
        args.folds = 2
        args.epochs = {name: "1" for name in ROWS}
    return args


def train(row: str, seed: int, args, work: Path) -> tuple[Path, float]:
    """K-fold training of ``row`` with ``seed`` on the shared folds; (run folder, seconds)."""
    teacher = work / "log" / f"ECGEfficientNet_modern_s{1000}"
    options = [str(teacher) if o == TEACHER else o for o in ROWS[row]]
    argv = [*options, "--input", args.ptbxl, "--folds", str(args.folds), "--seed", str(seed), "--split_seed",
            str(SPLIT_SEED), "--env", f"{row}_s{seed}", "--log_dir", str(work / "log"), "--cache_dir",
            str(work / "cache"), "--on_bad", "skip", "--device", "cpu", "--quiet"]
    if row in args.epochs:
        argv += ["--nepoch", str(args.epochs[row])]
    if args.precision:  # after the row's own options: argparse keeps the last
        argv += ["--precision", args.precision]
    if args.quick:
        argv += [*QUICK[options[1]], "--batch_size", "16"]
    run = work / "log" / f"{options[1]}_{row}_s{seed}"
    # an interrupted run of the same experiment continues (its manifest checks that it is the same); anything
    # else in the folder is replaced
    if not ((run / MANIFEST).is_file() and train_interface.entry([*argv, "--resume"]) == 0) \
            and train_interface.entry([*argv, "--overwrite"]) != 0:
        raise SystemExit(f"training {row} (seed {seed}) failed")
    return run, training_seconds(run)


def training_seconds(run: Path) -> float:
    """The members' epoch times summed (validation passes included): the same figure whether or not the run was
    interrupted and resumed."""
    return float(sum(pd.read_csv(m.parent / HISTORY)["seconds"].sum() for m in run_members(run)))


def external_ages(run: Path, args, work: Path) -> pd.Series:
    """The fold ensemble's ages on the external records, through test_interface."""
    out = work / "external.csv"
    argv = ["--input", args.external, "--weights", str(run), "--mode", "adult", "--on_bad", "skip", "--output",
            str(out), "--cache_dir", str(work / "cache"), "--device", "cpu", "--quiet"]
    if test_interface.entry(argv) != 0:
        raise SystemExit(f"predicting {args.external} with {run} failed")
    return pd.read_csv(out, dtype={"ids": str}).set_index("ids")["predicted_age"]


def gflop(bundle) -> float:
    """Forward GFLOP per ECG of one model at its input length."""
    with FlopCounterMode(display=False) as counter, torch.no_grad():
        bundle.model.eval()(torch.zeros(1, 12, bundle.preprocessing.length))
    return counter.get_total_flops() / 1e9


def cost(members: list[Path], args, work: Path) -> dict:
    """Forward GFLOP per ECG of the first member and of the whole ensemble (the members may differ), and the first
    member's inference ECG/s over the external records (batches of 8, the CPU default of test_interface, read from
    the cache; at least 2 seconds of timing)."""
    bundles = [load_bundle(member, mode="adult") for member in members]
    bundle, model = bundles[0], bundles[0].model.eval()
    reader = open_reader(args.external)
    source, bad = open_source_local(reader, bundle.preprocessing, CacheConfig(folder=work / "cache", progress=False))
    good = [i for i, rid in enumerate(reader.ids) if rid not in bad]
    loader = eval_loader(ECGDataset(source, good), 8, 0)
    predict(model, bundle.head, loader, torch.device("cpu"), "fp32")  # warm-up
    started, count = time.perf_counter(), 0
    while time.perf_counter() - started < 2.0:
        count += len(predict(model, bundle.head, loader, torch.device("cpu"), "fp32")["age"])
    return {"gflop_per_ecg": gflop(bundle), "ensemble_gflop_per_ecg": sum(gflop(b) for b in bundles),
            "infer_ecg_per_s": count / (time.perf_counter() - started)}


def ensemble_gflop(result: dict) -> float:
    """GFLOP per ECG of a stored row's whole ensemble (results stored before members could differ: members × one)."""
    return result.get("ensemble_gflop_per_ecg", result["gflop_per_ecg"] * result["members"])


def measure(row: str, seed: int, args, work: Path) -> dict:
    """One row and seed, kept in ``work/results`` (an interrupted benchmark resumes from what it has)."""
    budget = f"k{args.folds}_e{args.epochs.get(row, 'default')}" + ("_quick" if args.quick else "")
    saved = work / "results" / f"{row}_s{seed}_{budget}.json"
    run, seconds = train(row, seed, args, work)  # a finished run with the same options resumes in seconds
    experiment = experiment_of(run)
    if saved.is_file():
        result = json.loads(saved.read_text())
        if result.get("experiment") == experiment:  # measured on this very run: reuse
            return result
    cv = json.loads((run / CV_SUMMARY).read_text())
    oof = pd.read_csv(run / OOF, dtype={"id": str})
    members = run_members(run)
    epochs = [int(pd.read_csv(m.parent / HISTORY)["epoch"].max()) for m in members]  # members may differ
    external = external_ages(run, args, work)
    result = {"experiment": experiment, "cv_mae": cv["pooled"]["mae"], "train_seconds": seconds, "epochs": epochs[0],
              "members": len(members),
              "train_ecg_per_s": cv["pooled"]["n"] * (args.folds - 1) / args.folds * sum(epochs) / seconds,
              "oof": dict(zip(oof["id"], (oof["predicted_age"] - oof["age"]).abs())),
              "oof_age": dict(zip(oof["id"], oof["predicted_age"])), "oof_truth": dict(zip(oof["id"], oof["age"])),
              "external": external.to_dict(), **cost(members, args, work),
              "teacher_seconds": json.loads((run / MANIFEST).read_text()).get("teacher_seconds")}
    write_json(saved, result)  # atomic: an interruption never leaves a truncated file for the next run to read
    print(f"{row} seed {seed}: CV MAE {result['cv_mae']:.2f}, {seconds:.0f} s", file=sys.stderr, flush=True)
    return result


def experiment_of(run: Path) -> str:
    """What identifies the run's experiment (its manifest's options, data, split and members) as one hash: a
    stored result counts only for the experiment it was measured on, so a changed default retrains its rows."""
    manifest = json.loads((run / MANIFEST).read_text())
    return hashlib.sha256(json.dumps({k: manifest[k] for k in ("options", "data", "split", "members")},
                                     sort_keys=True).encode()).hexdigest()


def paired(errors: pd.DataFrame, row: str, reference: str, n_boot: int, patients: pd.Series | None = None) -> dict:
    """Mean of (row − reference) absolute errors over the records both have, with a paired bootstrap 95% interval
    (the same draw for both; whole ``patients`` — record id → patient — resampled where given, else records)."""
    both = errors[[row, reference]].dropna()
    diff = (both[row] - both[reference]).to_numpy()
    clusters = None if patients is None else patients.reindex(both.index).tolist()
    return {"diff": float(diff.mean()), "ci95": metrics.mean_interval(diff, n_boot=n_boot, seed=0, clusters=clusters),
            "n": int(len(diff)), "resampled": "records" if patients is None else "patients"}


def difference_text(paired: dict, digits: int) -> str:
    """A :func:`paired` difference as the tables print it: '+0.35 [-0.17, +0.86]' (its 95 % interval), or
    '+0.35 [too few]' where there were too few records or patients for one."""
    ci = paired["ci95"]
    return f"{paired['diff']:+.{digits}f} " + (f"[{ci[0]:+.{digits}f}, {ci[1]:+.{digits}f}]" if ci else "[too few]")


def patients_of(path: str) -> pd.Series | None:
    """Record id → patient of the input at ``path`` where its table names patients (PTB-XL, CODE-15%), else None."""
    return patients_by_id(open_reader(path).table)


def absolute_errors(runs: dict, key: str, truth: pd.Series | None = None) -> pd.DataFrame:
    """Per record and row, the absolute error averaged over seeds (OOF: stored; external: from the ages)."""
    columns = {}
    for row, seeds in runs.items():
        per_seed = [pd.Series(s[key]) if truth is None else external_errors([s], truth) for s in seeds]
        columns[row] = pd.concat(per_seed, axis=1).mean(axis=1)
    return pd.DataFrame(columns)


def ensemble_errors(seeds: list[dict]) -> pd.Series:
    """Per record, the absolute out-of-fold error of the seeds' models averaged (each record by every seed's model
    of the fold that never saw it)."""
    oof = pd.concat([pd.Series(s["oof_age"]) for s in seeds], axis=1).mean(axis=1)
    return (oof - pd.Series(seeds[0]["oof_truth"]).reindex(oof.index)).abs()


def external_errors(seeds: list[dict], truth: pd.Series) -> pd.Series:
    """Per external record with an age, the absolute error of the seeds' fold ensembles averaged."""
    external = pd.concat([pd.Series(s["external"]) for s in seeds], axis=1).mean(axis=1)
    return (external - truth).abs().dropna()


def seed_ensemble(seeds: list[dict], truth: pd.Series) -> dict:
    """The seeds' models averaged: out-of-fold and external (every seed's fold ensemble) MAE, and the GFLOP per
    ECG of the whole ensemble."""
    return {"cv_mae": float(ensemble_errors(seeds).mean()),
            "external_mae": float(external_errors(seeds, truth).mean()),
            "gflop_per_ecg": sum(ensemble_gflop(s) for s in seeds)}


def ensemble_vs_one(seeds: list[dict], reference: list[dict], truth: pd.Series, n_boot: int,
                    patients: pd.Series | None) -> dict:
    """The seeds' ensemble of a row against a reference model — the seeds' results in ``reference`` averaged, e.g.
    the reference row's first seed alone (one deployable model against another) — paired out of fold and on the
    external records."""
    cv = pd.DataFrame({"ensemble": ensemble_errors(seeds), "reference": ensemble_errors(reference)})
    ext = pd.DataFrame({"ensemble": external_errors(seeds, truth), "reference": external_errors(reference, truth)})
    return {"cv": paired(cv, "ensemble", "reference", n_boot, patients),
            "external": paired(ext, "ensemble", "reference", n_boot)}


def seed_curve(seeds: list[dict], truth: pd.Series, n_boot: int, patients: pd.Series | None) -> list[dict]:
    """What each further seed buys: the ensembles of the first 1, 2, …, N seeds, each with its paired difference
    in out-of-fold MAE against the first seed alone (the gain), against the first m − 1 seeds out of fold and on the
    external records (the last seed's own gain; from the second), and its compute."""
    return [{"seeds": m, **seed_ensemble(seeds[:m], truth),
             "vs_one_seed": ensemble_vs_one(seeds[:m], seeds[:1], truth, n_boot, patients)["cv"],
             **({"vs_one_fewer": ensemble_vs_one(seeds[:m], seeds[:m - 1], truth, n_boot, patients)} if m > 1
                else {})}
            for m in range(1, len(seeds) + 1)]


def blended_ages(parts: list[list[dict]], key: str) -> pd.Series:
    """Per record, the mean age over every model of the parts' runs (``key``: oof_age or external; each run's
    stored age is already the mean of its ``members`` models, so it weighs as many)."""
    runs = [s for seeds in parts for s in seeds]
    weights = np.array([s["members"] for s in runs], float)
    ages = pd.concat([pd.Series(s[key]) for s in runs], axis=1)
    return (ages * weights).sum(axis=1, min_count=len(runs)) / weights.sum()


def blend(parts: dict, truth: pd.Series, oof: pd.DataFrame, external: pd.DataFrame, patients: pd.Series | None,
          args) -> dict:
    """A blend of rows (``parts``: row → its seeds' results) scored like a row, paired with the reference and with
    each of its rows."""
    runs = list(parts.values())
    oof_truth = pd.Series(runs[0][0]["oof_truth"])
    errors = {"cv": (blended_ages(runs, "oof_age") - oof_truth).abs().dropna(),
              "external": (blended_ages(runs, "external") - truth).abs().dropna()}
    tables = {"cv": oof.assign(blend=errors["cv"]), "external": external.assign(blend=errors["external"])}
    return {"cv_mae": float(errors["cv"].mean()), "external_mae": float(errors["external"].mean()),
            "rows": list(parts), "members": sum(s["members"] for seeds in runs for s in seeds),
            "ensemble_gflop_per_ecg": sum(ensemble_gflop(s) for seeds in runs for s in seeds),
            "vs": {row: {kind: paired(tables[kind], "blend", row, args.n_boot, patients if kind == "cv" else None)
                         for kind in tables}
                   for row in dict.fromkeys([args.reference, *parts])}}


def summarise(runs: dict, truth: pd.Series, oof: pd.DataFrame, external: pd.DataFrame, patients: pd.Series | None,
              args) -> dict:
    out = {}
    for row, seeds in runs.items():
        entry = {"cv_mae": float(np.mean([s["cv_mae"] for s in seeds])),
                 "cv_mae_sd": float(np.std([s["cv_mae"] for s in seeds], ddof=1)) if len(seeds) > 1 else 0.0,
                 "external_mae": float(external[row].mean()), "seeds": len(seeds), "folds": args.folds,
                 "epochs": seeds[0]["epochs"], "gflop_per_ecg": seeds[0]["gflop_per_ecg"],
                 "ensemble_gflop_per_ecg": ensemble_gflop(seeds[0]),
                 "train_seconds": float(np.mean([s["train_seconds"] for s in seeds])),
                 "train_ecg_per_s": float(np.mean([s["train_ecg_per_s"] for s in seeds])),
                 "infer_ecg_per_s": float(np.mean([s["infer_ecg_per_s"] for s in seeds])),
                 "per_seed": {"cv_mae": [s["cv_mae"] for s in seeds],
                              "external_mae": [float(external_errors([s], truth).mean()) for s in seeds]}}
        taught = [s["teacher_seconds"] for s in seeds if s.get("teacher_seconds") is not None]
        if taught:  # distillation: the teacher's pass over the training records, on top of the training
            entry["teacher_seconds"] = float(np.mean(taught))
        if len(seeds) > 1 and all("oof_age" in s for s in seeds):
            entry["seed_ensemble"] = seed_ensemble(seeds, truth)
            entry["seed_curve"] = seed_curve(seeds, truth, args.n_boot, patients)
            if row != args.reference:
                entry["seed_ensemble"]["vs_reference_seed"] = ensemble_vs_one(seeds, runs[args.reference][:1], truth,
                                                                              args.n_boot, patients)
        if row != args.reference:
            entry["vs_reference"] = {"reference": args.reference,
                                     "cv": paired(oof, row, args.reference, args.n_boot, patients),
                                     "external": paired(external, row, args.reference, args.n_boot)}
        out[row] = entry
    return out


def main(argv=None) -> dict:
    args = parse(argv)
    truth = open_reader(args.external).table.set_index("id")["age"]
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(args.work or tmp)
        runs = {row: [measure(row, 1000 + s, args, work) for s in range(args.row_seeds.get(row, args.seeds))]
                for row in args.rows}
    oof, external = absolute_errors(runs, "oof"), absolute_errors(runs, "external", truth)
    patients = patients_of(args.ptbxl)
    result = {"machine": f"{platform.processor() or platform.machine()}, {torch.get_num_threads()} threads, torch "
                         f"{torch.__version__}", "rows": summarise(runs, truth, oof, external, patients, args)}
    if args.blends:
        result["blends"] = {name: blend({row: runs[row] for row in parts}, truth, oof, external, patients, args)
                            for name, parts in args.blends.items()}
    if args.write:
        command = " ".join(["python bench/accuracy.py", *(sys.argv[1:] if argv is None else argv)])
        write_block_at(args.write, rows_table(result, command), "bench/accuracy.py")
    print(json.dumps(result))
    return result


def rows_table(result: dict, command: str) -> str:
    """The rows as a markdown table (mean over seeds, each seed's figure in brackets; Δ against the reference with
    its paired 95 % interval), under the machine and the command that measured them."""
    def seeds(row: str, key: str) -> str:
        each = result["rows"][row]["per_seed"][key]
        return f"{np.mean(each):.2f}" + (f" [{', '.join(f'{v:.2f}' for v in each)}]" if len(each) > 1 else "")

    def delta(entry: dict, kind: str) -> str:
        if "vs_reference" not in entry:
            return "—"
        return difference_text(entry["vs_reference"][kind], 2)

    over = {"patients": "over patients", "records": "over records"}
    resampled = next((f"{over[e['vs_reference']['cv']['resampled']]} out of fold, over records externally"
                      for e in result["rows"].values() if "vs_reference" in e), "")
    lines = [f"Measured by `{command}` ({result['machine']}; {cpu_name()}, flags: {', '.join(cpu_flags())}); Δ is "
             f"the row minus the reference (negative = better), paired {resampled}:", "",
             "| row | seeds | OOF MAE: mean [per seed] | Δ OOF [95 % CI] | external MAE: mean [per seed] | Δ external "
             "[95 % CI] | GFLOP / ECG (ensemble) | training s per seed |", "|---|---|---|---|---|---|---|---|"]
    for row, entry in result["rows"].items():
        lines.append(f"| {row} | {entry['seeds']} | {seeds(row, 'cv_mae')} | {delta(entry, 'cv')} | "
                     f"{seeds(row, 'external_mae')} | {delta(entry, 'external')} | "
                     f"{entry['ensemble_gflop_per_ecg']:.2f} | {entry['train_seconds']:.0f} |")
    for row, entry in result["rows"].items():  # the seeds' models together: one model of its own
        if "vs_reference_seed" in entry.get("seed_ensemble", {}):
            both, vs = entry["seed_ensemble"], {"vs_reference": entry["seed_ensemble"]["vs_reference_seed"]}
            lines.append(f"| {row}, its {entry['seeds']} seeds' models together, against the reference's first "
                         f"seed | — | {both['cv_mae']:.2f} | {delta(vs, 'cv')} | {both['external_mae']:.2f} | "
                         f"{delta(vs, 'external')} | {both['gflop_per_ecg']:.2f} | — |")
    for row, entry in result["rows"].items():  # with three seeds or more: what each further seed buys
        for step in entry.get("seed_curve", [])[1:] if entry["seeds"] > 2 else []:
            vs = {"vs_reference": step["vs_one_fewer"]}
            lines.append(f"| {row}, its first {step['seeds']} seeds' models together, against its first "
                         f"{step['seeds'] - 1} | — | {step['cv_mae']:.2f} | {delta(vs, 'cv')} | "
                         f"{step['external_mae']:.2f} | {delta(vs, 'external')} | {step['gflop_per_ecg']:.2f} | — |")
    return "\n".join(lines)


if __name__ == "__main__":
    main()
