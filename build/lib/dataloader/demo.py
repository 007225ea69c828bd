"""Generate the SYNTHETIC MAIC-layout demo set (no real patient data) with neurokit2's 12-lead ECGSYN simulator.

    python -m dataloader.demo --out dataset/SYNTHETIC_demo_maic

Heart rate, heart-rate variability, PR interval (P-wave timing), QRS width, R and T amplitudes follow age the way
they do in paediatric and adult reference ranges (children: rate ~140 → ~85 bpm and PR/QRS lengthening from birth
to 9 years; adults: lower variability, longer PR, wider QRS and smaller R/T waves with age), with individual
variation on top, so a model has something real to learn. Records are 12 × 5000 samples (500 Hz, 10 s) in mV,
stored alternately flat (60000,) and (12, 5000) as in the challenge. Same arguments → same files (seeded).
"""
from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import os
import sys
import warnings
from pathlib import Path

import neurokit2 as nk
import numpy as np
import pandas as pd
from tqdm import tqdm

from utils.cli import run_main
from utils.io import atomic_write, write_csv, write_json, write_text
from utils.paths import DEMO_ROOT

from .labels import read_maic_labels
from .records import Record

VERSION = 2  # bumped when the files written change (answer.csv has MODE)
FS, SECONDS = 500, 10


def physiology(age: float, rng: np.random.Generator) -> dict:
    """ECGSYN parameters for one synthetic person of ``age`` years."""
    jitter = lambda scale: rng.normal(0.0, scale)  # noqa: E731 - individual variation
    if age < 10:  # children: rate falls and intervals lengthen quickly in the first years
        heart_rate = 85 + 55 * np.exp(-age / 2.5) + jitter(6)
        hr_std = 3.0 + jitter(0.5)
        p_angle = -45 - 1.7 * age + jitter(3)
        qrs_width = 0.07 + 0.0022 * age + jitter(0.004)
        r_amp, t_amp = 26 + 0.5 * age + jitter(2), 0.55 + 0.025 * age + jitter(0.05)
    else:  # adults: slow changes over decades
        decades = (age - 19) / 10
        heart_rate = 72 - 0.8 * decades + jitter(6)
        hr_std = max(0.6, 5.0 - 0.55 * decades + jitter(0.5))
        p_angle = -60 - 2.2 * decades + jitter(3)
        qrs_width = 0.09 + 0.003 * decades + jitter(0.004)
        r_amp, t_amp = 32 - 1.4 * decades + jitter(2), 0.85 - 0.05 * decades + jitter(0.05)
    return {"heart_rate": float(np.clip(heart_rate, 45, 190)), "heart_rate_std": float(max(hr_std, 0.3)),
            "ti": (float(p_angle), -15.0, 0.0, 15.0, 100.0),
            "ai": (1.2, -5.0, float(max(r_amp, 10)), -7.5, float(max(t_amp, 0.2))),
            "bi": (0.25, float(qrs_width), float(qrs_width), float(qrs_width), 0.4)}


def simulate(age: float, seed: int) -> np.ndarray:
    """One synthetic 12-lead ECG (12, 5000) float32 in mV."""
    rng = np.random.default_rng(seed)
    params = physiology(age, rng)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        frame = nk.ecg_simulate(duration=SECONDS, sampling_rate=FS, noise=0.02, method="multileads",
                                random_state=seed, **params)
    signal = frame.to_numpy(dtype=np.float32).T
    baseline = 0.05 * np.sin(2 * np.pi * rng.uniform(0.1, 0.4) * np.arange(signal.shape[1]) / FS
                             + rng.uniform(0, 2 * np.pi))
    return (signal + baseline.astype(np.float32)).astype(np.float32)


def simulated_records(count: int = 4) -> list[Record]:
    """``count`` synthetic ECGs of ages 30–90 (evenly spaced, seeds 0, 1, …) as records: what an ONNX export is
    checked on when no real records are given."""
    return [Record(f"simulated ECG {k}", simulate(float(age), seed=k), float(FS), {})
            for k, age in enumerate(np.linspace(30, 90, count))]


def _write_one(job) -> None:
    path, age, seed, flat = job
    signal = simulate(age, seed)
    atomic_write(path, lambda handle: np.save(handle, signal.reshape(-1) if flat else signal), binary=True)


def _ages(mode: str, n: int, rng: np.random.Generator) -> np.ndarray:
    if mode == "child":  # fractional years in whole months, 0–9 (as the challenge: 1.1666 = 14 months)
        return np.round(rng.integers(0, 120, n) / 12, 4)
    return rng.integers(19, 91, n).astype(float)


def generate(out: str | os.PathLike, adult_train: int = 64, child_train: int = 64, adult_test: int = 16,
             child_test: int = 16, seed: int = 0, workers: int | None = None) -> Path:
    """Write the demo set to ``out`` (reused when an identical one is already there)."""
    out = Path(out)
    params = {"version": VERSION, "adult_train": adult_train, "child_train": child_train, "adult_test": adult_test,
              "child_test": child_test, "seed": seed}
    manifest = out / "manifest.json"
    if manifest.exists() and json.loads(manifest.read_text()) == params:
        print(f"synthetic demo set already in {out}")
        return out
    rng = np.random.default_rng(seed)
    jobs, template, answers = [], [], []
    for mode, n_train, n_test in (("adult", adult_train, adult_test), ("child", child_train, child_test)):
        train_ages, test_ages = _ages(mode, n_train, rng), _ages(mode, n_test, rng)
        sexes = rng.choice(["MALE", "FEMALE"], n_train + n_test)
        labels = []
        for i, age in enumerate(np.concatenate([train_ages, test_ages])):
            name = f"ecg_{mode}_{i}"
            folder = out / (f"ECG_{mode}_numpy_train" if i < n_train else f"ECG_{mode}_numpy_valid")
            jobs.append((folder / f"{name}.npy", float(age), int(rng.integers(2**31)), i % 2 == 0))
            row = {"FILENAME": name, "GENDER": sexes[i], "AGE": age}
            (labels if i < n_train else answers).append(row if i < n_train else {**row, "MODE": mode})
            if i >= n_train:
                template.append({**row, "AGE": np.nan})
        write_csv(out / f"ECG_{mode}_age_train.csv", pd.DataFrame(labels))
    for folder in {job[0].parent for job in jobs}:
        folder.mkdir(parents=True, exist_ok=True)
    workers = workers or min(len(jobs), os.cpu_count() or 1)
    with mp.get_context("fork").Pool(workers) as pool:
        for _ in tqdm(pool.imap_unordered(_write_one, jobs), total=len(jobs), desc="simulating ECGs (neurokit2)",
                      unit="ECG"):
            pass
    write_csv(out / "submission.csv", pd.DataFrame(template))
    write_csv(out / "answer.csv", pd.DataFrame(answers))
    write_text(out / "README.txt", "SYNTHETIC demo data — simulated with neurokit2 ECGSYN (dataloader/demo.py); "
                                   "no real patient. MAIC 2023 layout. answer.csv holds the test ages (and each "
                                   "ECG's MODE).\n")
    write_json(manifest, params)
    print(f"wrote synthetic demo set to {out}")
    return out


def score_against_constant(submission: str | os.PathLike, root: str | os.PathLike = DEMO_ROOT) -> dict:
    """MAE of a filled demo submission per mode next to the constant predictor's (the training median age):
    {mode: {'n', 'mae', 'constant_mae'}}."""
    root = Path(root)
    answers = read_maic_labels(root / "answer.csv").set_index("id")["age"]
    predicted = read_maic_labels(submission).set_index("id")["age"]
    scores = {}
    for mode in ("adult", "child"):
        ids = [i for i in answers.index if i.startswith(f"ecg_{mode}_")]
        median = float(np.median(read_maic_labels(root / f"ECG_{mode}_age_train.csv")["age"]))
        scores[mode] = {"n": len(ids), "mae": float((predicted[ids] - answers[ids]).abs().mean()),
                        "constant_mae": float((median - answers[ids]).abs().mean())}
    return scores


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", default=str(DEMO_ROOT))
    for key, default in (("adult_train", 64), ("child_train", 64), ("adult_test", 16), ("child_test", 16),
                         ("seed", 0)):
        parser.add_argument(f"--{key}", type=int, default=default)
    parser.add_argument("--workers", type=int, default=None)
    parser.add_argument("--score", default=None, help="instead: compare this filled submission of the demo set with "
                                                      "the constant (training-median) predictor")
    args = parser.parse_args(argv)
    if args.score:
        for mode, s in score_against_constant(args.score, args.out).items():
            print(f"{mode}: MAE {s['mae']:.2f} years on {s['n']} test ECGs vs {s['constant_mae']:.2f} for the "
                  f"constant training-median predictor ({s['constant_mae'] - s['mae']:+.2f})")
        return 0
    generate(args.out, args.adult_train, args.child_train, args.adult_test, args.child_test, args.seed, args.workers)
    return 0


if __name__ == "__main__":
    sys.exit(run_main(main))
