"""test_interface on MAIC-layout folders of real PTB-XL records: the acceptance CLI, seed weights, bad layouts."""
from __future__ import annotations

import shutil

import numpy as np
import pandas as pd
import pytest
import torch
from conftest import SPEC, cli, need
from scipy import signal as sps

import test_interface
from models.registry import get_model


@pytest.fixture(scope="module")
def seed_weights(tmp_path_factory):
    """Seed-format checkpoints ({'model', 'optimizer', 'epoch'}) of both MAIC models at fixture width, with
    the reference fixtures' trained weights."""
    folder = tmp_path_factory.mktemp("seed_weights")
    paths = {}
    for arch, mode in (("ResDenseNet", "adult"), ("ResUDenseNet", "child")):
        fixture = torch.load(need(SPEC / f"{arch}_small.pt"), weights_only=False)
        model = get_model(arch, **fixture["config"])
        model.load_state_dict(fixture["state_dict"])
        paths[mode] = folder / f"{mode}.pt"
        torch.save({"model": model.state_dict(), "optimizer": torch.optim.Adam(model.parameters()).state_dict(),
                    "epoch": 59}, paths[mode])
    return paths


def seed_pipeline_ages(npy: str, arch: str, state_dict_path) -> float:
    """The seed's inference written out independently: load, reshape, first 4096, z-score, Butterworth(3)
    1-47 Hz filtfilt, NaN→0, model, head."""
    x = np.load(npy).reshape(12, 5000)[:, :4096].astype(np.float64)
    x = (x - x.mean(1, keepdims=True)) / (x.std(1, keepdims=True) + 1e-8)
    b, a = sps.butter(3, [1 / 250, 47 / 250], btype="band")
    x = np.nan_to_num(sps.filtfilt(b, a, x, axis=1)).astype(np.float32)
    ckpt = torch.load(state_dict_path, weights_only=True)
    fixture = torch.load(SPEC / f"{arch}_small.pt", weights_only=False)
    model = get_model(arch, **fixture["config"])
    model.load_state_dict(ckpt["model"])
    model.eval()
    with torch.no_grad():
        raw = model(torch.from_numpy(x)[None]).item()
    return (19 + 103 / (1 + np.exp(-raw))) if arch == "ResDenseNet" else 9 / (1 + np.exp(-raw))


def test_acceptance_cli_fills_every_row_with_seed_weights(maic_adult, seed_weights, tmp_path):
    root = tmp_path / "maic"
    shutil.copytree(maic_adult, root)
    # a child folder: real PTB-XL signals (the shared data has no children) under child names
    (root / "ECG_child_numpy_valid").mkdir(exist_ok=True)
    template = pd.read_csv(root / "submission.csv")
    for i, src in enumerate(sorted((root / "ECG_adult_numpy_valid").glob("*.npy"))[:2]):
        shutil.copy(src, root / "ECG_child_numpy_valid" / f"ecg_child_{i}.npy")
    template = pd.concat([template, pd.DataFrame({"FILENAME": ["ecg_child_0", "ecg_child_1"],
                                                  "GENDER": ["MALE", "FEMALE"], "AGE": [np.nan] * 2})])
    template = template.sample(frac=1, random_state=0).reset_index(drop=True)  # rows interleaved
    template.to_csv(root / "submission.csv", index=False)
    output = tmp_path / "out" / "submission.csv"
    code = cli(test_interface, ["--test_for_adult", str(root / "ECG_adult_numpy_valid"),
                                "--test_for_child", str(root / "ECG_child_numpy_valid"),
                                "--submission_template", str(root / "submission.csv"),
                                "--weights_adult", str(seed_weights["adult"]),
                                "--weights_child", str(seed_weights["child"]),
                                "--output", str(output), "--device", "cpu", "--precision", "fp32"], tmp_path)
    assert code == 0
    result = pd.read_csv(output)
    assert list(result.columns) == ["FILENAME", "GENDER", "AGE"]
    assert result["FILENAME"].tolist() == template["FILENAME"].tolist()
    assert result["GENDER"].tolist() == template["GENDER"].tolist()
    assert np.isfinite(result["AGE"]).all()
    adult = result["FILENAME"].str.contains("adult")
    assert result.loc[adult, "AGE"].between(19, 122).all() and result.loc[~adult, "AGE"].between(0, 9).all()
    for _, row in result.iterrows():
        mode = "adult" if "adult" in row["FILENAME"] else "child"
        arch = "ResDenseNet" if mode == "adult" else "ResUDenseNet"
        expected = seed_pipeline_ages(str(root / f"ECG_{mode}_numpy_valid" / f"{row['FILENAME']}.npy"), arch,
                                      seed_weights[mode])
        assert row["AGE"] == pytest.approx(expected, abs=1e-4)


def test_no_child_rows_needs_no_child_model(maic_adult, seed_weights, tmp_path):
    output = tmp_path / "sub.csv"
    code = cli(test_interface, ["--test_for_adult", str(maic_adult / "ECG_adult_numpy_valid"),
                                "--submission_template", str(maic_adult / "submission.csv"),
                                "--weights_adult", str(seed_weights["adult"]), "--output", str(output),
                                "--device", "cpu", "--precision", "fp32"], tmp_path)
    assert code == 0 and len(pd.read_csv(output)) == 6


@pytest.mark.parametrize("damage", ["missing_file", "extra_file"])
def test_template_and_folder_must_match(maic_adult, seed_weights, tmp_path, capsys, damage):
    root = tmp_path / "maic"
    shutil.copytree(maic_adult, root)
    folder = root / "ECG_adult_numpy_valid"
    if damage == "missing_file":
        victim = sorted(folder.glob("*.npy"))[0]
        victim.unlink()
        expected = f"no ECG file {victim.stem}.npy"
    else:
        shutil.copy(sorted(folder.glob("*.npy"))[0], folder / "ecg_adult_stray.npy")
        expected = "ecg_adult_stray.npy: ECG file without a row"
    output = tmp_path / "sub.csv"
    output.write_text("previous result\n")
    code = cli(test_interface, ["--test_for_adult", str(folder), "--submission_template",
                                str(root / "submission.csv"), "--weights_adult", str(seed_weights["adult"]),
                                "--output", str(output), "--device", "cpu"], tmp_path)
    assert code == 2
    assert expected in capsys.readouterr().err
    assert output.read_text() == "previous result\n"  # a failed run never touches an existing output


def test_child_rows_without_child_weights_is_an_error(demo_set, seed_weights, tmp_path, capsys):
    code = cli(test_interface, ["--data_root", str(demo_set), "--weights_adult", str(seed_weights["adult"]),
                                "--output", str(tmp_path / "s.csv"), "--device", "cpu"], tmp_path)
    assert code == 2
    err = capsys.readouterr().err
    assert "error: give --weights_child (the template has 3 child row(s); no checkpoint at the default " \
           f"{tmp_path / 'log' / 'ResUDenseNet_child' / 'best.pt'})" in err, err
    assert not (tmp_path / "s.csv").exists()


def test_demo_data_end_to_end(demo_set, tmp_path):
    """Train both tiny models on the synthetic demo set and fill its submission (the `make demo` path)."""
    from conftest import TINY

    import train_interface

    for mode, arch in (("adult", "ResDenseNet"), ("child", "ResUDenseNet")):
        assert cli(train_interface, ["--data_root", str(demo_set), "--mode", mode, "--arch", arch, *TINY[arch],
                                     "--nepoch", "1", "--batch_size", "4", "--env", "demo"], tmp_path) == 0
    output = tmp_path / "score" / "submission.csv"
    assert cli(test_interface, ["--data_root", str(demo_set),
                                "--weights_adult", str(tmp_path / "log" / "ResDenseNet_demo" / "best.pt"),
                                "--weights_child", str(tmp_path / "log" / "ResUDenseNet_demo" / "best.pt"),
                                "--output", str(output)], tmp_path) == 0
    result = pd.read_csv(output)
    assert len(result) == 5 and np.isfinite(result["AGE"]).all()
