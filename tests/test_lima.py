"""The Lima et al. system inside the pipeline: published folders, CODE-15% HDF5, PTB-XL at 100/500 Hz, recipe."""
from __future__ import annotations

import json

import h5py
import numpy as np
import pandas as pd
import pytest
import torch
from conftest import SPEC, TINY, cli, need

import test_interface
import train_interface
from engine.train.losses import inverse_age_weights
from models.registry import ResNet1d


@pytest.fixture(scope="module")
def published_folder(tmp_path_factory):
    """A model folder as the published code writes it: model.pth {'model', 'epoch', 'valid_loss', 'optimizer'} and
    config.json with the published argument names (small widths: the reference fixture's weights, its output moved
    by 50 years into the adult range — the untrained fixture predicts about 0, and ages below 0 are bad output)."""
    fixture = torch.load(need(SPEC / "ResNet1d_small.pt"), weights_only=False)
    folder = tmp_path_factory.mktemp("published")
    model = ResNet1d(**fixture["config"])
    model.load_state_dict(fixture["state_dict"])
    with torch.no_grad():
        model.lin.bias += 50.0
    torch.save({"epoch": 41, "model": model.state_dict(), "valid_loss": 70.2,
                "optimizer": torch.optim.Adam(model.parameters()).state_dict()}, folder / "model.pth")
    config = {"epochs": 70, "seed": 2, "sample_freq": 400, "seq_length": 4096, "scale_multiplier": 10,
              "net_filter_size": [b[0] for b in fixture["config"]["blocks_dim"]],
              "net_seq_lengh": [b[1] for b in fixture["config"]["blocks_dim"]], "dropout_rate": 0.8,
              "kernel_size": 17, "lr": 0.001, "batch_size": 32}
    (folder / "config.json").write_text(json.dumps(config))
    return folder


def published_evaluate(model_dir, hdf5, batch_size=32) -> pd.DataFrame:
    """What the published evaluate.py computes, written out independently: the config builds ResNet1d, tracings
    are read in batches, transposed to (B, 12, 4096) and fed as float32; ids come from exam_id."""
    config = json.loads((model_dir / "config.json").read_text())
    model = ResNet1d(input_dim=(12, config["seq_length"]),
                     blocks_dim=list(zip(config["net_filter_size"], config["net_seq_lengh"])), n_classes=1,
                     kernel_size=config["kernel_size"], dropout_rate=config["dropout_rate"])
    model.load_state_dict(torch.load(model_dir / "model.pth", weights_only=False)["model"])
    model.eval()
    with h5py.File(hdf5, "r") as handle:
        traces, ids = handle["tracings"], handle["exam_id"][:]
        out = np.zeros(len(traces))
        for start in range(0, len(traces), batch_size):
            x = torch.tensor(traces[start:start + batch_size]).transpose(-1, -2).to(dtype=torch.float32)
            with torch.no_grad():
                out[start:start + batch_size] = model(x).numpy().flatten()
    return pd.DataFrame({"ids": ids, "predicted_age": out})


def test_hdf5_prediction_reproduces_published_evaluate(published_folder, code15, tmp_path):
    hdf5 = code15 / "exams_part0.hdf5"
    output = tmp_path / "predicted_age.csv"
    assert cli(test_interface, ["--input", str(hdf5), "--weights", str(published_folder), "--output",
                                str(output)], tmp_path) == 0
    ours = pd.read_csv(output)
    reference = published_evaluate(published_folder, hdf5)
    assert list(ours.columns) == ["ids", "predicted_age"]
    assert ours["ids"].tolist() == reference["ids"].tolist()
    np.testing.assert_allclose(ours["predicted_age"], reference["predicted_age"], atol=1e-5, rtol=0)


def test_ptbxl_100_and_500_hz_agree(published_folder, ptbxl, tmp_path):
    """The same ECGs at 100 and 500 Hz, each resampled to the model's 400 Hz, give close ages."""
    ages = {}
    for rate in (100, 500):
        output = tmp_path / f"p{rate}.csv"
        assert cli(test_interface, ["--input", str(ptbxl), "--ptbxl_rate", str(rate), "--weights",
                                    str(published_folder), "--output", str(output)], tmp_path) == 0
        ages[rate] = pd.read_csv(output).set_index("ids")["predicted_age"]
    assert len(ages[100]) == len(ages[500]) == 353
    assert ages[100].index.tolist() == ages[500].index.tolist()
    gap = (ages[100] - ages[500]).abs()
    assert np.corrcoef(ages[100], ages[500])[0, 1] > 0.98
    assert gap.mean() < 0.15 * ages[500].std()


def test_every_format_through_one_cli(published_folder, cinc, maic_adult, tmp_path, capsys):
    for name, path, n in (("cinc", cinc, 48), ("npy", maic_adult / "ECG_adult_numpy_train", 24)):
        output = tmp_path / f"{name}.csv"
        assert cli(test_interface, ["--input", str(path), "--weights", str(published_folder), "--output",
                                    str(output), "--on_bad", "skip"], tmp_path) == 0
        frame = pd.read_csv(output)
        assert len(frame) == n and np.isfinite(frame["predicted_age"]).all()
    # two real CinC records (Chapman-Shaoxing) have all-zero chest leads: by default nothing is written
    capsys.readouterr()
    output = tmp_path / "strict.csv"
    assert cli(test_interface, ["--input", str(cinc), "--weights", str(published_folder), "--output",
                                str(output)], tmp_path) == 2
    err = capsys.readouterr().err
    assert "JS20004: has flat (all-zero) lead(s) V2, V4, V6" in err and "JS20008" in err
    assert not output.exists()


def test_train_resnet1d_on_code15_with_patient_split(code15, tmp_path):
    argv = ["--arch", "ResNet1d", *TINY["ResNet1d"], "--input", str(code15), "--nepoch", "2", "--batch_size",
            "8", "--device", "cpu", "--precision", "fp32", "--valid_ratio", "0.2", "--env", "code"]
    assert cli(train_interface, argv, tmp_path) == 0
    run = tmp_path / "log" / "ResNet1d_code"
    for name in ("model.pth", "config.json", "args.json", "history.csv", "last.pt", "learning_curves.png"):
        assert (run / name).exists(), name
    assert not list(run.glob("epoch_*.pt"))  # best-only, as the published recipe
    split = pd.read_csv(run / "split.csv", dtype={"id": str})
    exams = pd.read_csv(code15 / "exams.csv", dtype={"exam_id": str}).set_index("exam_id")
    patients = {s: set(exams.loc[split.loc[split["split"] == s, "id"], "patient_id"]) for s in ("train", "valid")}
    assert patients["train"] and patients["valid"] and not patients["train"] & patients["valid"]
    options = json.loads((run / "args.json").read_text())
    assert (options["loss"], options["sample_weights"], options["scheduler"]) == ("mse", "inverse_age", "plateau")
    # the run folder is a published-style folder: the independent evaluate.py reads it too
    output = tmp_path / "pred.csv"
    assert cli(test_interface, ["--input", str(code15 / "exams_part1.hdf5"), "--weights", str(run), "--output",
                                str(output)], tmp_path) == 0
    np.testing.assert_allclose(pd.read_csv(output)["predicted_age"],
                               published_evaluate(run, code15 / "exams_part1.hdf5")["predicted_age"], atol=1e-4)


def test_ptbxl_strat_fold_training(ptbxl, tmp_path):
    """The shared PTB-XL copy withholds folds 9-10; a copy of its database relabels folds 5 → 9 and 6 → 10."""
    root = tmp_path / "ptbxl"
    root.mkdir()
    for sub in ("records100", "records500"):
        (root / sub).symlink_to(ptbxl / sub)
    database = pd.read_csv(ptbxl / "ptbxl_database.csv")
    database["strat_fold"] = database["strat_fold"].replace({5: 9, 6: 10})
    database.to_csv(root / "ptbxl_database.csv", index=False)
    argv = ["--arch", "ResNet1d", *TINY["ResNet1d"], "--input", str(root), "--ptbxl_rate", "100", "--split",
            "strat_fold", "--nepoch", "1", "--batch_size", "16", "--max_steps_per_epoch", "2", "--device", "cpu",
            "--precision", "fp32", "--env", "ptb", "--on_bad", "skip"]
    assert cli(train_interface, argv, tmp_path) == 0
    split = pd.read_csv(tmp_path / "log" / "ResNet1d_ptb" / "split.csv", dtype={"id": str})
    folds = database.set_index(database["ecg_id"].astype(str))["strat_fold"]
    assert folds[split.loc[split["split"] == "train", "id"]].between(1, 8).all()
    assert (folds[split.loc[split["split"] == "valid", "id"]] == 9).all()
    assert len(split) == (folds.between(1, 9) & database.set_index(folds.index)["age"].lt(300)).sum()


def test_inverse_age_weights_by_hand():
    weights = inverse_age_weights([30.2, 30.9, 40.0, 50.5])  # ages 30, 30, 40, 50 → 1/2, 1/2, 1, 1
    np.testing.assert_allclose(weights, np.array([0.5, 0.5, 1, 1]) * 4 / 3)
    assert weights.mean() == pytest.approx(1.0)
    # ages 30, 30, 30, 40: 1/3 ×3 and 1 → mean 1: 2/3 ×3 and 2; capped at 1.5: 2/3 ×3 and 1.5 (sum 3.5); renormalised
    # to mean 1: 16/21 ×3 and 12/7 = 1.714 — the final largest weight exceeds the cap, as in Lima et al.'s code
    capped = inverse_age_weights([30, 30, 30, 40], max_weight=1.5)
    np.testing.assert_allclose(capped, [16 / 21, 16 / 21, 16 / 21, 12 / 7], rtol=1e-6)
    assert capped.max() > 1.5


def test_plateau_schedule_stops_below_min_lr():
    import dataclasses

    from engine.train.optim import make_schedule
    from engine.train.recipes import RECIPES

    model = torch.nn.Linear(1, 1)
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
    recipe = dataclasses.replace(RECIPES["lima"], nepoch=100, patience=1, lr_factor=0.1, min_lr=1e-5)
    schedule = make_schedule(optimizer, recipe)
    lrs, finished = [], []
    for _ in range(12):
        schedule.after_epoch(1.0)  # never improves
        lrs.append(optimizer.param_groups[0]["lr"])
        finished.append(schedule.finished())
    assert min(lrs) == pytest.approx(1e-6) and lrs[2] == pytest.approx(1e-4)
    assert finished.index(True) == lrs.index(min(lrs))  # stops once the rate is below min_lr
