"""Shared fixtures: real records from ../shared/data (skipped cleanly when absent) arranged in the layouts users
bring, and helpers that run the interfaces in-process with every output under a temporary folder."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from models.preprocessing import LIMA, preprocess

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared"
PTBXL = SHARED / "data" / "ptbxl"
CINC = SHARED / "data" / "cinc2021"
SPEC = SHARED / "spec"


def need(path: Path) -> Path:
    if not path.exists():
        pytest.skip(f"{path} is not available (the shared data folder sits beside the repository)")
    return path


@pytest.fixture(scope="session")
def ptbxl() -> Path:
    return need(PTBXL)


@pytest.fixture(scope="session")
def cinc() -> Path:
    return need(CINC)


@pytest.fixture(scope="session")
def ptbxl_table(ptbxl) -> pd.DataFrame:
    """PTB-XL database rows with a usable age."""
    table = pd.read_csv(ptbxl / "ptbxl_database.csv")
    return table[(table["age"] < 300) & table["age"].notna()].reset_index(drop=True)


def ptbxl_signal(ptbxl: Path, filename: str) -> np.ndarray:
    from dataloader.wfdb_records import read_wfdb

    signal, _ = read_wfdb(str(ptbxl / filename))
    return signal


def make_maic(root: Path, ptbxl: Path, table: pd.DataFrame, n_train: int, n_test: int, mode: str = "adult",
              flat_every: int = 2) -> Path:
    """A MAIC-layout folder built from real PTB-XL 500 Hz records (12 × 5000, stored flat or (12, 5000))."""
    (root / f"ECG_{mode}_numpy_train").mkdir(parents=True, exist_ok=True)
    (root / f"ECG_{mode}_numpy_valid").mkdir(parents=True, exist_ok=True)
    labels, template = [], []
    for i, row in table.head(n_train + n_test).reset_index(drop=True).iterrows():
        signal = ptbxl_signal(ptbxl, row["filename_hr"])
        name = f"ecg_{mode}_{i}"
        split = "train" if i < n_train else "valid"
        array = signal.reshape(-1) if i % flat_every == 0 else signal
        np.save(root / f"ECG_{mode}_numpy_{split}" / f"{name}.npy", array)
        entry = {"FILENAME": name, "GENDER": "MALE" if row["sex"] == 0 else "FEMALE", "AGE": float(row["age"])}
        (labels if split == "train" else template).append(entry)
    pd.DataFrame(labels).to_csv(root / f"ECG_{mode}_age_train.csv", index=False)
    answers = pd.DataFrame(template)
    answers.to_csv(root / f"answer_{mode}.csv", index=False)
    template_path = root / "submission.csv"
    blank = answers.assign(AGE=np.nan)
    if template_path.exists():
        blank = pd.concat([pd.read_csv(template_path), blank], ignore_index=True)
    blank.to_csv(template_path, index=False)
    return root


@pytest.fixture(scope="session")
def maic_adult(tmp_path_factory, ptbxl, ptbxl_table) -> Path:
    """MAIC adult layout from 30 real PTB-XL records: 24 train, 6 test."""
    return make_maic(tmp_path_factory.mktemp("maic"), ptbxl, ptbxl_table, 24, 6)


@pytest.fixture(scope="session")
def demo_set(tmp_path_factory) -> Path:
    """A small synthetic MAIC set (adult + child) from the project's demo generator."""
    from dataloader.demo import generate

    return generate(tmp_path_factory.mktemp("demo") / "SYNTHETIC_demo_maic", adult_train=6, child_train=10,
                    adult_test=2, child_test=3, seed=7, workers=2)


def cli(module, argv: list[str], tmp: Path, quiet: bool = True) -> int:
    """Run an interface's ``entry(argv)`` with logs, caches and dataset CSVs under ``tmp`` (those of these
    options that the program takes), with --quiet unless ``quiet`` is False."""
    import options

    parser = {"train_interface": options.train_parser, "test_interface": options.test_parser}[module.__name__]()
    extra = []
    for flag, sub in (("--log_dir", "log"), ("--cache_dir", "cache"), ("--dataset_dir", "dataset")):
        if flag not in argv and flag in parser._option_string_actions:
            extra += [flag, str(tmp / sub)]
    return module.entry([*argv, *extra, *(["--quiet"] if quiet else [])])


TINY_MODERN = ["--arch", "ECGEfficientNet", "--width", "0.25", "--batch_size", "16", "--device", "cpu", "--precision",
               "fp32", "--seed", "5", "--on_bad", "skip", "--seeds", "1", "--partner",
               "none"]  # one model per fold unless a test asks


@pytest.fixture(scope="session")
def modern_cv_run(ptbxl, tmp_path_factory):
    """A tiny 2-fold modern run on the real PTB-XL records (100 Hz, 3 epochs), shared read-only: (tmp, run)."""
    import train_interface

    tmp = tmp_path_factory.mktemp("cv")
    argv = [*TINY_MODERN, "--input", str(ptbxl), "--ptbxl_rate", "100", "--folds", "2", "--nepoch", "3",
            "--env", "cv", "--log_dir", str(tmp / "log"), "--cache_dir", str(tmp / "cache"), "--quiet"]
    assert train_interface.entry(argv) == 0
    return tmp, tmp / "log" / "ECGEfficientNet_cv"


def exported_run(run: Path, cinc: Path, path: Path, *flags: str) -> Path:
    """``run`` exported to ``path`` by export_interface with ``flags``, checked on CinC records."""
    import export_interface

    assert export_interface.entry(["--weights", str(run), "--output", str(path), "--check_input", str(cinc),
                                   *flags, "--quiet"]) == 0
    return path


@pytest.fixture(scope="session")
def onnx_model(modern_cv_run, cinc, tmp_path_factory) -> Path:
    """The shared 2-fold run exported to one ONNX file (checked on 4 CinC records), shared read-only."""
    return exported_run(modern_cv_run[1], cinc, tmp_path_factory.mktemp("front") / "model.onnx", "--check_records",
                        "4")


@pytest.fixture(scope="session")
def onnx_cpu_model(modern_cv_run, cinc, tmp_path_factory) -> Path:
    """The shared 2-fold run exported with --cpu_preprocessing (scipy's whole preprocessing on the CPU, as files
    written before the band-pass moved into the graph), checked on 2 CinC records, shared read-only."""
    return exported_run(modern_cv_run[1], cinc, tmp_path_factory.mktemp("cpu_onnx") / "model_cpu.onnx",
                        "--check_records", "2", "--cpu_preprocessing")


TINY = {"ResDenseNet": ["--out_ch", "16", "--mid_ch", "8"], "ResUDenseNet": ["--out_ch", "16", "--mid_ch", "8"],
        "ResNet1d": ["--net_filter_size", "8", "16", "24", "32", "40"]}


def write_code15(path: Path, signals: list[np.ndarray], exam_ids: list[int]) -> Path:
    """An HDF5 file in the CODE-15% layout: tracings (N, 4096, 12) float32 in mV at 400 Hz, exam_id (N,)."""
    import h5py

    tracings = np.stack([preprocess(s, fs, LIMA).T for s, fs in signals]).astype(np.float32)
    with h5py.File(path, "w") as handle:
        handle.create_dataset("tracings", data=tracings, chunks=(1, 4096, 12))
        handle.create_dataset("exam_id", data=np.asarray(exam_ids, dtype=np.int64))
    return path


@pytest.fixture(scope="session")
def code15(tmp_path_factory, ptbxl, ptbxl_table) -> Path:
    """Two CODE-15%-layout parts + exams.csv from 40 real PTB-XL records (patients kept, survival columns
    simulated)."""
    folder = tmp_path_factory.mktemp("code15")
    rows = ptbxl_table.head(40).reset_index(drop=True)
    signals = [(ptbxl_signal(ptbxl, f), 500.0) for f in rows["filename_hr"]]
    exam_ids = (1000 + rows["ecg_id"]).tolist()
    write_code15(folder / "exams_part0.hdf5", signals[:25], exam_ids[:25])
    write_code15(folder / "exams_part1.hdf5", signals[25:], exam_ids[25:])
    rng = np.random.default_rng(0)
    pd.DataFrame({"exam_id": exam_ids, "age": rows["age"].astype(int), "is_male": rows["sex"] == 0,
                  "nn_predicted_age": rows["age"] + rng.normal(0, 5, len(rows)),
                  "patient_id": rows["patient_id"].astype(int), "death": rng.random(len(rows)) < 0.2,
                  "timey": rng.uniform(0.5, 8, len(rows)),
                  "trace_file": ["exams_part0.hdf5"] * 25 + ["exams_part1.hdf5"] * 15}).to_csv(
        folder / "exams.csv", index=False)
    return folder


def explained_records(folder: Path, cinc: Path, names: list[str], run: Path, cache: Path) -> Path:
    """The CinC records ``names`` copied into ``folder``/records, predicted by ``run`` with 90 % intervals into
    ``folder``/pred.csv and explained into ``folder``/explain (test_interface --explain); returns the records."""
    import shutil

    import test_interface

    records = folder / "records"
    records.mkdir(parents=True)
    for name in names:
        for path in cinc.glob(f"{name}.*"):
            shutil.copy(path, records / path.name)
    assert test_interface.entry(["--input", str(records), "--weights", str(run), "--interval", "0.9", "--explain",
                                 str(folder / "explain"), "--output", str(folder / "pred.csv"), "--cache_dir",
                                 str(cache), "--quiet"]) == 0
    return records
