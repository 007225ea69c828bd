"""Does storing the weights smaller cost accuracy? fp32 against fp16 and int8 weights (export_interface
--weight_storage), out of fold and on the external records, paired over records.

    python bench/weight_storage.py --runs bench/results/ship/log/BaselineNet_baseline_100hz_s1000 \
        bench/results/ship/log/BaselineNet_baseline_100hz_s1001 --work bench/results/weight_storage \
        --write bench/README.md:weight-storage
    python bench/weight_storage.py --quick --runs RUN --work /tmp/ws      # a smoke run: one fold, 8 records each

Each fold network of each cross-validated run is exported alone (fp32, checked by the export) and stored each other
way (engine/deploy/storage.py, without the tolerance check: what is measured here is the difference). Out of fold:
every record (read as the runs' training read it, from their options.json) is predicted by the fold network
that never saw it, in each storage, by onnxruntime; the runs' ages
averaged per record (the shipped model's two seeds together). External: every fold network of every run on the
CinC 2021 records, averaged (the shipped ensemble). Reported: each storage's MAE, its paired difference from fp32
with a 95 % bootstrap interval, the mean and largest |Δ age| from fp32, the fold files' size and the first fold
network's ECG/s on one thread in each storage (interleaved, median of three). The last line
printed is one JSON object.
"""
from __future__ import annotations

import argparse
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
from accuracy import difference_text, paired
from pipeline import rate

from utils.io import publish, write_option
from utils.machine import cpu_flags, cpu_name
from utils.paths import ROOT

SHARED = ROOT.parent / "shared" / "data"
BY = "bench/weight_storage.py"


def fold_files(run: Path, fold: int, storages: list[str], work: Path) -> dict[str, Path]:
    """{storage: the fold network's file}, fp32 first (exported once, reused by a rerun)."""
    import onnx

    from engine.deploy.storage import store_weights

    fp32 = work / f"{run.name}_fold{fold}.fp32.onnx"
    if not fp32.exists():
        done = subprocess.run([sys.executable, str(ROOT / "export_interface.py"), "--weights",
                               str(run / f"fold_{fold}"), "--output", str(fp32), "--quiet"], capture_output=True,
                              text=True, cwd=ROOT)
        if done.returncode:
            raise SystemExit(done.stderr[-3000:])
    files = {"fp32": fp32}
    for storage in storages:
        files[storage] = work / f"{run.name}_fold{fold}.{storage}.onnx"
        model = onnx.load(str(fp32))
        store_weights(model, storage)
        onnx.save(model, str(files[storage]))
    return files


def inputs(reader, rows: list[int], spec) -> np.ndarray:
    """The model inputs (N, 12, L) of the reader's ``rows`` made by ``spec``."""
    from dataloader.checks import prepare

    return np.stack([prepare(reader.load(i), spec) for i in rows])


def usable_rows(reader) -> list[int]:
    """The rows of ``reader`` with an age whose record passes the checks (test_interface --on_bad skip's)."""
    from dataloader.checks import check_record, load_safely
    from dataloader.records import Record

    rows = []
    for i in range(len(reader)):
        record = load_safely(reader, i)
        if isinstance(record, Record) and check_record(record) is None and np.isfinite(reader.table["age"].iloc[i]):
            rows.append(i)
    return rows


def speeds(files: dict[str, Path], x: np.ndarray, repeats: int = 3) -> dict[str, float]:
    """ECG/s of each storage's file on ``x`` on one thread at the pipeline's batch, interleaved (median of
    ``repeats``)."""
    from engine.deploy.onnx_model import OnnxModel, batch_for

    models = {storage: OnnxModel.load(path, 1) for storage, path in files.items()}
    found = {storage: [] for storage in models}
    for _ in range(repeats):
        for storage, model in models.items():
            found[storage].append(rate(model, x, batch_for(1)))
    return {storage: float(np.median(v)) for storage, v in found.items()}


def training_records(run: Path):
    """The records ``run`` was trained on, read as it read them (its options.json)."""
    from dataloader.formats import InputSettings
    from engine.runs import training_input

    options = training_input(run / "fold_0")
    if options is None:
        raise SystemExit(f"{run}: its options.json does not say which records it was trained on")
    return InputSettings.from_options(options).open()


def measure(runs: list[Path], storages: list[str], work: Path, cinc: Path, quick: bool) -> dict:
    from dataloader.formats import open_reader
    from dataloader.labels import patients_by_id
    from engine.deploy.onnx_model import OnnxModel

    own, external = training_records(runs[0]), open_reader(cinc)
    index = {record: i for i, record in enumerate(own.ids)}
    usable = usable_rows(external)[:8 if quick else None]
    oof = {s: [] for s in ["fp32", *storages]}  # per run: a Series of ages by record id
    recorded = []  # per run: the out-of-fold ages the training wrote (PyTorch), to check the fp32 files against
    outside = {s: [] for s in oof}  # per fold network: ages of the external records
    sizes = {s: [] for s in oof}
    speed = None
    external_inputs = {}  # by preprocessing: the external records, prepared once for every fold network
    for run in runs:
        table = pd.read_csv(run / "oof.csv", dtype={"id": str})
        predicted = {s: pd.Series(np.nan, index=table["id"]) for s in oof}
        for fold in sorted(table["fold"].unique())[:1 if quick else None]:
            files = fold_files(run, int(fold), storages, work)
            models = {storage: OnnxModel.load(path) for storage, path in files.items()}
            spec = models["fp32"].input_spec
            ids = table.loc[table["fold"] == fold, "id"].tolist()[:8 if quick else None]
            held_out = inputs(own, [index[i] for i in ids], spec)
            if spec not in external_inputs:
                external_inputs[spec] = inputs(external, usable, spec)
            for storage, model in models.items():
                predicted[storage].loc[ids] = model.ages(held_out)
                outside[storage].append(model.ages(external_inputs[spec]))
                sizes[storage].append(files[storage].stat().st_size)
            if speed is None:  # the first fold network, on the external records
                speed = speeds(files, external_inputs[spec])
        for storage in oof:
            oof[storage].append(predicted[storage].dropna())
        recorded.append(table.set_index("id")["predicted_age"])
    truth = pd.Series(own.table["age"].to_numpy(), index=own.ids)
    patient = patients_by_id(own.table)
    external_truth = external.table["age"].iloc[usable].to_numpy()
    return summarize(runs, truth, patient, external_truth, oof, recorded, outside, sizes, speed)


def summarize(runs: list[Path], truth: pd.Series, patient: pd.Series | None, external_truth: np.ndarray, oof: dict,
              recorded: list, outside: dict, sizes: dict, speed: dict) -> dict:
    """Each storage's out-of-fold and external MAE, its file size and speed, and its change from fp32 (paired out
    of fold over the training records' patients where they are named)."""
    together = {s: pd.concat(v, axis=1).mean(axis=1) for s, v in oof.items()}  # the runs' ages averaged per record
    trained = pd.concat(recorded, axis=1).mean(axis=1).loc[together["fp32"].index]
    result = {"cpu": cpu_name(), "cpu_flags": cpu_flags(), "runs": [str(r) for r in runs], "storages": {},
              "fp32_vs_training_oof_max_years": float((together["fp32"] - trained).abs().max())}
    errors = pd.DataFrame({s: (a - truth.loc[a.index]).abs() for s, a in together.items()})
    ensemble = {s: np.mean(v, axis=0) for s, v in outside.items()}
    external_errors = pd.DataFrame({s: np.abs(a - external_truth) for s, a in ensemble.items()})
    for storage in oof:
        row = {"oof_mae": float(errors[storage].mean()), "external_mae": float(external_errors[storage].mean()),
               "records": int(len(errors)), "external_records": int(len(external_errors)),
               "fold_file_mb": float(np.mean(sizes[storage]) / 1e6), "ecg_per_s_one_thread": speed[storage]}
        if storage != "fp32":
            change = np.abs(pd.concat([together[storage], together["fp32"]], axis=1).diff(axis=1).iloc[:, 1])
            row |= {"oof_vs_fp32": paired(errors, storage, "fp32", 2000, patient),
                    "external_vs_fp32": paired(external_errors, storage, "fp32", 2000),
                    "mean_abs_change": float(change.mean()), "max_abs_change": float(change.max())}
        result["storages"][storage] = row
    return result


def table(result: dict, command: list[str]) -> str:
    over = next((row["oof_vs_fp32"]["resampled"] for row in result["storages"].values() if "oof_vs_fp32" in row),
                "records")
    lines = [f"Measured by `{' '.join(command)}` ({result['cpu']}, flags: {', '.join(result['cpu_flags']) or 'none'};"
             f" onnxruntime; Δ is the storage minus fp32, paired over {over} out of fold and over records externally, "
             f"95 % bootstrap interval):", "",
             "| weights | one fold network's file | its ECG/s, one thread | OOF MAE | Δ OOF | external MAE | "
             "Δ external | mean / largest \\|Δ age\\| from fp32 (OOF) |", "|---|---|---|---|---|---|---|---|"]
    footer = (f"\nThe fp32 files' out-of-fold ages equal those the training wrote (PyTorch) within "
              f"{result['fp32_vs_training_oof_max_years']:.1g} y.")
    for storage, row in result["storages"].items():
        lines.append(f"| {storage} | {row['fold_file_mb']:.2f} MB | {row['ecg_per_s_one_thread']:.0f} | "
                     f"{row['oof_mae']:.3f} ({row['records']} ECGs) | "
                     + (f"{difference_text(row['oof_vs_fp32'], 3)} | " if storage != "fp32" else "— | ")
                     + f"{row['external_mae']:.3f} ({row['external_records']} ECGs) | "
                     + (f"{difference_text(row['external_vs_fp32'], 3)} | {row['mean_abs_change']:.4f} / "
                        f"{row['max_abs_change']:.3f} y |" if storage != "fp32" else "— | — |"))
    return "\n".join(lines) + "\n" + footer


def main(argv=None) -> dict:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--runs", nargs="+", default=[str(ROOT / "log" / f"BaselineNet_shipped_s{s}") for s in (1000, 1001)],
                   help="cross-validated run folders (default: make model's)")
    p.add_argument("--storages", nargs="+", default=["fp16", "int8"], choices=["fp16", "int8"])
    p.add_argument("--external", default=str(SHARED / "cinc2021"))
    p.add_argument("--work", default="bench/results/weight_storage")
    p.add_argument("--quick", action="store_true", help="a smoke run: the first fold, 8 records of each set")
    write_option(p, "weight-storage")
    args = p.parse_args(argv)
    work = Path(args.work)
    work.mkdir(parents=True, exist_ok=True)
    result = measure([Path(r) for r in args.runs], args.storages, work, Path(args.external), args.quick)
    publish(result, work / "weight_storage.json", args.write, table, BY, argv or sys.argv[1:])
    return result


if __name__ == "__main__":
    main()
