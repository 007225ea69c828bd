"""One bad-input policy: list every bad record and stop (exit 2, nothing written), or --on_bad skip / fill;
unwritable folders and full disks are clear errors; a fuzz test over corrupted .npy files and templates."""
from __future__ import annotations

import contextlib
import errno
import io
import os
import shutil
import tempfile
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from conftest import SPEC, TINY, cli, need
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import test_interface
import train_interface
from models.registry import get_model

TRAIN_BASE = ["--mode", "adult", "--arch", "ResDenseNet", *TINY["ResDenseNet"], "--batch_size", "8", "--nepoch",
              "1", "--device", "cpu", "--precision", "fp32"]


def copy_maic(src: Path, dst: Path) -> Path:
    shutil.copytree(src, dst)
    return dst


def test_bad_labels_are_all_listed(maic_adult, tmp_path, capsys):
    root = copy_maic(maic_adult, tmp_path / "maic")
    labels = pd.read_csv(root / "ECG_adult_age_train.csv")
    labels["AGE"] = labels["AGE"].astype(object)
    labels.loc[1, "AGE"] = np.nan
    labels.loc[2, "AGE"] = -4
    labels.loc[3, "AGE"] = "forty"
    labels = pd.concat([labels, labels.iloc[[5]]])  # ecg_adult_5 twice
    labels.to_csv(root / "ECG_adult_age_train.csv", index=False)
    assert cli(train_interface, [*TRAIN_BASE, "--data_root", str(root), "--env", "bad"], tmp_path) == 2
    err = capsys.readouterr().err
    for expected in ("ecg_adult_1: has no age label", "ecg_adult_2: has an invalid age -4",
                     "ecg_adult_3: has a non-numeric age", "id ecg_adult_5 appears 2 times"):
        assert expected in err, err
    assert not (tmp_path / "log" / "ResDenseNet_bad" / "last.pt").exists()


def test_bad_signals_stop_training_or_are_skipped(maic_adult, tmp_path, capsys):
    root = copy_maic(maic_adult, tmp_path / "maic")
    folder = root / "ECG_adult_numpy_train"
    signal = np.load(folder / "ecg_adult_4.npy").reshape(12, -1)
    signal[3, 100] = np.nan
    np.save(folder / "ecg_adult_4.npy", signal)
    signal = np.load(folder / "ecg_adult_7.npy").reshape(12, -1)
    signal[10] = 0.0
    np.save(folder / "ecg_adult_7.npy", signal)
    (folder / "ecg_adult_9.npy").write_bytes(b"\x93NUMPY garbage")
    assert cli(train_interface, [*TRAIN_BASE, "--data_root", str(root), "--env", "s"], tmp_path) == 2
    err = capsys.readouterr().err
    assert "3 bad record(s)" in err
    for expected in ("ecg_adult_4: has 1 NaN/Inf sample(s)", "ecg_adult_7: has flat (all-zero) lead(s) V5",
                     "ecg_adult_9.npy: is not a readable .npy file"):
        assert expected in err, err
    assert cli(train_interface, [*TRAIN_BASE, "--data_root", str(root), "--env", "s", "--on_bad", "skip"],
               tmp_path) == 0
    out = capsys.readouterr().out
    assert "bad record(s) left out of training (--on_bad skip)" in out


@pytest.fixture(scope="module")
def trained(maic_adult, tmp_path_factory) -> Path:
    tmp = tmp_path_factory.mktemp("trained")
    assert cli(train_interface, [*TRAIN_BASE, "--data_root", str(maic_adult), "--env", "t"], tmp) == 0
    return tmp / "log" / "ResDenseNet_t" / "best.pt"


def test_submission_fill_writes_the_training_median(maic_adult, trained, tmp_path, capsys):
    root = copy_maic(maic_adult, tmp_path / "maic")
    folder = root / "ECG_adult_numpy_valid"
    victim = sorted(folder.glob("*.npy"))[1]
    np.save(victim, np.zeros((12, 5000), np.float32))
    argv = ["--test_for_adult", str(folder), "--submission_template", str(root / "submission.csv"),
            "--weights_adult", str(trained), "--output", str(tmp_path / "sub.csv"), "--device", "cpu"]
    assert cli(test_interface, argv, tmp_path) == 2
    assert f"{victim.stem}: has flat (all-zero) lead(s)" in capsys.readouterr().err
    assert not (tmp_path / "sub.csv").exists()
    assert cli(test_interface, [*argv, "--on_bad", "fill"], tmp_path) == 0
    result = pd.read_csv(tmp_path / "sub.csv").set_index("FILENAME")
    median = torch.load(trained, weights_only=True)["options"]["train_median_age"]
    train_split = pd.read_csv(trained.parents[2] / "dataset" / "train_dataset_adult.csv")
    assert len(train_split) == 21 and median == np.median(train_split["Age"].to_numpy(np.float32))
    assert result.loc[victim.stem, "AGE"] == pytest.approx(median)
    assert len(result) == 6 and np.isfinite(result["AGE"]).all()
    assert "wrote the training median" in capsys.readouterr().err


def unwritable_folder(tmp_path: Path) -> Path:
    folder = tmp_path / "readonly"
    folder.mkdir()
    folder.chmod(0o555)
    if os.access(folder, os.W_OK):  # root ignores permission bits; /sys refuses even root
        folder = Path("/sys/kernel/ecg_age_test")
        try:
            tempfile.mkstemp(dir="/sys/kernel")
            pytest.skip("no unwritable folder available on this machine")
        except OSError:
            pass
    return folder


def test_unwritable_output_folder_is_a_clear_error(maic_adult, trained, tmp_path, capsys):
    folder = unwritable_folder(tmp_path)
    argv = ["--input", str(maic_adult / "ECG_adult_numpy_valid"), "--weights", str(trained), "--output",
            str(folder / "predicted_age.csv"), "--device", "cpu"]
    assert cli(test_interface, argv, tmp_path) == 2
    assert "is not writable" in capsys.readouterr().err
    assert not (folder / "predicted_age.csv").exists()


def test_full_disk_keeps_the_old_file_and_leaves_no_temporary(tmp_path, monkeypatch):
    from utils.io import OutputError, write_text

    target = tmp_path / "submission.csv"
    target.write_text("old\n")

    def no_space(fd):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(os, "fsync", no_space)
    with pytest.raises(OutputError, match="the disk is full"):
        write_text(target, "new content\n" * 1000)
    assert target.read_text() == "old\n"
    assert [p.name for p in tmp_path.iterdir()] == ["submission.csv"]


# ---- fuzz: corrupted inputs give a clean error or a correct result, never a traceback or a wrong row -----------
@pytest.fixture(scope="module")
def fuzz_base(maic_adult, tmp_path_factory):
    base = tmp_path_factory.mktemp("fuzz_base")
    folder = base / "ECG_adult_numpy_valid"
    folder.mkdir()
    names = sorted(p.stem for p in (maic_adult / "ECG_adult_numpy_valid").glob("*.npy"))[:3]
    for name in names:
        shutil.copy(maic_adult / "ECG_adult_numpy_valid" / f"{name}.npy", folder / f"{name}.npy")
    pd.DataFrame({"FILENAME": names, "GENDER": ["MALE"] * 3, "AGE": [np.nan] * 3}).to_csv(base / "submission.csv",
                                                                                           index=False)
    fixture = torch.load(need(SPEC / "ResDenseNet_small.pt"), weights_only=False)
    model = get_model("ResDenseNet", **fixture["config"])
    model.load_state_dict(fixture["state_dict"])
    torch.save({"model": model.state_dict(), "epoch": 1}, base / "adult.pt")
    code, baseline = run_submission(base, base / "baseline.csv")
    assert code == 0
    return base, pd.read_csv(base / "baseline.csv")


def run_submission(root: Path, output: Path) -> tuple[int, str]:
    err = io.StringIO()
    with contextlib.redirect_stderr(err):
        code = test_interface.entry(["--test_for_adult", str(root / "ECG_adult_numpy_valid"),
                                     "--submission_template", str(root / "submission.csv"), "--weights_adult",
                                     str(root / "adult.pt"), "--output", str(output), "--device", "cpu",
                                     "--precision", "fp32", "--cache", "off", "--quiet"])
    return code, err.getvalue()


FILE_DAMAGE = ["truncate", "garbage", "wrong_shape", "nan", "inf", "flat", "text_array", "empty"]
HARMLESS = ["transpose", "float64"]
TEMPLATE_DAMAGE = ["drop_column", "duplicate_row", "ghost_row", "binary", "empty_template"]


def damage_file(path: Path, kind: str, rng: np.random.Generator) -> None:
    data = path.read_bytes()
    signal = np.load(path).reshape(12, -1)
    if kind == "truncate":
        path.write_bytes(data[:int(rng.integers(1, len(data) - 1))])
    elif kind == "garbage":
        path.write_bytes(rng.bytes(int(rng.integers(1, 4000))))
    elif kind == "wrong_shape":
        shapes = [(11, 5000), (12,), (5000,), (3, 4, 5), (0, 12), (13, 13)]
        np.save(path, np.ones(shapes[int(rng.integers(len(shapes)))], np.float32))
    elif kind in ("nan", "inf"):
        signal[rng.integers(12), rng.integers(signal.shape[1])] = np.nan if kind == "nan" else -np.inf
        np.save(path, signal)
    elif kind == "flat":
        signal[rng.integers(12)] = 0
        np.save(path, signal)
    elif kind == "text_array":
        np.save(path, np.array(["I", "II"]))
    elif kind == "empty":
        path.write_bytes(b"")
    elif kind == "transpose":
        np.save(path, signal.T.copy())
    elif kind == "float64":
        np.save(path, signal.astype(np.float64))


def damage_template(path: Path, kind: str, rng: np.random.Generator) -> None:
    frame = pd.read_csv(path)
    if kind == "drop_column":
        frame.drop(columns="FILENAME").to_csv(path, index=False)
    elif kind == "duplicate_row":
        pd.concat([frame, frame.iloc[[int(rng.integers(len(frame)))]]]).to_csv(path, index=False)
    elif kind == "ghost_row":
        pd.concat([frame, pd.DataFrame({"FILENAME": ["ecg_adult_999"], "GENDER": ["MALE"]})]).to_csv(path,
                                                                                                   index=False)
    elif kind == "binary":
        path.write_bytes(rng.bytes(300))
    else:
        path.write_bytes(b"")


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(kind=st.sampled_from(FILE_DAMAGE + HARMLESS + TEMPLATE_DAMAGE), target=st.integers(0, 2),
       seed=st.integers(0, 2**32 - 1))
def test_fuzz_corrupted_inputs(fuzz_base, kind, target, seed):
    base, baseline = fuzz_base
    rng = np.random.default_rng(seed)
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp) / "case"
        shutil.copytree(base, root, ignore=shutil.ignore_patterns("baseline.csv"))
        victim = sorted((root / "ECG_adult_numpy_valid").glob("*.npy"))[target]
        if kind in TEMPLATE_DAMAGE:
            damage_template(root / "submission.csv", kind, rng)
        else:
            damage_file(victim, kind, rng)
        output = root / "out.csv"
        code, err = run_submission(root, output)
        assert "Traceback" not in err
        if kind in HARMLESS:  # the same ECG stored differently: the same ages
            assert code == 0, err
            pd.testing.assert_frame_equal(pd.read_csv(output), baseline)
        else:
            assert code == 2, (kind, err)
            assert not output.exists()
            assert "\nerror: " in f"\n{err}"
            if kind in FILE_DAMAGE:
                assert victim.stem in err, err


def test_truncated_hdf5_is_named_and_nothing_is_written(code15, tmp_path, capsys):
    fixture = torch.load(need(SPEC / "ResNet1d_small.pt"), weights_only=False)
    model = get_model("ResNet1d", **fixture["config"])
    model.load_state_dict(fixture["state_dict"])
    torch.save({"model": model.state_dict()}, tmp_path / "m.pt")
    data = (code15 / "exams_part0.hdf5").read_bytes()
    for cut, expected in ((len(data) // 2, "exams_part0.hdf5"), (200, "is not a readable HDF5 file")):
        damaged = tmp_path / "exams_part0.hdf5"
        damaged.write_bytes(data[:cut])
        output = tmp_path / "pred.csv"
        code = cli(test_interface, ["--input", str(damaged), "--weights", str(tmp_path / "m.pt"), "--output",
                                    str(output)], tmp_path)
        err = capsys.readouterr().err
        assert code == 2 and expected in err and "Traceback" not in err, err
        assert not output.exists()
