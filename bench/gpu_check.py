"""The GPU check, ready for the next time a GPU is lent: in a few minutes, every architecture's training and
inference ECG/s with the GPU defaults (bf16, torch.compile, channels-last) against the seed's way, its model FLOP
utilisation, the fraction of each training step spent waiting for data and what one loader worker delivers from
the cache (plain and augmented) against what a step consumes (bench/throughput.py), and the step with the
augmentation on the device (``--augment_on device``, the project's recipes' default; the first table's step augments
in the loader) for the architectures whose recipe augments; a short training
run of each recipe through train_interface.py (one epoch on the shared PTB-XL records: ECG/s of the whole step,
data included); and prediction end to end (test_interface.py, the modern run's checkpoints, on 2,000 400-Hz HDF5
ECGs) against the networks alone. The figures go to ``--work``/gpu_check.json and replace the block "gpu-check"
of bench/README.md (with the GPU's name); the last line printed is one JSON object.

    python bench/gpu_check.py                          # on the GPU machine (about 5–10 minutes)
    python bench/gpu_check.py --quick --device cpu     # smoke test: one architecture, tiny runs
"""
from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
from loader import device_share
from pipeline import hdf5

from models.registry import MODELS
from utils.io import write_block
from utils.paths import ROOT

SHARED = ROOT.parent / "shared" / "data"
RECIPES = {"maic": ["--mode", "adult", "--arch", "ResDenseNet", "--recipe", "maic"],
           "lima": ["--arch", "ResNet1d", "--recipe", "lima"],
           "modern": ["--recipe", "modern", "--partner", "none"], "baseline": ["--recipe", "baseline"]}
BATCH = {"ResDenseNet": 64, "ResUDenseNet": 64, "ResNet1d": 128, "ECGEfficientNet": 256, "BaselineNet": 256}


def run(argv: list[str], what: str) -> subprocess.CompletedProcess:
    done = subprocess.run([sys.executable, *argv], capture_output=True, text=True, cwd=ROOT)
    if done.returncode:
        raise SystemExit(f"{what} failed:\n{done.stderr[-3000:]}")
    return done


def throughput(arch: str, args, augment_on: str = "loader") -> dict:
    batch = 2 if args.quick else BATCH[arch]
    argv = [str(ROOT / "bench" / "throughput.py"), "--arch", arch, "--device", args.device, "--json",
            "--augment_on", augment_on,
            *(["--quick"] if args.quick else ["--batch_size", str(batch), "--steps", "20", "--warmup", "5"])]
    return json.loads(run(argv, f"throughput of {arch}").stdout.strip().splitlines()[-1])


AUGMENTED = ("BaselineNet", "ECGEfficientNet")  # the architectures whose own recipe augments beyond crops


def training(recipe: str, args, work: Path) -> dict:
    """One epoch of ``recipe`` on the PTB-XL records with the device's defaults: its ECG/s from the run's history."""
    log = work / "log"
    argv = [str(ROOT / "train_interface.py"), *RECIPES[recipe], "--input", str(args.ptbxl), "--nepoch", "1",
            "--on_bad", "skip", "--device", args.device, "--env", f"gpu_{recipe}", "--log_dir", str(log),
            "--cache_dir", str(work / "cache"), "--overwrite", "--quiet"]
    if args.quick:
        argv += ["--max_steps_per_epoch", "2", "--ptbxl_rate", "100", "--batch_size", "8",
                 *{"maic": ["--out_ch", "16", "--mid_ch", "8"], "lima": ["--net_filter_size", "8", "16", "24", "32",
                                                                        "40"]}.get(recipe, ["--width", "0.25"])]
    started = time.perf_counter()
    run(argv, f"training {recipe}")
    wall = time.perf_counter() - started
    history = next(log.glob(f"*_gpu_{recipe}/history.csv"))
    seconds = float(pd.read_csv(history)["seconds"].iloc[-1])
    records = len(pd.read_csv(history.parent / "split.csv").query("split == 'train'"))
    return {"epoch_seconds": seconds, "train_ecg_per_s": records / seconds, "wall_seconds": wall,
            "run": str(history.parent)}


def prediction(run_dir: str, args, work: Path) -> dict:
    """test_interface end to end on 400-Hz HDF5 ECGs with the modern run's checkpoints on the device."""
    count = 128 if args.quick else 2000
    path = hdf5(work, count, Path(args.ptbxl))
    out = work / "predicted.csv"
    started = time.perf_counter()
    run([str(ROOT / "test_interface.py"), "--input", str(path), "--weights", run_dir, "--device", args.device,
         "--cache", "off", "--output", str(out), "--quiet"], "prediction end to end")
    seconds = time.perf_counter() - started
    return {"ecgs": count, "seconds": seconds, "ecg_per_s": count / seconds}


def main(argv=None) -> dict:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--device", default="cuda", choices=("cuda", "cpu"))
    p.add_argument("--ptbxl", default=str(SHARED / "ptbxl"))
    p.add_argument("--work", default=str(ROOT / "bench" / "results" / "gpu"))
    p.add_argument("--no_write", action="store_true", help="print the figures only (bench/README.md kept)")
    p.add_argument("--quick", action="store_true", help="BaselineNet only, tiny runs (a smoke test)")
    args = p.parse_args(argv)
    work = Path(args.work).resolve()
    work.mkdir(parents=True, exist_ok=True)
    archs = ["BaselineNet"] if args.quick else list(MODELS)
    recipes = ["modern"] if args.quick else list(RECIPES)
    result = {"device": args.device, "architectures": {a: throughput(a, args) for a in archs},
              "augment_on_device": {a: throughput(a, args, "device") for a in archs if a in AUGMENTED},
              "training": {r: training(r, args, work) for r in recipes}}
    result["prediction"] = prediction(result["training"]["modern"]["run"], args, work)
    (work / "gpu_check.json").write_text(json.dumps(result, indent=1))
    if not args.no_write:
        write_block(ROOT / "bench" / "README.md", "gpu-check", table(result), "bench/gpu_check.py")
    print(json.dumps(result))
    return result


def table(result: dict) -> str:
    first = next(iter(result["architectures"].values()))
    device = first.get("gpu") or result["device"]
    rows = [f"`python bench/gpu_check.py` on {device} (bf16, torch.compile, channels-last; the seed's way for the "
            f"ratio):", "",
            "| architecture | train ECG/s | × seed | infer ECG/s | × seed | MFU train / infer | data wait (augmented "
            "in the loader) | "
            "one loader worker: plain / augmented ECG/s | workers the step needs |",
            "|---|---|---|---|---|---|---|---|---|"]
    for arch, r in result["architectures"].items():
        mfu = f"{r['mfu_train']:.1%} / {r['mfu_infer']:.1%}" if r.get("mfu_train") else "—"
        rows.append(f"| {arch} | {r['train_samples_per_s']:.0f} | {r['train_speedup']:.1f} | "
                    f"{r['infer_samples_per_s']:.0f} | {r['infer_speedup']:.1f} | {mfu} | "
                    f"{r['data_wait_fraction']:.1%} | {r['loader']['per_worker_ecg_per_s']['plain']:.0f} / "
                    f"{r['loader']['per_worker_ecg_per_s']['augmented']:.0f} | {r['loader']['workers_needed']:.1f} |")
    rows += ["", "| architecture, `--augment_on device` (the project's recipes' default) | train ECG/s (× in the "
                 "loader) | data wait (+ the augmentation on the device) |", "|---|---|---|"]
    loader = {arch: r["train_samples_per_s"] for arch, r in result["architectures"].items()}
    rows += [f"| {arch} | {r['train_samples_per_s']:.0f} ({r['train_samples_per_s'] / loader[arch]:.2f}×) | "
             f"{device_share(r)} |" for arch, r in result["augment_on_device"].items()]
    rows += ["", "| recipe (one epoch, PTB-XL) | ECG/s of the whole step |", "|---|---|"]
    rows += [f"| {name} | {r['train_ecg_per_s']:.0f} |" for name, r in result["training"].items()]
    pred = result["prediction"]
    rows += ["", f"Prediction end to end (`test_interface.py --cache off`, the modern run's checkpoints): "
                 f"{pred['ecg_per_s']:.0f} ECG/s on {pred['ecgs']} 400-Hz HDF5 ECGs (process start included)."]
    return "\n".join(rows)


if __name__ == "__main__":
    main()
